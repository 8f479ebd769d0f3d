//! The exit codes: the README's table is the code's table
//! (`src/cli/exit.rs`, compiled here as it is), and the cases that once
//! exited with the wrong code.

use std::process::Command;

use super::common::{BIN, stderr};

#[allow(dead_code)]
#[path = "../../src/cli/exit.rs"]
mod table;

/// The rows of the README's "Exit codes" table: (code, meaning).
fn readme_table() -> Vec<(u8, String)> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Exit codes\n")
        .nth(1)
        .expect("README has an \"Exit codes\" section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|---"))
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split(" | ")
                .collect();
            let [code, meaning] = cells[..] else {
                panic!("a row of the exit-code table with other than two cells: {line}")
            };
            let code = code.trim().parse::<u8>().ok()?;
            Some((code, meaning.trim().to_owned()))
        })
        .collect()
}

#[test]
fn readme_exit_code_table_is_the_codes_table() {
    let code: Vec<(u8, String)> = table::TABLE
        .iter()
        .map(|row| (row.code, row.meaning.to_owned()))
        .collect();
    let readme = readme_table();
    assert!(readme.len() >= 10, "parsed too few rows: {readme:?}");
    assert_eq!(
        readme, code,
        "README.md's exit codes differ from src/cli/exit.rs"
    );
}

#[test]
fn every_error_kind_has_one_exit_code() {
    use kura::ErrorKind as K;
    let kinds = [
        K::NotFound,
        K::AlreadyExists,
        K::Corrupt,
        K::WrongPassword,
        K::KeySlotRefused,
        K::Unsupported,
        K::Locked,
        K::Transient,
        K::AccessDenied,
        K::Unreachable,
        K::InvalidInput,
        K::Io,
    ];
    for kind in kinds {
        let rows = table::TABLE
            .iter()
            .filter(|row| row.kinds.contains(&kind))
            .count();
        assert_eq!(rows, 1, "{kind:?} is in {rows} rows of the exit-code table");
    }
    let mut codes: Vec<u8> = table::TABLE.iter().map(|row| row.code).collect();
    codes.dedup();
    assert_eq!(codes.len(), table::TABLE.len(), "an exit code twice");
}

/// S3 with no credentials anywhere: exit 17 naming what to set, before any
/// request, and without asking the EC2 instance metadata service (whose
/// credential provider would log its failure).
#[test]
fn s3_without_credentials_exits_17_and_never_asks_instance_metadata() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-r",
        "s3://bucket/p",
        "--s3-region",
        "garage",
        // A closed port: nothing may be sent anyway.
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "snapshots",
    ]);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "KURA_S3_ENDPOINT",
        "KURA_S3_REGION",
        "KURA_REPOSITORY",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .env("HOME", home.path())
        .env("KURA_PASSWORD", "pw")
        .env("KURA_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(i32::from(table::ACCESS_DENIED)),
        "{err}"
    );
    assert!(
        err.contains("no credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(
        !err.contains("IMDS"),
        "asked the instance metadata service: {err}"
    );
}
