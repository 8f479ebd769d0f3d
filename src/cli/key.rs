//! `kura key list|add|remove|passwd`.

use anyhow::Result;
use clap::Subcommand;

use super::{GlobalArgs, KdfArgs};

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List key slots.
    List,
    /// Add a key slot for a new password (read from KURA_NEW_PASSWORD_FILE,
    /// KURA_NEW_PASSWORD or a prompt).
    Add {
        /// Issue a put-only key: it can back up (write packs, index files
        /// and snapshots sealed to the admin), but never decrypt data,
        /// trees or snapshots, nor prune, forget or repair.
        #[arg(long)]
        put_only: bool,
        /// Make an admin key slot for a random recovery code instead of a
        /// password, and print a recovery sheet (location, id, the code,
        /// the restore commands) to keep on paper.
        #[arg(long, conflicts_with = "put_only")]
        recovery: bool,
        /// With --recovery: also write the sheet as a printable HTML page
        /// (readable only by its owner: it holds the code).
        #[arg(long, requires = "recovery", value_name = "FILE")]
        sheet: Option<std::path::PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key slot by id (not the one in use).
    Remove { id: String },
    /// Replace the password of the key slot in use.
    Passwd {
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

pub fn run(g: &GlobalArgs, action: &KeyCommand) -> Result<()> {
    let mut repo = g.open()?;
    repo.set_clock(super::clock_from_env()?);
    match action {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                super::output::print_json(&keys)?;
            } else {
                println!(
                    "  {:<16} {:<8} {:<17} {:<28}",
                    "id", "role", "created (UTC)", "argon2id (KiB, passes, lanes)"
                );
                for (id, why) in repo.damaged_keys()? {
                    println!("! {:<16} damaged: {why}", &id.to_hex()[..16]);
                }
                for k in keys {
                    let mark = if k.current { "*" } else { " " };
                    let p = k.params;
                    println!(
                        "{mark} {:<16} {:<8} {:<17} {}, {}, {}",
                        &k.id.to_hex()[..16],
                        k.role,
                        utc_minutes(k.created),
                        p.m_cost,
                        p.t_cost,
                        p.p_cost
                    );
                }
            }
        }
        KeyCommand::Add {
            recovery: true,
            sheet,
            kdf,
            ..
        } => {
            repo.require_admin("adding a key")?;
            add_recovery(g, &repo, sheet.as_deref(), *kdf)?;
        }
        KeyCommand::Add { put_only, kdf, .. } => {
            repo.require_admin("adding a key")?;
            let password = super::PasswordSource::new_password().read_new("new password")?;
            if *put_only {
                let (id, key_id) = repo.add_put_only_key(password.as_bytes(), (*kdf).into())?;
                println!("added put-only key slot {id} (writer id {key_id:08x})");
            } else {
                let id = repo.add_key(password.as_bytes(), (*kdf).into())?;
                println!("added key slot {id}");
            }
        }
        KeyCommand::Remove { id } => {
            let id = repo.find_key_slot(id)?;
            repo.remove_key(&id)?;
            kura::ops::history::remember_removed_slot(&repo, super::cache_root().as_deref(), id);
            println!("removed key slot {id}");
        }
        KeyCommand::Passwd { kdf } => {
            let password = super::PasswordSource::new_password().read_new("new password")?;
            let old = repo.current_slot();
            let id = repo.change_password(password.as_bytes(), (*kdf).into())?;
            kura::ops::history::remember_removed_slot(&repo, super::cache_root().as_deref(), old);
            println!("password changed; new key slot {id}");
        }
    }
    Ok(())
}

/// `key add --recovery`: a slot for a new recovery code, and its sheet.
fn add_recovery(
    g: &GlobalArgs,
    repo: &kura::repository::Repository,
    sheet_file: Option<&std::path::Path>,
    kdf: KdfArgs,
) -> Result<()> {
    let code = super::recovery::generate();
    let id = repo.add_key(code.as_bytes(), kdf.into())?;
    let location = match &g.repo {
        Some(r) if !r.to_string_lossy().contains("://") => std::path::absolute(r)?,
        Some(r) => r.clone(),
        None => std::path::PathBuf::new(),
    };
    let location = location.display().to_string();
    let (repo_id, slot) = (repo.id().to_hex(), id.to_hex());
    let sheet = super::recovery::Sheet {
        location: &location,
        repository_id: &repo_id,
        code: &code,
        slot: &slot,
    };
    if let Some(file) = sheet_file {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .and_then(|mut f| f.write_all(sheet.html().as_bytes()))
            .map_err(|e| anyhow::anyhow!("writing the sheet {}: {e}", file.display()))?;
    }
    print!("{}", sheet.text());
    eprintln!("added recovery key slot {id}: print the sheet above and keep it safe");
    Ok(())
}

/// `YYYY-MM-DD HH:MM` (UTC) for unix seconds, by the civil-from-days
/// algorithm (H. Hinnant), to keep a date crate out of the binary.
pub(super) fn utc_minutes(unix: u64) -> String {
    let (year, month, day, hour) = kura::snapshot::civil_utc(
        i64::try_from(unix)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000),
    );
    format!(
        "{year:04}-{month:02}-{day:02} {hour:02}:{:02}",
        unix % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_minutes_known_dates() {
        assert_eq!(super::utc_minutes(0), "1970-01-01 00:00");
        assert_eq!(super::utc_minutes(1_795_700_496), "2026-11-26 13:41");
        assert_eq!(super::utc_minutes(951_782_400), "2000-02-29 00:00");
    }
}
