//! The layers of `src/` stay layers: every `crate::` path in the library
//! points down the stack (README, "Layout of the code"; lib.rs). A path to
//! a layer above, to a sibling layer, or from one operation into another
//! fails this test with the file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Rank of each top-level module of the library: a file may name modules
/// of a lower rank, and its own folder. `snapshot` and `source` share a
/// rank and are siblings: neither may name the other.
const RANKS: &[(&str, u32)] = &[
    ("error", 0),
    ("Error", 0),
    ("ErrorKind", 0),
    ("Result", 0),
    ("clock", 5),
    ("algorithms", 10),
    ("id", 15),
    ("format", 20),
    ("backend", 30),
    ("repository", 40),
    ("chunkstore", 50),
    ("snapshot", 60),
    ("source", 60),
    ("ops", 70),
];

/// Modules of `ops/` that every operation may use.
const OPS_SHARED: &[&str] = &["progress"];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its `//` comment (doc links name upper
/// layers legitimately). Good enough for this source: no `//` in strings
/// that also hold `crate::`.
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// The first two segments of every path a use-tree starting right after
/// `crate::` names: `ops::{backup, progress::X}` gives `ops backup` and
/// `ops progress`.
fn paths(tree: &str) -> Vec<(String, Option<String>)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let expand = |s: &str| -> Vec<String> {
        let s = s.trim();
        match s.strip_prefix('{') {
            Some(inner) => split_top(inner)
                .iter()
                .map(|p| p.trim().to_owned())
                .collect(),
            None => vec![s.to_owned()],
        }
    };
    let mut out = Vec::new();
    for first in expand(tree) {
        let head = ident(&first);
        if head.is_empty() {
            continue;
        }
        let rest = first[head.len()..].strip_prefix("::");
        match rest {
            None => out.push((head, None)),
            Some(rest) => {
                for second in expand(rest) {
                    let s = ident(&second);
                    out.push((head.clone(), (!s.is_empty()).then_some(s)));
                }
            }
        }
    }
    out
}

/// `inner` up to its closing brace, split at top-level commas.
fn split_top(inner: &str) -> Vec<String> {
    let (mut depth, mut parts, mut cur) = (0usize, Vec::new(), String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

/// The layer folder of a file under `src/` and, for `src/ops/X...`, X.
fn place(rel: &Path) -> (String, Option<String>) {
    let mut comps = rel.iter().map(|c| c.to_string_lossy().into_owned());
    let top = comps.next().unwrap_or_default();
    let top = top.trim_end_matches(".rs").to_owned();
    let sub = comps.next().map(|s| s.trim_end_matches(".rs").to_owned());
    (top, sub.filter(|s| s != "mod"))
}

fn violations_in(rel: &Path, text: &str, ops_modules: &BTreeSet<String>) -> Vec<String> {
    let (layer, own_sub) = place(rel);
    let Some(own_rank) = rank(&layer) else {
        return Vec::new(); // lib.rs: declares the modules.
    };
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = code(line);
        let mut edges = Vec::new();
        for (i, _) in line.match_indices("crate::") {
            edges.extend(paths(&line[i + "crate::".len()..]));
        }
        // `super::X` from an operation's own file names ops/X.
        if layer == "ops" && rel.iter().count() == 2 {
            for (i, _) in line.match_indices("super::") {
                let seg: String = line[i + "super::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                edges.push(("ops".to_owned(), Some(seg)));
            }
        }
        for (target, sub) in edges {
            let ok = match rank(&target) {
                None => true, // not a module of the library (a macro path)
                Some(_) if target == layer => {
                    layer != "ops"
                        || sub.as_ref().is_none_or(|s| {
                            !ops_modules.contains(s)
                                || OPS_SHARED.contains(&s.as_str())
                                || Some(s) == own_sub.as_ref()
                        })
                }
                Some(r) => r < own_rank,
            };
            if !ok {
                let to = sub.map_or(target.clone(), |s| format!("{target}::{s}"));
                found.push(format!("{}:{}: {layer} -> {to}", rel.display(), n + 1));
            }
        }
    }
    found
}

#[test]
fn every_crate_path_in_the_library_points_down_the_stack() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let ops_modules: BTreeSet<String> = std::fs::read_dir(src.join("ops"))
        .expect("src/ops")
        .map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.trim_end_matches(".rs").to_owned()
        })
        .filter(|n| n != "mod")
        .collect();
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let top = rel.iter().next().map(|c| c.to_string_lossy().into_owned());
        // The binary (main.rs, cli/) sits on top and may name anything.
        if matches!(top.as_deref(), Some("main.rs" | "cli")) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        violations.extend(violations_in(rel, &text, &ops_modules));
        checked += 1;
    }
    assert!(
        checked > 50,
        "only {checked} library files found under src/"
    );
    assert!(
        violations.is_empty(),
        "paths that point up or across the stack:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_rule_catches_an_upward_a_sibling_and_an_ops_to_ops_edge() {
    let ops: BTreeSet<String> = ["backup", "copy", "progress"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let check = |rel: &str, text: &str| violations_in(Path::new(rel), text, &ops).len();
    assert_eq!(
        check("format/pack.rs", "use crate::repository::Repository;"),
        1
    );
    assert_eq!(check("source/walk.rs", "use crate::snapshot::tree;"), 1);
    assert_eq!(check("ops/copy.rs", "use crate::ops::backup::Started;"), 1);
    assert_eq!(check("ops/copy.rs", "use super::backup::commit_check;"), 1);
    assert_eq!(
        check("ops/copy.rs", "use crate::{ops::progress::P, chunkstore};"),
        0
    );
    assert_eq!(
        check(
            "ops/copy.rs",
            "use crate::{format::{pack, tree}, ops::backup};"
        ),
        1
    );
    assert_eq!(
        check("chunkstore/mod.rs", "// see [`crate::ops::backup`]"),
        0
    );
    assert_eq!(
        check("id.rs", "crate::algorithms::crypto::random_array()"),
        0
    );
    assert_eq!(
        check("algorithms/chunker.rs", "use crate::format::config::X;"),
        1
    );
}
