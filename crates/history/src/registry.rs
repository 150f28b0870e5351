//! The series registry (`series.json`): which block and column each series occupies, since
//! when a reused column is clean, and which series are retired (removed from the
//! configuration, kept [`crate::RETIRED_KEEP_S`] before their column is freed).
//!
//! Owns column allocation and the registry file's encoding; pure. Must not do IO: the store
//! writes the encoded registry (atomically) before any sample lands in a new column.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::series::{Kind, SeriesName};

/// Where a series lives and its life cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Block (group of `columns` series) in the data file.
    pub block: u32,
    /// Column within the block's rows.
    pub column: u32,
    /// Slots starting before this time (unix seconds) belong to the column's previous owner
    /// and are never read for this series; `None` for a column never used before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i64>,
    /// When the series left the configuration (unix seconds); its column is freed
    /// [`crate::RETIRED_KEEP_S`] later unless it comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileSeries {
    name: SeriesName,
    #[serde(flatten)]
    entry: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileFreed {
    block: u32,
    column: u32,
    floor: i64,
}

/// The registry file's shape.
#[derive(Debug, Serialize, Deserialize)]
struct File {
    format: u32,
    blocks: u32,
    series: Vec<FileSeries>,
    #[serde(default)]
    freed: Vec<FileFreed>,
}

/// The registry in memory.
#[derive(Debug, Clone)]
pub struct Registry {
    columns: u32,
    /// Blocks allocated in the data file.
    pub blocks: u32,
    series: BTreeMap<SeriesName, Entry>,
    owners: HashMap<(u32, u32), SeriesName>,
    /// Freed columns and the floor a new owner inherits.
    freed: BTreeMap<(u32, u32), i64>,
    kinds: Vec<Vec<Kind>>,
}

impl Registry {
    /// An empty registry for blocks of `columns` series.
    pub fn new(columns: u32) -> Registry {
        Registry {
            columns,
            blocks: 0,
            series: BTreeMap::new(),
            owners: HashMap::new(),
            freed: BTreeMap::new(),
            kinds: Vec::new(),
        }
    }

    /// Decodes `series.json`.
    pub fn decode(bytes: &[u8], columns: u32) -> Result<Registry, String> {
        let f: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if f.format != 1 {
            return Err(format!(
                "registry format {}, this firmware reads 1",
                f.format
            ));
        }
        let mut r = Registry::new(columns);
        r.blocks = f.blocks;
        r.kinds = vec![vec![Kind::Gauge; columns as usize]; f.blocks as usize];
        for s in f.series {
            let e = s.entry;
            if e.block >= f.blocks || e.column >= columns {
                return Err(format!(
                    "{} is at block {} column {}, outside {} blocks of {columns}",
                    s.name, e.block, e.column, f.blocks
                ));
            }
            if let Some(other) = r.owners.insert((e.block, e.column), s.name.clone()) {
                return Err(format!(
                    "{} and {other} share block {} column {}",
                    s.name, e.block, e.column
                ));
            }
            r.kinds[e.block as usize][e.column as usize] = s.name.kind();
            r.series.insert(s.name, e);
        }
        for fr in f.freed {
            if !r.owners.contains_key(&(fr.block, fr.column)) {
                r.freed.insert((fr.block, fr.column), fr.floor);
            }
        }
        Ok(r)
    }

    /// Encodes `series.json`.
    pub fn encode(&self) -> Vec<u8> {
        let f = File {
            format: 1,
            blocks: self.blocks,
            series: self
                .series
                .iter()
                .map(|(name, entry)| FileSeries {
                    name: name.clone(),
                    entry: entry.clone(),
                })
                .collect(),
            freed: self
                .freed
                .iter()
                .map(|(&(block, column), &floor)| FileFreed {
                    block,
                    column,
                    floor,
                })
                .collect(),
        };
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec_pretty(&f).unwrap_or_default()
    }

    /// The series' entry.
    pub fn get(&self, name: &SeriesName) -> Option<&Entry> {
        self.series.get(name)
    }

    /// Every series, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesName, &Entry)> {
        self.series.iter()
    }

    /// How many series are registered.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The entry of the series in `block`'s `column`, if any.
    pub fn at(&self, block: u32, column: u32) -> Option<&Entry> {
        self.owners
            .get(&(block, column))
            .and_then(|n| self.series.get(n))
    }

    /// The series in `block`, by column.
    pub fn in_block(&self, block: u32) -> Vec<(u32, &SeriesName)> {
        let mut v: Vec<(u32, &SeriesName)> = self
            .owners
            .iter()
            .filter(|((b, _), _)| *b == block)
            .map(|(&(_, c), n)| (c, n))
            .collect();
        v.sort();
        v
    }

    /// The kind of each column of `block` (free columns read as gauges).
    pub fn kinds(&self, block: u32) -> &[Kind] {
        self.kinds.get(block as usize).map_or(&[], Vec::as_slice)
    }

    /// Gives `name` a column: a free one in an existing block (lowest first), else a column
    /// of a new block when fewer than `max_blocks` exist; `None` when the store is full.
    pub fn allocate(&mut self, name: &SeriesName, max_blocks: u32) -> Option<Entry> {
        if let Some(e) = self.series.get(name) {
            return Some(e.clone());
        }
        let free = (0..self.blocks)
            .flat_map(|b| (0..self.columns).map(move |c| (b, c)))
            .find(|k| !self.owners.contains_key(k));
        let (block, column) = match free {
            Some(k) => k,
            None if self.blocks < max_blocks => {
                self.blocks += 1;
                self.kinds.push(vec![Kind::Gauge; self.columns as usize]);
                (self.blocks - 1, 0)
            }
            None => return None,
        };
        let entry = Entry {
            block,
            column,
            floor: self.freed.remove(&(block, column)),
            retired: None,
        };
        self.owners.insert((block, column), name.clone());
        self.kinds[block as usize][column as usize] = name.kind();
        self.series.insert(name.clone(), entry.clone());
        Some(entry)
    }

    /// Marks `name` retired at `now`; false if unknown or already retired.
    pub fn retire(&mut self, name: &SeriesName, now: i64) -> bool {
        match self.series.get_mut(name) {
            Some(e) if e.retired.is_none() => {
                e.retired = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Brings a retired series back; false if it was not retired.
    pub fn revive(&mut self, name: &SeriesName) -> bool {
        match self.series.get_mut(name) {
            Some(e) if e.retired.is_some() => {
                e.retired = None;
                true
            }
            _ => false,
        }
    }

    /// Forgets `name` and frees its column; a later owner sees nothing before `floor`.
    pub fn purge(&mut self, name: &SeriesName, floor: i64) -> bool {
        let Some(e) = self.series.remove(name) else {
            return false;
        };
        self.owners.remove(&(e.block, e.column));
        let floor = e.floor.map_or(floor, |f| f.max(floor));
        self.freed.insert((e.block, e.column), floor);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Metric;

    fn name(s: &str) -> SeriesName {
        SeriesName::server("app", s, Metric::Sessions).unwrap()
    }

    #[test]
    fn columns_fill_blocks_then_the_store_is_full() {
        let mut r = Registry::new(2);
        let a = r.allocate(&name("a"), 2).unwrap();
        let b = r.allocate(&name("b"), 2).unwrap();
        let c = r.allocate(&name("c"), 2).unwrap();
        assert_eq!((a.block, a.column, b.block, b.column), (0, 0, 0, 1));
        assert_eq!((c.block, c.column, r.blocks), (1, 0, 2));
        assert_eq!(
            r.allocate(&name("a"), 2),
            Some(a),
            "allocating twice is a lookup"
        );
        r.allocate(&name("d"), 2).unwrap();
        assert_eq!(r.allocate(&name("e"), 2), None);
    }

    #[test]
    fn a_reused_column_carries_the_floor_and_the_file_round_trips() {
        let mut r = Registry::new(4);
        r.allocate(&name("a"), 1).unwrap();
        r.allocate(&name("b"), 1).unwrap();
        assert!(r.retire(&name("a"), 100));
        assert!(r.purge(&name("a"), 100));
        let c = r.allocate(&name("c"), 1).unwrap();
        assert_eq!((c.column, c.floor), (0, Some(100)));
        let back = Registry::decode(&r.encode(), 4).unwrap();
        assert_eq!(back.get(&name("c")), Some(&c));
        assert_eq!(back.get(&name("a")), None);
        assert_eq!(back.blocks, 1);
        assert!(Registry::decode(b"{", 4).is_err());
    }
}
