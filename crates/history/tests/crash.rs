//! Crash safety of the history store, with the fault-injecting directory: the process dies at
//! every write of an interval, the write in flight torn after every possible number of bytes,
//! then the power is cut with none, all, or a seeded mix of the unsynced writes on disk. The
//! store must always reopen, keep every earlier interval, and hold the interrupted one whole
//! or not at all, with coarse slots that agree with the fine ones.
//!
//! The seeded run prints its seed on failure; replay one with
//! `TANDEM_HISTORY_CRASH_SEED=<seed> cargo test -p tandem-history --test crash`, widen with
//! `TANDEM_HISTORY_CRASH_SEEDS=<count>`.

use tandem_history::testing::{FaultDir, Persist};
use tandem_history::{
    Dir, Geometry, History, MemDir, Metric, Options, Query, Resolution, SampleBatch, SeriesName,
};

const T0: i64 = 20_000 * 86_400;

/// 10 s for about 10 minutes, 4 series per block.
fn options() -> Options {
    Options {
        geometry: Geometry {
            slots: [64, 32, 8, 6],
            columns: 4,
        },
        max_series: 64,
    }
}

fn series(n: usize) -> Vec<SeriesName> {
    (0..n)
        .map(|i| SeriesName::server("app", &format!("web{i}"), Metric::Sessions).unwrap())
        .collect()
}

fn value(k: usize, i: i64) -> f64 {
    (k as i64 * 1_000 + i) as f64
}

fn interval(names: &[SeriesName], i: i64) -> SampleBatch {
    SampleBatch::interval(
        "lb1",
        T0 + i * 10,
        names
            .iter()
            .enumerate()
            .map(|(k, s)| (s.clone(), value(k, i))),
    )
}

fn points(h: &History<impl Dir>, s: &SeriesName, r: Resolution, now: i64) -> Vec<(i64, f64, u32)> {
    h.query(
        &Query {
            series: s.clone(),
            from: T0,
            to: now + 10,
            resolution: Some(r),
        },
        now,
    )
    .map(|p| p.points.iter().map(|p| (p.ts, p.max, p.samples)).collect())
    .unwrap_or_default()
}

/// Checks the reopened store: intervals `0..done` intact, interval `done` whole or absent
/// (returns whether present), and every 1 min, 15 min and 1 h slot consolidating exactly the
/// 10 s samples present.
fn check(h: &History<impl Dir>, names: &[SeriesName], done: i64, case: &str) -> bool {
    let now = T0 + done * 10;
    let mut present = Vec::new();
    for (k, s) in names.iter().enumerate() {
        let fine = points(h, s, Resolution::S10, now);
        let expect: Vec<(i64, f64, u32)> =
            (0..done).map(|i| (T0 + i * 10, value(k, i), 1)).collect();
        let last = (T0 + done * 10, value(k, done), 1);
        let with_last: Vec<_> = expect.iter().copied().chain([last]).collect();
        assert!(
            fine == expect || fine == with_last,
            "{case}: {s} has {} slots at 10 s, expected {} or {}",
            fine.len(),
            expect.len(),
            with_last.len()
        );
        present.push(fine.len() as i64 > done);
        for r in [Resolution::M1, Resolution::M15, Resolution::H1] {
            let step = r.step_s();
            let mut want: Vec<(i64, f64, u32)> = Vec::new();
            for &(ts, v, _) in &fine {
                let slot = ts.div_euclid(step) * step;
                match want.last_mut() {
                    Some(w) if w.0 == slot => {
                        w.1 = w.1.max(v);
                        w.2 += 1;
                    }
                    _ => want.push((slot, v, 1)),
                }
            }
            assert_eq!(points(h, s, r, now), want, "{case}: {s} at {r}");
        }
    }
    assert!(
        present.iter().all(|&p| p) || present.iter().all(|&p| !p),
        "{case}: the interrupted interval is half there: {present:?}"
    );
    present[0]
}

#[test]
fn a_crash_at_any_byte_of_an_interval_loses_at_most_that_interval() {
    // Five series: two blocks, so an interval writes rows in both.
    let names = series(5);
    let done = 20;
    let base = {
        let (mut h, _) = History::open(MemDir::new(), options()).unwrap();
        for i in 0..done {
            h.record(&interval(&names, i)).unwrap();
        }
        h.into_dir()
    };
    // A dry run lists the operations of reopening and recording one more interval.
    let dry = FaultDir::from_mem(&base);
    let (mut h, _) = History::open(dry.clone(), options()).unwrap();
    h.record(&interval(&names, done)).unwrap();
    let total_ops = dry.ops();
    let writes = dry.writes_since(0);
    assert!(writes.iter().any(|(_, f, _)| f == "journal"));
    assert!(writes.iter().filter(|(_, f, _)| f == "data").count() >= 8);

    let mut cases = 0;
    let mut kept = 0;
    for op in 0..total_ops {
        let sizes: Vec<usize> = match writes.iter().find(|(o, _, _)| *o == op) {
            Some((_, _, len)) => (0..=*len).collect(),
            None => vec![0], // a sync, a reserve: no bytes to tear
        };
        for torn in sizes {
            for persist in [
                Persist::Nothing,
                Persist::Everything,
                Persist::Seeded(op * 10_007 + torn as u64),
            ] {
                let case = format!("crash at op {op} after {torn} bytes, {persist:?}");
                let dir = FaultDir::from_mem(&base);
                dir.crash_at(op, torn);
                let result = History::open(dir.clone(), options())
                    .and_then(|(mut h, _)| h.record(&interval(&names, done)));
                assert!(result.is_err(), "{case}: the crash did not happen");
                let after = dir.power_cut(persist);
                let (mut h, _) = History::open(after, options())
                    .unwrap_or_else(|e| panic!("{case}: reopening failed: {e}"));
                if check(&h, &names, done, &case) {
                    kept += 1;
                }
                // The store goes on recording.
                h.record(&interval(&names, done + 1)).unwrap();
                cases += 1;
            }
        }
    }
    println!("{cases} crash cases, the interrupted interval kept whole in {kept}");
    assert!(cases > 2_000, "{cases}");
    assert!(
        kept > 0 && kept < cases,
        "both outcomes occur: {kept} of {cases}"
    );
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One seeded run: a random number of intervals with new series appearing (so the registry
/// and the data file grow mid-run), a crash at a random operation, a seeded power cut, and
/// the same checks as above.
fn seeded_run(seed: u64) {
    let mut rng = seed;
    let all = series(1 + (splitmix(&mut rng) % 10) as usize);
    let done = 5 + (splitmix(&mut rng) % 40) as i64;
    // Series k starts at interval start[k] (the first one at 0).
    let start: Vec<i64> = (0..all.len())
        .map(|k| {
            if k == 0 {
                0
            } else {
                (splitmix(&mut rng) % done as u64) as i64
            }
        })
        .collect();
    let batch = |i: i64| {
        SampleBatch::interval(
            "lb1",
            T0 + i * 10,
            all.iter()
                .enumerate()
                .filter(|(k, _)| start[*k] <= i)
                .map(|(k, s)| (s.clone(), value(k, i))),
        )
    };
    let dir = FaultDir::new();
    // Count the operations of a clean run, then crash somewhere inside it.
    {
        let dry = FaultDir::new();
        let (mut h, _) = History::open(dry.clone(), options()).unwrap();
        for i in 0..=done {
            h.record(&batch(i)).unwrap();
        }
        let at = splitmix(&mut rng) % dry.ops();
        let torn = (splitmix(&mut rng) % 1_200) as usize;
        dir.crash_at(at, torn);
    }
    let mut committed = 0;
    if let Ok((mut h, _)) = History::open(dir.clone(), options()) {
        for i in 0..=done {
            if h.record(&batch(i)).is_err() {
                break;
            }
            committed = i + 1;
        }
    }
    let after = dir.power_cut(Persist::Seeded(splitmix(&mut rng)));
    let case = format!("seed {seed} (crash after {committed} intervals)");
    let (h, _) =
        History::open(after, options()).unwrap_or_else(|e| panic!("{case}: reopening failed: {e}"));
    for (k, s) in all.iter().enumerate() {
        let now = T0 + committed * 10;
        let fine = points(&h, s, Resolution::S10, now);
        let expect: Vec<(i64, f64, u32)> = (start[k]..committed)
            .map(|i| (T0 + i * 10, value(k, i), 1))
            .collect();
        let mut with_next = expect.clone();
        if committed <= done && start[k] <= committed {
            with_next.push((T0 + committed * 10, value(k, committed), 1));
        }
        assert!(
            fine == expect || fine == with_next,
            "{case}: {s} has {} slots, expected {} (or {})",
            fine.len(),
            expect.len(),
            with_next.len()
        );
        // Coarse slots agree with the fine ones.
        let minutes = points(&h, s, Resolution::M1, now);
        let total: u32 = minutes.iter().map(|m| m.2).sum();
        assert_eq!(
            total as usize,
            fine.len(),
            "{case}: {s} minutes count the 10 s samples"
        );
    }
}

#[test]
fn seeded_crashes_never_lose_the_store_or_more_than_the_last_interval() {
    let seeds: Vec<u64> = match std::env::var("TANDEM_HISTORY_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("TANDEM_HISTORY_CRASH_SEED is a number")],
        Err(_) => {
            let n = std::env::var("TANDEM_HISTORY_CRASH_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        seeded_run(seed);
    }
}
