//! Running `cairn mount` in a test: whether FUSE is usable here, waiting
//! for the mount, and unmounting whatever a failed test leaves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// /dev/fuse opens and fusermount(3) runs. A container without FUSE has
/// neither, and no test can provide them.
pub fn fuse_available() -> bool {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    let tool = ["fusermount3", "fusermount"].iter().any(|t| {
        Command::new(t)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    dev && tool
}

/// For a mount test's first line: false (and a message) when FUSE is not
/// usable here.
pub fn fuse_or_skip() -> bool {
    let ok = fuse_available();
    if !ok {
        eprintln!("mount test skipped: no usable /dev/fuse or fusermount here");
    }
    ok
}

pub fn is_mounted(at: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(at.to_str().unwrap()))
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `cairn mount` running at `at`; SIGTERM and a lazy unmount on drop.
pub struct Mount {
    pub child: Child,
    pub at: PathBuf,
}

impl Mount {
    /// Starts `cmd` (a `cairn ... mount AT`) and waits until `AT/snapshots`
    /// is served.
    pub fn start(mut cmd: Command, at: &Path) -> Mount {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let m = Mount {
            child,
            at: at.to_path_buf(),
        };
        wait_for("the mount", || {
            is_mounted(at) && at.join("snapshots").is_dir()
        });
        m
    }

    /// SIGTERM: returns the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        // SAFETY: kill with the child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, err)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.at) {
            for t in ["fusermount3", "fusermount"] {
                let _ = Command::new(t).arg("-u").arg("-z").arg(&self.at).status();
            }
        }
    }
}
