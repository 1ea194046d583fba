//! `cargo run --release -p gc-model --example explore_compact -- old|new
//! WRITERS COLLECTORS [BITS]`: explores one configuration depth-first with
//! the compact explorer (`src/compact.rs`: 8 bytes a state in a table of
//! `2^BITS` slots, default 30 = 8 GiB), on one thread, and prints counts,
//! time and violations. For configurations stateright's checkers cannot hold
//! in memory (2 writers × 3 collectors).
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
    let bits = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(30);
    let model = GcModel::new(rules, w, c);
    let result = compact::explore(&model, bits, 0.9, |p| {
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
                "rules={:?} writers={w} collectors={c}: {} unique states, {} generated, max depth {}, {:.1?}, table 2^{bits} slots",
                args.get(1),
                r.unique,
                r.generated,
                r.max_depth,
                r.elapsed
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
