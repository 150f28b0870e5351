//! The one write-then-rename of the workspace: a file is replaced by writing a temporary file
//! in the same directory, fsyncing it, renaming it over the target and fsyncing the directory,
//! so that after a power cut at any point the target holds its old content (or is absent) or
//! the new one, never a mix.
//!
//! Owns the temporary names ([`TMP_MARKER`], [`tmp_sibling`]), [`AtomicFile`] (stream into the
//! temporary, then [`AtomicFile::commit`]), [`write_atomic`] for whole buffers, and the durable
//! primitives [`sync_dir`], [`write_synced`] and [`rename_synced`] (the vfat-safe rename of
//! the firmware's ESP). Std only, and it must not know any caller's layout or error type: it
//! returns [`std::io::Error`] and callers add their context.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker in the name of the temporary files [`tmp_sibling`] makes; a file whose name holds
/// it is never a finished file (the store removes such files when it opens).
pub const TMP_MARKER: &str = ".tmp.";

/// Makes temporary names unique within the process (several writers may share a directory).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name beside `path`: `.NAME.tmp.PID.N` in the same directory (hidden, and
/// on the same filesystem, so the rename is atomic).
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(
        ".{name}{TMP_MARKER}{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A file being written under a temporary name, to replace `target` on [`commit`](Self::commit).
///
/// Dropped without a commit (an error on the way), it removes its temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Starts replacing `target`: creates a new temporary file ([`tmp_sibling`]) beside it,
    /// with the default mode (0o666 less the umask).
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        AtomicFile::open(target, tmp_sibling(target), None)
    }

    /// As [`create`](Self::create), the file getting exactly `mode` (set on the open file,
    /// whatever the umask) before any byte is written.
    pub fn create_with_mode(target: &Path, mode: u32) -> io::Result<AtomicFile> {
        AtomicFile::open(target, tmp_sibling(target), Some(mode))
    }

    fn open(target: &Path, tmp: PathBuf, mode: Option<u32>) -> io::Result<AtomicFile> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        if let Some(mode) = mode {
            opts.mode(mode);
        }
        let file = opts.open(&tmp)?;
        let mut this = AtomicFile {
            target: target.to_owned(),
            tmp,
            file: Some(file),
        };
        if let Some(mode) = mode {
            this.file_mut()
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        Ok(this)
    }

    /// The temporary file's path (e.g. to check the content with another program before the
    /// commit).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file replaced on commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    fn file_mut(&mut self) -> &mut File {
        self.file.as_mut().expect("the file is open until commit")
    }

    /// Makes the written content the target's, durably: fsync the file (the data must be on
    /// disk before the rename makes it visible), rename it over the target, fsync the
    /// directory (the rename is durable only then).
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("the file is open until commit");
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target)?;
        // Renamed: nothing left to remove, whatever the directory's fsync says.
        self.tmp = PathBuf::new();
        sync_dir(parent(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file_mut().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `path` with `data` atomically and durably (see [`AtomicFile`]); on an error the
/// target is untouched and the temporary file removed.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(data)?;
    f.commit()
}

/// As [`write_atomic`], the file getting exactly `mode`.
pub fn write_atomic_with_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create_with_mode(path, mode)?;
    f.write_all(data)?;
    f.commit()
}

/// fsyncs a directory (its entries: creations, renames, removals).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates or truncates `path`, writes `data`, fsyncs it (the first half of a
/// write-then-rename whose temporary name the caller chooses).
pub fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Renames `from` to `to` durably on vfat too: rename, fsync the renamed file, fsync the
/// directory.
///
/// The file's fsync is what makes a rename durable on vfat (the ESP): Linux's vfat writes
/// the new directory entry's start cluster and size (or re-points an existing entry) only
/// when the renamed *inode* is written back, while fsyncing the directory writes the entry
/// as created (empty) and the removal of the old one.
pub fn rename_synced(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    File::open(to)?.sync_all()?;
    sync_dir(parent(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    /// A fresh empty directory under the system's temporary directory.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tandem-fsutil-{tag}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let f = dir.join("config");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(names(&dir), ["config"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_mode_is_exact_whatever_the_umask() {
        let dir = scratch("mode");
        let f = dir.join("key");
        write_atomic_with_mode(&f, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        write_atomic_with_mode(&f, b"public", 0o664).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o664);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dropped_write_leaves_the_target_and_removes_the_temporary() {
        let dir = scratch("drop");
        let f = dir.join("state");
        write_atomic(&f, b"old").unwrap();
        let mut w = AtomicFile::create(&f).unwrap();
        w.write_all(b"half of the new").unwrap();
        assert!(w.tmp_path().exists());
        assert!(
            w.tmp_path()
                .to_string_lossy()
                .contains(&format!(".state{TMP_MARKER}"))
        );
        drop(w);
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
        assert_eq!(names(&dir), ["state"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_reports_and_leaves_nothing() {
        let dir = scratch("missing");
        let f = dir.join("no-such-dir").join("file");
        assert!(write_atomic(&f, b"x").is_err());
        assert_eq!(names(&dir), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_are_unique_and_beside_the_target() {
        let a = tmp_sibling(Path::new("/data/config/current"));
        let b = tmp_sibling(Path::new("/data/config/current"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/data/config")));
        assert_eq!(
            tmp_sibling(Path::new("bare")).parent(),
            Some(Path::new("."))
        );
    }

    #[test]
    fn synced_write_and_rename_move_the_content() {
        let dir = scratch("rename");
        let tmp = dir.join("entry.conf.tmp");
        let to = dir.join("entry.conf");
        write_synced(&tmp, b"title a").unwrap();
        write_synced(&tmp, b"title b").unwrap();
        rename_synced(&tmp, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"title b");
        assert_eq!(names(&dir), ["entry.conf"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
