//! The one rustls certificate verifier of the workspace, [`Pinned`]: it accepts exactly the
//! certificate whose SHA-256 fingerprint is pinned (config sync between the nodes, as server
//! and as client), or any certificate ([`Pinned::any`]: the proxy's upstream `verify: false`).
//! Either way the handshake signatures are verified with the presented certificate's key and
//! the provider's algorithms, so the peer must hold the key: no CA, no names, no expiry.
//!
//! Owns the certificate fingerprint ([`fingerprint`], lowercase hex SHA-256 of the DER).
//! Must not read files, parse operator notations nor build rustls configs: the callers
//! (`tandem-sync`, `tandem-proxy`) do, and hand it the pin as lowercase hex.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// SHA-256 of `der`, lowercase hex (64 digits).
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Which end-entity certificates [`Pinned`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Accept {
    /// Only the one with this fingerprint (lowercase hex); an empty pin matches nothing.
    Sha256(String),
    /// Any certificate (encrypted, but anyone on the path can impersonate the peer).
    Any,
}

/// A verifier for either side of the handshake; see the module doc.
#[derive(Debug)]
pub struct Pinned {
    accept: Accept,
    algs: WebPkiSupportedAlgorithms,
    /// Who presents the certificate, in the log line of a refusal.
    label: &'static str,
}

impl Pinned {
    /// Accepts only the certificate whose fingerprint is `pinned` (lowercase hex, as
    /// [`fingerprint`] makes it), using `provider`'s signature algorithms.
    pub fn new(pinned: &str, provider: &CryptoProvider) -> Pinned {
        Pinned {
            accept: Accept::Sha256(pinned.to_owned()),
            algs: provider.signature_verification_algorithms,
            label: "peer",
        }
    }

    /// Accepts any certificate, using `provider`'s signature algorithms for the handshake
    /// signatures.
    pub fn any(provider: &CryptoProvider) -> Pinned {
        Pinned {
            accept: Accept::Any,
            algs: provider.signature_verification_algorithms,
            label: "peer",
        }
    }

    /// Names who presents the certificate in the warning logged on a refusal
    /// (`"<label> presented an unpinned certificate"`; default `peer`).
    pub fn with_label(mut self, label: &'static str) -> Pinned {
        self.label = label;
        self
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let pinned = match &self.accept {
            Accept::Any => return Ok(()),
            Accept::Sha256(pinned) => pinned,
        };
        let got = fingerprint(end_entity.as_ref());
        if got == *pinned {
            Ok(())
        } else {
            tracing::warn!(presented = %got, pinned = %pinned, "{} presented an unpinned certificate", self.label);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

/// The handshake-signature methods, the same in both verifier traits: checked with the
/// presented certificate's key and the provider's algorithms, whatever the pin.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::PrivateKeyDer;

    use super::*;

    /// A self-signed certificate and its key.
    fn node() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["tandem-sync".to_owned()]).unwrap();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        (ck.cert.der().clone(), key)
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_ok(v: &Pinned, cert: &CertificateDer<'_>) -> bool {
        let name = ServerName::try_from("tandem-sync").unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    fn client_ok(v: &Pinned, cert: &CertificateDer<'_>) -> bool {
        v.verify_client_cert(cert, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn fingerprints_are_lowercase_hex_sha256() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn accepts_the_pinned_certificate_on_both_sides() {
        let (cert, _) = node();
        let v = Pinned::new(&fingerprint(cert.as_ref()), &provider());
        assert!(server_ok(&v, &cert));
        assert!(client_ok(&v, &cert));
    }

    #[test]
    fn refuses_another_certificate_on_both_sides() {
        let (pinned, _) = node();
        let (other, _) = node();
        let v = Pinned::new(&fingerprint(pinned.as_ref()), &provider()).with_label("sync peer");
        assert!(!server_ok(&v, &other));
        assert!(!client_ok(&v, &other));
        assert!(matches!(
            v.verify_server_cert(
                &other,
                &[],
                &ServerName::try_from("x").unwrap(),
                &[],
                UnixTime::now()
            ),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure
            ))
        ));
    }

    #[test]
    fn an_empty_or_upper_case_pin_matches_nothing() {
        let (cert, _) = node();
        assert!(!server_ok(&Pinned::new("", &provider()), &cert));
        assert!(!client_ok(&Pinned::new("", &provider()), &cert));
        let upper = fingerprint(cert.as_ref()).to_uppercase();
        assert!(!server_ok(&Pinned::new(&upper, &provider()), &cert));
    }

    #[test]
    fn any_accepts_every_certificate() {
        let (a, _) = node();
        let (b, _) = node();
        let v = Pinned::any(&provider());
        assert!(server_ok(&v, &a));
        assert!(server_ok(&v, &b));
        assert!(!ServerCertVerifier::supported_verify_schemes(&v).is_empty());
    }

    /// Runs a TLS 1.3 handshake in memory; `Ok` once both sides finished it.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<(), rustls::Error> {
        let mut c = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("tandem-sync").unwrap(),
        )?;
        let mut s = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn configs(
        client: &(CertificateDer<'static>, PrivateKeyDer<'static>),
        server: &(CertificateDer<'static>, PrivateKeyDer<'static>),
        client_pins: &str,
        server_pins: &str,
    ) -> (rustls::ClientConfig, rustls::ServerConfig) {
        let p = provider();
        let cc = rustls::ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned::new(client_pins, &p)))
            .with_client_auth_cert(vec![client.0.clone()], client.1.clone_key())
            .unwrap();
        let sc = rustls::ServerConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(Arc::new(Pinned::new(server_pins, &p)))
            .with_single_cert(vec![server.0.clone()], server.1.clone_key())
            .unwrap();
        (cc, sc)
    }

    #[test]
    fn mutual_tls_succeeds_only_with_both_pins_right() {
        let a = node();
        let b = node();
        let fa = fingerprint(a.0.as_ref());
        let fb = fingerprint(b.0.as_ref());
        let (c, s) = configs(&a, &b, &fb, &fa);
        handshake(c, s).expect("both pinned");
        let (c, s) = configs(&a, &b, &fa, &fa);
        assert!(handshake(c, s).is_err(), "the client pinned another server");
        let (c, s) = configs(&a, &b, &fb, &fb);
        assert!(handshake(c, s).is_err(), "the server pinned another client");
    }
}
