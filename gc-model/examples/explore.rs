//! `cargo run --release -p gc-model --example explore -- old|new WRITERS COLLECTORS
//! [nosym] [nopor] [crash] [noforget] [j]`: explores one configuration with BFS
//! (`THREADS`, default 2) and prints counts, time and discoveries. Peak memory:
//! run it under `/usr/bin/time -v`.
use gc_model::{GcModel, Rules};
use stateright::{Checker, Model};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rules = if args.get(1).map(String::as_str) == Some("old") {
        Rules::old()
    } else {
        Rules::new()
    };
    let w = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let c = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut model = GcModel::new(rules, w, c);
    model.symmetry = !args.iter().any(|a| a == "nosym");
    if args.iter().any(|a| a == "j") {
        model.writer_choices = vec![gc_model::J];
    }
    model.por = !args.iter().any(|a| a == "nopor");
    model.crash = args.iter().any(|a| a == "crash");
    if args.iter().any(|a| a == "noforget") {
        model.forget = false;
    }
    let t = Instant::now();
    let checker = model
        .checker()
        .threads(
            std::env::var("THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(2),
        )
        .spawn_bfs();
    let mut last = Instant::now();
    while !checker.is_done() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if last.elapsed().as_secs() < 30 {
            continue;
        }
        last = Instant::now();
        eprintln!(
            "  {:.0?}: {} unique, depth {}",
            t.elapsed(),
            checker.unique_state_count(),
            checker.max_depth()
        );
    }
    let checker = checker.join();
    eprintln!(
        "rules={:?} writers={w} collectors={c}: {} unique states, {} generated, max depth {}, done={}, {:.1?}",
        args.get(1),
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        checker.is_done(),
        t.elapsed()
    );
    for (name, path) in checker.discoveries() {
        eprintln!("{name}: {} steps", path.clone().into_actions().len());
        // Examples are only reachability checks: print the counterexamples.
        if gc_model::INVARIANTS.contains(&name) {
            for a in path.into_actions() {
                eprintln!("    {a:?}");
            }
        }
    }
}
