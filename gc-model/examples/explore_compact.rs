//! `cargo run --release -p gc-model --example explore_compact -- old|new
//! WRITERS COLLECTORS [GIB] [THREADS]`: explores one configuration
//! depth-first with the compact explorer (`src/compact.rs`: 8 bytes a state
//! in a table of GIB GiB, default 8), on THREADS threads (default 1), and
//! prints counts, time and violations. For configurations stateright's
//! checkers cannot hold in memory (2 writers × 3 collectors).
use gc_model::{compact, GcModel, Rules};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rules = if args.get(1).map(String::as_str) == Some("old") {
        Rules::old()
    } else {
        Rules::new()
    };
    let w = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let c = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let gib: f64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(8.0);
    let threads = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(1);
    let options = compact::Options {
        slots: (gib * (1u64 << 30) as f64 / 8.0) as u64,
        max_load: 0.9,
        threads,
    };
    let model = GcModel::new(rules, w, c);
    let result = compact::explore(&model, &options, |p| {
        eprintln!(
            "  {:.0?}: {} unique, {} generated, depth {} (max {}), table {:.1}% full, violated so far: {:?}",
            p.elapsed,
            p.unique,
            p.generated,
            p.depth,
            p.max_depth,
            100.0 * p.load,
            p.violated
        );
    });
    match result {
        Err(stopped) => {
            eprintln!("stopped: {stopped:?}");
            std::process::exit(2);
        }
        Ok(r) => {
            eprintln!(
                "rules={:?} writers={w} collectors={c}: {} unique states, {} generated, max depth {}, {:.1?} on {threads} thread(s), table {} slots ({:.1}% full), collision odds {:.1e}",
                args.get(1),
                r.unique,
                r.generated,
                r.max_depth,
                r.elapsed,
                r.table_slots,
                100.0 * r.unique as f64 / r.table_slots as f64,
                r.collision_odds()
            );
            eprintln!("reached: {:?}", r.reached);
            for (name, path) in &r.violations {
                eprintln!("{name}: {} steps", path.len());
                for a in path {
                    eprintln!("    {a:?}");
                }
            }
            if !r.violations.is_empty() {
                std::process::exit(1);
            }
        }
    }
}
