//! The adapter from `tandem_config::Config` (the validated YAML model) to a [`Plan`].
//!
//! Owns: the mapping of config fields onto plan fields, and the warnings for configured
//! features this slice of the proxy does not implement yet (they are logged, not refused).
//! Does not own: parsing or validation (`tandem-config` has done both), nor any IO.

use hyper::header::{HeaderName, HeaderValue};
use tandem_config as cfg;
use tracing::warn;

use crate::plan::{
    Algorithm, Backend, CheckKind, ClientTimeouts, Frontend, HealthCheck, Mode, Plan, PlanError,
    Route, Server, ServerTimeouts,
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
        Self::from_config_file(config, node, std::path::Path::new(""))
    }

    /// Like [`Plan::from_config`], loading certificate and CA files (the only IO here) with
    /// relative paths taken from the directory of `config_file`; every failure is reported.
    pub fn from_config_file(
        config: &cfg::Config,
        node: Option<&str>,
        config_file: &std::path::Path,
    ) -> Result<Plan, Vec<PlanError>> {
        let _ = node;
        let mut tls_errors = Vec::new();
        let frontends = config
            .frontends
            .iter()
            .map(|f| crate::tls::with_frontend_tls(frontend(f), f, config_file, &mut tls_errors))
            .collect();
        let backends = config
            .backends
            .iter()
            .map(|b| crate::tls::with_backend_tls(backend(b), b, config_file, &mut tls_errors))
            .collect();
        match Plan::new(frontends, backends) {
            Ok(plan) if tls_errors.is_empty() => Ok(plan),
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
    if f.protect.is_some() {
        warn!(
            frontend = name,
            "protect (rate limits) is not implemented yet"
        );
    }
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
    fe
}

fn backend(b: &cfg::Backend) -> Backend {
    let name = b.name.as_str();
    if b.balance != cfg::Balance::RoundRobin {
        warn!(backend = name, balance = %b.balance, "balance algorithm not implemented yet; using roundrobin");
    }
    if b.persistence.is_some() {
        warn!(backend = name, "persistence is not implemented yet");
    }
    let servers = b
        .servers
        .iter()
        .map(|s| Server {
            name: s.name.as_str().to_owned(),
            addr: s.address.socket_addr(),
            // Drained and maintenance servers take no new traffic.
            weight: if s.state == cfg::ServerState::Ready {
                u32::from(s.weight.get())
            } else {
                0
            },
            max_connections: s.max_connections.map(|c| c.get()),
            backup: s.backup,
        })
        .collect();
    let mut be = Backend::new(name, mode(b.mode), servers);
    be.algorithm = Algorithm::RoundRobin;
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
    });
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
}
