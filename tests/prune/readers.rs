//! Readers never block a prune and are never broken by one (prune protocol,
//! rule 10): a restore whose index predates a repack-and-sweep finds the
//! blobs where they moved.

use crate::common;

use cairn::ops::backup::{backup, BackupOptions, NoProgress};
use cairn::ops::prune::{prune, MaxUnused, PruneOptions};
use cairn::ops::restore::{restore, RestoreOptions};
use cairn::repo::tree::{dump_file, find_node};
use cairn::source::Source;
use cairn::{Backend, Repository};
use common::{random_bytes, same_content};

fn init(b: &Backend) -> Repository {
    Repository::init(b.clone(), b"pw", common::fast_kdf()).unwrap()
}

#[test]
fn a_restore_with_an_old_index_reads_repacked_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::memory();
    let mut writer = init(&b);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Two files in one pack; the second snapshot drops one, so the pack is half
    // unused and a prune with --max-unused 0% repacks the other.
    std::fs::write(src.join("keep.bin"), random_bytes(300_000, 1)).unwrap();
    std::fs::write(src.join("drop.bin"), random_bytes(300_000, 2)).unwrap();
    let opts = BackupOptions::default();
    let first = backup(
        &mut writer,
        Source::Paths(vec![src.clone()]),
        &opts,
        &NoProgress,
    )
    .unwrap()
    .snapshot_id
    .unwrap();
    std::fs::remove_file(src.join("drop.bin")).unwrap();
    let second = backup(
        &mut writer,
        Source::Paths(vec![src.clone()]),
        &opts,
        &NoProgress,
    )
    .unwrap()
    .snapshot_id
    .unwrap();

    // A reader loads the index now, before the prune.
    let reader = Repository::open(b.clone(), b"pw")
        .unwrap()
        .into_indexed()
        .unwrap();
    let snap = reader.load_snapshot(&second).unwrap();

    writer.delete_snapshot(&first).unwrap();
    let outcome = prune(
        &mut writer,
        &PruneOptions {
            max_unused: MaxUnused::Fraction(0.0),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        outcome.swept && outcome.plan.packs_repack > 0,
        "{outcome:?}"
    );
    assert!(outcome.packs_deleted > 0, "{outcome:?}");

    // The reader's index names deleted packs; restore and dump still work.
    let target = dir.path().join("t");
    let r = restore(&reader, &snap.tree, &target, &RestoreOptions::default()).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let restored = target.join(src.strip_prefix("/").unwrap()).join("keep.bin");
    assert!(same_content(&src.join("keep.bin"), &restored));
    let path = src.join("keep.bin");
    let node = find_node(&reader, &snap.tree, path.to_str().unwrap()).unwrap();
    let mut out = Vec::new();
    dump_file(&reader, &node, &mut out).unwrap();
    assert_eq!(out, std::fs::read(&path).unwrap());
}
