//! Is a restore correct? Byte-for-byte comparison of the restored tree (or
//! file) with the source: same entries, same types, same contents, same
//! symlink targets, no extra entries.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Compares `actual` with `expected`; returns the first few differences.
/// Paths in the messages are relative to `actual`'s parent.
pub fn compare(expected: &Path, actual: &Path) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    compare_entry(expected, actual, &mut errs);
    if let Some(base) = actual.parent() {
        let prefix = format!("{}/", base.display());
        for e in &mut errs {
            if let Some(rest) = e.strip_prefix(&prefix) {
                *e = rest.to_string();
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

const MAX_ERRORS: usize = 5;

fn compare_entry(exp: &Path, act: &Path, errs: &mut Vec<String>) {
    if errs.len() >= MAX_ERRORS {
        return;
    }
    let em = match std::fs::symlink_metadata(exp) {
        Ok(m) => m,
        Err(e) => return errs.push(format!("{}: cannot stat source: {e}", exp.display())),
    };
    let am = match std::fs::symlink_metadata(act) {
        Ok(m) => m,
        Err(_) => return errs.push(format!("{}: missing from the restore", act.display())),
    };
    let (et, at) = (em.file_type(), am.file_type());
    if et.is_symlink() {
        if !at.is_symlink() {
            return errs.push(format!("{}: should be a symlink", act.display()));
        }
        if std::fs::read_link(exp).ok() != std::fs::read_link(act).ok() {
            errs.push(format!("{}: symlink target differs", act.display()));
        }
    } else if et.is_dir() {
        if !at.is_dir() {
            return errs.push(format!("{}: should be a directory", act.display()));
        }
        let names = |p: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (en, an) = (names(exp), names(act));
        for extra in an.iter().filter(|n| en.binary_search(n).is_err()) {
            if errs.len() < MAX_ERRORS {
                errs.push(format!("{}: not in the source", act.join(extra).display()));
            }
        }
        for n in &en {
            compare_entry(&exp.join(n), &act.join(n), errs);
        }
    } else if et.is_file() {
        if !at.is_file() {
            return errs.push(format!("{}: should be a regular file", act.display()));
        }
        if em.len() != am.len() {
            return errs.push(format!(
                "{}: size {} instead of {}",
                act.display(),
                am.len(),
                em.len()
            ));
        }
        match same_contents(exp, act) {
            Ok(true) => {}
            Ok(false) => errs.push(format!("{}: contents differ", act.display())),
            Err(e) => errs.push(format!("{}: cannot read: {e}", act.display())),
        }
    }
}

fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where a tool put a restored path: tools that keep absolute paths (restic,
/// rustic, cairn) and borg (relative to its working directory) all end up at
/// `target/<source without its leading />`; a stdin snapshot at `target/<name>`.
/// Falls back to a search by file name.
pub fn locate(target: &Path, source_abs: &Path, stdin_name: Option<&str>) -> Option<PathBuf> {
    let candidate = match stdin_name {
        Some(n) => target.join(n),
        None => target.join(source_abs.strip_prefix("/").unwrap_or(source_abs)),
    };
    if std::fs::symlink_metadata(&candidate).is_ok() {
        return Some(candidate);
    }
    let name = match stdin_name {
        Some(n) => std::ffi::OsString::from(n),
        None => source_abs.file_name()?.to_os_string(),
    };
    find_named(target, &name, 12)
}

fn find_named(dir: &Path, name: &std::ffi::OsStr, depth: usize) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    if let Some(e) = entries.iter().find(|e| e.file_name() == name) {
        return Some(e.path());
    }
    entries
        .iter()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .find_map(|e| find_named(&e.path(), name, depth - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-verify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), b"hello").unwrap();
        std::fs::write(root.join("top"), vec![7u8; 3 << 20]).unwrap();
        std::os::unix::fs::symlink("a/b/f.txt", root.join("link")).unwrap();
    }

    #[test]
    fn identical_trees_compare_equal_and_differences_are_named() {
        let d = scratch("trees");
        let (src, dst) = (d.join("src"), d.join("dst"));
        tree(&src);
        tree(&dst);
        assert_eq!(compare(&src, &dst), Ok(()));

        let mut big = std::fs::read(dst.join("top")).unwrap();
        big[2 << 20] ^= 1;
        std::fs::write(dst.join("top"), big).unwrap();
        std::fs::write(dst.join("extra"), b"x").unwrap();
        std::fs::remove_file(dst.join("a/b/f.txt")).unwrap();
        let errs = compare(&src, &dst).unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("dst/top: contents differ"), "{all}");
        assert!(all.contains("dst/extra: not in the source"), "{all}");
        assert!(all.contains("dst/a/b/f.txt: missing"), "{all}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn locate_finds_absolute_layout_stdin_name_and_falls_back_to_search() {
        let d = scratch("locate");
        let target = d.join("restore");
        let src = Path::new("/var/data/tree");
        std::fs::create_dir_all(target.join("var/data/tree")).unwrap();
        assert_eq!(
            locate(&target, src, None),
            Some(target.join("var/data/tree"))
        );
        std::fs::create_dir_all(target.join("x/y")).unwrap();
        std::fs::write(target.join("x/y/dump.sql"), b"").unwrap();
        assert_eq!(
            locate(&target, src, Some("dump.sql")),
            Some(target.join("x/y/dump.sql"))
        );
        assert_eq!(locate(&target, src, Some("other.sql")), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
