//! The IO shell end to end on loopback: two shells with in-memory hosts, mutual TLS with
//! pinned certificates. A paired pair syncs a commit (time printed); a wrong pin never connects.
//! Must not use anything but 127.0.0.1, ephemeral ports and temporary directories.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_sync::shell::{self, Command, Endpoints, Host, PeerResult};
use tandem_sync::tls::Identity;
use tandem_sync::{GenInfo, GenRef, LinkState, LocalView, Outcome, RefusalKind, WireGeneration};

struct MemHost {
    ep: Endpoints,
    history: Mutex<Vec<WireGeneration>>,
}

impl MemHost {
    fn commit(&self, text: &str) -> GenRef {
        let mut h = self.history.lock().unwrap();
        let parent = h.last().map(|g| g.generation.clone());
        let g = GenRef {
            number: parent.as_ref().map_or(1, |p| p.number + 1),
            fingerprint: format!("{:0>32}", text),
        };
        h.push(WireGeneration {
            generation: g.clone(),
            parent,
            schema_version: 1,
            author: "test".into(),
            node: Some(self.ep.node.clone()),
            time_ms: 0,
            comment: String::new(),
            text: text.into(),
        });
        g
    }
    fn current(&self) -> Option<GenRef> {
        self.history
            .lock()
            .unwrap()
            .last()
            .map(|g| g.generation.clone())
    }
}

impl Host for MemHost {
    fn endpoints(&self) -> Option<Endpoints> {
        Some(self.ep.clone())
    }
    fn local_view(&self) -> LocalView {
        LocalView {
            history: self
                .history
                .lock()
                .unwrap()
                .iter()
                .map(|g| GenInfo {
                    generation: g.generation.clone(),
                    schema_version: g.schema_version,
                })
                .collect(),
        }
    }
    fn load(&self, number: u64) -> Option<WireGeneration> {
        self.history
            .lock()
            .unwrap()
            .iter()
            .find(|g| g.generation.number == number)
            .cloned()
    }
    async fn apply(&self, generation: WireGeneration, expected: Option<GenRef>) -> Outcome {
        let mut h = self.history.lock().unwrap();
        if h.last().map(|g| g.generation.clone()) != expected {
            return Outcome::Refused {
                kind: RefusalKind::Busy,
                reason: "raced".into(),
            };
        }
        h.push(generation);
        Outcome::Applied
    }
    async fn runtime_export(&self) -> Option<Value> {
        None
    }
    async fn runtime_import(&self, _: Value) {}
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tandem-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

async fn wait(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t0.elapsed()
}

fn pair(
    name: &str,
    pin_right: bool,
) -> (
    Arc<MemHost>,
    Arc<MemHost>,
    shell::SyncHandle,
    shell::SyncHandle,
    Vec<PathBuf>,
) {
    let (a, b): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", port()).parse().unwrap(),
        format!("127.0.0.1:{}", port()).parse().unwrap(),
    );
    let dirs = vec![tmp(&format!("{name}-1")), tmp(&format!("{name}-2"))];
    let id1 = Identity::load_or_create(&dirs[0]).unwrap();
    let id2 = Identity::load_or_create(&dirs[1]).unwrap();
    id1.pin(&id2.fingerprint).unwrap();
    if pin_right {
        id2.pin(&id1.fingerprint).unwrap();
    } else {
        id2.pin(&"00".repeat(32)).unwrap();
    }
    let h1 = Arc::new(MemHost {
        ep: Endpoints {
            node: "lb1".into(),
            peer: "lb2".into(),
            local: a,
            remote: b,
        },
        history: Mutex::default(),
    });
    let h2 = Arc::new(MemHost {
        ep: Endpoints {
            node: "lb2".into(),
            peer: "lb1".into(),
            local: b,
            remote: a,
        },
        history: Mutex::default(),
    });
    let (s1, _) = shell::spawn(Arc::clone(&h1), id1, "0.1.0".into(), 1);
    let (s2, _) = shell::spawn(Arc::clone(&h2), id2, "0.1.0".into(), 1);
    (h1, h2, s1, s2, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_nodes_sync_a_commit_over_mutual_tls() {
    let (h1, h2, s1, s2, dirs) = pair("ok", true);
    let up = wait("link up", || {
        s1.snapshot().core.is_some_and(|c| c.link == LinkState::Up)
            && s2.snapshot().core.is_some_and(|c| c.link == LinkState::Up)
    })
    .await;
    println!("link up after {up:?}");
    let g = h1.commit("one");
    let t0 = Instant::now();
    s1.notify(Command::LocalChanged);
    assert_eq!(
        s1.wait_peer(&g, Duration::from_secs(5)).await,
        PeerResult::Applied
    );
    println!("commit acknowledged by the peer after {:?}", t0.elapsed());
    assert_eq!(h2.current(), Some(g));
    // A certificate fingerprint is shown as AB:CD:...
    assert_eq!(s1.snapshot().fingerprint.len(), 64 + 31);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_never_connects() {
    let (h1, h2, s1, s2, dirs) = pair("bad", false);
    wait("failed handshakes", || {
        s1.snapshot().errors >= 2 && s2.snapshot().errors >= 1
    })
    .await;
    let g = h1.commit("one");
    s1.notify(Command::LocalChanged);
    assert!(matches!(
        s1.wait_peer(&g, Duration::from_secs(2)).await,
        PeerResult::Unreachable(_)
    ));
    assert_eq!(h2.current(), None);
    assert!(
        s1.snapshot()
            .core
            .is_some_and(|c| c.link == LinkState::Down)
    );
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
