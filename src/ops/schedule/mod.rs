//! Jobs from a config file, run now (`cairn run`), by a foreground scheduler
//! (`schedule run`) or by systemd timers (`schedule install --systemd`).
//!
//! - [`config`]: the TOML file, validated with line and column for every mistake;
//! - [`cron`]: schedules (cron expressions, shorthands, time zones) and their
//!   systemd `OnCalendar=` equivalents;
//! - [`runner`]: a job's steps as child processes of this binary, the per-job
//!   lock and state file;
//! - [`scheduler`]: the scheduler loop, its clock injectable for tests;
//! - [`systemd`]: service and timer units.

pub mod config;
pub mod cron;
pub mod runner;
pub mod scheduler;
pub mod systemd;
