//! Rule 14 of repo-format.md §15: a heartbeat deletes the previous beat only
//! once the new one is stored. (A test binary of its own: it sets the test
//! heartbeat interval for the whole process, and a fast heartbeat makes a
//! fenced writer stop early, which other schedules must not see.)

use crate::common;
#[path = "../common/gated_repo.rs"]
mod gated_repo;
#[path = "../common/gates.rs"]
mod gates;

use std::time::Duration;

use gated_repo::Repo;
use gates::Op;

/// A failed write never leaves a live session with no beat.
#[test]
fn a_failed_heartbeat_keeps_the_previous_one() {
    std::env::set_var("CAIRN_HEARTBEAT_SECS", "0.02");
    let r = Repo::new();
    let a = r.tree("a", &[("a.bin", 200_000, 80)]);
    r.gates
        .fail_uploads(usize::MAX, |k| k.contains(".hb.") && !k.ends_with(".hb.1"));
    r.gates.arm("B", Op::Put, |k| k.starts_with("snapshots/"));
    let b = r.backup_in_background(&a);
    r.gates.wait_held("B");
    std::thread::sleep(Duration::from_millis(300));
    let beats: Vec<String> = r
        .sessions()
        .into_iter()
        .filter(|n| n.contains(".hb."))
        .collect();
    r.gates.release("B");
    let s = b.join().unwrap().unwrap();
    assert!(beats.len() == 1 && beats[0].ends_with(".hb.1"), "{beats:?}");
    r.assert_restores(&[(s, &a)]);
}
