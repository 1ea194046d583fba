//! Read-only views: `snapshots`, `ls`, `diff`, `cat`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::format::id::{BlobId, IndexId, KeyId, SnapshotId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeType};
use crate::repo::tree::walk_tree;
use crate::repo::IndexedRepository;

use super::events;
use super::output::{self, line};
use super::{select_snapshot, usage, FilterArgs, Global};

pub fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> Value {
    let mut v = serde_json::to_value(s).expect("snapshot to JSON");
    v["id"] = json!(id.to_hex());
    v["short_id"] = json!(id.short());
    v
}

#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Group by host, paths and/or tags (e.g. host,paths); --json then gives
    /// one object per group, as restic
    #[arg(short = 'g', long, value_name = "FIELDS")]
    group_by: Option<String>,
    /// Only the N newest snapshots of each group (host and paths unless
    /// --group-by says otherwise)
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
}

/// Metrics every unfiltered listing knows: the snapshot count and each host's
/// latest snapshot's age.
fn snapshot_figures<'a>(snaps: impl Iterator<Item = &'a crate::format::snapshot::Snapshot>) {
    let mut count = 0;
    let mut latest: std::collections::BTreeMap<&str, chrono::DateTime<chrono::Utc>> =
        Default::default();
    for s in snaps {
        count += 1;
        let t = latest.entry(s.hostname.as_str()).or_insert(s.time);
        *t = (*t).max(s.time);
    }
    events::figure("cairn_snapshots", &[], count as f64);
    let now = chrono::Utc::now();
    for (host, t) in latest {
        let age = (now - t).num_seconds().max(0);
        events::figure(
            "cairn_latest_snapshot_age_seconds",
            &[("host", host)],
            age as f64,
        );
    }
}

pub fn snapshots(g: &Global, a: &SnapshotsArgs) -> Result<()> {
    let repo = g.open()?;
    let f = a.filter.filter();
    let snaps: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| f.matches(s))
        .collect();
    if a.filter.is_empty() {
        snapshot_figures(snaps.iter().map(|(_, s)| s));
    }
    if a.group_by.is_some() || a.latest.is_some() {
        return grouped_snapshots(g, a, snaps);
    }
    if g.json {
        output::json(&Value::Array(
            snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect(),
        ));
        return Ok(());
    }
    line(format!(
        "{:<8}  {:<19}  {:<15}  {:<15}  {}",
        "ID", "Time", "Host", "Tags", "Paths"
    ));
    line("-".repeat(80));
    for (id, s) in &snaps {
        let time = s
            .time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        let tags = s.tags.join(",");
        for (i, p) in s.paths.iter().enumerate() {
            if i == 0 {
                line(format!(
                    "{:<8}  {time}  {:<15}  {tags:<15}  {p}",
                    id.short(),
                    s.hostname
                ));
            } else {
                line(format!(
                    "{:<8}  {:<19}  {:<15}  {:<15}  {p}",
                    "", "", "", ""
                ));
            }
        }
    }
    line("-".repeat(80));
    line(format!("{} snapshots", snaps.len()));
    Ok(())
}

/// `snapshots --group-by/--latest`: a table per group, or restic's JSON
/// (`[{"group_key": {"hostname", "paths", "tags"}, "snapshots": [...]}]`;
/// with --latest alone, the plain list of what is kept).
fn grouped_snapshots(
    g: &Global,
    a: &SnapshotsArgs,
    snaps: Vec<(
        crate::format::id::SnapshotId,
        crate::format::snapshot::Snapshot,
    )>,
) -> Result<()> {
    use crate::ops::group::{group, GroupBy};
    let by = match &a.group_by {
        Some(s) => GroupBy::parse(s).map_err(usage)?,
        None => GroupBy::HOST_PATHS,
    };
    let groups = group(snaps, by, a.latest);
    if g.json {
        let doc = if a.group_by.is_some() {
            Value::Array(
                groups
                    .iter()
                    .map(|(k, v)| {
                        serde_json::json!({
                            "group_key": k,
                            "snapshots": v.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            )
        } else {
            let mut all: Vec<_> = groups.iter().flat_map(|(_, v)| v.iter()).collect();
            all.sort_by_key(|x| x.1.time);
            Value::Array(all.iter().map(|(id, s)| snapshot_json(id, s)).collect())
        };
        output::json(&doc);
        return Ok(());
    }
    let mut total = 0;
    for (k, v) in &groups {
        let mut what = Vec::new();
        if let Some(h) = &k.hostname {
            what.push(format!("host [{h}]"));
        }
        if let Some(p) = &k.paths {
            what.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &k.tags {
            what.push(format!("tags [{}]", t.join(", ")));
        }
        if a.group_by.is_some() {
            line(format!("snapshots for ({}):", what.join(", ")));
        }
        for (id, s) in v {
            line(format!(
                "{:<8}  {}  {:<15}  {:<15}  {}",
                id.short(),
                s.time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S"),
                s.hostname,
                s.tags.join(","),
                s.paths.join(", ")
            ));
        }
        total += v.len();
        if a.group_by.is_some() {
            line(String::new());
        }
    }
    line(format!("{total} snapshots"));
    Ok(())
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot ID, unique prefix, or "latest"
    snapshot: String,
    /// Only this directory (and its direct contents, unless --recursive)
    path: Option<String>,
    /// With a PATH: list everything below it
    #[arg(long)]
    recursive: bool,
    /// Long listing: type, mode, owner, size, time
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

fn type_char(k: NodeType) -> char {
    match k {
        NodeType::Dir => 'd',
        NodeType::Symlink => 'l',
        NodeType::Dev => 'b',
        NodeType::Chardev => 'c',
        NodeType::Fifo => 'p',
        NodeType::Socket => 's',
        NodeType::File => '-',
    }
}

fn mode_string(n: &Node) -> String {
    let mut s = String::new();
    s.push(type_char(n.kind));
    for shift in [6, 3, 0] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn node_time(n: &Node) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_nanos(n.mtime_ns)
}

fn node_json(path: &Path, n: &Node) -> Value {
    json!({
        "struct_type": "node",
        "name": n.name, "type": n.kind, "path": path.display().to_string(),
        "uid": n.uid, "gid": n.gid, "size": n.size, "mode": n.mode,
        "mtime": node_time(n), "inode": n.inode, "links": n.links,
    })
}

pub fn ls(g: &Global, a: &LsArgs) -> Result<()> {
    let repo = g.open_indexed()?;
    let (id, snap) = select_snapshot(&repo, &a.snapshot, &a.filter)?;
    if g.json {
        output::json(
            &json!({"struct_type": "snapshot", "id": id.to_hex(), "short_id": id.short(),
            "time": snap.time, "paths": snap.paths, "hostname": snap.hostname, "tree": snap.tree}),
        );
    }
    let (root, base) = match a
        .path
        .as_deref()
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
    {
        None => (snap.tree, PathBuf::from("/")),
        Some(p) => {
            let node = crate::repo::tree::find_node(&repo, &snap.tree, p)?;
            let abs = PathBuf::from("/").join(p.trim_start_matches('/'));
            print_node(g, a.long, &abs, &node);
            match node.subtree.filter(|_| node.kind == NodeType::Dir) {
                Some(sub) => (sub, abs),
                None => return Ok(()),
            }
        }
    };
    let recursive = a.path.is_none() || a.recursive;
    walk_tree(&repo, &root, &base, &mut |item| {
        print_node(g, a.long, &item.path, &item.node);
        Ok(recursive)
    })?;
    Ok(())
}

fn print_node(g: &Global, long: bool, path: &Path, n: &Node) {
    if g.json {
        output::json(&node_json(path, n));
    } else if long {
        let t = node_time(n)
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        line(format!(
            "{} {:>6} {:>6} {:>12} {t} {}",
            mode_string(n),
            n.uid,
            n.gid,
            n.size,
            path.display()
        ));
    } else {
        line(path.display());
    }
}

#[derive(Args)]
pub struct DiffArgs {
    snapshot1: String,
    snapshot2: String,
}

/// Flattens a snapshot into path → node (content compared by blob list).
fn flatten(repo: &IndexedRepository, root: &BlobId) -> Result<BTreeMap<PathBuf, Node>> {
    let mut out = BTreeMap::new();
    walk_tree(repo, root, Path::new("/"), &mut |item| {
        out.insert(item.path, item.node);
        Ok(true)
    })?;
    Ok(out)
}

fn same_content(a: &Node, b: &Node) -> bool {
    a.kind == b.kind && a.content == b.content && a.target == b.target && a.size == b.size
}

pub fn diff(g: &Global, a: &DiffArgs) -> Result<()> {
    let repo = g.open_indexed()?;
    let none = FilterArgs::default();
    let (id1, s1) = select_snapshot(&repo, &a.snapshot1, &none)?;
    let (id2, s2) = select_snapshot(&repo, &a.snapshot2, &none)?;
    let (t1, t2) = (flatten(&repo, &s1.tree)?, flatten(&repo, &s2.tree)?);
    let (mut added, mut removed, mut changed) = (0u64, 0u64, 0u64);
    let (mut bytes_added, mut bytes_removed) = (0u64, 0u64);
    if !g.json {
        line(format!(
            "comparing snapshot {} to {}:",
            id1.short(),
            id2.short()
        ));
        line("");
    }
    let emit = |modifier: &str, path: &Path, size: u64| {
        if g.json {
            output::json(
                &json!({"message_type": "change", "path": path.display().to_string(), "modifier": modifier, "size": size}),
            );
        } else {
            line(format!("{modifier:<4} {}", path.display()));
        }
    };
    let mut all: Vec<&PathBuf> = t1.keys().chain(t2.keys()).collect();
    all.sort();
    all.dedup();
    for p in all {
        match (t1.get(p), t2.get(p)) {
            (None, Some(n)) => {
                added += 1;
                bytes_added += n.size;
                emit("+", p, n.size);
            }
            (Some(o), None) => {
                removed += 1;
                bytes_removed += o.size;
                emit("-", p, o.size);
            }
            (Some(o), Some(n)) if n.kind != NodeType::Dir && !same_content(o, n) => {
                changed += 1;
                bytes_added += n.size;
                bytes_removed += o.size;
                emit("M", p, n.size);
            }
            _ => {}
        }
    }
    if g.json {
        output::json(
            &json!({"message_type": "statistics", "source_snapshot": id1.to_hex(), "target_snapshot": id2.to_hex(),
            "added": added, "removed": removed, "changed": changed, "bytes_added": bytes_added, "bytes_removed": bytes_removed}),
        );
    } else {
        line("");
        line(format!(
            "Paths: {added} added, {removed} removed, {changed} changed"
        ));
        line(format!("Added:   {}", output::size(bytes_added)));
        line(format!("Removed: {}", output::size(bytes_removed)));
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum CatKind {
    Config,
    Snapshot,
    Tree,
    Blob,
    Index,
    Key,
}

#[derive(Args)]
pub struct CatArgs {
    #[arg(value_enum)]
    kind: CatKind,
    /// Object ID (snapshot: also a prefix or "latest")
    id: Option<String>,
    /// With `config`: also print key material (blob-ID key, chunker seed)
    #[arg(long)]
    show_secrets: bool,
}

/// Replaces key material in `cat config` output: every field whose name says
/// it is a key, seed or secret (`blob_id_key`, `chunker.seed`, ...), at any
/// depth, so fields added later are covered too.
fn hide_secrets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let k = k.to_lowercase();
                if k.contains("key") || k.contains("seed") || k.contains("secret") {
                    *val = Value::String("<hidden: use --show-secrets>".into());
                } else {
                    hide_secrets(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(hide_secrets),
        _ => {}
    }
}

fn need_id(a: &CatArgs) -> Result<&str> {
    a.id.as_deref()
        .ok_or_else(|| usage("this object type needs an ID"))
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| usage(format!("'{s}' is not a 64-digit hexadecimal ID")))
}

pub fn cat(g: &Global, a: &CatArgs) -> Result<()> {
    let mut repo = g.open()?;
    match a.kind {
        CatKind::Config => {
            let mut v = serde_json::to_value(repo.config())?;
            if !a.show_secrets {
                hide_secrets(&mut v);
            }
            output::pretty_json(&v)
        }
        CatKind::Snapshot => {
            let (id, s) = select_snapshot(&repo, need_id(a)?, &FilterArgs::default())?;
            output::pretty_json(&snapshot_json(&id, &s));
        }
        CatKind::Tree => {
            let id: BlobId = parse(need_id(a)?)?;
            repo.load_index()?;
            output::pretty_json(&serde_json::to_value(repo.load_tree(&id)?)?);
        }
        CatKind::Blob => {
            let id: BlobId = parse(need_id(a)?)?;
            repo.load_index()?;
            let data = repo.read_blob(&id, None)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)
                .and_then(|_| out.flush())
                .map_err(|e| anyhow!("writing to stdout: {e}"))?;
        }
        CatKind::Index => {
            let id: IndexId = parse(need_id(a)?)?;
            let packs = repo.read_index_object(&format!("{}/{id}", crate::repo::INDEX_DIR))?;
            let v: Vec<Value> = packs
                .iter()
                .map(|p| {
                    json!({"id": p.id, "type": p.kind, "blobs": p.blobs.iter().map(|b| json!({
                        "id": b.id, "offset": b.offset, "length": b.length, "raw_length": b.raw_length})).collect::<Vec<_>>()})
                })
                .collect();
            output::pretty_json(&json!({"packs": v}));
        }
        CatKind::Key => {
            let id: KeyId = parse(need_id(a)?)?;
            let (_, kf) = repo
                .list_keys()?
                .into_iter()
                .find(|(k, _)| *k == id)
                .ok_or_else(|| anyhow!("no key {id}"))?;
            output::pretty_json(&serde_json::to_value(kf)?);
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct StatsArgs {
    /// restic's modes: restore-size (what restoring every selected snapshot
    /// writes), raw-data (the distinct data stored), blobs-per-file (files
    /// with distinct contents); default: all figures
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn stats(g: &Global, a: &StatsArgs) -> Result<()> {
    if let Some(m) = a.mode.as_deref() {
        if !["restore-size", "raw-data", "blobs-per-file"].contains(&m) {
            return Err(usage(format!(
                "--mode {m}: the modes are restore-size, raw-data, blobs-per-file"
            )));
        }
    }
    let repo = g.open_indexed()?;
    let st = crate::ops::stats::stats(&repo, &a.filter.filter())?;
    if a.filter.is_empty() {
        events::figure("cairn_snapshots", &[], st.snapshots_count as f64);
        events::figure("cairn_repository_size_bytes", &[], st.stored_size as f64);
    }
    if let Some(mode) = &a.mode {
        let (doc, text) = match mode.as_str() {
            "restore-size" => (
                json!({"total_size": st.total_size, "total_file_count": st.total_file_count,
                       "snapshots_count": st.snapshots_count}),
                vec![
                    format!("Total File Count:   {}", st.total_file_count),
                    format!("Total Size:         {}", output::size(st.total_size)),
                ],
            ),
            "raw-data" => (
                json!({"total_size": st.data_stored_size, "total_uncompressed_size": st.raw_data_size,
                       "total_blob_count": st.total_blob_count, "compression_ratio": st.compression_ratio,
                       "snapshots_count": st.snapshots_count}),
                vec![
                    format!("Total Blob Count:   {}", st.total_blob_count),
                    format!(
                        "Total Uncompressed Size: {}",
                        output::size(st.raw_data_size)
                    ),
                    format!("Total Size:         {}", output::size(st.data_stored_size)),
                    format!("Compression Ratio:  {:.2}x", st.compression_ratio),
                ],
            ),
            "blobs-per-file" => (
                json!({"total_size": st.unique_file_size, "total_file_count": st.unique_file_count,
                       "total_blob_count": st.total_blob_count, "snapshots_count": st.snapshots_count}),
                vec![
                    format!("Total Blob Count:   {}", st.total_blob_count),
                    format!("Total File Count:   {}", st.unique_file_count),
                    format!("Total Size:         {}", output::size(st.unique_file_size)),
                ],
            ),
            other => {
                return Err(usage(format!(
                    "--mode {other}: the modes are restore-size, raw-data, blobs-per-file"
                )))
            }
        };
        if g.json {
            output::json(&doc);
        } else {
            line(format!("Stats in {mode} mode:"));
            line(format!("     Snapshots processed:  {}", st.snapshots_count));
            for l in text {
                line(format!("  {l}"));
            }
        }
        return Ok(());
    }
    if g.json {
        output::json(&serde_json::to_value(&st)?);
        return Ok(());
    }
    line(format!("Snapshots:          {}", st.snapshots_count));
    line(format!("Files (all snaps):  {}", st.total_file_count));
    line(format!(
        "Logical size:       {}",
        output::size(st.total_size)
    ));
    line(format!(
        "Unique data:        {} in {} blobs",
        output::size(st.raw_data_size),
        st.total_blob_count
    ));
    line(format!(
        "Stored size:        {} in {} packs",
        output::size(st.stored_size),
        st.pack_count
    ));
    line(format!("Dedup ratio:        {:.2}x", st.dedup_ratio));
    line(format!("Compression ratio:  {:.2}x", st.compression_ratio));
    Ok(())
}
