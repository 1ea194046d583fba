//! Where passwords come from. Never the command line, never a non-TTY stdin
//! (stdin may be the data being backed up).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::Global;

/// A password that is wiped from memory when dropped.
pub struct Password(String);

impl Password {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        // SAFETY: zero bytes are valid UTF-8.
        for b in unsafe { self.0.as_bytes_mut() } {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Strips one trailing line ending, as restic does with password files.
fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

fn from_file(path: &Path) -> Result<Password> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    Ok(Password(strip_newline(s)))
}

fn from_command(cmd: &str) -> Result<Password> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run password command '{cmd}'"))?;
    if !out.status.success() {
        bail!("password command '{cmd}' failed ({})", out.status);
    }
    Ok(Password(strip_newline(
        String::from_utf8(out.stdout).context("password command printed non-UTF-8")?,
    )))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn prompt(label: &str) -> Result<Password> {
    Ok(Password(
        rpassword::prompt_password(label).context("cannot read the password from the terminal")?,
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
    if let Some(p) = env("CAIRN_PASSWORD") {
        return Ok(Password(p));
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
        || env("CAIRN_PASSWORD").is_some();
    if given || !tty() {
        return repository_password(g);
    }
    prompt_twice("enter password for new repository: ")
}

fn prompt_twice(label: &str) -> Result<Password> {
    let a = prompt(label)?;
    let b = prompt("enter password again: ")?;
    if a.0 != b.0 {
        bail!("passwords do not match");
    }
    Ok(a)
}

/// The new password for `key add` / `key passwd`.
pub fn new_key_password(file: &Option<std::path::PathBuf>) -> Result<Password> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(p) = env("CAIRN_NEW_PASSWORD") {
        return Ok(Password(p));
    }
    if tty() {
        return prompt_twice("enter new password: ");
    }
    Err(anyhow::anyhow!("no new password given: use --new-password-file or CAIRN_NEW_PASSWORD (or run on a terminal)"))
}

/// A second repository's password (`--from`, `copy --to`): its own sources, else the same.
pub fn other_password(
    file: &Option<std::path::PathBuf>,
    env_name: &str,
    g: &Global,
) -> Result<Password> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(p) = env(env_name) {
        return Ok(Password(p));
    }
    repository_password(g)
}
