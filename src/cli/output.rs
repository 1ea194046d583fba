//! Printing: human text or JSON on stdout, sizes, progress bars on stderr.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::format::tree::{Node, NodeType};
use crate::ops::backup::FileStatus;
use crate::ops::restore::EntryAction;

/// Writes a line to stdout; a closed pipe (`cairn ls | head`) ends the process quietly.
pub fn line(s: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{s}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

pub fn json(v: &serde_json::Value) {
    line(serde_json::to_string(v).expect("serializing JSON"));
}

pub fn pretty_json(v: &serde_json::Value) {
    line(serde_json::to_string_pretty(v).expect("serializing JSON"));
}

/// 1.234 MiB style sizes.
pub fn size(bytes: u64) -> String {
    crate::format::size::human(bytes)
}

/// "1 pack", "3 packs".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A retention period in its largest whole unit: `30d`, `36h`, `90s`.
pub fn span(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => format!("{s}s"),
    }
}

/// Backup progress on stderr (a bar with files, bytes, rate and ETA against a
/// total found by a concurrent scan), and with `-v` each new and changed file on
/// stdout (`-vv`: unmodified ones too).
pub struct BackupProgress {
    bar: Option<ProgressBar>,
    verbose: u8,
    files: AtomicU64,
    /// Files the concurrent scan found (0 until it is done).
    total_files: AtomicU64,
}

impl BackupProgress {
    pub fn new(draw_bar: bool, verbose: u8) -> Self {
        let bar = draw_bar.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("static template"),
            );
            bar
        });
        BackupProgress {
            bar,
            verbose,
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
        }
    }

    pub fn draws_bar(&self) -> bool {
        self.bar.is_some()
    }

    pub fn set_total(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
            bar.set_message(self.files_message(self.files.load(Ordering::Relaxed)));
        }
    }

    /// `12 / 340 files` once the scan has a total, `12 files` before.
    fn files_message(&self, n: u64) -> String {
        match self.total_files.load(Ordering::Relaxed) {
            0 => format!("{n} files"),
            total => format!("{n} / {total} files"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Prints a line on stdout without tearing a progress bar drawn on stderr.
fn line_beside(bar: &Option<ProgressBar>, s: String) {
    match bar {
        Some(bar) => bar.suspend(|| line(s)),
        None => line(s),
    }
}

impl crate::ops::backup::Progress for BackupProgress {
    fn file_done(&self, _path: &Path, _bytes: u64) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = self.bar.as_ref().filter(|_| n.is_multiple_of(64)) {
            bar.set_message(self.files_message(n));
        }
    }
    fn finishing(&self) {
        if let Some(bar) = &self.bar {
            // The bar counts bytes read: at 100% the upload may still run.
            let n = self.files.load(Ordering::Relaxed);
            bar.set_message(format!(
                "{}; uploading the last packs",
                self.files_message(n)
            ));
        }
    }
    fn file_status(&self, path: &Path, status: FileStatus) {
        let word = match status {
            FileStatus::New if self.verbose >= 1 => "new      ",
            FileStatus::Changed if self.verbose >= 1 => "modified ",
            FileStatus::Unmodified if self.verbose >= 2 => "unchanged",
            _ => return,
        };
        line_beside(&self.bar, format!("{word} {}", path.display()));
    }
    fn bytes_processed(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}

/// Restore progress: a bar on stderr (bytes against the snapshot's total when
/// known, else a running count), and with `-v` each entry written or kept on stdout.
pub struct RestoreDisplay {
    bar: Option<ProgressBar>,
    /// `Some(dry_run)` lists entries.
    list: Option<bool>,
    dry_run: bool,
    files: AtomicU64,
    /// Whether the rate and ETA are shown yet.
    rated: std::sync::atomic::AtomicBool,
}

impl RestoreDisplay {
    pub fn new(
        draw_bar: bool,
        total_bytes: Option<u64>,
        list: Option<bool>,
        dry_run: bool,
    ) -> Self {
        let bar = draw_bar.then(|| match total_bytes {
            Some(total) => {
                let bar = ProgressBar::new(total);
                // No rate and no ETA until bytes arrive: before the first
                // pack is in, both would read "0 B/s, ETA 0s".
                bar.set_style(
                    ProgressStyle::with_template("[{elapsed_precise}] {bytes}/{total_bytes} {msg}")
                        .expect("static template"),
                );
                bar.set_message("reading the first packs");
                bar
            }
            None => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bytes} {bytes_per_sec} {msg}",
                    )
                    .expect("static template"),
                );
                bar
            }
        });
        if let Some(b) = &bar {
            b.enable_steady_tick(std::time::Duration::from_millis(200));
        }
        RestoreDisplay {
            bar,
            list,
            dry_run,
            files: AtomicU64::new(0),
            rated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Shows the rate and ETA once bytes move (a bar with a total only).
    fn rate_on(&self, bar: &ProgressBar) {
        if bar.length().is_some() && !self.rated.swap(true, Ordering::Relaxed) {
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("static template"),
            );
            bar.set_message("");
        }
    }
}

impl crate::ops::restore::RestoreProgress for RestoreDisplay {
    fn entry(&self, path: &Path, node: &Node, action: EntryAction) {
        if let Some(bar) = &self.bar {
            if node.kind == NodeType::File {
                let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
                // Written contents count as they are written; kept files and a
                // dry run's files count at once.
                if action == EntryAction::Keep || self.dry_run {
                    self.rate_on(bar);
                    bar.inc(node.size);
                }
                if n.is_multiple_of(64) {
                    bar.set_message(format!("{n} files"));
                }
            }
        }
        let Some(dry_run) = self.list else { return };
        let verb = match (dry_run, action) {
            (true, EntryAction::Write) => "would restore",
            (true, EntryAction::Keep) => "would keep   ",
            (false, EntryAction::Write) => "restore",
            (false, EntryAction::Keep) => "keep   ",
        };
        let what = match node.kind {
            NodeType::File => format!(" ({})", size(node.size)),
            NodeType::Dir => "/".to_string(),
            _ => String::new(),
        };
        line_beside(&self.bar, format!("{verb} {}{what}", path.display()));
    }

    fn bytes_written(&self, n: u64) {
        if let Some(bar) = &self.bar {
            self.rate_on(bar);
            bar.inc(n);
        }
    }
}

/// `copy`'s progress line: which snapshot, how many blobs and bytes stored.
pub struct CopyDisplay {
    bar: Option<ProgressBar>,
}

impl CopyDisplay {
    pub fn new(draw: bool) -> Self {
        let bar = draw.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {msg}: {bytes} stored, {bytes_per_sec}",
                )
                .expect("static template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        CopyDisplay { bar }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl crate::ops::copy::CopyProgress for CopyDisplay {
    fn snapshot(&self, index: usize, total: usize, id: &crate::format::id::SnapshotId) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "copying snapshot {index} of {total} ({})",
                id.short()
            ));
        }
    }

    fn blob(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}

/// `drill`'s progress bar: files and bytes restored and compared.
pub struct DrillDisplay {
    bar: Option<ProgressBar>,
    files: AtomicU64,
    total: AtomicU64,
}

impl DrillDisplay {
    pub fn new(draw: bool) -> Self {
        let bar = draw.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] drill: {msg}")
                    .expect("static template"),
            );
            bar.set_message("choosing files");
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        DrillDisplay {
            bar,
            files: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl crate::ops::drill::DrillProgress for DrillDisplay {
    fn sampled(&self, files: u64, bytes: u64) {
        self.total.store(files, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "0 of {files} files restored and compared (of {})",
                size(bytes)
            ));
        }
    }

    fn file_done(&self, _bytes: u64) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{n} of {} files restored and compared",
                self.total.load(Ordering::Relaxed)
            ));
        }
    }
}

/// A spinner on stderr naming the phase a command is in (prune, ...), drawn
/// only when `draw` (see `Global::progress`).
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn new(draw: bool) -> Self {
        Spinner(draw.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("static template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        }))
    }

    pub fn phase(&self, msg: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(msg.to_string());
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// A command that fails half way (`?`) clears its spinner too, so the error
/// line is not drawn over.
impl Drop for Spinner {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(0, "pack"), "0 packs");
        assert_eq!(count(1, "pack"), "1 pack");
        assert_eq!(count(2, "snapshot"), "2 snapshots");
    }
}
