//! TLS for registry connections: the system trust anchors loaded once per
//! process and shared by every HTTP client, per-endpoint extra CAs, client
//! certificates and (only when a hosts.toml asks for it) skipped
//! verification.
//!
//! reqwest's own rustls setup reads the system trust store every time a
//! client is built; the agent builds one client per registry endpoint and
//! the one-shot `verify` builds two registry clients, so the store was read
//! several times per process. Here the store is read at most once, and only
//! when a TLS handshake first needs it: a process that only talks plain
//! HTTP to a local registry never reads it at all. A changed system store is
//! picked up by restarting the agent.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Largest PEM file (CA bundle, client certificate or key) read.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
static SYSTEM_ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
static SYSTEM_ROOT_LOADS: AtomicUsize = AtomicUsize::new(0);

/// Why TLS settings for an endpoint are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input held no certificate.
    #[error("{what} holds no PEM certificate")]
    NoCertificate {
        /// What was read (a file name or "CA bundle").
        what: String,
    },
    /// A PEM input could not be parsed.
    #[error("{what} is not valid PEM: {reason}")]
    Pem {
        /// What was read.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being configured.
        what: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// The process-wide crypto provider (aws-lc-rs).
fn provider() -> Arc<CryptoProvider> {
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// The system trust anchors, read on first use and shared afterwards.
pub fn system_roots() -> Arc<RootCertStore> {
    SYSTEM_ROOTS
        .get_or_init(|| {
            SYSTEM_ROOT_LOADS.fetch_add(1, Ordering::Relaxed);
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(loaded.certs);
            if ignored > 0 || !loaded.errors.is_empty() {
                tracing::warn!(
                    added,
                    ignored,
                    errors = loaded.errors.len(),
                    "some system CA certificates are unusable"
                );
            }
            tracing::debug!(added, "system trust anchors loaded");
            Arc::new(store)
        })
        .clone()
}

/// How many times this process has read the system trust store (0 or 1).
pub fn system_root_loads() -> usize {
    SYSTEM_ROOT_LOADS.load(Ordering::Relaxed)
}

/// The certificates of a PEM bundle; `what` names it in errors.
pub fn parse_certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: what.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.into() });
    }
    Ok(certs)
}

/// A client certificate chain and its private key.
pub struct ClientIdentity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientIdentity({} certificates, <key redacted>)", self.chain.len())
    }
}

impl ClientIdentity {
    /// Parses a certificate PEM and a key PEM (which may be the same bytes).
    pub fn from_pem(what: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientIdentity, TlsError> {
        let chain = parse_certificates(what, cert_pem)?;
        // The key's parse error is not shown: it could quote key material.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Pem {
            what: format!("{what} (private key)"),
            reason: "no usable private key".into(),
        })?;
        Ok(ClientIdentity { chain, key })
    }
}

/// What one endpoint's TLS needs beyond the system roots.
#[derive(Debug, Default)]
pub struct TlsSettings {
    /// Extra trust anchors for this endpoint.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// A client certificate to present.
    pub identity: Option<ClientIdentity>,
    /// Accept any server certificate (hosts.toml `skip_verify = true`).
    pub skip_verify: bool,
}

/// A rustls client configuration for `settings`: system roots (shared,
/// loaded on the first handshake) plus the extra roots, HTTP/2 and HTTP/1.1 by ALPN.
pub fn client_config(what: &str, settings: TlsSettings) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let rustls_err = |source| TlsError::Rustls { what: what.into(), source };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.skip_verify {
        Arc::new(NoVerification { provider: provider.clone() })
    } else {
        let mut extra = RootCertStore::empty();
        for c in settings.extra_roots {
            extra.add(c).map_err(rustls_err)?;
        }
        Arc::new(LazyRoots { provider: provider.clone(), extra, inner: OnceLock::new() })
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match settings.identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key).map_err(rustls_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies against the system roots plus extra roots; the system roots are
/// fetched (and on first use in the process, read) at the first handshake.
#[derive(Debug)]
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    extra: RootCertStore,
    inner: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl LazyRoots {
    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.inner
            .get_or_init(|| {
                let system = system_roots();
                let roots = if self.extra.is_empty() {
                    system
                } else {
                    let mut all = (*system).clone();
                    all.roots.extend(self.extra.roots.iter().cloned());
                    Arc::new(all)
                };
                if roots.is_empty() {
                    return Err("no trusted CA certificates: the system store is empty and none are configured".into());
                }
                WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// hosts.toml `skip_verify = true`: any certificate and name is accepted;
/// the handshake signatures are still checked against the presented key.
#[derive(Debug)]
struct NoVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_do_not_read_the_system_store_until_a_handshake() {
        let before = system_root_loads();
        for _ in 0..3 {
            client_config("test", TlsSettings::default()).expect("config");
        }
        assert_eq!(system_root_loads(), before, "building configs must not read the trust store");
    }

    #[test]
    fn pem_inputs_are_checked() {
        assert!(matches!(parse_certificates("x", b"not pem"), Err(TlsError::NoCertificate { .. })));
        let junk = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(parse_certificates("x", junk).is_err());
        let err = ClientIdentity::from_pem("c", b"nothing", b"nothing").unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }
}
