//! The sample batch: what the sample producer hands the store every interval, and what the
//! active node sends the passive one over the sync link (JSON, via serde).
//!
//! Owns the wire shape. Must not know the files. The same type carries live 10 s samples
//! ([`SampleBatch::interval`]) and consolidated slots exported for a catch-up after the link
//! was down ([`crate::History::catch_up`]).
//!
//! ```json
//! {"origin":"lb1","resolution":"10s",
//!  "series":["backend/app/sessions","server/app/web1/p99_ms"],
//!  "rows":[{"ts":1767225600,"cells":[412.0,38.5]}]}
//! ```
//!
//! A cell is a bare number for one raw sample, `[count, avg, max, last]` for a consolidated
//! slot, or `null` where that series has nothing for that slot. Fields are only ever added
//! (with defaults), so two firmware versions can exchange batches.

use serde::{Deserialize, Serialize};

use crate::cell::Cell;
use crate::layout::Resolution;
use crate::series::{Kind, SeriesName};

/// Samples for one or more slots of one archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    /// The node that recorded them (for logs; merging does not depend on it).
    pub origin: String,
    /// The archive the rows belong to.
    pub resolution: Resolution,
    /// The series, in the order of each row's cells.
    pub series: Vec<SeriesName>,
    /// One entry per slot.
    pub rows: Vec<BatchRow>,
}

/// One slot: its start time and a cell per series of the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRow {
    /// Slot start, unix seconds (floored to the archive's step by the store).
    pub ts: i64,
    /// One per series of the batch; `None` where it has no sample.
    pub cells: Vec<Option<Value>>,
}

/// A cell on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// One raw sample.
    Sample(f64),
    /// A consolidated slot: samples, average, maximum, latest.
    Consolidated(u16, f32, f32, f32),
}

impl Value {
    /// The cell it stands for in a series of kind `kind`; `None` if it is not finite or
    /// counts no sample.
    pub fn to_cell(self, kind: Kind) -> Option<Cell> {
        let cell = match self {
            Value::Sample(v) => Cell::sample(kind, v as f32),
            Value::Consolidated(count, avg, max, last) => Cell {
                count,
                avg,
                max,
                last,
            },
        };
        cell.is_valid().then_some(cell)
    }

    /// The wire form of a stored cell.
    pub fn from_cell(cell: Cell, resolution: Resolution) -> Value {
        if resolution == Resolution::S10 {
            Value::Sample(f64::from(cell.last))
        } else {
            Value::Consolidated(cell.count, cell.avg, cell.max, cell.last)
        }
    }
}

impl SampleBatch {
    /// One 10 s interval recorded by `origin` at `ts`: the producer's samples.
    pub fn interval(
        origin: impl Into<String>,
        ts: i64,
        samples: impl IntoIterator<Item = (SeriesName, f64)>,
    ) -> SampleBatch {
        let (series, cells): (Vec<SeriesName>, Vec<Option<Value>>) = samples
            .into_iter()
            .map(|(s, v)| (s, Some(Value::Sample(v))))
            .unzip();
        SampleBatch {
            origin: origin.into(),
            resolution: Resolution::S10,
            series,
            rows: vec![BatchRow { ts, cells }],
        }
    }

    /// How many cells carry a value.
    pub fn cells(&self) -> usize {
        self.rows
            .iter()
            .map(|r| r.cells.iter().filter(|c| c.is_some()).count())
            .sum()
    }

    /// Checks the shape: every row has one cell per series, timestamps are not negative.
    pub fn check(&self) -> Result<(), String> {
        for (i, row) in self.rows.iter().enumerate() {
            if row.cells.len() != self.series.len() {
                return Err(format!(
                    "row {i} (ts {}) has {} cells for {} series",
                    row.ts,
                    row.cells.len(),
                    self.series.len()
                ));
            }
            if row.ts < 0 {
                return Err(format!("row {i} has a negative timestamp {}", row.ts));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Metric;

    #[test]
    fn wire_shape_is_compact_and_round_trips() {
        let s = SeriesName::backend("app", Metric::Sessions).unwrap();
        let mut b = SampleBatch::interval("lb1", 1_767_225_600, [(s.clone(), 412.0)]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"origin":"lb1","resolution":"10s","series":["backend/app/sessions"],"rows":[{"ts":1767225600,"cells":[412.0]}]}"#
        );
        assert_eq!(serde_json::from_str::<SampleBatch>(&json).unwrap(), b);
        b.resolution = Resolution::H1;
        b.rows[0].cells = vec![Some(Value::Consolidated(360, 1.5, 9.0, 2.0)), None]
            .into_iter()
            .take(1)
            .collect();
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""cells":[[360,1.5,9.0,2.0]]"#), "{json}");
        assert_eq!(serde_json::from_str::<SampleBatch>(&json).unwrap(), b);
    }

    #[test]
    fn bad_names_and_shapes_are_refused() {
        let e = serde_json::from_str::<SampleBatch>(
            r#"{"origin":"lb1","resolution":"10s","series":["backend/app/bogus"],"rows":[]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown metric `bogus`"), "{e}");
        let b: SampleBatch = serde_json::from_str(
            r#"{"origin":"lb1","resolution":"1m","series":["backend/app/queue"],"rows":[{"ts":60,"cells":[]}]}"#,
        )
        .unwrap();
        assert_eq!(
            b.check().unwrap_err(),
            "row 0 (ts 60) has 0 cells for 1 series"
        );
        assert_eq!(Value::Sample(f64::INFINITY).to_cell(Kind::Gauge), None);
        assert_eq!(
            Value::Consolidated(0, 1.0, 1.0, 1.0).to_cell(Kind::Gauge),
            None
        );
    }
}
