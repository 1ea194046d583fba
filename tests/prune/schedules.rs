//! The schedules that broke the first lock-free prune (issue 16, review 3 of
//! gc-protocol.md), each forced exactly with a store that parks chosen
//! requests (tests/common/gates.rs): a prune or backup paused between two
//! requests while other commands run, then let go. After each, every
//! snapshot reported saved must restore and `check --read-data` must pass.
//! Also the records an attacker can plant or damage (rule 13), a conflict
//! answer that stored nothing (rule 14). (The failed heartbeat is in
//! tests/prune_model/heartbeat.rs.)

use crate::common;
#[path = "../common/gated_repo.rs"]
mod gated_repo;
#[path = "../common/gates.rs"]
mod gates;

use std::path::PathBuf;
use std::time::Duration;

use cairn::ops::check::{check, ReadData};
use cairn::ops::prune::{MaxUnused, PruneOptions};
use cairn::ops::restore::{restore, RestoreOptions};
use cairn::{Error, Repository};
use gated_repo::{Repo, PW};
use gates::Op;

/// A prune that fences any silent writer at once.
fn fencing() -> PruneOptions {
    PruneOptions {
        stale_after: Duration::ZERO,
        // Some schedules leave no snapshot at times: everything is garbage then.
        allow_empty: true,
        ..Default::default()
    }
}

/// A prune that never fences (every running writer is "alive").
fn patient() -> PruneOptions {
    PruneOptions {
        stale_after: Duration::from_secs(3600),
        allow_empty: true,
        ..Default::default()
    }
}

/// Lets the clock move past the last record's `last_modified`, so that a
/// zero `stale_after` really finds the paused writer silent.
fn tick() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Schedule 1: a prune fixes generation 1, pauses right before it creates
/// `gc/1.mark`, is fenced; two other prunes finish generations 1 and 2; a
/// backup that started after them deduplicates against a pack the paused
/// prune's stale plan condemned. The paused prune wakes: its Create finds
/// the claim of generation 1 (claims are never deleted), so it deletes
/// nothing, and the backup's snapshot restores.
#[test]
fn paused_prune_cannot_re_mark_a_finished_generation() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 300_000, 1)]);
    let g1 = r.tree("g1", &[("g1.bin", 200_000, 2)]);
    let g2 = r.tree("g2", &[("g2.bin", 200_000, 3)]);
    let s1 = r.backup(&a).unwrap();
    let sg1 = r.backup(&g1).unwrap();
    let sg2 = r.backup(&g2).unwrap();
    r.forget(&s1);
    // P plans with a.bin's pack unused: it condemns it, then parks.
    r.gates.arm("P", Op::Put, |k| k == "gc/0000000001.mark");
    let p = r.prune_in_background(fencing());
    r.gates.wait_held("P");
    // a.bin comes back before anyone else plans: its pack is in use again.
    let s1b = r.backup(&a).unwrap();
    tick();
    r.forget(&sg1);
    let q = r.prune(&fencing()).unwrap();
    assert!(q.swept && q.sessions_fenced == 1, "{q:?}");
    r.forget(&sg2);
    assert!(r.prune(&fencing()).unwrap().swept);
    // B starts after generation 2, dedups against a.bin's pack, parks.
    r.gates.arm("B", Op::Put, |k| k.starts_with("snapshots/"));
    let b = r.backup_in_background(&a);
    r.gates.wait_held("B");
    r.forget(&s1b);
    r.gates.release("P");
    let p = p.join().unwrap();
    assert!(
        matches!(&p, Ok(o) if o.lost_race && o.packs_deleted == 0)
            || matches!(p, Err(Error::PruneFenced { .. })),
        "{p:?}"
    );
    r.gates.release("B");
    let sb = b.join().unwrap().unwrap();
    assert_eq!(r.gates.times_created("gc/0000000001.mark"), 1);
    r.assert_restores(&[(sb, &a)]);
}

/// Schedule 2: a prune repacks blob k out of pack X into its own output Y,
/// then parks before it indexes Y. Another prune fences it and deletes Y
/// (unindexed then); a third finishes generation 2. The paused prune wakes,
/// finds itself fenced and deletes nothing: X, which a snapshot committed
/// before any prune needs, stays.
#[test]
fn paused_repacking_prune_deletes_nothing_once_fenced() {
    let r = Repo::new();
    let both = r.tree("both", &[("k.bin", 100_000, 10), ("u.bin", 900_000, 11)]);
    let k_only = r.tree("k", &[("k.bin", 100_000, 10)]);
    let g1 = r.tree("g1", &[("g1.bin", 200_000, 12)]);
    let g2 = r.tree("g2", &[("g2.bin", 200_000, 13)]);
    let s1 = r.backup(&both).unwrap();
    let s2 = r.backup(&k_only).unwrap();
    let sg1 = r.backup(&g1).unwrap();
    let sg2 = r.backup(&g2).unwrap();
    r.forget(&s1);
    r.gates.arm("P", Op::Put, |k| k.starts_with("index/"));
    let p = r.prune_in_background(fencing());
    r.gates.wait_held("P");
    tick();
    let keep_packs = PruneOptions {
        max_unused: MaxUnused::Unlimited,
        ..fencing()
    };
    r.forget(&sg1);
    let q = r.prune(&keep_packs).unwrap();
    assert!(
        q.swept && q.sessions_fenced == 1 && q.packs_deleted > 0,
        "{q:?}"
    );
    r.forget(&sg2);
    assert!(r.prune(&keep_packs).unwrap().swept);
    r.gates.release("P");
    match p.join().unwrap() {
        Err(Error::PruneFenced { generation: 1, .. }) => {}
        other => panic!("the paused prune should say it was fenced: {other:?}"),
    }
    r.assert_restores(&[(s2, &k_only)]);
    // And a prune now collects what the fenced one left.
    assert!(r.prune(&fencing()).unwrap().swept);
    r.assert_restores(&[(s2, &k_only)]);
}

/// Schedule 4: backup B1 is fenced while paused, then writes its pack and
/// index object; B2 dedups against them and commits; B1's commit is refused.
/// B1 must not delete its index object (B2 relies on it), and no prune may
/// delete the pack.
#[test]
fn a_fenced_backup_leaves_its_index_to_those_who_used_it() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 400_000, 20)]);
    r.garbage("g", 21);
    r.gates.arm("B1 pack", Op::Put, |k| k.starts_with("data/"));
    let b1 = r.backup_in_background(&a);
    r.gates.wait_held("B1 pack");
    tick();
    let q = r.prune(&fencing()).unwrap();
    assert!(q.swept && q.sessions_fenced == 1, "{q:?}");
    r.gates
        .arm("B1 snapshot", Op::Put, |k| k.starts_with("snapshots/"));
    r.gates.release("B1 pack");
    r.gates.wait_held("B1 snapshot");
    let s2 = r.backup(&a).unwrap();
    r.gates.release("B1 snapshot");
    match b1.join().unwrap() {
        Err(Error::Fenced) => {}
        other => panic!("B1 was fenced: {other:?}"),
    }
    r.assert_restores(&[(s2, &a)]);
    assert!(r.prune(&fencing()).unwrap().swept);
    assert!(r.prune(&fencing()).unwrap().swept);
    r.assert_restores(&[(s2, &a)]);
}

/// Schedule 5 (the reader's side): a command that reads `gc/` while prunes
/// finish generations reads records that are gone by then; it lists again
/// and carries on.
#[test]
fn a_record_cleaned_up_between_list_and_read_is_listed_again() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 200_000, 30)]);
    let w = r.tree("w", &[("w.bin", 200_000, 31)]);
    let g1 = r.tree("g1", &[("g1.bin", 200_000, 32)]);
    let g2 = r.tree("g2", &[("g2.bin", 200_000, 33)]);
    let s = r.backup(&a).unwrap();
    let sg1 = r.backup(&g1).unwrap();
    let sg2 = r.backup(&g2).unwrap();
    r.forget(&sg1);
    // Generation 1 stays open while writer W runs.
    r.gates.arm("W", Op::Put, |k| k.starts_with("snapshots/"));
    let wb = r.backup_in_background(&w);
    r.gates.wait_held("W");
    let p1 = r.prune(&patient()).unwrap();
    assert!(!p1.swept && p1.sessions_pending == 1, "{p1:?}");
    // A check reads gc/: it parks reading generation 1's plan.
    r.gates.arm("C", Op::Get, |k| k.contains(".plan."));
    let b = r.backend.clone();
    let c = std::thread::spawn(move || {
        check(&mut Repository::open(b, PW).unwrap(), ReadData::None).map(|r| r.errors)
    });
    r.gates.wait_held("C");
    r.gates.release("W");
    let sw = wb.join().unwrap().unwrap();
    r.forget(&sg2);
    let p2 = r.prune(&patient()).unwrap();
    assert!(p2.swept && p2.finished_earlier == Some(1), "{p2:?}");
    r.gates.release("C");
    let errors = c.join().unwrap().expect("check lists gc/ again");
    assert!(errors.is_empty(), "{errors:?}");
    r.assert_restores(&[(s, &a), (sw, &w)]);
}

/// Rule 13: a planted, empty `sessions/<sid>.saw.9999999999` does not make
/// a running backup look as if it had seen every generation.
#[test]
fn a_planted_saw_record_does_not_unblock_a_sweep() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 300_000, 40)]);
    r.garbage("g", 41);
    r.gates.arm("B", Op::Put, |k| k.starts_with("snapshots/"));
    let b = r.backup_in_background(&a);
    r.gates.wait_held("B");
    let start = r
        .sessions()
        .into_iter()
        .find(|n| n.ends_with(".start"))
        .unwrap();
    let sid = start.trim_end_matches(".start");
    std::fs::write(
        r.dir.path().join(format!("sessions/{sid}.saw.9999999999")),
        b"",
    )
    .unwrap();
    let p = r.prune(&patient()).unwrap();
    assert!(
        !p.swept && p.sessions_pending == 1 && p.packs_deleted == 0,
        "{p:?}"
    );
    r.gates.release("B");
    let sb = b.join().unwrap().unwrap();
    // check names the planted record (until a prune's clean-up removes it).
    let report = r.check();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.object.ends_with(".saw.9999999999")),
        "{:?}",
        report.errors
    );
    assert!(r.prune(&patient()).unwrap().swept);
    r.assert_restores(&[(sb, &a)]);
}

/// Rule 13: a damaged `.end` keeps its snapshot's data (the snapshot counts
/// as valid for collection) and check names the record.
#[test]
fn a_damaged_end_record_keeps_its_snapshot_data() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 300_000, 50)]);
    let s = r.backup(&a).unwrap();
    let end = r
        .sessions()
        .into_iter()
        .find(|n| n.ends_with(".end"))
        .unwrap();
    let path = r.dir.path().join("sessions").join(&end);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    for _ in 0..2 {
        let p = r.prune(&fencing()).unwrap();
        assert_eq!(p.packs_deleted, 0, "{p:?}");
    }
    let report = r.check();
    assert!(
        report.errors.iter().any(|e| e.object.ends_with(&end)),
        "{:?}",
        report.errors
    );
    // Its data is all there: restore works.
    let repo = r.open().into_indexed().unwrap();
    let snap = repo.load_snapshot(&s).unwrap();
    let target = tempfile::tempdir().unwrap();
    let out = restore(&repo, &snap.tree, target.path(), &RestoreOptions::default()).unwrap();
    assert!(out.errors.is_empty() && out.files_restored == 1, "{out:?}");
}

/// Rule 13: junk under `gc/`, `verify/` and `drills/`, including objects far
/// too large to read (sparse files), stops no backup, prune or check; check
/// names the junk in `gc/`; a planted `.done` for the open generation does not
/// hold it open.
#[test]
fn junk_and_huge_records_stop_nothing() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 200_000, 60)]);
    r.garbage("g", 61);
    let root = r.dir.path();
    for d in ["gc", "verify", "drills"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("gc/junk"), b"hello").unwrap();
    std::fs::write(root.join("gc/0000000001.done"), b"not a record").unwrap();
    std::fs::write(root.join("gc/0000000099.mark"), b"not a record").unwrap();
    let huge = |p: PathBuf| {
        let f = std::fs::File::create(p).unwrap();
        f.set_len(1 << 40).unwrap(); // 1 TiB, sparse
    };
    huge(root.join("gc/0000000001.sweep"));
    huge(root.join("verify/20261201T000000.000000000Z-0123456789abcdef"));
    huge(root.join("drills/20261201T000000.000000000Z-0123456789abcdef"));

    let s = r.backup(&a).unwrap();
    let p = r.prune(&fencing()).unwrap();
    // The planted sweep claim means "delete nothing" for generation 1; the
    // planted done is replaced by a real one, so generation 2 can follow.
    assert!(p.swept && p.packs_deleted == 0, "{p:?}");
    let p2 = r.prune(&fencing()).unwrap();
    assert!(p2.swept && p2.packs_deleted > 0, "{p2:?}");
    let report = r.check();
    let named = |suffix: &str| report.errors.iter().any(|e| e.object.ends_with(suffix));
    assert!(
        named("gc/junk") && named("0000000099.mark"),
        "{:?}",
        report.errors
    );
    assert!(
        report.errors.iter().all(|e| e.object.starts_with("gc/")),
        "{:?}",
        report.errors
    );
    let repo = r.open().into_indexed().unwrap();
    let snap = repo.load_snapshot(&s).unwrap();
    let target = tempfile::tempdir().unwrap();
    let out = restore(&repo, &snap.tree, target.path(), &RestoreOptions::default()).unwrap();
    assert!(out.errors.is_empty(), "{out:?}");
}

/// Rule 14: an S3-style 409 that stored nothing, on the Create of a fence:
/// the collector looks, finds no `.end`, and tries again; the fence holds.
#[test]
fn a_conflict_answer_that_stored_nothing_is_retried() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 200_000, 70)]);
    r.garbage("g", 71);
    r.gates.arm("B", Op::Put, |k| k.starts_with("data/"));
    let b = r.backup_in_background(&a);
    r.gates.wait_held("B");
    tick();
    r.gates
        .fake_conflicts(2, |k| k.starts_with("sessions/") && k.ends_with(".end"));
    let p = r.prune(&fencing()).unwrap();
    assert!(p.swept && p.sessions_fenced == 1, "{p:?}");
    r.gates.release("B");
    assert!(matches!(b.join().unwrap(), Err(Error::Fenced)));
    let report = r.check();
    assert!(report.ok(), "{:?}", report.errors);
}

/// Rule 13: a record copied under another generation's name does not
/// authenticate (its key is its associated data): the copy is refused, named
/// by check, and the generation it pretends to finish is done for real later.
#[test]
fn a_record_copied_to_another_generation_is_refused() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 200_000, 90)]);
    let s = r.backup(&a).unwrap();
    for (i, g) in ["g1", "g2"].iter().enumerate() {
        let d = r.tree(g, &[("g.bin", 200_000, 91 + i as u64)]);
        let id = r.backup(&d).unwrap();
        r.forget(&id);
        if i == 0 {
            assert!(r.prune(&fencing()).unwrap().swept);
        }
    }
    let gc = r.dir.path().join("gc");
    std::fs::copy(gc.join("0000000001.done"), gc.join("0000000002.done")).unwrap();
    let report = r.check();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.object == "gc/0000000002.done"),
        "{:?}",
        report.errors
    );
    // Generation 2 is not taken as finished: the next prune marks and sweeps
    // it, replacing the copy with a real record.
    let p = r.prune(&fencing()).unwrap();
    assert!(
        p.swept && p.plan.generation == 2 && p.packs_deleted > 0,
        "{p:?}"
    );
    r.assert_restores(&[(s, &a)]);
}

/// The first backups of a new repository are running, their data indexed,
/// no snapshot committed yet: an admin's prune (without --allow-empty) has
/// nothing to do and says so, rather than refusing as it does for an index
/// with no snapshots and no writer (a fleet's admin loop starts like this).
#[test]
fn a_prune_before_the_first_snapshot_waits_for_it() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 300_000, 30)]);
    r.gates
        .arm("first snapshot", Op::Put, |k| k.starts_with("snapshots/"));
    let b = r.backup_in_background(&a);
    r.gates.wait_held("first snapshot");
    let q = r.prune(&PruneOptions::default()).unwrap();
    assert!(q.plan.waiting_for_first_snapshot, "{q:?}");
    assert_eq!(q.packs_deleted, 0, "{q:?}");
    // A writer silent for longer than --stale-after (one that crashed) is
    // not waited for: the empty repository is refused as before.
    tick();
    let crashed = PruneOptions {
        stale_after: Duration::ZERO,
        ..Default::default()
    };
    assert!(matches!(r.prune(&crashed), Err(Error::InvalidArgument(_))));
    r.gates.release("first snapshot");
    let s = b.join().unwrap().unwrap();
    r.assert_restores(&[(s, &a)]);
    // With no writer left, an index without snapshots is refused as before.
    r.forget(&s);
    assert!(matches!(
        r.prune(&PruneOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
}

/// `check` beside a prune (a fleet's verifier beside its admin): check has
/// listed the snapshots and is reading the index when another host forgets
/// a snapshot and a prune sweeps its data, index object included. What
/// changed under check is not damage: its second look, from a fresh listing
/// and index, finds none.
#[test]
fn a_sweep_while_check_reads_the_index_is_not_damage() {
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 300_000, 40)]);
    let first = r.backup(&a).unwrap();
    let first_index: Vec<String> = r
        .backend
        .list("index")
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(!first_index.is_empty());
    let b = r.tree("b", &[("b.bin", 300_000, 41)]);
    let second = r.backup(&b).unwrap();
    r.gates
        .arm("check reads the first index", Op::Get, move |k| {
            first_index.iter().any(|i| i == k)
        });
    let checker = {
        let mut repo = r.open();
        std::thread::spawn(move || check(&mut repo, ReadData::None))
    };
    r.gates.wait_held("check reads the first index");
    r.forget(&first);
    let q = r.prune(&patient()).unwrap();
    assert!(q.swept && q.packs_deleted >= 1, "{q:?}");
    r.gates.release("check reads the first index");
    let report = checker.join().unwrap().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.snapshots, 1, "{report:?}");
    r.assert_restores(&[(second, &b)]);
}
