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

// ---- 3. 255-byte names ---------------------------------------------------

#[test]
fn names_of_255_bytes_restore() {
    let s = Sandbox::init();
    let src = s.path("src");
    let file = "f".repeat(255);
    let link = "l".repeat(255);
    let hard = "h".repeat(255);
    let dir = "d".repeat(255);
    write(&src.join(&file), "long name");
    write(&src.join(&dir).join(&file), "deeper");
    symlink(&file, src.join(&link)).unwrap();
    fs::hard_link(src.join(&file), src.join(&hard)).unwrap();
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let t = s.path("t");
    // Twice: the second restore replaces every entry (through temporary names).
    for _ in 0..2 {
        let out = s.restore_json(&id, &t, &["--verify"]);
        assert_eq!(num(&out, "errors"), 0, "{out}");
        assert_same_tree(&src, &restored_path(&t, &src));
    }
    let r = restored_path(&t, &src);
    assert_eq!(entry(&r.join(&file)).ino, entry(&r.join(&hard)).ino);
    // And no temporary file is left behind.
    let leftovers: Vec<_> = contents(&r)
        .into_iter()
        .filter(|p| {
            p.as_os_str()
                .as_bytes()
                .windows(9)
                .any(|w| w == b"cairn-tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
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
