//! Command-line layer: file names in text output. A name in a snapshot is
//! any bytes, so printed as they are it could move the cursor, recolour or
//! retitle the terminal of whoever lists a hostile tree. Text output
//! escapes names as `ls -b` and GNU's quoting do: printable characters as
//! they are, a backslash doubled, `\n`, `\t`, `\r` by name, and every other
//! control character and every byte that is not UTF-8 as `\xNN`. Two
//! different names never print the same.
//!
//! JSON output keeps `path` as text (lossy for names that are not UTF-8,
//! as before) and adds `path_hex`, the exact bytes, where they are not
//! UTF-8, so a program can still tell every name apart.

use std::fmt::Write;

/// `name` as text safe to print on a terminal, and unambiguous.
pub fn escaped(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    for b in c.to_string().bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The exact bytes of `name` as hex when they are not UTF-8 (for JSON
/// output beside the lossy text), else `None`.
pub fn hex_unless_utf8(name: &[u8]) -> Option<String> {
    std::str::from_utf8(name)
        .is_err()
        .then(|| hex::encode(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_safely_and_unambiguously() {
        assert_eq!(escaped(b"/srv/www/index.html"), "/srv/www/index.html");
        assert_eq!(escaped("/日本/ü".as_bytes()), "/日本/ü");
        assert_eq!(escaped(b"a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(escaped(b"two\nlines\ttab"), "two\\nlines\\ttab");
        assert_eq!(escaped(b"\xff\xfe"), "\\xff\\xfe");
        // A literal backslash-x in a name is not mistaken for an escape.
        assert_ne!(escaped(b"\\xff"), escaped(b"\xff"));
        assert_eq!(escaped("\u{9b}".as_bytes()), "\\xc2\\x9b");
        assert_eq!(hex_unless_utf8(b"ok"), None);
        assert_eq!(hex_unless_utf8(b"\xff"), Some("ff".into()));
    }
}
