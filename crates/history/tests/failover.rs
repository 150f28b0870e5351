//! Continuity across failover, as a property of the store: two stores stand for the two
//! nodes, batches travel between them as they would over the sync link (through JSON), and
//! the merged history must have no gap when the VIPs move, whatever the order or repetition
//! of the batches, and after a catch-up when the link was down.

use std::collections::BTreeMap;

use tandem_history::{
    Dir, History, MemDir, Metric, Options, Query, Resolution, SampleBatch, SeriesName,
};

const T0: i64 = 20_000 * 86_400;

fn traffic() -> Vec<SeriesName> {
    vec![
        SeriesName::backend("app", Metric::Sessions).unwrap(),
        SeriesName::server("app", "web1", Metric::RequestsPerS).unwrap(),
        SeriesName::server("app", "web1", Metric::P99Ms).unwrap(),
        SeriesName::server("app", "web1", Metric::Health).unwrap(),
        SeriesName::frontend("web", Metric::BytesOutPerS).unwrap(),
    ]
}

fn node(n: &str) -> SeriesName {
    SeriesName::node(n, Metric::Cpu).unwrap()
}

/// What the proxy "measures" at interval `i`, the same whichever node carries the traffic.
fn measured(k: usize, i: i64) -> f64 {
    if k == 3 {
        0.0
    } else {
        (k as i64 * 100 + i % 97) as f64
    }
}

fn traffic_batch(origin: &str, i: i64) -> SampleBatch {
    let mut samples: Vec<(SeriesName, f64)> = traffic()
        .into_iter()
        .enumerate()
        .map(|(k, s)| (s, measured(k, i)))
        .collect();
    samples.push((node(origin), 0.25));
    SampleBatch::interval(origin, T0 + i * 10, samples)
}

fn node_batch(origin: &str, i: i64) -> SampleBatch {
    SampleBatch::interval(origin, T0 + i * 10, [(node(origin), 0.01)])
}

/// The batch as the peer receives it: serialised and parsed again.
fn over_the_wire(b: &SampleBatch) -> SampleBatch {
    serde_json::from_str(&serde_json::to_string(b).unwrap()).unwrap()
}

fn open() -> History<MemDir> {
    History::open(MemDir::new(), Options::default()).unwrap().0
}

fn slots(
    h: &History<impl Dir>,
    s: &SeriesName,
    r: Resolution,
    from: i64,
    to: i64,
) -> Vec<(i64, f64, f64, u32)> {
    h.query(
        &Query {
            series: s.clone(),
            from,
            to,
            resolution: Some(r),
        },
        to,
    )
    .unwrap()
    .points
    .iter()
    .map(|p| (p.ts, p.avg, p.max, p.samples))
    .collect()
}

/// Everything a store holds for `series`, at every resolution.
fn everything(
    h: &History<impl Dir>,
    series: &[SeriesName],
    to: i64,
) -> BTreeMap<String, Vec<(i64, f64, f64, u32)>> {
    let mut m = BTreeMap::new();
    for s in series {
        for r in Resolution::ALL {
            m.insert(format!("{s} {r}"), slots(h, s, r, T0, to));
        }
    }
    m
}

#[test]
fn the_passive_node_has_no_gap_when_the_vips_move() {
    let (mut lb1, mut lb2) = (open(), open());
    let failover = 183; // 30 min 30 s: in the middle of a minute
    let end = 360;
    // lb1 is master: it records the traffic and ships every batch; lb2 records its own node
    // series and ships them back.
    for i in 0..failover {
        let b = traffic_batch("lb1", i);
        lb1.record(&b).unwrap();
        lb2.import(&over_the_wire(&b), T0 + i * 10).unwrap();
        let n = node_batch("lb2", i);
        lb2.record(&n).unwrap();
        lb1.import(&over_the_wire(&n), T0 + i * 10).unwrap();
    }
    // lb1 dies; lb2 takes the VIPs and records the traffic itself.
    for i in failover..end {
        lb2.record(&traffic_batch("lb2", i)).unwrap();
    }
    let to = T0 + end * 10;
    for (k, s) in traffic().iter().enumerate() {
        let fine = slots(&lb2, s, Resolution::S10, T0, to);
        let want: Vec<(i64, f64)> = (0..end).map(|i| (T0 + i * 10, measured(k, i))).collect();
        assert_eq!(
            fine.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
            want,
            "{s}: every 10 s slot, from lb1 then from lb2"
        );
        let minutes = slots(&lb2, s, Resolution::M1, T0, to);
        assert_eq!(minutes.len(), 60, "{s}");
        assert!(
            minutes.iter().all(|m| m.3 == 6),
            "{s}: the failover minute is whole too: {:?}",
            minutes.iter().find(|m| m.3 != 6)
        );
        let hour = slots(&lb2, s, Resolution::H1, T0, to);
        assert_eq!(hour.len(), 1);
        assert_eq!(hour[0].3, 360, "{s}");
    }
    // lb1 comes back: it asks for what lb2 recorded since the last lb2 sample it holds.
    let since = lb1.latest(&[node("lb2")]).unwrap().unwrap();
    assert_eq!(since, T0 + (failover - 1) * 10);
    for b in lb2.catch_up("lb2", since, to - 10, 50_000).unwrap() {
        lb1.import(&over_the_wire(&b), to).unwrap();
    }
    let mut series = traffic();
    series.push(node("lb1"));
    series.push(node("lb2"));
    assert_eq!(
        everything(&lb1, &series, to),
        everything(&lb2, &series, to),
        "after the catch-up both nodes hold the same history"
    );
}

#[test]
fn importing_twice_or_out_of_order_gives_the_same_history() {
    let mut reference = open();
    let mut batches = Vec::new();
    for i in 0..200 {
        let b = traffic_batch("lb1", i);
        reference.record(&b).unwrap();
        batches.push(over_the_wire(&b));
    }
    let to = T0 + 2_000;
    // Again, all of it: nothing changes.
    for b in &batches {
        let w = reference.import(b, to).unwrap();
        assert_eq!((w.cells, w.rows), (0, 0), "a repeated batch writes nothing");
        assert_eq!(w.unchanged, 6);
    }
    // Reversed, with every batch twice, into another store.
    let mut other = open();
    for b in batches.iter().rev().flat_map(|b| [b, b]) {
        other.import(b, to).unwrap();
    }
    let mut series = traffic();
    series.push(node("lb1"));
    assert_eq!(
        everything(&other, &series, to),
        everything(&reference, &series, to)
    );
}

#[test]
fn a_slot_both_nodes_recorded_ends_the_same_on_both() {
    // Split brain for one interval: both nodes believed they were master.
    let (mut lb1, mut lb2) = (open(), open());
    let s = SeriesName::backend("app", Metric::Sessions).unwrap();
    let a = SampleBatch::interval("lb1", T0, [(s.clone(), 40.0)]);
    let b = SampleBatch::interval("lb2", T0, [(s.clone(), 55.0)]);
    lb1.record(&a).unwrap();
    lb2.record(&b).unwrap();
    lb1.import(&over_the_wire(&b), T0).unwrap();
    lb2.import(&over_the_wire(&a), T0).unwrap();
    for r in Resolution::ALL {
        let one = slots(&lb1, &s, r, T0, T0 + 10);
        assert_eq!(one, slots(&lb2, &s, r, T0, T0 + 10), "{r}");
        assert_eq!(
            one[0].2, 55.0,
            "{r}: the larger (pessimistic) value is kept"
        );
    }
}

#[test]
fn after_the_link_was_down_a_catch_up_fills_the_gap() {
    let (mut lb1, mut lb2) = (open(), open());
    let hours = 3;
    let end = hours * 360;
    for i in 0..end {
        let b = traffic_batch("lb1", i);
        lb1.record(&b).unwrap();
        // The link is up for the first ten minutes only.
        if i < 60 {
            lb2.import(&over_the_wire(&b), T0 + i * 10).unwrap();
        }
    }
    let now = T0 + (end - 1) * 10;
    let since = lb2.latest(&[node("lb1")]).unwrap().unwrap();
    assert_eq!(since, T0 + 590);
    let batches = lb1.catch_up("lb1", since, now, 20_000).unwrap();
    let size: usize = batches
        .iter()
        .map(|b| serde_json::to_vec(b).unwrap().len())
        .sum();
    let cells: usize = batches.iter().map(SampleBatch::cells).sum();
    println!(
        "catch-up of 3 h, 6 series: {} batches, {cells} cells, {size} bytes of JSON",
        batches.len()
    );
    assert!(
        size < 1 << 20,
        "a 3 h catch-up of 6 series is small: {size} bytes"
    );
    for b in &batches {
        lb2.import(&over_the_wire(b), now).unwrap();
    }
    let s = &traffic()[0];
    let to = now + 10;
    let minutes = slots(&lb2, s, Resolution::M1, T0, to);
    assert_eq!(minutes.len(), 180);
    assert!(minutes.iter().all(|m| m.3 == 6), "every minute complete");
    assert_eq!(
        slots(&lb2, s, Resolution::H1, T0, to),
        slots(&lb1, s, Resolution::H1, T0, to)
    );
    // The last hour arrived at 10 s; the gap before it at 1 min only.
    assert_eq!(slots(&lb2, s, Resolution::S10, now - 3_590, to).len(), 360);
    assert_eq!(
        slots(&lb2, s, Resolution::S10, T0 + 600, now - 3_600).len(),
        0
    );
}
