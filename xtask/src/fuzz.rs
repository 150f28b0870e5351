//! `cargo xtask fuzz`: bounded fuzzing runs of the targets in `fuzz/` with cargo-fuzz
//! (libFuzzer), and corpus minimisation. See docs/testing.md, "Fuzzing".
//!
//! Owns: installing cargo-fuzz on demand, the command line each run uses (sanitizer,
//! dictionary, corpus directories, time bound), the one-line summary of a run (executions,
//! coverage, crashes) and `cmin` back into the checked-in corpus; also the tidy tests that
//! every target has a small checked-in corpus and a replay test.
//! Must not be needed by CI: CI only replays the corpora, as plain `cargo test` unit tests
//! in the crates (`fuzz::tests::*_corpus_replays`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::{cargo_target_dir, host, project_root, section};

/// The cargo-fuzz release the documented commands were measured with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Largest input the fuzzer generates, in bytes (libFuzzer `-max_len`); the parsers' own
/// limits (a 16 KiB request head, a 2 KiB PROXY v2 payload) are in reach, multi-MB blobs not.
const MAX_LEN: usize = 8192;
/// Per-input time limit, in seconds (libFuzzer `-timeout`): slower counts as a crash.
const TIMEOUT_SECS: u32 = 10;

/// Targets, in `fuzz/Cargo.toml` order.
pub const TARGETS: &[&str] = &[
    "http1_request",
    "http1_response",
    "proxy_protocol",
    "vrrp",
    "config",
    "sync_frames",
];

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: FuzzCmd,
}

#[derive(clap::Subcommand)]
enum FuzzCmd {
    /// List the fuzz targets.
    List,
    /// Install cargo-fuzz (crates.io, `cargo install --locked`) if it is missing.
    Setup,
    /// Fuzz one target for a bounded time, starting from its checked-in corpus and
    /// regressions; new inputs go to a work corpus under the target dir, crashes to
    /// `fuzz/artifacts/<target>/`.
    Run {
        /// The target (see `list`).
        target: String,
        /// How long to fuzz, in seconds.
        #[arg(long, default_value_t = 600)]
        time: u64,
        /// `address` (ASan; needs `RUSTC_BOOTSTRAP=1`, which this sets for the fuzz build
        /// only) or `none` (plain stable, about twice the executions per second).
        #[arg(long, default_value = "address")]
        sanitizer: String,
        /// Extra libFuzzer options, e.g. `-- -seed=1`.
        #[arg(last = true)]
        libfuzzer: Vec<String>,
    },
    /// Minimise the checked-in corpus together with the work corpus of earlier runs into
    /// `fuzz/corpus/<target>/` (libFuzzer `-merge=1`: the fewest inputs keeping all coverage).
    Cmin {
        /// The target (see `list`).
        target: String,
        /// As for `run`.
        #[arg(long, default_value = "address")]
        sanitizer: String,
    },
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    match args.cmd {
        FuzzCmd::List => {
            for t in TARGETS {
                println!("{t}");
            }
            Ok(())
        }
        FuzzCmd::Setup => setup(sh),
        FuzzCmd::Run {
            target,
            time,
            sanitizer,
            libfuzzer,
        } => {
            setup(sh)?;
            let target = known(&target)?;
            let work = work_corpus(target);
            std::fs::create_dir_all(&work)
                .with_context(|| format!("creating {}", work.display()))?;
            let mut options = vec![
                format!("-max_total_time={time}"),
                format!("-max_len={MAX_LEN}"),
                format!("-timeout={TIMEOUT_SECS}"),
                "-print_final_stats=1".to_owned(),
            ];
            options.extend(dict(target));
            options.extend(libfuzzer);
            section(&format!("fuzzing {target} for {time} s ({sanitizer})"));
            let mut corpora = vec![work, corpus(target)];
            let fixed = regressions(target);
            if fixed.exists() {
                corpora.push(fixed);
            }
            let outcome = cargo_fuzz(target, &sanitizer, &corpora, &options)?;
            eprintln!(
                "\n{target}: {} runs in {} s, cov {}, ft {}, corpus {} inputs, {}",
                outcome.runs.as_deref().unwrap_or("?"),
                outcome.seconds.as_deref().unwrap_or("?"),
                outcome.cov.as_deref().unwrap_or("?"),
                outcome.ft.as_deref().unwrap_or("?"),
                outcome.corp.as_deref().unwrap_or("?"),
                if outcome.success {
                    "no crash".to_owned()
                } else {
                    format!(
                        "CRASH: see the artifact under {}",
                        project_root().join("fuzz/artifacts").join(target).display()
                    )
                }
            );
            if !outcome.success {
                bail!("fuzz target {target} crashed or failed");
            }
            Ok(())
        }
        FuzzCmd::Cmin { target, sanitizer } => {
            setup(sh)?;
            let target = known(&target)?;
            let out = cargo_target_dir().join("fuzz-cmin").join(target);
            if out.exists() {
                std::fs::remove_dir_all(&out)
                    .with_context(|| format!("clearing {}", out.display()))?;
            }
            std::fs::create_dir_all(&out)?;
            let work = work_corpus(target);
            std::fs::create_dir_all(&work)?;
            section(&format!("minimising the {target} corpus"));
            let corpora = [out.clone(), corpus(target), work];
            let options = [format!("-max_len={MAX_LEN}"), "-merge=1".to_owned()];
            let outcome = cargo_fuzz(target, &sanitizer, &corpora, &options)?;
            if !outcome.success {
                bail!("merging the {target} corpus failed (an input crashes?)");
            }
            let kept = std::fs::read_dir(&out)?.count();
            if kept == 0 {
                bail!("merging kept no input; the corpus is left as it was");
            }
            let dest = corpus(target);
            std::fs::remove_dir_all(&dest)
                .with_context(|| format!("clearing {}", dest.display()))?;
            std::fs::create_dir_all(&dest)?;
            for entry in std::fs::read_dir(&out)? {
                let p = entry?.path();
                std::fs::copy(&p, dest.join(p.file_name().expect("a file name")))?;
            }
            eprintln!(
                "{target}: corpus minimised to {kept} inputs in {}",
                dest.display()
            );
            Ok(())
        }
    }
}

fn setup(sh: &Shell) -> Result<()> {
    host::ensure_cargo_tool(sh, "cargo-fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION)
}

fn known(target: &str) -> Result<&'static str> {
    TARGETS
        .iter()
        .copied()
        .find(|t| *t == target)
        .with_context(|| {
            format!(
                "unknown fuzz target {target}; known: {}",
                TARGETS.join(", ")
            )
        })
}

/// The checked-in corpus of `target`.
fn corpus(target: &str) -> PathBuf {
    project_root().join("fuzz/corpus").join(target)
}

/// The inputs of fixed crashes of `target`, named after what they show; replayed like the
/// corpus, never minimised away.
fn regressions(target: &str) -> PathBuf {
    project_root().join("fuzz/regressions").join(target)
}

/// Where runs keep what they found (not checked in; `cmin` folds it into the corpus).
fn work_corpus(target: &str) -> PathBuf {
    cargo_target_dir().join("fuzz-corpus").join(target)
}

/// `-dict=` for `target` when `fuzz/dict/<target>.dict` exists.
fn dict(target: &str) -> Option<String> {
    let d = project_root()
        .join("fuzz/dict")
        .join(format!("{target}.dict"));
    d.exists().then(|| format!("-dict={}", d.display()))
}

/// The figures of libFuzzer's last status line (`#N DONE cov: C ft: F corp: K/...`) and of
/// its `Done N runs in S second(s)` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    success: bool,
    runs: Option<String>,
    seconds: Option<String>,
    cov: Option<String>,
    ft: Option<String>,
    corp: Option<String>,
}

impl Outcome {
    /// Takes in one line of libFuzzer's output.
    fn read(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .map(|w| (*w).to_owned())
        };
        if words.first().is_some_and(|w| w.starts_with('#')) && words.len() > 2 {
            self.cov = after("cov:").or(self.cov.take());
            self.ft = after("ft:").or(self.ft.take());
            self.corp = after("corp:").or(self.corp.take());
        }
        if let ["Done", runs, "runs", "in", secs, ..] = words[..] {
            self.runs = Some(runs.to_owned());
            self.seconds = Some(secs.to_owned());
        }
    }
}

/// `cargo fuzz run` of `target` on `corpora` (new inputs go to the first) with libFuzzer
/// `options`, its output passed through and summarised.
fn cargo_fuzz(
    target: &str,
    sanitizer: &str,
    corpora: &[PathBuf],
    options: &[String],
) -> Result<Outcome> {
    if !["address", "none"].contains(&sanitizer) {
        bail!("sanitizer {sanitizer}: use address or none");
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(project_root())
        .args([
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "--sanitizer",
            sanitizer,
        ])
        .arg(target)
        .args(corpora)
        .arg("--")
        .args(options)
        // Its own target dir: instrumented builds never mix with the product's, and cargo's
        // cached compiler probe always saw the same RUSTC_BOOTSTRAP setting.
        .env(
            "CARGO_TARGET_DIR",
            cargo_target_dir().join(format!("fuzz-{sanitizer}")),
        )
        .stderr(Stdio::piped());
    if sanitizer == "address" {
        // `-Zsanitizer=address` on the stable toolchain; only this build sees it.
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    eprintln!("$ {cmd:?}");
    let mut child = cmd.spawn().context("running cargo fuzz")?;
    let mut outcome = Outcome::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        eprintln!("{line}");
        outcome.read(&line);
    }
    outcome.success = child.wait()?.success();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Most inputs in one checked-in corpus: a few hundred, replayed in seconds.
    const MAX_CORPUS_FILES: usize = 500;
    /// Largest checked-in input, in bytes.
    const MAX_CORPUS_FILE_BYTES: u64 = MAX_LEN as u64;

    fn files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_fuzz_target_is_listed_and_has_a_small_corpus_replayed_by_a_test() {
        let root = project_root();
        let mut on_disk: Vec<String> = files(&root.join("fuzz/fuzz_targets"))
            .iter()
            .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "fuzz/fuzz_targets/ and TARGETS differ");
        let replays: String = ["proxy", "vrrp-proto", "config", "sync"]
            .iter()
            .map(|c| std::fs::read_to_string(root.join("crates").join(c).join("src/fuzz.rs")))
            .collect::<std::io::Result<_>>()
            .expect("the crates' fuzz modules");
        for t in TARGETS {
            let inputs = files(&root.join("fuzz/corpus").join(t));
            assert!(
                (10..=MAX_CORPUS_FILES).contains(&inputs.len()),
                "fuzz/corpus/{t}: {} inputs, keep 10 to {MAX_CORPUS_FILES}",
                inputs.len()
            );
            for p in &inputs {
                let len = std::fs::metadata(p).expect("corpus file").len();
                assert!(
                    len <= MAX_CORPUS_FILE_BYTES,
                    "{}: {len} bytes, over {MAX_CORPUS_FILE_BYTES}",
                    p.display()
                );
            }
            assert!(
                replays.contains(&format!("replay(\"{t}\"")),
                "no test replays fuzz/corpus/{t}"
            );
        }
    }

    #[test]
    fn summary_reads_libfuzzer_output() {
        let mut o = Outcome::default();
        for line in [
            "INFO: Seed: 42",
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#4096\tpulse  cov: 120 ft: 300 corp: 50/2Kb lim: 40 exec/s: 2048 rss: 40Mb",
            "#123456\tDONE   cov: 130 ft: 333 corp: 60/3Kb lim: 4096 exec/s: 4115 rss: 50Mb",
            "Done 123456 runs in 30 second(s)",
        ] {
            o.read(line);
        }
        assert_eq!(
            o,
            Outcome {
                success: false,
                runs: Some("123456".into()),
                seconds: Some("30".into()),
                cov: Some("130".into()),
                ft: Some("333".into()),
                corp: Some("60/3Kb".into()),
            }
        );
    }
}
