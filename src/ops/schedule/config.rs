//! The config file (`cairn.toml`): repositories and jobs, parsed with spans so
//! that every mistake is reported as `FILE:LINE:COLUMN: message`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::database::{DatabaseSource, Location};
use crate::format::database::Engine;
use crate::ops::forget::Policy;
use crate::source::Source;

use serde::Deserialize;
use toml::Spanned;

use super::cron::Schedule;

/// One mistake in the config file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the file as a whole (it cannot be read), no place in it.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every mistake found (at least one).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub repositories: BTreeMap<String, Repo>,
    pub jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    pub url: String,
    pub options: Vec<(String, OptionValue)>,
    pub password: PasswordSource,
}

/// A storage option's value: literal, or read when a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    Literal(String),
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Command(String),
    /// Neither given: the environment of `cairn run` (`CAIRN_PASSWORD`, ...) decides.
    Inherit,
}

/// A job's retention: the same policy type `forget`'s flags make.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub policy: Policy,
    pub prune: bool,
}

#[derive(Debug, Clone)]
pub enum VerifyLimit {
    /// `check --read-data` bounded by time and/or bytes.
    Pass {
        max_duration: Option<String>,
        max_bytes: Option<String>,
    },
    /// `check --read-data-subset SHARE`.
    Share(String),
}

#[derive(Debug, Clone)]
pub struct Verify {
    pub limit: VerifyLimit,
    /// None: every run.
    pub every: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Drill {
    pub every: Option<Duration>,
    pub files: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct Notify {
    pub urls: Vec<String>,
    pub ping: Option<String>,
    pub command: Option<String>,
    pub all: bool,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub repository: String,
    /// What it backs up: the same type `backup`'s flags make.
    pub source: Source,
    /// Exclude patterns (paths only).
    pub exclude: Vec<String>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub schedule: Option<Schedule>,
    pub randomized_delay: Duration,
    /// Runs again after a failure (not after exit 3), up to this many times.
    pub retries: u32,
    /// The wait before the first retry; each further one waits twice as long.
    pub retry_delay: Duration,
    /// Tags computed when the job runs: `name` → a shell command whose
    /// output (trimmed) makes the tag `name=output`.
    pub tag_commands: Vec<(String, String)>,
    pub retention: Option<Retention>,
    /// Retention applied to each copy destination after the copy.
    pub copy_retention: Option<Retention>,
    pub verify: Option<Verify>,
    pub drill: Option<Drill>,
    pub notify: Notify,
    pub before: Option<String>,
    pub after: Option<String>,
    pub copy_to: Vec<String>,
    /// The password each engine's dump tool gets (`PGPASSWORD`, `MYSQL_PWD`)
    /// when the job backs up its databases.
    pub database_passwords: Vec<(Engine, OptionValue)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    repositories: BTreeMap<String, Spanned<RawRepo>>,
    #[serde(default)]
    jobs: BTreeMap<String, Spanned<RawJob>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRepo {
    url: Spanned<String>,
    #[serde(default)]
    options: BTreeMap<String, Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawJob {
    repository: Spanned<String>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    host: Option<String>,
    dump_command: Option<Spanned<String>>,
    dump_name: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    randomized_delay: Option<Spanned<String>>,
    #[serde(default)]
    retries: u32,
    retry_delay: Option<Spanned<String>>,
    #[serde(default)]
    tag_commands: BTreeMap<String, String>,
    retention: Option<Spanned<RawRetention>>,
    copy_retention: Option<Spanned<RawRetention>>,
    verify: Option<Spanned<RawVerify>>,
    drill: Option<RawDrill>,
    notify: Option<RawNotify>,
    before: Option<String>,
    after: Option<String>,
    #[serde(default)]
    copy_to: Vec<Spanned<String>>,
    #[serde(default)]
    databases: Vec<Spanned<RawDatabase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDatabase {
    postgres: Option<Spanned<String>>,
    mysql: Option<Spanned<String>>,
    sqlite: Option<Spanned<String>>,
    /// A database of the server other than the URL's, or "all".
    database: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    #[serde(default)]
    dump_options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetention {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<Spanned<String>>,
    #[serde(default)]
    keep_tag: Vec<String>,
    keep_at_most: Option<u32>,
    #[serde(default)]
    prune: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawVerify {
    max_duration: Option<Spanned<String>>,
    max_bytes: Option<Spanned<String>>,
    share: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDrill {
    every: Option<Spanned<String>>,
    files: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNotify {
    #[serde(default)]
    urls: Vec<String>,
    ping: Option<String>,
    command: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Line and column (1-based, in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// A job's durations: plain durations (`90s`, `10m`, `26h`, `7d`, `2w`,
/// `1d12h`, see [`crate::format::duration`]) and the words `hourly`, `daily`,
/// `weekly` (7 days), `monthly` (30 days).
pub fn parse_duration(s: &str) -> Option<Duration> {
    match s.trim() {
        "hourly" => Some(Duration::from_secs(3600)),
        "daily" => Some(Duration::from_secs(86400)),
        "weekly" => Some(Duration::from_secs(7 * 86400)),
        "monthly" => Some(Duration::from_secs(30 * 86400)),
        other => crate::format::duration::parse_duration(other),
    }
}

fn valid_size(s: &str) -> bool {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = t[digits.len()..].trim().to_ascii_uppercase();
    !digits.is_empty()
        && [
            "", "B", "K", "M", "G", "T", "KB", "MB", "GB", "TB", "KIB", "MIB", "GIB", "TIB",
        ]
        .contains(&rest.as_str())
}

fn valid_share(s: &str) -> bool {
    if let Some(p) = s.strip_suffix('%') {
        return p.parse::<f64>().is_ok_and(|v| v > 0.0 && v <= 100.0);
    }
    if let Some((n, m)) = s.split_once('/') {
        return matches!((n.parse::<u32>(), m.parse::<u32>()), (Ok(n), Ok(m)) if n >= 1 && n <= m);
    }
    false
}

/// Names that are safe in file names and systemd unit names.
fn valid_job_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn duration(cx: &mut Ctx, v: &Option<Spanned<String>>, what: &str) -> Option<Duration> {
    let v = v.as_ref()?;
    match parse_duration(v.get_ref()) {
        Some(d) => Some(d),
        None => {
            cx.at(
                v.span(),
                format!(
                    "{what} '{}' is not a duration like 90s, 10m, 26h, 7d, 2w (or hourly, daily, weekly, monthly)",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }
}

/// toml's message for an unknown field is "unknown field `x`, expected one of ...".
fn rewrite_message(msg: &str) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((name, tail)) = rest.split_once('`') {
            let expected = tail
                .trim_start_matches(',')
                .trim()
                .replace('`', "")
                .replace("expected one of ", "")
                .replace("expected ", "");
            return if expected.is_empty() {
                format!("unknown key '{name}'")
            } else {
                format!("unknown key '{name}' (known keys: {expected})")
            };
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some((name, _)) = rest.split_once('`') {
            return format!("missing key '{name}'");
        }
    }
    msg.replace('\n', " ")
}

/// Reads and validates a config file; `display` is the name used in messages.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: display.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(&text, path, &display)
}

/// Parses and validates config text.
pub fn parse(text: &str, path: &Path, display: &str) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        file: display.to_string(),
        text,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.at(span, rewrite_message(e.message()));
            return Err(ConfigErrors(cx.errors));
        }
    };
    let mut repositories = BTreeMap::new();
    for (name, r) in &raw.repositories {
        let span = r.span();
        let r = r.get_ref();
        if name.is_empty() {
            cx.at(span.clone(), "a repository needs a name");
        }
        if let Some(p) = &r.password {
            cx.at(
                p.span(),
                "a password must not be written in the config file: use password-file or password-command",
            );
        }
        let password = match (&r.password_file, &r.password_command) {
            (Some(f), Some(c)) => {
                cx.at(c.span(), "give password-file or password-command, not both");
                let _ = f;
                PasswordSource::Inherit
            }
            (Some(f), None) => PasswordSource::File(PathBuf::from(f.get_ref())),
            (None, Some(c)) => PasswordSource::Command(c.get_ref().clone()),
            (None, None) => PasswordSource::Inherit,
        };
        if r.url.get_ref().trim().is_empty() {
            cx.at(r.url.span(), "url is empty");
        }
        let mut options = Vec::new();
        for (k, v) in &r.options {
            options.push((k.clone(), option_value(&mut cx, v)));
        }
        repositories.insert(
            name.clone(),
            Repo {
                name: name.clone(),
                url: r.url.get_ref().clone(),
                options,
                password,
            },
        );
    }

    let mut jobs = BTreeMap::new();
    for (name, j) in &raw.jobs {
        let jspan = j.span();
        let j = j.get_ref();
        if !valid_job_name(name) {
            cx.at(
                jspan.clone(),
                format!("job name '{name}' may hold only letters, digits, '-' and '_' (it names files and systemd units)"),
            );
        }
        let repo = j.repository.get_ref();
        if !raw.repositories.contains_key(repo) {
            cx.at(
                j.repository.span(),
                format!("repository '{repo}' is not defined (add a [repositories.{repo}] table)"),
            );
        }
        for c in &j.copy_to {
            if !raw.repositories.contains_key(c.get_ref()) {
                cx.at(
                    c.span(),
                    format!(
                        "copy-to repository '{}' is not defined (add a [repositories.{}] table)",
                        c.get_ref(),
                        c.get_ref()
                    ),
                );
            } else if c.get_ref() == repo {
                cx.at(c.span(), "copy-to names the job's own repository");
            }
        }
        let (databases, database_passwords) = job_databases(&mut cx, &j.databases);
        if let (Some(cmd), false) = (&j.dump_command, databases.is_empty()) {
            cx.at(
                cmd.span(),
                "a job has databases or a dump-command, not both",
            );
        }
        let source = match (&j.dump_command, j.paths.is_empty()) {
            (Some(cmd), true) => {
                let dump_name = match &j.dump_name {
                    Some(n) => {
                        if let Err(e) = crate::source::validate_stdin_name(n.get_ref()) {
                            cx.at(n.span(), format!("dump-name: {e}"));
                        }
                        n.get_ref().clone()
                    }
                    None => {
                        cx.at(
                            cmd.span(),
                            "dump-command needs a dump-name (the file name the dump is stored as)",
                        );
                        String::new()
                    }
                };
                if cmd.get_ref().trim().is_empty() {
                    cx.at(cmd.span(), "dump-command is empty");
                }
                if !j.exclude.is_empty() {
                    cx.at(
                        cmd.span(),
                        "exclude applies to paths, not to a dump-command",
                    );
                }
                Source::dump(&dump_name, cmd.get_ref())
            }
            (Some(cmd), false) => {
                cx.at(cmd.span(), "a job has paths or a dump-command, not both");
                Source::Paths(vec![])
            }
            (None, empty) => {
                // A job without a source is a maintenance job (retention,
                // verification, drills, copies of what is there).
                let maintains = !databases.is_empty()
                    || j.retention.is_some()
                    || j.verify.is_some()
                    || j.drill.is_some()
                    || !j.copy_to.is_empty();
                if empty && !maintains {
                    cx.at(
                        jspan.clone(),
                        format!("job '{name}' has nothing to do: give paths = [...], databases or dump-command to back up, or retention, verify, drill or copy-to"),
                    );
                }
                if let Some(n) = &j.dump_name {
                    cx.at(n.span(), "dump-name needs a dump-command");
                }
                let paths = j.paths.iter().map(|p| PathBuf::from(p.get_ref())).collect();
                match databases.is_empty() {
                    true => Source::Paths(paths),
                    false => Source::Databases { databases, paths },
                }
            }
        };
        for t in &j.tags {
            if t.get_ref().is_empty() || t.get_ref().contains(',') {
                cx.at(t.span(), "a tag must be non-empty and hold no ','");
            }
        }
        let tz = match &j.timezone {
            Some(t) => match t.get_ref().parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    cx.at(
                        t.span(),
                        format!(
                            "unknown time zone '{}' (use an IANA name such as Europe/Berlin or UTC)",
                            t.get_ref()
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        let schedule = match &j.schedule {
            Some(s) => match Schedule::parse(s.get_ref(), tz) {
                Ok(s) => Some(s),
                Err(e) => {
                    cx.at(s.span(), e);
                    None
                }
            },
            None => {
                if let Some(t) = &j.timezone {
                    cx.at(t.span(), "timezone without a schedule");
                }
                None
            }
        };
        let randomized_delay = duration(&mut cx, &j.randomized_delay, "randomized-delay")
            .unwrap_or(Duration::from_secs(300));
        let retry_delay =
            duration(&mut cx, &j.retry_delay, "retry-delay").unwrap_or(Duration::from_secs(60));
        for (name, cmd) in &j.tag_commands {
            if name.is_empty() || name.contains(',') || name.contains('=') || cmd.trim().is_empty()
            {
                cx.at(
                    jspan.clone(),
                    format!("tag-commands: '{name}' needs a name without ',' or '=' and a command"),
                );
            }
        }
        let retention = j.retention.as_ref().map(|r| parse_retention(&mut cx, r));
        let copy_retention = j
            .copy_retention
            .as_ref()
            .map(|r| parse_retention(&mut cx, r));
        if copy_retention.is_some() && j.copy_to.is_empty() {
            cx.at(jspan.clone(), "copy-retention needs copy-to");
        }
        let verify = j.verify.as_ref().map(|v| {
            let vspan = v.span();
            let v = v.get_ref();
            if let Some(d) = &v.max_duration {
                if parse_duration(d.get_ref()).is_none() {
                    cx.at(
                        d.span(),
                        format!(
                            "max-duration '{}' is not a duration like 10m or 2h",
                            d.get_ref()
                        ),
                    );
                }
            }
            if let Some(b) = &v.max_bytes {
                if !valid_size(b.get_ref()) {
                    cx.at(
                        b.span(),
                        format!("max-bytes '{}' is not a size like 500M or 2G", b.get_ref()),
                    );
                }
            }
            let limit = match (&v.share, v.max_duration.is_some() || v.max_bytes.is_some()) {
                (Some(s), false) => {
                    if !valid_share(s.get_ref()) {
                        cx.at(
                            s.span(),
                            format!("share '{}' is not a share like 10% or 3/7", s.get_ref()),
                        );
                    }
                    VerifyLimit::Share(s.get_ref().clone())
                }
                (Some(s), true) => {
                    cx.at(s.span(), "give share, or max-duration/max-bytes, not both");
                    VerifyLimit::Share(String::new())
                }
                (None, true) => VerifyLimit::Pass {
                    max_duration: v.max_duration.as_ref().map(|d| d.get_ref().clone()),
                    max_bytes: v.max_bytes.as_ref().map(|d| d.get_ref().clone()),
                },
                (None, false) => {
                    cx.at(vspan, "verify needs max-duration, max-bytes or share");
                    VerifyLimit::Share(String::new())
                }
            };
            Verify {
                limit,
                every: duration(&mut cx, &v.every, "every"),
            }
        });
        let drill = j.drill.as_ref().map(|d| Drill {
            every: duration(&mut cx, &d.every, "every"),
            files: d.files,
        });
        let notify = j
            .notify
            .as_ref()
            .map(|n| Notify {
                urls: n.urls.clone(),
                ping: n.ping.clone(),
                command: n.command.clone(),
                all: n.all,
            })
            .unwrap_or_default();
        jobs.insert(
            name.clone(),
            Job {
                name: name.clone(),
                repository: repo.clone(),
                source,
                exclude: j.exclude.clone(),
                tags: j.tags.iter().map(|t| t.get_ref().clone()).collect(),
                host: j.host.clone(),
                schedule,
                randomized_delay,
                retries: j.retries,
                retry_delay,
                tag_commands: j
                    .tag_commands
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                retention,
                copy_retention,
                verify,
                drill,
                notify,
                before: j.before.clone(),
                after: j.after.clone(),
                copy_to: j.copy_to.iter().map(|c| c.get_ref().clone()).collect(),
                database_passwords,
            },
        );
    }
    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(cx.errors));
    }
    Ok(Config {
        path: path.to_path_buf(),
        repositories,
        jobs,
    })
}

/// A value that may be read when a job runs: `env:VAR`, `file:PATH`, or literal.
fn option_value(cx: &mut Ctx<'_>, v: &Spanned<String>) -> OptionValue {
    let val = v.get_ref();
    if let Some(var) = val.strip_prefix("env:") {
        if var.is_empty() {
            cx.at(
                v.span(),
                "env: needs a variable name, as in env:AWS_SECRET_ACCESS_KEY",
            );
        }
        OptionValue::Env(var.to_string())
    } else if let Some(f) = val.strip_prefix("file:") {
        if f.is_empty() {
            cx.at(
                v.span(),
                "file: needs a path, as in file:/etc/cairn/s3.secret",
            );
        }
        OptionValue::File(PathBuf::from(f))
    } else {
        OptionValue::Literal(val.clone())
    }
}

/// A job's `[[jobs.NAME.databases]]`: the sources, and the password each
/// engine's dump tool gets when the job runs (one per engine a job).
fn job_databases(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawDatabase>],
) -> (Vec<DatabaseSource>, Vec<(Engine, OptionValue)>) {
    let mut sources = Vec::new();
    let mut passwords: Vec<(Engine, OptionValue)> = Vec::new();
    let mut options: Option<&Vec<String>> = None;
    for d in raw {
        let span = d.span();
        let d = d.get_ref();
        let given = [&d.postgres, &d.mysql, &d.sqlite];
        if given.iter().filter(|g| g.is_some()).count() != 1 {
            cx.at(
                span.clone(),
                "a database gives one of postgres = URL, mysql = URL or sqlite = FILE",
            );
            continue;
        }
        let (text, expect) = match (&d.postgres, &d.mysql, &d.sqlite) {
            (Some(u), _, _) => (u, Engine::Postgres),
            (_, Some(u), _) => (u, Engine::Mysql),
            (_, _, Some(f)) => (f, Engine::Sqlite),
            _ => unreachable!("one is given"),
        };
        let location = match Location::parse(text.get_ref()) {
            Ok(l) if l.engine() == expect => l,
            Ok(_) => {
                cx.at(text.span(), format!("not a {} location", expect.name()));
                continue;
            }
            Err(e) => {
                cx.at(text.span(), e.to_string());
                continue;
            }
        };
        let all = d.database.as_ref().is_some_and(|n| n.get_ref() == "all");
        let location = match &d.database {
            Some(n) if expect == Engine::Sqlite => {
                cx.at(
                    n.span(),
                    "database is for servers; a SQLite file is one database",
                );
                location
            }
            Some(n) if n.get_ref().is_empty() => {
                cx.at(n.span(), "database is empty (a name, or \"all\")");
                location
            }
            Some(n) if !all => location.with_database(n.get_ref()),
            _ => location,
        };
        if let Some(p) = &d.password {
            let value = option_value(cx, p);
            if matches!(value, OptionValue::Literal(_)) {
                cx.at(p.span(), "a database password must not be written in the config file: use env:VAR or file:PATH (or the engine's own password file)");
            } else if expect == Engine::Sqlite {
                cx.at(p.span(), "a SQLite file has no password");
            } else if passwords.iter().any(|(e, v)| *e == expect && *v != value) {
                cx.at(p.span(), format!("one job gives one {} password: put databases with other credentials in another job", expect.name()));
            } else {
                passwords.push((expect, value));
            }
        }
        if !d.dump_options.is_empty() {
            if expect == Engine::Sqlite {
                cx.at(
                    span.clone(),
                    "dump-options are for server dumps, not SQLite files",
                );
            } else if options.is_some_and(|o| *o != d.dump_options) {
                cx.at(
                    span.clone(),
                    "the databases of one job share their dump-options: put others in another job",
                );
            }
            options = Some(&d.dump_options);
        }
        sources.push(DatabaseSource {
            location,
            all,
            dump_options: d.dump_options.clone(),
            base_backup: false,
        });
    }
    if let Some(o) = options {
        for s in sources
            .iter_mut()
            .filter(|s| s.location.engine() != Engine::Sqlite)
        {
            s.dump_options = o.clone();
        }
    }
    (sources, passwords)
}

impl Config {
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.get(name)
    }

    pub fn repo(&self, name: &str) -> &Repo {
        &self.repositories[name]
    }
}

/// A `[jobs.NAME.retention]` or `copy-retention` table.
fn parse_retention(cx: &mut Ctx<'_>, r: &Spanned<RawRetention>) -> Retention {
    let rspan = r.span();
    let r = r.get_ref();
    let within = r.keep_within.as_ref().and_then(|w| {
        let span = crate::format::duration::parse_span(w.get_ref());
        if span.is_none() {
            cx.at(
                w.span(),
                format!(
                    "keep-within '{}' is not a duration like 30d or 1y6m",
                    w.get_ref()
                ),
            );
        }
        span
    });
    let count = |n: Option<u32>| n.map(|n| n as usize);
    let ret = Retention {
        policy: Policy {
            last: count(r.keep_last),
            hourly: count(r.keep_hourly),
            daily: count(r.keep_daily),
            weekly: count(r.keep_weekly),
            monthly: count(r.keep_monthly),
            yearly: count(r.keep_yearly),
            within,
            tags: r.keep_tag.clone(),
            at_most: count(r.keep_at_most),
        },
        prune: r.prune,
    };
    // A keep-within that did not parse was reported already.
    if ret.policy.keeps_nothing() && r.keep_within.is_none() {
        cx.at(
            rspan,
            "retention keeps nothing: give keep-last, keep-daily, ... or keep-within",
        );
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match parse(text, Path::new("c.toml"), "c.toml") {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1d12h"), Some(Duration::from_secs(129600)));
        assert_eq!(parse_duration("weekly"), Some(Duration::from_secs(604800)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = errs("[repositories.a]\nurl = \"/x\"\n\n[jobs.j]\nrepository = \"a\"\npaths = [\"/\"]\n[jobs.j.retention]\n    retension = 3\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("c.toml:8:5: unknown key 'retension'"),
            "{e:?}"
        );
    }

    #[test]
    fn semantic_errors_have_places() {
        let e = errs("[repositories.a]\nurl = \"/x\"\npassword = \"hunter2\"\n[jobs.j]\nrepository = \"b\"\npaths = [\"/\"]\nschedule = \"61 * * * *\"\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("c.toml:3:12: a password must not"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("c.toml:5:14: repository 'b' is not defined"),
            "{e:?}"
        );
        assert!(e[2].starts_with("c.toml:7:12: "), "{e:?}");
    }
}
