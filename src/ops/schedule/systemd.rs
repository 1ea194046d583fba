//! systemd service and timer units for a job (`schedule install --systemd`).

use std::path::Path;

use super::config::Job;

/// One unit file: its name and text.
pub struct Unit {
    pub name: String,
    pub text: String,
}

/// Quotes one ExecStart= word for systemd: `%` doubled, quoted when needed.
fn exec_word(s: &str) -> String {
    let s = s.replace('%', "%%");
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';' | '$'))
    {
        return s;
    }
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

/// The first words of every unit `units` writes: how `schedule uninstall`
/// knows a file is its own.
const HEADER: &str = "# Written by `cairn schedule install --systemd`";

pub fn written_by_cairn(text: &[u8]) -> bool {
    text.starts_with(HEADER.as_bytes())
}

/// A line break or another control character in a word would end the
/// `ExecStart=` line and start a directive of the path's choosing.
fn plain_word(what: &str, s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{what} {s:?} contains the control character {c:?}, which a systemd unit cannot hold; move or rename it"
        )),
        None => Ok(()),
    }
}

/// The service and timer for a scheduled job; an error if its schedule has no
/// `OnCalendar=` equivalent or it has no schedule.
pub fn units(job: &Job, exe: &Path, config: &Path) -> Result<[Unit; 2], String> {
    plain_word("the program path", &exe.to_string_lossy())?;
    plain_word("the config path", &config.to_string_lossy())?;
    plain_word("the job name", &job.name)?;
    let schedule = job
        .schedule
        .as_ref()
        .ok_or_else(|| format!("job '{}' has no schedule", job.name))?;
    let calendar = schedule
        .on_calendar()
        .map_err(|e| format!("job '{}': {e}", job.name))?;
    let exec = [
        exe.to_string_lossy().into_owned(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "run".into(),
        job.name.clone(),
    ]
    .iter()
    .map(|w| exec_word(w))
    .collect::<Vec<_>>()
    .join(" ");
    let service = format!(
        "# Written by `cairn schedule install --systemd`; runs `cairn run {name}`.\n\
         [Unit]\n\
         Description=cairn backup job {name}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exec}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         # SIGTERM interrupts the running step; a backup interrupted there leaves a valid repository.\n\
         KillMode=mixed\n\
         TimeoutStopSec=5min\n",
        name = job.name,
    );
    let timer = format!(
        "# Written by `cairn schedule install --systemd` from schedule \"{expr}\" ({zone} time).\n\
         [Unit]\n\
         Description=Timer for cairn backup job {name}\n\
         \n\
         [Timer]\n\
         OnCalendar={calendar}\n\
         Persistent=true\n\
         RandomizedDelaySec={delay}\n\
         Unit=cairn-{name}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        expr = schedule.expr.replace('\n', " "),
        zone = schedule.zone(),
        name = job.name,
        delay = job.randomized_delay.as_secs(),
    );
    Ok([
        Unit {
            name: format!("cairn-{}.service", job.name),
            text: service,
        },
        Unit {
            name: format!("cairn-{}.timer", job.name),
            text: timer,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(exec_word("/usr/bin/cairn"), "/usr/bin/cairn");
        assert_eq!(exec_word("/a b/c"), "\"/a b/c\"");
        assert_eq!(exec_word("50%"), "50%%");
    }
}
