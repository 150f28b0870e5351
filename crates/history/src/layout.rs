//! The byte layout of the data file: its header, blocks of series, the four round-robin
//! archives of a block, and the encoding of one row (one time slot of every series of a
//! block) with its period number and CRC-32.
//!
//! Owns offsets, sizes and row encoding; pure. Must not do IO or decide what to write.
//!
//! ```text
//! data:  [header 4096 B][block 0][block 1]...
//! block: [10 s archive][1 min archive][15 min archive][1 h archive]
//! archive: `slots` rows; period P lives in row P mod slots (a ring)
//! row:   period+1 u32 LE | crc32 u32 LE | one cell per column
//!        10 s cell: value f32 LE (NaN: no sample)
//!        coarse cell: count u16 LE (0: no sample) | avg f32 | max f32 | last f32  (14 B)
//! ```
//!
//! The CRC covers the period and the cells. A row that is all zeros was never written; a row
//! whose CRC does not match was torn (or the medium failed) and reads as empty; a row whose
//! period is not the one asked for holds an older (expired) or newer period of the ring.

use serde::{Deserialize, Serialize};

use crate::cell::Cell;
use crate::series::Kind;

/// Size of the data file's header, bytes (one page; the blocks start page-aligned).
pub const HEADER_BYTES: u64 = 4096;
/// Bytes before the cells in every row: period+1 and CRC.
pub const ROW_HEADER_BYTES: usize = 8;
/// Bytes of one 10 s cell.
pub const FINE_CELL_BYTES: usize = 4;
/// Bytes of one consolidated cell (1 min, 15 min, 1 h).
pub const COARSE_CELL_BYTES: usize = 14;
/// Magic at the start of the data file.
pub const MAGIC: &[u8; 8] = b"TANDEMHS";
/// Version of this layout, in the header.
pub const FORMAT_VERSION: u32 = 1;

/// An archive: the resolution of its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// 10-second slots (kept 2 days by the standard geometry).
    #[serde(rename = "10s")]
    S10,
    /// 1-minute slots (30 days).
    #[serde(rename = "1m")]
    M1,
    /// 15-minute slots (2 years).
    #[serde(rename = "15m")]
    M15,
    /// 1-hour slots (5 years).
    #[serde(rename = "1h")]
    H1,
}

impl Resolution {
    /// Finest first.
    pub const ALL: [Resolution; 4] = [
        Resolution::S10,
        Resolution::M1,
        Resolution::M15,
        Resolution::H1,
    ];

    /// Slot length, seconds.
    pub const fn step_s(self) -> i64 {
        match self {
            Resolution::S10 => 10,
            Resolution::M1 => 60,
            Resolution::M15 => 900,
            Resolution::H1 => 3600,
        }
    }

    /// Index of the archive in a block (0 is 10 s).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The next coarser archive.
    pub fn coarser(self) -> Option<Resolution> {
        Resolution::ALL.get(self.index() + 1).copied()
    }

    /// The next finer archive.
    pub fn finer(self) -> Option<Resolution> {
        self.index().checked_sub(1).map(|i| Resolution::ALL[i])
    }

    /// How many slots of the finer archive make one of this one (6, 15, 4).
    pub fn children(self) -> i64 {
        match self.finer() {
            Some(f) => self.step_s() / f.step_s(),
            None => 1,
        }
    }

    /// `10s`, `1m`, `15m`, `1h`.
    pub const fn label(self) -> &'static str {
        match self {
            Resolution::S10 => "10s",
            Resolution::M1 => "1m",
            Resolution::M15 => "15m",
            Resolution::H1 => "1h",
        }
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How many slots each archive keeps and how many series a block holds. Fixed when the store
/// is created (it is in the file header); [`Geometry::STANDARD`] is what the appliance uses,
/// smaller ones make retention tests fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Slots of the 10 s, 1 min, 15 min and 1 h archives.
    pub slots: [u32; 4],
    /// Series per block (columns of a row).
    pub columns: u32,
}

impl Geometry {
    /// 10 s for 2 days, 1 min for 30 days, 15 min for 2 years (730 days), 1 h for 5 years
    /// (1825 days); 64 series per block.
    pub const STANDARD: Geometry = Geometry {
        slots: [2 * 8640, 30 * 1440, 730 * 96, 1825 * 24],
        columns: 64,
    };

    /// Checks that each archive keeps at least two slots of the next coarser one, so a
    /// coarse slot can always be recomputed from the finer archive while it is being filled.
    pub fn validate(&self) -> Result<(), String> {
        if self.columns == 0 || self.columns > 4096 {
            return Err(format!("columns {} not in 1..=4096", self.columns));
        }
        for r in Resolution::ALL {
            let slots = i64::from(self.slots[r.index()]);
            if slots == 0 {
                return Err(format!("the {r} archive has no slots"));
            }
            if let Some(c) = r.coarser()
                && slots < 2 * c.children()
            {
                return Err(format!(
                    "the {r} archive keeps {slots} slots, fewer than two {c} slots"
                ));
            }
        }
        Ok(())
    }

    /// Slots of the archive at `r`.
    pub fn slots(&self, r: Resolution) -> u32 {
        self.slots[r.index()]
    }

    /// How far back the archive at `r` reaches, seconds.
    pub fn retention_s(&self, r: Resolution) -> i64 {
        i64::from(self.slots(r)) * r.step_s()
    }

    /// Bytes of one row of the archive at `r`.
    pub fn row_bytes(&self, r: Resolution) -> usize {
        let cell = if r == Resolution::S10 {
            FINE_CELL_BYTES
        } else {
            COARSE_CELL_BYTES
        };
        ROW_HEADER_BYTES + self.columns as usize * cell
    }

    /// Bytes of one archive of a block.
    pub fn archive_bytes(&self, r: Resolution) -> u64 {
        u64::from(self.slots(r)) * self.row_bytes(r) as u64
    }

    /// Bytes of one block (all four archives of `columns` series).
    pub fn block_bytes(&self) -> u64 {
        Resolution::ALL.iter().map(|&r| self.archive_bytes(r)).sum()
    }

    /// Bytes one series costs: a block's bytes divided by its columns.
    pub fn bytes_per_series(&self) -> f64 {
        self.block_bytes() as f64 / f64::from(self.columns)
    }

    /// Size of a data file with `blocks` blocks.
    pub fn file_bytes(&self, blocks: u32) -> u64 {
        HEADER_BYTES + u64::from(blocks) * self.block_bytes()
    }

    /// Ring position of `period` in the archive at `r`.
    pub fn position(&self, r: Resolution, period: i64) -> u32 {
        period.rem_euclid(i64::from(self.slots(r))) as u32
    }

    /// File offset of the row at `position` of archive `r` of `block`.
    pub fn row_offset(&self, block: u32, r: Resolution, position: u32) -> u64 {
        let mut off = HEADER_BYTES + u64::from(block) * self.block_bytes();
        for f in Resolution::ALL.iter().take(r.index()) {
            off += self.archive_bytes(*f);
        }
        off + u64::from(position) * self.row_bytes(r) as u64
    }

    /// The header of a data file with this geometry.
    pub fn encode_header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_BYTES as usize);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        h.extend_from_slice(&self.columns.to_le_bytes());
        for r in Resolution::ALL {
            h.extend_from_slice(&(r.step_s() as u32).to_le_bytes());
            h.extend_from_slice(&self.slots(r).to_le_bytes());
        }
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h.resize(HEADER_BYTES as usize, 0);
        h
    }

    /// Reads a header: `Ok(None)` when it was never written (all zeros).
    pub fn decode_header(bytes: &[u8]) -> Result<Option<Geometry>, String> {
        let n = 8 + 4 + 4 + 4 * 8;
        if bytes.len() < n + 4 {
            return Err("shorter than a header".into());
        }
        if bytes[..n + 4].iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if &bytes[..8] != MAGIC {
            return Err("not a tandem history file (bad magic)".into());
        }
        let crc = u32::from_le_bytes(bytes[n..n + 4].try_into().unwrap_or_default());
        if crc32fast::hash(&bytes[..n]) != crc {
            return Err("header checksum mismatch".into());
        }
        let u = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        let version = u(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this firmware reads {FORMAT_VERSION}"
            ));
        }
        let columns = u(12);
        let mut slots = [0; 4];
        for r in Resolution::ALL {
            let i = 16 + 8 * r.index();
            if i64::from(u(i)) != r.step_s() {
                return Err(format!("archive {r} has step {} s", u(i)));
            }
            slots[r.index()] = u(i + 4);
        }
        Ok(Some(Geometry { slots, columns }))
    }
}

/// A decoded row: its period and one optional cell per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The period (timestamp / step) the row holds.
    pub period: i64,
    /// One cell per column; `None` where the series had no sample.
    pub cells: Vec<Option<Cell>>,
}

/// What a row on disk holds, when it holds no usable row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// All zeros: never written.
    Empty,
    /// The checksum does not match (a torn write or a media error).
    Corrupt,
}

impl Row {
    /// A row for `period` with no samples.
    pub fn empty(period: i64, columns: usize) -> Row {
        Row {
            period,
            cells: vec![None; columns],
        }
    }

    /// Encodes the row for archive `r` (`bytes.len()` must be the archive's row size).
    pub fn encode(&self, r: Resolution, out: &mut [u8]) {
        let stored = u32::try_from(self.period + 1).unwrap_or(0);
        out[..4].copy_from_slice(&stored.to_le_bytes());
        let mut pos = ROW_HEADER_BYTES;
        for cell in &self.cells {
            if r == Resolution::S10 {
                let v = cell.map_or(f32::NAN, |c| c.last);
                out[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
                pos += FINE_CELL_BYTES;
            } else {
                let c = cell.unwrap_or(Cell {
                    count: 0,
                    avg: 0.0,
                    max: 0.0,
                    last: 0.0,
                });
                out[pos..pos + 2].copy_from_slice(&c.count.to_le_bytes());
                out[pos + 2..pos + 6].copy_from_slice(&c.avg.to_le_bytes());
                out[pos + 6..pos + 10].copy_from_slice(&c.max.to_le_bytes());
                out[pos + 10..pos + 14].copy_from_slice(&c.last.to_le_bytes());
                pos += COARSE_CELL_BYTES;
            }
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&out[..4]);
        h.update(&out[ROW_HEADER_BYTES..pos]);
        out[4..8].copy_from_slice(&h.finalize().to_le_bytes());
    }

    /// Checks a row of archive `r` and decodes only `column`'s cell: the query path, which
    /// reads one series out of each row. Returns the row's period and the cell.
    pub fn decode_one(
        r: Resolution,
        bytes: &[u8],
        column: usize,
        kind: Kind,
    ) -> Result<(i64, Option<Cell>), Unusable> {
        let stored = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
        if stored == 0 && crc == 0 && bytes.iter().all(|&b| b == 0) {
            return Err(Unusable::Empty);
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..4]);
        h.update(&bytes[ROW_HEADER_BYTES..]);
        if h.finalize() != crc || stored == 0 {
            return Err(Unusable::Corrupt);
        }
        let f = |i: usize| f32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        let cell = if r == Resolution::S10 {
            let v = f(ROW_HEADER_BYTES + column * FINE_CELL_BYTES);
            (!v.is_nan()).then(|| Cell::sample(kind, v))
        } else {
            let pos = ROW_HEADER_BYTES + column * COARSE_CELL_BYTES;
            let count = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
            (count > 0).then(|| Cell {
                count,
                avg: f(pos + 2),
                max: f(pos + 6),
                last: f(pos + 10),
            })
        };
        Ok((i64::from(stored) - 1, cell))
    }

    /// Decodes a row of archive `r`; `kinds` gives each column's kind (10 s cells store only
    /// the value, the kind tells what its `avg` is).
    pub fn decode(r: Resolution, bytes: &[u8], kinds: &[Kind]) -> Result<Row, Unusable> {
        let stored = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
        if stored == 0 && crc == 0 {
            return if bytes.iter().all(|&b| b == 0) {
                Err(Unusable::Empty)
            } else {
                Err(Unusable::Corrupt)
            };
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..4]);
        h.update(&bytes[ROW_HEADER_BYTES..]);
        if h.finalize() != crc || stored == 0 {
            return Err(Unusable::Corrupt);
        }
        let f = |i: usize| f32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        let mut cells = Vec::with_capacity(kinds.len());
        let mut pos = ROW_HEADER_BYTES;
        for &kind in kinds {
            if r == Resolution::S10 {
                let v = f(pos);
                cells.push((!v.is_nan()).then(|| Cell::sample(kind, v)));
                pos += FINE_CELL_BYTES;
            } else {
                let count = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
                cells.push((count > 0).then(|| Cell {
                    count,
                    avg: f(pos + 2),
                    max: f(pos + 6),
                    last: f(pos + 10),
                }));
                pos += COARSE_CELL_BYTES;
            }
        }
        Ok(Row {
            period: i64::from(stored) - 1,
            cells,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_geometry_sizes() {
        let g = Geometry::STANDARD;
        g.validate().unwrap();
        assert_eq!(g.retention_s(Resolution::S10), 2 * 86_400);
        assert_eq!(g.retention_s(Resolution::M1), 30 * 86_400);
        assert_eq!(g.retention_s(Resolution::M15), 730 * 86_400);
        assert_eq!(g.retention_s(Resolution::H1), 1825 * 86_400);
        assert_eq!(g.row_bytes(Resolution::S10), 8 + 64 * 4);
        assert_eq!(g.row_bytes(Resolution::H1), 8 + 64 * 14);
        // docs/monitoring.md quotes these figures.
        assert_eq!(g.block_bytes(), 146_562_240);
        assert_eq!(g.bytes_per_series().round() as u64, 2_290_035);
    }

    #[test]
    fn rows_round_trip_and_any_flipped_byte_is_detected() {
        let kinds = [Kind::Gauge, Kind::State, Kind::Gauge];
        for r in Resolution::ALL {
            let g = Geometry {
                columns: 3,
                ..Geometry::STANDARD
            };
            let mut row = Row::empty(123_456, 3);
            row.cells[0] = Some(Cell::sample(Kind::Gauge, 2.5));
            row.cells[1] = Some(Cell::sample(Kind::State, 3.0));
            let mut buf = vec![0; g.row_bytes(r)];
            row.encode(r, &mut buf);
            assert_eq!(Row::decode(r, &buf, &kinds), Ok(row.clone()));
            for (c, &kind) in kinds.iter().enumerate() {
                assert_eq!(
                    Row::decode_one(r, &buf, c, kind),
                    Ok((123_456, row.cells[c]))
                );
            }
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0x40;
                assert_eq!(
                    Row::decode(r, &bad, &kinds),
                    Err(Unusable::Corrupt),
                    "byte {i}"
                );
                assert_eq!(
                    Row::decode_one(r, &bad, 2, Kind::Gauge),
                    Err(Unusable::Corrupt),
                    "byte {i}"
                );
            }
            assert_eq!(
                Row::decode(r, &vec![0; buf.len()], &kinds),
                Err(Unusable::Empty)
            );
        }
    }

    #[test]
    fn header_round_trip() {
        let h = Geometry::STANDARD.encode_header();
        assert_eq!(Geometry::decode_header(&h), Ok(Some(Geometry::STANDARD)));
        assert_eq!(Geometry::decode_header(&[0; 4096]), Ok(None));
        let mut bad = h.clone();
        bad[13] ^= 1;
        assert!(Geometry::decode_header(&bad).is_err());
    }
}
