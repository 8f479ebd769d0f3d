//! Where a password comes from: a command, a file, an environment variable,
//! or a prompt on a terminal, in that order.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The sources of one password, in order of preference.
pub struct PasswordSource {
    command: Option<String>,
    file: Option<PathBuf>,
    env_var: &'static str,
    /// Where to give the password, for the error without one.
    hint: &'static str,
}

impl PasswordSource {
    /// The repository password: `--password-command`, then
    /// `--password-file`/`KURA_PASSWORD_FILE`, then `KURA_PASSWORD`.
    pub fn from_args(command: Option<String>, file: Option<PathBuf>) -> Self {
        Self {
            command,
            file,
            env_var: "KURA_PASSWORD",
            hint: "set KURA_PASSWORD_FILE, KURA_PASSWORD or --password-command",
        }
    }

    /// The password of `copy`'s target: `--to-password-command`, then
    /// `--to-password-file`/`KURA_TO_PASSWORD_FILE`, then `KURA_TO_PASSWORD`.
    pub fn for_target(command: Option<String>, file: Option<PathBuf>) -> Self {
        Self {
            command,
            file,
            env_var: "KURA_TO_PASSWORD",
            hint: "for the target, set KURA_TO_PASSWORD_FILE, KURA_TO_PASSWORD \
                   or --to-password-command",
        }
    }

    /// A new password for `key add` / `key passwd`:
    /// `KURA_NEW_PASSWORD_FILE`, then `KURA_NEW_PASSWORD`.
    pub fn new_password() -> Self {
        Self {
            command: None,
            file: std::env::var_os("KURA_NEW_PASSWORD_FILE").map(PathBuf::from),
            env_var: "KURA_NEW_PASSWORD",
            hint: "set KURA_NEW_PASSWORD_FILE or KURA_NEW_PASSWORD",
        }
    }

    fn given(&self) -> Result<Option<String>> {
        if let Some(cmd) = &self.command {
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::inherit())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running password command {cmd:?}"))?;
            if !out.status.success() {
                bail!("password command {cmd:?} failed with {}", out.status);
            }
            return Ok(Some(first_line(&String::from_utf8_lossy(&out.stdout))));
        }
        if let Some(file) = &self.file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading password file {}", file.display()))?;
            return Ok(Some(first_line(&text)));
        }
        Ok(std::env::var(self.env_var).ok())
    }

    /// The password, or a prompt on the terminal. An empty one given by a
    /// command, a file or the variable is refused: it is a mistake in the
    /// set-up (an unset variable in a unit file), not a password to try.
    pub fn read(&self, prompt: &str) -> Result<String> {
        if let Some(p) = self.given()? {
            if p.is_empty() {
                bail!("the password given is empty: {}", self.hint);
            }
            return Ok(p);
        }
        if !std::io::stdin().is_terminal() {
            bail!("no password given: {}", self.hint);
        }
        Ok(rpassword::prompt_password(format!("{prompt}: "))?)
    }

    /// A new password; a prompt asks twice. Empty passwords are refused.
    pub fn read_new(&self, prompt: &str) -> Result<String> {
        let password = if let Some(p) = self.given()? {
            p
        } else {
            let first = self.read(prompt)?;
            if rpassword::prompt_password("enter it again: ")? != first {
                bail!("the passwords do not match");
            }
            first
        };
        if password.is_empty() {
            bail!("refusing an empty password");
        }
        Ok(password)
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_owned()
}
