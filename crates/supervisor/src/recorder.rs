//! The traffic recorder: every interval (10 s, `--history-interval`) the supervisor reads the
//! running proxy's counters through its runtime API, turns them into per-interval samples
//! and writes them into the node's `tandem-history` store in `DATA_DIR/history`; and the
//! `show_traffic` query of that store.
//!
//! Owns the pure [`Recorder`] (counters to samples, counter resets, which series the running
//! configuration has), the [`TrafficStore`] the supervisor keeps open, and the thin loop
//! ([`spawn`]) doing the IO through a [`Source`] (the core implements it in `core.rs`; this
//! module must not name the core, so the two do not import each other). Must not change anything of the node: an error here is logged
//! and the next interval tries again. Must not touch the store's format (`tandem-history`).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tandem_control::runtime::{BackendInfo, FrontendInfo, Request, Responses, ServerInfo};
use tandem_control::supervisor as wire;
use tandem_history::{
    Dir, Entity, FsDir, HealthState, History, Metric, Query, SampleBatch, SeriesName, VrrpState,
};
use tracing::{debug, info, warn};

use crate::state::{VrrpView, lock};

/// How often the recorder samples the proxy by default (the store's finest archive).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The store's directory under the data directory.
pub const HISTORY_DIR: &str = "history";

/// Points `show_traffic` aims at per series (fits an 80-column sparkline with room).
pub const TARGET_POINTS: i64 = 72;

/// One sample: a series and its value for the interval.
pub type Sample = (SeriesName, f64);

/// What one reading of the proxy (and the node) gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// `show frontends`.
    pub frontends: Vec<FrontendInfo>,
    /// `show backends`.
    pub backends: Vec<BackendInfo>,
    /// `show servers`.
    pub servers: Vec<ServerInfo>,
    /// This node's VRRP role, when a VRRP daemon answers.
    pub vrrp_role: Option<VrrpState>,
}

/// Turns cumulative counters into per-interval samples. Pure: time is an argument.
#[derive(Debug, Clone)]
pub struct Recorder {
    node: String,
    /// Per counter (series name): when it was read (ms) and its value.
    last: HashMap<String, (i64, u64)>,
}

/// Metrics of [`Metric::for_entity`] the recorder does not produce yet (response-time
/// percentiles, the agent's load, node CPU and memory): left out of the wanted series.
const NOT_PRODUCED: &[Metric] = &[
    Metric::P50Ms,
    Metric::P95Ms,
    Metric::P99Ms,
    Metric::Load,
    Metric::Cpu,
    Metric::Memory,
];

/// The cumulative counters and gauges of one entity, as the recorder reads them.
struct Reading {
    entity: Entity,
    requests: u64,
    sessions: u64,
    queue: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    responses: Responses,
    health: Option<HealthState>,
}

impl Recorder {
    /// A recorder for node `node` (the `node/NAME/...` series) that has seen nothing.
    pub fn new(node: impl Into<String>) -> Recorder {
        Recorder {
            node: node.into(),
            last: HashMap::new(),
        }
    }

    /// The samples of the interval ending at `now_ms`. Rates need two readings: the first
    /// reading of a counter gives no rate. A counter lower than before (the proxy restarted)
    /// counts as the delta since the restart, never as a negative or huge rate.
    pub fn observe(&mut self, now_ms: i64, stats: &Stats) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for r in readings(stats) {
            let mut rate = |metric: Metric, counter: u64, out: &mut Vec<Sample>| {
                let Ok(name) = SeriesName::new(r.entity.clone(), metric) else {
                    return;
                };
                let key = name.to_string();
                seen.insert(key.clone());
                if let Some(v) = self.rate(key, now_ms, counter) {
                    out.push((name, v));
                }
            };
            rate(Metric::RequestsPerS, r.requests, &mut out);
            rate(Metric::BytesInPerS, r.bytes_in, &mut out);
            rate(Metric::BytesOutPerS, r.bytes_out, &mut out);
            rate(Metric::Responses2xxPerS, r.responses.c2xx, &mut out);
            rate(Metric::Responses3xxPerS, r.responses.c3xx, &mut out);
            rate(Metric::Responses4xxPerS, r.responses.c4xx, &mut out);
            rate(Metric::Responses5xxPerS, r.responses.c5xx, &mut out);
            let mut gauge = |metric: Metric, v: f64| {
                if let Ok(name) = SeriesName::new(r.entity.clone(), metric) {
                    out.push((name, v));
                }
            };
            gauge(Metric::Sessions, r.sessions as f64);
            if let Some(q) = r.queue {
                gauge(Metric::Queue, q as f64);
            }
            if let Some(h) = r.health {
                gauge(Metric::Health, h.code());
            }
        }
        let node = |m| SeriesName::node(&self.node, m).ok();
        let connections: u64 = stats
            .frontends
            .iter()
            .map(|f| f.sessions_current)
            .chain(stats.servers.iter().map(|s| s.sessions_current))
            .sum();
        if let Some(n) = node(Metric::Connections) {
            out.push((n, connections as f64));
        }
        if let (Some(role), Some(n)) = (stats.vrrp_role, node(Metric::VrrpRole)) {
            out.push((n, role.code()));
        }
        // Counters of entities that left the configuration are forgotten.
        self.last.retain(|k, _| seen.contains(k));
        out
    }

    fn rate(&mut self, key: String, now_ms: i64, counter: u64) -> Option<f64> {
        let (t0, c0) = self.last.insert(key, (now_ms, counter))?;
        if now_ms <= t0 {
            return None;
        }
        // Went down: the proxy restarted and counts from zero since.
        let delta = if counter >= c0 { counter - c0 } else { counter };
        Some(delta as f64 * 1000.0 / (now_ms - t0) as f64)
    }

    /// Every series the running configuration (as `stats` shows it) has: what
    /// [`History::reconcile`] keeps; the others are retired.
    pub fn wanted(&self, stats: &Stats) -> BTreeSet<SeriesName> {
        let mut wanted = BTreeSet::new();
        let entities = readings(stats)
            .into_iter()
            .map(|r| r.entity)
            .chain([Entity::Node(self.node.clone())]);
        for e in entities {
            for &m in Metric::for_entity(&e) {
                if NOT_PRODUCED.contains(&m) {
                    continue;
                }
                if let Ok(s) = SeriesName::new(e.clone(), m) {
                    wanted.insert(s);
                }
            }
        }
        wanted
    }
}

fn readings(stats: &Stats) -> Vec<Reading> {
    let mut out = Vec::new();
    for f in &stats.frontends {
        // http: every response is a request answered; tcp: connections.
        let r = f.responses;
        let answered = r.c1xx + r.c2xx + r.c3xx + r.c4xx + r.c5xx + r.other;
        out.push(Reading {
            entity: Entity::Frontend(f.name.clone()),
            requests: if f.mode == "tcp" {
                f.sessions_total
            } else {
                answered
            },
            sessions: f.sessions_current,
            queue: None,
            bytes_in: f.bytes_in,
            bytes_out: f.bytes_out,
            responses: f.responses,
            health: None,
        });
    }
    for b in &stats.backends {
        out.push(Reading {
            entity: Entity::Backend(b.name.clone()),
            requests: b.sessions_total,
            sessions: b.sessions_current,
            queue: Some(b.queue),
            bytes_in: b.bytes_in,
            bytes_out: b.bytes_out,
            responses: b.responses,
            health: Some(if b.servers_accepting > 0 {
                HealthState::Up
            } else {
                HealthState::Down
            }),
        });
    }
    for s in &stats.servers {
        out.push(Reading {
            entity: Entity::Server {
                backend: s.backend.clone(),
                server: s.name.clone(),
            },
            requests: s.sessions_total,
            sessions: s.sessions_current,
            queue: Some(s.queue),
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            responses: s.responses,
            health: Some(server_health(s)),
        });
    }
    out
}

fn server_health(s: &ServerInfo) -> HealthState {
    use tandem_control::runtime::{AdminState, Health};
    match (s.health, s.state) {
        (Health::Down, _) => HealthState::Down,
        (Health::Up, AdminState::Maint) => HealthState::Maint,
        (Health::Up, AdminState::Drain) => HealthState::Drain,
        (Health::Up, AdminState::Ready) => HealthState::Up,
    }
}

/// The node's role from the VRRP daemon's instances: master of any, else backup of any,
/// else fault or initialize; `None` without instances.
pub fn vrrp_role(instances: &[Value]) -> Option<VrrpState> {
    let states: Vec<&str> = instances
        .iter()
        .filter_map(|i| i.get("state").and_then(Value::as_str))
        .collect();
    [
        ("master", VrrpState::Master),
        ("backup", VrrpState::Backup),
        ("fault", VrrpState::Fault),
        ("initialize", VrrpState::Init),
    ]
    .into_iter()
    .find(|(s, _)| states.contains(s))
    .map(|(_, r)| r)
}

/// The history store the supervisor keeps open (opened, and created, on first use), and
/// the node name its own series carry.
pub struct TrafficStore {
    dir: PathBuf,
    node: String,
    options: tandem_history::Options,
    history: Mutex<Option<History<FsDir>>>,
}

impl TrafficStore {
    /// The store in `dir` (not opened yet) for node `node`, with the standard geometry.
    pub fn new(dir: PathBuf, node: String) -> TrafficStore {
        TrafficStore::with_options(dir, node, tandem_history::Options::default())
    }

    /// The same with other store options (a small geometry in tests).
    pub fn with_options(
        dir: PathBuf,
        node: String,
        options: tandem_history::Options,
    ) -> TrafficStore {
        TrafficStore {
            dir,
            node,
            options,
            history: Mutex::new(None),
        }
    }

    /// Runs `f` on the store, opening it first when needed.
    fn with<R>(&self, f: impl FnOnce(&mut History<FsDir>) -> R) -> Result<R, String> {
        let mut h = lock(&self.history);
        if h.is_none() {
            let dir = &self.dir;
            let fs = FsDir::new(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
            let (history, opened) = History::open(fs, self.options).map_err(|e| e.to_string())?;
            info!(dir = %dir.display(), created = opened.created, series = opened.series,
                replayed_rows = opened.replayed_rows, "traffic history open");
            *h = Some(history);
        }
        Ok(f(h.as_mut().expect("opened above")))
    }

    /// `show_traffic`: the recorded history of `target` over `last` (default `1h`).
    pub fn show(&self, target: Option<&str>, last: Option<&str>) -> Result<wire::Traffic, String> {
        let last = parse_last(last.unwrap_or("1h"))?;
        let now = now_ms().div_euclid(1000);
        self.with(|h| traffic(h, &self.node, target, last, now))?
    }
}

/// The store's directory.
pub fn history_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(HISTORY_DIR)
}

/// Parses `30m`, `1h`, `7d`, `2w`, `1y` into seconds.
pub fn parse_last(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let n: i64 = t[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 1h, 7d or 1y"))?;
    let unit = match &t[digits..] {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{text}`; use m, h, d, w or y"
            ));
        }
    };
    if n <= 0 {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(n.saturating_mul(unit).min(5 * 365 * 86_400))
}

/// Whether series `s` is what `target` names: a frontend, a backend, a server (`NAME` or
/// `BACKEND/NAME`); without a target, every frontend and the node.
fn matches(s: &SeriesName, target: Option<&str>, node: &str) -> bool {
    match (s.entity(), target) {
        (Entity::Frontend(_), None) => true,
        (Entity::Node(n), None) => n == node,
        (_, None) => false,
        (Entity::Frontend(n) | Entity::Backend(n) | Entity::Node(n), Some(t)) => n == t,
        (Entity::Server { backend, server }, Some(t)) => {
            server == t || format!("{backend}/{server}") == t
        }
    }
}

/// Merges consecutive points into buckets of `width` seconds (aligned to multiples of it).
fn bucket(points: &[tandem_history::Point], width: i64) -> Vec<wire::TrafficPoint> {
    let mut out: Vec<(wire::TrafficPoint, u64)> = Vec::new();
    for p in points {
        let ts = p.ts.div_euclid(width) * width;
        let n = u64::from(p.samples.max(1));
        match out.last_mut() {
            Some((b, count)) if b.ts == ts => {
                b.avg = (b.avg * *count as f64 + p.avg * n as f64) / (*count + n) as f64;
                b.max = b.max.max(p.max);
                b.last = p.last;
                *count += n;
            }
            _ => out.push((
                wire::TrafficPoint {
                    ts,
                    avg: p.avg,
                    max: p.max,
                    last: p.last,
                },
                n,
            )),
        }
    }
    out.into_iter().map(|(p, _)| p).collect()
}

/// `show_traffic`: the points of `target`'s series over the `last` seconds before `now`
/// (unix seconds), about [`TARGET_POINTS`] per series.
pub fn traffic<D: Dir>(
    history: &History<D>,
    node: &str,
    target: Option<&str>,
    last: i64,
    now: i64,
) -> Result<wire::Traffic, String> {
    let from = now - last;
    let resolution = history.resolution_for(from, now, now);
    let step = resolution.step_s();
    let width = ((last / TARGET_POINTS).max(step) + step - 1) / step * step;
    let mut series = Vec::new();
    for info in history.series() {
        if info.retired.is_some() || !matches(&info.name, target, node) {
            continue;
        }
        let q = Query {
            series: info.name.clone(),
            from,
            to: now + 1,
            resolution: Some(resolution),
        };
        let points = history.query(&q, now).map_err(|e| e.to_string())?;
        series.push(wire::TrafficSeries {
            name: info.name.to_string(),
            metric: info.name.metric().name().to_owned(),
            points: bucket(&points.points, width),
        });
    }
    if let Some(t) = target
        && series.is_empty()
    {
        return Err(format!("no traffic history for `{t}`"));
    }
    Ok(wire::Traffic {
        target: target.map(str::to_owned),
        from: Some(from),
        to: Some(now),
        resolution: Some(resolution.label().to_owned()),
        step_s: Some(width),
        series,
    })
}

/// What the recorder loop reads: the supervisor's core in production.
pub trait Source: Send + Sync + 'static {
    /// Whether a proxy runs now (the recorder samples only then).
    fn running(&self) -> bool;
    /// One reading of the proxy's counters and the node's VRRP role.
    fn stats(&self) -> impl Future<Output = Result<Stats, String>> + Send;
    /// The store to write.
    fn traffic(&self) -> &TrafficStore;
}

/// One reading of the proxy runtime API at `socket`, with the VRRP role of `vrrp`.
pub async fn read_stats(socket: &Path, vrrp: &VrrpView) -> Result<Stats, String> {
    let ask = |r: Request| async move {
        let v = crate::ask::ask(socket, &serde_json::to_value(&r).unwrap_or_default()).await?;
        if v.get("ok") != Some(&Value::Bool(true)) {
            return Err(format!("the proxy refused: {v}"));
        }
        Ok::<Value, String>(v)
    };
    let frontends = field(ask(Request::ShowFrontends).await?, "frontends")?;
    let backends = field(ask(Request::ShowBackends).await?, "backends")?;
    let servers = field(
        ask(Request::ShowServers { backend: None }).await?,
        "servers",
    )?;
    Ok(Stats {
        frontends,
        backends,
        servers,
        vrrp_role: if vrrp.available {
            vrrp_role(&vrrp.instances)
        } else {
            None
        },
    })
}

/// The `key` array of a runtime API reply.
fn field<T: serde::de::DeserializeOwned>(v: Value, key: &str) -> Result<Vec<T>, String> {
    serde_json::from_value(v.get(key).cloned().unwrap_or(Value::Array(Vec::new())))
        .map_err(|e| format!("malformed `{key}` from the proxy: {e}"))
}

/// The wall clock, unix milliseconds.
fn now_ms() -> i64 {
    i64::try_from(crate::state::now_ms()).unwrap_or(i64::MAX)
}

/// Starts the recorder loop: every `interval`, while a proxy runs, one reading recorded.
/// Ends when the core is dropped. Errors are logged and never reach the node.
pub fn spawn<S: Source>(source: Weak<S>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recorder: Option<Recorder> = None;
        let mut wanted = BTreeSet::new();
        loop {
            tick.tick().await;
            let Some(core) = source.upgrade() else { return };
            if !core.running() {
                continue;
            }
            let stats = match core.stats().await {
                Ok(s) => s,
                Err(e) => {
                    debug!(cause = %e, "traffic recorder: no reading this interval");
                    continue;
                }
            };
            let now_ms = now_ms();
            let node = core.traffic().node.clone();
            let r = recorder.get_or_insert_with(|| Recorder::new(node.clone()));
            let samples = r.observe(now_ms, &stats);
            let want = r.wanted(&stats);
            let reconcile = (want != wanted).then(|| want.clone());
            let core2 = Arc::clone(&core);
            let done = tokio::task::spawn_blocking(move || {
                core2.traffic().with(|h| {
                    let now = now_ms.div_euclid(1000);
                    if let Some(want) = &reconcile {
                        let r = h.reconcile(want, now).map_err(|e| e.to_string())?;
                        if !r.retired.is_empty() || !r.full.is_empty() {
                            info!(
                                retired = r.retired.len(),
                                full = r.full.len(),
                                "traffic history series follow the configuration"
                            );
                        }
                    }
                    if samples.is_empty() {
                        return Ok(0);
                    }
                    let batch = SampleBatch::interval(node, now, samples);
                    h.record(&batch).map(|w| w.cells).map_err(|e| e.to_string())
                })?
            })
            .await
            .unwrap_or_else(|e| Err(format!("recorder task failed: {e}")));
            match done {
                Ok(cells) => {
                    wanted = want;
                    debug!(cells, "traffic recorded");
                }
                Err(e) => warn!(cause = %e, "traffic recorder: cannot write the history"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_control::runtime::{AdminState, Denied, Health};

    fn frontend(total: u64, bytes_in: u64) -> FrontendInfo {
        FrontendInfo {
            name: "web".into(),
            mode: "http".into(),
            binds: vec![],
            sessions_current: 3,
            sessions_total: total,
            max_connections: None,
            bytes_in,
            bytes_out: bytes_in * 10,
            responses: Responses::from_counts([0, total, 0, 0, 0, 0]),
            denied: Denied::default(),
        }
    }

    fn server(name: &str, total: u64, health: Health) -> ServerInfo {
        ServerInfo {
            backend: "app".into(),
            name: name.into(),
            id: name.into(),
            address: "198.18.0.10:80".into(),
            backup: false,
            state: AdminState::Ready,
            health,
            status: "UP".into(),
            check_streak: 1,
            weight: 1,
            config_weight: 1,
            effective_weight: 1,
            max_connections: None,
            sessions_current: 2,
            sessions_total: total,
            queue: 1,
            bytes_in: 0,
            bytes_out: 0,
            responses: Responses::default(),
            connect_failures: 0,
            transitions: 0,
        }
    }

    fn value(samples: &[Sample], name: &str) -> Option<f64> {
        samples
            .iter()
            .find(|(s, _)| s.to_string() == name)
            .map(|(_, v)| *v)
    }

    #[test]
    fn counters_become_rates_and_a_reset_is_the_delta_since_restart() {
        let mut r = Recorder::new("lb1");
        let stats = |total, bytes| Stats {
            frontends: vec![frontend(total, bytes)],
            servers: vec![server("web1", total, Health::Up)],
            vrrp_role: Some(VrrpState::Master),
            ..Stats::default()
        };
        let first = r.observe(0, &stats(100, 1000));
        assert_eq!(value(&first, "frontend/web/requests_per_s"), None);
        assert_eq!(value(&first, "frontend/web/sessions"), Some(3.0));
        assert_eq!(value(&first, "server/app/web1/health"), Some(0.0));
        assert_eq!(value(&first, "server/app/web1/queue"), Some(1.0));
        assert_eq!(value(&first, "node/lb1/connections"), Some(5.0));
        assert_eq!(value(&first, "node/lb1/vrrp_role"), Some(0.0));
        let second = r.observe(10_000, &stats(600, 6000));
        assert_eq!(value(&second, "frontend/web/requests_per_s"), Some(50.0));
        assert_eq!(
            value(&second, "frontend/web/responses_2xx_per_s"),
            Some(50.0)
        );
        assert_eq!(value(&second, "frontend/web/bytes_in_per_s"), Some(500.0));
        assert_eq!(value(&second, "frontend/web/bytes_out_per_s"), Some(5000.0));
        assert_eq!(value(&second, "server/app/web1/requests_per_s"), Some(50.0));
        let wanted = r.wanted(&stats(600, 6000));
        assert!(second.iter().all(|(s, _)| wanted.contains(s)), "{second:?}");
        // The proxy restarted: 40 requests since, over the 10 s.
        let third = r.observe(20_000, &stats(40, 400));
        assert_eq!(value(&third, "frontend/web/requests_per_s"), Some(4.0));
        assert!(third.iter().all(|(_, v)| *v >= 0.0 && *v < 1e6));
        // Time did not advance: no rate.
        let again = r.observe(20_000, &stats(50, 500));
        assert_eq!(value(&again, "frontend/web/requests_per_s"), None);
    }

    #[test]
    fn health_and_roles_map_to_state_codes_and_wanted_follows_the_configuration() {
        let mut r = Recorder::new("lb1");
        let stats = Stats {
            servers: vec![
                server("web1", 0, Health::Down),
                server("web2", 0, Health::Up),
            ],
            ..Stats::default()
        };
        let s = r.observe(0, &stats);
        assert_eq!(value(&s, "server/app/web1/health"), Some(3.0));
        assert_eq!(value(&s, "server/app/web2/health"), Some(0.0));
        assert_eq!(value(&s, "node/lb1/vrrp_role"), None);
        let wanted = r.wanted(&stats);
        // Per server: 9 rates and gauges and health; per node: connections and role.
        assert_eq!(wanted.len(), 2 * 10 + 2);
        assert!(wanted.iter().all(|s| !NOT_PRODUCED.contains(&s.metric())));
        // web2 leaves: its counters are forgotten.
        let fewer = Stats {
            servers: vec![server("web1", 0, Health::Down)],
            ..Stats::default()
        };
        r.observe(10_000, &fewer);
        assert!(r.last.keys().all(|k| !k.contains("web2")));
        assert_eq!(
            vrrp_role(&[
                serde_json::json!({"state":"backup"}),
                serde_json::json!({"state":"master"})
            ]),
            Some(VrrpState::Master)
        );
        assert_eq!(vrrp_role(&[]), None);
    }

    /// A source whose first reading fails, then counts 100 requests per reading.
    struct Fake {
        traffic: TrafficStore,
        readings: Mutex<u64>,
    }

    impl Source for Fake {
        fn running(&self) -> bool {
            true
        }

        fn stats(&self) -> impl Future<Output = Result<Stats, String>> + Send {
            let n = {
                let mut n = lock(&self.readings);
                *n += 1;
                *n
            };
            async move {
                if n == 1 {
                    return Err("the proxy is restarting".into());
                }
                Ok(Stats {
                    frontends: vec![frontend(n * 100, n)],
                    ..Stats::default()
                })
            }
        }

        fn traffic(&self) -> &TrafficStore {
            &self.traffic
        }
    }

    #[tokio::test]
    async fn the_loop_survives_a_failed_reading_and_records_into_the_store() {
        let dir = std::env::temp_dir().join(format!("tandem-recorder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fake = Arc::new(Fake {
            traffic: TrafficStore::with_options(dir.clone(), "lb1".into(), small()),
            readings: Mutex::new(0),
        });
        spawn(Arc::downgrade(&fake), Duration::from_millis(100));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let rate = loop {
            let t = fake.traffic.show(Some("web"), Some("1h"));
            let peak = t.ok().and_then(|t| {
                t.series
                    .iter()
                    .find(|s| s.metric == "requests_per_s")
                    .and_then(|s| s.points.iter().map(|p| p.max).reduce(f64::max))
            });
            if let Some(v) = peak {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "nothing recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // 100 requests per 100 ms reading: about 1000/s; a loaded machine stretches an
        // interval (and jitters when the counters are read).
        assert!(rate > 20.0 && rate < 2000.0, "{rate}");
        assert!(dir.join(tandem_history::DATA_FILE).exists());
        drop(fake);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn small() -> tandem_history::Options {
        tandem_history::Options {
            geometry: tandem_history::Geometry {
                slots: [720, 120, 200, 100],
                columns: 8,
            },
            ..tandem_history::Options::default()
        }
    }

    #[test]
    fn last_parses_and_the_query_buckets_to_about_72_points() {
        assert_eq!(parse_last("1h"), Ok(3600));
        assert_eq!(parse_last("7d"), Ok(7 * 86_400));
        assert_eq!(parse_last("1y"), Ok(365 * 86_400));
        assert!(parse_last("1x").is_err() && parse_last("h").is_err() && parse_last("0h").is_err());

        let (mut h, _) = History::open(tandem_history::MemDir::new(), small()).unwrap();
        let now = 1_767_225_600;
        let name = SeriesName::frontend("web", Metric::RequestsPerS).unwrap();
        let mut wanted = BTreeSet::new();
        wanted.insert(name.clone());
        h.reconcile(&wanted, now - 3600).unwrap();
        for i in 0..360 {
            let ts = now - 3600 + i * 10;
            h.record(&SampleBatch::interval(
                "lb1",
                ts,
                [(name.clone(), i as f64)],
            ))
            .unwrap();
        }
        let t = traffic(&h, "lb1", None, 3600, now).unwrap();
        assert_eq!(t.series.len(), 1);
        let points = &t.series[0].points;
        assert!((70..=73).contains(&points.len()), "{}", points.len());
        assert_eq!(t.step_s, Some(50));
        assert!(points.windows(2).all(|w| w[0].avg < w[1].avg));
        assert!(traffic(&h, "lb1", Some("nothing"), 3600, now).is_err());
        assert_eq!(
            traffic(&h, "lb1", Some("web"), 3600, now)
                .unwrap()
                .series
                .len(),
            1
        );
    }
}
