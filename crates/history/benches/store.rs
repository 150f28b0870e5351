//! Criterion-free benchmark of the history store (like `tandem-balance`'s): the time to
//! record one 10 s interval for 100 servers (1648 series: 10 frontends, 10 backends, 100
//! servers, 2 nodes) in memory and on a real directory with its syncs, and the time of a
//! one-year query. Run with `cargo bench -p tandem-history`; `HISTORY_BENCH_DIR` picks the
//! directory for the on-disk run (default: the system temp directory).
//!
//! Owns nothing but this measurement. It reads the wall clock to time loops, which the
//! library never does, and asserts nothing, so it cannot fail on a slow or busy machine.

use std::hint::black_box;
use std::time::Instant;

use tandem_history::{
    Dir, FsDir, History, MemDir, Metric, Options, Query, Resolution, SampleBatch, SeriesName, Value,
};

const T0: i64 = 20_000 * 86_400;

/// The series of a farm of 10 frontends, 10 backends of 10 servers each, and 2 nodes.
fn farm() -> Vec<SeriesName> {
    let mut v = Vec::new();
    for f in 0..10 {
        for &m in Metric::FRONTEND {
            v.push(SeriesName::frontend(&format!("fe{f}"), m).unwrap());
        }
    }
    for b in 0..10 {
        let backend = format!("be{b}");
        for &m in Metric::BACKEND {
            v.push(SeriesName::backend(&backend, m).unwrap());
        }
        for s in 0..10 {
            for &m in Metric::SERVER {
                v.push(SeriesName::server(&backend, &format!("web{s}"), m).unwrap());
            }
        }
    }
    for n in ["lb1", "lb2"] {
        for &m in Metric::NODE {
            v.push(SeriesName::node(n, m).unwrap());
        }
    }
    v
}

fn interval(series: &[SeriesName], i: i64) -> SampleBatch {
    SampleBatch::interval(
        "lb1",
        T0 + i * 10,
        series
            .iter()
            .enumerate()
            .map(|(k, s)| (s.clone(), ((k as i64 * 7 + i) % 100) as f64)),
    )
}

fn write_bench(label: &str, dir: impl Dir, series: &[SeriesName], intervals: i64) {
    let (mut h, _) = History::open(dir, Options::default()).expect("open");
    // Warm up: create the series and fill a first hour (so coarse slots have children).
    for i in 0..360 {
        h.record(&interval(series, i)).expect("record");
    }
    let batches: Vec<SampleBatch> = (360..360 + intervals)
        .map(|i| interval(series, i))
        .collect();
    let start = Instant::now();
    for b in &batches {
        black_box(h.record(b).expect("record"));
    }
    let per = start.elapsed() / intervals as u32;
    println!(
        "record one interval, {} series, {label}: {:.2} ms ({intervals} intervals)",
        series.len(),
        per.as_secs_f64() * 1e3
    );
}

fn query_bench(series: &[SeriesName]) {
    let (mut h, _) = History::open(MemDir::new(), Options::default()).expect("open");
    // One block of series with a year of 15 min slots (imported as a peer would send them);
    // the store consolidates the hours itself.
    let block: Vec<SeriesName> = series.iter().take(64).cloned().collect();
    let year = 365 * 86_400;
    let rows = year / 900;
    for chunk in (0..rows).collect::<Vec<_>>().chunks(96 * 7) {
        let b = SampleBatch {
            origin: "lb2".into(),
            resolution: Resolution::M15,
            series: block.clone(),
            rows: chunk
                .iter()
                .map(|&p| tandem_history::BatchRow {
                    ts: T0 + p * 900,
                    cells: (0..block.len())
                        .map(|k| {
                            let v = ((p + k as i64) % 50) as f32;
                            Some(Value::Consolidated(90, v, v + 1.0, v))
                        })
                        .collect(),
                })
                .collect(),
        };
        h.import(&b, T0 + year).expect("import");
    }
    let now = T0 + year;
    for (label, res) in [("auto (1 h)", None), ("15 min", Some(Resolution::M15))] {
        let q = Query {
            series: block[3].clone(),
            from: now - year,
            to: now,
            resolution: res,
        };
        let runs = 50;
        let start = Instant::now();
        let mut points = 0;
        for _ in 0..runs {
            points = black_box(h.query(&q, now).expect("query")).points.len();
        }
        let per = start.elapsed() / runs;
        println!(
            "query one series over a year at {label}: {:.2} ms, {points} points",
            per.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let series = farm();
    write_bench("in memory", MemDir::new(), &series, 300);
    let base = std::env::var_os("HISTORY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("tandem-history-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_bench(
        &format!("on disk in {} with fdatasync", base.display()),
        FsDir::new(&root).expect("bench dir"),
        &series,
        100,
    );
    let _ = std::fs::remove_dir_all(&root);
    query_bench(&series);
}
