//! Layer 6 (CLI): recovery codes and the recovery sheet (README, "For
//! whoever comes after you"). `kura key add --recovery` makes an admin key
//! slot whose password is a random code of 120 bits, written as six groups
//! of four Crockford base32 characters and a seventh group that is a
//! checksum of the six; it prints a sheet with the repository's location
//! and id, the code, and the exact commands that restore the newest
//! snapshot on another machine. A code is accepted however it is typed
//! (lower case, spaces instead of dashes, O for 0, I or L for 1) as long
//! as its checksum matches: it is then turned into the one form the slot
//! was made with. Anything else is a password as given.

use std::fmt::Write as _;

use zeroize::Zeroizing;

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Groups of the random part, and characters per group.
const GROUPS: usize = 6;
const GROUP_LEN: usize = 4;

/// A new random recovery code in its canonical form.
pub fn generate() -> Zeroizing<String> {
    let random: [u8; 24] = kura::algorithms::crypto::random_array();
    let body: String = random
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect();
    Zeroizing::new(format_code(&body))
}

/// The checksum group of a random part: 20 bits of its BLAKE3 hash.
fn checksum(body: &str) -> String {
    let h = blake3::hash(body.as_bytes());
    let bits = u32::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1], h.as_bytes()[2], 0]);
    (0..GROUP_LEN)
        .map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize] as char)
        .collect()
}

/// `body` (24 characters) in groups, with its checksum group.
fn format_code(body: &str) -> String {
    let mut out = String::new();
    for (i, chunk) in body.as_bytes().chunks(GROUP_LEN).enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    let _ = write!(out, "-{}", checksum(body));
    out
}

/// The canonical form of `text` if it is a recovery code, typed any way
/// the module doc allows, with a checksum that matches.
pub fn canonical(text: &str) -> Option<String> {
    let chars: Option<String> = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => Some('0'),
            'I' | 'L' => Some('1'),
            u if ALPHABET.contains(&(u as u8)) && u.is_ascii() => Some(u),
            _ => None,
        })
        .collect();
    let chars = chars?;
    if chars.len() != (GROUPS + 1) * GROUP_LEN {
        return None;
    }
    let (body, sum) = chars.split_at(GROUPS * GROUP_LEN);
    (checksum(body) == sum).then(|| format_code(body))
}

/// What the sheet says about the repository.
pub struct Sheet<'a> {
    pub location: &'a str,
    pub repository_id: &'a str,
    pub code: &'a str,
    pub slot: &'a str,
}

impl Sheet<'_> {
    /// The commands a stranger runs, in order.
    fn commands(&self) -> [String; 4] {
        [
            "install kura: its Debian package, or `cargo install --path .` in its source"
                .to_owned(),
            format!("export KURA_REPOSITORY='{}'", self.location),
            "export KURA_PASSWORD='<the recovery code above>'".to_owned(),
            "kura snapshots && kura restore latest --target /tmp/restored".to_owned(),
        ]
    }

    /// The sheet as plain text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "KURA RECOVERY SHEET\n\
             ===================\n\
             Keep this page where the company keeps its keys. With it anyone can\n\
             read every backup in this repository; without it (and without the\n\
             administrator's password) no one can.\n\
             \n\
             Repository:     {}\n\
             Repository id:  {}\n\
             Key slot:       {}\n\
             Recovery code:  {}\n\
             \n\
             (Case, spaces and dashes do not matter; the last group is a checksum.)\n\
             \n\
             To restore the newest backup on any Linux machine:\n",
            self.location, self.repository_id, self.slot, self.code
        );
        for (i, c) in self.commands().iter().enumerate() {
            let _ = writeln!(out, "  {}. {c}", i + 1);
        }
        out.push_str(
            "\nA database dump is a file of the snapshot, e.g.\n\
             \x20 kura dump latest db/site.sql | psql site\n\
             Older points in time: `kura snapshots`, then `kura restore ID ...`.\n",
        );
        out
    }

    /// The sheet as a printable, self-contained HTML page.
    pub fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut steps = String::new();
        for c in self.commands() {
            let _ = write!(steps, "<li><code>{}</code></li>", esc(&c));
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>kura recovery sheet</title>\
             <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}\
             .code{{font:1.6em monospace;letter-spacing:.1em;border:2px solid #000;padding:.5em}}\
             code{{font-family:monospace}}@media print{{body{{margin:0}}}}</style></head><body>\
             <h1>kura recovery sheet</h1>\
             <p>Keep this page where the company keeps its keys. With it anyone can read every \
             backup in this repository.</p>\
             <table><tr><th>Repository</th><td id=\"location\"><code>{}</code></td></tr>\
             <tr><th>Repository id</th><td id=\"repository-id\"><code>{}</code></td></tr>\
             <tr><th>Key slot</th><td><code>{}</code></td></tr></table>\
             <p>Recovery code (case, spaces and dashes do not matter):</p>\
             <p class=\"code\" id=\"code\">{}</p>\
             <h2>To restore the newest backup on any Linux machine</h2><ol>{steps}</ol>\
             </body></html>\n",
            esc(self.location),
            esc(self.repository_id),
            esc(self.slot),
            esc(self.code)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_recognised_however_typed_and_only_with_their_checksum() {
        let code = generate();
        assert_eq!(code.len(), 7 * 4 + 6);
        assert_eq!(canonical(&code).as_deref(), Some(code.as_str()));
        let sloppy = code.to_lowercase().replace('-', " ").replace('0', "o");
        assert_eq!(canonical(&sloppy).as_deref(), Some(code.as_str()));
        let mut typo = code.to_string().into_bytes();
        typo[0] = if typo[0] == b'A' { b'B' } else { b'A' };
        assert_eq!(canonical(std::str::from_utf8(&typo).unwrap()), None);
        assert_eq!(canonical("correct horse battery staple"), None);
        assert_ne!(generate(), generate());
    }

    #[test]
    fn the_sheet_names_the_repository_and_the_commands() {
        let sheet = Sheet {
            location: "sftp://backup@storage/web1",
            repository_id: "ab12",
            code: "AAAA-BBBB",
            slot: "cd34",
        };
        let text = sheet.text();
        assert!(text.contains("export KURA_REPOSITORY='sftp://backup@storage/web1'"));
        assert!(text.contains("Recovery code:  AAAA-BBBB"));
        assert!(
            sheet
                .html()
                .contains("<p class=\"code\" id=\"code\">AAAA-BBBB</p>")
        );
    }
}
