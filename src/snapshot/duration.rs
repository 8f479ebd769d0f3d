//! Snapshot layer: the one grammar for durations, used by every flag that
//! takes one (`forget --keep-within`, `prune --grace`, `--io-timeout`), so
//! they cannot disagree. Pure; each flag adds its own rule about zero.
//!
//! A duration is a plain number of seconds (`90`), or numbers each followed
//! by a unit, summed (`1h30min`, `2y6mo`):
//!
//! | unit | length |
//! |---|---|
//! | `s` | a second |
//! | `min` | 60 seconds |
//! | `h` | 3600 seconds |
//! | `d` | 86 400 seconds |
//! | `w` | 7 days |
//! | `mo` | 30 days |
//! | `y` | 365 days |
//!
//! A bare `m` is refused: restic and borg read it as months in
//! `--keep-within`, people read it as minutes in a timeout, and guessing
//! wrong deletes snapshots or waits a month. The message says to write `mo`
//! or `min`.

use crate::error::{Error, ErrorKind, Result};

const UNITS: [(&str, u64); 7] = [
    ("s", 1),
    ("min", 60),
    ("h", 3600),
    ("d", 86_400),
    ("w", 7 * 86_400),
    ("mo", 30 * 86_400),
    ("y", 365 * 86_400),
];

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

fn not_a_duration(text: &str) -> Error {
    invalid(format!(
        "not a duration (e.g. 90s, 30min, 12h, 30d, 2w, 6mo, 1y, 2y6mo): {text:?}"
    ))
}

/// Parses a duration (module documentation) into seconds.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for an empty text, a number without a unit
/// after another part, an unknown unit, a bare `m` (with a hint to write
/// `mo` or `min`), or a total beyond `u64` seconds.
pub fn parse_duration(text: &str) -> Result<u64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| too_long(text));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let letters = rest[digits..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(rest.len(), |n| digits + n);
        let (number, unit) = (&rest[..digits], &rest[digits..letters]);
        if number.is_empty() || unit.is_empty() {
            return Err(not_a_duration(text));
        }
        let scale = unit_seconds(unit, text)?;
        let n: u64 = number.parse().map_err(|_| too_long(text))?;
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| too_long(text))?;
        rest = &rest[letters..];
    }
    if t.is_empty() {
        return Err(not_a_duration(text));
    }
    Ok(total)
}

/// Seconds in one `unit`.
fn unit_seconds(unit: &str, text: &str) -> Result<u64> {
    if unit == "m" {
        return Err(invalid(format!(
            "{text:?}: `m` is ambiguous: write `mo` for months (30 days) or `min` for minutes"
        )));
    }
    UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, s)| *s)
        .ok_or_else(|| not_a_duration(text))
}

fn too_long(text: &str) -> Error {
    invalid(format!("duration too long: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    const DAY: u64 = 86_400;

    #[test]
    fn every_unit() {
        for (text, secs) in [
            ("7s", 7),
            ("30min", 1800),
            ("12h", 12 * 3600),
            ("30d", 30 * DAY),
            ("2w", 14 * DAY),
            ("6mo", 180 * DAY),
            ("1y", 365 * DAY),
        ] {
            assert_eq!(parse_duration(text).unwrap(), secs, "{text}");
        }
    }

    #[test]
    fn plain_numbers_are_seconds() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration(" 5 ").unwrap(), 5);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("0s").unwrap(), 0);
    }

    #[test]
    fn parts_add_up() {
        assert_eq!(parse_duration("2y6mo").unwrap(), 910 * DAY);
        assert_eq!(parse_duration("1h30min").unwrap(), 5400);
        assert_eq!(parse_duration("1w12h").unwrap(), 7 * DAY + DAY / 2);
        assert_eq!(parse_duration("1d1d").unwrap(), 2 * DAY);
        assert_eq!(parse_duration("1min30s").unwrap(), 90);
    }

    #[test]
    fn a_bare_m_is_refused_with_the_two_spellings() {
        for text in ["6m", "1y2m", "5m30s"] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains("`mo` for months"), "{err}");
            assert!(err.contains("`min` for minutes"), "{err}");
        }
    }

    #[test]
    fn overflow_is_refused() {
        assert!(parse_duration("18446744073709551615").is_ok());
        for text in [
            "18446744073709551616",
            "99999999999999999y",
            "584942417356y",
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains("too long"), "{text}: {err}");
        }
        assert!(parse_duration("584942417355y").is_ok());
    }

    #[test]
    fn junk_is_refused() {
        for text in [
            "", " ", "h", "1x", "1H", "1h30", "1.5h", "-1h", "1 h", "30 min", "1hour", "mo", "1h-",
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains("not a duration"), "{text:?}: {err}");
        }
    }
}
