//! Command-line layer: `--json` output. Every command prints a library
//! report (or a listing of library values) through here, serialized by the
//! report's own `serde::Serialize`, so field names are decided once, beside
//! the report. A command may add fields of its own run beside the report's
//! (`dry_run`, the snapshot it read): [`Document::with`].

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

/// One JSON document: a report, and fields the command adds beside it.
pub struct Document(Value);

impl Document {
    /// The document of `value`.
    ///
    /// # Panics
    /// If `value` does not serialize to JSON (reports always do: no maps
    /// with non-string keys, no failing `Serialize`).
    pub fn of(value: &impl Serialize) -> Self {
        Self(serde_json::to_value(value).expect("reports serialize to JSON"))
    }

    /// An empty object, for output that is no library report (the fields
    /// come from [`Self::with`]).
    pub fn object() -> Self {
        Self(Value::Object(serde_json::Map::new()))
    }

    /// Adds (or replaces) the field `key` of an object; a document that is
    /// not an object is left as it is.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        if let Value::Object(fields) = &mut self.0 {
            fields.insert(key.to_owned(), Self::of(&value).0);
        }
        self
    }

    /// Prints the document on one line of standard output; a reader that
    /// went away is not an error.
    ///
    /// # Errors
    /// Writing to standard output failed otherwise.
    pub fn print(&self) -> Result<()> {
        json_line(&mut std::io::stdout().lock(), &self.0).map(|_| ())
    }
}

/// Prints `value` as one JSON document on standard output.
///
/// # Errors
/// As [`Document::print`].
pub fn print_json(value: &impl Serialize) -> Result<()> {
    Document::of(value).print()
}

/// Writes `value` as one line of JSON (a JSON-lines record); `Ok(true)`
/// if the reader went away (not an error: stop writing).
///
/// # Errors
/// Writing failed otherwise.
pub fn json_line(out: &mut impl Write, value: &impl Serialize) -> Result<bool> {
    let line = serde_json::to_string(value).expect("reports serialize to JSON");
    match writeln!(out, "{line}") {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Document, json_line};

    #[derive(serde::Serialize)]
    struct Report {
        files: u64,
    }

    #[test]
    fn fields_are_added_beside_the_report() {
        let doc = Document::of(&Report { files: 3 }).with("dry_run", true);
        assert_eq!(doc.0, serde_json::json!({"files": 3, "dry_run": true}));
        let list = Document::of(&[1, 2]).with("dry_run", true);
        assert_eq!(list.0, serde_json::json!([1, 2]));
    }

    #[test]
    fn a_line_is_one_json_document() {
        let mut out = Vec::new();
        assert!(!json_line(&mut out, &Report { files: 1 }).unwrap());
        assert_eq!(out, b"{\"files\":1}\n");
    }
}
