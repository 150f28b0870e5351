//! `tandem-history`: the traffic history of a node, on `/data/history`.
//!
//! Owns the time-series store: per frontend, backend, server and node, fixed-size
//! round-robin archives at 10 s (2 days), 1 min (30 days), 15 min (2 years) and 1 h
//! (5 years), consolidated by average, maximum and latest value (states: availability, worst,
//! latest). It creates series on demand, retires those that leave the configuration, answers
//! range queries, and merges the peer's samples idempotently so the history stays continuous
//! across a failover. Must not read the clock (time is an argument or comes with the
//! samples), talk to the proxy or the network, or know the configuration format: the
//! supervisor produces the samples, ships batches over sync, and names the wanted series.
//!
//! # Files
//!
//! ```text
//! DIR/data         header + blocks of 64 series; each block holds the four archives
//!                  (see [`layout`]); preallocated, grown one block at a time
//! DIR/journal      8 MiB: two redo slots (see [`journal`])
//! DIR/series.json  the registry: series -> (block, column), retirements (see [`registry`])
//! ```
//!
//! # Write protocol
//!
//! A write ([`History::record`], [`History::import`]) is a transaction: the new images of
//! every touched row (the 10 s slot, and the 1 min, 15 min and 1 h slots recomputed from the
//! finer archive) are written to the journal and synced, then written in place and synced.
//! A power cut during the in-place writes is repaired at the next [`History::open`], which
//! writes the journal's images again; a power cut while writing the journal loses that one
//! transaction (the last interval) and nothing else. Every row also carries its period and a
//! CRC, so a row damaged any other way reads as empty instead of as wrong numbers, and the
//! store always opens. New series are written to the registry (atomically) before a sample
//! lands in their column.
//!
//! # Merging
//!
//! Each slot keeps one value per series. When two values meet (a sample imported from the
//! peer for a slot already filled, the same batch imported twice), [`Cell::loses_to`]
//! decides: more samples win, then the larger value; coarse slots are recomputed from the
//! finer archive and replace the stored value unless it holds more samples (a slot imported
//! whole during a catch-up). Import is therefore idempotent and commutative: both nodes end
//! with the same history whatever order the batches arrive in.
//!
//! # Concurrency
//!
//! One process owns a store (the supervisor). Writes take `&mut self`; queries take `&self`.

pub mod batch;
pub mod cell;
pub mod derive;
pub mod dir;
pub mod journal;
pub mod layout;
pub mod registry;
pub mod series;
pub mod testing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::Serialize;
use tracing::{debug, info, warn};

pub use crate::batch::{BatchRow, SampleBatch, Value};
pub use crate::cell::Cell;
pub use crate::dir::{Dir, FsDir, MemDir};
pub use crate::layout::{Geometry, Resolution};
pub use crate::series::{Entity, HealthState, Kind, Metric, SeriesName, VrrpState};

use crate::journal::{Entry as JournalEntry, Transaction};
use crate::layout::{Row, Unusable};
use crate::registry::Registry;

/// The data file's name.
pub const DATA_FILE: &str = "data";
/// The journal's name.
pub const JOURNAL_FILE: &str = "journal";
/// The registry's name.
pub const SERIES_FILE: &str = "series.json";
/// How far ahead of the receiver's clock an imported slot may be, seconds; later ones are
/// refused (a peer with a wrong clock must not overwrite ring slots that are still in use).
pub const MAX_SKEW_S: i64 = 300;
/// How long a retired series (its server removed from the configuration) keeps its history
/// before its column is freed, seconds (30 days, the 1 min archive's reach).
pub const RETIRED_KEEP_S: i64 = 30 * 86_400;
/// Most points an automatically chosen resolution returns.
pub const MAX_POINTS: i64 = 3_000;
/// Default bound on the number of series (64 blocks, about 9.4 GB with the standard
/// geometry); the supervisor may lower it to fit the data partition.
pub const DEFAULT_MAX_SERIES: usize = 4_096;

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Archive sizes and series per block; must match the file's header.
    pub geometry: Geometry,
    /// The store refuses new series beyond this many (rounded up to whole blocks).
    pub max_series: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            geometry: Geometry::STANDARD,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// Why a store operation failed. Nothing is written when an operation fails before its
/// transaction; a failure during one leaves the store as a power cut would.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file could not be read, written or synced.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `sync`, `reserve`, `replace`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file of the store is not what the store wrote (media failure, or another program).
    #[error("{path} is corrupt: {reason}; move the history directory aside to start a new one")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data file was made with another geometry or format version.
    #[error("{path} has another layout ({found}); this firmware expects {expected}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// What this build uses.
        expected: String,
    },
    /// The geometry in [`Options`] is unusable.
    #[error("invalid history geometry: {0}")]
    Geometry(String),
    /// A batch is malformed; nothing of it was written.
    #[error("sample batch from {origin} refused: {reason}")]
    BadBatch {
        /// The batch's origin.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The series is not in the store.
    #[error("no history for {0}")]
    UnknownSeries(SeriesName),
    /// A query range is empty or reversed.
    #[error("bad query range {from}..{to}: the end must be after the start")]
    BadRange {
        /// Start, unix seconds.
        from: i64,
        /// End, unix seconds.
        to: i64,
    },
}

fn io_err(action: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> HistoryError {
    move |source| HistoryError::Io {
        action,
        path,
        source,
    }
}

/// What [`History::open`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opened {
    /// Whether the store was created now.
    pub created: bool,
    /// Series registered.
    pub series: usize,
    /// Blocks in the data file.
    pub blocks: u32,
    /// Row images the journal wrote again (non-zero after a power cut during a write).
    pub replayed_rows: usize,
    /// Sequence of the last transaction.
    pub seq: u64,
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Written {
    /// Cells that changed a slot (at the batch's own resolution).
    pub cells: usize,
    /// Cells that changed nothing (already there: a batch imported twice).
    pub unchanged: usize,
    /// Cells for a slot the ring has already reused for a newer one (too old).
    pub stale: usize,
    /// Cells refused for being more than [`MAX_SKEW_S`] ahead of `now` (import only).
    pub future: usize,
    /// Cells not finite or counting no sample.
    pub invalid: usize,
    /// Series created by this write.
    pub created: Vec<SeriesName>,
    /// Series refused because the store is full ([`Options::max_series`]).
    pub full: Vec<SeriesName>,
    /// Rows written (all archives).
    pub rows: usize,
    /// Rows that read as corrupt (bad CRC) and were started afresh.
    pub corrupt_rows: usize,
}

/// A range query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The series.
    pub series: SeriesName,
    /// Start, unix seconds (inclusive).
    pub from: i64,
    /// End, unix seconds (exclusive).
    pub to: i64,
    /// The archive to read; `None` chooses it ([`History::resolution_for`]).
    pub resolution: Option<Resolution>,
}

/// One slot of a query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Slot start, unix seconds.
    pub ts: i64,
    /// Mean (states: fraction of samples in state 0).
    pub avg: f64,
    /// Maximum (states: worst state): what capacity planning reads.
    pub max: f64,
    /// Latest value in the slot.
    pub last: f64,
    /// Raw samples in the slot (1 at 10 s; 6 for a full minute, 360 for a full hour).
    pub samples: u32,
}

/// A query's answer: the slots that have data, oldest first (gaps are missing slots).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Points {
    /// The series.
    pub series: SeriesName,
    /// The archive read.
    pub resolution: Resolution,
    /// The slots.
    pub points: Vec<Point>,
}

/// A series as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesInfo {
    /// Its name.
    pub name: SeriesName,
    /// When it left the configuration, if it did.
    pub retired: Option<i64>,
}

/// What [`History::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Wanted series created.
    pub created: Vec<SeriesName>,
    /// Series no longer wanted, now retired.
    pub retired: Vec<SeriesName>,
    /// Retired series wanted again.
    pub revived: Vec<SeriesName>,
    /// Retired series past [`RETIRED_KEEP_S`], forgotten.
    pub purged: Vec<SeriesName>,
    /// Wanted series refused because the store is full.
    pub full: Vec<SeriesName>,
}

/// Disk use, for `show history` and docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Footprint {
    /// Series registered (retired ones included).
    pub series: usize,
    /// Series the allocated blocks can hold.
    pub capacity: usize,
    /// Bytes of the data file.
    pub data_bytes: u64,
    /// Bytes of the journal.
    pub journal_bytes: u64,
    /// Bytes each series costs.
    pub bytes_per_series: f64,
}

/// How a cell meets the one in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A sample or imported slot: [`Cell::loses_to`].
    Merge,
    /// Recomputed from the finer archive: replaces unless the stored one has more samples.
    Recompute,
}

/// The store. `D` is the directory ([`FsDir`] on the appliance, [`MemDir`] or
/// [`testing::FaultDir`] in tests).
#[derive(Debug)]
pub struct History<D: Dir> {
    dir: D,
    geometry: Geometry,
    max_blocks: u32,
    registry: Registry,
    /// Sequence of the last journal transaction.
    seq: u64,
    /// Newest 10 s slot written, unix seconds.
    latest_ts: Option<i64>,
}

impl<D: Dir> History<D> {
    /// Opens the store in `dir`, creating it when empty and repairing an interrupted write
    /// from the journal. Fails only when a file is unreadable or is not the store's (another
    /// layout, or a registry that does not parse); never because of a power cut.
    pub fn open(dir: D, options: Options) -> Result<(History<D>, Opened), HistoryError> {
        let g = options.geometry;
        g.validate().map_err(HistoryError::Geometry)?;
        let max_blocks = u32::try_from(options.max_series.div_ceil(g.columns as usize))
            .unwrap_or(u32::MAX)
            .max(1);
        let data_path = dir.describe(DATA_FILE);

        // The registry first: a data file without a valid header is only acceptable while
        // no series has ever been registered.
        let registry = match dir
            .read(SERIES_FILE)
            .map_err(io_err("read", dir.describe(SERIES_FILE)))?
        {
            Some(bytes) => {
                Registry::decode(&bytes, g.columns).map_err(|reason| HistoryError::Corrupt {
                    path: dir.describe(SERIES_FILE),
                    reason,
                })?
            }
            None => Registry::new(g.columns),
        };

        let mut header = vec![0u8; layout::HEADER_BYTES as usize];
        let len = dir
            .len(DATA_FILE)
            .map_err(io_err("read", data_path.clone()))?;
        if len.is_some_and(|l| l >= layout::HEADER_BYTES) {
            dir.read_at(DATA_FILE, 0, &mut header)
                .map_err(io_err("read", data_path.clone()))?;
        }
        let created = match Geometry::decode_header(&header) {
            Ok(Some(found)) if found == g => false,
            Ok(Some(found)) => {
                return Err(HistoryError::Incompatible {
                    path: data_path,
                    found: format!("{found:?}"),
                    expected: format!("{g:?}"),
                });
            }
            Ok(None) if registry.is_empty() => {
                History::create(&dir, &g)?;
                true
            }
            Err(reason) if registry.is_empty() => {
                // Nothing was ever registered, so nothing can be lost: start afresh.
                warn!(path = %data_path.display(), reason, "history data file unreadable before any series was registered; recreating it");
                History::create(&dir, &g)?;
                true
            }
            Ok(None) => {
                return Err(HistoryError::Corrupt {
                    path: data_path,
                    reason: format!(
                        "no header, but {} names {} series",
                        SERIES_FILE,
                        registry.len()
                    ),
                });
            }
            Err(reason) => {
                return Err(HistoryError::Corrupt {
                    path: data_path,
                    reason,
                });
            }
        };
        // The file is grown before the registry names a new block, so it is normally long
        // enough already; if it was truncated anyway, the missing rows read as empty.
        dir.reserve(DATA_FILE, g.file_bytes(registry.blocks))
            .map_err(io_err("reserve", data_path.clone()))?;

        let journal_path = dir.describe(JOURNAL_FILE);
        dir.reserve(JOURNAL_FILE, journal::FILE_BYTES)
            .map_err(io_err("reserve", journal_path.clone()))?;
        let mut last_tx = None;
        for seq in 0..2 {
            // Only the used part of each 4 MiB slot is read.
            let offset = Transaction::slot_offset(seq);
            let mut head = [0u8; journal::HEAD_BYTES];
            dir.read_at(JOURNAL_FILE, offset, &mut head)
                .map_err(io_err("read", journal_path.clone()))?;
            let Some(len) = Transaction::slot_len(&head) else {
                continue;
            };
            let mut slot = vec![0u8; len];
            dir.read_at(JOURNAL_FILE, offset, &mut slot)
                .map_err(io_err("read", journal_path.clone()))?;
            if let Some(tx) = Transaction::decode(&slot, &g)
                && last_tx
                    .as_ref()
                    .is_none_or(|t: &Transaction| t.seq < tx.seq)
            {
                last_tx = Some(tx);
            }
        }
        let mut store = History {
            dir,
            geometry: g,
            max_blocks,
            registry,
            seq: 0,
            latest_ts: None,
        };
        let mut replayed = 0;
        if let Some(tx) = last_tx {
            store.seq = tx.seq;
            store.latest_ts = (tx.latest_ts != i64::MIN).then_some(tx.latest_ts);
            for e in &tx.entries {
                if e.block < store.registry.blocks {
                    store.write_row_image(e)?;
                    replayed += 1;
                }
            }
            if replayed > 0 {
                store.sync_data()?;
            }
        }
        let opened = Opened {
            created,
            series: store.registry.len(),
            blocks: store.registry.blocks,
            replayed_rows: replayed,
            seq: store.seq,
        };
        info!(
            created,
            series = opened.series,
            blocks = opened.blocks,
            replayed_rows = replayed,
            seq = store.seq,
            "history store opened"
        );
        Ok((store, opened))
    }

    /// Writes a new data file holding only the header, atomically (a power cut leaves
    /// either no file or the whole header).
    fn create(dir: &D, g: &Geometry) -> Result<(), HistoryError> {
        dir.replace(DATA_FILE, &g.encode_header())
            .map_err(io_err("replace", dir.describe(DATA_FILE)))
    }

    /// The geometry in use.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The directory (for tests that reopen it).
    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// Gives the directory back.
    pub fn into_dir(self) -> D {
        self.dir
    }

    /// The newest 10 s slot written (locally or imported), unix seconds.
    pub fn latest_ts(&self) -> Option<i64> {
        self.latest_ts
    }

    /// Every series, in name order.
    pub fn series(&self) -> Vec<SeriesInfo> {
        self.registry
            .iter()
            .map(|(n, e)| SeriesInfo {
                name: n.clone(),
                retired: e.retired,
            })
            .collect()
    }

    /// Disk use.
    pub fn footprint(&self) -> Footprint {
        let g = self.geometry;
        Footprint {
            series: self.registry.len(),
            capacity: self.registry.blocks as usize * g.columns as usize,
            data_bytes: g.file_bytes(self.registry.blocks),
            journal_bytes: journal::FILE_BYTES,
            bytes_per_series: g.bytes_per_series(),
        }
    }

    /// Records this node's samples. The batch's timestamps are trusted (they come from the
    /// local clock). Unknown series are created; a retired one comes back.
    pub fn record(&mut self, batch: &SampleBatch) -> Result<Written, HistoryError> {
        self.apply(batch, None)
    }

    /// Merges a batch received from the peer: like [`History::record`], but slots more than
    /// [`MAX_SKEW_S`] after `now` (the local clock) are refused. Importing the same batch
    /// again, or batches in another order, gives the same store.
    pub fn import(&mut self, batch: &SampleBatch, now: i64) -> Result<Written, HistoryError> {
        self.apply(batch, Some(now))
    }

    fn apply(&mut self, batch: &SampleBatch, now: Option<i64>) -> Result<Written, HistoryError> {
        batch.check().map_err(|reason| HistoryError::BadBatch {
            origin: batch.origin.clone(),
            reason,
        })?;
        let mut written = Written::default();

        // Columns for every series that has something to write, registered durably first.
        let has_data: Vec<bool> = (0..batch.series.len())
            .map(|i| batch.rows.iter().any(|r| r.cells[i].is_some()))
            .collect();
        let needs_registry = batch.series.iter().zip(&has_data).any(|(name, &data)| {
            data && self.registry.get(name).is_none_or(|e| e.retired.is_some())
        });
        let before = needs_registry.then(|| self.registry.clone());
        let mut columns: Vec<Option<(u32, u32, Kind)>> = Vec::with_capacity(batch.series.len());
        for (name, &data) in batch.series.iter().zip(&has_data) {
            if !data {
                columns.push(None);
                continue;
            }
            if let Some(e) = self.registry.get(name)
                && e.retired.is_none()
            {
                columns.push(Some((e.block, e.column, name.kind())));
                continue;
            }
            let known = self.registry.get(name).is_some();
            match self.registry.allocate(name, self.max_blocks) {
                Some(e) => {
                    if !known {
                        written.created.push(name.clone());
                    }
                    self.registry.revive(name);
                    columns.push(Some((e.block, e.column, name.kind())));
                }
                None => {
                    written.full.push(name.clone());
                    columns.push(None);
                }
            }
        }
        if !written.full.is_empty() {
            warn!(
                origin = %batch.origin,
                refused = written.full.len(),
                max_blocks = self.max_blocks,
                "history store full: new series refused"
            );
        }
        if let Some(before) = before
            && let Err(e) = self.persist_registry(&before)
        {
            self.registry = before;
            return Err(e);
        }

        let step = batch.resolution.step_s();
        let mut txn = Txn::new(self);
        let mut newest = None;
        for row in &batch.rows {
            let period = row.ts.div_euclid(step);
            if let Some(now) = now
                && period * step > now + MAX_SKEW_S
            {
                written.future += row.cells.iter().filter(|c| c.is_some()).count();
                continue;
            }
            for (i, value) in row.cells.iter().enumerate() {
                let (Some(value), Some((block, column, kind))) = (value, columns[i]) else {
                    continue;
                };
                let Some(cell) = value.to_cell(kind) else {
                    written.invalid += 1;
                    continue;
                };
                let floor = txn.floor(block, column);
                if floor.is_some_and(|f| period * step < f) {
                    written.stale += 1;
                    continue;
                }
                match txn.put(batch.resolution, block, column, period, cell, Mode::Merge)? {
                    Put::Changed => written.cells += 1,
                    Put::Unchanged => written.unchanged += 1,
                    Put::Stale => written.stale += 1,
                }
            }
            if batch.resolution == Resolution::S10 {
                newest = newest.max(Some(period * step));
            }
        }
        txn.propagate(batch.resolution)?;
        written.corrupt_rows = txn.corrupt_rows;
        let rows = txn.into_entries();
        written.rows = rows.len();
        if let Some(n) = newest {
            self.latest_ts = self.latest_ts.max(Some(n));
        }
        self.commit(rows)?;
        debug!(
            origin = %batch.origin,
            resolution = %batch.resolution,
            cells = written.cells,
            unchanged = written.unchanged,
            stale = written.stale,
            rows = written.rows,
            "history batch applied"
        );
        Ok(written)
    }

    /// Makes the registry durable (it changed since `before`), growing the data file first
    /// for new blocks (so no registered column is ever outside the file).
    fn persist_registry(&mut self, before: &Registry) -> Result<(), HistoryError> {
        if self.registry.blocks > before.blocks {
            let len = self.geometry.file_bytes(self.registry.blocks);
            self.dir
                .reserve(DATA_FILE, len)
                .map_err(io_err("reserve", self.dir.describe(DATA_FILE)))?;
            info!(
                blocks = self.registry.blocks,
                bytes = len,
                "history data file grown"
            );
        }
        self.dir
            .replace(SERIES_FILE, &self.registry.encode())
            .map_err(io_err("replace", self.dir.describe(SERIES_FILE)))
    }

    /// Journals then writes `rows`, in as many transactions as the journal slot needs.
    fn commit(&mut self, rows: Vec<JournalEntry>) -> Result<(), HistoryError> {
        let mut chunk = Vec::new();
        let mut size = 0;
        for e in rows {
            let add = journal::ENTRY_HEAD + e.image.len();
            if size + add > journal::MAX_PAYLOAD && !chunk.is_empty() {
                self.commit_one(std::mem::take(&mut chunk))?;
                size = 0;
            }
            size += add;
            chunk.push(e);
        }
        if !chunk.is_empty() {
            self.commit_one(chunk)?;
        }
        Ok(())
    }

    fn commit_one(&mut self, entries: Vec<JournalEntry>) -> Result<(), HistoryError> {
        let tx = Transaction {
            seq: self.seq + 1,
            latest_ts: self.latest_ts.unwrap_or(i64::MIN),
            entries,
        };
        let jpath = || self.dir.describe(JOURNAL_FILE);
        self.dir
            .write_at(JOURNAL_FILE, Transaction::slot_offset(tx.seq), &tx.encode())
            .map_err(io_err("write", jpath()))?;
        self.dir
            .sync(JOURNAL_FILE)
            .map_err(io_err("sync", jpath()))?;
        // From here the transaction is durable: a crash below is repaired at open.
        self.seq = tx.seq;
        for e in &tx.entries {
            self.write_row_image(e)?;
        }
        self.sync_data()
    }

    fn write_row_image(&self, e: &JournalEntry) -> Result<(), HistoryError> {
        let off = self.geometry.row_offset(e.block, e.resolution, e.position);
        self.dir
            .write_at(DATA_FILE, off, &e.image)
            .map_err(io_err("write", self.dir.describe(DATA_FILE)))
    }

    fn sync_data(&self) -> Result<(), HistoryError> {
        self.dir
            .sync(DATA_FILE)
            .map_err(io_err("sync", self.dir.describe(DATA_FILE)))
    }

    /// Reads `n` consecutive rows of `block`'s archive `r` starting at `first` (period);
    /// `None` for a slot that holds another period, was never written or is corrupt.
    fn read_rows(
        &self,
        r: Resolution,
        block: u32,
        first: i64,
        n: usize,
        corrupt: &mut usize,
    ) -> Result<Vec<Option<Row>>, HistoryError> {
        let g = &self.geometry;
        let row_bytes = g.row_bytes(r);
        let slots = g.slots(r) as usize;
        let kinds = self.registry.kinds(block);
        let mut out = Vec::with_capacity(n);
        let mut done = 0;
        let mut buf = Vec::new();
        while done < n {
            let period = first + done as i64;
            let pos = g.position(r, period) as usize;
            // Contiguous up to the end of the ring, in reads of at most 1 MiB.
            let take = (n - done)
                .min(slots - pos)
                .min((1 << 20) / row_bytes)
                .max(1);
            buf.resize(take * row_bytes, 0);
            self.dir
                .read_at(DATA_FILE, g.row_offset(block, r, pos as u32), &mut buf)
                .map_err(io_err("read", self.dir.describe(DATA_FILE)))?;
            for i in 0..take {
                let bytes = &buf[i * row_bytes..(i + 1) * row_bytes];
                let want = period + i as i64;
                out.push(match Row::decode(r, bytes, kinds) {
                    Ok(row) if row.period == want => Some(row),
                    Ok(_) | Err(Unusable::Empty) => None,
                    Err(Unusable::Corrupt) => {
                        *corrupt += 1;
                        None
                    }
                });
            }
            done += take;
        }
        Ok(out)
    }

    /// The row at `period`'s ring position, whatever period it holds.
    fn read_slot(&self, r: Resolution, block: u32, period: i64) -> Result<Slot, HistoryError> {
        let g = &self.geometry;
        let mut buf = vec![0; g.row_bytes(r)];
        let pos = g.position(r, period);
        self.dir
            .read_at(DATA_FILE, g.row_offset(block, r, pos), &mut buf)
            .map_err(io_err("read", self.dir.describe(DATA_FILE)))?;
        Ok(match Row::decode(r, &buf, self.registry.kinds(block)) {
            Ok(row) => Slot::Row(row),
            Err(Unusable::Empty) => Slot::Empty,
            Err(Unusable::Corrupt) => Slot::Corrupt,
        })
    }

    /// The archive [`History::query`] reads when none is asked for: the finest one that
    /// still holds `from` (relative to `now`) and gives at most [`MAX_POINTS`] slots.
    pub fn resolution_for(&self, from: i64, to: i64, now: i64) -> Resolution {
        Resolution::ALL
            .into_iter()
            .find(|&r| {
                from >= now - self.geometry.retention_s(r) + r.step_s()
                    && (to - from) / r.step_s() <= MAX_POINTS
            })
            .unwrap_or(Resolution::H1)
    }

    /// The slots of `q.series` in `q.from..q.to` that hold data, at the asked or chosen
    /// resolution. Slots beyond the archive's reach (before `now` minus its retention) are
    /// not returned.
    pub fn query(&self, q: &Query, now: i64) -> Result<Points, HistoryError> {
        if q.to <= q.from {
            return Err(HistoryError::BadRange {
                from: q.from,
                to: q.to,
            });
        }
        let entry = self
            .registry
            .get(&q.series)
            .ok_or_else(|| HistoryError::UnknownSeries(q.series.clone()))?
            .clone();
        let r = q
            .resolution
            .unwrap_or_else(|| self.resolution_for(q.from, q.to, now));
        let step = r.step_s();
        let slots = i64::from(self.geometry.slots(r));
        let newest = now
            .div_euclid(step)
            .max(self.latest_ts.unwrap_or(0).div_euclid(step));
        let mut first = q.from.div_euclid(step).max(newest - slots + 1);
        if let Some(floor) = entry.floor {
            first = first.max(floor.div_euclid(step) + i64::from(floor.rem_euclid(step) != 0));
        }
        let last = (q.to - 1).div_euclid(step);
        let mut points = Vec::new();
        let mut corrupt = 0;
        if last >= first {
            let g = &self.geometry;
            let row_bytes = g.row_bytes(r);
            let kind = q.series.kind();
            let mut buf = Vec::new();
            let mut period = first;
            while period <= last {
                // Contiguous rows up to the end of the ring, in reads of at most 1 MiB.
                let pos = g.position(r, period);
                let take = ((last - period + 1) as usize)
                    .min((slots - i64::from(pos)) as usize)
                    .min((1 << 20) / row_bytes)
                    .max(1);
                buf.resize(take * row_bytes, 0);
                self.dir
                    .read_at(DATA_FILE, g.row_offset(entry.block, r, pos), &mut buf)
                    .map_err(io_err("read", self.dir.describe(DATA_FILE)))?;
                for (i, bytes) in buf.chunks_exact(row_bytes).enumerate() {
                    let want = period + i as i64;
                    match Row::decode_one(r, bytes, entry.column as usize, kind) {
                        Ok((p, Some(c))) if p == want => points.push(Point {
                            ts: want * step,
                            avg: f64::from(c.avg),
                            max: f64::from(c.max),
                            last: f64::from(c.last),
                            samples: u32::from(c.count),
                        }),
                        Err(Unusable::Corrupt) => corrupt += 1,
                        _ => {}
                    }
                }
                period += take as i64;
            }
        }
        if corrupt > 0 {
            warn!(series = %q.series, resolution = %r, corrupt, "corrupt history rows read as empty");
        }
        Ok(Points {
            series: q.series.clone(),
            resolution: r,
            points,
        })
    }

    /// The newest slot holding data for any of `series`, looking back through the 10 s and
    /// then the 1 min archive from [`History::latest_ts`]. For the sync link: the passive
    /// node announces the newest sample it holds of the active node's own series
    /// (`node/<active>/...`), and the active node sends [`History::catch_up`] from there.
    pub fn latest(&self, series: &[SeriesName]) -> Result<Option<i64>, HistoryError> {
        let Some(head) = self.latest_ts else {
            return Ok(None);
        };
        let mut by_block: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for s in series {
            if let Some(e) = self.registry.get(s) {
                by_block.entry(e.block).or_default().push(e.column);
            }
        }
        let mut best: Option<i64> = None;
        for r in [Resolution::S10, Resolution::M1] {
            let step = r.step_s();
            let slots = i64::from(self.geometry.slots(r));
            let end = head.div_euclid(step);
            for (&block, cols) in &by_block {
                let mut hi = end;
                while hi > end - slots {
                    let lo = (hi - 1023).max(end - slots + 1);
                    let mut corrupt = 0;
                    let rows =
                        self.read_rows(r, block, lo, (hi - lo + 1) as usize, &mut corrupt)?;
                    let found = rows.iter().enumerate().rev().find(|(_, row)| {
                        row.as_ref().is_some_and(|row| {
                            cols.iter().any(|&c| row.cells[c as usize].is_some())
                        })
                    });
                    if let Some((i, _)) = found {
                        best = best.max(Some((lo + i as i64) * step));
                        break;
                    }
                    hi = lo - 1;
                }
            }
            if best.is_some() {
                return Ok(best);
            }
        }
        Ok(best)
    }

    /// The stored slots of every series in `from..to` at `resolution`, as batches of at most
    /// `max_cells` cells (one block of series per batch), for the peer to [`History::import`].
    pub fn export(
        &self,
        origin: &str,
        resolution: Resolution,
        from: i64,
        to: i64,
        max_cells: usize,
    ) -> Result<Vec<SampleBatch>, HistoryError> {
        let step = resolution.step_s();
        let slots = i64::from(self.geometry.slots(resolution));
        let first = from.div_euclid(step);
        let last = (to - 1).div_euclid(step);
        let mut out = Vec::new();
        if last < first {
            return Ok(out);
        }
        let first = first.max(last - slots + 1);
        for block in 0..self.registry.blocks {
            let members = self.registry.in_block(block);
            if members.is_empty() {
                continue;
            }
            let floors: Vec<i64> = members
                .iter()
                .map(|(_, n)| {
                    self.registry
                        .get(n)
                        .and_then(|e| e.floor)
                        .unwrap_or(i64::MIN)
                })
                .collect();
            let per_batch = (max_cells / members.len()).max(1) as i64;
            let mut start = first;
            while start <= last {
                let end = (start + per_batch - 1).min(last);
                let mut corrupt = 0;
                let rows = self.read_rows(
                    resolution,
                    block,
                    start,
                    (end - start + 1) as usize,
                    &mut corrupt,
                )?;
                let mut batch = SampleBatch {
                    origin: origin.to_owned(),
                    resolution,
                    series: members.iter().map(|(_, n)| (*n).clone()).collect(),
                    rows: Vec::new(),
                };
                for (i, row) in rows.into_iter().enumerate() {
                    let Some(row) = row else { continue };
                    let ts = (start + i as i64) * step;
                    let cells: Vec<Option<Value>> = members
                        .iter()
                        .zip(&floors)
                        .map(|((c, _), &floor)| {
                            row.cells[*c as usize]
                                .filter(|_| ts >= floor)
                                .map(|cell| Value::from_cell(cell, resolution))
                        })
                        .collect();
                    if cells.iter().any(Option::is_some) {
                        batch.rows.push(BatchRow { ts, cells });
                    }
                }
                if !batch.rows.is_empty() {
                    out.push(batch);
                }
                start = end + 1;
            }
        }
        Ok(out)
    }

    /// What the peer needs after missing everything since `from` (the link was down, or it
    /// was off): the last hour at 10 s, the rest of the last 30 days at 1 min, and anything
    /// older at 15 min (the receiver consolidates the coarser archives itself). Batches of
    /// at most `max_cells` cells, oldest resolution first.
    pub fn catch_up(
        &self,
        origin: &str,
        from: i64,
        now: i64,
        max_cells: usize,
    ) -> Result<Vec<SampleBatch>, HistoryError> {
        let hour = now - 3_600;
        let month = now - 30 * 86_400;
        let end = now + Resolution::S10.step_s();
        let mut out = Vec::new();
        if from < month {
            out.extend(self.export(origin, Resolution::M15, from, month, max_cells)?);
        }
        if from < hour {
            out.extend(self.export(origin, Resolution::M1, from.max(month), hour, max_cells)?);
        }
        out.extend(self.export(origin, Resolution::S10, from.max(hour), end, max_cells)?);
        Ok(out)
    }

    /// Aligns the registry with the series the configuration wants: creates missing ones,
    /// retires those no longer wanted (their history stays readable), brings back retired
    /// ones that are wanted again, and forgets series retired more than [`RETIRED_KEEP_S`]
    /// before `now` (their column is reused; the new owner never sees the old data).
    pub fn reconcile(
        &mut self,
        wanted: &BTreeSet<SeriesName>,
        now: i64,
    ) -> Result<Reconciled, HistoryError> {
        let before = self.registry.clone();
        let mut done = Reconciled::default();
        let existing: Vec<(SeriesName, Option<i64>)> = self
            .registry
            .iter()
            .map(|(n, e)| (n.clone(), e.retired))
            .collect();
        for (name, retired) in existing {
            match (wanted.contains(&name), retired) {
                (true, Some(_)) => {
                    self.registry.revive(&name);
                    done.revived.push(name);
                }
                (false, None) => {
                    self.registry.retire(&name, now);
                    done.retired.push(name);
                }
                (false, Some(at)) if now - at >= RETIRED_KEEP_S => {
                    self.registry.purge(&name, at);
                    done.purged.push(name);
                }
                _ => {}
            }
        }
        for name in wanted {
            if self.registry.get(name).is_none() {
                match self.registry.allocate(name, self.max_blocks) {
                    Some(_) => done.created.push(name.clone()),
                    None => done.full.push(name.clone()),
                }
            }
        }
        if done == Reconciled::default() {
            return Ok(done);
        }
        if let Err(e) = self.persist_registry(&before) {
            self.registry = before;
            return Err(e);
        }
        info!(
            created = done.created.len(),
            retired = done.retired.len(),
            revived = done.revived.len(),
            purged = done.purged.len(),
            full = done.full.len(),
            "history series reconciled"
        );
        Ok(done)
    }
}

/// What a ring position holds.
enum Slot {
    Row(Row),
    Empty,
    Corrupt,
}

/// What [`Txn::put`] did.
enum Put {
    Changed,
    Unchanged,
    Stale,
}

/// Rows being changed by one write, keyed by archive, block and ring position.
struct Txn<'a, D: Dir> {
    store: &'a History<D>,
    rows: HashMap<(Resolution, u32, u32), Row>,
    changed: BTreeSet<(Resolution, u32, u32)>,
    /// Cells changed per (archive, block, period): what the next archive must recompute.
    dirty: BTreeMap<(Resolution, u32, i64), BTreeSet<u32>>,
    corrupt_rows: usize,
}

impl<'a, D: Dir> Txn<'a, D> {
    fn new(store: &'a History<D>) -> Txn<'a, D> {
        Txn {
            store,
            rows: HashMap::new(),
            changed: BTreeSet::new(),
            dirty: BTreeMap::new(),
            corrupt_rows: 0,
        }
    }

    fn floor(&self, block: u32, column: u32) -> Option<i64> {
        self.store.registry.at(block, column).and_then(|e| e.floor)
    }

    /// The row for `period`, loaded or started; `None` when its ring position already holds
    /// a newer period.
    fn row_mut(
        &mut self,
        r: Resolution,
        block: u32,
        period: i64,
    ) -> Result<Option<&mut Row>, HistoryError> {
        let g = &self.store.geometry;
        let key = (r, block, g.position(r, period));
        let columns = g.columns as usize;
        if !self.rows.contains_key(&key) {
            let row = match self.store.read_slot(r, block, period)? {
                Slot::Row(row) => row,
                Slot::Empty => Row::empty(period, columns),
                Slot::Corrupt => {
                    self.corrupt_rows += 1;
                    Row::empty(period, columns)
                }
            };
            self.rows.insert(key, row);
        }
        let Some(row) = self.rows.get_mut(&key) else {
            return Ok(None);
        };
        if row.period > period {
            return Ok(None);
        }
        if row.period < period {
            // The ring moves on: the slot's older period expires.
            *row = Row::empty(period, columns);
        }
        Ok(Some(row))
    }

    fn put(
        &mut self,
        r: Resolution,
        block: u32,
        column: u32,
        period: i64,
        cell: Cell,
        mode: Mode,
    ) -> Result<Put, HistoryError> {
        let Some(row) = self.row_mut(r, block, period)? else {
            return Ok(Put::Stale);
        };
        let slot = &mut row.cells[column as usize];
        let replace = match (*slot, mode) {
            (None, _) => true,
            (Some(old), Mode::Merge) => old.loses_to(&cell),
            (Some(old), Mode::Recompute) => cell.count >= old.count && old != cell,
        };
        if !replace {
            return Ok(Put::Unchanged);
        }
        *slot = Some(cell);
        let pos = self.store.geometry.position(r, period);
        self.changed.insert((r, block, pos));
        self.dirty
            .entry((r, block, period))
            .or_default()
            .insert(column);
        Ok(Put::Changed)
    }

    /// Recomputes the slots of every coarser archive over the cells changed at `from`.
    fn propagate(&mut self, from: Resolution) -> Result<(), HistoryError> {
        let mut fine = from;
        while let Some(coarse) = fine.coarser() {
            let ratio = coarse.children();
            let mut parents: BTreeMap<(u32, i64), BTreeSet<u32>> = BTreeMap::new();
            for ((r, block, period), cols) in &self.dirty {
                if *r == fine {
                    parents
                        .entry((*block, period.div_euclid(ratio)))
                        .or_default()
                        .extend(cols);
                }
            }
            for ((block, parent), cols) in parents {
                let children = self.children(fine, block, parent * ratio, ratio as usize)?;
                for col in cols {
                    let cell = Cell::consolidate(
                        children
                            .iter()
                            .filter_map(|row| row.as_ref().and_then(|r| r.cells[col as usize])),
                    );
                    if let Some(cell) = cell {
                        self.put(coarse, block, col, parent, cell, Mode::Recompute)?;
                    }
                }
            }
            fine = coarse;
        }
        Ok(())
    }

    /// Rows `first..first + n` of archive `r`, from this transaction where it changed them.
    fn children(
        &mut self,
        r: Resolution,
        block: u32,
        first: i64,
        n: usize,
    ) -> Result<Vec<Option<Row>>, HistoryError> {
        // A corrupt child reads as empty; it is counted when a write starts it afresh.
        let mut corrupt = 0;
        let mut rows = self.store.read_rows(r, block, first, n, &mut corrupt)?;
        let g = &self.store.geometry;
        for (i, slot) in rows.iter_mut().enumerate() {
            let period = first + i as i64;
            if let Some(row) = self.rows.get(&(r, block, g.position(r, period))) {
                *slot = (row.period == period).then(|| row.clone());
            }
        }
        Ok(rows)
    }

    fn into_entries(self) -> Vec<JournalEntry> {
        let g = self.store.geometry;
        self.changed
            .iter()
            .filter_map(|key| {
                let row = self.rows.get(key)?;
                let mut image = vec![0; g.row_bytes(key.0)];
                row.encode(key.0, &mut image);
                Some(JournalEntry {
                    resolution: key.0,
                    block: key.1,
                    position: key.2,
                    image,
                })
            })
            .collect()
    }
}
