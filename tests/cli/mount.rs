//! `mount`: snapshots served read-only over FUSE, read back byte for byte.
//! Needs /dev/fuse and fusermount(3); without them (a container without
//! FUSE) the test says so and passes, since no service could provide it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::fsutil::{assert_same_tree, build_full_tree};
use crate::common::mountutil::{fuse_or_skip, is_mounted as mounted, wait_for, Mount};
use crate::common::Sandbox;

/// The entries of a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn mount_serves_snapshots_read_only_and_sees_new_ones() {
    if !fuse_or_skip() {
        return;
    }
    let sb = Sandbox::init();
    let src = sb.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello from a snapshot\n").unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/deeper/private"), b"secret").unwrap();
    std::fs::set_permissions(
        src.join("sub/deeper/private"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    std::fs::hard_link(src.join("a.txt"), src.join("a-again.txt")).unwrap();
    let first = sb.backup(["--tag", "daily", "--host", "web1", src.to_str().unwrap()]);
    let first_id = first["snapshot_id"].as_str().unwrap()[..8].to_string();

    let mnt = sb.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = Mount::start(sb.std_cmd(["mount", mnt.to_str().unwrap()]), &mnt);
    assert_eq!(names(&mnt), ["hosts", "ids", "snapshots", "tags"]);

    // The snapshot's tree below its own folder: the backed-up path in full.
    let inside = |top: &Path| -> PathBuf { top.join(src.strip_prefix("/").unwrap()) };
    let latest = inside(&mnt.join("snapshots/latest"));
    assert_eq!(
        std::fs::read(latest.join("a.txt")).unwrap(),
        b"hello from a snapshot\n"
    );
    assert!(
        std::fs::read(latest.join("sub/big.bin")).unwrap() == big,
        "big.bin differs"
    );
    let meta = std::fs::metadata(latest.join("sub/deeper/private")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.len(), 6);
    assert_eq!(
        std::fs::read_link(latest.join("link")).unwrap(),
        Path::new("a.txt")
    );
    let (a, b) = (
        std::fs::metadata(latest.join("a.txt")).unwrap(),
        std::fs::metadata(latest.join("a-again.txt")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard links share an inode");
    assert_eq!(a.nlink(), 2);
    let orig = std::fs::metadata(src.join("a.txt")).unwrap();
    assert_eq!(a.mtime(), orig.mtime());
    // A read in the middle of a large file.
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(latest.join("sub/big.bin")).unwrap();
    f.seek(SeekFrom::Start(3_333_333)).unwrap();
    let mut buf = vec![0; 10_000];
    f.read_exact(&mut buf).unwrap();
    assert!(buf == big[3_333_333..3_343_333]);
    // Kept open: SIGTERM must still free the mount point (a lazy unmount).
    let _still_open = f;
    // The other views.
    assert!(inside(&mnt.join("ids").join(&first_id))
        .join("a.txt")
        .is_file());
    assert_eq!(names(&mnt.join("hosts")), ["web1"]);
    assert_eq!(names(&mnt.join("tags")), ["daily"]);
    assert_eq!(names(&mnt.join("hosts/web1")).len(), 1);
    // Read-only.
    assert!(std::fs::write(latest.join("a.txt"), b"x").is_err());
    assert!(std::fs::write(latest.join("new"), b"x").is_err());

    // A new snapshot shows without a remount.
    std::fs::write(src.join("a.txt"), b"changed\n").unwrap();
    sb.backup(["--host", "web2", src.to_str().unwrap()]);
    wait_for("the new snapshot", || {
        names(&mnt.join("snapshots")).len() == 3
    });
    assert_eq!(names(&mnt.join("hosts")), ["web1", "web2"]);
    let latest = inside(&mnt.join("snapshots/latest"));
    assert_eq!(std::fs::read(latest.join("a.txt")).unwrap(), b"changed\n");

    // SIGTERM unmounts and exits 0.
    let (status, err) = m.stop();
    assert!(status.success(), "mount exited {status}: {err}");
    assert!(!mounted(&mnt), "still mounted after SIGTERM");
}

/// Everything a file system holds, read out of the mount, is what a
/// restore of the same snapshot writes: entries, types, modes, owners,
/// mtimes, sizes, bytes, symlink targets and hard-link groups.
#[test]
fn a_mounted_snapshot_matches_its_restore() {
    if !fuse_or_skip() {
        return;
    }
    let sb = Sandbox::init();
    let tree = build_full_tree(&sb.path("src"), 3_000_000);
    sb.backup([tree.root.to_str().unwrap()]);
    let restored = sb.path("restored");
    sb.restore("latest", &restored, &[]);
    let mnt = sb.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = Mount::start(sb.std_cmd(["mount", mnt.to_str().unwrap()]), &mnt);
    let rel = tree.root.strip_prefix("/").unwrap();
    assert_same_tree(&restored.join(rel), &mnt.join("snapshots/latest").join(rel));
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn mount_refuses_a_missing_mount_point() {
    let sb = Sandbox::init();
    let out = sb
        .cmd(["mount", sb.path("nowhere").to_str().unwrap()])
        .code(2);
    out.assert_one_error_line("not a folder");
}

/// A prune that repacks the packs a mounted snapshot reads from, and deletes
/// the old ones, does not break the mount: the blob reader finds the blobs
/// where the prune moved them.
#[test]
fn a_mount_reads_on_while_a_prune_repacks_under_it() {
    if !fuse_or_skip() {
        return;
    }
    let sb = Sandbox::init();
    let src = sb.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let keep: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    let gone: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(3266489917) >> 7) as u8)
        .collect();
    std::fs::write(src.join("keep.bin"), &keep).unwrap();
    std::fs::write(src.join("gone.bin"), &gone).unwrap();
    let first = sb.backup([src.to_str().unwrap()]);
    std::fs::remove_file(src.join("gone.bin")).unwrap();
    sb.backup([src.to_str().unwrap()]);
    let packs_before = sb.data_packs();

    let mnt = sb.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = Mount::start(sb.std_cmd(["mount", mnt.to_str().unwrap()]), &mnt);
    let file = mnt
        .join("snapshots/latest")
        .join(src.strip_prefix("/").unwrap())
        .join("keep.bin");
    // Nothing read yet: every blob comes after the prune.
    sb.ok(["forget", first["snapshot_id"].as_str().unwrap()]);
    for _ in 0..2 {
        sb.ok(["prune", "--max-unused", "0%", "--stale-after", "0s"]);
    }
    let packs_after = sb.data_packs();
    // keep.bin's blobs shared packs with gone.bin's: they were moved.
    assert!(
        packs_before.iter().all(|p| !packs_after.contains(p)),
        "a pack of the first backup survived the prune: the test proves nothing ({packs_before:?} / {packs_after:?})"
    );
    assert!(
        std::fs::read(&file).unwrap() == keep,
        "keep.bin read through the mount differs"
    );
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
}
