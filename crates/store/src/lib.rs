//! `tandem-store`: the configuration store of a Tandem node.
//!
//! Owns the files under `DIR/config/`: every committed configuration is a numbered
//! **generation** (config text as the operator wrote it, plus metadata: number, parent and its
//! fingerprint, author, node, time, comment), a `current` pointer, the operator's candidate,
//! the pending `commit confirmed` deadline, and `running.yaml`, the copy the services read.
//! Must not apply anything, talk to services or read the clock: time is an argument, and the
//! supervisor decides what a generation means for the running system.
//!
//! # Layout and commit protocol
//!
//! ```text
//! DIR/config/generations/000042.yaml   config text, exactly as committed
//! DIR/config/generations/000042.json   GenerationMeta (written after the .yaml)
//! DIR/config/current                   {"generation":42,"fingerprint":"…"}: the commit point
//! DIR/config/candidate.yaml            the operator's workspace (`config edit|load`)
//! DIR/config/pending-confirm.json      PendingConfirm while a `commit confirmed` runs
//! DIR/config/running.yaml              what the services read (supervisor-rendered)
//! DIR/config/applied                   {"generation":41,...}: the last generation applied and checked
//! DIR/config/NAME.corrupt               a pointer file found unreadable at open, kept for inspection
//! ```
//!
//! Every file is replaced through [`Fs::write_atomic`] (write, fsync, rename, fsync dir).
//! A commit writes the new generation's `.yaml`, then its `.json`, then `current`; writing
//! `current` is the commit point. A crash before it leaves an orphan generation (number above
//! `current`), removed the next time the store is opened; a crash after it leaves the new
//! generation. Either way the store loads, and `current` names a complete generation.
//!
//! The supervisor records a generation in `applied` once it was applied to the services and
//! checked ([`Store::mark_applied`]). A crash after the commit point and before that leaves
//! `current` above `applied`: [`Store::interrupted`] reports it, so the next start finishes
//! the transaction (apply and check it, restore the last applied one if that fails) instead
//! of running an unchecked generation silently.
//!
//! Numbers only grow: a rollback commits a new generation holding the old text (like Junos'
//! `rollback N` + `commit`), so history is linear and config sync sees every step.
//! At most [`KEEP_GENERATIONS`] are kept; older ones are pruned after each commit.
//!
//! Opening the store also repairs its pointer files when they are unreadable (garbage, an
//! empty file) or name a generation that is not there, rather than refusing to open: the
//! newest intact generation becomes current, and [`Store::repairs`] says what was done so the
//! supervisor can raise an alarm (see `recover`).
//!
//! A failed commit (a full disk) removes what it wrote of the new generation before
//! returning the error; the current generation and its files are never touched.
//!
//! One process owns a store at a time (the supervisor); the store does no locking.

pub mod fs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tandem_config::{CertFiles, Config, FileError, Fingerprint, Report};
use tracing::{info, warn};

pub use crate::fs::{Fs, MemFs, RealFs};

/// Whether `e` is a full disk (ENOSPC) on a store file.
pub fn is_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
}

/// How many generations history keeps (the issue asks for at least 50).
pub const KEEP_GENERATIONS: usize = 100;
/// Longest config text accepted, in bytes; a bound on what a commit may write.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The candidate is not a valid configuration (every diagnostic, with line and column).
    #[error("the candidate is invalid ({} errors)", .0.error_count())]
    Invalid(Report),
    /// The candidate is larger than [`MAX_CONFIG_BYTES`].
    #[error("the candidate is {size} bytes, more than the {MAX_CONFIG_BYTES}-byte limit")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// A file of the store could not be read, written or removed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `remove`, `list`, `create`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A generation's files do not hold what its metadata or the `current` pointer says.
    #[error("generation {number} in {path} is corrupt: {reason}")]
    Corrupt {
        /// The generation.
        number: u64,
        /// Its directory.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The generation is not (or no longer) in history.
    #[error("generation {0} is not in the history; `show history` lists the kept ones")]
    NoSuchGeneration(u64),
    /// A generation number given by config sync is not above the current one.
    #[error("generation {number} is not above the current generation {current}")]
    NumberNotAbove {
        /// The number asked for.
        number: u64,
        /// The current generation's number.
        current: u64,
    },
    /// Nothing has been committed yet.
    #[error(
        "no configuration has been committed yet in {0}; load one with `config load FILE` and `config commit`"
    )]
    Empty(PathBuf),
}

/// Metadata of one generation (`NNNNNN.json`); what `show history` and config sync read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// Generation number, from 1, strictly increasing.
    pub number: u64,
    /// The generation this one was committed on top of; `None` for the first.
    #[serde(default)]
    pub parent: Option<u64>,
    /// Fingerprint of the parent's configuration (config sync compares it with its own
    /// current fingerprint to tell a fast-forward from a divergence).
    #[serde(default)]
    pub parent_fingerprint: Option<String>,
    /// Fingerprint of this configuration ([`tandem_config::fingerprint`], 32 hex digits).
    pub fingerprint: String,
    /// Who committed it (login name, `peer:lb2`, `auto-rollback`).
    pub author: String,
    /// Node the commit was made on, if known.
    #[serde(default)]
    pub node: Option<String>,
    /// Commit time, milliseconds since the Unix epoch, as given by the caller.
    pub time_ms: u64,
    /// The operator's comment, possibly empty.
    #[serde(default)]
    pub comment: String,
    /// Schema version of the configuration (`version:`), for peers with older firmware.
    pub schema_version: u32,
    /// When this generation restores an older one (rollback), its number.
    #[serde(default)]
    pub restores: Option<u64>,
}

/// A generation with its text and the configuration it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Its metadata.
    pub meta: GenerationMeta,
    /// The config text as committed (the operator's comments and layout kept).
    pub text: String,
    /// The configuration.
    pub config: Config,
}

/// Who commits, when and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// Who (login name).
    pub author: String,
    /// The node committing, if known.
    pub node: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Free-form comment.
    pub comment: String,
}

/// A `commit confirmed` waiting for `confirm` (`pending-confirm.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConfirm {
    /// The generation to confirm.
    pub generation: u64,
    /// The generation restored when the deadline passes unconfirmed.
    pub restore: u64,
    /// Deadline, milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// Who committed.
    pub author: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    generation: u64,
    fingerprint: String,
}

/// A transaction the supervisor did not finish: `generation` is current but was never
/// applied and checked; `last_applied` was (see [`Store::interrupted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interrupted {
    /// The current generation, committed but never marked applied.
    pub generation: u64,
    /// The last generation marked applied and checked.
    pub last_applied: u64,
}

/// A pointer file the store found unreadable, or naming a generation it does not have, when
/// it was opened, and what it did about it (the supervisor raises alarm `store-repaired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    /// The file (`current`, `applied`, `pending-confirm.json`).
    pub file: PathBuf,
    /// What was wrong with it.
    pub problem: String,
    /// What the store did.
    pub action: String,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}; {}",
            self.file.display(),
            self.problem,
            self.action
        )
    }
}

/// Suffix of the copy a repaired pointer file is kept under, for inspection.
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// Accepts every certificate path: used to re-read generations that were validated when they
/// were committed, so a certificate removed later cannot make history unreadable.
struct AnyCerts;

impl CertFiles for AnyCerts {
    fn check(&self, _: &Path) -> Result<(), FileError> {
        Ok(())
    }
}

/// The store: see the module documentation for layout and guarantees.
pub struct Store {
    fs: Box<dyn Fs>,
    /// `DIR/config`.
    root: PathBuf,
    /// How commit checks certificate paths (relative to `root`).
    certs: Box<dyn CertFiles + Send + Sync>,
    /// What opening the store repaired.
    repairs: Vec<Repair>,
    /// `applied` was unreadable or dangling at open: until the supervisor marks a
    /// generation applied again, the current one counts as unchecked ([`Store::interrupted`]).
    applied_lost: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store of data directory `data_dir` on the real
    /// filesystem; certificate paths are checked relative to `DIR/config`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let root = data_dir.join("config");
        let certs = tandem_config::FsCertFiles { base: root.clone() };
        Store::with_fs(Box::new(RealFs), root, Box::new(certs))
    }

    /// Opens the store rooted at `root` on `fs`, then recovers from an interrupted commit:
    /// temporary files and generations above `current` are removed.
    pub fn with_fs(
        fs: Box<dyn Fs>,
        root: PathBuf,
        certs: Box<dyn CertFiles + Send + Sync>,
    ) -> Result<Store, StoreError> {
        let mut store = Store {
            fs,
            root,
            certs,
            repairs: Vec::new(),
            applied_lost: false,
        };
        let gens = store.gen_dir();
        store
            .fs
            .create_dir_all(&gens)
            .map_err(|source| io_err("create", &gens, source))?;
        store.recover()?;
        Ok(store)
    }

    /// What opening the store repaired: pointer files that were unreadable (garbage, empty)
    /// or named a generation that is not there. Empty when the store was sound.
    pub fn repairs(&self) -> &[Repair] {
        &self.repairs
    }

    /// `DIR/config`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file the services read: `DIR/config/running.yaml`.
    pub fn running_path(&self) -> PathBuf {
        self.root.join("running.yaml")
    }

    /// Writes `text` to [`Store::running_path`] atomically and returns the path.
    pub fn write_running(&self, text: &str) -> Result<PathBuf, StoreError> {
        let path = self.running_path();
        self.write(&path, text.as_bytes())?;
        Ok(path)
    }

    /// The current generation; [`StoreError::Empty`] before the first commit.
    pub fn load_current(&self) -> Result<Generation, StoreError> {
        match self.current_number()? {
            Some(n) => self.generation(n),
            None => Err(StoreError::Empty(self.root.clone())),
        }
    }

    /// The number of the current generation, `None` before the first commit.
    pub fn current_number(&self) -> Result<Option<u64>, StoreError> {
        self.read_pointer("current")
    }

    /// The generation a pointer file (`current`, `applied`) names; `None` when it is absent.
    fn read_pointer(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let path = self.root.join(name);
        let bytes = match self.fs.read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.map_err(|source| io_err("read", &path, source))?,
        };
        let pointer: Pointer = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            number: 0,
            path: path.clone(),
            reason: format!("unreadable {name} pointer: {e}"),
        })?;
        Ok(Some(pointer.generation))
    }

    /// Generation `number`, read and checked (its text parses and matches its fingerprint).
    pub fn generation(&self, number: u64) -> Result<Generation, StoreError> {
        let meta = self.meta(number)?;
        let path = self.gen_path(number, "yaml");
        let bytes = self
            .fs
            .read(&path)
            .map_err(|source| io_err("read", &path, source))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            number,
            path: self.gen_dir(),
            reason,
        };
        let text = String::from_utf8(bytes).map_err(|_| corrupt("text is not UTF-8".into()))?;
        let config = tandem_config::parse(&text, &file_name(number), &AnyCerts)
            .map_err(|r| corrupt(format!("text no longer parses: {r}")))?
            .config;
        let fp = tandem_config::fingerprint(&config).to_string();
        if fp != meta.fingerprint {
            return Err(corrupt(format!(
                "fingerprint {fp} differs from the recorded {}",
                meta.fingerprint
            )));
        }
        Ok(Generation { meta, text, config })
    }

    /// Validates `text` as a candidate without writing anything.
    pub fn validate(&self, text: &str) -> Result<tandem_config::Loaded, StoreError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(StoreError::TooLarge { size: text.len() });
        }
        tandem_config::parse(text, "candidate", &*self.certs).map_err(StoreError::Invalid)
    }

    /// Validates `text` and commits it as the next generation. An invalid text is refused
    /// with every diagnostic and nothing is written.
    pub fn commit(&self, text: &str, info: &CommitInfo) -> Result<Generation, StoreError> {
        self.commit_inner(text, info, None)
    }

    /// Validates `text` and commits it as generation `number` (config sync: a peer's
    /// generation keeps its number on both nodes). `number` must be above the current one;
    /// numbers only grow, and history may have gaps.
    pub fn commit_numbered(
        &self,
        text: &str,
        info: &CommitInfo,
        number: u64,
    ) -> Result<Generation, StoreError> {
        let current = self.current_number()?.unwrap_or(0);
        if number <= current {
            return Err(StoreError::NumberNotAbove { number, current });
        }
        self.commit_at(text, info, None, Some(number))
    }

    /// Commits the text of generation `number` again, as a new generation that restores it.
    pub fn rollback(&self, number: u64, info: &CommitInfo) -> Result<Generation, StoreError> {
        let old = self.generation(number)?;
        // The old text was valid when committed; it is re-checked like any candidate, so a
        // certificate removed since then is reported rather than applied.
        self.commit_inner(&old.text, info, Some(number))
    }

    fn commit_inner(
        &self,
        text: &str,
        info: &CommitInfo,
        restores: Option<u64>,
    ) -> Result<Generation, StoreError> {
        self.commit_at(text, info, restores, None)
    }

    fn commit_at(
        &self,
        text: &str,
        info: &CommitInfo,
        restores: Option<u64>,
        number: Option<u64>,
    ) -> Result<Generation, StoreError> {
        let loaded = self.validate(text)?;
        let parent = match self.current_number()? {
            Some(n) => Some(self.meta(n)?),
            None => None,
        };
        let number = number.unwrap_or_else(|| parent.as_ref().map_or(1, |p| p.number + 1));
        let fingerprint = tandem_config::fingerprint(&loaded.config).to_string();
        let meta = GenerationMeta {
            number,
            parent: parent.as_ref().map(|p| p.number),
            parent_fingerprint: parent.as_ref().map(|p| p.fingerprint.clone()),
            fingerprint: fingerprint.clone(),
            author: info.author.clone(),
            node: info.node.clone(),
            time_ms: info.time_ms,
            comment: info.comment.clone(),
            schema_version: loaded.config.version,
            restores,
        };
        // Text first, metadata second, pointer last: see the module docs.
        let pointer = Pointer {
            generation: number,
            fingerprint,
        };
        let written = self
            .write(&self.gen_path(number, "yaml"), text.as_bytes())
            .and_then(|()| self.write(&self.gen_path(number, "json"), &to_json(&meta)))
            .and_then(|()| self.write(&self.root.join("current"), &to_json(&pointer)));
        if let Err(e) = written {
            // Not committed (the pointer was not replaced): take the new generation's files
            // back now, so this process does not list it (a full disk still lets files be
            // removed; after a crash, `recover` does the same at the next open).
            for ext in ["json", "yaml"] {
                let _ = self.remove(&self.gen_path(number, ext));
            }
            return Err(e);
        }
        info!(generation = number, author = %info.author, restores, "configuration committed");
        self.prune();
        Ok(Generation {
            meta,
            text: text.to_owned(),
            config: loaded.config,
        })
    }

    /// Metadata of every kept generation, newest first.
    pub fn history(&self) -> Result<Vec<GenerationMeta>, StoreError> {
        let mut out = Vec::new();
        for n in self.numbers()?.into_iter().rev() {
            match self.meta(n) {
                Ok(m) => out.push(m),
                Err(e) => warn!(generation = n, cause = %e, "skipping unreadable generation"),
            }
        }
        Ok(out)
    }

    /// The operator's candidate text, if one is being edited.
    pub fn candidate(&self) -> Result<Option<String>, StoreError> {
        let path = self.root.join("candidate.yaml");
        match self.fs.read(&path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_err("read", &path, source)),
        }
    }

    /// Replaces the candidate (not validated: an operator may save work in progress).
    pub fn set_candidate(&self, text: &str) -> Result<(), StoreError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(StoreError::TooLarge { size: text.len() });
        }
        self.write(&self.root.join("candidate.yaml"), text.as_bytes())
    }

    /// Discards the candidate.
    pub fn clear_candidate(&self) -> Result<(), StoreError> {
        self.remove(&self.root.join("candidate.yaml"))
    }

    /// The pending `commit confirmed`, if any.
    pub fn pending_confirm(&self) -> Result<Option<PendingConfirm>, StoreError> {
        let path = self.root.join("pending-confirm.json");
        match self.fs.read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    number: 0,
                    path,
                    reason: format!("unreadable pending confirm: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_err("read", &path, source)),
        }
    }

    /// Records a pending `commit confirmed`, so its deadline survives a restart.
    pub fn set_pending_confirm(&self, pending: &PendingConfirm) -> Result<(), StoreError> {
        self.write(&self.root.join("pending-confirm.json"), &to_json(pending))
    }

    /// Forgets the pending `commit confirmed` (confirmed, or rolled back).
    pub fn clear_pending_confirm(&self) -> Result<(), StoreError> {
        self.remove(&self.root.join("pending-confirm.json"))
    }

    /// The last generation recorded as applied and checked, if any.
    pub fn applied(&self) -> Result<Option<u64>, StoreError> {
        self.read_pointer("applied")
    }

    /// Records that generation `number` runs: applied to the services and checked.
    pub fn mark_applied(&self, number: u64) -> Result<(), StoreError> {
        let meta = self.meta(number)?;
        let pointer = Pointer {
            generation: number,
            fingerprint: meta.fingerprint,
        };
        self.write(&self.root.join("applied"), &to_json(&pointer))
    }

    /// The current generation when it was committed after the last generation marked applied
    /// and never marked itself (the supervisor stopped between the commit point and the end of
    /// its check). `None` when the current generation was checked, before the first commit,
    /// and when nothing was ever marked (the first commit: there is nothing to restore).
    /// When `applied` was unreadable at open (see [`Store::repairs`]), the current generation
    /// counts as unchecked, with its parent as the last applied one.
    pub fn interrupted(&self) -> Result<Option<Interrupted>, StoreError> {
        let Some(current) = self.current_number()? else {
            return Ok(None);
        };
        let last_applied = match self.applied()? {
            Some(n) => n,
            None if self.applied_lost => match self.meta(current)?.parent {
                Some(p) => p,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        Ok((current != last_applied).then_some(Interrupted {
            generation: current,
            last_applied,
        }))
    }

    /// Removes what an interrupted commit left: temporary files, generations above `current`
    /// (never committed), and half-pruned generations (text without metadata). Before that,
    /// repairs the pointer files (see [`Store::repairs`]): an unreadable `current`, or one
    /// naming a generation that is missing or corrupt, is replaced by the newest intact
    /// generation; an unreadable or dangling `applied` is dropped (the current generation then
    /// counts as unchecked); an unreadable `pending-confirm.json`, or one whose generation to
    /// restore is gone, is dropped. Each bad file is kept as `NAME.corrupt`.
    fn recover(&mut self) -> Result<(), StoreError> {
        for dir in [self.root.clone(), self.gen_dir()] {
            for name in self.list(&dir)? {
                if name.contains(fs::TMP_MARKER) {
                    self.remove(&dir.join(&name))?;
                }
            }
        }
        let current = self.repair_current()?.unwrap_or(0);
        let names = self.list(&self.gen_dir())?;
        for name in &names {
            let Some((n, ext)) = parse_name(name) else {
                continue;
            };
            let orphan = n > current;
            let half_pruned =
                ext == "yaml" && n != current && !names.contains(&format!("{n:06}.json"));
            if orphan || half_pruned {
                warn!(generation = n, file = %name, "removing a generation file left by an interrupted commit");
                self.remove(&self.gen_dir().join(name))?;
            }
        }
        // After the orphans went: `applied` may have named one of them.
        self.repair_applied()?;
        self.repair_pending()?;
        Ok(())
    }

    /// Keeps a copy of the bad pointer file `name` as `NAME.corrupt` (best effort) and
    /// records the repair.
    fn repaired(&mut self, name: &str, problem: String, action: String) {
        let path = self.root.join(name);
        if let Ok(bytes) = self.fs.read(&path) {
            let copy = self.root.join(format!("{name}{CORRUPT_SUFFIX}"));
            if let Err(e) = self.fs.write_atomic(&copy, &bytes) {
                warn!(file = %copy.display(), cause = %e, "cannot keep a copy of a corrupt pointer file");
            }
        }
        warn!(file = %path.display(), %problem, %action, "store repaired at open");
        self.repairs.push(Repair {
            file: path,
            problem,
            action,
        });
    }

    /// The `current` pointer, repaired when it is unreadable or names a generation that
    /// cannot be loaded: then the newest generation that loads becomes current (none: the
    /// store is empty). IO errors are returned as they are.
    fn repair_current(&mut self) -> Result<Option<u64>, StoreError> {
        let problem = match self.read_pointer("current") {
            Ok(None) => return Ok(None),
            Ok(Some(n)) => match self.generation(n) {
                Ok(_) => return Ok(Some(n)),
                Err(StoreError::NoSuchGeneration(_)) => {
                    format!("it names generation {n}, which is not in the store")
                }
                Err(e @ StoreError::Corrupt { .. }) => {
                    // Above the new current it is removed like an orphan: keep its files.
                    for ext in ["yaml", "json"] {
                        let from = self.gen_path(n, ext);
                        let to = self
                            .root
                            .join(format!("generation-{n:06}.{ext}{CORRUPT_SUFFIX}"));
                        if let Ok(bytes) = self.fs.read(&from) {
                            let _ = self.fs.write_atomic(&to, &bytes);
                        }
                    }
                    format!(
                        "it names generation {n}, which cannot be read: {e} (its files are kept as generation-{n:06}.*{CORRUPT_SUFFIX})"
                    )
                }
                Err(e) => return Err(e),
            },
            Err(StoreError::Corrupt { reason, .. }) => reason,
            Err(e) => return Err(e),
        };
        let numbers = self.numbers()?;
        let fallback = numbers
            .iter()
            .rev()
            .find_map(|n| self.generation(*n).ok().map(|g| g.meta));
        let path = self.root.join("current");
        let action = match &fallback {
            Some(meta) => format!(
                "the node starts on generation {}, the newest intact one (the bad file is kept as current{CORRUPT_SUFFIX})",
                meta.number
            ),
            None => format!(
                "no intact generation is left, the store is empty (the bad file is kept as current{CORRUPT_SUFFIX})"
            ),
        };
        self.repaired("current", problem, action);
        match fallback {
            Some(meta) => {
                let pointer = Pointer {
                    generation: meta.number,
                    fingerprint: meta.fingerprint,
                };
                self.write(&path, &to_json(&pointer))?;
                Ok(Some(meta.number))
            }
            None => {
                self.remove(&path)?;
                Ok(None)
            }
        }
    }

    /// Drops an `applied` pointer that is unreadable or names a missing generation.
    fn repair_applied(&mut self) -> Result<(), StoreError> {
        let problem = match self.read_pointer("applied") {
            Ok(None) => return Ok(()),
            Ok(Some(n)) => match self.meta(n) {
                Ok(_) => return Ok(()),
                Err(StoreError::NoSuchGeneration(_)) => {
                    format!("it names generation {n}, which is not in the store")
                }
                Err(StoreError::Corrupt { reason, .. }) => {
                    format!("it names generation {n}, whose metadata is unreadable: {reason}")
                }
                Err(e) => return Err(e),
            },
            Err(StoreError::Corrupt { reason, .. }) => reason,
            Err(e) => return Err(e),
        };
        self.repaired(
            "applied",
            problem,
            "the current generation counts as unchecked: it is applied and checked at start, and the one before it restored if that fails".into(),
        );
        self.remove(&self.root.join("applied"))?;
        self.applied_lost = true;
        Ok(())
    }

    /// Drops a `pending-confirm.json` that is unreadable or whose generation to restore is
    /// gone (a pending confirm of a generation that is no longer current is stale, and the
    /// supervisor clears it).
    fn repair_pending(&mut self) -> Result<(), StoreError> {
        const NAME: &str = "pending-confirm.json";
        let problem = match self.pending_confirm() {
            Ok(None) => return Ok(()),
            Ok(Some(p)) => match self.meta(p.restore) {
                Ok(_) => return Ok(()),
                Err(StoreError::NoSuchGeneration(_) | StoreError::Corrupt { .. }) => format!(
                    "the commit confirmed of generation {} would restore generation {}, which is not in the store",
                    p.generation, p.restore
                ),
                Err(e) => return Err(e),
            },
            Err(StoreError::Corrupt { reason, .. }) => reason,
            Err(e) => return Err(e),
        };
        self.repaired(
            NAME,
            problem,
            "a commit confirmed that may have been waiting will not roll back by itself: `show history`, and `config rollback N` to undo it".into(),
        );
        self.remove(&self.root.join(NAME))
    }

    /// Removes generations beyond [`KEEP_GENERATIONS`]; failures are logged, not fatal (a
    /// longer history is harmless).
    fn prune(&self) {
        let Ok(numbers) = self.numbers() else { return };
        let excess = numbers.len().saturating_sub(KEEP_GENERATIONS);
        for n in numbers.into_iter().take(excess) {
            // Metadata first: without it the generation is invisible, then the text goes.
            for ext in ["json", "yaml"] {
                if let Err(e) = self.remove(&self.gen_path(n, ext)) {
                    warn!(generation = n, cause = %e, "failed to prune a generation");
                    return;
                }
            }
        }
    }

    /// Numbers of complete generations (metadata present), ascending.
    fn numbers(&self) -> Result<Vec<u64>, StoreError> {
        let mut out: Vec<u64> = self
            .list(&self.gen_dir())?
            .iter()
            .filter_map(|n| parse_name(n))
            .filter(|(_, ext)| *ext == "json")
            .map(|(n, _)| n)
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn meta(&self, number: u64) -> Result<GenerationMeta, StoreError> {
        let path = self.gen_path(number, "json");
        let bytes = match self.fs.read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchGeneration(number));
            }
            other => other.map_err(|source| io_err("read", &path, source))?,
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            number,
            path: self.gen_dir(),
            reason: format!("unreadable metadata: {e}"),
        })
    }

    fn gen_dir(&self) -> PathBuf {
        self.root.join("generations")
    }

    fn gen_path(&self, number: u64, ext: &str) -> PathBuf {
        self.gen_dir().join(format!("{number:06}.{ext}"))
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<(), StoreError> {
        self.fs
            .write_atomic(path, data)
            .map_err(|source| io_err("write", path, source))
    }

    fn remove(&self, path: &Path) -> Result<(), StoreError> {
        self.fs
            .remove(path)
            .map_err(|source| io_err("remove", path, source))
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
        self.fs
            .list(dir)
            .map_err(|source| io_err("list", dir, source))
    }
}

/// The fingerprint recorded for `config`, as the store writes it.
pub fn fingerprint_text(config: &Config) -> String {
    tandem_config::fingerprint(config).to_string()
}

/// Parses a recorded fingerprint.
pub fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    Fingerprint::parse(text)
}

fn file_name(number: u64) -> String {
    format!("generation {number}")
}

/// `000042.yaml` → `(42, "yaml")`.
fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (num, ext) = name.split_once('.')?;
    if num.len() != 6 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, ext))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and integers always serialize.
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_default();
    v.push(b'\n');
    v
}

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
