//! TLS with rustls (ring provider) on both sides, and the set-up of a new client connection.
//!
//! Owns: loading certificate+key PEM files into a [`FrontendTls`] (SNI resolver, ALPN,
//! TLS 1.2 and 1.3, session resumption), the upstream [`UpstreamTls`] client (verification,
//! SNI) and the stream types [`ClientStream`]/[`ServerStream`]. A leaf: it imports nothing
//! of the crate, so the plan can hold its types.
//! Does not own: the set-up of a new client connection (`accept`: PROXY header, then the
//! handshake with a [`FrontendTls`]), what is served over the stream (`http`, `tcp`), nor
//! reading the YAML (`tandem-config`) into a plan (`from_config`). Plans are built with
//! these values already loaded, so a reload either has every certificate or is refused whole.
//!
//! # Certificate files
//!
//! Each file of `frontends[].tls.certificates` is PEM holding, in this order, the leaf
//! certificate, its intermediate chain (optional, without the root), and the private key
//! (`PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY`); other sections are
//! ignored, as with HAProxy's `crt`. The key must match the leaf.
//!
//! # Choosing a certificate
//!
//! The client's SNI is matched against each certificate's subject alternative DNS names
//! (wildcards per RFC 6125, by webpki), in configuration order; the first certificate is the
//! default when there is no SNI or no certificate matches (HAProxy's default `crt`).
//!
//! # Resumption
//!
//! Stateless tickets (rustls' rotating ticketer, 6-hour keys) and a server-side session cache
//! (TLS 1.2 session ids, TLS 1.3 tickets of clients that prefer them). Both are process-wide
//! so sessions survive reloads, like HAProxy's per-process ticket keys; rustls only resumes
//! a session for the SNI it was made for.
//!
//! # Upstream verification
//!
//! With `verify: true` the server chain is checked against `ca` (else the firmware bundle
//! [`SYSTEM_CA_BUNDLE`]) and its name against `sni`, or against the server's IP address when
//! `sni` is unset. `verify: false` accepts any certificate: the traffic is encrypted but
//! anyone on the path to the server can impersonate it (HAProxy `verify none`); handshake
//! signatures are still checked.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest certificate or CA file read, in bytes.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Sessions kept by the server-side cache (HAProxy `tune.ssl.cachesize` default).
pub const SESSION_CACHE_ENTRIES: usize = 20_000;
/// CA bundle used to verify servers when a backend sets `verify: true` without `ca`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Why TLS material could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read.
    #[error("failed to load certificate {path}: {reason}")]
    Read {
        /// The file, as opened.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// A certificate file is not valid PEM or holds an unusable certificate or key.
    #[error("failed to load certificate {path}: {reason}")]
    Invalid {
        /// The file, as opened.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate file holds no certificate.
    #[error("failed to load certificate {path}: no certificate found")]
    NoCertificate {
        /// The file, as opened.
        path: PathBuf,
    },
    /// A certificate file holds no private key.
    #[error("failed to load certificate {path}: no private key found")]
    NoKey {
        /// The file, as opened.
        path: PathBuf,
    },
    /// A CA file could not be read or holds no usable CA certificate.
    #[error("failed to load ca file {path}: {reason}")]
    Ca {
        /// The file, as opened.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// The configured SNI is not a valid DNS name.
    #[error("invalid tls sni {name:?}")]
    Sni {
        /// The name as configured.
        name: String,
    },
    /// rustls refused the settings (no usable protocol version, no randomness).
    #[error("failed to set up tls: {reason}")]
    Setup {
        /// The cause.
        reason: String,
    },
}

/// The crypto provider used everywhere: ring (builds with a C compiler alone, no cmake).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// TLS 1.3 and 1.2, newest preferred.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Process-wide ticket keys, so tickets stay valid across reloads.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let t = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Setup {
        reason: format!("ticket keys: {e}"),
    })?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// Process-wide session cache, shared by every frontend and reload.
fn session_cache() -> Arc<dyn StoresServerSessions> {
    static CACHE: OnceLock<Arc<dyn StoresServerSessions>> = OnceLock::new();
    CACHE
        .get_or_init(|| rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES))
        .clone()
}

/// Reads a whole file of at most [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_PEM_BYTES {
        return Err(io::Error::other(format!(
            "file is larger than {MAX_PEM_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Loads one certificate file (format in the module doc).
pub fn load_certified_key(path: &Path) -> Result<CertifiedKey, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let pem_bytes = read_bounded(path).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("invalid pem: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    };
    webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| invalid(format!("invalid leaf certificate: {e}")))?;
    let key = match PrivateKeyDer::from_pem_slice(&pem_bytes) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(invalid(format!("invalid pem: {e}"))),
    };
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| invalid(format!("unusable private key: {e}")))
}

/// Picks the certificate for a client hello; see the module doc.
#[derive(Debug)]
struct SniResolver {
    /// In configuration order; never empty.
    certs: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn for_name(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = ServerName::DnsName(DnsName::try_from(name).ok()?.to_owned());
        self.certs.iter().find(|ck| {
            ck.cert.first().is_some_and(|leaf| {
                webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            })
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.for_name(n))
            .or_else(|| self.certs.first())
            .cloned()
    }
}

/// TLS termination settings of a frontend, loaded and ready to accept.
#[derive(Clone)]
pub struct FrontendTls {
    /// Certificate files as opened, in order; the first is the default.
    pub certificates: Vec<PathBuf>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
    /// The rustls configuration the handshake uses (`accept`).
    pub(crate) config: Arc<ServerConfig>,
}

impl FrontendTls {
    /// Loads every certificate file and builds the rustls server configuration.
    pub fn load(certificates: &[PathBuf], alpn: &[String]) -> Result<Self, TlsError> {
        if certificates.is_empty() {
            return Err(TlsError::Setup {
                reason: "no certificate configured".into(),
            });
        }
        let certs = certificates
            .iter()
            .map(|p| load_certified_key(p).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::Setup {
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { certs }));
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.session_storage = session_cache();
        config.ticketer = ticketer()?;
        Ok(Self {
            certificates: certificates.to_vec(),
            alpn: alpn.to_vec(),
            config: Arc::new(config),
        })
    }

    /// The rustls configuration.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl std::fmt::Debug for FrontendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendTls")
            .field("certificates", &self.certificates)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

/// Equal when built from the same files and protocols by the same load (the file contents
/// are not compared: two loads are different values).
impl PartialEq for FrontendTls {
    fn eq(&self, other: &Self) -> bool {
        self.certificates == other.certificates
            && self.alpn == other.alpn
            && Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for FrontendTls {}

/// TLS to the servers of a backend, ready to connect.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Whether server certificates are verified.
    pub verify: bool,
    /// Name sent in SNI and verified; the server IP is verified when `None`.
    pub sni: Option<String>,
    /// CA file as opened; [`SYSTEM_CA_BUNDLE`] when `None` and `verify` is on.
    pub ca: Option<PathBuf>,
    name: Option<ServerName<'static>>,
    config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Builds the client configuration, reading the CA file when verifying.
    pub fn load(verify: bool, sni: Option<&str>, ca: Option<&Path>) -> Result<Self, TlsError> {
        let name = sni
            .map(|s| {
                ServerName::try_from(s.to_owned()).map_err(|_| TlsError::Sni { name: s.into() })
            })
            .transpose()?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::Setup {
                reason: e.to_string(),
            })?;
        let config = if verify {
            let path = ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
            builder
                .with_root_certificates(load_roots(path)?)
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                // `verify: false`: any certificate is accepted; see the module doc for the risk.
                .with_custom_certificate_verifier(Arc::new(
                    tandem_tls_pin::Pinned::any(&provider()),
                ))
                .with_no_client_auth()
        };
        Ok(Self {
            verify,
            sni: sni.map(str::to_owned),
            ca: ca.map(Path::to_path_buf),
            name,
            config: Arc::new(config),
        })
    }

    /// Runs the client handshake on `stream`, connected to `addr`.
    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("verify", &self.verify)
            .field("sni", &self.sni)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Equal when built with the same settings by the same load.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.verify == other.verify
            && self.sni == other.sni
            && self.ca == other.ca
            && Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for UpstreamTls {}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let ca = |reason: String| TlsError::Ca {
        path: path.to_owned(),
        reason,
    };
    let bytes = read_bounded(path).map_err(|e| ca(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca(format!("invalid pem: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ca("no usable ca certificate found".into()));
    }
    Ok(roots)
}

/// A TCP stream, plain or wrapped in TLS.
#[derive(Debug)]
pub enum MaybeTls<T> {
    /// Plain text.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<T>),
}

/// A client connection after the TLS handshake (`accept`).
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;
/// A server connection after connecting (and the TLS handshake if the backend uses TLS).
pub type ServerStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    crate::pass::pass_through!(read [Self::Plain(s), Self::Tls(s)] => s);
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    crate::pass::pass_through!(write [Self::Plain(s), Self::Tls(s)] => s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    fn scratch(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let p = dir.join(name);
        std::fs::write(&p, contents).expect("write scratch file");
        p
    }

    #[test]
    fn loads_chain_and_key() {
        let ck = load_certified_key(&data("a.test.pem")).expect("loads");
        assert_eq!(ck.cert.len(), 2, "leaf and chain");
    }

    #[test]
    fn bad_files_are_refused_with_a_clear_message() {
        let a = std::fs::read_to_string(data("a.test.pem")).expect("read");
        let b = std::fs::read_to_string(data("b.test.pem")).expect("read");
        let cert_only: String = a
            .split("-----BEGIN PRIVATE KEY")
            .next()
            .expect("cert")
            .into();
        let key_only = &a[a.find("-----BEGIN PRIVATE KEY").expect("key")..];
        let b_key = &b[b.find("-----BEGIN PRIVATE KEY").expect("key")..];
        let mismatched = format!("{cert_only}{b_key}");
        let cases: Vec<(&str, String, &str)> = vec![
            ("cert-only.pem", cert_only.clone(), "no private key found"),
            ("key-only.pem", key_only.into(), "no certificate found"),
            (
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\n!!!\n".into(),
                "invalid pem",
            ),
            ("mismatch.pem", mismatched, "unusable private key"),
        ];
        for (name, contents, want) in cases {
            let p = scratch(name, contents.as_bytes());
            let err = load_certified_key(&p).expect_err(name).to_string();
            assert!(
                err.starts_with(&format!("failed to load certificate {}: ", p.display()))
                    && err.contains(want),
                "{name}: {err}"
            );
        }
        let missing = data("missing.pem");
        let err = load_certified_key(&missing).expect_err("missing");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
    }

    #[test]
    fn sni_picks_by_san_with_wildcards_and_default() {
        let certs: Vec<_> = ["a.test.pem", "b.test.pem"]
            .iter()
            .map(|n| Arc::new(load_certified_key(&data(n)).expect("loads")))
            .collect();
        let r = SniResolver {
            certs: certs.clone(),
        };
        let pick = |n: &str| r.for_name(n).map(|ck| Arc::ptr_eq(ck, &certs[1]));
        assert_eq!(pick("b.test"), Some(true));
        assert_eq!(pick("B.TEST"), Some(true));
        assert_eq!(pick("a.test"), Some(false));
        assert_eq!(pick("x.wild.a.test"), Some(false));
        assert_eq!(pick("y.x.wild.a.test"), None, "a wildcard covers one label");
        assert_eq!(pick("c.test"), None);
    }

    #[test]
    fn upstream_ca_must_hold_a_certificate() {
        assert!(UpstreamTls::load(true, Some("a.test"), Some(&data("ca.pem"))).is_ok());
        assert!(UpstreamTls::load(false, None, None).is_ok());
        let empty = scratch("empty-ca.pem", b"");
        let err = UpstreamTls::load(true, None, Some(&empty)).expect_err("empty ca");
        assert!(
            err.to_string().contains("no usable ca certificate"),
            "{err}"
        );
        let err =
            UpstreamTls::load(true, Some("bad name!"), Some(&data("ca.pem"))).expect_err("bad sni");
        assert!(matches!(err, TlsError::Sni { .. }), "{err}");
    }
}
