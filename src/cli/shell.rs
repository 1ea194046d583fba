//! `completions bash|zsh|fish` and `man`: shell integration on stdout, and
//! man pages written into a directory (`man --dir DIR`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, CommandFactory, ValueEnum};

use super::{usage, Cli, Global};

#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    shell: Shell,
}

fn to_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn completions(a: &CompletionsArgs) -> Result<()> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut buf);
    to_stdout(&buf)
}

#[derive(Args)]
pub struct ManArgs {
    /// Write cairn.1 and a page per subcommand (cairn-backup.1, cairn-key-add.1, ...)
    /// into this directory, created if missing, instead of cairn.1 to standard output
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The command the pages describe, built, so that every subcommand knows its
/// page name (`cairn-key-add`), which is also how its parent's SUBCOMMANDS
/// section cites it. clap's `help` subcommands are left out: they get no page,
/// so no page may cite one.
fn man_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every page names cairn and its version as its source (clap_mangen would
/// name a subcommand's page after the subcommand, with no version).
fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("cairn {}", env!("CARGO_PKG_VERSION")))
}

/// A page for `cmd` and one for each subcommand below it, nested ones too
/// (clap_mangen's own `generate_to` walks them the same way).
fn pages(cmd: &clap::Command, out: &mut Vec<clap_mangen::Man>) {
    out.push(page(cmd.clone()));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, out);
    }
}

pub fn man(g: &Global, a: &ManArgs) -> Result<()> {
    let cmd = man_command();
    let Some(dir) = &a.dir else {
        let mut buf = Vec::new();
        page(cmd).render(&mut buf)?;
        return to_stdout(&buf);
    };
    // A file where the directory should be is a usage mistake (exit 2), as
    // for a repository or a restore target; failing to write is a failure (1).
    if dir.exists() && !dir.is_dir() {
        return Err(usage(format!("--dir {} is not a directory", dir.display())));
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        let msg = format!("cannot create {}: {e}", dir.display());
        return Err(match e.kind() {
            std::io::ErrorKind::NotADirectory => usage(msg),
            _ => anyhow!(msg),
        });
    }
    let mut all = Vec::new();
    pages(&cmd, &mut all);
    let mut written = String::new();
    for page in &all {
        let path = dir.join(page.get_filename());
        write_page(page, &path).with_context(|| format!("cannot write {}", path.display()))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    if g.quiet {
        return Ok(());
    }
    to_stdout(written.as_bytes())
}

fn write_page(page: &clap_mangen::Man, path: &Path) -> std::io::Result<()> {
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    std::fs::write(path, buf)
}
