//! The files under the store, as a small trait: the real directory ([`FsDir`]: positioned
//! reads and writes, `fdatasync`, space reserved with `posix_fallocate`, atomic replacement
//! by the workspace's one write-then-rename in `tandem-fsutil`) and an in-memory one
//! ([`MemDir`]) for tests.
//!
//! Owns the durability primitives. Must not know the store's layout: it only sees file names
//! and byte offsets. The fault-injecting directory is in [`crate::testing`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The few file operations the store needs. Names are plain file names inside the store's
/// directory. Writes through [`Dir::write_at`] are durable only after [`Dir::sync`] of that
/// file; [`Dir::replace`] and [`Dir::reserve`] are durable when they return.
pub trait Dir {
    /// The file's size, `None` when it does not exist.
    fn len(&self, name: &str) -> io::Result<Option<u64>>;
    /// Creates the file if needed and makes it at least `len` bytes long, with the space
    /// reserved on the medium (so later writes cannot fail for lack of space) and new bytes
    /// reading as zeros; durable (file and directory entry) when it returns.
    fn reserve(&self, name: &str, len: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset` (in place; the file does not grow past its reserved size).
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the file's written data durable.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// The whole file, `None` when it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the file atomically and durably: after a power cut it holds either its old
    /// content (or is absent) or `data`.
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Where the file is, for error messages.
    fn describe(&self, name: &str) -> PathBuf;
}

/// The real directory (`/data/history` on the appliance).
#[derive(Debug)]
pub struct FsDir {
    root: PathBuf,
    /// Open handles, so each positioned read or write is one syscall.
    files: Mutex<HashMap<String, Arc<File>>>,
}

impl FsDir {
    /// The store directory `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FsDir> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FsDir {
            root,
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn handle(&self, name: &str) -> io::Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = files.get(name) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.root.join(name))?,
        );
        files.insert(name.to_owned(), f.clone());
        Ok(f)
    }

    fn sync_dir(&self) -> io::Result<()> {
        tandem_fsutil::sync_dir(&self.root)
    }
}

impl Dir for FsDir {
    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.root.join(name)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn reserve(&self, name: &str, len: u64) -> io::Result<()> {
        let path = self.root.join(name);
        let created = !path.exists();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let current = f.metadata()?.len();
        if current < len {
            let off = i64::try_from(current).map_err(io::Error::other)?;
            let add = i64::try_from(len - current).map_err(io::Error::other)?;
            match nix::fcntl::posix_fallocate(&f, off, add) {
                Ok(()) => {}
                // File systems without fallocate (some network and FUSE ones): a sparse
                // extension still reads as zeros; only the space guarantee is lost.
                Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {
                    f.set_len(len)?;
                }
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        f.sync_all()?;
        if created {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.handle(name)?.read_exact_at(buf, offset)
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all_at(data, offset)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let result = tandem_fsutil::write_atomic(&self.root.join(name), data);
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        result
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Page size of the sparse in-memory files.
const PAGE: u64 = 4096;

/// A sparse in-memory file: pages never written read as zeros, so a preallocated 150 MB data
/// file costs only the pages the test touches.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemFile {
    pub(crate) len: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl MemFile {
    pub(crate) fn from_bytes(data: &[u8]) -> MemFile {
        let mut f = MemFile {
            len: data.len() as u64,
            ..MemFile::default()
        };
        f.write_at(0, data);
        f
    }

    pub(crate) fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end ({})",
                    buf.len(),
                    self.len
                ),
            ));
        }
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (page, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - within).min(buf.len() - done);
            match self.pages.get(&page) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes without bounds checks (the caller checked or is building the file).
    pub(crate) fn write_at(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let (page, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - within).min(data.len() - done);
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0; PAGE as usize].into_boxed_slice());
            p[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len as usize];
        // Reading the file's own length cannot fail.
        let _ = self.read_at(0, &mut v);
        v
    }

    fn check_write(&self, name: &str, offset: u64, len: usize) -> io::Result<()> {
        if offset + len as u64 > self.len {
            return Err(io::Error::other(format!(
                "write of {len} bytes at {offset} past the reserved end of {name} ({})",
                self.len
            )));
        }
        Ok(())
    }
}

/// An in-memory directory where every write is durable at once; clones share the files (a
/// test keeps one to reopen the store "after a restart").
#[derive(Debug, Clone, Default)]
pub struct MemDir {
    files: Arc<Mutex<BTreeMap<String, MemFile>>>,
}

impl MemDir {
    /// An empty directory.
    pub fn new() -> MemDir {
        MemDir::default()
    }

    pub(crate) fn from_files(files: BTreeMap<String, MemFile>) -> MemDir {
        MemDir {
            files: Arc::new(Mutex::new(files)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, MemFile>) -> T) -> T {
        f(&mut self.files.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Overwrites bytes of a file behind the store's back (to simulate media corruption).
    pub fn corrupt(&self, name: &str, offset: u64, data: &[u8]) {
        self.with(|files| {
            if let Some(f) = files.get_mut(name) {
                f.write_at(offset, data);
            }
        });
    }

    /// A copy of every file, sparse pages and all.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, MemFile> {
        self.with(|files| files.clone())
    }

    /// The files' names.
    pub fn names(&self) -> Vec<String> {
        self.with(|files| files.keys().cloned().collect())
    }

    /// Bytes the directory holds in memory (touched pages only).
    pub fn resident_bytes(&self) -> u64 {
        self.with(|files| {
            files
                .values()
                .map(|f| f.pages.len() as u64 * PAGE)
                .sum::<u64>()
        })
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Dir for MemDir {
    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.with(|files| files.get(name).map(|f| f.len)))
    }

    fn reserve(&self, name: &str, len: u64) -> io::Result<()> {
        self.with(|files| {
            let f = files.entry(name.to_owned()).or_default();
            f.len = f.len.max(len);
        });
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(|files| {
            files
                .get(name)
                .ok_or_else(|| not_found(name))?
                .read_at(offset, buf)
        })
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|files| {
            let f = files.get_mut(name).ok_or_else(|| not_found(name))?;
            f.check_write(name, offset, data.len())?;
            f.write_at(offset, data);
            Ok(())
        })
    }

    fn sync(&self, _name: &str) -> io::Result<()> {
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.with(|files| files.get(name).map(MemFile::to_vec)))
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.with(|files| files.insert(name.to_owned(), MemFile::from_bytes(data)));
        Ok(())
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from("mem:").join(name)
    }
}

impl<D: Dir + ?Sized> Dir for &D {
    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        (**self).len(name)
    }
    fn reserve(&self, name: &str, len: u64) -> io::Result<()> {
        (**self).reserve(name, len)
    }
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(name, offset, buf)
    }
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(name, offset, data)
    }
    fn sync(&self, name: &str) -> io::Result<()> {
        (**self).sync(name)
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        (**self).read(name)
    }
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        (**self).replace(name, data)
    }
    fn describe(&self, name: &str) -> PathBuf {
        (**self).describe(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_read_zeros_where_unwritten() {
        let mut f = MemFile {
            len: 3 * PAGE,
            ..MemFile::default()
        };
        f.write_at(PAGE - 2, b"abcd");
        let mut buf = [9u8; 8];
        f.read_at(PAGE - 4, &mut buf).unwrap();
        assert_eq!(&buf, b"\0\0abcd\0\0");
        assert!(f.read_at(3 * PAGE - 1, &mut buf).is_err());
    }

    #[test]
    fn fs_dir_reserves_reads_writes_and_replaces() {
        let root = std::env::temp_dir().join(format!("tandem-history-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let d = FsDir::new(&root).unwrap();
        assert_eq!(d.len("data").unwrap(), None);
        d.reserve("data", 10_000).unwrap();
        assert_eq!(d.len("data").unwrap(), Some(10_000));
        d.write_at("data", 9_000, b"xyz").unwrap();
        d.sync("data").unwrap();
        let mut buf = [1u8; 5];
        d.read_at("data", 8_999, &mut buf).unwrap();
        assert_eq!(&buf, b"\0xyz\0");
        d.replace("meta", b"one").unwrap();
        d.replace("meta", b"two").unwrap();
        assert_eq!(d.read("meta").unwrap().as_deref(), Some(&b"two"[..]));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
