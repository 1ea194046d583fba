//! PostgreSQL write-ahead log names, positions and segment headers, as
//! PostgreSQL defines them (bytes in, values out): what `wal-push` checks
//! before archiving a file and what `pitr` plans recovery from.

use serde::{Deserialize, Serialize};

/// A WAL position, `X/Y` in PostgreSQL's notation (two hex halves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(Lsn(hi << 32 | lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not an LSN")))
    }
}

/// The default segment size (fixed at initdb; 16 MiB unless chosen otherwise).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// What a file PostgreSQL archives is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number in two
    /// halves (each `YYYYYYYY` counts segments within a 4 GiB "log").
    Segment { timeline: u32, segment: u64 },
    /// `TTTTTTTT.history`: how timeline T branched off its parent.
    History { timeline: u32 },
    /// `<segment>.<start offset>.backup`: a base backup's label.
    BackupLabel { timeline: u32, segment: u64 },
    /// `<segment>.partial`: the last, incomplete segment of a timeline that
    /// ended at a promotion; never replayed by recovery on its own.
    Partial { timeline: u32, segment: u64 },
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// A segment's number from its name's last 16 digits, for a segment size.
fn segment_number(log: u32, seg: u32, segment_size: u64) -> u64 {
    (log as u64) * (0x1_0000_0000 / segment_size) + seg as u64
}

impl WalFile {
    /// Parses an archived file's name (16 MiB segments assumed for the
    /// numbering; only ordering and adjacency depend on it).
    pub fn parse(name: &str) -> Option<WalFile> {
        Self::parse_sized(name, DEFAULT_SEGMENT_SIZE)
    }

    pub fn parse_sized(name: &str, segment_size: u64) -> Option<WalFile> {
        let seg = |s: &str| -> Option<(u32, u64)> {
            if s.len() != 24 {
                return None;
            }
            let (t, l, g) = (hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?);
            Some((t, segment_number(l, g, segment_size)))
        };
        if let Some(t) = name.strip_suffix(".history") {
            return Some(WalFile::History { timeline: hex8(t)? });
        }
        if let Some(s) = name.strip_suffix(".partial") {
            let (timeline, segment) = seg(s)?;
            return Some(WalFile::Partial { timeline, segment });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (s, offset) = rest.split_once('.')?;
            hex8(offset)?;
            let (timeline, segment) = seg(s)?;
            return Some(WalFile::BackupLabel { timeline, segment });
        }
        let (timeline, segment) = seg(name)?;
        Some(WalFile::Segment { timeline, segment })
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::History { timeline }
            | WalFile::BackupLabel { timeline, .. }
            | WalFile::Partial { timeline, .. } => timeline,
        }
    }
}

/// A segment's file name.
pub fn segment_name(timeline: u32, segment: u64, segment_size: u64) -> String {
    let per_log = 0x1_0000_0000 / segment_size;
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segment / per_log,
        segment % per_log
    )
}

/// The segment that holds `lsn`.
pub fn segment_of(lsn: Lsn, segment_size: u64) -> u64 {
    lsn.0 / segment_size
}

/// The WAL files one `wal-push` snapshot holds: its `wal` record
/// (repo-format.md §10, "WAL archive records").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalArchive {
    /// The cluster's system identifier (decimal), as its segments' headers say.
    pub system_identifier: String,
    /// Bytes a segment (fixed at initdb).
    pub segment_size: u64,
    /// Sorted by name.
    pub files: Vec<WalEntry>,
}

/// One archived WAL file: its timeline and, for a segment (or a `.partial`
/// or `.backup` file, by the segment it names), the WAL it covers,
/// `start_lsn` inclusive to `end_lsn` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalEntry {
    pub name: String,
    pub timeline: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<Lsn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<Lsn>,
}

impl WalEntry {
    /// The entry for a file name; None when it names no WAL file.
    pub fn new(name: &str, segment_size: u64) -> Option<WalEntry> {
        let file = WalFile::parse_sized(name, segment_size)?;
        let segment = match file {
            WalFile::Segment { segment, .. }
            | WalFile::Partial { segment, .. }
            | WalFile::BackupLabel { segment, .. } => Some(segment),
            WalFile::History { .. } => None,
        };
        Some(WalEntry {
            name: name.to_string(),
            timeline: file.timeline(),
            start_lsn: segment.map(|s| Lsn(s * segment_size)),
            end_lsn: segment.map(|s| Lsn((s + 1) * segment_size)),
        })
    }
}

/// What the first page of a segment says about it (PostgreSQL's
/// `XLogLongPageHeaderData`): the cluster it belongs to and its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub timeline: u32,
    /// The LSN of the segment's first byte.
    pub page_address: Lsn,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

/// `XLP_LONG_HEADER`: the first page of a segment has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

/// Reads the long page header at the start of a segment (little-endian, as
/// on every platform PostgreSQL runs cairn on); None when the bytes are not
/// a segment's first page.
pub fn segment_header(bytes: &[u8]) -> Option<SegmentHeader> {
    if bytes.len() < 40 {
        return None;
    }
    let u16le = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32le = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64le = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let info = u16le(2);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let h = SegmentHeader {
        timeline: u32le(4),
        page_address: Lsn(u64le(8)),
        system_identifier: u64le(24),
        segment_size: u32le(32),
        block_size: u32le(36),
    };
    let sane = h.segment_size.is_power_of_two()
        && (1 << 20..=1 << 30).contains(&h.segment_size)
        && h.block_size.is_power_of_two()
        && h.page_address.0.is_multiple_of(h.segment_size as u64);
    sane.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert!(Lsn::parse("x/1").is_none() && Lsn::parse("1").is_none());
    }

    #[test]
    fn names_parse_and_format() {
        let s = WalFile::parse("000000020000000100000003").unwrap();
        assert_eq!(
            s,
            WalFile::Segment {
                timeline: 2,
                segment: 256 + 3
            }
        );
        assert_eq!(
            segment_name(2, 259, DEFAULT_SEGMENT_SIZE),
            "000000020000000100000003"
        );
        assert_eq!(
            WalFile::parse("00000003.history"),
            Some(WalFile::History { timeline: 3 })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup"),
            Some(WalFile::BackupLabel {
                timeline: 1,
                segment: 2
            })
        );
        assert!(matches!(
            WalFile::parse("000000010000000000000005.partial"),
            Some(WalFile::Partial { .. })
        ));
        for bad in [
            "",
            "RECOVERYXLOG",
            "00000001000000000000000",
            "../../etc/passwd",
            "0000000G0000000000000001",
        ] {
            assert!(WalFile::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            segment_of(Lsn::parse("1/2000028").unwrap(), DEFAULT_SEGMENT_SIZE),
            256 + 2
        );
    }

    #[test]
    fn entries_carry_their_wal_range() {
        let e = WalEntry::new("000000020000000100000003", DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(e.timeline, 2);
        assert_eq!(e.start_lsn, Lsn::parse("1/3000000"));
        assert_eq!(e.end_lsn, Lsn::parse("1/4000000"));
        let h = WalEntry::new("00000002.history", DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!((h.timeline, h.start_lsn, h.end_lsn), (2, None, None));
        // 64 MiB segments: 64 of them a 4 GiB log.
        let big = WalEntry::new("00000001000000010000003F", 64 << 20).unwrap();
        assert_eq!(big.start_lsn, Lsn::parse("1/FC000000"));
        assert!(WalEntry::new("not-wal", DEFAULT_SEGMENT_SIZE).is_none());
    }

    #[test]
    fn a_long_page_header_is_read() {
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        page[4..8].copy_from_slice(&1u32.to_le_bytes());
        page[8..16].copy_from_slice(&(3u64 << 24).to_le_bytes());
        page[24..32].copy_from_slice(&7_123_456_789u64.to_le_bytes());
        page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        page[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let h = segment_header(&page).unwrap();
        assert_eq!(h.system_identifier, 7_123_456_789);
        assert_eq!(h.page_address, Lsn(3 << 24));
        page[2] = 0;
        assert!(segment_header(&page).is_none());
    }
}
