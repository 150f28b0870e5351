//! The node's sync identity and the pinned-certificate mutual TLS between the two nodes.
//!
//! Owns `DATA/sync/`: `node.crt` and `node.key` (a self-signed ECDSA P-256 certificate made
//! on first start with `rcgen`; the key is mode 0600), and `peer.sha256` (the SHA-256
//! fingerprint of the peer's certificate, stored by pairing after the operator confirmed it).
//! Builds rustls server and client configs (ring provider) whose verifiers (`tandem-tls-pin`)
//! accept exactly the pinned certificate, on both sides: no CA, no names, no expiry games.
//! Must not open sockets (the shell does) nor decide when to pair (the operator does, through
//! the supervisor). Every file is written with write-temp, fsync, rename, fsync-dir
//! (`tandem-fsutil`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::info;

use crate::SyncError;

/// The name the client asks for; the pinned verifier ignores names.
pub const SERVER_NAME: &str = "tandem-sync";

/// A node's certificate and key, and the pinned peer fingerprint if paired.
#[derive(Debug)]
pub struct Identity {
    /// `DATA/sync`.
    pub dir: PathBuf,
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    key_pem: String,
    /// SHA-256 of the certificate, lowercase hex.
    pub fingerprint: String,
}

/// The pinned-certificate verifier (both sides) and the SHA-256 fingerprint (lowercase hex)
/// it pins, shared with the proxy's upstream TLS.
pub use tandem_tls_pin::{Pinned, fingerprint};

/// `AB:CD:...` for consoles: pairs of upper-case hex digits.
pub fn display_fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalizes an operator-typed fingerprint (colons, spaces, any case) to lowercase hex.
pub fn parse_fingerprint(given: &str) -> Result<String, SyncError> {
    let hex: String = given
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(SyncError::BadFingerprint {
            given: given.to_owned(),
        })
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SyncError + 'a {
    move |source| SyncError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` atomically (temp file, fsync, rename, fsync dir) with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), SyncError> {
    tandem_fsutil::write_atomic_with_mode(path, data, mode).map_err(io("write", path))
}

impl Identity {
    /// Loads `dir/node.crt` and `dir/node.key`, generating them on first use.
    pub fn load_or_create(dir: &Path) -> Result<Identity, SyncError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let crt = dir.join("node.crt");
        let key = dir.join("node.key");
        if !crt.exists() || !key.exists() {
            let ck =
                rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(|e| {
                    SyncError::Identity {
                        path: dir.to_path_buf(),
                        reason: format!("cannot generate the node certificate: {e}"),
                    }
                })?;
            // Key first: a certificate without its key would be regenerated anyway.
            write_atomic(&key, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&crt, ck.cert.pem().as_bytes(), 0o644)?;
            info!(path = %crt.display(), "generated the sync node certificate");
        }
        let cert = CertificateDer::from_pem_file(&crt).map_err(|e| SyncError::Identity {
            path: crt.clone(),
            reason: e.to_string(),
        })?;
        let key_pem = std::fs::read_to_string(&key).map_err(io("read", &key))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| SyncError::Identity {
            path: key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Identity {
            dir: dir.to_path_buf(),
            fingerprint: fingerprint(cert.as_ref()),
            cert,
            key_pem,
        })
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, SyncError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| SyncError::Identity {
            path: self.dir.join("node.key"),
            reason: e.to_string(),
        })
    }

    /// The pinned peer fingerprint, if paired.
    pub fn pinned(&self) -> Result<Option<String>, SyncError> {
        read_pinned(&self.dir)
    }

    /// Pins `fingerprint` (any notation) as the peer's certificate.
    pub fn pin(&self, given: &str) -> Result<String, SyncError> {
        let hex = parse_fingerprint(given)?;
        write_atomic(
            &self.dir.join("peer.sha256"),
            format!("{hex}\n").as_bytes(),
            0o644,
        )?;
        info!(fingerprint = %hex, "pinned the peer's sync certificate");
        Ok(hex)
    }

    /// A server config that requires a client certificate with the pinned fingerprint.
    pub fn server_config(
        &self,
        peer: &str,
        pinned: &str,
    ) -> Result<rustls::ServerConfig, SyncError> {
        let tls = |e: rustls::Error| SyncError::Tls {
            peer: peer.to_owned(),
            reason: e.to_string(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned::new(pinned, &provider).with_label("sync peer"));
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key()?)
            .map_err(tls)
    }

    /// A client config that presents our certificate and accepts only the pinned one.
    pub fn client_config(
        &self,
        peer: &str,
        pinned: &str,
    ) -> Result<rustls::ClientConfig, SyncError> {
        let tls = |e: rustls::Error| SyncError::Tls {
            peer: peer.to_owned(),
            reason: e.to_string(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned::new(pinned, &provider).with_label("sync peer"));
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key()?)
            .map_err(tls)
    }
}

/// The pinned fingerprint in `dir/peer.sha256`, if any.
pub fn read_pinned(dir: &Path) -> Result<Option<String>, SyncError> {
    let path = dir.join("peer.sha256");
    match std::fs::read_to_string(&path) {
        Ok(s) => parse_fingerprint(s.trim()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_any_notation() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&display_fingerprint(&hex)).unwrap(), hex);
        assert_eq!(parse_fingerprint(&hex.to_uppercase()).unwrap(), hex);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
