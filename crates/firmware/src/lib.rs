//! `tandem-firmware`: firmware upgrades of a Tandem node, in "plan then commit" style.
//!
//! Owns: verifying an upgrade bundle ([`bundle`]: sha256 of each member against
//! `SHA256SUMS`, ed25519 signature of `SHA256SUMS` by the build key), the A/B slot model
//! and the systemd-boot entries on the ESP ([`slot`]: which slot runs, boot counting,
//! blessing, rollback), and installing a bundle into the inactive slot ([`install`]: a
//! [`install::Plan`] of steps whose order keeps the running slot bootable at every point,
//! refusing an older release than the running one unless allowed: [`version`]).
//! Must not: talk to the supervisor, reboot, or touch the running slot's partition or its
//! boot entry. Callers (tandemctl) do the reboot and the reporting.

pub mod bundle;
pub mod install;
pub mod slot;
pub mod version;

use std::path::PathBuf;

pub use bundle::{Bundle, Member};
pub use install::{Downgrade, Plan, Step};
pub use slot::{Entry, Layout, Slot, Status};
pub use version::{Relation, Version};

/// What can go wrong with a firmware operation; every message names what and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or device could not be read, written, renamed or synced.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        what: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bundle is not a tar file of the expected shape.
    #[error("bundle {}: {reason}", path.display())]
    Format {
        /// The bundle.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The signature of `SHA256SUMS` does not verify with the shipped public key.
    #[error("bundle {}: the signature of SHA256SUMS does not verify with {}", path.display(), key.display())]
    BadSignature {
        /// The bundle.
        path: PathBuf,
        /// The public key file.
        key: PathBuf,
    },
    /// The public key file is not an ed25519 public key in PEM (SPKI).
    #[error("public key {}: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A member's (or a written slot's) sha256 differs from the signed one.
    #[error("{what}: sha256 {actual} differs from the signed {expected}")]
    HashMismatch {
        /// The member or device.
        what: String,
        /// The signed hash.
        expected: String,
        /// The hash found.
        actual: String,
    },
    /// The running slot cannot be told from the kernel command line.
    #[error("kernel command line: no root=PARTLABEL=tandem-a|tandem-b in `{0}`")]
    UnknownSlot(String),
    /// The ESP is not in a state the operation can work from.
    #[error("esp {}: {reason}", path.display())]
    Esp {
        /// The ESP mount point or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The bundle holds an older release than the running firmware, and no downgrade was
    /// allowed.
    #[error("bundle {}: version {bundle} is older than the running firmware {running}; downgrade refused", path.display())]
    Downgrade {
        /// The bundle.
        path: PathBuf,
        /// The running firmware's version.
        running: String,
        /// The bundle's version.
        bundle: String,
    },
    /// The bundle's or the running firmware's version cannot be ordered (see [`version`]),
    /// and no downgrade was allowed.
    #[error("bundle {}: cannot tell whether version `{bundle}` is older than the running firmware `{running}`; refused", path.display())]
    UnorderedVersion {
        /// The bundle.
        path: PathBuf,
        /// The running firmware's version.
        running: String,
        /// The bundle's version.
        bundle: String,
    },
    /// The slot image does not fit the slot partition.
    #[error("slot {}: the image ({image} bytes) does not fit the partition ({partition} bytes)", device.display())]
    TooBig {
        /// The slot device.
        device: PathBuf,
        /// Image size.
        image: u64,
        /// Partition size.
        partition: u64,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with what was done and where.
pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
