//! The VRRP daemon's control socket (`vrrp.sock`): requests, replies and the event feed.
//!
//! Owns the wire shapes of `status`, `switchover`, `hold`, `release`, `announce` and `watch`
//! (documented in `crates/vrrpd/src/control.rs` and `docs/control-api.md`): [`Request`], the
//! reply data ([`Status`] with one [`InstanceStatus`] per instance, [`FanOut`],
//! [`Watching`]) and the events a watcher reads ([`Event`], [`Lagged`]). Must not run
//! commands (the daemon does) nor open sockets.
//!
//! The daemon reads requests leniently ([`Request::from_value`]): a field of the wrong type
//! counts as absent, and the daemon's own checks (`hold` needs `ms`) answer, as before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every instance's status.
    Status,
    /// Hand over every (or the named) instance this node is master of.
    Switchover {
        /// Only this instance.
        instance: Option<String>,
    },
    /// Stay backup for `ms` (1..=60000); refreshes a running hold.
    Hold {
        /// Only this instance.
        instance: Option<String>,
        /// How long; checked by the daemon.
        ms: Option<u64>,
    },
    /// End a hold early.
    Release {
        /// Only this instance.
        instance: Option<String>,
    },
    /// A master re-sends its gratuitous ARP / unsolicited NA burst.
    Announce {
        /// Only this instance.
        instance: Option<String>,
    },
    /// The event feed, until the client disconnects.
    Watch,
    /// Anything else (`cmd` as sent; empty when missing).
    Unknown(String),
}

/// The commands group `tandem-monitor` may run.
pub const READ_COMMANDS: &[&str] = &["status", "watch"];

impl Request {
    /// The request in a line the daemon read (fields of the wrong type count as absent).
    pub fn from_value(v: &Value) -> Request {
        let instance = || v.get("instance").and_then(Value::as_str).map(str::to_owned);
        match v.get("cmd").and_then(Value::as_str).unwrap_or("") {
            "status" => Request::Status,
            "switchover" => Request::Switchover {
                instance: instance(),
            },
            "hold" => Request::Hold {
                instance: instance(),
                ms: v.get("ms").and_then(Value::as_u64),
            },
            "release" => Request::Release {
                instance: instance(),
            },
            "announce" => Request::Announce {
                instance: instance(),
            },
            "watch" => Request::Watch,
            other => Request::Unknown(other.to_owned()),
        }
    }

    /// The command's name.
    pub fn cmd(&self) -> &str {
        match self {
            Request::Status => "status",
            Request::Switchover { .. } => "switchover",
            Request::Hold { .. } => "hold",
            Request::Release { .. } => "release",
            Request::Announce { .. } => "announce",
            Request::Watch => "watch",
            Request::Unknown(c) => c,
        }
    }

    /// Whether group `tandem-monitor` may run it.
    pub fn is_read(&self) -> bool {
        READ_COMMANDS.contains(&self.cmd())
    }

    /// The request as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("cmd".into(), Value::String(self.cmd().to_owned()));
        let (instance, ms) = match self {
            Request::Switchover { instance }
            | Request::Release { instance }
            | Request::Announce { instance } => (instance.as_ref(), None),
            Request::Hold { instance, ms } => (instance.as_ref(), *ms),
            _ => (None, None),
        };
        if let Some(i) = instance {
            m.insert("instance".into(), Value::String(i.clone()));
        }
        if let Some(ms) = ms {
            m.insert("ms".into(), Value::from(ms));
        }
        Value::Object(m)
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// The instances, in configuration order, as each instance task last published.
    pub instances: Vec<Value>,
}

/// One instance's status, as its task publishes it (an entry of [`Status::instances`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Instance name.
    pub name: String,
    /// Its VRID.
    pub vrid: u8,
    /// Its interface.
    pub interface: String,
    /// `initialize`, `backup`, `master` or `fault`.
    pub state: String,
    /// Configured priority.
    pub priority: u8,
    /// After track penalties.
    pub effective_priority: u8,
    /// The current master's address, when known.
    pub master: Option<String>,
    /// `ADDRESS/PREFIX` of each VIP.
    pub vips: Vec<String>,
    /// Whether this node holds the VIPs.
    pub vips_held: bool,
    /// The interface's link.
    pub link_up: bool,
    /// Sum of the weights of failed tracks.
    pub track_penalty: u8,
    /// What failed (`interface eth2`, `proxy`).
    pub failed_tracks: Vec<String>,
    /// Remaining backup hold; null without one.
    pub hold_ms: Option<u64>,
    /// Age of the last advert heard from another router.
    pub last_advert_ms: Option<u64>,
    /// `up`, `down` or `off`.
    pub proxy_tracking: String,
    /// Counters.
    pub counters: InstanceCounters,
}

/// An instance's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceCounters {
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Adverts received.
    pub adverts_received: u64,
    /// Invalid adverts.
    pub adverts_invalid: u64,
    /// Invalid adverts by reason (only reasons seen).
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Priority-0 adverts sent.
    pub priority_zero_sent: u64,
    /// Priority-0 adverts received.
    pub priority_zero_received: u64,
    /// State transitions.
    pub transitions: u64,
    /// Times it became master.
    pub became_master: u64,
    /// Times it became backup.
    pub became_backup: u64,
    /// Malformed packets.
    pub rx_malformed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// VIP add/remove errors.
    pub vip_errors: u64,
    /// Gratuitous ARP / NA sent.
    pub garp_sent: u64,
    /// Their errors.
    pub garp_errors: u64,
    /// Track errors.
    pub track_errors: u64,
    /// Link notifications.
    pub link_events: u64,
    /// VIPs reinstalled after a resume.
    pub resyncs: u64,
    /// VIP lifetime renewals.
    pub renewals: u64,
    /// The guardian's write errors; null without a guardian.
    pub guardian_write_errors: Option<u64>,
}

/// What a `switchover`, `hold`, `release` or `announce` applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    /// `switchover`.
    Switched(Vec<String>),
    /// `hold`.
    Held(Vec<String>),
    /// `release`.
    Released(Vec<String>),
    /// `announce`.
    Announced(Vec<String>),
}

/// The reply of `switchover`, `hold`, `release`, `announce` when it applied to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// The instances it applied to, under the command's key (`switched`, `held`, ...).
    #[serde(flatten)]
    pub applied: Applied,
    /// `INSTANCE: why` for the others.
    pub skipped: Vec<String>,
}

/// `watch`, before the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watching {
    /// Always true.
    pub watching: bool,
}

/// One event of the feed. Written with its fields in this order (`serde_json::to_vec`, not
/// [`crate::to_line`]), as the daemon always wrote them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `state` or `resync`.
    pub event: String,
    /// Position in the daemon's event order, from 1.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Instance name.
    pub instance: String,
    /// Its VRID.
    pub vrid: u8,
    /// Its interface.
    pub interface: String,
    /// Previous state (state events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// New state (state events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why, snake_case (`master_down`, `preempted`, `switchover`, ...).
    pub reason: String,
    /// Extra detail, e.g. who preempted us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The event a watcher gets instead of those it missed by reading too slowly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lagged {
    /// Always `lagged`.
    pub event: LaggedTag,
    /// Events dropped.
    pub missed: u64,
}

/// The tag of [`Lagged`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaggedTag {
    /// `lagged`.
    Lagged,
}

impl Lagged {
    /// `missed` events were dropped.
    pub fn new(missed: u64) -> Lagged {
        Lagged {
            event: LaggedTag::Lagged,
            missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Failure, Reply, to_line};
    use serde_json::json;

    #[test]
    fn requests_are_the_documented_lines_and_read_back() {
        let cases = [
            (Request::Status, r#"{"cmd":"status"}"#),
            (
                Request::Switchover { instance: None },
                r#"{"cmd":"switchover"}"#,
            ),
            (
                Request::Switchover {
                    instance: Some("www".into()),
                },
                r#"{"cmd":"switchover","instance":"www"}"#,
            ),
            (
                Request::Hold {
                    instance: Some("www".into()),
                    ms: Some(1000),
                },
                r#"{"cmd":"hold","instance":"www","ms":1000}"#,
            ),
            (Request::Release { instance: None }, r#"{"cmd":"release"}"#),
            (
                Request::Announce {
                    instance: Some("www".into()),
                },
                r#"{"cmd":"announce","instance":"www"}"#,
            ),
            (Request::Watch, r#"{"cmd":"watch"}"#),
        ];
        for (req, want) in cases {
            assert_eq!(to_line(&req), format!("{want}\n").into_bytes());
            let v: Value = serde_json::from_str(want).unwrap();
            assert_eq!(Request::from_value(&v), req);
        }
        assert_eq!(
            Request::from_value(&json!({"cmd": "hold", "ms": "soon"})),
            Request::Hold {
                instance: None,
                ms: None
            }
        );
        assert_eq!(
            Request::from_value(&json!({"x": 1})),
            Request::Unknown(String::new())
        );
        assert!(Request::Watch.is_read() && !Request::Unknown("x".into()).is_read());
    }

    #[test]
    fn replies_and_events_match_the_documented_lines() {
        let r: Reply<FanOut> = Reply::Ok(FanOut {
            applied: Applied::Switched(vec!["www".into()]),
            skipped: vec![],
        });
        assert_eq!(
            to_line(&r),
            b"{\"ok\":true,\"skipped\":[],\"switched\":[\"www\"]}\n"
        );
        assert_eq!(Reply::from_value(r.to_value()).unwrap(), r);
        let held = json!({"ok":true,"held":["www"],"skipped":[]});
        let r = Reply::<FanOut>::from_value(held.clone()).unwrap();
        assert_eq!(r.to_value(), held);
        let r = Reply::<Status>::from_value(
            json!({"ok":true,"node":"lb1","instances":[{"name":"www"}]}),
        )
        .unwrap();
        assert_eq!(
            to_line(&r),
            b"{\"instances\":[{\"name\":\"www\"}],\"node\":\"lb1\",\"ok\":true}\n"
        );
        assert_eq!(
            to_line(&Reply::Ok(Watching { watching: true })),
            b"{\"ok\":true,\"watching\":true}\n"
        );
        assert_eq!(
            to_line(&Reply::<Watching>::Err(Failure::new(
                "request line too long"
            ))),
            b"{\"error\":\"request line too long\",\"ok\":false}\n"
        );
        // Events are written as declared (not through `Value`), as the daemon always did.
        let ev = r#"{"event":"state","seq":7,"ts_ms":1732262400123,"instance":"www","vrid":51,"interface":"eth1","from":"backup","to":"master","reason":"master_down"}"#;
        let e: Event = serde_json::from_str(ev).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), ev);
        assert_eq!(
            to_line(&Lagged::new(3)),
            b"{\"event\":\"lagged\",\"missed\":3}\n"
        );
    }

    #[test]
    fn an_instance_status_round_trips() {
        let doc = json!({"name":"www","vrid":51,"interface":"eth1","state":"master",
            "priority":150,"effective_priority":150,"master":"198.18.1.1",
            "vips":["198.18.1.10/24"],"vips_held":true,"link_up":true,"track_penalty":0,
            "failed_tracks":[],"hold_ms":null,"last_advert_ms":12,"proxy_tracking":"off",
            "counters":{"adverts_sent":1,"adverts_received":2,"adverts_invalid":0,
            "invalid_by_reason":{},"priority_zero_sent":0,"priority_zero_received":0,
            "transitions":1,"became_master":1,"became_backup":0,"rx_malformed":0,
            "rx_errors":0,"tx_errors":0,"vip_errors":0,"garp_sent":5,"garp_errors":0,
            "track_errors":0,"link_events":0,"resyncs":0,"renewals":0,
            "guardian_write_errors":null}});
        let s: InstanceStatus = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), doc);
    }
}
