//! The filesystem under the store, as a trait: the real one ([`RealFs`]) with atomic,
//! durable replacement, and an in-memory one ([`MemFs`]) for tests, with fault injection.
//!
//! [`RealFs`] replaces files with the workspace's one write-then-rename (`tandem-fsutil`:
//! write a temporary file, fsync it, rename it over the target, fsync the directory); the
//! temporary names carry [`TMP_MARKER`]. Must not know the store's layout; it only sees paths.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Marker in the name of temporary files; such files are never part of the store and are
/// removed when the store is opened.
pub use tandem_fsutil::TMP_MARKER;

/// The few filesystem operations the store needs.
pub trait Fs: Send + Sync {
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Replaces `path` with `data` atomically and durably: after a power cut at any point, the
    /// file holds either its old content (or is absent) or `data`, never a mix.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Removes `path`; a missing file is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names of the files in `dir` (not recursive); a missing directory lists nothing.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Fs for RealFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        tandem_fsutil::write_atomic(path, data)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        // Make the new directory entry durable too.
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

/// An in-memory filesystem; clones share the same files.
///
/// `fail_after(n)` makes every mutating operation after the next `n` fail, which models a
/// crash at that point: what was written before stays, nothing after. `fill_after(n)` makes
/// writes fail as on a full disk, while the process goes on (and may remove files).
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Mutations still allowed; `None` for no limit.
    budget: Option<usize>,
    /// Writes still allowed before the filesystem is full (removals still work); `None`
    /// for no limit.
    space: Option<usize>,
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// Lets `n` more mutations succeed, then fails every later one (`None`: no limit).
    pub fn fail_after(&self, n: Option<usize>) {
        self.lock().budget = n;
    }

    /// Lets `n` more writes succeed, then fails every later write with `StorageFull`
    /// ("No space left on device") while removals still work: a full disk, not a crash
    /// (`None`: room again).
    pub fn fill_after(&self, n: Option<usize>) {
        self.lock().space = n;
    }

    /// Every path, for assertions.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().files.keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        // A panic while holding this lock can only come from a failing test; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spend(inner: &mut MemInner) -> io::Result<()> {
        match &mut inner.budget {
            Some(0) => Err(io::Error::other("injected fault")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Fs for MemFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        Self::spend(&mut inner)?;
        match &mut inner.space {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device (injected)",
                ));
            }
            Some(n) => *n -= 1,
            None => {}
        }
        inner.files.insert(path.to_path_buf(), data.to_vec());
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        Self::spend(&mut inner)?;
        inner.files.remove(path);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .lock()
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
