//! Crash test of the store on the real filesystem: a child process (this test binary,
//! re-executed with `TANDEM_STORE_CRASH_DIR` set) commits in a loop and is SIGKILLed at
//! seeded random points; after every kill the store must load and its current generation
//! must be the last one the child acknowledged or the one after it, never torn.
//! Must not use anything but a temporary directory under the system temp dir.
//!
//! `TANDEM_STORE_CRASH_SEED` replays a seed; `TANDEM_STORE_CRASH_KILLS` changes the count.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_store::{CommitInfo, Store};

const CHILD_ENV: &str = "TANDEM_STORE_CRASH_DIR";
/// The whole test must finish well within this bound.
const TIME_BOUND: Duration = Duration::from_secs(240);

fn sample(n: u64) -> String {
    format!(
        "# commit {n}\nversion: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:8080\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - {{ name: app1, address: 127.0.0.1:9001, weight: {} }}\n      - {{ name: extra{n}, address: 127.0.0.1:9002 }}\n",
        n % 256 + 1
    )
}

/// The child: commits forever, printing `acked N` after each commit returned.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // Not a child: nothing to do.
    };
    let store = Store::open(Path::new(&dir)).expect("child opens the store");
    let mut n = store
        .current_number()
        .expect("child reads current")
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {n}");
    let _ = out.flush();
    loop {
        n += 1;
        let info = CommitInfo {
            author: "crash".into(),
            node: None,
            time_ms: n,
            comment: format!("commit {n}"),
        };
        let g = store.commit(&sample(n), &info).expect("child commits");
        let _ = writeln!(out, "acked {}", g.meta.number);
        let _ = out.flush();
    }
}

/// xorshift64*: a seeded generator without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-store-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

#[test]
fn sigkill_at_random_points_of_commits_leaves_a_loadable_store() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed: u64 = std::env::var("TANDEM_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7a4d_3e11);
    let kills: usize = std::env::var("TANDEM_STORE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(seed | 1);
    let dir = temp_dir();
    let exe = std::env::current_exe().expect("test binary path");
    // Generation 1 exists before the first kill, so "loadable" always means "has a current".
    let first = CommitInfo {
        author: "crash".into(),
        node: None,
        time_ms: 1,
        comment: "commit 1".into(),
    };
    Store::open(&dir)
        .unwrap()
        .commit(&sample(1), &first)
        .unwrap();
    let started = Instant::now();
    let (mut torn_checks, mut landed_new) = (0, 0);
    for i in 0..kills {
        assert!(
            started.elapsed() < TIME_BOUND,
            "seed {seed}: took too long at kill {i}"
        );
        let before = Store::open(&dir)
            .unwrap()
            .current_number()
            .unwrap()
            .unwrap_or(0);
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let acked = Arc::new(Mutex::new(before));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // libtest may print `test crash_child ... ` before our first line.
                    if line.contains("ready ") {
                        let _ = ready_tx.send(());
                    } else if let Some((_, n)) = line.split_once("acked ") {
                        *acked.lock().unwrap() = n.trim().parse().unwrap();
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("seed {seed}: child {i} never became ready"));
        // Kill somewhere between the first commit's first write and a few commits later.
        let delay = Duration::from_micros(rng.next() % 30_000);
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        reader.join().expect("reader thread");
        let acked = *acked.lock().unwrap();

        let store = Store::open(&dir)
            .unwrap_or_else(|e| panic!("seed {seed} kill {i}: store does not open: {e}"));
        let cur = store
            .load_current()
            .unwrap_or_else(|e| panic!("seed {seed} kill {i}: current does not load: {e}"));
        let n = cur.meta.number;
        assert!(
            n == acked || n == acked + 1,
            "seed {seed} kill {i} after {delay:?}: current is {n}, last acknowledged {acked}"
        );
        assert_eq!(
            cur.text,
            sample(n),
            "seed {seed} kill {i}: text of generation {n}"
        );
        // Every kept generation still loads (none is torn), and no temporary file is left.
        for m in store.history().unwrap() {
            store.generation(m.number).unwrap();
            torn_checks += 1;
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("config/generations"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "seed {seed} kill {i}: {leftovers:?}");
        if n == acked + 1 {
            landed_new += 1;
        }
    }
    let total = Store::open(&dir)
        .unwrap()
        .current_number()
        .unwrap()
        .unwrap_or(0);
    println!(
        "{kills} kills in {:?} (seed {seed}): {total} commits, {landed_new} kills landed after the commit point but before the ack, {torn_checks} generation loads checked",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
