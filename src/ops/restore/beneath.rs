//! File-system access strictly below the restore target.
//!
//! Every entry is reached from a handle on the target directory, never by an
//! absolute path, and no symlink below the target is ever followed, whether it
//! was there before or was made by this restore. Where the kernel has it
//! (Linux 5.6+), `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` resolves
//! a whole relative path in one call; elsewhere the path is walked one
//! component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`. Operations on a
//! name (mkdirat, renameat, linkat, symlinkat, mknodat, unlinkat, fstatat,
//! fchownat, utimensat) take the handle of its parent directory and do not
//! follow a symlink in the last component.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{openat, openat2, AtFlags, Mode, OFlags, ResolveFlags, Stat};

/// Whether openat2 works here: unknown, yes, no.
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Tests: use the component-by-component walk from now on, in this process.
#[cfg(test)]
pub(super) fn force_fallback() {
    OPENAT2.store(NO, Ordering::Relaxed);
}

/// A handle on the restore target; paths given to it are relative to it.
pub(super) struct Beneath {
    root: OwnedFd,
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_string())
}

/// The components of a path relative to the target: plain names only.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(invalid("path leaves the restore target")),
        })
        .collect()
}

/// The parent of `rel` and its last name.
pub(super) fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(invalid("no file name")),
    }
}

impl Beneath {
    /// Opens the target directory itself (a symlink naming the target is followed:
    /// the target is the user's choice).
    pub fn open_target(target: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(
            target,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { root })
    }

    /// Opens `rel` below the target, following no symlink on the way or at
    /// the end. `rel` empty is the target itself.
    pub fn open(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let comps = names(rel)?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if OPENAT2.load(Ordering::Relaxed) != NO {
            let path: &Path = if comps.is_empty() {
                Path::new(".")
            } else {
                rel
            };
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let mut tries = 0;
            loop {
                match openat2(&self.root, path, flags, mode, resolve) {
                    Ok(fd) => {
                        OPENAT2.store(YES, Ordering::Relaxed);
                        return Ok(fd);
                    }
                    // Not in this kernel, or refused by a seccomp filter.
                    Err(e)
                        if OPENAT2.load(Ordering::Relaxed) == UNKNOWN
                            && (e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM) =>
                    {
                        OPENAT2.store(NO, Ordering::Relaxed);
                        break;
                    }
                    // A concurrent rename somewhere: the kernel asks to retry.
                    Err(e) if e == rustix::io::Errno::AGAIN && tries < 8 => tries += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let Some((last, dirs)) = comps.split_last() else {
            return Ok(openat(&self.root, ".", flags, mode)?);
        };
        let mut here: Option<OwnedFd> = None;
        for name in dirs {
            let base = here.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            here = Some(openat(
                base,
                *name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        let base = here.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
        Ok(openat(base, *last, flags, mode)?)
    }

    /// A handle for `*at` calls on the directory `rel` (a real directory, not a symlink).
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// The handle of the directory holding `rel`, and the last name of `rel`.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let (dir, name) = split(rel)?;
        Ok((self.dir(dir)?, name))
    }

    /// What is at `rel` (not following a symlink there), or None when nothing
    /// is, or its directory cannot be reached (missing, or not a real directory).
    pub fn stat(&self, rel: &Path) -> io::Result<Option<Stat>> {
        let Ok((dir, name)) = self.parent(rel) else {
            return Ok(None);
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn check(b: &Beneath, t: &Path, outside: &Path) {
        let rd = OFlags::RDONLY;
        assert!(b.open(Path::new("d/f"), rd, Mode::empty()).is_ok());
        assert!(b.dir(Path::new("d")).is_ok());
        assert!(b.dir(Path::new("")).is_ok());
        // A symlink as the last component or on the way is refused.
        assert!(b.open(Path::new("d/lf"), rd, Mode::empty()).is_err());
        assert!(b.dir(Path::new("ld")).is_err());
        assert!(b.open(Path::new("ld/f"), rd, Mode::empty()).is_err());
        assert!(b.open(Path::new("up/x"), rd, Mode::empty()).is_err());
        assert!(b.open(Path::new("../x"), rd, Mode::empty()).is_err());
        assert!(b.open(Path::new("/etc/passwd"), rd, Mode::empty()).is_err());
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        assert!(b.open(Path::new("ld/new"), create, Mode::RUSR).is_err());
        assert!(!outside.join("new").exists());
        assert!(b.stat(Path::new("ld/f")).unwrap().is_none());
        let st = b.stat(Path::new("ld")).unwrap().unwrap();
        assert!(rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink);
        let (dir, name) = b.parent(Path::new("d/f")).unwrap();
        assert_eq!(name, "f");
        assert!(rustix::fs::statat(&dir, name, AtFlags::empty()).is_ok());
        assert!(t.join("d/f").exists());
    }

    #[test]
    fn no_symlink_below_the_target_is_followed_with_either_resolver() {
        let tmp = tempfile::tempdir().unwrap();
        let (t, outside) = (tmp.path().join("t"), tmp.path().join("outside"));
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(t.join("d/f"), b"x").unwrap();
        std::fs::write(outside.join("x"), b"x").unwrap();
        symlink("f", t.join("d/lf")).unwrap();
        symlink(&outside, t.join("ld")).unwrap();
        symlink("..", t.join("up")).unwrap();
        let b = Beneath::open_target(&t).unwrap();
        check(&b, &t, &outside);
        force_fallback();
        check(&b, &t, &outside);
    }
}
