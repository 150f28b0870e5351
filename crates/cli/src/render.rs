//! Rendering of supervisor replies for people: aligned tables and short messages.
//!
//! Owns every human-readable output of `tandemctl` (the `--json` output is the reply itself).
//! Pure: functions take the reply (`serde_json::Value`) and the current time, so snapshot
//! tests cover them without a supervisor. Must not talk to the socket.
//!
//! Replies are read into their type in `tandem_control::supervisor` ([`typed`]: `status`
//! with its peer and sync state, `sync_status`, `show_servers`, `show_stats`, `history`,
//! `diff`, `commit`, `sync_pair`, `candidate_set`, failures with their diagnostics) and
//! rendered from its fields; only `show_config`'s configuration model (the config crate's
//! model, every default written out) and the VRRP instances the VRRP daemon reports are
//! still read by key ([`get`]).

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tandem_control::supervisor::{
    CandidateSaved, CommitReply, Diagnostic, Diff, FailureReply, GenerationRef, History, PairReply,
    PeerSummary, ShowServers, ShowStats, StatsRow, Status, SyncState, SyncStatus, VrrpRoles,
};

/// The reply as its type, or the line saying why it is not one.
pub fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("malformed reply: {e}\n"))
}

/// An optional field as text (`-` when absent).
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `a/b` of two optional fields.
fn ratio(a: Option<u64>, b: Option<u64>) -> String {
    format!("{}/{}", opt(a), opt(b))
}

/// The responses of status class `class` (`2xx`, ...).
fn class(r: &std::collections::BTreeMap<String, u64>, class: &str) -> String {
    opt(r.get(class))
}

/// [`bytes`] of an optional count.
fn byte_count(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| bytes(&Value::from(n)))
}

/// An aligned text table; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, two spaces between columns.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = width[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A value as text (`-` for null).
pub fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `v[key]`, null when absent.
pub fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// `2025-03-01 14:02:07Z` from milliseconds since the Unix epoch (UTC, no time-zone database
/// on the appliance's console).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for every date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3s`, `4m12s`, `2h5m`, `3d4h`.
pub fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `status`.
pub fn status(v: &Value) -> String {
    let st = match typed::<Status>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let now = st.now_ms.unwrap_or(0);
    let mut out = String::new();
    let node = st.node.as_deref().unwrap_or("(unnamed node)");
    let maintenance = if st.maintenance != Some(true) {
        String::new()
    } else if let Some(since) = st.maintenance_since_ms {
        format!(
            "  MAINTENANCE since {} ago by {} (holds VRRP backup; `maintenance off` ends it)",
            ago(now.saturating_sub(since)),
            opt(st.maintenance_by.as_ref())
        )
    } else {
        "  MAINTENANCE".to_owned()
    };
    let _ = writeln!(
        out,
        "node     {node}  firmware {}  up {}{maintenance}",
        opt(st.version.as_ref()),
        ago(st.uptime_s.unwrap_or(0) * 1000),
    );
    match &st.generation {
        None => {
            let _ = writeln!(out, "config   none committed");
        }
        Some(g) => {
            let time_ms = g.time_ms.unwrap_or(0);
            let _ = writeln!(
                out,
                "config   generation {} by {} at {} ({} ago){}",
                opt(g.number),
                opt(g.author.as_ref()),
                utc(time_ms),
                ago(now.saturating_sub(time_ms)),
                match g.comment.as_deref() {
                    Some(c) if !c.is_empty() => format!(": {c}"),
                    _ => String::new(),
                }
            );
        }
    }
    if let Some(p) = &st.pending_confirm {
        let left = p.deadline_ms.unwrap_or(0).saturating_sub(now);
        let _ = writeln!(
            out,
            "confirm  generation {} reverts to {} in {} unless confirmed (`config confirm`)",
            opt(p.generation),
            opt(p.restore),
            ago(left)
        );
    }
    let (peer, sync) = match typed::<Option<PeerSummary>>(&st.peer)
        .and_then(|p| Ok((p.unwrap_or_default(), typed::<Option<SyncState>>(&st.sync)?)))
    {
        Ok((p, s)) => (p, s.unwrap_or_default()),
        Err(e) => return e,
    };
    if peer.name.is_none() {
        let _ = writeln!(
            out,
            "peer     {} ({})",
            opt(peer.state.as_ref()),
            opt(peer.detail.as_ref())
        );
    } else {
        let _ = writeln!(
            out,
            "peer     {}: link {}, {}, generation {}",
            opt(peer.name.as_ref()),
            opt(peer.link.as_ref()),
            opt(peer.relation.state.as_ref()).replace('_', " "),
            match &peer.generation {
                None => "none".into(),
                Some(g) => opt(g.number),
            },
        );
    }
    let queued = sync.core.map(|c| c.queued).unwrap_or_default();
    let _ = writeln!(
        out,
        "sync     {}{}",
        opt(sync.state.as_ref()),
        if queued.is_empty() {
            String::new()
        } else {
            format!(
                ", queued: {}",
                queued.iter().map(s).collect::<Vec<_>>().join(" ")
            )
        }
    );
    out.push('\n');
    let mut t = Table::new(&[
        "SERVICE",
        "STATE",
        "PID",
        "UP",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
    ]);
    for svc in &st.services {
        let health = match svc.healthy {
            Some(true) => "ok",
            Some(false) => "failed",
            None => "-",
        };
        let mut state = opt(svc.state.as_ref());
        if svc.flapping == Some(true) {
            state.push_str(" (flapping)");
        }
        t.row(vec![
            opt(svc.name.as_ref()),
            state,
            opt(svc.pid),
            ago(now.saturating_sub(svc.since_ms.unwrap_or(now))),
            opt(svc.restarts),
            health.to_owned(),
            opt(svc.last_exit.as_ref()),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    out.push_str(&vrrp_roles(&st.vrrp));
    out.push('\n');
    if st.alarms.is_empty() {
        out.push_str("no alarms\n");
    } else {
        let mut t = Table::new(&["SEVERITY", "SINCE", "ALARM"]);
        for a in &st.alarms {
            t.row(vec![
                opt(a.severity.as_ref()).to_uppercase(),
                utc(a.since_ms.unwrap_or(0)),
                opt(a.message.as_ref()),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// `show vrrp` (the `vrrp` object of `status`).
pub fn vrrp(v: &Value) -> String {
    match typed::<Option<VrrpRoles>>(v) {
        Ok(r) => vrrp_roles(&r.unwrap_or_default()),
        Err(e) => e,
    }
}

/// The VRRP roles: one row per instance, as the VRRP daemon reports them.
fn vrrp_roles(v: &VrrpRoles) -> String {
    if v.available != Some(true) {
        return format!("vrrp: role unknown ({})\n", opt(v.reason.as_ref()));
    }
    let mut t = Table::new(&["INSTANCE", "VRID", "ROLE", "VIPS", "MASTER"]);
    for i in &v.instances {
        let vips: Vec<String> = arr(get(i, "vips")).iter().map(s).collect();
        t.row(vec![
            s(get(i, "name")),
            s(get(i, "vrid")),
            s(get(i, "state")),
            vips.join(","),
            s(get(i, "master")),
        ]);
    }
    t.render()
}

/// `1.5 KiB`, `5.0 MiB`: a byte count for people (`-` when absent).
pub fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return s(v);
    };
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// `show servers` from a `show_servers` reply (the proxy runtime API's live view): one table
/// per backend, in the proxy's order.
pub fn servers(v: &Value) -> String {
    let list = match typed::<ShowServers>(v) {
        Ok(r) => r.servers,
        Err(e) => return e,
    };
    if list.is_empty() {
        return "no servers\n".to_owned();
    }
    let mut backends: Vec<(String, Table)> = Vec::new();
    for srv in list {
        let backend = opt(srv.backend.as_ref());
        if backends.last().is_none_or(|(b, _)| *b != backend) {
            backends.push((
                backend.clone(),
                Table::new(&[
                    "SERVER", "ADDRESS", "STATE", "HEALTH", "WEIGHT", "SESSIONS", "QUEUE", "2XX",
                    "4XX", "5XX",
                ]),
            ));
        }
        let mut name = opt(srv.name.as_ref());
        if srv.backup == Some(true) {
            name.push_str(" (backup)");
        }
        let table = &mut backends.last_mut().expect("pushed above").1;
        table.row(vec![
            name,
            opt(srv.address.as_ref()),
            opt(srv.state.as_ref()),
            opt(srv.health.as_ref()),
            ratio(srv.weight, srv.effective_weight),
            ratio(srv.sessions_current, srv.sessions_total),
            opt(srv.queue),
            class(&srv.responses, "2xx"),
            class(&srv.responses, "4xx"),
            class(&srv.responses, "5xx"),
        ]);
    }
    let mut out = String::new();
    for (i, (backend, table)) in backends.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "backend {backend}");
        out.push_str(&table.render());
    }
    out.push_str("WEIGHT is weight/effective weight, SESSIONS current/total\n");
    out
}

/// `show stats` from a `show_stats` reply: per-frontend and per-backend totals.
pub fn stats(v: &Value) -> String {
    let stats = match typed::<ShowStats>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let classes = |r: &StatsRow| {
        ["2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .map(|c| class(&r.responses, c))
            .collect::<Vec<_>>()
    };
    let mut t = Table::new(&[
        "FRONTEND",
        "MODE",
        "SESSIONS",
        "2XX",
        "3XX",
        "4XX",
        "5XX",
        "BYTES IN",
        "BYTES OUT",
    ]);
    for f in &stats.frontends {
        let mut row = vec![
            opt(f.name.as_ref()),
            opt(f.mode.as_ref()),
            ratio(f.sessions_current, f.sessions_total),
        ];
        row.extend(classes(f));
        row.extend([byte_count(f.bytes_in), byte_count(f.bytes_out)]);
        t.row(row);
    }
    let mut out = t.render();
    out.push('\n');
    let mut t = Table::new(&[
        "BACKEND",
        "SERVERS",
        "SESSIONS",
        "QUEUE",
        "2XX",
        "3XX",
        "4XX",
        "5XX",
        "BYTES IN",
        "BYTES OUT",
    ]);
    for b in &stats.backends {
        let mut row = vec![
            opt(b.name.as_ref()),
            ratio(b.servers_accepting, b.servers_total),
            ratio(b.sessions_current, b.sessions_total),
            opt(b.queue),
        ];
        row.extend(classes(b));
        row.extend([byte_count(b.bytes_in), byte_count(b.bytes_out)]);
        t.row(row);
    }
    out.push_str(&t.render());
    out.push_str("SESSIONS current/total, SERVERS accepting/total\n");
    out
}

/// `show frontends` from a `show_config` reply.
pub fn frontends(v: &Value) -> String {
    let mut t = Table::new(&["FRONTEND", "MODE", "BIND", "TLS", "MAXCONN", "BACKENDS"]);
    for f in arr(get(get(v, "config"), "frontends")) {
        let binds: Vec<String> = arr(get(f, "bind"))
            .iter()
            .map(|b| s(get(b, "address")))
            .collect();
        let mut backends: Vec<String> = arr(get(f, "routes"))
            .iter()
            .map(|r| s(get(r, "backend")))
            .collect();
        if let Some(d) = get(f, "default_backend").as_str() {
            backends.push(format!("{d} (default)"));
        }
        t.row(vec![
            s(get(f, "name")),
            s(get(f, "mode")),
            binds.join(","),
            if get(f, "tls").is_null() { "no" } else { "yes" }.to_owned(),
            s(get(f, "max_connections")),
            backends.join(", "),
        ]);
    }
    t.render()
}

/// `show backends` from a `show_config` reply.
pub fn backends(v: &Value) -> String {
    let mut t = Table::new(&[
        "BACKEND",
        "MODE",
        "BALANCE",
        "SERVERS",
        "PERSISTENCE",
        "HEALTH CHECK",
    ]);
    for b in arr(get(get(v, "config"), "backends")) {
        let persistence = match get(b, "persistence") {
            Value::Object(m) => m.keys().cloned().collect::<Vec<_>>().join(","),
            _ => "-".to_owned(),
        };
        let check = match get(b, "health_check") {
            Value::Object(m) => {
                let kind = if m.contains_key("http") {
                    "http"
                } else {
                    "tcp"
                };
                format!(
                    "{kind} every {}",
                    s(get(get(b, "health_check"), "interval"))
                )
            }
            _ => "-".to_owned(),
        };
        t.row(vec![
            s(get(b, "name")),
            s(get(b, "mode")),
            s(get(b, "balance")),
            arr(get(b, "servers")).len().to_string(),
            persistence,
            check,
        ]);
    }
    t.render()
}

/// `show history`.
pub fn history(v: &Value) -> String {
    let history = match typed::<History>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut t = Table::new(&["GEN", "TIME", "AUTHOR", "NODE", "COMMENT"]);
    for g in &history.generations {
        t.row(vec![
            format!(
                "{}{}",
                opt(g.number),
                if g.number == history.current { "*" } else { "" }
            ),
            utc(g.time_ms.unwrap_or(0)),
            opt(g.author.as_ref()),
            opt(g.node.as_ref()),
            opt(g.comment.as_ref()),
        ]);
    }
    let mut out = t.render();
    out.push_str("* current; `config rollback N` restores generation N as a new generation\n");
    out
}

/// `config diff`.
pub fn diff(v: &Value) -> String {
    let diff = match typed::<Diff>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let changes = diff.changes.len();
    let mut out = opt(diff.text.as_ref());
    let against = match diff.against {
        None | Some(Value::Null) => "an empty store".to_owned(),
        Some(n) => format!("generation {}", s(&n)),
    };
    let _ = writeln!(
        out,
        "{changes} change{} against {against}",
        if changes == 1 { "" } else { "s" }
    );
    out
}

/// `show sync`.
pub fn sync(v: &Value) -> String {
    let (reply, st) = match typed::<SyncStatus>(v)
        .and_then(|r| Ok((typed::<Option<SyncState>>(&r.sync)?.unwrap_or_default(), r)))
    {
        Ok((st, r)) => (r, st),
        Err(e) => return e,
    };
    let mut out = String::new();
    let _ = writeln!(out, "state        {}", opt(st.state.as_ref()));
    if let Some(d) = &st.detail {
        let _ = writeln!(out, "detail       {d}");
    }
    let gen_text = |g: &Option<GenerationRef>| match g {
        None => "none".to_owned(),
        Some(g) => format!("{} ({})", opt(g.number), opt(g.fingerprint.as_ref())),
    };
    if let Some(c) = &st.core {
        let _ = writeln!(
            out,
            "peer         {} at {}",
            opt(c.peer.as_ref()),
            opt(st.remote.as_ref())
        );
        let _ = writeln!(out, "link         {}", opt(c.link.as_ref()));
        let rel = &c.relation;
        let _ = writeln!(
            out,
            "relation     {}{}",
            opt(rel.state.as_ref()).replace('_', " "),
            rel.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "local        generation {}", gen_text(&c.local));
        let _ = writeln!(out, "peer has     generation {}", gen_text(&c.peer_current));
        let queued: Vec<String> = c.queued.iter().map(s).collect();
        let _ = writeln!(
            out,
            "queued       {}",
            if queued.is_empty() {
                "none".into()
            } else {
                queued.join(" ")
            }
        );
        let _ = writeln!(
            out,
            "firmware     {} here, {} on the peer",
            opt(c.firmware.as_ref()),
            opt(c.peer_firmware.as_ref())
        );
        if let Some(ms) = st.last_exchange_ms {
            let _ = writeln!(out, "last exchange {}", utc(ms));
        }
        if let Some(r) = &c.last_refusal {
            let _ = writeln!(out, "last refusal {r}");
        }
    }
    if let Some(e) = &st.last_error {
        let _ = writeln!(out, "last error   {e}");
    }
    let _ = writeln!(out, "fingerprint  {}", opt(st.fingerprint.as_ref()));
    let _ = writeln!(out, "peer pinned  {}", opt(st.peer_fingerprint.as_ref()));
    if let Some(d) = &reply.divergence {
        let _ = writeln!(
            out,
            "\nDIVERGED: here generation {}, on the peer generation {} (by {}); nothing was overwritten",
            gen_text(&d.local),
            gen_text(&d.peer),
            opt(d.peer_author.as_ref())
        );
        let _ = writeln!(out, "changes from this node's configuration to the peer's:");
        let _ = write!(out, "{}", opt(d.text.as_ref()));
        let _ = writeln!(
            out,
            "\npick a side: `sync resolve use-local` (keep this node's) or `sync resolve use-peer`"
        );
    }
    out
}

/// `pair`.
pub fn pair(v: &Value) -> String {
    let pair = match typed::<PairReply>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut out = String::new();
    let _ = writeln!(out, "this node's sync certificate fingerprint (SHA-256):");
    let _ = writeln!(out, "  {}", opt(pair.fingerprint.as_ref()));
    match &pair.peer_fingerprint {
        Some(p) => {
            let _ = writeln!(out, "pinned peer certificate:\n  {p}");
        }
        None => {
            let _ = writeln!(
                out,
                "no peer pinned yet: run `pair` on the peer and compare"
            );
        }
    }
    if let Some(b) = &pair.bootstrap {
        let _ = writeln!(
            out,
            "until a configuration names this node: listening on {}, peer {} at {} (its configuration is taken when this node has none)",
            opt(b.local.as_ref()),
            opt(b.peer.as_ref()),
            opt(b.remote.as_ref())
        );
    }
    out
}

/// `config commit` and `config rollback`.
pub fn commit(v: &Value) -> String {
    let c = match typed::<CommitReply>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut out = String::new();
    if c.committed != Some(true) {
        let _ = writeln!(out, "{}", opt(c.message.as_ref()));
        if let Some(g) = c.confirmed {
            let _ = writeln!(out, "generation {g} confirmed");
        }
        return out;
    }
    let changes = c.changes.unwrap_or_default();
    let nodes = c.nodes.unwrap_or_default();
    let warnings = c.warnings.unwrap_or_default();
    let what = if c.generation == Some(1) {
        "initial configuration".to_owned()
    } else {
        format!(
            "{} change{}",
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        )
    };
    let _ = writeln!(
        out,
        "committed generation {} on {} ({what})",
        opt(c.generation),
        nodes.join(" and "),
    );
    let value = |v: &Option<Value>| v.as_ref().map_or_else(|| "-".to_owned(), s);
    for ch in &changes {
        let path = opt(ch.path.as_ref());
        let line = match ch.kind.as_deref() {
            Some("added") => format!("+ {path}"),
            Some("removed") => format!("- {path}"),
            _ => format!("~ {path}: {} -> {}", value(&ch.old), value(&ch.new)),
        };
        let _ = writeln!(out, "  {line}");
    }
    for w in &warnings {
        let _ = writeln!(out, "{w}");
    }
    if let Some(g) = c.confirmed {
        let _ = writeln!(out, "generation {g} confirmed by this commit");
    }
    if let Some(p) = &c.pending_confirm {
        let _ = writeln!(
            out,
            "reverts to generation {} at {} unless confirmed with `config confirm`",
            opt(p.restore),
            utc(p.deadline_ms.unwrap_or(0))
        );
    }
    if let Some(peer) = &c.peer {
        let _ = writeln!(out, "peer: {peer}");
    }
    out
}

/// A failed reply: the error, every diagnostic with line and column, and what to do next.
pub fn error(v: &Value) -> String {
    let Ok(f) = typed::<FailureReply>(v) else {
        // Whatever it is, say what failed.
        return format!("error: {}\n", s(get(v, "error")));
    };
    let mut out = format!("error: {}\n", opt(f.error.as_ref()));
    for d in &f.diagnostics {
        let _ = writeln!(out, "  {}", diagnostic_line(d));
    }
    if let Some(g) = f.restored {
        let _ = writeln!(out, "running configuration: generation {g}");
    }
    if let Some(h) = &f.hint {
        let _ = writeln!(out, "next: {h}");
    }
    out
}

/// `candidate:9:56: error: backends[0].servers[0].weight: expected ...`.
pub fn diagnostic(d: &Value) -> String {
    match typed::<Diagnostic>(d) {
        Ok(d) => diagnostic_line(&d),
        Err(e) => e.trim_end().to_owned(),
    }
}

fn diagnostic_line(d: &Diagnostic) -> String {
    let mut line = opt(d.origin.as_ref());
    let (l, c) = (d.line.unwrap_or(0), d.column.unwrap_or(0));
    if l > 0 {
        let _ = write!(line, ":{l}:{c}");
    }
    let _ = write!(line, ": {}: ", opt(d.severity.as_ref()));
    if let Some(p) = d.path.as_deref().filter(|p| !p.is_empty()) {
        let _ = write!(line, "{p}: ");
    }
    line.push_str(&opt(d.message.as_ref()));
    line
}

/// The result of saving a candidate (`config edit`, `config load`).
pub fn candidate_saved(v: &Value) -> String {
    let saved = match typed::<CandidateSaved>(v) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if saved.valid == Some(true) {
        let mut out = String::from(
            "candidate saved and valid; review with `config diff`, apply with `config commit`\n",
        );
        for w in saved.warnings.iter().flatten() {
            let _ = writeln!(out, "  {w}");
        }
        return out;
    }
    let n = saved.error_count.unwrap_or(0);
    let mut out = format!(
        "candidate saved with {n} error{}; fix them (`config edit`) and run `config validate`\n",
        if n == 1 { "" } else { "s" }
    );
    for d in saved.diagnostics.iter().flatten() {
        let _ = writeln!(out, "  {}", diagnostic_line(d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_ago() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_709_301_727_000), "2024-03-01 14:02:07Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(ago(59_999), "59s");
        assert_eq!(ago(252_000), "4m12s");
        assert_eq!(ago(7_500_000), "2h5m");
        assert_eq!(ago(273_600_000), "3d4h");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(bytes(&Value::from(0)), "0 B");
        assert_eq!(bytes(&Value::from(1023)), "1023 B");
        assert_eq!(bytes(&Value::from(1536)), "1.5 KiB");
        assert_eq!(bytes(&Value::from(5_242_880)), "5.0 MiB");
        assert_eq!(bytes(&Value::Null), "-");
    }

    #[test]
    fn table_aligns_and_does_not_pad_the_last_column() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["xyz".into(), "1".into(), "last".into()]);
        assert_eq!(t.render(), "A    LONGER  C\nxyz  1       last\n");
    }
}
