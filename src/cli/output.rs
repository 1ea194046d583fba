//! Printing: human text or JSON on stdout, sizes, progress bars on stderr.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

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
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
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

/// Backup progress: files, bytes, rate and ETA against a total found by a
/// concurrent scan.
pub struct BackupProgress {
    bar: ProgressBar,
    files: AtomicU64,
}

impl BackupProgress {
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("static template"),
        );
        BackupProgress {
            bar,
            files: AtomicU64::new(0),
        }
    }

    pub fn set_total(&self, files: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_message(format!(
            "{} / {files} files",
            self.files.load(Ordering::Relaxed)
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl cairn::archiver::Progress for BackupProgress {
    fn file_done(&self, _path: &Path, _bytes: u64) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 64 == 0 {
            self.bar.set_message(format!("{n} files"));
        }
    }
    fn bytes_processed(&self, n: u64) {
        self.bar.inc(n);
    }
}
