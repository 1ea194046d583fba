//! Read-ahead for the files a backup is about to read.
//!
//! A cold backup of many small files waits on the disk, not on the CPU: the
//! walk reads with as many threads as there are cores (2 here), so at most
//! two reads are in flight and the disk idles between them. Reading with
//! more threads would keep more in flight, but each reader also holds its
//! chunk buffers and compressor, which costs memory (8 readers: +35–70 MB on
//! the kernel tree). Instead, a few small threads open the files the walk has
//! just listed and ask the kernel to read them into the page cache
//! (`posix_fadvise(WILLNEED)`); when the walk gets to a file, its data is
//! there. Nothing is read into this process, so peak memory stays where it
//! was.
//!
//! Only advice: a file that cannot be opened, or that the queue has no room
//! for, is simply not read ahead, and the walk reads it as before. Files are
//! opened with `O_NOFOLLOW | O_NONBLOCK` (never a symlink swapped in, never
//! hanging on a FIFO) and never read.

use std::collections::VecDeque;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Threads that open and advise: enough to keep a disk queue busy.
const THREADS: usize = 8;
/// Bytes advised ahead of the walk at most; beyond it, files are skipped.
const MAX_QUEUED_BYTES: u64 = 256 * 1024 * 1024;
/// Files waiting at most (bounds the queue's memory for tiny files).
const MAX_QUEUED_FILES: usize = 4096;
/// Folders waiting at most. Warming a folder reads the inodes of everything
/// in it, far more than its weight says: without a cap, a root of 1,000
/// folders of 1,000 files each queued all of them at once, to be warmed in
/// whatever order the threads took them, while the walk needed the first.
/// With it, only the folders the walk is about to enter are warmed.
const MAX_QUEUED_FOLDERS: usize = THREADS;
/// Of a large file, only its start is advised: the kernel's own read-ahead
/// takes over once the walk reads it sequentially.
const MAX_ADVISED_PER_FILE: u64 = 8 * 1024 * 1024;

/// What to read ahead.
enum Ahead {
    /// A file's content (its first bytes).
    File(PathBuf, u64),
    /// A folder's listing and its entries' metadata (inodes), not content:
    /// whether a file's content will be read is decided when the walk lists
    /// the folder (an unchanged file is not read).
    Folder(PathBuf),
}

/// The queue's accounting weight of a folder's listing.
const FOLDER_WEIGHT: u64 = 64 * 1024;

impl Ahead {
    fn weight(&self) -> u64 {
        match self {
            Ahead::File(_, size) => *size,
            Ahead::Folder(_) => FOLDER_WEIGHT,
        }
    }
}

#[derive(Default)]
struct Queue {
    files: VecDeque<Ahead>,
    /// Folders among `files`.
    folders: usize,
    /// Bytes of the files queued and being advised.
    bytes: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// A pool of threads that read files ahead into the page cache.
pub struct Prefetcher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Prefetcher {
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        let threads = (0..THREADS)
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("cairn-readahead-{i}"))
                    // They only open, advise and close.
                    .stack_size(64 * 1024)
                    .spawn(move || advise_loop(&shared))
                    .ok()
            })
            .collect();
        Prefetcher { shared, threads }
    }

    /// Asks for `path` (a regular file of `size` bytes) to be read ahead.
    /// Never blocks on the disk: when too much is queued, the file is skipped.
    pub fn advise(&self, path: PathBuf, size: u64) {
        if size == 0 {
            return;
        }
        self.push(Ahead::File(path, size.min(MAX_ADVISED_PER_FILE)));
    }

    /// Asks for a folder's listing and its entries' metadata to be read
    /// ahead, so the walk finds them cached when it gets there.
    pub fn advise_folder(&self, path: PathBuf) {
        self.push(Ahead::Folder(path));
    }

    fn push(&self, what: Ahead) {
        let weight = what.weight();
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.bytes + weight > MAX_QUEUED_BYTES || q.files.len() >= MAX_QUEUED_FILES {
            return;
        }
        if matches!(what, Ahead::Folder(_)) {
            if q.folders >= MAX_QUEUED_FOLDERS {
                return;
            }
            q.folders += 1;
        }
        q.bytes += weight;
        q.files.push_back(what);
        drop(q);
        self.shared.wake.notify_one();
    }
}

impl Default for Prefetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.closed = true;
            q.files.clear();
            q.folders = 0;
        }
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn advise_loop(shared: &Shared) {
    loop {
        let what = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.closed {
                    return;
                }
                if let Some(f) = q.files.pop_front() {
                    if matches!(f, Ahead::Folder(_)) {
                        q.folders -= 1;
                    }
                    break f;
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        match &what {
            Ahead::File(path, size) => advise_file(path, *size),
            Ahead::Folder(path) => warm_folder(path),
        }
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.bytes = q.bytes.saturating_sub(what.weight());
    }
}

fn advise_file(path: &std::path::Path, size: u64) {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return;
    };
    let _ = rustix::fs::fadvise(
        &f,
        0,
        std::num::NonZeroU64::new(size),
        rustix::fs::Advice::WillNeed,
    );
}

fn warm_folder(path: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(path) else {
        return;
    };
    for e in rd.flatten() {
        let _ = e.metadata();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_for_missing_links_and_fifos_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        let p = Prefetcher::new();
        p.advise(file.clone(), 100_000);
        p.advise(dir.path().join("link"), 10);
        p.advise(fifo, 10);
        p.advise(dir.path().join("missing"), 10);
        p.advise(file.clone(), 0);
        drop(p); // joins every thread: none hung on the FIFO
        assert_eq!(std::fs::read(&file).unwrap().len(), 100_000);
    }

    /// A prefetcher whose queue nothing drains.
    fn stalled() -> Prefetcher {
        Prefetcher {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
            }),
            threads: Vec::new(),
        }
    }

    #[test]
    fn only_a_few_folders_wait_at_once() {
        let p = stalled();
        for i in 0..100 {
            p.advise_folder(PathBuf::from(format!("/nonexistent/{i}")));
        }
        p.advise(PathBuf::from("/nonexistent/file"), 1);
        let q = p.shared.queue.lock().unwrap();
        assert_eq!(
            (q.files.len(), q.folders),
            (MAX_QUEUED_FOLDERS + 1, MAX_QUEUED_FOLDERS)
        );
    }

    #[test]
    fn a_full_queue_skips_rather_than_waits() {
        let p = stalled();
        for _ in 0..100 {
            p.advise(PathBuf::from("/nonexistent"), 1 << 40);
        }
        let full = (MAX_QUEUED_BYTES / MAX_ADVISED_PER_FILE) as usize;
        assert_eq!(p.shared.queue.lock().unwrap().files.len(), full);

        let p = stalled();
        for _ in 0..MAX_QUEUED_FILES + 10 {
            p.advise(PathBuf::from("/nonexistent"), 1);
        }
        assert_eq!(p.shared.queue.lock().unwrap().files.len(), MAX_QUEUED_FILES);
    }
}
