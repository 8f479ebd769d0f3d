//! Snapshot layer: times as `kura snapshots` shows and reads them (UTC) and
//! the civil calendar math retention needs.

use crate::error::{Error, ErrorKind, Result};

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (UTC,
/// as `kura snapshots` shows times; a `T` may stand for the space) into
/// nanoseconds since the epoch. A bare date means the end of that day.
/// Dates must exist (`2027-02-31` does not); years run from 1 to 9999. A
/// time beyond what nanoseconds since the epoch can hold (after
/// 2262-04-11, before 1677-09-21) is clamped: "at 9999-12-31" is after
/// every snapshot, not before all of them.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for anything else.
pub fn parse_utc(text: &str) -> Result<i64> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not a time (want YYYY-MM-DD[ HH:MM[:SS]], UTC): {text:?}"),
        )
    };
    let (date, clock) = match text.trim().split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c)),
        None => (text.trim(), None),
    };
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, m, day] = d.as_slice() else {
        return Err(bad());
    };
    let (y, m, day) = (num(y)?, num(m)?, num(day)?);
    let (hh, mm, ss) = match clock {
        None => (23, 59, 59),
        Some(c) => {
            let parts: Vec<&str> = c.split(':').collect();
            match parts.as_slice() {
                [h, mi] => (num(h)?, num(mi)?, 0),
                [h, mi, sec] => (num(h)?, num(mi)?, num(sec)?),
                _ => return Err(bad()),
            }
        }
    };
    let secs = civil_seconds(y, m, day, hh, mm, ss).ok_or_else(bad)?;
    let nanos = if clock.is_none() { 999_999_999 } else { 0 };
    Ok(secs
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos))
        .unwrap_or(if secs > 0 { i64::MAX } else { i64::MIN }))
}

/// Days in month `m` of year `y` (proleptic Gregorian).
fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a UTC time whose every field is in range
/// (a leap second is read as the next second); `None` for a date that does
/// not exist or a year outside 1..=9999.
fn civil_seconds(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> Option<i64> {
    let in_range = (1..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=days_in_month(y, m)).contains(&d)
        && (0..=23).contains(&hh)
        && (0..=59).contains(&mm)
        && (0..=60).contains(&ss);
    in_range.then(|| days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Parses an instant as `KURA_NOW` takes it ([`crate::clock`]): an RFC 3339
/// time in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, or Unix seconds after an
/// `@` (`@1796353200`). Returns nanoseconds since the epoch.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for anything else, an offset other than `Z`
/// included.
pub fn parse_instant(text: &str) -> Result<i64> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not a time (want e.g. 2026-12-04T03:00:00Z, UTC, or @1796353200): {text:?}"),
        )
    };
    let t = text.trim();
    if let Some(secs) = t.strip_prefix('@') {
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        return secs.checked_mul(1_000_000_000).ok_or_else(bad);
    }
    let t = t.strip_suffix(['Z', 'z']).ok_or_else(bad)?;
    let (date, clock) = t.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let fixed = |s: &str, len: usize| -> Result<i64> {
        if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (d, c): (Vec<&str>, Vec<&str>) = (date.split('-').collect(), clock.split(':').collect());
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), c.as_slice()) else {
        return Err(bad());
    };
    let (y, m, day) = (fixed(y, 4)?, fixed(m, 2)?, fixed(day, 2)?);
    let (hh, mm, ss) = (fixed(hh, 2)?, fixed(mm, 2)?, fixed(ss, 2)?);
    let secs = civil_seconds(y, m, day, hh, mm, ss).ok_or_else(bad)?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (t.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    let nanos: i64 = format!("{:0<9}", &fraction[..fraction.len().min(9)])
        .parse()
        .map_err(|_| bad())?;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos))
        .ok_or_else(bad)
}

/// Year, month, day and hour (UTC) of a time in nanoseconds since the epoch.
pub fn civil_utc(ns: i64) -> (i64, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let hour = u32::try_from(secs.rem_euclid(86_400) / 3600).unwrap_or(0);
    // civil_from_days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

/// Days since 1970-01-01 of a proleptic Gregorian date
/// (`days_from_civil`, H. Hinnant).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::{parse_instant, parse_utc};

    #[test]
    fn parses_instants_as_kura_now_takes_them() {
        let s = 1_000_000_000;
        assert_eq!(
            parse_instant("2026-12-04T03:00:00Z").unwrap(),
            1_796_353_200 * s
        );
        assert_eq!(parse_instant("@1796353200").unwrap(), 1_796_353_200 * s);
        assert_eq!(parse_instant("1970-01-01t00:00:01.5z").unwrap(), s + s / 2);
        assert_eq!(parse_instant("@-1").unwrap(), -s);
        for bad in [
            "2026-12-04T03:00:00",
            "2026-12-04T03:00:00+02:00",
            "2026-12-04",
            "2026-13-04T03:00:00Z",
            "2026-12-04T03:00Z",
            "2026-12-04T03:00:00.Z",
            "@",
            "@12x",
            "@99999999999999999",
            "tomorrow",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_utc_times() {
        assert_eq!(parse_utc("1970-01-01 00:00").unwrap(), 0);
        assert_eq!(
            parse_utc("2026-11-20 03:00").unwrap(),
            1_795_143_600 * 1_000_000_000
        );
        assert_eq!(
            parse_utc("2026-11-20T03:00:05").unwrap(),
            1_795_143_605 * 1_000_000_000
        );
        assert_eq!(
            parse_utc("2000-02-29").unwrap(),
            (951_868_799 * 1_000_000_000) + 999_999_999
        );
        for bad in ["2026-13-01", "yesterday", "2026-11-20 25:00", "2026-11"] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_must_exist_and_far_ones_are_clamped() {
        for bad in [
            "2027-02-31",
            "2023-02-29",
            "2026-04-31",
            "0000-01-01",
            "10000-01-01",
            "99999999999999999-01-01",
            "2026-11-20 -1:00",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
        assert!(parse_utc("2024-02-29").is_ok());
        assert!(parse_utc("2000-02-29 12:00").is_ok());
        assert_eq!(parse_utc("9999-12-31").unwrap(), i64::MAX);
        assert_eq!(parse_utc("2262-04-12").unwrap(), i64::MAX);
        assert_eq!(parse_utc("1600-01-01").unwrap(), i64::MIN);
        assert!(parse_utc("2262-04-11 00:00").unwrap() > 0);
        assert!(parse_instant("9999-12-31T00:00:00Z").is_err());
        assert!(parse_instant("2027-02-31T00:00:00Z").is_err());
    }
}
