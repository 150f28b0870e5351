//! The redo journal: before rows are overwritten in place, their new images are written to
//! one of two fixed slots of the `journal` file and synced, so a power cut in the middle of
//! the in-place writes is repaired by writing the images again when the store opens.
//!
//! Owns the journal's encoding and the choice of slot; pure. Must not do IO.
//!
//! ```text
//! journal: [slot 0: 4 MiB][slot 1: 4 MiB]; transaction n goes to slot n mod 2
//! slot:    "TJNL" | seq u64 | latest_ts i64 | len u32 | entries (len bytes) | crc32
//! entry:   archive u8 | block u32 | position u32 | row image (the archive's row size)
//! ```
//!
//! Transaction `n` only starts once the rows of `n - 1` are synced, so the slot with the
//! highest valid sequence is the only one whose rows may be incomplete on disk, and writing
//! its images again is always safe (no later write touched those rows). A torn journal slot
//! fails its CRC: the other slot (the previous transaction, complete on disk) is replayed,
//! harmlessly, and the torn transaction is lost whole: its rows were not yet touched.

use crate::layout::{Geometry, Resolution};

/// Bytes of one journal slot; a transaction larger than this is split.
pub const SLOT_BYTES: usize = 4 << 20;
/// Bytes of the journal file.
pub const FILE_BYTES: u64 = 2 * SLOT_BYTES as u64;
const MAGIC: &[u8; 4] = b"TJNL";
/// Magic, sequence, latest timestamp, length.
const HEAD: usize = 4 + 8 + 8 + 4;
/// Bytes at the start of a slot that say how long it is ([`Transaction::slot_len`]).
pub const HEAD_BYTES: usize = HEAD;
/// Bytes of an entry before the row image.
pub const ENTRY_HEAD: usize = 1 + 4 + 4;
/// Largest entries payload of one slot.
pub const MAX_PAYLOAD: usize = SLOT_BYTES - HEAD - 4;

/// One row image to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The archive.
    pub resolution: Resolution,
    /// The block.
    pub block: u32,
    /// The ring position in the archive.
    pub position: u32,
    /// The encoded row.
    pub image: Vec<u8>,
}

/// A decoded journal slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The latest sample timestamp recorded by this or any earlier transaction.
    pub latest_ts: i64,
    /// The row images.
    pub entries: Vec<Entry>,
}

impl Transaction {
    /// Where this transaction goes in the journal file.
    pub fn slot_offset(seq: u64) -> u64 {
        (seq % 2) * SLOT_BYTES as u64
    }

    /// Payload bytes of `entries`.
    pub fn payload_len(entries: &[Entry]) -> usize {
        entries.iter().map(|e| ENTRY_HEAD + e.image.len()).sum()
    }

    /// The slot bytes (only as long as needed; the rest of the slot is left as it was).
    pub fn encode(&self) -> Vec<u8> {
        let len = Transaction::payload_len(&self.entries);
        let mut out = Vec::with_capacity(HEAD + len + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.latest_ts.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        for e in &self.entries {
            out.push(e.resolution.index() as u8);
            out.extend_from_slice(&e.block.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&e.image);
        }
        let crc = crc32fast::hash(&out[4..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a slot; `None` when it is empty, torn or not a journal slot.
    pub fn decode(slot: &[u8], geometry: &Geometry) -> Option<Transaction> {
        if slot.len() < HEAD + 4 || &slot[..4] != MAGIC {
            return None;
        }
        let seq = u64::from_le_bytes(slot[4..12].try_into().ok()?);
        let latest_ts = i64::from_le_bytes(slot[12..20].try_into().ok()?);
        let len = u32::from_le_bytes(slot[20..24].try_into().ok()?) as usize;
        if len > MAX_PAYLOAD || slot.len() < HEAD + len + 4 {
            return None;
        }
        let crc = u32::from_le_bytes(slot[HEAD + len..HEAD + len + 4].try_into().ok()?);
        if crc32fast::hash(&slot[4..HEAD + len]) != crc {
            return None;
        }
        let mut entries = Vec::new();
        let mut pos = HEAD;
        while pos < HEAD + len {
            let resolution = *Resolution::ALL.get(usize::from(slot[pos]))?;
            let block = u32::from_le_bytes(slot[pos + 1..pos + 5].try_into().ok()?);
            let position = u32::from_le_bytes(slot[pos + 5..pos + 9].try_into().ok()?);
            let size = geometry.row_bytes(resolution);
            let start = pos + ENTRY_HEAD;
            let image = slot.get(start..start + size)?.to_vec();
            entries.push(Entry {
                resolution,
                block,
                position,
                image,
            });
            pos = start + size;
        }
        (pos == HEAD + len).then_some(Transaction {
            seq,
            latest_ts,
            entries,
        })
    }

    /// The bytes of a slot worth reading, from its first [`HEAD_BYTES`]: `None` when the slot
    /// is not a journal slot or announces an impossible length.
    pub fn slot_len(head: &[u8]) -> Option<usize> {
        if head.len() < HEAD || &head[..4] != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes(head[20..24].try_into().ok()?) as usize;
        (len <= MAX_PAYLOAD).then_some(HEAD + len + 4)
    }

    /// The transaction to replay from the whole journal file: the valid slot with the highest
    /// sequence.
    pub fn latest(file: &[u8], geometry: &Geometry) -> Option<Transaction> {
        (0..2)
            .filter_map(|i| {
                let start = i * SLOT_BYTES;
                let slot = file.get(start..(start + SLOT_BYTES).min(file.len()))?;
                Transaction::decode(slot, geometry)
            })
            .max_by_key(|t| t.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            columns: 2,
            ..Geometry::STANDARD
        }
    }

    fn tx(seq: u64) -> Transaction {
        let g = geometry();
        Transaction {
            seq,
            latest_ts: 1_000 + seq as i64,
            entries: vec![
                Entry {
                    resolution: Resolution::S10,
                    block: 0,
                    position: 7,
                    image: vec![seq as u8; g.row_bytes(Resolution::S10)],
                },
                Entry {
                    resolution: Resolution::H1,
                    block: 3,
                    position: 9,
                    image: vec![1; g.row_bytes(Resolution::H1)],
                },
            ],
        }
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_one_is_skipped() {
        let g = geometry();
        let mut file = vec![0u8; FILE_BYTES as usize];
        assert_eq!(Transaction::latest(&file, &g), None);
        for seq in [1, 2] {
            let b = tx(seq).encode();
            let off = Transaction::slot_offset(seq) as usize;
            file[off..off + b.len()].copy_from_slice(&b);
        }
        assert_eq!(Transaction::latest(&file, &g), Some(tx(2)));
        // Transaction 3 torn at every byte: transaction 2 is what replays.
        let b = tx(3).encode();
        let off = Transaction::slot_offset(3) as usize;
        for cut in 0..b.len() {
            let mut f = file.clone();
            f[off..off + cut].copy_from_slice(&b[..cut]);
            assert_eq!(Transaction::latest(&f, &g), Some(tx(2)), "cut at {cut}");
        }
        file[off..off + b.len()].copy_from_slice(&b);
        assert_eq!(Transaction::latest(&file, &g), Some(tx(3)));
    }
}
