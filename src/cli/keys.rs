//! `init`, `key list|add|remove|passwd`, `unlock`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::format::blob::Padding;
use crate::format::crypto::KdfParams;
use crate::format::objects;
use crate::{InitOptions, Repository};

use super::events::{emit, Severity};
use super::output::{self, json as print_json, line};
use super::password;
use super::{usage, Global};

#[derive(Args)]
pub struct InitArgs {
    /// Copy chunker parameters and blob-ID key from this repository, so data dedups across both
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// Password file for the --from repository (else CAIRN_FROM_PASSWORD, else the same password)
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Storage option for the --from repository, KEY=VALUE (repeatable; `-o`
    /// applies to the repository being made)
    #[arg(long = "from-option", value_name = "KEY=VALUE")]
    from_options: Vec<String>,
    /// zstd level for new blobs, -7..=22 (0 = no compression; negative = faster)
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    compression: Option<i32>,
    /// Target pack size in MiB (1..=1024)
    #[arg(long, value_name = "MIB")]
    pack_size: Option<u32>,
    /// How blobs are padded to hide their sizes: bucket (default, at most 0.4%
    /// larger) or padme (at most 12% larger, leaks far less)
    #[arg(long, value_enum, value_name = "SCHEME")]
    padding: Option<PaddingArg>,
    /// The bucket keeps every object at least this long (S3 Object Lock default
    /// retention, Azure immutability, GCS retention policy), e.g. 30d or 1y:
    /// prune then never condemns a younger pack
    #[arg(long, value_name = "SPAN")]
    min_retention: Option<String>,
    #[command(flatten)]
    kdf: KdfArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PaddingArg {
    Bucket,
    Padme,
}

/// argon2id cost of a new key.
#[derive(Args)]
pub struct KdfArgs {
    /// argon2id memory for the new key, in MiB [default: 64; 8 to 1024]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(8..=1024))]
    kdf_memory: Option<u32>,
    /// argon2id passes for the new key [default: 3; 1 to 10]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10))]
    kdf_time: Option<u32>,
}

impl KdfArgs {
    /// `base` with what was given on the command line, or None when nothing was.
    fn over(&self, base: KdfParams) -> Option<KdfParams> {
        if self.kdf_memory.is_none() && self.kdf_time.is_none() {
            return None;
        }
        Some(KdfParams {
            m_cost_kib: self.kdf_memory.map_or(base.m_cost_kib, |m| m * 1024),
            t_cost: self.kdf_time.unwrap_or(base.t_cost),
            ..base
        })
    }
}

const PACK_SIZE_MIB: std::ops::RangeInclusive<u32> =
    objects::MIN_PACK_SIZE / MIB..=objects::MAX_PACK_SIZE / MIB;
const MIB: u32 = 1024 * 1024;

pub fn init(g: &Global, a: &InitArgs) -> Result<()> {
    // Option mistakes are usage errors, found before anything is created.
    let levels = objects::COMPRESSION_LEVELS;
    if let Some(c) = a.compression.filter(|c| !levels.contains(c)) {
        return Err(usage(format!(
            "--compression {c} is not a zstd level cairn uses: give {}..={} (0 = none)",
            levels.start(),
            levels.end()
        )));
    }
    if let Some(p) = a.pack_size.filter(|p| !PACK_SIZE_MIB.contains(p)) {
        return Err(usage(format!(
            "--pack-size {p}: the pack size must be {}..={} MiB",
            PACK_SIZE_MIB.start(),
            PACK_SIZE_MIB.end()
        )));
    }
    let min_retention = a
        .min_retention
        .as_deref()
        .map(parse_min_retention)
        .transpose()?;
    let backend = g.backend(true)?;
    let result = init_in(g, a, min_retention, &backend);
    if result.is_err() {
        // Leave no empty directory behind (only those this init created).
        backend.remove_created_dirs();
    }
    result
}

/// `--min-retention` in restic's `--keep-within` grammar (`m` is a month),
/// the way retention periods are usually given.
fn parse_min_retention(s: &str) -> Result<std::time::Duration> {
    let span = crate::format::duration::parse_span(s)
        .and_then(|d| d.to_std().ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            usage(format!(
                "--min-retention '{s}' is not a retention period like 30d, 6m or 1y"
            ))
        })?;
    if span.as_secs() > objects::MAX_MIN_RETENTION_SECS {
        return Err(usage(format!(
            "--min-retention '{s}' is longer than 100 years"
        )));
    }
    Ok(span)
}

fn init_in(
    g: &Global,
    a: &InitArgs,
    min_retention: Option<std::time::Duration>,
    backend: &crate::Backend,
) -> Result<()> {
    let backend = backend.clone();
    if Repository::exists(&backend)? {
        return Err(crate::Error::RepoExists(backend.location().to_string()).into());
    }
    let mut opts = InitOptions {
        compression: a.compression,
        pack_size: a.pack_size.map(|m| m.saturating_mul(1024 * 1024)),
        kdf: a.kdf.over(KdfParams::default()),
        padding: a.padding.map(|p| match p {
            PaddingArg::Bucket => Padding::Bucket,
            PaddingArg::Padme => Padding::Padme,
        }),
        min_retention,
        ..Default::default()
    };
    if let Some(from) = &a.from {
        let src_backend =
            crate::Backend::open(from, &super::parse_options(&a.from_options)?, false)?;
        let pw = password::other_password(&a.from_password_file, &None, "CAIRN_FROM_PASSWORD", g)?;
        let src = g.open_other(src_backend, pw.as_bytes())?;
        opts.chunker = Some(src.config().chunker);
        opts.blob_id_key = Some(src.config().blob_id_key);
    }
    let pw = password::new_repository_password(g)?;
    let repo = Repository::init(backend, pw.as_bytes(), opts)?;
    emit(g, "repository.initialized", Severity::Info, None, json!({}));
    if g.json {
        print_json(
            &json!({"message_type": "initialized", "id": repo.config().id, "repository": g.location()?}),
        );
    } else if !g.quiet {
        line(format!(
            "created cairn repository {} at {}",
            &repo.config().id[..10],
            g.location()?
        ));
        if let Some(secs) = repo.config().min_retention_secs {
            line(format!(
                "prune keeps every pack for at least {} after it is written (--min-retention)",
                output::span(secs)
            ));
        }
        line("");
        line("Please note that knowledge of your password is required to access");
        line("the repository. Losing your password means that your data is");
        line("irrecoverably lost.");
    }
    Ok(())
}

#[derive(Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// List keys (passwords)
    List,
    /// Add a password
    Add(NewPw),
    /// Remove a key by ID (as shown by `key list`)
    Remove {
        /// Key ID or unique prefix
        id: String,
    },
    /// Change the password in use
    Passwd(NewPw),
}

#[derive(Args)]
struct NewPw {
    /// Read the new password from this file (else CAIRN_NEW_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
}

pub fn key(g: &Global, a: &KeyArgs) -> Result<()> {
    let mut repo = g.open()?;
    // Key changes are rare and must not interleave: they are the commands that
    // still take an exclusive lock (backup, forget and prune take none).
    let _lock = match &a.cmd {
        KeyCmd::List => None,
        _ => Some(crate::repo::lock::acquire(&repo, true)?),
    };
    match &a.cmd {
        KeyCmd::List => {
            let keys = repo.list_keys()?;
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| {
                        json!({"id": id.to_hex(), "short_id": id.short(), "current": *id == repo.key_id(),
                               "username": k.username, "hostname": k.hostname, "created": k.created})
                    })
                    .collect();
                print_json(&json!(v));
            } else {
                line(format!(
                    " {:<10} {:<12} {:<20} {}",
                    "ID", "User", "Host", "Created"
                ));
                for (id, k) in &keys {
                    let cur = if *id == repo.key_id() { "*" } else { " " };
                    line(format!(
                        "{cur}{:<10} {:<12} {:<20} {}",
                        id.short(),
                        k.username,
                        k.hostname,
                        k.created
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S")
                    ));
                }
            }
        }
        KeyCmd::Add(n) => {
            let pw = password::new_key_password(&n.new_password_file)?;
            let id = repo.add_key(pw.as_bytes(), n.kdf.over(KdfParams::default()))?;
            emit(
                g,
                "key.added",
                Severity::Info,
                None,
                json!({"key": id.to_hex()}),
            );
            report(
                g,
                "added",
                &id.to_hex(),
                format!("saved new key {}", id.short()),
            );
        }
        KeyCmd::Remove { id } => {
            let removed = repo.remove_key(id)?;
            emit(
                g,
                "key.removed",
                Severity::Warning,
                None,
                json!({"key": removed.to_hex()}),
            );
            report(
                g,
                "removed",
                &removed.to_hex(),
                format!("removed key {}", removed.short()),
            );
        }
        KeyCmd::Passwd(n) => {
            let pw = password::new_key_password(&n.new_password_file)?;
            // The key keeps its cost unless new parameters are given.
            let kdf = n.kdf.over(repo.key_params());
            let id = repo.change_password(pw.as_bytes(), kdf)?;
            emit(
                g,
                "key.changed",
                Severity::Info,
                None,
                json!({"key": id.to_hex()}),
            );
            report(
                g,
                "changed",
                &id.to_hex(),
                format!(
                    "saved new key {}; the old password no longer works",
                    id.short()
                ),
            );
        }
    }
    Ok(())
}

fn report(g: &Global, what: &str, id: &str, text: String) {
    if g.json {
        print_json(&json!({"message_type": format!("key_{what}"), "id": id}));
    } else if !g.quiet {
        line(text);
    }
}

#[derive(Args)]
pub struct UnlockArgs {
    /// Remove all locks, even live ones (only when no other cairn runs)
    #[arg(long)]
    remove_all: bool,
}

pub fn unlock(g: &Global, a: &UnlockArgs) -> Result<()> {
    let repo = g.open()?;
    let n = crate::repo::lock::remove_locks(&repo, a.remove_all)?;
    emit(
        g,
        "repository.unlocked",
        Severity::Info,
        None,
        json!({"removed": n, "remove_all": a.remove_all}),
    );
    if g.json {
        print_json(&json!({"message_type": "unlocked", "removed": n}));
    } else if !g.quiet {
        line(format!(
            "removed {n} {}",
            if n == 1 { "lock" } else { "locks" }
        ));
    }
    Ok(())
}
