//! Directory listings. A tree is a blob holding JSON `{"nodes": [...]}`, nodes
//! sorted by name; a directory node names its subtree's blob.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

use crate::format::id::BlobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    File,
    Dir,
    Symlink,
    Dev,
    Chardev,
    Fifo,
    Socket,
}

/// One chunk of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    pub id: BlobId,
    /// Plaintext length of the chunk.
    pub size: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A file, directory, link or special file, with the metadata restore needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name, when it is valid UTF-8; otherwise its bytes in `name_hex`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: NodeType,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    /// Link count at backup time; >1 lets restore re-create hard links.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    /// Device number of a block/char device.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
}

/// A name as stored: UTF-8 text, or a lossy display form plus the exact bytes.
pub fn encode_name(name: &OsStr) -> (String, Option<String>) {
    match name.to_str() {
        Some(s) => (s.to_string(), None),
        None => (
            name.to_string_lossy().into_owned(),
            Some(hex::encode(name.as_bytes())),
        ),
    }
}

fn decode_name(text: &str, hex_form: &Option<String>) -> OsString {
    match hex_form.as_deref().and_then(|h| hex::decode(h).ok()) {
        Some(bytes) => OsString::from_vec(bytes),
        None => OsString::from(text),
    }
}

impl Node {
    /// A node with a UTF-8 name, the given type and permission bits, and
    /// every other field empty or zero (owner root, epoch times, no content):
    /// the base that callers building trees by hand fill in.
    pub fn new(name: impl Into<String>, kind: NodeType, mode: u32) -> Node {
        Node {
            name: name.into(),
            name_hex: None,
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            target_hex: None,
            rdev: 0,
        }
    }

    pub fn os_name(&self) -> OsString {
        decode_name(&self.name, &self.name_hex)
    }

    pub fn link_target(&self) -> Option<OsString> {
        self.target
            .as_ref()
            .map(|t| decode_name(t, &self.target_hex))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed tree: {0}")]
pub struct TreeError(String);

impl Tree {
    /// Canonical bytes: nodes sorted by raw name, so equal directories give equal
    /// blobs (and dedup).
    pub fn to_bytes(&mut self) -> Vec<u8> {
        self.nodes
            .sort_by(|a, b| a.os_name().as_bytes().cmp(b.os_name().as_bytes()));
        serde_json::to_vec(self).expect("serializing a tree")
    }

    pub fn from_bytes(b: &[u8]) -> Result<Tree, TreeError> {
        let t: Tree = serde_json::from_slice(b).map_err(|e| TreeError(e.to_string()))?;
        for n in &t.nodes {
            let name = n.os_name();
            if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
                return Err(TreeError(format!("unsafe node name {:?}", n.name)));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            mtime_ns: 1,
            ctime_ns: 1,
            ..Node::new(name, NodeType::File, 0o644)
        }
    }

    #[test]
    fn canonical_order_and_round_trip() {
        let mut a = Tree {
            nodes: vec![node("b"), node("a")],
        };
        let mut b = Tree {
            nodes: vec![node("a"), node("b")],
        };
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(Tree::from_bytes(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn non_utf8_names_survive() {
        let raw = OsStr::from_bytes(b"caf\xe9");
        let (text, hex) = encode_name(raw);
        let mut n = node(&text);
        n.name_hex = hex;
        assert_eq!(n.os_name(), raw);
    }

    #[test]
    fn path_traversal_names_rejected() {
        for bad in ["..", "a/b", ""] {
            let mut t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(Tree::from_bytes(&t.to_bytes()).is_err(), "{bad}");
        }
    }
}
