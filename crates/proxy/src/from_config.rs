//! The adapter from `tandem_config::Config` (the validated YAML model) to a [`Plan`].
//!
//! Owns: the mapping of config fields onto plan fields (with the TLS material and PROXY
//! protocol settings of frontends and backends loaded), and the warnings for configured
//! features this slice of the proxy does not implement yet (they are logged, not refused).
//! Does not own: parsing or validation (`tandem-config` has done both), nor any IO beyond
//! loading certificate and CA files (through `tls`).

use std::path::{Path, PathBuf};

use hyper::header::{HeaderName, HeaderValue};
use tandem_config as cfg;

use crate::proxy_protocol;
use crate::tls::{FrontendTls, UpstreamTls};

use crate::plan::{
    AdminState, Algorithm, Backend, CheckKind, ClientTimeouts, Forwarded, Frontend, HealthCheck,
    LogFormat, Mode, Persistence, Plan, PlanError, Protect, Rate, Route, Server, ServerTimeouts,
    Settings,
};

fn mode(m: cfg::Mode) -> Mode {
    match m {
        cfg::Mode::Http => Mode::Http,
        cfg::Mode::Tcp => Mode::Tcp,
    }
}

impl Plan {
    /// Compiles a validated configuration for node `node` (per-node settings are not used
    /// by the proxy yet; the argument is part of the contract for when they are).
    pub fn from_config(config: &cfg::Config, node: Option<&str>) -> Result<Plan, Vec<PlanError>> {
        Self::from_config_file(config, node, Path::new(""))
    }

    /// Like [`Plan::from_config`], loading certificate and CA files (the only IO here) with
    /// relative paths taken from the directory of `config_file`; every failure is reported.
    pub fn from_config_file(
        config: &cfg::Config,
        node: Option<&str>,
        config_file: &Path,
    ) -> Result<Plan, Vec<PlanError>> {
        let _ = node;
        let mut tls_errors = Vec::new();
        let frontends = config
            .frontends
            .iter()
            .map(|f| with_frontend_tls(frontend(f), f, config_file, &mut tls_errors))
            .collect();
        let backends = config
            .backends
            .iter()
            .map(|b| with_backend_tls(backend(b), b, config_file, &mut tls_errors))
            .collect();
        let settings = Settings {
            runtime_socket: Some(config.runtime.socket.clone()),
            metrics_listen: config.metrics.as_ref().map(|m| m.listen.socket_addr()),
            metrics_auth: config
                .metrics
                .as_ref()
                .and_then(|m| m.auth.as_ref())
                .map(|a| {
                    a.users
                        .iter()
                        .map(|u| (u.name.clone(), u.password_hash.clone()))
                        .collect()
                }),
        };
        match Plan::new(frontends, backends) {
            Ok(plan) if tls_errors.is_empty() => Ok(plan.with_settings(settings)),
            Ok(_) => Err(tls_errors),
            Err(mut errors) => {
                tls_errors.append(&mut errors);
                Err(tls_errors)
            }
        }
    }
}

fn frontend(f: &cfg::Frontend) -> Frontend {
    let name = f.name.as_str();
    let first = f
        .bind
        .first()
        .map(|b| b.address.socket_addr())
        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    let mut fe = Frontend::new(name, mode(f.mode), first, "");
    fe.binds = f.bind.iter().map(|b| b.address.socket_addr()).collect();
    fe.default_backend = f.default_backend.as_ref().map(|b| b.as_str().to_owned());
    fe.routes = f
        .routes
        .iter()
        .map(|r| Route {
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            header: r.header.as_ref().and_then(|h| {
                // Names and values were validated as HTTP tokens by tandem-config.
                let name = HeaderName::try_from(h.name.as_str()).ok()?;
                let value = match &h.value {
                    None => None,
                    Some(v) => Some(HeaderValue::try_from(v.as_str()).ok()?),
                };
                Some((name, value))
            }),
            backend: r.backend.as_str().to_owned(),
        })
        .collect();
    fe.timeouts = ClientTimeouts {
        header: f.timeouts.client_header.as_std(),
        idle: f.timeouts.client_idle.as_std(),
    };
    fe.max_connections = Some(f.max_connections.get());
    fe.max_headers = f.limits.max_headers.get() as usize;
    fe.max_header_bytes = f.limits.max_header_size.get() as usize;
    let rate = |r: &cfg::Rate| Rate {
        count: r.count,
        per: r.per.as_std(),
    };
    if let Some(p) = &f.protect {
        fe.protect = Protect {
            connection_rate: p.connection_rate_per_source.as_ref().map(rate),
            request_rate: p.request_rate_per_source.as_ref().map(rate),
            concurrent: p.concurrent_connections_per_source.map(|c| c.get()),
        };
    }
    fe.forwarded = match f.forwarded {
        cfg::ForwardedMode::XForwarded => Forwarded::XForwarded,
        cfg::ForwardedMode::Forwarded => Forwarded::Rfc7239,
        cfg::ForwardedMode::None => Forwarded::None,
    };
    fe.log_format = match f.access_log.as_ref().map(|l| l.format) {
        None => LogFormat::Off,
        Some(cfg::LogFormat::Json) => LogFormat::Json,
        Some(_) => LogFormat::Text,
    };
    fe
}

fn backend(b: &cfg::Backend) -> Backend {
    let name = b.name.as_str();
    let servers = b
        .servers
        .iter()
        .map(|s| Server {
            name: s.name.as_str().to_owned(),
            addr: s.address.socket_addr(),
            weight: u32::from(s.weight.get()),
            max_connections: s.max_connections.map(|c| c.get()),
            backup: s.backup,
            admin: match s.state {
                cfg::ServerState::Ready => AdminState::Ready,
                cfg::ServerState::Drain => AdminState::Drain,
                cfg::ServerState::Maint => AdminState::Maint,
            },
        })
        .collect();
    let mut be = Backend::new(name, mode(b.mode), servers);
    be.algorithm = match &b.balance {
        cfg::Balance::RoundRobin => Algorithm::RoundRobin,
        cfg::Balance::LeastConn => Algorithm::LeastConn,
        cfg::Balance::Source => Algorithm::Source,
        cfg::Balance::Uri => Algorithm::Uri,
        cfg::Balance::Header(h) => Algorithm::Header(h.as_str().to_ascii_lowercase()),
        cfg::Balance::First => Algorithm::First,
        cfg::Balance::Random => Algorithm::Random,
    };
    be.slow_start = b.slow_start.as_std();
    be.persistence = b.persistence.as_ref().map(|p| match p {
        cfg::Persistence::Cookie { name } => Persistence::Cookie { name: name.clone() },
        cfg::Persistence::Source { expire } => Persistence::Source {
            expire: expire.as_std(),
        },
    });
    be.timeouts = ServerTimeouts {
        connect: b.timeouts.connect.as_std(),
        server: b.timeouts.server.as_std(),
        queue: b.queue_timeout.as_std(),
    };
    be.retries = u32::from(b.retries);
    be.health_check = b.health_check.as_ref().map(|hc| HealthCheck {
        kind: match &hc.kind {
            cfg::CheckKind::Tcp {} => CheckKind::Tcp,
            cfg::CheckKind::Http(h) => CheckKind::Http {
                method: match h.method {
                    cfg::CheckMethod::Get => "GET",
                    cfg::CheckMethod::Head => "HEAD",
                    cfg::CheckMethod::Options => "OPTIONS",
                },
                path: h.path.clone(),
                host: h.host.clone(),
                expect: (h.expect_status.first, h.expect_status.last),
            },
        },
        interval: hc.interval.as_std(),
        timeout: hc.timeout.as_std(),
        rise: u32::from(hc.rise.get()),
        fall: u32::from(hc.fall.get()),
        passive_connect_failures: hc
            .passive
            .as_ref()
            .and_then(|p| p.consecutive_failures.map(|c| c.get())),
        passive_5xx: hc
            .passive
            .as_ref()
            .and_then(|p| p.consecutive_5xx.map(|c| c.get())),
    });
    be
}

/// Fills `fe.tls` and `fe.accept_proxy` from the configuration;
/// a certificate that cannot be loaded is pushed to `errors`.
fn with_frontend_tls(
    mut fe: Frontend,
    f: &cfg::Frontend,
    config_file: &Path,
    errors: &mut Vec<PlanError>,
) -> Frontend {
    fe.accept_proxy = f
        .bind
        .iter()
        .filter(|b| b.proxy_protocol)
        .map(|b| b.address.socket_addr())
        .collect();
    if let Some(t) = &f.tls {
        let paths: Vec<PathBuf> = t
            .certificates
            .iter()
            .map(|p| cfg::resolve_relative(config_file, p))
            .collect();
        match FrontendTls::load(&paths, &t.alpn) {
            Ok(tls) => fe.tls = Some(tls),
            Err(source) => errors.push(PlanError::Tls {
                kind: "frontend",
                owner: fe.name.clone(),
                source,
            }),
        }
    }
    fe
}

/// Fills `be.send_proxy` and `be.tls` from the configuration;
/// a CA file that cannot be loaded is pushed to `errors`.
fn with_backend_tls(
    mut be: Backend,
    b: &cfg::Backend,
    config_file: &Path,
    errors: &mut Vec<PlanError>,
) -> Backend {
    be.send_proxy = match b.send_proxy {
        cfg::SendProxy::None => None,
        cfg::SendProxy::V1 => Some(proxy_protocol::Version::V1),
        cfg::SendProxy::V2 => Some(proxy_protocol::Version::V2),
    };
    if let Some(t) = &b.tls {
        let ca = t.ca.as_ref().map(|p| cfg::resolve_relative(config_file, p));
        match UpstreamTls::load(t.verify, t.sni.as_deref(), ca.as_deref()) {
            Ok(tls) => be.tls = Some(tls),
            Err(source) => errors.push(PlanError::Tls {
                kind: "backend",
                owner: be.name.clone(),
                source,
            }),
        }
    }
    be
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_example_compiles() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/lab.yaml");
        let loaded = cfg::load(std::path::Path::new(path)).expect("lab.yaml is valid");
        let plan = Plan::from_config(&loaded.config, None).expect("plan");
        let fe = &plan.frontends()[0];
        assert_eq!((fe.name.as_str(), fe.mode), ("web", Mode::Http));
        assert_eq!(fe.binds, vec!["127.0.0.1:8080".parse().expect("addr")]);
        let be = &plan.backends()[0];
        assert_eq!(be.servers.len(), 2);
        assert!(
            matches!(&be.health_check, Some(HealthCheck { kind: CheckKind::Http { path, .. }, .. }) if path == "/health")
        );
    }

    #[test]
    fn balancing_persistence_protection_and_logging_are_mapped() {
        let yaml = r#"
version: 1
frontends:
  - name: web
    bind: ["127.0.0.1:8080"]
    default_backend: shop
    forwarded: forwarded
    access_log: { format: json }
    protect:
      connection_rate_per_source: 100/10s
      request_rate_per_source: 500/10s
      concurrent_connections_per_source: 20
backends:
  - name: shop
    balance: header(X-User)
    persistence: { cookie: { name: SRV } }
    slow_start: 30s
    health_check:
      tcp: {}
      rise: 2
      fall: 3
      passive: { consecutive_failures: 4, consecutive_5xx: 5 }
    servers:
      - { name: s1, address: 127.0.0.1:9001, weight: 200 }
      - { name: s2, address: 127.0.0.1:9002, state: drain, backup: true }
  - name: sticky
    balance: leastconn
    persistence: { source: { expire: 5m } }
    servers:
      - { name: t1, address: 127.0.0.1:9003, state: maint }
metrics:
  listen: 127.0.0.2:9100
  auth:
    users:
      - { name: prom, password_hash: "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA" }
"#;
        let loaded = cfg::parse(yaml, "test.yaml", &cfg::MemoryCertFiles::default())
            .unwrap_or_else(|r| panic!("valid config: {r}"));
        let plan = Plan::from_config(&loaded.config, None).expect("plan");
        let fe = &plan.frontends()[0];
        assert_eq!(fe.forwarded, Forwarded::Rfc7239);
        assert_eq!(fe.log_format, LogFormat::Json);
        let rate = |count, secs| {
            Some(Rate {
                count,
                per: std::time::Duration::from_secs(secs),
            })
        };
        assert_eq!(
            fe.protect,
            Protect {
                connection_rate: rate(100, 10),
                request_rate: rate(500, 10),
                concurrent: Some(20),
            }
        );
        let shop = &plan.backends()[0];
        assert_eq!(shop.algorithm, Algorithm::Header("x-user".into()));
        assert_eq!(
            shop.persistence,
            Some(Persistence::Cookie { name: "SRV".into() })
        );
        assert_eq!(shop.slow_start, std::time::Duration::from_secs(30));
        let hc = shop.health_check.as_ref().expect("check");
        assert_eq!(
            (hc.passive_connect_failures, hc.passive_5xx),
            (Some(4), Some(5))
        );
        assert_eq!(shop.servers[0].weight, 200);
        assert_eq!(
            (shop.servers[1].admin, shop.servers[1].backup),
            (AdminState::Drain, true)
        );
        let sticky = &plan.backends()[1];
        assert_eq!(sticky.algorithm, Algorithm::LeastConn);
        assert_eq!(
            sticky.persistence,
            Some(Persistence::Source {
                expire: std::time::Duration::from_secs(300)
            })
        );
        assert_eq!(sticky.servers[0].admin, AdminState::Maint);
        assert!(plan.settings.runtime_socket.is_some());
        assert_eq!(
            plan.settings.metrics_listen,
            Some("127.0.0.2:9100".parse().expect("addr"))
        );
        assert_eq!(
            plan.settings.metrics_auth,
            Some(vec![(
                "prom".to_owned(),
                "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA".to_owned()
            )])
        );
    }
}
