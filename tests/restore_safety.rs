//! Restore hardening: restore never writes outside `--target` (symlinks in the
//! target or in a hostile snapshot are never followed), `--overwrite` holds
//! for every kind of entry, 255-byte names restore, and a short read from the
//! store is an error, never a panic.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

/// Every path below `dir` (empty when `dir` holds nothing).
fn contents(dir: &Path) -> Vec<PathBuf> {
    scan(dir)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

fn restore_cmd(s: &Sandbox, snap: &str, target: &Path, extra: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new(snap),
        OsStr::new("--target"),
        target.as_os_str(),
    ];
    a.extend(extra.iter().map(OsStr::new));
    s.cmd(a)
}

// ---- 4. short reads --------------------------------------------------------

#[test]
fn truncated_pack_is_an_error_not_a_panic() {
    let s = Sandbox::init();
    let src = s.path("src");
    let big = src.join("big.bin");
    write(&big, random_bytes(3 * MIB as usize, 77));
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let packs = s.data_packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack = &packs[0];
    let len = fs::metadata(pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();

    let t = s.path("t");
    let out = restore_cmd(&s, &id, &t, &[]).code(1);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("big.bin"))
        .unwrap_or_else(|| panic!("no error line for the file\n{}", out.dump()));
    assert!(
        line.contains(&pack_name),
        "error should name the pack: {line}"
    );
    assert!(
        !restored_path(&t, &big).exists(),
        "a damaged file was renamed into place"
    );

    let out = s.cmd(["dump", &id, big.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains(&pack_name), "{}", out.dump());
}
