//! Behaviour of the history store through its public API: consolidation into each archive,
//! retention, restarts, the series life cycle, bad input, and the real directory's fixed
//! file sizes. Crash safety is in `crash.rs`, failover continuity in `failover.rs`.

use std::collections::BTreeSet;

use tandem_history::{
    BatchRow, FsDir, Geometry, History, HistoryError, MemDir, Metric, Options, Points, Query,
    Resolution, SampleBatch, SeriesName, Value, testing::FaultDir,
};

/// A small geometry: 10 s for 2 min, 1 min for 30 min, 15 min for 2 h, 1 h for 6 h, 4 series
/// per block. Same code paths as the standard one, hours instead of years.
fn small() -> Options {
    Options {
        geometry: Geometry {
            slots: [12, 30, 8, 6],
            columns: 4,
        },
        max_series: 64,
    }
}

fn server(name: &str, metric: Metric) -> SeriesName {
    SeriesName::server("app", name, metric).unwrap()
}

fn query(
    h: &History<impl tandem_history::Dir>,
    s: &SeriesName,
    from: i64,
    to: i64,
    r: Resolution,
    now: i64,
) -> Points {
    h.query(
        &Query {
            series: s.clone(),
            from,
            to,
            resolution: Some(r),
        },
        now,
    )
    .unwrap()
}

/// Day 20 000 since the epoch (2024-10-04), a round hour.
const T0: i64 = 20_000 * 86_400;

#[test]
fn samples_consolidate_into_average_peak_and_last_at_every_resolution() {
    let (mut h, opened) = History::open(MemDir::new(), Options::default()).unwrap();
    assert!(opened.created);
    let rps = server("web1", Metric::RequestsPerS);
    let health = server("web1", Metric::Health);
    // Two hours of 10 s samples: requests rise 0, 1, 2, ... ; the server is down (3) for
    // the first minute of every 15 minutes.
    for i in 0..720 {
        let ts = T0 + i * 10;
        let down = (i % 90) < 6;
        let batch = SampleBatch::interval(
            "lb1",
            ts,
            [
                (rps.clone(), i as f64),
                (health.clone(), if down { 3.0 } else { 0.0 }),
            ],
        );
        let w = h.record(&batch).unwrap();
        assert_eq!(w.cells, 2);
    }
    let now = T0 + 7_200;
    let p = query(&h, &rps, T0, T0 + 60, Resolution::S10, now);
    assert_eq!(p.points.len(), 6);
    assert_eq!(
        (p.points[5].ts, p.points[5].max, p.points[5].samples),
        (T0 + 50, 5.0, 1)
    );

    let p = query(&h, &rps, T0, now, Resolution::M1, now);
    assert_eq!(p.points.len(), 120);
    let m = p.points[3]; // samples 18..24
    assert_eq!(
        (m.ts, m.samples, m.avg, m.max, m.last),
        (T0 + 180, 6, 20.5, 23.0, 23.0)
    );

    let p = query(&h, &rps, T0, now, Resolution::M15, now);
    assert_eq!(p.points.len(), 8);
    assert_eq!(
        (p.points[1].samples, p.points[1].avg, p.points[1].max),
        (90, 134.5, 179.0)
    );

    let p = query(&h, &rps, T0, now, Resolution::H1, now);
    assert_eq!(p.points.len(), 2);
    assert_eq!(
        (p.points[1].samples, p.points[1].avg, p.points[1].max),
        (360, 539.5, 719.0)
    );

    // States: availability in avg, worst in max, state at the end in last.
    let p = query(&h, &health, T0, now, Resolution::H1, now);
    let hour = p.points[0];
    assert!((hour.avg - 84.0 / 90.0).abs() < 1e-6, "{hour:?}");
    assert_eq!((hour.max, hour.last), (3.0, 0.0));
    let p = query(&h, &health, T0, T0 + 60, Resolution::M1, now);
    assert_eq!((p.points[0].avg, p.points[0].max), (0.0, 3.0));
}

#[test]
fn each_archive_keeps_its_reach_and_no_more() {
    let (mut h, _) = History::open(MemDir::new(), small()).unwrap();
    let s = server("web1", Metric::Sessions);
    // 10 hours of samples.
    let end = T0 + 36_000;
    for ts in (T0..end).step_by(10) {
        h.record(&SampleBatch::interval("lb1", ts, [(s.clone(), 1.0)]))
            .unwrap();
    }
    let now = end - 10;
    for (r, kept) in [
        (Resolution::S10, 12),
        (Resolution::M1, 30),
        (Resolution::M15, 8),
        (Resolution::H1, 6),
    ] {
        let p = query(&h, &s, T0, end, r, now);
        assert_eq!(p.points.len(), kept, "{r}");
        let step = r.step_s();
        assert_eq!(
            p.points.first().unwrap().ts,
            end - kept as i64 * step,
            "{r}: oldest kept"
        );
        assert!(
            p.points.iter().all(|p| p.samples == (step / 10) as u32),
            "{r}: full slots"
        );
    }
    // What left the 10 s archive is still in the coarser ones.
    let old = T0 + 3_600;
    assert!(
        query(&h, &s, old, old + 60, Resolution::S10, now)
            .points
            .is_empty()
    );
    assert!(
        query(&h, &s, old, old + 60, Resolution::M1, now)
            .points
            .is_empty()
    );
    assert_eq!(
        query(&h, &s, T0 + 18_000, T0 + 21_600, Resolution::H1, now)
            .points
            .len(),
        1
    );
}

#[test]
fn the_standard_ten_second_archive_holds_two_days() {
    let (mut h, _) = History::open(MemDir::new(), Options::default()).unwrap();
    let s = SeriesName::node("lb1", Metric::Cpu).unwrap();
    let two_days = 2 * 86_400;
    let end = T0 + two_days + 3_600;
    // An hour of 10 s slots per batch (as a backlog arrives), to keep the test fast.
    for hour in (T0..end).step_by(3_600) {
        let batch = SampleBatch {
            origin: "lb1".into(),
            resolution: Resolution::S10,
            series: vec![s.clone()],
            rows: (hour..hour + 3_600)
                .step_by(10)
                .map(|ts| BatchRow {
                    ts,
                    cells: vec![Some(Value::Sample(0.5))],
                })
                .collect(),
        };
        assert_eq!(h.record(&batch).unwrap().cells, 360);
    }
    let now = end - 10;
    let p = query(&h, &s, T0, end, Resolution::S10, now);
    assert_eq!(p.points.len(), 17_280);
    assert_eq!(p.points[0].ts, end - two_days);
    let p = query(&h, &s, T0, end, Resolution::M1, now);
    assert_eq!(
        p.points.len(),
        (two_days + 3_600) as usize / 60,
        "1 min keeps it all"
    );
    // The automatic choice: 10 s for an hour, 1 min for two days, 1 h for a year.
    assert_eq!(h.resolution_for(now - 3_600, now, now), Resolution::S10);
    assert_eq!(
        h.resolution_for(now - two_days + 600, now, now),
        Resolution::M1
    );
    assert_eq!(
        h.resolution_for(now - 365 * 86_400, now, now),
        Resolution::H1
    );
}

#[test]
fn history_survives_a_restart() {
    let dir = MemDir::new();
    let s = server("web1", Metric::P99Ms);
    {
        let (mut h, _) = History::open(dir.clone(), small()).unwrap();
        for i in 0..30 {
            h.record(&SampleBatch::interval(
                "lb1",
                T0 + i * 10,
                [(s.clone(), i as f64)],
            ))
            .unwrap();
        }
    }
    let (h, opened) = History::open(dir, small()).unwrap();
    assert!(!opened.created);
    assert_eq!(opened.series, 1);
    assert_eq!(
        opened.replayed_rows, 4,
        "the last transaction's rows, written again harmlessly"
    );
    let p = query(&h, &s, T0, T0 + 300, Resolution::M1, T0 + 300);
    assert_eq!(p.points.len(), 5);
    assert_eq!((p.points[4].max, p.points[4].samples), (29.0, 6));
    assert_eq!(h.latest_ts(), Some(T0 + 290));
}

#[test]
fn removed_servers_are_retired_then_forgotten_and_their_column_reused_clean() {
    let (mut h, _) = History::open(MemDir::new(), small()).unwrap();
    let old = server("old", Metric::Sessions);
    let keep = server("keep", Metric::Sessions);
    h.record(&SampleBatch::interval(
        "lb1",
        T0,
        [(old.clone(), 7.0), (keep.clone(), 1.0)],
    ))
    .unwrap();
    let wanted: BTreeSet<SeriesName> = [keep.clone()].into();
    let r = h.reconcile(&wanted, T0 + 60).unwrap();
    assert_eq!(r.retired, vec![old.clone()]);
    assert_eq!(
        h.series().iter().find(|s| s.name == old).unwrap().retired,
        Some(T0 + 60)
    );
    // Still readable while retired.
    assert_eq!(
        query(&h, &old, T0, T0 + 60, Resolution::H1, T0 + 60)
            .points
            .len(),
        1
    );

    let later = T0 + 60 + 30 * 86_400;
    let r = h.reconcile(&wanted, later).unwrap();
    assert_eq!(r.purged, vec![old.clone()]);
    assert!(matches!(
        h.query(
            &Query {
                series: old.clone(),
                from: T0,
                to: later,
                resolution: None
            },
            later
        ),
        Err(HistoryError::UnknownSeries(_))
    ));
    // A new series takes the freed column and does not inherit the old owner's slots.
    let new = server("new", Metric::Sessions);
    let wanted: BTreeSet<SeriesName> = [keep.clone(), new.clone()].into();
    assert_eq!(
        h.reconcile(&wanted, later).unwrap().created,
        vec![new.clone()]
    );
    assert!(
        query(&h, &new, T0, later, Resolution::H1, T0 + 3_600)
            .points
            .is_empty()
    );
    assert_eq!(
        query(&h, &keep, T0, T0 + 60, Resolution::H1, T0 + 3_600)
            .points
            .len(),
        1
    );
}

#[test]
fn a_full_store_refuses_new_series_and_keeps_recording_the_others() {
    let mut o = small();
    o.max_series = 4; // one block
    let (mut h, _) = History::open(MemDir::new(), o).unwrap();
    let names: Vec<SeriesName> = (0..6)
        .map(|i| server(&format!("s{i}"), Metric::Sessions))
        .collect();
    let w = h
        .record(&SampleBatch::interval(
            "lb1",
            T0,
            names.iter().map(|n| (n.clone(), 1.0)),
        ))
        .unwrap();
    assert_eq!(w.created.len(), 4);
    assert_eq!(w.full, names[4..].to_vec());
    assert_eq!(w.cells, 4);
    assert_eq!(h.footprint().capacity, 4);
}

#[test]
fn bad_batches_are_refused_whole_and_future_slots_are_not_imported() {
    let (mut h, _) = History::open(MemDir::new(), small()).unwrap();
    let s = server("web1", Metric::Sessions);
    h.record(&SampleBatch::interval("lb1", T0, [(s.clone(), 5.0)]))
        .unwrap();
    let mut bad = SampleBatch::interval("lb2", T0, [(s.clone(), 9.0)]);
    bad.rows[0].cells.push(Some(Value::Sample(1.0)));
    let e = h.import(&bad, T0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sample batch from lb2 refused: row 0 (ts 1728000000) has 2 cells for 1 series"
    );
    // A peer whose clock is a day ahead cannot overwrite ring slots.
    let w = h
        .import(
            &SampleBatch::interval("lb2", T0 + 86_400, [(s.clone(), 9.0)]),
            T0,
        )
        .unwrap();
    assert_eq!((w.future, w.cells, w.rows), (1, 0, 0));
    let w = h
        .import(
            &SampleBatch::interval("lb2", T0, [(s.clone(), f64::NAN)]),
            T0,
        )
        .unwrap();
    assert_eq!(w.invalid, 1);
    let p = query(&h, &s, T0, T0 + 10, Resolution::S10, T0);
    assert_eq!(p.points[0].max, 5.0);
}

#[test]
fn the_real_directory_has_fixed_sizes_and_reopens() {
    let root = std::env::temp_dir().join(format!("tandem-history-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let g = Geometry::STANDARD;
    let s = server("web1", Metric::Sessions);
    {
        let (mut h, _) = History::open(FsDir::new(&root).unwrap(), Options::default()).unwrap();
        for i in 0..12 {
            h.record(&SampleBatch::interval(
                "lb1",
                T0 + i * 10,
                [(s.clone(), 2.0)],
            ))
            .unwrap();
        }
        assert_eq!(h.footprint().data_bytes, g.file_bytes(1));
    }
    let len = |f: &str| std::fs::metadata(root.join(f)).unwrap().len();
    assert_eq!(len("data"), 4096 + 146_562_240);
    assert_eq!(len("journal"), 8 << 20);
    // Space is reserved, not sparse (where the file system supports fallocate).
    use std::os::unix::fs::MetadataExt as _;
    let blocks = std::fs::metadata(root.join("data")).unwrap().blocks() * 512;
    assert!(
        blocks >= len("data") || blocks < 1 << 20,
        "allocated {blocks} of {}",
        len("data")
    );
    let (h, _) = History::open(FsDir::new(&root).unwrap(), Options::default()).unwrap();
    let p = query(&h, &s, T0, T0 + 120, Resolution::M1, T0 + 120);
    assert_eq!(
        p.points.iter().map(|p| p.samples).collect::<Vec<_>>(),
        vec![6, 6]
    );
    // Opening with another geometry is refused, naming the file.
    let e = History::open(FsDir::new(&root).unwrap(), small()).unwrap_err();
    assert!(e.to_string().contains("data has another layout"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_corrupt_row_reads_as_empty_and_the_store_still_opens() {
    let dir = MemDir::new();
    let s = server("web1", Metric::Sessions);
    let g = small().geometry;
    {
        let (mut h, _) = History::open(dir.clone(), small()).unwrap();
        for i in 0..6 {
            h.record(&SampleBatch::interval(
                "lb1",
                T0 + i * 10,
                [(s.clone(), 3.0)],
            ))
            .unwrap();
        }
        // One more transaction elsewhere, so the journal no longer holds the rows below.
        h.record(&SampleBatch::interval("lb1", T0 + 60, [(s.clone(), 3.0)]))
            .unwrap();
    }
    // Flip a byte in the middle of the 10 s row for T0 + 20 (media error, not a torn write).
    let period = (T0 + 20) / 10;
    let off = g.row_offset(0, Resolution::S10, g.position(Resolution::S10, period));
    dir.corrupt("data", off + 9, &[0xFF]);
    let (mut h, opened) = History::open(dir.clone(), small()).unwrap();
    assert_eq!(opened.replayed_rows, 4);
    let p = query(&h, &s, T0, T0 + 60, Resolution::S10, T0 + 60);
    assert_eq!(
        p.points.iter().map(|p| p.ts - T0).collect::<Vec<_>>(),
        vec![0, 10, 30, 40, 50]
    );
    // The minute was consolidated before the damage: it still counts six samples.
    assert_eq!(
        query(&h, &s, T0, T0 + 60, Resolution::M1, T0 + 60).points[0].samples,
        6
    );
    // The slot can be written again.
    let w = h
        .record(&SampleBatch::interval("lb1", T0 + 20, [(s.clone(), 4.0)]))
        .unwrap();
    assert_eq!(w.corrupt_rows, 1);
    let p = query(&h, &s, T0, T0 + 60, Resolution::S10, T0 + 60);
    assert_eq!(p.points.len(), 6);
}

#[test]
fn a_crash_while_creating_the_store_leaves_one_that_opens() {
    let s = server("web1", Metric::Sessions);
    for op in 0..12 {
        let dir = FaultDir::new();
        dir.crash_at(op, 0);
        let result = History::open(dir.clone(), small())
            .and_then(|(mut h, _)| h.record(&SampleBatch::interval("lb1", T0, [(s.clone(), 1.0)])));
        let crashed = dir.crashed();
        assert_eq!(crashed, result.is_err(), "op {op}");
        let after = dir.power_cut(tandem_history::testing::Persist::Nothing);
        let (mut h, _) = History::open(after, small()).unwrap();
        h.record(&SampleBatch::interval("lb1", T0 + 10, [(s.clone(), 1.0)]))
            .unwrap();
        let p = query(&h, &s, T0, T0 + 20, Resolution::S10, T0 + 20);
        assert!(!p.points.is_empty(), "op {op}");
    }
}
