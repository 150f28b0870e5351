//! Semantic validation: raw structs to a [`Config`], with every cross-field rule checked and
//! every problem reported (not just the first).
//!
//! Owns: required keys, defaults, uniqueness of names, references (backends, interfaces,
//! nodes), bind and VRID conflicts, mode compatibility, certificate presence (through
//! [`CertFiles`]), and the warnings.
//! Positions come from the span index built from the YAML tree, keyed by the raw key path.
//! Problems at or under a path that already has a structural error are not reported again:
//! the bad value was removed, and "missing key" for it would only be noise.
//! Does not parse YAML or know about serde.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use crate::certs::CertFiles;
use crate::de::{Located, suggest};
use crate::diag::Severity;
use crate::model::*;
use crate::raw::*;
use crate::values::{
    Balance, CheckCount, Count, Duration, Endpoint, InterfaceName, Name, Port, Priority, Weight,
};
use crate::yaml::Pos;

mod classes;
mod network;

/// One semantic problem before it is turned into a `Diagnostic`.
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Key path as written.
    pub path: String,
    /// Position.
    pub pos: Pos,
    /// Message.
    pub message: String,
}

/// Collects problems and locates them.
pub struct Ctx<'a> {
    index: &'a HashMap<String, Located>,
    suppressed: &'a [String],
    certs: &'a dyn CertFiles,
    /// Problems found so far.
    pub problems: Vec<Problem>,
}

/// Smallest VRRPv3 advert interval: 10 ms (one centisecond).
const MIN_ADVERT_INTERVAL_MS: u64 = 10;
/// Largest VRRPv3 advert interval: 40950 ms (4095 centiseconds).
const MAX_ADVERT_INTERVAL_MS: u64 = 40_950;

impl<'a> Ctx<'a> {
    /// A context over `index`, staying silent at or under the `suppressed` paths.
    pub fn new(
        index: &'a HashMap<String, Located>,
        suppressed: &'a [String],
        certs: &'a dyn CertFiles,
    ) -> Self {
        Ctx {
            index,
            suppressed,
            certs,
            problems: Vec::new(),
        }
    }

    /// The display path and position of `raw`, or of its nearest existing parent.
    fn locate(&self, raw: &str, key: bool) -> (String, Pos) {
        let mut cut = raw.len();
        loop {
            let prefix = &raw[..cut];
            if let Some(l) = self.index.get(prefix) {
                let pos = if key && cut == raw.len() {
                    l.key_pos
                } else {
                    l.pos
                };
                return (format!("{}{}", l.display, &raw[cut..]), pos);
            }
            match prefix.rfind(['.', '[']) {
                Some(i) => cut = i,
                None if cut > 0 => cut = 0,
                None => return (raw.to_owned(), Pos { line: 1, column: 1 }),
            }
        }
    }

    fn push(&mut self, severity: Severity, raw: &str, key: bool, message: String) {
        let (path, pos) = self.locate(raw, key);
        let under = |s: &String| {
            path == *s
                || (path.starts_with(s.as_str())
                    && matches!(path.as_bytes().get(s.len()), Some(b'.' | b'[')))
        };
        if self.suppressed.iter().any(under) {
            return;
        }
        self.problems.push(Problem {
            severity,
            path,
            pos,
            message,
        });
    }

    /// Reports an empty list at `raw`, unless elements were removed from it for structural errors.
    fn empty(&mut self, raw: &str, message: impl Into<String>) {
        let (path, _) = self.locate(raw, false);
        let pruned = self.suppressed.iter().any(|s| {
            s.starts_with(path.as_str()) && matches!(s.as_bytes().get(path.len()), Some(b'['))
        });
        if !pruned {
            self.error(raw, message);
        }
    }

    fn error(&mut self, raw: &str, message: impl Into<String>) {
        self.push(Severity::Error, raw, false, message.into());
    }

    fn error_at_key(&mut self, raw: &str, message: impl Into<String>) {
        self.push(Severity::Error, raw, true, message.into());
    }

    fn warn(&mut self, raw: &str, message: impl Into<String>) {
        self.push(Severity::Warning, raw, false, message.into());
    }

    /// Line of `raw` in the file, for "first defined at line N".
    fn line(&self, raw: &str) -> u32 {
        self.locate(raw, false).1.line
    }

    /// The value, or an error "missing key" at `path` (which ends with the key).
    fn require<T: Clone>(&mut self, value: &Option<T>, path: &str) -> Option<T> {
        if value.is_none() {
            let key = path.rsplit('.').next().unwrap_or(path);
            self.error(path, format!("missing key `{key}`"));
        }
        value.clone()
    }

    fn nonzero(&mut self, d: Duration, path: &str) -> Duration {
        if d.is_zero() {
            self.error(path, "expected a duration greater than 0s, found 0s");
        }
        d
    }

    fn interface_declared(
        &mut self,
        declared: Option<&BTreeSet<InterfaceName>>,
        name: &InterfaceName,
        path: &str,
        key: bool,
    ) {
        let Some(declared) = declared else { return };
        if declared.contains(name) {
            return;
        }
        let hint = suggest(name.as_str(), declared.iter().map(|n| n.as_str()))
            .map(|s| format!(", did you mean `{s}`?"))
            .unwrap_or_default();
        let message = format!("interface `{name}` is not declared in `interfaces`{hint}");
        if key {
            self.error_at_key(path, message)
        } else {
            self.error(path, message)
        }
    }

    fn cert(&mut self, path: &Path, at: &str, what: &str) {
        if let Err(e) = self.certs.check(path) {
            self.error(at, format!("cannot use {what} `{}`: {e}", path.display()));
        }
    }

    fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Registers names and reports duplicates ("duplicate backend name `x`, first defined at line N").
struct Names<'s> {
    what: &'s str,
    seen: HashMap<Name, String>,
}

impl<'s> Names<'s> {
    fn new(what: &'s str) -> Self {
        Names {
            what,
            seen: HashMap::new(),
        }
    }

    fn add(&mut self, ctx: &mut Ctx<'_>, name: &Name, path: &str) {
        match self.seen.get(name) {
            Some(first) => {
                let line = ctx.line(first);
                ctx.error(
                    path,
                    format!(
                        "duplicate {} name `{name}`, first defined at line {line}",
                        self.what
                    ),
                );
            }
            None => {
                self.seen.insert(name.clone(), path.to_owned());
            }
        }
    }
}

/// Turns `raw` into a `Config`; `None` when any error was found (all are in `ctx.problems`).
pub fn validate(raw: &RawConfig, ctx: &mut Ctx<'_>) -> Option<Config> {
    let version = ctx.require(&raw.version, "version");
    if let Some(v) = version
        && v != SUPPORTED_VERSION
    {
        ctx.error(
            "version",
            format!(
                "unsupported config version {v}, this firmware reads version {SUPPORTED_VERSION}"
            ),
        );
    }

    let interfaces = raw.interfaces.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), Interface { role: v.role }))
            .collect::<BTreeMap<_, _>>()
    });
    let declared: Option<BTreeSet<InterfaceName>> =
        interfaces.as_ref().map(|m| m.keys().cloned().collect());

    let cluster = raw.cluster.as_ref().and_then(|c| cluster(c, ctx));
    let node_count = raw.cluster.as_ref().map_or(0, |c| c.nodes.len());

    let mut vrrp = Vec::new();
    let mut vrrp_names = Names::new("VRRP instance");
    let mut vrids: HashMap<(InterfaceName, u8), (String, String)> = HashMap::new();
    let mut vips: HashMap<IpAddr, String> = HashMap::new();
    if !raw.vrrp.is_empty() && raw.cluster.is_none() {
        ctx.error(
            "vrrp",
            "VRRP instances need a `cluster` section that gives the node priorities",
        );
    }
    for (i, v) in raw.vrrp.iter().enumerate() {
        let p = format!("vrrp[{i}]");
        let name = ctx.require(&v.name, &format!("{p}.name"));
        if let Some(n) = &name {
            vrrp_names.add(ctx, n, &format!("{p}.name"));
        }
        let interface = ctx.require(&v.interface, &format!("{p}.interface"));
        if let Some(ifc) = &interface {
            ctx.interface_declared(declared.as_ref(), ifc, &format!("{p}.interface"), false);
        }
        let vrid = ctx.require(&v.vrid, &format!("{p}.vrid"));
        if let (Some(ifc), Some(id), Some(n)) = (&interface, vrid, &name) {
            let key = (ifc.clone(), id.get());
            match vrids.get(&key) {
                Some((other, _)) => ctx.error(
                    &format!("{p}.vrid"),
                    format!("VRID {id} is already used on {ifc} by VRRP instance `{other}`"),
                ),
                None => {
                    vrids.insert(key, (n.to_string(), p.clone()));
                }
            }
        }
        let advert_interval = v.advert_interval.unwrap_or(DEFAULT_ADVERT_INTERVAL);
        let ms = advert_interval.as_millis();
        if !(MIN_ADVERT_INTERVAL_MS..=MAX_ADVERT_INTERVAL_MS).contains(&ms) || ms % 10 != 0 {
            ctx.error(
                &format!("{p}.advert_interval"),
                format!("expected a duration from 10ms to 40950ms in steps of 10ms (VRRP counts centiseconds), found {advert_interval}"),
            );
        }
        let unicast = v.unicast.unwrap_or(false);
        if unicast && node_count != 2 {
            ctx.error(
                &format!("{p}.unicast"),
                "unicast adverts need two nodes in `cluster.nodes` to send to",
            );
        }
        if v.addresses.is_empty() {
            ctx.empty(
                &format!("{p}.addresses"),
                "expected at least one VIP address",
            );
        }
        for (j, a) in v.addresses.iter().enumerate() {
            let at = format!("{p}.addresses[{j}]");
            match vips.get(&a.addr()) {
                Some(first) => {
                    let line = ctx.line(first);
                    ctx.error(
                        &at,
                        format!("VIP {} is already held at line {line}", a.addr()),
                    );
                }
                None => {
                    vips.insert(a.addr(), at);
                }
            }
        }
        if v.accept == Some(false) {
            ctx.warn(
                &format!("{p}.accept"),
                "`accept: false` is not enforced: the proxy listens on the VIPs, so the master serves their traffic anyway",
            );
        }
        let track = match &v.track {
            Some(t) => {
                for name in t.interfaces.keys() {
                    let at = format!("{p}.track.interfaces.{name}");
                    ctx.interface_declared(declared.as_ref(), name, &at, true);
                }
                if let Some(c) = &cluster {
                    let tracked = t
                        .proxy
                        .map(|d| (format!("{p}.track.proxy"), d))
                        .into_iter()
                        .chain(
                            t.interfaces
                                .iter()
                                .map(|(n, d)| (format!("{p}.track.interfaces.{n}"), *d)),
                        );
                    for (at, delta) in tracked {
                        if let Some(message) = ineffective_track(c, delta) {
                            ctx.warn(&at, message);
                        }
                    }
                }
                Track {
                    proxy: t.proxy,
                    interfaces: t.interfaces.clone(),
                }
            }
            None => Track::default(),
        };
        if let (Some(name), Some(interface), Some(vrid)) = (name, interface, vrid) {
            vrrp.push(VrrpInstance {
                name,
                interface,
                vrid,
                advert_interval,
                preempt: v.preempt.unwrap_or(true),
                preempt_delay: v.preempt_delay.unwrap_or(DEFAULT_PREEMPT_DELAY),
                accept: v.accept.unwrap_or(true),
                unicast,
                addresses: v.addresses.clone(),
                track,
            });
        }
    }

    // Backends first: frontends check their references and modes against them.
    let mut backends = Vec::new();
    let mut backend_names = Names::new("backend");
    let mut backend_modes: BTreeMap<Name, Mode> = BTreeMap::new();
    for (i, b) in raw.backends.iter().enumerate() {
        let p = format!("backends[{i}]");
        let name = ctx.require(&b.name, &format!("{p}.name"));
        let mode = b.mode.unwrap_or_default();
        if let Some(n) = &name {
            backend_names.add(ctx, n, &format!("{p}.name"));
            backend_modes.entry(n.clone()).or_insert(mode);
        }
        if let Some(backend) = backend(b, name, mode, &p, ctx) {
            backends.push(backend);
        }
    }

    // Classes before frontends: frontends and routes refer to them.
    let mut classes = classes::classes(raw, ctx);

    let mut used_backends: BTreeSet<Name> = BTreeSet::new();
    let mut frontends = Vec::new();
    let mut frontend_names = Names::new("frontend");
    let mut bound: HashMap<Endpoint, (String, String)> = HashMap::new();
    for (i, f) in raw.frontends.iter().enumerate() {
        let p = format!("frontends[{i}]");
        let name = ctx.require(&f.name, &format!("{p}.name"));
        if let Some(n) = &name {
            frontend_names.add(ctx, n, &format!("{p}.name"));
        }
        let mode = f.mode.unwrap_or_default();
        if f.bind.is_empty() {
            ctx.empty(
                &format!("{p}.bind"),
                "expected at least one address to listen on",
            );
        }
        let mut bind = Vec::new();
        for (j, b) in f.bind.iter().enumerate() {
            let at = format!("{p}.bind[{j}]");
            let (address, proxy_protocol) = match b {
                RawBind::Address(a) => (Some(*a), false),
                RawBind::Full(full) => (
                    ctx.require(&full.address, &format!("{at}.address")),
                    full.proxy_protocol.unwrap_or(false),
                ),
            };
            let Some(address) = address else { continue };
            let who = name
                .as_ref()
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            match bound.get(&address) {
                Some((other, _)) => ctx.error(
                    &at,
                    format!("{address} is already bound by frontend `{other}`"),
                ),
                None => {
                    bound.insert(address, (who, at.clone()));
                }
            }
            let ip = address.ip();
            let local = ip.is_loopback()
                || ip.is_unspecified()
                || cluster.as_ref().is_some_and(|c| {
                    c.nodes
                        .values()
                        .any(|n| n.lan_address == ip || n.sync_address == ip)
                });
            if cluster.is_some() && !local && !vips.contains_key(&ip) {
                ctx.warn(
                    &at,
                    format!("{ip} is not a VIP of any VRRP instance, so this frontend does not fail over to the other node"),
                );
            }
            bind.push(Bind {
                address,
                proxy_protocol,
            });
        }
        let tls = f.tls.as_ref().map(|t| {
            if t.certificates.is_empty() {
                ctx.empty(
                    &format!("{p}.tls.certificates"),
                    "expected at least one certificate file",
                );
            }
            for (j, c) in t.certificates.iter().enumerate() {
                ctx.cert(c, &format!("{p}.tls.certificates[{j}]"), "certificate file");
            }
            for (j, a) in t.alpn.iter().enumerate() {
                if a.is_empty() || a.len() > 255 {
                    ctx.error(
                        &format!("{p}.tls.alpn[{j}]"),
                        format!("expected an ALPN protocol id of 1 to 255 bytes, found `{a}`"),
                    );
                }
            }
            FrontendTls {
                certificates: t.certificates.clone(),
                alpn: t.alpn.clone(),
            }
        });
        let t = f.timeouts.clone().unwrap_or_default();
        let timeouts = FrontendTimeouts {
            client_header: ctx.nonzero(
                t.client_header.unwrap_or(DEFAULT_CLIENT_HEADER_TIMEOUT),
                &format!("{p}.timeouts.client_header"),
            ),
            client_idle: ctx.nonzero(
                t.client_idle.unwrap_or(DEFAULT_CLIENT_IDLE_TIMEOUT),
                &format!("{p}.timeouts.client_idle"),
            ),
        };
        let protect = f.protect.as_ref().map(|pr| {
            if mode == Mode::Tcp && pr.request_rate_per_source.is_some() {
                ctx.error(
                    &format!("{p}.protect.request_rate_per_source"),
                    "request rates need mode http, this frontend has mode tcp",
                );
            }
            Protect {
                connection_rate_per_source: pr.connection_rate_per_source,
                request_rate_per_source: pr.request_rate_per_source,
                concurrent_connections_per_source: pr.concurrent_connections_per_source,
            }
        });
        let mut check_backend = |ctx: &mut Ctx<'_>, target: &Name, at: &str| {
            used_backends.insert(target.clone());
            match backend_modes.get(target) {
                None => {
                    let hint = suggest(target.as_str(), backend_modes.keys().map(|n| n.as_str()))
                        .map(|s| format!(", did you mean `{s}`?"))
                        .unwrap_or_default();
                    ctx.error(at, format!("backend `{target}` is not defined{hint}"));
                }
                Some(&bmode) if bmode != mode => ctx.error(
                    at,
                    format!(
                        "backend `{target}` has mode {}, but this frontend has mode {}",
                        mode_name(bmode),
                        mode_name(mode)
                    ),
                ),
                Some(_) => {}
            }
        };
        let mut routes = Vec::new();
        for (j, r) in f.routes.iter().enumerate() {
            let at = format!("{p}.routes[{j}]");
            if mode == Mode::Tcp {
                ctx.error(&at, "routes need mode http, this frontend has mode tcp");
            }
            if r.host.is_none() && r.path_prefix.is_none() && r.header.is_none() {
                ctx.error(
                    &at,
                    "a route needs at least one of `host`, `path_prefix` or `header`",
                );
            }
            if let Some(h) = &r.host
                && (h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/'))
            {
                ctx.error(
                    &format!("{at}.host"),
                    format!("expected a host name like `api.shop.example`, found `{h}`"),
                );
            }
            if let Some(pp) = &r.path_prefix
                && !pp.starts_with('/')
            {
                ctx.error(
                    &format!("{at}.path_prefix"),
                    format!("expected a path starting with `/`, found `{pp}`"),
                );
            }
            let header = r.header.as_ref().and_then(|h| {
                let name = ctx.require(&h.name, &format!("{at}.header.name"))?;
                Some(HeaderMatch {
                    name,
                    value: h.value.clone(),
                })
            });
            let target = ctx.require(&r.backend, &format!("{at}.backend"));
            if let Some(t) = &target {
                check_backend(ctx, t, &format!("{at}.backend"));
            }
            let class = classes.route(ctx, r.class.as_ref(), &format!("{at}.class"));
            if let Some(backend) = target {
                routes.push(Route {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.clone(),
                    header,
                    backend,
                    class,
                });
            }
        }
        if let Some(d) = &f.default_backend {
            check_backend(ctx, d, &format!("{p}.default_backend"));
        } else if f.routes.is_empty() {
            ctx.error(
                &format!("{p}.default_backend"),
                "missing key `default_backend`, a frontend without routes needs one",
            );
        }
        let class = classes.frontend(ctx, f.class.as_ref(), &p);
        let class_by = classes.class_by(ctx, f.class_by.as_ref(), mode, &p);
        let l = f.limits.clone().unwrap_or_default();
        let limits = Limits {
            max_header_size: l.max_header_size.unwrap_or(count(DEFAULT_MAX_HEADER_SIZE)),
            max_headers: l.max_headers.unwrap_or(count(DEFAULT_MAX_HEADERS)),
        };
        if let Some(name) = name {
            frontends.push(Frontend {
                name,
                mode,
                bind,
                tls,
                max_connections: f
                    .max_connections
                    .unwrap_or(count(DEFAULT_FRONTEND_MAX_CONNECTIONS)),
                timeouts,
                protect,
                routes,
                default_backend: f.default_backend.clone(),
                limits,
                forwarded: f.forwarded.unwrap_or_default(),
                access_log: f.access_log.as_ref().map(|a| AccessLog {
                    format: a.format.unwrap_or_default(),
                }),
                class,
                class_by,
            });
        }
    }
    classes.warn_unassigned(raw, ctx);
    if raw.frontends.is_empty() {
        ctx.empty("frontends", "expected at least one frontend");
    }
    // An undefined reference is most likely a typo of an existing name: then "unused" is noise.
    let references_resolved = used_backends.iter().all(|n| backend_modes.contains_key(n));
    for (i, b) in raw
        .backends
        .iter()
        .enumerate()
        .filter(|_| references_resolved)
    {
        if let Some(n) = &b.name
            && !used_backends.contains(n)
        {
            ctx.warn(
                &format!("backends[{i}].name"),
                format!("backend `{n}` is not used by any frontend"),
            );
        }
    }

    let metrics = raw.metrics.as_ref().map(|m| {
        let listen = m.listen.unwrap_or_else(|| {
            DEFAULT_METRICS_LISTEN
                .parse()
                .unwrap_or_else(|_| unreachable_endpoint())
        });
        if let Some((other, _)) = bound.get(&listen) {
            let at = if m.listen.is_some() {
                "metrics.listen"
            } else {
                "metrics"
            };
            ctx.error(
                at,
                format!("{listen} is already bound by frontend `{other}`"),
            );
        }
        let auth = m.auth.as_ref().and_then(|a| metrics_auth(a, ctx));
        Metrics { listen, auth }
    });
    let sync = Sync {
        port: raw
            .sync
            .as_ref()
            .and_then(|s| s.port)
            .unwrap_or(port(DEFAULT_SYNC_PORT)),
    };
    let socket = raw
        .runtime
        .as_ref()
        .and_then(|r| r.socket.clone())
        .unwrap_or_else(|| DEFAULT_RUNTIME_SOCKET.into());
    if !socket.is_absolute() {
        ctx.error(
            "runtime.socket",
            format!("expected an absolute path, found `{}`", socket.display()),
        );
    } else if let Err(why) = run_dir_socket(&socket) {
        ctx.error("runtime.socket", why);
    }
    fd_budget(&frontends, &backends, ctx);

    let shared_network = raw
        .network
        .as_ref()
        .map(|r| network::section(r, "network", ctx))
        .unwrap_or_default();
    let no_nodes = BTreeMap::new();
    network::check(
        &network::Context {
            shared_raw: raw.network.as_ref(),
            shared: &shared_network,
            nodes: cluster.as_ref().map_or(&no_nodes, |c| &c.nodes),
            nodes_raw: raw
                .cluster
                .iter()
                .flat_map(|c| c.nodes.iter())
                .filter_map(|(n, node)| Some((n.clone(), node.network.as_ref()?)))
                .collect(),
            vrrp: &vrrp,
            declared: declared.as_ref(),
        },
        ctx,
    );

    if ctx.has_errors() {
        return None;
    }
    Some(Config {
        version: version?,
        cluster,
        interfaces,
        vrrp,
        classes: classes.list,
        frontends,
        backends,
        metrics,
        sync,
        runtime: Runtime { socket },
        network: shared_network,
    })
}

/// Warns, at the frontend whose `max_connections` takes the total over it, when the
/// frontends need more file descriptors than the appliance gives the proxy
/// ([`APPLIANCE_NOFILE`], [`file_descriptors_needed`]).
fn fd_budget(frontends: &[Frontend], backends: &[Backend], ctx: &mut Ctx<'_>) {
    let listeners: u64 = frontends.iter().map(|f| f.bind.len() as u64).sum();
    let checks: u64 = backends
        .iter()
        .filter(|b| b.health_check.is_some())
        .map(|b| b.servers.len() as u64)
        .sum();
    let total: u64 = frontends
        .iter()
        .map(|f| u64::from(f.max_connections.get()))
        .sum();
    let need = file_descriptors_needed(total, listeners, checks);
    if need <= APPLIANCE_NOFILE {
        return;
    }
    let mut running = 0u64;
    let at = frontends
        .iter()
        .position(|f| {
            running += u64::from(f.max_connections.get());
            file_descriptors_needed(running, listeners, checks) > APPLIANCE_NOFILE
        })
        .unwrap_or(0);
    ctx.warn(
        &format!("frontends[{at}].max_connections"),
        format!(
            "the frontends' max_connections add up to {total}: at 2 file descriptors per connection, plus {listeners} listeners, {checks} health checks and {FD_RESERVE} reserved, the proxy needs {need} file descriptors, more than the {APPLIANCE_NOFILE} the appliance gives it; connections beyond that are refused"
        ),
    );
}

/// `metrics.auth`: at least one user, names unique and without `:`, hashes of a known
/// scheme within the cost limits.
fn metrics_auth(a: &RawMetricsAuth, ctx: &mut Ctx<'_>) -> Option<MetricsAuth> {
    if a.users.is_empty() {
        ctx.empty("metrics.auth.users", "expected at least one user");
    }
    let mut users = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, u) in a.users.iter().enumerate() {
        let p = format!("metrics.auth.users[{i}]");
        let name = ctx.require(&u.name, &format!("{p}.name"));
        let hash = ctx.require(&u.password_hash, &format!("{p}.password_hash"));
        if let Some(n) = &name {
            if n.is_empty() || n.contains(':') || n.chars().any(char::is_control) {
                ctx.error(
                    &format!("{p}.name"),
                    format!("expected a user name without `:` or control characters, found `{n}`"),
                );
            } else if let Some(first) = seen.insert(u.name.as_deref().unwrap_or(""), i) {
                ctx.error(
                    &format!("{p}.name"),
                    format!("user `{n}` is also metrics.auth.users[{first}]"),
                );
            }
        }
        if let Some(h) = &hash
            && let Err(why) = password_hash(h)
        {
            ctx.error(&format!("{p}.password_hash"), why);
        }
        if let (Some(name), Some(password_hash)) = (name, hash) {
            users.push(MetricsUser {
                name,
                password_hash,
            });
        }
    }
    Some(MetricsAuth { users })
}

/// Checks the shape and cost of a password hash: Argon2id in PHC form
/// (`$argon2id$v=19$m=M,t=T,p=P$SALT$HASH`, base64 without padding) or SHA-256-crypt
/// (`$5$[rounds=N$]SALT$HASH`, salt of at most 16 characters, 43-character hash).
fn password_hash(h: &str) -> Result<(), String> {
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    let fields: Vec<&str> = h.split('$').collect();
    match fields.as_slice() {
        ["", "argon2id", version, params, salt, hash] => {
            if *version != "v=19" {
                return Err(format!(
                    "expected Argon2id version `v=19`, found `{version}`"
                ));
            }
            let mut cost = BTreeMap::new();
            for kv in params.split(',') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let Ok(v) = v.parse::<u32>() else {
                    return Err(format!("invalid Argon2id parameter `{kv}`"));
                };
                cost.insert(k, v);
            }
            let (Some(&m), Some(&t), Some(&p), 3) =
                (cost.get("m"), cost.get("t"), cost.get("p"), cost.len())
            else {
                return Err(format!(
                    "expected Argon2id parameters `m=KIB,t=PASSES,p=LANES`, found `{params}`"
                ));
            };
            if m > MAX_ARGON2_MEMORY_KIB
                || t > MAX_ARGON2_PASSES
                || p > MAX_ARGON2_LANES
                || t == 0
                || p == 0
                || m < 8 * p
            {
                return Err(format!(
                    "Argon2id cost m={m},t={t},p={p} is out of range: at most m={MAX_ARGON2_MEMORY_KIB} (KiB), t={MAX_ARGON2_PASSES}, p={MAX_ARGON2_LANES}, so that checking a password stays cheap"
                ));
            }
            if !b64(salt) || !b64(hash) || salt.len() < 11 || hash.len() < 22 {
                return Err(
                    "expected an Argon2id salt and hash in base64 without padding".to_owned(),
                );
            }
            Ok(())
        }
        ["", "5", rest @ ..] => {
            let (rounds, salt, hash) = match rest {
                [r, salt, hash] if r.starts_with("rounds=") => (Some(&r[7..]), *salt, *hash),
                [salt, hash] => (None, *salt, *hash),
                _ => return Err("expected SHA-256-crypt as `$5$[rounds=N$]SALT$HASH`".to_owned()),
            };
            if let Some(r) = rounds {
                match r.parse::<u32>() {
                    Ok(n) if (1000..=MAX_SHA_CRYPT_ROUNDS).contains(&n) => {}
                    _ => {
                        return Err(format!(
                            "SHA-256-crypt rounds must be 1000 to {MAX_SHA_CRYPT_ROUNDS}, found `{r}`"
                        ));
                    }
                }
            }
            let crypt64 = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
            };
            if salt.is_empty() || salt.len() > 16 {
                return Err("SHA-256-crypt salt must have 1 to 16 characters".to_owned());
            }
            if hash.len() != 43 || !crypt64(hash) {
                return Err("expected a 43-character SHA-256-crypt hash".to_owned());
            }
            Ok(())
        }
        _ => Err(
            "expected an Argon2id (`$argon2id$...`) or SHA-256-crypt (`$5$...`) password hash"
                .to_owned(),
        ),
    }
}

/// Checks that the absolute `socket` is a socket path of a Tandem run directory: directly
/// in `/run/tandem` ([`RUN_DIR`]), or, for labs and tests on a shared host, directly in a
/// directory named `tandem` or `tandem-*` (`/run/tandem-lab`, `/tmp/tandem-test-1`); not
/// one of the other daemons' sockets. The proxy binds the socket and its `.handover`
/// sibling there, so it must never be pointed at another service's socket (`/dev/log`,
/// `/run/systemd/notify`).
pub fn run_dir_socket(socket: &Path) -> Result<(), String> {
    use std::path::Component;
    let shown = socket.display();
    if socket
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || socket.as_os_str().as_encoded_bytes().ends_with(b"/")
    {
        return Err(format!(
            "expected a plain path to a socket file (no `.` or `..`), found `{shown}`"
        ));
    }
    let name = socket.file_name().map(|n| n.to_string_lossy());
    let dir = socket.parent().filter(|d| d.parent().is_some());
    let dir_name = dir.and_then(Path::file_name).map(|n| n.to_string_lossy());
    let tandem_dir = dir == Some(Path::new(RUN_DIR))
        || dir_name.is_some_and(|n| n == "tandem" || n.starts_with("tandem-"));
    if !tandem_dir {
        return Err(format!(
            "expected a socket directly in the node's run directory {RUN_DIR} (or, off the appliance, in a directory named `tandem-*`), found `{shown}`"
        ));
    }
    if let Some(n) = name
        && RESERVED_SOCKET_NAMES.contains(&n.as_ref())
    {
        return Err(format!(
            "`{n}` is the socket of another Tandem daemon, choose another name (default `proxy.sock`)"
        ));
    }
    Ok(())
}

fn cluster(c: &RawCluster, ctx: &mut Ctx<'_>) -> Option<Cluster> {
    let name = ctx.require(&c.name, "cluster.name");
    if c.nodes.is_empty() {
        ctx.error("cluster.nodes", "expected one or two nodes, found none");
    } else if c.nodes.len() > 2 {
        ctx.error(
            "cluster.nodes",
            format!("expected one or two nodes, found {}", c.nodes.len()),
        );
    }
    let mut nodes = BTreeMap::new();
    let mut priorities: BTreeMap<Priority, Name> = BTreeMap::new();
    let mut lan: BTreeMap<IpAddr, Name> = BTreeMap::new();
    for (n, node) in &c.nodes {
        let p = format!("cluster.nodes.{n}");
        let lan_address = ctx.require(&node.lan_address, &format!("{p}.lan_address"));
        let sync_address = ctx.require(&node.sync_address, &format!("{p}.sync_address"));
        let priority = ctx.require(&node.priority, &format!("{p}.priority"));
        if let Some(pr) = priority
            && let Some(other) = priorities.insert(pr, n.clone())
        {
            ctx.error(
                    &format!("{p}.priority"),
                    format!("priority {pr} is also the priority of node `{other}`, node priorities must differ"),
                );
        }
        if let Some(a) = lan_address
            && let Some(other) = lan.insert(a.0, n.clone())
        {
            ctx.error(
                &format!("{p}.lan_address"),
                format!("{} is also the LAN address of node `{other}`", a.0),
            );
        }
        let network = node
            .network
            .as_ref()
            .map(|r| network::section(r, &format!("{p}.network"), ctx))
            .unwrap_or_default();
        if let (Some(l), Some(s), Some(priority)) = (lan_address, sync_address, priority) {
            nodes.insert(
                n.clone(),
                Node {
                    lan_address: l.0,
                    sync_address: s.0,
                    priority,
                    network,
                },
            );
        }
    }
    Some(Cluster { name: name?, nodes })
}

fn backend(
    b: &RawBackend,
    name: Option<Name>,
    mode: Mode,
    p: &str,
    ctx: &mut Ctx<'_>,
) -> Option<Backend> {
    let balance = b.balance.clone().unwrap_or_default();
    if mode == Mode::Tcp && balance.needs_http() {
        ctx.error(
            &format!("{p}.balance"),
            format!("balance `{balance}` needs mode http, this backend has mode tcp"),
        );
    }
    let persistence = b.persistence.as_ref().and_then(|pe| {
        let at = format!("{p}.persistence");
        match (&pe.cookie, &pe.source) {
            (Some(_), Some(_)) => {
                ctx.error(&at, "give one of `cookie` or `source`, not both");
                None
            }
            (None, None) => {
                ctx.error(&at, "expected `cookie` or `source`");
                None
            }
            (Some(c), None) => {
                if mode == Mode::Tcp {
                    ctx.error(
                        &format!("{at}.cookie"),
                        "cookie persistence needs mode http, this backend has mode tcp",
                    );
                }
                let name = c
                    .name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    ctx.error(
                        &format!("{at}.cookie.name"),
                        format!(
                            "expected a cookie name (letters, digits, `-`, `_`), found `{name}`"
                        ),
                    );
                }
                Some(Persistence::Cookie { name })
            }
            (None, Some(s)) => Some(Persistence::Source {
                expire: ctx.nonzero(
                    s.expire.unwrap_or(DEFAULT_SOURCE_EXPIRE),
                    &format!("{at}.source.expire"),
                ),
            }),
        }
    });
    let health_check = b
        .health_check
        .as_ref()
        .and_then(|h| health_check(h, mode, &format!("{p}.health_check"), ctx));
    let t = b.timeouts.clone().unwrap_or_default();
    let timeouts = BackendTimeouts {
        connect: ctx.nonzero(
            t.connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            &format!("{p}.timeouts.connect"),
        ),
        server: ctx.nonzero(
            t.server.unwrap_or(DEFAULT_SERVER_TIMEOUT),
            &format!("{p}.timeouts.server"),
        ),
    };
    let queue_timeout = ctx.nonzero(
        b.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT),
        &format!("{p}.queue_timeout"),
    );
    let tls = b.tls.as_ref().map(|t| {
        if let Some(ca) = &t.ca {
            ctx.cert(ca, &format!("{p}.tls.ca"), "CA file");
        }
        if t.sni.as_deref() == Some("") {
            ctx.error(
                &format!("{p}.tls.sni"),
                "expected a server name, found an empty string",
            );
        }
        BackendTls {
            verify: t.verify.unwrap_or(true),
            sni: t.sni.clone(),
            ca: t.ca.clone(),
        }
    });
    if b.servers.is_empty() {
        ctx.empty(&format!("{p}.servers"), "expected at least one server");
    }
    let mut names = Names::new("server");
    let mut servers = Vec::new();
    for (j, s) in b.servers.iter().enumerate() {
        let at = format!("{p}.servers[{j}]");
        let sname = ctx.require(&s.name, &format!("{at}.name"));
        if let Some(n) = &sname {
            names.add(ctx, n, &format!("{at}.name"));
        }
        let address = ctx.require(&s.address, &format!("{at}.address"));
        let backup = s.backup.unwrap_or(false);
        if balance == Balance::First && s.max_connections.is_none() && !backup {
            ctx.warn(
                &at,
                format!(
                    "balance `first` fills servers up to `max_connections`, server `{}` has none so it takes all traffic",
                    sname.as_ref().map_or("?", |n| n.as_str())
                ),
            );
        }
        if let (Some(name), Some(address)) = (sname, address) {
            servers.push(Server {
                name,
                address,
                weight: s.weight.unwrap_or(weight(DEFAULT_WEIGHT)),
                max_connections: s.max_connections,
                backup,
                state: s.state.unwrap_or_default(),
            });
        }
    }
    Some(Backend {
        name: name?,
        mode,
        balance,
        persistence,
        health_check,
        queue_timeout,
        timeouts,
        retries: b.retries.unwrap_or(DEFAULT_RETRIES),
        slow_start: b.slow_start.unwrap_or(Duration::ZERO),
        send_proxy: b.send_proxy.unwrap_or_default(),
        tls,
        servers,
    })
}

fn health_check(h: &RawHealthCheck, mode: Mode, p: &str, ctx: &mut Ctx<'_>) -> Option<HealthCheck> {
    let kind = match (&h.http, &h.tcp) {
        (Some(_), Some(_)) => {
            ctx.error(p, "give one of `http` or `tcp`, not both");
            None
        }
        (Some(http), None) => {
            let path = http
                .path
                .clone()
                .unwrap_or_else(|| DEFAULT_CHECK_PATH.to_owned());
            if !path.starts_with('/') {
                ctx.error(
                    &format!("{p}.http.path"),
                    format!("expected a path starting with `/`, found `{path}`"),
                );
            }
            Some(CheckKind::Http(HttpCheck {
                method: http.method.unwrap_or_default(),
                path,
                host: http.host.clone(),
                expect_status: http.expect_status.unwrap_or(crate::values::StatusRange {
                    first: 200,
                    last: 399,
                }),
            }))
        }
        (None, _) => Some(CheckKind::Tcp {}),
    };
    let interval = ctx.nonzero(
        h.interval.unwrap_or(DEFAULT_CHECK_INTERVAL),
        &format!("{p}.interval"),
    );
    let timeout = ctx.nonzero(
        h.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT),
        &format!("{p}.timeout"),
    );
    if timeout > interval {
        ctx.error(
            &format!("{p}.timeout"),
            format!("check timeout {timeout} is longer than the check interval {interval}"),
        );
    }
    let passive = h.passive.as_ref().and_then(|pa| {
        if pa.consecutive_failures.is_none() && pa.consecutive_5xx.is_none() {
            ctx.error(
                &format!("{p}.passive"),
                "expected `consecutive_failures` or `consecutive_5xx`",
            );
            return None;
        }
        if mode == Mode::Tcp && pa.consecutive_5xx.is_some() {
            ctx.error(
                &format!("{p}.passive.consecutive_5xx"),
                "5xx counting needs mode http, this backend has mode tcp",
            );
        }
        Some(PassiveCheck {
            consecutive_failures: pa.consecutive_failures,
            consecutive_5xx: pa.consecutive_5xx,
        })
    });
    Some(HealthCheck {
        kind: kind?,
        interval,
        timeout,
        rise: h.rise.unwrap_or(check_count(DEFAULT_RISE)),
        fall: h.fall.unwrap_or(check_count(DEFAULT_FALL)),
        passive,
    })
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Http => "http",
        Mode::Tcp => "tcp",
    }
}

// The defaults below are constants within range; the fallbacks are never taken.
fn count(v: u32) -> Count {
    Count::new(v).unwrap_or_else(|| unreachable!("default count {v} is in range"))
}

fn port(v: u16) -> Port {
    Port::new(v).unwrap_or_else(|| unreachable!("default port {v} is in range"))
}

fn weight(v: u16) -> Weight {
    Weight::new(v).unwrap_or_else(|| unreachable!("default weight {v} is in range"))
}

/// Why lowering the master's priority by `delta` does not move the VIPs, if it does not: the
/// highest-priority node must fall below the next one (on equal priorities a live master stays
/// master, RFC 5798 section 6.4.2).
fn ineffective_track(cluster: &Cluster, delta: crate::PriorityDelta) -> Option<String> {
    let mut nodes: Vec<(&Name, u8)> = cluster
        .nodes
        .iter()
        .map(|(n, node)| (n, node.priority.get()))
        .collect();
    nodes.sort_by_key(|(_, p)| std::cmp::Reverse(*p));
    let [(master, high), (peer, low), ..] = nodes[..] else {
        return None;
    };
    let lowered = high.saturating_sub(delta.get()).max(1);
    (lowered >= low).then(|| {
        format!(
            "lowering `{master}`'s priority {high} by {} gives {lowered}, not below `{peer}`'s {low}: the VIPs stay on `{master}` while this fails (use more than {})",
            delta.get(),
            high - low
        )
    })
}

fn check_count(v: u8) -> CheckCount {
    CheckCount::new(v).unwrap_or_else(|| unreachable!("default check count {v} is in range"))
}

fn unreachable_endpoint() -> Endpoint {
    unreachable!("the default metrics address parses")
}
