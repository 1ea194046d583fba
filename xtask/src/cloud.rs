//! `cargo xtask cloud`: the kernel corpus backed up to S3 (a local moto
//! server), cairn and restic side by side: wall time, peak RSS and the requests
//! each step sent, counted the same way for both from the server's request log
//! (cairn's own count from `backup --json` is shown beside it as a check).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{self, make_lanes, measure_step, Lane, Output, RunLock};
use crate::corpus::{self, human_bytes, Kind, STDIN_NAME};
use crate::measure::{self, Invocation};
use crate::report::{Sample, Step};
use crate::tools::{Ctx, Op, Tool};
use crate::{cache_dir, Opts};

const REGION: &str = "us-east-1";
const KEY: &str = "test";

pub fn run(o: &Opts) -> Result<()> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let _lock = RunLock::take(&cache)?;
    let mut o = o.clone();
    o.corpora = vec![Kind::Kernel];
    let wanted = o
        .tools
        .clone()
        .unwrap_or_else(|| vec!["cairn".into(), "restic".into()]);
    for t in &wanted {
        if t != "cairn" && t != "restic" {
            eprintln!("xtask: {t} is left out: only cairn and restic take an S3 URL without a config file");
        }
    }
    o.tools = Some(
        wanted
            .into_iter()
            .filter(|t| t == "cairn" || t == "restic")
            .collect(),
    );
    let tools = bench::detect_tools(&o)?;
    if tools.is_empty() {
        bail!("no tool to measure");
    }
    let c = corpus::prepare_all(&o)?.remove(0);
    let drops = o.drop_caches && measure::drop_caches();
    let work = cache.join("cloud-work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    c.setup_working_copy(&work)?;
    let source = c.source(&work);
    let moto = Moto::start(&work.join("moto.log"))?;
    eprintln!("xtask: moto_server on 127.0.0.1:{}", moto.port);
    let row = format!("{} → S3 (moto)", c.name);
    let header = header(&o, &tools, &c, drops);
    eprintln!("{header}");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    let results = cache.join("results");
    std::fs::create_dir_all(&results)?;
    let mut out = Output {
        json_path: results.join(format!("cloud-{}.json", bench::now_utc().replace(':', ""))),
        header,
        rows: vec![row.clone()],
        names,
        meta: json!({
            "date": bench::now_utc(),
            "machine": bench::machine(),
            "tools": tools.iter().map(|t| json!({"name": t.name, "version": t.version, "path": t.bin})).collect::<Vec<_>>(),
            "corpus": {"name": c.name, "description": c.description, "files": c.files, "bytes": c.bytes},
            "page_cache_dropped": drops,
        }),
    };

    let mut lanes = make_lanes(&tools, &work.join("lanes"), 0)?;
    for l in &lanes {
        moto.make_bucket(&bucket(l.tool, false))?;
        moto.make_bucket(&bucket(l.tool, true))?;
    }
    let mut samples: Vec<Sample> = Vec::new();
    let mut requests: Vec<Requests> = Vec::new();
    let steps = [
        (Step::Init, Op::Init, 1u8),
        (Step::First, Op::Backup, 1),
        (Step::Unchanged, Op::Backup, 1),
        (Step::Changed, Op::Backup, 2),
    ];
    c.set_generation(&work, 1)?;
    for (step, op, generation) in steps {
        c.set_generation(&work, generation)?;
        for l in lanes.iter_mut().filter(|l| l.alive) {
            let url = moto.url(l.tool, false);
            let url = PathBuf::from(url);
            let ctx = ctx(l, &url, Some(&source), None);
            let inv = moto.invocation(l.tool, op, &ctx);
            let mark = moto.log_len();
            let s = measure_step(&o, drops, 0, &row, step, l, &inv)?;
            let counts = moto.counts_since(mark);
            let own = (l.tool.name == "cairn" && op == Op::Backup)
                .then(|| own_counts(&l.logs, step))
                .flatten();
            if !s.ok && matches!(step, Step::Init | Step::First) {
                l.alive = false;
            }
            samples.push(s);
            requests.push(Requests {
                step,
                tool: l.tool.name.into(),
                counts,
                own,
            });
        }
    }
    // Copy: a local repository holding the changed generation, to S3.
    for l in lanes.iter_mut() {
        if !l.tool.supports(Op::Copy) {
            continue;
        }
        let dest = PathBuf::from(moto.url(l.tool, true));
        let local = ctx(l, &l.repo, Some(&source), Some(&dest));
        let timeout = Duration::from_secs(o.timeout_secs);
        let mut setup_ok = true;
        for (what, op) in [
            ("init", Op::Init),
            ("backup", Op::Backup),
            ("init --from", Op::InitFrom),
        ] {
            let inv = moto.invocation(l.tool, op, &local);
            let m = measure::run(&inv, &l.logs.join(format!("copy-setup-{op:?}")), timeout)?;
            if !l.tool.succeeded(m.code) {
                eprintln!(
                    "xtask:   {}: copy set-up ({what}) failed: {}",
                    l.tool.name,
                    m.output_tail(3).replace('\n', " | ")
                );
                setup_ok = false;
                break;
            }
        }
        if !setup_ok {
            continue;
        }
        let inv = moto.invocation(l.tool, Op::Copy, &local);
        let mark = moto.log_len();
        let s = measure_step(&o, drops, 0, &row, Step::Copy, l, &inv)?;
        let counts = moto.counts_since(mark);
        samples.push(s);
        requests.push(Requests {
            step: Step::Copy,
            tool: l.tool.name.into(),
            counts,
            own: None,
        });
    }
    drop(lanes);
    drop(moto);
    let (md, js) = requests_table(&requests, c.bytes);
    out.meta["requests"] = js;
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let text = out.write(&samples, &[], &md, true)?;
    println!("{text}");
    eprintln!(
        "xtask: results written to {} (and .md)",
        out.json_path.display()
    );
    Ok(())
}

fn ctx<'a>(
    l: &'a Lane,
    repo: &'a Path,
    source: Option<&'a Path>,
    peer: Option<&'a Path>,
) -> Ctx<'a> {
    Ctx {
        repo,
        home: &l.home,
        source,
        stdin_file: None,
        stdin_name: STDIN_NAME,
        archive: "s3",
        restore_archive: "s3",
        restore_dir: &l.restore,
        peer,
    }
}

fn bucket(tool: &Tool, copy: bool) -> String {
    format!("bench-{}{}", tool.name, if copy { "-copy" } else { "" })
}

/// The requests one step sent.
struct Requests {
    step: Step,
    tool: String,
    /// Per kind (PUT, GET, LIST, HEAD, DELETE, POST), from the server's log.
    counts: BTreeMap<&'static str, u64>,
    /// cairn's own `backup --json` "requests" figures.
    own: Option<Value>,
}

/// The "requests" object of a cairn `backup --json` summary in its stdout log.
fn own_counts(logs: &Path, step: Step) -> Option<Value> {
    let path = logs
        .join(format!("0-{step:?}").to_lowercase())
        .with_extension("stdout");
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("requests").cloned())
        .or_else(|| {
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("requests").cloned())
        })
}

/// The kind of one request line of the server log, e.g.
/// `127.0.0.1 - - [date] "GET /bucket?list-type=2&prefix=x HTTP/1.1" 200 -`.
fn classify(line: &str) -> Option<&'static str> {
    let rest = &line[line.find('"')? + 1..];
    let mut parts = rest.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let bucket_only = path.trim_matches('/').split('/').count() <= 1;
    Some(match method {
        "GET" if query.contains("location") => "other",
        "GET" if query.contains("list-type") || query.contains("prefix=") || bucket_only => "LIST",
        "GET" => "GET",
        "PUT" => "PUT",
        "HEAD" => "HEAD",
        "DELETE" => "DELETE",
        "POST" => "POST",
        _ => "other",
    })
}

const KINDS: [&str; 7] = ["PUT", "GET", "LIST", "HEAD", "DELETE", "POST", "other"];

fn requests_table(reqs: &[Requests], source_bytes: u64) -> (String, Value) {
    let gb = source_bytes as f64 / 1e9;
    let mut md = format!(
        "Requests per step, counted from the moto server's request log (one line a request, the same count for \
         every tool); per GB = per GB of the source tree ({}); cairn's own count is the `requests` object of its \
         `backup --json` summary.\n\n| step | tool | requests | PUT / GET / LIST / HEAD / DELETE / POST | per GB | cairn's own count |\n\
         |---|---|---:|---|---:|---|\n",
        human_bytes(source_bytes)
    );
    let mut js = Vec::new();
    for r in reqs {
        let total: u64 = r.counts.values().sum();
        let n = |k: &str| r.counts.get(k).copied().unwrap_or(0);
        let own = match &r.own {
            Some(v) => {
                let g = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
                format!(
                    "{} ({} / {} / {} / {} / {}), {} up",
                    g("put") + g("get") + g("list") + g("head") + g("delete"),
                    g("put"),
                    g("get"),
                    g("list"),
                    g("head"),
                    g("delete"),
                    human_bytes(g("bytes_up"))
                )
            }
            None => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {total} | {} / {} / {} / {} / {} / {}{} | {:.0} | {own} |",
            r.step.label(),
            r.tool,
            n("PUT"),
            n("GET"),
            n("LIST"),
            n("HEAD"),
            n("DELETE"),
            n("POST"),
            if n("other") > 0 {
                format!(" (+{} other)", n("other"))
            } else {
                String::new()
            },
            total as f64 / gb
        );
        js.push(json!({
            "step": r.step.label(), "tool": r.tool, "total": total,
            "by_kind": KINDS.iter().map(|k| (k.to_string(), json!(n(k)))).collect::<serde_json::Map<_, _>>(),
            "per_gb_of_source": total as f64 / gb, "own_count": r.own,
        }));
    }
    (md, Value::Array(js))
}

// ---- the S3 server ----------------------------------------------------------------

/// A moto S3 server on a free port, its request log in a file; killed on drop.
pub(crate) struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub(crate) fn start(log: &Path) -> Result<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let f = std::fs::File::create(log)?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(f.try_clone()?))
            .stderr(Stdio::from(f))
            .spawn()
            .context(
                "starting moto_server (pip install 'moto[server]' or 'moto[s3]' flask flask-cors)",
            )?;
        let moto = Moto {
            child,
            port,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("moto_server did not start listening");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    pub(crate) fn make_bucket(&self, name: &str) -> Result<()> {
        let mut last = String::new();
        for _ in 0..100 {
            let resp = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
                write!(s, "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port)?;
                let mut r = String::new();
                s.read_to_string(&mut r)?;
                Ok(r)
            })();
            match resp {
                Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") => {
                    return Ok(())
                }
                Ok(r) => last = r.lines().next().unwrap_or("").to_string(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("creating bucket {name} failed: {last}")
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The repository URL of a tool's bucket.
    fn url(&self, tool: &Tool, copy: bool) -> String {
        let b = bucket(tool, copy);
        match tool.name {
            "restic" => format!("s3:{}/{b}/repo", self.endpoint()),
            _ => format!("s3://{b}/repo"),
        }
    }

    pub(crate) fn options(&self) -> Vec<String> {
        [
            format!("aws_endpoint={}", self.endpoint()),
            "aws_allow_http=true".into(),
            format!("aws_access_key_id={KEY}"),
            format!("aws_secret_access_key={KEY}"),
            format!("aws_region={REGION}"),
        ]
        .into()
    }

    /// A tool's command for an S3 repository: restic reads the credentials
    /// from the environment; cairn gets `-o` options for the repository it
    /// opens with `-r` (`--to-option` for a copy's destination), and `--json`
    /// on backups for its own request count.
    fn invocation(&self, tool: &Tool, op: Op, ctx: &Ctx) -> Invocation {
        let mut inv = tool.invocation(op, ctx);
        inv.env.push(("AWS_ACCESS_KEY_ID".into(), KEY.into()));
        inv.env.push(("AWS_SECRET_ACCESS_KEY".into(), KEY.into()));
        inv.env.push(("AWS_DEFAULT_REGION".into(), REGION.into()));
        if tool.name == "cairn" {
            let s3_is_r = matches!(op, Op::InitFrom)
                || (op != Op::Copy && ctx.repo.to_string_lossy().starts_with("s3://"));
            for kv in self.options() {
                if op == Op::Copy {
                    inv.argv.push("--to-option".into());
                    inv.argv.push(kv.into());
                } else if s3_is_r {
                    inv.argv.push("-o".into());
                    inv.argv.push(kv.into());
                }
            }
            if op == Op::Backup && s3_is_r {
                inv.argv.push("--json".into());
            }
        }
        inv
    }

    fn log_len(&self) -> u64 {
        // The server logs a request once it has answered it: let it catch up.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Requests logged since `mark` (a log length), by kind.
    fn counts_since(&self, mark: u64) -> BTreeMap<&'static str, u64> {
        let end = self.log_len();
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            use std::io::{Seek, SeekFrom};
            let _ = f.seek(SeekFrom::Start(mark));
            let _ = f.take(end - mark).read_to_end(&mut text);
        }
        let mut counts = BTreeMap::new();
        for line in String::from_utf8_lossy(&text).lines() {
            if !line.contains("\" ") || !line.contains(" HTTP/") {
                continue;
            }
            if let Some(k) = classify(line) {
                *counts.entry(k).or_insert(0) += 1;
            }
        }
        counts
    }
}

fn header(o: &Opts, tools: &[Tool], c: &corpus::Corpus, drops: bool) -> String {
    let m = bench::machine();
    let mut h = String::new();
    h.push_str("### cargo xtask cloud\n\n");
    let _ = writeln!(h, "- date: {}", bench::now_utc());
    let _ = writeln!(
        h,
        "- machine: {} CPUs ({}), Linux {}; S3 = a local moto_server (in-memory, Python, one process): \
         absolute times are moto's as much as the tools'",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        h,
        "- tools: {}",
        tools
            .iter()
            .map(|t| t.version.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(h, "- corpus {}: {}", c.name, c.description);
    let _ = writeln!(
        h,
        "- steps: init, first backup, unchanged re-backup, changed backup, each to the tool's own bucket; then \
         copy: a local repository holding the changed generation copied to a second bucket initialised with its \
         chunker parameters (cairn `init --from` + `copy --to s3://…`, restic `init --copy-chunker-params` + \
         `copy --from-repo`); page cache dropped before every command: {}",
        if drops { "yes" } else { "no" }
    );
    let mut cmd = "cargo xtask cloud".to_string();
    if o.quick {
        cmd.push_str(" --quick");
    }
    if let Some(t) = &o.tools {
        let _ = write!(cmd, " --tools {}", t.join(","));
    }
    let _ = writeln!(h, "- reproduce: `{cmd}`");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_classified() {
        let l =
            |req: &str| format!("127.0.0.1 - - [29/Nov/2026 23:13:50] \"{req} HTTP/1.1\" 200 -");
        assert_eq!(classify(&l("PUT /b/repo/data/ab")), Some("PUT"));
        assert_eq!(
            classify(&l("GET /b?list-type=2&prefix=repo/")),
            Some("LIST")
        );
        assert_eq!(classify(&l("GET /b/?location=")), Some("other"));
        assert_eq!(classify(&l("GET /b/")), Some("LIST"));
        assert_eq!(classify(&l("GET /b/repo/config")), Some("GET"));
        assert_eq!(classify(&l("HEAD /b/repo/config")), Some("HEAD"));
        assert_eq!(classify(&l("POST /b/repo/x?uploads")), Some("POST"));
        assert_eq!(classify("Press CTRL+C to quit"), None);
    }
}
