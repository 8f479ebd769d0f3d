//! Layer 6 (CLI): where a password comes from: a key file, a command, a
//! file, an environment variable, or a prompt on a terminal, in that order.
//!
//! A key file (`--key-file`, `KURA_KEY_FILE`) is the password file of
//! unattended use (a put-only key on a server): it is refused, naming its
//! mode, unless only its owner may read or write it.
//!
//! Owned invariants: a password is held only in [`Zeroizing`] buffers
//! (wiped when dropped), and no message names the password or the
//! password command's text (a command line such as `echo hunter2` can
//! hold the secret itself): a failing command is "the password command
//! (KURA_PASSWORD_COMMAND / --password-command)" with its exit status.
//! The variables are read as [`super::secrets`] kept them when it took
//! them out of the environment.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

/// A password as read, wiped from memory when dropped.
pub type Password = Zeroizing<String>;

/// The sources of one password, in order of preference.
pub struct PasswordSource {
    key_file: Option<PathBuf>,
    command: Option<String>,
    file: Option<PathBuf>,
    env_var: &'static str,
    /// How the command is named in messages (never its text).
    command_name: &'static str,
    /// Where to give the password, for the error without one.
    hint: &'static str,
}

impl PasswordSource {
    /// The repository password: `--password-command`, then
    /// `--password-file`/`KURA_PASSWORD_FILE`, then `KURA_PASSWORD`.
    pub fn from_args(command: Option<String>, file: Option<PathBuf>) -> Self {
        Self {
            key_file: None,
            command,
            file,
            env_var: "KURA_PASSWORD",
            command_name: "the password command (KURA_PASSWORD_COMMAND / --password-command)",
            hint: "set KURA_PASSWORD_FILE, KURA_PASSWORD or --password-command",
        }
    }

    /// The password of `copy`'s target: `--to-password-command`, then
    /// `--to-password-file`/`KURA_TO_PASSWORD_FILE`, then `KURA_TO_PASSWORD`.
    pub fn for_target(command: Option<String>, file: Option<PathBuf>) -> Self {
        Self {
            key_file: None,
            command,
            file,
            env_var: "KURA_TO_PASSWORD",
            command_name: "the target's password command \
                           (KURA_TO_PASSWORD_COMMAND / --to-password-command)",
            hint: "for the target, set KURA_TO_PASSWORD_FILE, KURA_TO_PASSWORD \
                   or --to-password-command",
        }
    }

    /// A new password for `key add` / `key passwd`:
    /// `KURA_NEW_PASSWORD_FILE`, then `KURA_NEW_PASSWORD`.
    pub fn new_password() -> Self {
        Self {
            key_file: None,
            command: None,
            file: super::secrets::password_variable("KURA_NEW_PASSWORD_FILE")
                .map(|v| PathBuf::from(std::ffi::OsString::from_vec(v.to_vec()))),
            env_var: "KURA_NEW_PASSWORD",
            command_name: "no password command",
            hint: "set KURA_NEW_PASSWORD_FILE or KURA_NEW_PASSWORD",
        }
    }

    /// The same sources, with the key file `key_file` (if any) first.
    #[must_use]
    pub fn with_key_file(mut self, key_file: Option<PathBuf>) -> Self {
        self.key_file = key_file;
        self
    }

    /// The password from the key file, the command, the file or the
    /// variable, if one is given.
    fn given(&self) -> Result<Option<Password>> {
        if let Some(file) = &self.key_file {
            return read_key_file(file).map(Some);
        }
        if let Some(cmd) = &self.command {
            return self.run_command(cmd).map(Some);
        }
        if let Some(file) = &self.file {
            let text = Zeroizing::new(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading password file {}", file.display()))?,
            );
            return Ok(Some(first_line(&text)));
        }
        let Some(value) = super::secrets::password_variable(self.env_var) else {
            return Ok(None);
        };
        match std::str::from_utf8(&value) {
            Ok(text) => Ok(Some(Zeroizing::new(text.to_owned()))),
            Err(_) => bail!("{} is not UTF-8", self.env_var),
        }
    }

    /// Runs the password command (`sh -c`) and takes the first line of its
    /// output. Its standard error goes to kura's; messages name the
    /// command by [`Self::command_name`] only.
    fn run_command(&self, cmd: &str) -> Result<Password> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::inherit())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.command_name))?;
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            bail!("{} failed with {}", self.command_name, out.status);
        }
        Ok(first_line(&String::from_utf8_lossy(&stdout)))
    }

    /// The password, or a prompt on the terminal. An empty one given by a
    /// command, a file or the variable is refused: it is a mistake in the
    /// set-up (an unset variable in a unit file), not a password to try.
    pub fn read(&self, prompt: &str) -> Result<Password> {
        let password = if let Some(p) = self.given()? {
            if p.is_empty() {
                bail!("the password given is empty: {}", self.hint);
            }
            p
        } else if std::io::stdin().is_terminal() {
            Zeroizing::new(rpassword::prompt_password(format!("{prompt}: "))?)
        } else {
            bail!("no password given: {}", self.hint);
        };
        // A recovery code typed loosely is the code its slot was made with.
        Ok(super::recovery::canonical(&password).map_or(password, Zeroizing::new))
    }

    /// A new password; a prompt asks twice. Empty passwords are refused.
    pub fn read_new(&self, prompt: &str) -> Result<Password> {
        let password = if let Some(p) = self.given()? {
            p
        } else {
            let first = self.read(prompt)?;
            let again = Zeroizing::new(rpassword::prompt_password("enter it again: ")?);
            if *again != *first {
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

/// The first line of key file `path`, refused unless group and others
/// have no access to it (mode 0600 or stricter), naming its mode.
fn read_key_file(path: &std::path::Path) -> Result<Password> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("opening key file {}", path.display()))?;
    let mode = file
        .metadata()
        .with_context(|| format!("reading key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} has mode {:04o}: group or others may access it; a key file must be \
             readable by its owner only (chmod 600 {})",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .with_context(|| format!("reading key file {}", path.display()))?;
    Ok(first_line(&text))
}

fn first_line(text: &str) -> Password {
    Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
}
