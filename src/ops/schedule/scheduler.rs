//! The foreground scheduler's loop, with an injectable clock so that tests
//! run a day of schedules in milliseconds.
//!
//! Jobs run one at a time, so two runs of one job never overlap in this
//! process (the per-job lock file keeps other processes out). After the clock
//! jumps past one or more run times (the machine slept), each such job runs
//! once, then waits for its next time after now: one catch-up, never a burst.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use super::cron::Schedule;

/// Time as the scheduler sees it.
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
    /// Waits until `t` (or returns at once if it has passed); false when the
    /// scheduler must stop instead.
    fn sleep_until(&self, t: DateTime<Utc>) -> bool;
}

/// The wall clock; stops when `stop` is set (by a signal handler).
pub struct SystemClock<'a> {
    pub stop: &'a AtomicBool,
}

impl Clock for SystemClock<'_> {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> bool {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let now = Utc::now();
            if now >= t {
                return true;
            }
            // Short naps: a signal is noticed quickly, and a wall-clock jump
            // (suspend and resume) is seen within a quarter second.
            let left = (t - now).to_std().unwrap_or_default();
            std::thread::sleep(left.min(std::time::Duration::from_millis(250)));
        }
    }
}

/// One scheduled job.
pub struct Entry {
    pub job: String,
    pub schedule: Schedule,
    /// When the job last ran (from its state file): a run time missed since
    /// then is caught up once at start.
    pub last_run: Option<DateTime<Utc>>,
}

/// Runs until the clock says stop. `run(job, due)` runs one job; it returns
/// false to stop the scheduler.
pub fn run(clock: &dyn Clock, entries: &[Entry], run: &mut dyn FnMut(&str, DateTime<Utc>) -> bool) {
    let start = clock.now();
    let mut next: Vec<Option<DateTime<Utc>>> = entries
        .iter()
        .map(|e| {
            let missed = e
                .last_run
                .and_then(|l| e.schedule.next_after(l))
                .filter(|t| *t <= start);
            missed.or_else(|| e.schedule.next_after(start))
        })
        .collect();
    loop {
        let Some(t) = next.iter().flatten().min().copied() else {
            // Nothing will ever fire: wait for the stop.
            let far = clock.now() + chrono::Duration::days(1);
            if !clock.sleep_until(far) {
                return;
            }
            continue;
        };
        if !clock.sleep_until(t) {
            return;
        }
        let now = clock.now();
        let mut due: Vec<usize> = (0..entries.len())
            .filter(|&i| next[i].is_some_and(|n| n <= now))
            .collect();
        due.sort_by_key(|&i| (next[i], i));
        for i in due {
            let when = next[i].unwrap_or(now);
            if !run(&entries[i].job, when) {
                return;
            }
            // The next time after now, however long the run took: a missed
            // time is never made up twice, and runs never pile up.
            next[i] = entries[i].schedule.next_after(clock.now().max(now));
        }
    }
}
