//! The read-only requests of the control socket (`status`, `show history|config`, the
//! candidate, `validate`, `diff`, `logs`) and the commands forwarded to the daemons (`server`
//! to the proxy runtime API, `show servers|stats` from it, `failover` to the VRRP daemon).
//!
//! Owns the reply shapes of those requests (`docs/control-api.md`); saving or clearing the
//! candidate is the only store write here. Must not commit generations (`transaction`).

use std::path::PathBuf;

use serde_json::{Value, json};
use tandem_control::supervisor as wire;
use tandem_store::{Store, StoreError};

use crate::ask::ask;
use crate::core::Core;
use crate::reply::{
    Failure, Reply, alarm_row, data, history_entry, service_row, store_failure, vrrp_roles,
    wire_changes, wire_diagnostics, wire_pending,
};
use crate::state::now_ms;

impl Core {
    /// `status`: node, generation, pending confirm, services, VRRP roles, peer, sync, alarms.
    pub fn status(&self) -> Reply {
        let current = self.store(Store::load_current).ok();
        let pending = self.store(Store::pending_confirm).ok().flatten();
        let maintenance = self.maintenance.record();
        data(wire::Status {
            node: self.opts.node.clone(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            uptime_s: Some(self.started.elapsed().as_secs()),
            now_ms: Some(now_ms()),
            generation: current.as_ref().map(|g| wire::GenerationSummary {
                number: Some(g.meta.number),
                fingerprint: Some(g.meta.fingerprint.clone()),
                author: Some(g.meta.author.clone()),
                time_ms: Some(g.meta.time_ms),
                comment: Some(g.meta.comment.clone()),
            }),
            pending_confirm: pending.map(wire_pending),
            maintenance: Some(self.maintenance.on()),
            maintenance_since_ms: maintenance.as_ref().map(|r| r.since_ms),
            maintenance_by: maintenance.as_ref().map(|r| r.by.clone()),
            services: self
                .shared
                .services()
                .into_iter()
                .map(service_row)
                .collect(),
            vrrp: vrrp_roles(self.shared.vrrp()),
            peer: self.peer_summary(),
            sync: json!(self.sync.get().map(|h| h.snapshot())),
            alarms: self.shared.alarms().into_iter().map(alarm_row).collect(),
        })
    }

    /// `show history`: newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> Reply {
        let mut h = self.store(Store::history).map_err(store_failure)?;
        h.truncate(limit);
        let current = self.store(Store::current_number).ok().flatten();
        data(wire::History {
            current,
            generations: h.iter().map(history_entry).collect(),
        })
    }

    /// `show config`: the text and the model of generation `n` (default: current).
    pub fn show_config(&self, n: Option<u64>) -> Reply {
        let g = match n {
            Some(n) => self.store(|s| s.generation(n)),
            None => self.store(Store::load_current),
        }
        .map_err(store_failure)?;
        data(wire::ShowConfig {
            generation: Some(g.meta.number),
            meta: history_entry(&g.meta),
            text: Some(g.text),
            config: json!(g.config),
        })
    }

    /// The candidate, or the current text when no candidate is being edited.
    pub fn candidate_get(&self) -> Reply {
        if let Some(text) = self.store(Store::candidate).map_err(store_failure)? {
            return data(wire::Candidate::Candidate { text });
        }
        match self.store(Store::load_current) {
            Ok(g) => data(wire::Candidate::Running {
                generation: g.meta.number,
                text: g.text,
            }),
            Err(StoreError::Empty(_)) => data(wire::Candidate::Empty {
                text: String::new(),
            }),
            Err(e) => Err(store_failure(e)),
        }
    }

    /// Saves the candidate and reports whether it is valid (an invalid one is still saved).
    pub fn candidate_set(&self, text: &str) -> Reply {
        self.store(|s| s.set_candidate(text))
            .map_err(store_failure)?;
        data(match self.store(|s| s.validate(text)) {
            Ok(l) => wire::CandidateSaved {
                saved: Some(true),
                valid: Some(true),
                warnings: Some(l.warnings.iter().map(ToString::to_string).collect()),
                ..wire::CandidateSaved::default()
            },
            Err(StoreError::Invalid(r)) => wire::CandidateSaved {
                saved: Some(true),
                valid: Some(false),
                error_count: Some(r.error_count() as u64),
                diagnostics: Some(wire_diagnostics(&r)),
                ..wire::CandidateSaved::default()
            },
            Err(e) => return Err(store_failure(e)),
        })
    }

    /// Discards the candidate.
    pub fn candidate_clear(&self) -> Reply {
        self.store(Store::clear_candidate).map_err(store_failure)?;
        data(wire::Cleared { cleared: true })
    }

    fn text_or_candidate(&self, text: Option<String>) -> Result<String, Failure> {
        match text {
            Some(t) => Ok(t),
            None => self
                .store(Store::candidate)
                .map_err(store_failure)?
                .ok_or_else(|| {
                    Failure::new(
                        "there is no candidate",
                        "start one with `config edit` or `config load FILE`",
                    )
                }),
        }
    }

    /// Validates `text` (or the candidate).
    pub fn validate(&self, text: Option<String>) -> Reply {
        let text = self.text_or_candidate(text)?;
        let l = self.store(|s| s.validate(&text)).map_err(store_failure)?;
        data(wire::Validated {
            valid: true,
            warnings: l.warnings.iter().map(ToString::to_string).collect(),
        })
    }

    /// The changes from generation `against` (default: current) to `text` (or the candidate).
    pub fn diff(&self, text: Option<String>, against: Option<u64>) -> Reply {
        let text = self.text_or_candidate(text)?;
        let new = self.store(|s| s.validate(&text)).map_err(store_failure)?;
        let old = match against {
            Some(n) => self.store(|s| s.generation(n)),
            None => self.store(Store::load_current),
        };
        let (number, changes) = match old {
            Ok(g) => (
                Some(g.meta.number),
                tandem_config::diff(&g.config, &new.config),
            ),
            Err(StoreError::Empty(_)) => (None, Vec::new()),
            Err(e) => return Err(store_failure(e)),
        };
        data(wire::Diff {
            against: number.map(Value::from),
            changes: wire_changes(&changes),
            text: Some(tandem_config::diff::render(&changes)),
        })
    }

    /// The last `lines` log lines of `service` (all when `None`).
    pub fn logs(&self, service: Option<&str>, lines: usize) -> Reply {
        const SERVICES: [&str; 3] = ["proxy", "vrrp", "supervisor"];
        if let Some(s) = service
            && !SERVICES.contains(&s)
        {
            return Err(Failure::new(
                format!("unknown service `{s}`"),
                format!("services: {}; none for all", SERVICES.join(", ")),
            ));
        }
        data(wire::Logs {
            lines: self
                .shared
                .log_tail(service, lines.min(crate::state::LOG_LINES)),
        })
    }

    // ---- forwarded commands ----------------------------------------------------------------

    /// `server BACKEND/NAME drain|ready|maint|weight N`: forwarded to the proxy runtime API.
    pub async fn server(
        &self,
        backend: Option<&str>,
        server: Option<&str>,
        action: Option<&str>,
        weight: Option<Value>,
    ) -> Reply {
        let socket = self
            .store(Store::load_current)
            .map(|g| self.runtime_socket(&g.config))
            .map_err(store_failure)?;
        if !socket.exists() {
            return Err(Failure::new(
                format!(
                    "not available yet: the proxy runtime API is not listening on {}",
                    socket.display()
                ),
                "to change a server persistently, edit it in the configuration (`config edit`, set `state:` or `weight:`) and `config commit`",
            ));
        }
        // The proxy runtime API's `set server` (crates/proxy/src/api.rs): `server` is
        // `BACKEND/SERVER`, `state` is
        // ready|drain|maint, or `weight` 0..=256. Run-time only: the next commit or restart
        // returns to the configured values.
        // Built as `tandem_control::runtime::Request::SetServer` is, but `weight` goes on as
        // the client sent it (the proxy judges it).
        let mut forwarded = json!({
            "cmd": "set server",
            "server": format!("{}/{}", backend.unwrap_or(""), server.unwrap_or("")),
        });
        match action {
            Some("weight") => forwarded["weight"] = weight.unwrap_or(Value::Null),
            Some(state @ ("ready" | "drain" | "maint")) => forwarded["state"] = json!(state),
            other => {
                return Err(Failure::new(
                    format!("unknown server action {other:?}"),
                    "use drain, ready, maint or weight N",
                ));
            }
        }
        let reply = ask(&socket, &forwarded)
            .await
            .map_err(|e| Failure::new(e, "check `status` and `logs proxy`"))?;
        if reply.get("ok") == Some(&Value::Bool(false)) {
            let e = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Err(Failure::new(
                format!("the proxy refused: {e}"),
                "`show servers` lists backends and servers",
            ));
        }
        self.event(&format!(
            "server command forwarded to the proxy: {forwarded}"
        ));
        data(wire::ServerCommandReply { proxy: reply })
    }

    /// The proxy runtime API's socket, or a failure saying the proxy is not running.
    fn proxy_socket(&self) -> Result<PathBuf, Failure> {
        let socket = self
            .store(Store::load_current)
            .map(|g| self.runtime_socket(&g.config))
            .map_err(store_failure)?;
        if !socket.exists() {
            return Err(proxy_down(format!(
                "the proxy runtime API is not listening on {}",
                socket.display()
            )));
        }
        Ok(socket)
    }

    /// One read-only request to the proxy runtime API; its reply when `ok`.
    async fn ask_proxy(&self, request: &Value) -> Result<Value, Failure> {
        let socket = self.proxy_socket()?;
        let reply = ask(&socket, request).await.map_err(proxy_down)?;
        if reply.get("ok") != Some(&Value::Bool(true)) {
            let e = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            let cmd = request.get("cmd").and_then(Value::as_str).unwrap_or("");
            return Err(Failure::new(
                format!("the proxy refused `{cmd}`: {e}"),
                "`show servers` lists backends and servers; `logs proxy` shows the proxy's log",
            ));
        }
        Ok(reply)
    }

    /// `show_servers`: state and counters of every server (of `backend`), live from the proxy
    /// runtime API's `show servers`.
    pub async fn show_servers(&self, backend: Option<&str>) -> Reply {
        let request = tandem_control::runtime::Request::ShowServers {
            backend: backend.map(str::to_owned),
        };
        let reply = self.ask_proxy(&to_value(&request)).await?;
        Ok(json!({"servers": reply.get("servers").cloned().unwrap_or(json!([]))}))
    }

    /// `show_stats`: counters of every frontend and backend, live from the proxy runtime API's
    /// `show frontends` and `show backends`.
    pub async fn show_stats(&self) -> Reply {
        let frontends = self
            .ask_proxy(&to_value(&tandem_control::runtime::Request::ShowFrontends))
            .await?;
        let backends = self
            .ask_proxy(&to_value(&tandem_control::runtime::Request::ShowBackends))
            .await?;
        Ok(json!({
            "frontends": frontends.get("frontends").cloned().unwrap_or(json!([])),
            "backends": backends.get("backends").cloned().unwrap_or(json!([])),
        }))
    }

    /// `show_traffic`: the recorded traffic history of `target` over `last` (`recorder.rs`).
    pub fn show_traffic(&self, target: Option<&str>, last: Option<&str>) -> Reply {
        let traffic = self.traffic.show(target, last).map_err(|e| {
            Failure::new(
                e,
                "name a frontend, backend or server (`show stats`) and a range like 1h, 7d or 1y; the history starts when the proxy runs",
            )
        })?;
        data(traffic)
    }

    /// `failover`: planned switchover through the VRRP daemon.
    pub async fn failover(&self, instance: Option<&str>) -> Reply {
        if !self.is_started("vrrp") {
            return Err(Failure::new(
                "not available: no vrrp daemon runs on this node",
                "failover needs vrrp instances in the configuration and `--node NAME` on the supervisor; see `status`",
            ));
        }
        let req = tandem_control::vrrp::Request::Switchover {
            instance: instance.map(str::to_owned),
        }
        .to_value();
        let reply = ask(&self.opts.vrrp_socket, &req)
            .await
            .map_err(|e| Failure::new(e, "check `show vrrp` and `logs vrrp`"))?;
        if reply.get("ok") == Some(&Value::Bool(false)) {
            let e = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Err(Failure::new(
                format!("the vrrp daemon refused the switchover: {e}"),
                "only the master of an instance can hand it over; `show vrrp` shows the roles",
            ));
        }
        self.event(&format!("planned switchover: {reply}"));
        data(wire::FailoverReply { vrrp: reply })
    }
}

/// The proxy runtime API cannot be asked: `what` says why.
fn proxy_down(what: String) -> Failure {
    Failure::new(what, "the proxy is not running; see `tandemctl status`")
}

/// A runtime API request as the JSON object [`ask`] sends.
fn to_value(request: &tandem_control::runtime::Request) -> Value {
    serde_json::to_value(request).unwrap_or_default()
}
