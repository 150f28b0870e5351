//! Seeded deterministic simulation of config sync between two nodes (sozu style), on the
//! in-memory pair harness `tandem_sync::sim` with virtual time.
//!
//! Owns the action mix (time steps, commits on either or both nodes at once, sync-link cuts
//! and heals, operator resolutions of divergences, rare long clock jumps) and the checks:
//! * on every apply (inside the harness): **no committed generation is ever overwritten** —
//!   a node only replaces its current generation by a descendant of it;
//! * **after the link has been up and quiet for the convergence window, both nodes have the
//!   same current generation, unless both report a divergence** (and a reported divergence is
//!   real: neither current generation descends from the other);
//! * at the end: heal, resolve any divergence, and both converge.
//!
//! Touches only the crate's public API; no wall clock, no IO.
//! Environment: `SYNC_SIM_SEED=<n>` replays one seed with a trace; `SYNC_SIM_SEEDS=<n>` (default
//! 200) and `SYNC_SIM_STEPS=<n>` (default 300) widen the run.

use std::time::{Duration, Instant};

use tandem_sync::Relation;
use tandem_sync::sim::Pair;

/// Time with the link up and no operator action after which the pair must agree.
const WINDOW: Duration = Duration::from_secs(6);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs one seed; returns a hash of the trace and the number of window checks done.
fn run(seed: u64, steps: u64) -> (u64, u64) {
    let mut rng = Rng(seed);
    let mut p = Pair::new(Instant::now(), [1, 1]);
    let mut quiet_since = p.now;
    let mut checks = 0;
    for step in 0..steps {
        let ctx = |p: &Pair| format!("seed {seed} step {step}\n{}", p.trace.join("\n"));
        match rng.below(100) {
            0..=29 => p.run_for(Duration::from_millis(rng.below(700))),
            30..=44 => {
                p.commit(rng.below(2) as usize, 1);
                quiet_since = p.now;
            }
            45..=49 => {
                // Concurrent commits on both nodes.
                p.commit(0, 1);
                p.commit(1, 1);
                quiet_since = p.now;
            }
            50..=57 => {
                if p.link_up {
                    p.cut();
                }
            }
            58..=69 => {
                if !p.link_up {
                    p.heal();
                    quiet_since = p.now;
                }
            }
            70..=77 => {
                if p.resolve(rng.below(2) as usize, rng.below(2) == 0) {
                    quiet_since = p.now;
                }
            }
            78 => p.run_for(Duration::from_secs(10 + rng.below(20))), // buggify: long jump
            _ => p.run_for(Duration::from_millis(50)),
        }
        if p.link_up && p.now.duration_since(quiet_since) > WINDOW {
            checks += 1;
            let r0 = p.nodes[0].core.status().relation;
            let r1 = p.nodes[1].core.status().relation;
            if r0 == Relation::Diverged || r1 == Relation::Diverged {
                assert_eq!(
                    (&r0, &r1),
                    (&Relation::Diverged, &Relation::Diverged),
                    "divergence seen by one side only\n{}",
                    ctx(&p)
                );
                let (a, b) = (p.nodes[0].current().unwrap(), p.nodes[1].current().unwrap());
                assert!(
                    !p.is_ancestor(&a, &b) && !p.is_ancestor(&b, &a),
                    "false divergence {a} / {b}\n{}",
                    ctx(&p)
                );
            } else {
                assert!(
                    p.converged(),
                    "not converged after a quiet healthy window: {:?} vs {:?}\n{}",
                    p.nodes[0].current(),
                    p.nodes[1].current(),
                    ctx(&p)
                );
            }
        }
    }
    // Finale: heal, resolve, converge.
    if !p.link_up {
        p.heal();
    }
    p.run_for(WINDOW);
    if !p.converged() {
        assert!(
            p.resolve(0, true) || p.resolve(1, false),
            "not converged and no divergence to resolve (seed {seed})\n{}",
            p.trace.join("\n")
        );
        p.run_for(WINDOW);
    }
    assert!(
        p.converged(),
        "seed {seed}: not converged after resolution\n{}",
        p.trace.join("\n")
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in &p.trace {
        for b in line.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    (h, checks)
}

#[test]
fn no_overwrite_and_convergence_over_many_seeds() {
    let steps = env("SYNC_SIM_STEPS", 300);
    if let Ok(seed) = std::env::var("SYNC_SIM_SEED") {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("debug")
            .try_init();
        let seed = seed.parse().expect("SYNC_SIM_SEED is a number");
        let (h, checks) = run(seed, steps);
        println!("seed {seed}: trace {h:016x}, {checks} window checks");
        return;
    }
    let seeds = env("SYNC_SIM_SEEDS", 200);
    let mut total = 0;
    for seed in 0..seeds {
        total += run(seed, steps).1;
    }
    println!("{seeds} seeds x {steps} steps, {total} window checks");
    assert!(
        total > seeds,
        "the window check ran too rarely to mean anything"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    assert_eq!(run(7, 200), run(7, 200));
}
