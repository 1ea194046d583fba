//! `dump SNAP PATH --archive tar|zip`: a file or a folder of a snapshot as a
//! tar or zip stream, written as it is read (no temporary file), entries
//! named by their path in the snapshot without the leading `/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeType};
use crate::repo::tree::{dump_file, walk_tree};
use crate::repo::IndexedRepository;

/// Writes `node` (found at `path` in the snapshot) and, for a folder,
/// everything below it as a tar archive to `out`. Returns the entries written.
pub fn dump_tar(
    repo: &IndexedRepository,
    node: &Node,
    path: &Path,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut entries = 0;
    append(repo, &mut tar, path, node)?;
    entries += 1;
    if let (NodeType::Dir, Some(sub)) = (node.kind, node.subtree) {
        walk_tree(repo, &sub, path, &mut |item| {
            append(repo, &mut tar, &item.path, &item.node)?;
            entries += 1;
            Ok(true)
        })?;
    }
    tar.finish().map_err(|e| Error::io("<stdout>", e))?;
    Ok(entries)
}

fn archive_name(path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    }
}

fn append(
    repo: &IndexedRepository,
    tar: &mut tar::Builder<&mut dyn Write>,
    path: &Path,
    node: &Node,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    let mut h = tar::Header::new_gnu();
    h.set_mode(node.mode);
    h.set_uid(node.uid as u64);
    h.set_gid(node.gid as u64);
    h.set_mtime(node.mtime_ns.max(0) as u64 / 1_000_000_000);
    if !node.user.is_empty() {
        let _ = h.set_username(&node.user);
    }
    if !node.group.is_empty() {
        let _ = h.set_groupname(&node.group);
    }
    let name = archive_name(path);
    match node.kind {
        NodeType::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(node.size);
            // The content streams through a pipe from a reader thread: the
            // archive never holds a whole file.
            let (mut reader, mut writer) = std::io::pipe().map_err(io)?;
            std::thread::scope(|s| -> Result<()> {
                let feeder = s.spawn(move || dump_file(repo, node, &mut writer));
                let appended = tar.append_data(&mut h, &name, &mut reader);
                drop(reader);
                let fed = feeder.join().expect("the dump thread does not panic");
                appended.map_err(io)?;
                let n = fed?;
                if n != node.size {
                    return Err(Error::corrupt(
                        format!("file {}", path.display()),
                        "its content is not as long as its size",
                    ));
                }
                Ok(())
            })
        }
        NodeType::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, &name, std::io::empty()).map_err(io)
        }
        NodeType::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = node.link_target().unwrap_or_default();
            tar.append_link(&mut h, &name, Path::new(&target))
                .map_err(io)
        }
        NodeType::Fifo | NodeType::Dev | NodeType::Chardev => {
            h.set_entry_type(match node.kind {
                NodeType::Fifo => tar::EntryType::Fifo,
                NodeType::Dev => tar::EntryType::Block,
                _ => tar::EntryType::Char,
            });
            h.set_size(0);
            let (major, minor) = (libc::major(node.rdev as _), libc::minor(node.rdev as _));
            let _ = h.set_device_major(major);
            let _ = h.set_device_minor(minor);
            tar.append_data(&mut h, &name, std::io::empty()).map_err(io)
        }
        // A socket has no place in an archive (tar cannot hold one either).
        NodeType::Socket => Ok(()),
    }
}

/// Writes `node` and, for a folder, everything below it as a zip archive to
/// `out`, which need not seek: each entry's sizes and CRC follow its data (a
/// data descriptor), so nothing is written twice. Files are deflated; ZIP64
/// where a file is 4 GiB or more. Special files (devices, fifos, sockets)
/// have no zip form and are left out. Returns the entries written.
pub fn dump_zip(
    repo: &IndexedRepository,
    node: &Node,
    path: &Path,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let mut entries = 0;
    append_zip(repo, &mut zip, path, node, &mut entries)?;
    if let (NodeType::Dir, Some(sub)) = (node.kind, node.subtree) {
        walk_tree(repo, &sub, path, &mut |item| {
            append_zip(repo, &mut zip, &item.path, &item.node, &mut entries)?;
            Ok(true)
        })?;
    }
    zip.finish().map_err(zip_error)?;
    Ok(entries)
}

fn zip_error(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => Error::io("<stdout>", e),
        other => Error::io("<stdout>", std::io::Error::other(other.to_string())),
    }
}

/// A node's mtime as a zip (DOS) time, clamped to what zip can hold
/// (1980–2107, even seconds).
fn zip_time(mtime_ns: i64) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(mtime_ns.div_euclid(1_000_000_000), 0)
        .unwrap_or_default()
        .naive_utc();
    zip::DateTime::from_date_and_time(
        t.year().clamp(1980, 2107) as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .unwrap_or_default()
}

fn append_zip<W: Write>(
    repo: &IndexedRepository,
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    path: &Path,
    node: &Node,
    entries: &mut u64,
) -> Result<()> {
    let name = archive_name(path).to_string_lossy().into_owned();
    let options = zip::write::SimpleFileOptions::default()
        .unix_permissions(node.mode & 0o7777)
        .last_modified_time(zip_time(node.mtime_ns));
    match node.kind {
        NodeType::File => {
            let options = options
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(node.size >= u32::MAX as u64);
            zip.start_file(name, options).map_err(zip_error)?;
            let n = dump_file(repo, node, zip)?;
            if n != node.size {
                return Err(Error::corrupt(
                    format!("file {}", path.display()),
                    "its content is not as long as its size",
                ));
            }
        }
        // As a zero-length entry named `DIR/`: the streaming writer's own
        // directory entries set the data-descriptor flag but write no
        // descriptor, which Info-ZIP's `unzip` rejects as overlapping.
        NodeType::Dir => {
            let options = options
                .compression_method(zip::CompressionMethod::Stored)
                .unix_permissions(0o040000 | (node.mode & 0o7777));
            let dir = if name == "." {
                name
            } else {
                format!("{name}/")
            };
            zip.start_file(dir, options).map_err(zip_error)?
        }
        NodeType::Symlink => {
            let target = node.link_target().unwrap_or_default();
            zip.add_symlink(name, target.to_string_lossy(), options)
                .map_err(zip_error)?
        }
        NodeType::Fifo | NodeType::Dev | NodeType::Chardev | NodeType::Socket => return Ok(()),
    }
    *entries += 1;
    Ok(())
}
