//! Unix socket paths the proxy listens on (runtime API, handover): claimed without taking
//! over anything, removed only if still the proxy's own.
//!
//! Owns: [`bind`] (a listening socket at a path, replacing only a stale socket of this user
//! that nothing listens on) and [`Claimed`] (the path, unlinked on drop if it is still the
//! inode this process created).
//! Does not own: what is served on the sockets (`api`, `handover`), nor which paths are
//! allowed (the configuration: `runtime.socket` lies in a Tandem run directory).
//!
//! A proxy started twice, or a configuration pointing at another service's socket, must
//! never unlink a socket some process still serves, nor a file that is not a socket: both
//! are refused ([`ClaimError::Occupied`]) and left in place.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why a socket path could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Something that is not a stale socket of ours is at the path; it was left alone.
    #[error("refusing to replace {path}: {what}")]
    Occupied {
        /// The path.
        path: PathBuf,
        /// What is there.
        what: String,
    },
    /// Binding failed (missing directory, permissions...).
    #[error("failed to bind {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A socket path this process created; dropping it unlinks the path if the socket there is
/// still this one: same device and inode (which a new file may reuse) and nobody listening
/// on it (drop the listener first), so never a successor's.
#[derive(Debug)]
pub struct Claimed {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Claimed {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
            && matches!(listened(&self.path), Ok(false))
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether some process accepts connections on the socket at `path`: a non-blocking connect
/// that is refused means nobody listens (a full backlog counts as listening).
fn listened(path: &Path) -> io::Result<bool> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ECONNREFUSED) => Ok(false),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINPROGRESS) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Binds a listening Unix socket at `path` with permission bits `mode`.
///
/// A socket left at `path` by a process that is gone (nothing listens on it) and owned by
/// this process's user is replaced; a live socket, another user's socket, or anything that
/// is not a socket (a regular file, a directory, a symlink) is refused and left in place.
pub fn bind(path: &Path, mode: u32) -> Result<(UnixListener, Claimed), ClaimError> {
    let occupied = |what: String| ClaimError::Occupied {
        path: path.to_owned(),
        what,
    };
    let bind_err = |source| ClaimError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
        Ok(meta) => {
            let ty = meta.file_type();
            if !ty.is_socket() {
                let kind = if ty.is_file() {
                    "a regular file"
                } else if ty.is_dir() {
                    "a directory"
                } else if ty.is_symlink() {
                    "a symbolic link"
                } else {
                    "a special file"
                };
                return Err(occupied(format!("it is {kind}, not a socket")));
            }
            let me = nix::unistd::geteuid().as_raw();
            if meta.uid() != me {
                return Err(occupied(format!(
                    "it is a socket of uid {}, not of this process (uid {me})",
                    meta.uid()
                )));
            }
            match listened(path) {
                Ok(false) => {}
                Ok(true) => {
                    return Err(occupied(
                        "another process is listening on it (is a proxy already running?)".into(),
                    ));
                }
                Err(e) => return Err(occupied(format!("cannot tell whether it is in use: {e}"))),
            }
            // Stale: this user's socket and nobody listens on it.
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(bind_err(e)),
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    let claimed = Claimed {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(bind_err)?;
    Ok((listener, claimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tandem-unix-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[tokio::test]
    async fn only_a_stale_socket_of_ours_is_replaced_and_only_ours_is_removed() {
        let d = dir("claim");
        // A regular file is never replaced.
        let file = d.join("file.sock");
        std::fs::write(&file, "data").expect("write");
        let err = bind(&file, 0o600).expect_err("refused");
        assert!(
            err.to_string().contains("a regular file, not a socket"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "data");

        // A live socket is never replaced.
        let live = d.join("live.sock");
        let other = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        let err = bind(&live, 0o600).expect_err("refused");
        assert!(
            err.to_string().contains("another process is listening"),
            "{err}"
        );
        assert!(
            std::os::unix::net::UnixStream::connect(&live).is_ok(),
            "still served"
        );

        // Once nobody listens, the stale socket is replaced.
        drop(other);
        let (l, claimed) = bind(&live, 0o600).expect("stale socket replaced");
        assert!(std::os::unix::net::UnixStream::connect(&live).is_ok());
        drop(l);
        drop(claimed);
        assert!(!live.exists(), "our own socket is removed");

        // A socket that replaced ours meanwhile is not removed.
        let (l, claimed) = bind(&live, 0o600).expect("bind");
        drop(l);
        std::fs::remove_file(&live).expect("unlink");
        let successor = std::os::unix::net::UnixListener::bind(&live).expect("successor binds");
        drop(claimed);
        assert!(live.exists(), "the successor's socket stays");
        drop(successor);
        let _ = std::fs::remove_dir_all(&d);
    }
}
