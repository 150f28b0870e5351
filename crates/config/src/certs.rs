//! Checking that certificate and CA files named by the configuration exist and are readable.
//!
//! This is the only IO the crate does, behind the [`CertFiles`] trait so tests (and config
//! sync, validating a peer's file before its certificates arrive) can pass a set of paths.
//! Contents are not parsed here: the proxy loads and validates the PEM data when it starts.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a certificate file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Nothing exists at the path.
    #[error("file not found")]
    NotFound,
    /// The path exists but is a directory or a special file.
    #[error("not a regular file")]
    NotAFile,
    /// The file exists but could not be opened or read.
    #[error("cannot read it: {0}")]
    Unreadable(String),
}

/// Looks up files named in the configuration, as written (possibly relative).
pub trait CertFiles {
    /// Ok when `path` names a readable regular file.
    fn check(&self, path: &Path) -> Result<(), FileError>;
}

/// Checks files on disk; relative paths are resolved against `base`, the config file's directory.
#[derive(Debug, Clone)]
pub struct FsCertFiles {
    /// Directory relative paths are resolved against.
    pub base: PathBuf,
}

impl CertFiles for FsCertFiles {
    fn check(&self, path: &Path) -> Result<(), FileError> {
        let full = self.base.join(path);
        let meta = std::fs::metadata(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileError::NotFound,
            _ => FileError::Unreadable(e.to_string()),
        })?;
        if !meta.is_file() {
            return Err(FileError::NotAFile);
        }
        // Opening and reading one byte proves the file is readable by this process.
        let mut byte = [0u8; 1];
        std::fs::File::open(&full)
            .and_then(|mut f| f.read(&mut byte))
            .map(|_| ())
            .map_err(|e| FileError::Unreadable(e.to_string()))
    }
}

/// An in-memory set of existing files, for tests and for validating without disk access.
#[derive(Debug, Clone, Default)]
pub struct MemoryCertFiles {
    /// Paths, as written in the configuration, that exist and are readable.
    pub files: BTreeSet<PathBuf>,
}

impl MemoryCertFiles {
    /// A set holding `paths`.
    pub fn new<P: Into<PathBuf>>(paths: impl IntoIterator<Item = P>) -> Self {
        MemoryCertFiles {
            files: paths.into_iter().map(Into::into).collect(),
        }
    }
}

impl CertFiles for MemoryCertFiles {
    fn check(&self, path: &Path) -> Result<(), FileError> {
        if self.files.contains(path) {
            Ok(())
        } else {
            Err(FileError::NotFound)
        }
    }
}
