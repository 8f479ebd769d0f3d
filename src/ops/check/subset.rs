//! Part of `check` (layer 5): which packs `--read-data` reads. A subset
//! (`n/m`, a percentage or a size) takes the packs verified longest ago
//! first, using the verification times in the local cache, so that a
//! nightly `1/7` covers every pack within a week.

use std::collections::HashMap;

use crate::chunkstore::index::ChunkIndex;
use crate::error::{Error, ErrorKind, Result};
use crate::id::PackId;

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    All,
    /// `n/m`: n m-ths of the packs.
    Fraction(u32, u32),
    /// A percentage of the packs.
    Percent(f64),
    /// About this many bytes of packs.
    Bytes(u64),
}

impl Subset {
    /// Parses `n/m`, `P%` or a size such as `2G`, `500M`, `1T` (binary).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!("not a subset (n/m, P% or a size like 2G): {text:?}"),
            )
        };
        let t = text.trim();
        if let Some((n, m)) = t.split_once('/') {
            let (n, m): (u32, u32) = (n.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            return if n == 0 || m == 0 || n > m {
                Err(bad())
            } else {
                Ok(Self::Fraction(n, m))
            };
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.parse().map_err(|_| bad())?;
            return if p > 0.0 && p <= 100.0 {
                Ok(Self::Percent(p))
            } else {
                Err(bad())
            };
        }
        match parse_size(t) {
            Ok(b) if b > 0 => Ok(Self::Bytes(b)),
            _ => Err(bad()),
        }
    }
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` or `T` (binary
/// multiples, either case). Zero is a size.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for anything else, or a size past `u64`.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not a size (e.g. 500M, 2G): {text:?}"),
        )
    };
    let t = text.trim();
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_shl(shift)
        .filter(|&b| b >> shift == n)
        .ok_or_else(bad)
}

/// The packs a subset reads: least recently verified first.
pub(super) fn choose(
    index: &ChunkIndex,
    mut packs: Vec<(PackId, u64)>,
    subset: Subset,
) -> Result<Vec<(PackId, u64)>> {
    let mut age = HashMap::new();
    for (p, _) in &packs {
        age.insert(*p, index.verified_at(p)?.unwrap_or(0));
    }
    packs.sort_by_key(|(p, _)| (age[p], *p));
    let n = packs.len();
    let take = match subset {
        Subset::All => n,
        Subset::Fraction(a, b) => (n * a as usize).div_ceil(b as usize),
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        Subset::Percent(p) => ((n as f64) * p / 100.0).ceil() as usize,
        Subset::Bytes(limit) => {
            let mut total = 0u64;
            packs
                .iter()
                .take_while(|(_, s)| {
                    let fits = total < limit;
                    total += s;
                    fits
                })
                .count()
        }
    };
    packs.truncate(take.min(n));
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::Subset;

    #[test]
    fn subsets_parse() {
        assert_eq!(Subset::parse("1/7").unwrap(), Subset::Fraction(1, 7));
        assert_eq!(Subset::parse("10%").unwrap(), Subset::Percent(10.0));
        assert_eq!(Subset::parse("2G").unwrap(), Subset::Bytes(2 << 30));
        assert_eq!(Subset::parse("500M").unwrap(), Subset::Bytes(500 << 20));
        assert_eq!(Subset::parse("4096").unwrap(), Subset::Bytes(4096));
        for bad in [
            "0/7",
            "8/7",
            "1/0",
            "0%",
            "101%",
            "G",
            "-1G",
            "x",
            "99999999999T",
        ] {
            assert!(Subset::parse(bad).is_err(), "{bad}");
        }
    }
}
