//! Unit tests of the transactions on an in-memory store and fake services: a commit that
//! applies moves `current`, one that fails is restored, `commit confirmed` rolls back at its
//! deadline unless confirmed, `rollback N`, and finishing an interrupted commit. Time is
//! tokio's paused clock. Must not start processes or touch the real filesystem.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tandem_config::MemoryCertFiles;
use tandem_store::{Generation, MemFs, Store};

use crate::core::Core;
use crate::maintenance::Maintenance;
use crate::options::Options;
use crate::services::{BoxFuture, Children};
use crate::state::lock;

/// Services that apply instantly: a generation whose text contains `# fail` does not apply.
/// Records every apply as (generation, previous generation).
#[derive(Default)]
struct FakeChildren {
    applied: Mutex<Vec<(u64, Option<u64>)>>,
    started: Mutex<BTreeSet<String>>,
}

impl Children for FakeChildren {
    fn apply<'a>(
        &'a self,
        next: &'a Generation,
        prev: Option<&'a Generation>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            lock(&self.applied).push((next.meta.number, prev.map(|p| p.meta.number)));
            if next.text.contains("# fail") {
                return Err("the proxy refused the new configuration".into());
            }
            lock(&self.started).insert("proxy".into());
            Ok(())
        })
    }

    fn is_started(&self, service: &str) -> bool {
        lock(&self.started).contains(service)
    }

    fn watch(self: Arc<Self>) {}

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async { lock(&self.started).clear() })
    }
}

fn config(weight: u32, extra: &str) -> String {
    format!(
        "version: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:8080\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - {{ name: app1, address: 127.0.0.1:9001, weight: {weight} }}\n{extra}"
    )
}

fn options() -> Options {
    Options {
        data_dir: PathBuf::from("/data"),
        node: Some("lb1".into()),
        program: PathBuf::from("tandem"),
        run_dir: PathBuf::from(crate::DEFAULT_RUN_DIR),
        control_socket: PathBuf::from(crate::DEFAULT_CONTROL_SOCKET),
        vrrp_socket: PathBuf::from(crate::DEFAULT_VRRP_SOCKET),
        access_groups: crate::access::Groups::default(),
        service_user: None,
        firewall: false,
        history_interval: crate::recorder::DEFAULT_INTERVAL,
    }
}

/// A core over `fs` with fake services.
fn core_on(fs: &MemFs) -> (Arc<Core>, Arc<FakeChildren>) {
    let store = Store::with_fs(
        Box::new(fs.clone()),
        PathBuf::from("/data/config"),
        Box::new(MemoryCertFiles::default()),
    )
    .expect("open store");
    let fake = Arc::new(FakeChildren::default());
    let children = Arc::clone(&fake);
    let maintenance = Maintenance::new(Box::new(fs.clone()), PathBuf::from("/data"));
    let core = Core::with_parts(options(), store, maintenance, move |_, _, _| children);
    (core, fake)
}

fn core() -> (Arc<Core>, Arc<FakeChildren>) {
    core_on(&MemFs::new())
}

fn current(core: &Core) -> Generation {
    core.store(Store::load_current).expect("current generation")
}

fn alarm(core: &Core, id: &str) -> bool {
    core.shared.alarms().iter().any(|a| a.id == id)
}

async fn commit(core: &Arc<Core>, text: String, confirm_ms: Option<u64>) -> Value {
    core.commit(Some(text), "alice", "test", confirm_ms)
        .await
        .unwrap_or_else(|f| panic!("commit failed: {}", f.to_json()))
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_applies_moves_current() {
    let (core, fake) = core();
    let r = commit(&core, config(1, ""), None).await;
    assert_eq!(r["committed"], true);
    assert_eq!(r["generation"], 1);
    assert_eq!(r["applied"], true);
    let r = commit(&core, config(2, ""), None).await;
    assert_eq!(r["generation"], 2);
    assert_eq!(current(&core).meta.number, 2);
    assert_eq!(current(&core).text, config(2, ""));
    assert_eq!(*lock(&fake.applied), [(1, None), (2, Some(1))]);
    // The services read what was committed; the store records it as applied.
    assert_eq!(
        core.store(|s| s.interrupted()).expect("applied pointer"),
        None
    );
    // The same text again changes nothing.
    let r = commit(&core, config(2, ""), None).await;
    assert_eq!(r["committed"], false);
    assert_eq!(current(&core).meta.number, 2);
    assert_eq!(lock(&fake.applied).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_fails_to_apply_is_restored_to_the_previous_generation() {
    let (core, fake) = core();
    commit(&core, config(1, ""), None).await;
    let bad = config(2, "# fail\n");
    let f = core
        .commit(Some(bad.clone()), "alice", "bad", None)
        .await
        .expect_err("the apply fails");
    let j = f.to_json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["generation"], 2);
    assert_eq!(j["restored"], 3);
    assert_eq!(j["restored_from"], 1);
    let now = current(&core);
    assert_eq!(now.meta.number, 3);
    assert_eq!(now.meta.author, "auto-rollback");
    assert_eq!(now.text, config(1, ""));
    assert_eq!(
        *lock(&fake.applied),
        [(1, None), (2, Some(1)), (3, Some(2))]
    );
    assert!(alarm(&core, "apply-failed"));
    // The candidate is kept for fixing.
    assert_eq!(core.store(Store::candidate).expect("candidate"), Some(bad));
    // A good commit clears the alarm.
    commit(&core, config(3, ""), None).await;
    assert!(!alarm(&core, "apply-failed"));
}

#[tokio::test(start_paused = true)]
async fn the_first_commit_failing_has_nothing_to_restore() {
    let (core, _) = core();
    let f = core
        .commit(Some(config(1, "# fail\n")), "alice", "", None)
        .await
        .expect_err("the apply fails");
    assert_eq!(f.to_json()["generation"], 1);
    assert!(f.error.contains("no previous generation"), "{}", f.error);
    assert!(alarm(&core, "apply-failed"));
}

#[tokio::test(start_paused = true)]
async fn a_commit_confirmed_not_confirmed_rolls_back_at_the_deadline() {
    let (core, fake) = core();
    commit(&core, config(1, ""), None).await;
    let r = commit(&core, config(2, ""), Some(60_000)).await;
    assert_eq!(r["pending_confirm"]["generation"], 2);
    assert_eq!(r["pending_confirm"]["restore"], 1);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(current(&core).meta.number, 2, "still inside the window");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = current(&core);
    assert_eq!(now.meta.number, 3);
    assert_eq!(now.meta.author, "auto-rollback");
    assert_eq!(now.text, config(1, ""));
    assert_eq!(lock(&fake.applied).last(), Some(&(3, Some(2))));
    assert!(alarm(&core, "confirm-expired"));
    assert_eq!(core.store(Store::pending_confirm).expect("pending"), None);
}

#[tokio::test(start_paused = true)]
async fn confirm_keeps_a_commit_confirmed() {
    let (core, _) = core();
    commit(&core, config(1, ""), None).await;
    commit(&core, config(2, ""), Some(60_000)).await;
    let r = core.confirm().await.expect("confirmed");
    assert_eq!(r["confirmed"], 2);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(current(&core).meta.number, 2);
    assert!(!alarm(&core, "confirm-expired"));
    assert!(core.confirm().await.is_err(), "nothing left to confirm");
}

#[tokio::test(start_paused = true)]
async fn a_later_commit_confirms_a_pending_one() {
    let (core, _) = core();
    commit(&core, config(1, ""), None).await;
    commit(&core, config(2, ""), Some(60_000)).await;
    let r = commit(&core, config(3, ""), None).await;
    assert_eq!(r["confirmed"], 2);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(current(&core).meta.number, 3);
}

#[tokio::test(start_paused = true)]
async fn a_confirm_window_out_of_range_is_refused() {
    let (core, _) = core();
    for ms in [0, super::MAX_CONFIRM_WINDOW.as_millis() as u64 + 1] {
        assert!(
            core.commit(Some(config(1, "")), "alice", "", Some(ms))
                .await
                .is_err()
        );
    }
    assert!(
        core.store(Store::load_current).is_err(),
        "nothing committed"
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_commits_generation_n_again() {
    let (core, _) = core();
    commit(&core, config(1, ""), None).await;
    commit(&core, config(2, ""), None).await;
    let r = core.rollback(1, "bob", "").await.expect("rolled back");
    assert_eq!(r["restores"], 1);
    assert_eq!(r["generation"], 3);
    let now = current(&core);
    assert_eq!(now.text, config(1, ""));
    assert_eq!(now.meta.comment, "rollback to generation 1");
    assert!(
        core.rollback(9, "bob", "").await.is_err(),
        "no generation 9"
    );
}

#[tokio::test(start_paused = true)]
async fn boot_finishes_an_interrupted_commit_and_rearms_a_pending_confirm() {
    let fs = MemFs::new();
    {
        let (core, _) = core_on(&fs);
        commit(&core, config(1, ""), None).await;
        commit(&core, config(2, ""), Some(60_000)).await;
    }
    // A new supervisor on the same store: generation 2 runs again, the window still counts.
    let (core, fake) = core_on(&fs);
    core.boot().await;
    assert_eq!(*lock(&fake.applied), [(2, None)]);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(current(&core).meta.number, 3, "restored at the deadline");
    assert_eq!(current(&core).text, config(1, ""));

    // A commit point without the apply (the supervisor stopped in between): boot applies and
    // checks it, and raises `interrupted-commit`.
    let fs = MemFs::new();
    {
        let (core, _) = core_on(&fs);
        commit(&core, config(1, ""), None).await;
        let info = core.info("alice", "interrupted");
        core.store(|s| s.commit(&config(2, ""), &info))
            .expect("commit point");
    }
    let (core, fake) = core_on(&fs);
    core.boot().await;
    assert_eq!(*lock(&fake.applied), [(2, None)]);
    assert!(alarm(&core, "interrupted-commit"));
    assert_eq!(core.store(|s| s.interrupted()).expect("applied"), None);
}
