//! The byte format of the commit log: segment files of framed records.
//!
//! A segment starts with an 8-byte magic. Each record is
//! `[u32 len][u32 crc32(payload)][payload]` and its payload is
//! `[u8 class_len][class][16-byte object id][u64 seq][changeset]`, integers
//! little-endian. A torn or corrupt record ends the readable log: decoding
//! stops there and never panics.

use crate::id::ObjectId;

/// The 8 bytes every commit log segment starts with.
pub const SEGMENT_MAGIC: &[u8; 8] = b"RLOG0001";

/// One batch of one object, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The object's class.
    pub class: String,
    /// The object's id.
    pub id: ObjectId,
    /// The batch's number within the object (from 1; 0 marks a deletion).
    pub seq: u64,
    /// The batch's SQLite changeset (empty for a deletion mark).
    pub changeset: Vec<u8>,
}

impl Record {
    /// The mark of a deleted object: recovery forgets every record of the
    /// object before it, so that an object created again under the same
    /// name never receives the old one's batches. Batches are numbered from
    /// 1, so `seq` 0 without changes is never a batch.
    pub fn deletion(class: &str, id: ObjectId) -> Record {
        Record {
            class: class.to_owned(),
            id,
            seq: 0,
            changeset: Vec::new(),
        }
    }

    /// Whether this is a [`deletion`](Self::deletion) mark.
    pub fn is_deletion(&self) -> bool {
        self.seq == 0 && self.changeset.is_empty()
    }

    /// Appends the framed record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let class = self.class.as_bytes();
        let class_len =
            u8::try_from(class.len()).expect("invariant: class names are at most 64 bytes");
        let payload_len = 1 + class.len() + 16 + 8 + self.changeset.len();
        let start = out.len();
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.push(class_len);
        out.extend_from_slice(class);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.changeset);
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why reading a segment stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// The segment ended cleanly after the last record.
    Clean,
    /// The segment ends in a torn or corrupt record at this byte offset.
    Torn(usize),
    /// The segment does not start with the magic.
    BadMagic,
}

/// Decodes every whole, checksummed record of a segment.
pub fn decode_segment(bytes: &[u8]) -> (Vec<Record>, Tail) {
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..8] != SEGMENT_MAGIC {
        return (Vec::new(), Tail::BadMagic);
    }
    let mut records = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        match decode_one(&bytes[pos..]) {
            Some((record, used)) => {
                records.push(record);
                pos += used;
            }
            // Segments are made zero-filled ahead of use: zeros to the end
            // are room never written, not a torn record.
            None if bytes[pos..].iter().all(|&b| b == 0) => break,
            None => return (records, Tail::Torn(pos)),
        }
    }
    (records, Tail::Clean)
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8usize.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let class_len = usize::from(*payload.first()?);
    let class = std::str::from_utf8(payload.get(1..1 + class_len)?).ok()?;
    let rest = payload.get(1 + class_len..)?;
    let id: [u8; 16] = rest.get(0..16)?.try_into().ok()?;
    let seq = u64::from_le_bytes(rest.get(16..24)?.try_into().ok()?);
    let changeset = rest.get(24..)?.to_vec();
    Some((
        Record {
            class: class.to_owned(),
            id: ObjectId(id),
            seq,
            changeset,
        },
        8 + len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Record {
        Record {
            class: "counter".into(),
            id: ObjectId::derive("counter", "x"),
            seq,
            changeset: vec![1, 2, 3, seq as u8],
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        for seq in 1..=3 {
            sample(seq).encode_into(&mut bytes);
        }
        let (records, tail) = decode_segment(&bytes);
        assert_eq!(tail, Tail::Clean);
        assert_eq!(records, vec![sample(1), sample(2), sample(3)]);
        // Every truncation yields a prefix of the records, never a panic.
        for cut in 0..bytes.len() {
            let (records, _) = decode_segment(&bytes[..cut]);
            assert!(records.len() <= 3);
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r, &sample(i as u64 + 1));
            }
        }
        // A flipped byte in the last record drops exactly that record.
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let (records, tail) = decode_segment(&corrupt);
        assert_eq!(records.len(), 2);
        assert!(matches!(tail, Tail::Torn(_)));
    }

    #[test]
    fn a_zero_filled_tail_is_unused_room() {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        sample(1).encode_into(&mut bytes);
        sample(2).encode_into(&mut bytes);
        let written = bytes.len();
        bytes.resize(written + 4096, 0);
        let (records, tail) = decode_segment(&bytes);
        assert_eq!((records, tail), (vec![sample(1), sample(2)], Tail::Clean));
        // A record cut short inside the zeroed room is still torn.
        let mut third = Vec::new();
        sample(3).encode_into(&mut third);
        bytes[written..written + third.len() / 2].copy_from_slice(&third[..third.len() / 2]);
        let (records, tail) = decode_segment(&bytes);
        assert_eq!(records.len(), 2);
        assert_eq!(tail, Tail::Torn(written));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut bytes = SEGMENT_MAGIC.to_vec();
            let n = (seed % 64) as usize;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            let _ = decode_segment(&bytes);
        }
    }
}
