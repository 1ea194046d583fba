//! Where passwords come from. Never the command line, never a non-TTY stdin
//! (stdin may be the data being backed up).

use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use super::Global;

/// A password: its bytes as given (a password file or command output need not
/// be UTF-8), wiped from memory when dropped.
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }
}

/// Strips one trailing line ending, as restic does with password files.
fn strip_newline(mut s: Zeroizing<Vec<u8>>) -> Password {
    if s.ends_with(b"\n") {
        s.pop();
        if s.ends_with(b"\r") {
            s.pop();
        }
    }
    Password(s)
}

fn from_file(path: &Path) -> Result<Password> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?,
    );
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: password file {} is readable by group or others (mode {:o}); run `chmod 600` on it",
                path.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
    Ok(strip_newline(bytes))
}

fn from_command(cmd: &str) -> Result<Password> {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd);
    crate::source::remove_secret_env(&mut c);
    let out = c
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run password command '{cmd}'"))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        bail!("password command '{cmd}' failed ({})", out.status);
    }
    Ok(strip_newline(stdout))
}

/// A password from the environment, as bytes (it need not be UTF-8).
fn env_password(name: &str) -> Option<Password> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(|v| Password::new(v.into_vec()))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn prompt(label: &str) -> Result<Password> {
    Ok(Password(
        rpassword::prompt_password(label)
            .context("cannot read the password from the terminal")?
            .into_bytes()
            .into(),
    ))
}

fn tty() -> bool {
    std::io::stdin().is_terminal()
}

fn none_given() -> anyhow::Error {
    anyhow::anyhow!(
        "no password given: use --password-file, CAIRN_PASSWORD_FILE, --password-command or CAIRN_PASSWORD \
         (or run on a terminal to be asked)",
    )
}

/// The repository password, from the first source given (see product contract).
pub fn repository_password(g: &Global) -> Result<Password> {
    if let Some(p) = &g.password_file {
        return from_file(p);
    }
    if let Some(p) = env("CAIRN_PASSWORD_FILE") {
        return from_file(Path::new(&p));
    }
    if let Some(c) = g
        .password_command
        .clone()
        .or_else(|| env("CAIRN_PASSWORD_COMMAND"))
    {
        return from_command(&c);
    }
    if let Some(p) = env_password("CAIRN_PASSWORD") {
        return Ok(p);
    }
    if tty() {
        return prompt("enter password for repository: ");
    }
    Err(none_given())
}

/// A password for a new repository: asked twice on a terminal.
pub fn new_repository_password(g: &Global) -> Result<Password> {
    let given = g.password_file.is_some()
        || env("CAIRN_PASSWORD_FILE").is_some()
        || g.password_command.is_some()
        || env("CAIRN_PASSWORD_COMMAND").is_some()
        || std::env::var_os("CAIRN_PASSWORD").is_some_and(|v| !v.is_empty());
    if given || !tty() {
        return repository_password(g);
    }
    prompt_twice("enter password for new repository: ")
}

fn prompt_twice(label: &str) -> Result<Password> {
    let a = prompt(label)?;
    let b = prompt("enter password again: ")?;
    if a.as_bytes() != b.as_bytes() {
        bail!("passwords do not match");
    }
    Ok(a)
}

/// The new password for `key add` / `key passwd`.
pub fn new_key_password(file: &Option<std::path::PathBuf>) -> Result<Password> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(p) = env_password("CAIRN_NEW_PASSWORD") {
        return Ok(p);
    }
    if tty() {
        return prompt_twice("enter new password: ");
    }
    Err(anyhow::anyhow!("no new password given: use --new-password-file or CAIRN_NEW_PASSWORD (or run on a terminal)"))
}

/// A second repository's password (`--from`, `copy --to`): its own sources, else the same.
pub fn other_password(
    file: &Option<std::path::PathBuf>,
    command: &Option<String>,
    env_name: &str,
    g: &Global,
) -> Result<Password> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(c) = command {
        return from_command(c);
    }
    if let Some(p) = env_password(env_name) {
        return Ok(p);
    }
    repository_password(g)
}
