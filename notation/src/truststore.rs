//! The Notation CLI trust store layout: `x509/{ca,signingAuthority,tsa}/<name>/*.{pem,crt,cer}`,
//! each file holding one or more PEM certificates or one DER certificate.
//!
//! Loading is eager and strict, so a broken store is reported when the configuration is read,
//! not at the first pull: symlinks are refused (the specification requires it), every file must
//! hold at least one certificate, and every certificate must be a CA or self-signed (as Notation
//! checks). Sub-directories of a named store and files with other extensions are ignored with a
//! warning, as the specification says.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use thiserror::Error;

use crate::cert::Cert;
use crate::policy::{StoreType, TrustStoreRef, is_valid_store_name};

/// Largest certificate file read from a trust store.
pub const MAX_CERT_FILE_BYTES: u64 = 1024 * 1024;
/// Most certificates accepted in one named store.
pub const MAX_CERTS_PER_STORE: usize = 1000;
/// Most named stores accepted per store type.
pub const MAX_STORES_PER_TYPE: usize = 1000;

/// Why a trust store directory could not be loaded.
#[derive(Debug, Error)]
pub enum TrustStoreError {
    /// A directory or file could not be read.
    #[error("reading trust store path {path}: {source}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A path is a symlink, which the trust store specification forbids.
    #[error(
        "trust store path {path} is a symlink; named stores and certificate files must be regular (copy the file in)"
    )]
    Symlink {
        /// The symlink.
        path: PathBuf,
    },
    /// A named store directory has a name outside `[a-zA-Z0-9_.-]+`.
    #[error("trust store directory {path} has an invalid name; named stores must match [a-zA-Z0-9_.-]+")]
    InvalidStoreName {
        /// The directory.
        path: PathBuf,
    },
    /// A certificate file is larger than [`MAX_CERT_FILE_BYTES`].
    #[error("certificate file {path} is larger than {MAX_CERT_FILE_BYTES} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A certificate file holds no certificate, bad PEM, or bad DER.
    #[error("certificate file {path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what a valid file looks like.
        reason: String,
    },
    /// A certificate is neither a CA nor self-signed.
    #[error(
        "certificate {subject:?} in {path} is neither a CA certificate nor a self-signed signing certificate; trust stores hold roots"
    )]
    NotAnAnchor {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
    /// A named store has no certificate at all.
    #[error("named trust store {store} ({path}) has no certificates")]
    EmptyStore {
        /// `type:name`.
        store: String,
        /// Its directory.
        path: PathBuf,
    },
    /// More stores or certificates than the limits allow.
    #[error("trust store {path} exceeds a limit: {what}")]
    Limit {
        /// Where.
        path: PathBuf,
        /// Which limit.
        what: String,
    },
}

/// A certificate from a named trust store.
#[derive(Clone, Debug)]
pub struct TrustedCertificate {
    pub(crate) cert: Cert,
    source: PathBuf,
}

impl TrustedCertificate {
    /// The certificate in DER form.
    pub fn der(&self) -> &[u8] {
        &self.cert.der
    }
    /// Its subject (RFC 4514).
    pub fn subject(&self) -> &str {
        &self.cert.subject
    }
    /// The file it was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// All named stores under a trust store directory.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    stores: BTreeMap<TrustStoreRef, Vec<TrustedCertificate>>,
}

impl TrustStore {
    /// An empty trust store (every verification that needs a store fails authenticity).
    pub fn empty() -> TrustStore {
        TrustStore::default()
    }

    /// Loads `dir/x509/{ca,signingAuthority,tsa}/<name>/*.{pem,crt,cer}`. Missing type
    /// directories are empty; `dir` itself must exist.
    pub fn load(dir: &Path) -> Result<TrustStore, TrustStoreError> {
        let meta = fs::symlink_metadata(dir).map_err(|source| TrustStoreError::Io { path: dir.into(), source })?;
        if meta.file_type().is_symlink() {
            return Err(TrustStoreError::Symlink { path: dir.into() });
        }
        let mut stores = BTreeMap::new();
        for store_type in StoreType::ALL {
            let type_dir = dir.join("x509").join(store_type.as_str());
            let entries = match fs::read_dir(&type_dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(TrustStoreError::Io { path: type_dir, source }),
            };
            let mut count = 0usize;
            for entry in entries {
                let entry = entry.map_err(|source| TrustStoreError::Io { path: type_dir.clone(), source })?;
                let path = entry.path();
                let ft = entry.file_type().map_err(|source| TrustStoreError::Io { path: path.clone(), source })?;
                if ft.is_symlink() {
                    return Err(TrustStoreError::Symlink { path });
                }
                if !ft.is_dir() {
                    tracing::warn!(path = %path.display(), "ignoring a file outside any named trust store");
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_valid_store_name(&name) {
                    return Err(TrustStoreError::InvalidStoreName { path });
                }
                count += 1;
                if count > MAX_STORES_PER_TYPE {
                    return Err(TrustStoreError::Limit {
                        path: type_dir,
                        what: format!("more than {MAX_STORES_PER_TYPE} named stores"),
                    });
                }
                let r = TrustStoreRef { store_type, name };
                let certs = load_named_store(&r, &path)?;
                stores.insert(r, certs);
            }
        }
        Ok(TrustStore { stores })
    }

    /// The certificates of one named store, or `None` if the store does not exist.
    pub fn certificates(&self, store: &TrustStoreRef) -> Option<&[TrustedCertificate]> {
        self.stores.get(store).map(Vec::as_slice)
    }

    /// The named stores present.
    pub fn stores(&self) -> impl Iterator<Item = &TrustStoreRef> {
        self.stores.keys()
    }
}

fn load_named_store(store: &TrustStoreRef, dir: &Path) -> Result<Vec<TrustedCertificate>, TrustStoreError> {
    let mut certs = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|source| TrustStoreError::Io { path: dir.into(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| TrustStoreError::Io { path: dir.into(), source })?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| TrustStoreError::Io { path: path.clone(), source })?;
        if ft.is_symlink() {
            return Err(TrustStoreError::Symlink { path });
        }
        if ft.is_dir() {
            tracing::warn!(store = %store, path = %path.display(), "ignoring a sub-directory of a named trust store");
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("pem" | "crt" | "cer")) {
            tracing::warn!(store = %store, path = %path.display(), "ignoring a file without a .pem, .crt or .cer extension");
            continue;
        }
        for der in read_cert_file(&path)? {
            let cert = Cert::from_der(&der, certs.len())
                .map_err(|e| TrustStoreError::BadFile { path: path.clone(), reason: e.to_string() })?;
            let is_ca =
                cert.is_ca().map_err(|e| TrustStoreError::BadFile { path: path.clone(), reason: e.to_string() })?;
            if !is_ca && !cert.is_self_signed() {
                return Err(TrustStoreError::NotAnAnchor { path, subject: cert.subject });
            }
            certs.push(TrustedCertificate { cert, source: path.clone() });
            if certs.len() > MAX_CERTS_PER_STORE {
                return Err(TrustStoreError::Limit {
                    path: dir.into(),
                    what: format!("more than {MAX_CERTS_PER_STORE} certificates"),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(TrustStoreError::EmptyStore { store: store.to_string(), path: dir.into() });
    }
    Ok(certs)
}

fn read_cert_file(path: &Path) -> Result<Vec<Vec<u8>>, TrustStoreError> {
    let file = fs::File::open(path).map_err(|source| TrustStoreError::Io { path: path.into(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_CERT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TrustStoreError::Io { path: path.into(), source })?;
    if bytes.len() as u64 > MAX_CERT_FILE_BYTES {
        return Err(TrustStoreError::FileTooLarge { path: path.into() });
    }
    let bad = |reason: String| TrustStoreError::BadFile { path: path.into(), reason };
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes]);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("is neither DER (starts with 0x30) nor PEM text".into()))?;
    let certs = parse_pem_certificates(text).map_err(bad)?;
    if certs.is_empty() {
        return Err(bad(
            "has no \"-----BEGIN CERTIFICATE-----\" block; each file must hold a PEM or DER certificate".into()
        ));
    }
    Ok(certs)
}

/// Decodes every `CERTIFICATE` block of a PEM text; other block types are skipped.
pub(crate) fn parse_pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body_start = start + BEGIN.len();
        let Some(len) = rest[body_start..].find(END) else {
            return Err(format!("PEM block {} has no END line", out.len() + 1));
        };
        let body: String = rest[body_start..body_start + len].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("PEM block {} is not valid base64: {e}", out.len() + 1))?;
        out.push(der);
        rest = &rest[body_start + len + END.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation/truststore"))
    }

    #[test]
    fn loads_the_fixture_store() {
        let store = TrustStore::load(&fixtures()).unwrap();
        let names: Vec<String> = store.stores().map(ToString::to_string).collect();
        for expected in [
            "ca:e2e",
            "ca:e2e-expired",
            "ca:e2e-other",
            "ca:notation-test-root",
            "ca:alpine-2033",
            "signingAuthority:notation-test-root",
            "tsa:globalsign-r6",
            "tsa:digicert-g4",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        let e2e = store.certificates(&TrustStoreRef { store_type: StoreType::Ca, name: "e2e".into() }).unwrap();
        assert_eq!(e2e.len(), 1);
        assert_eq!(e2e[0].subject(), "CN=e2e,O=Notary,L=Seattle,ST=WA,C=US");
        // DER file (.cer) and PEM file (.pem) both load.
        let gs =
            store.certificates(&TrustStoreRef { store_type: StoreType::Tsa, name: "globalsign-r6".into() }).unwrap();
        assert_eq!(gs[0].subject(), "CN=GlobalSign,O=GlobalSign,OU=GlobalSign Root CA - R6");
        assert!(store.certificates(&TrustStoreRef { store_type: StoreType::Tsa, name: "e2e".into() }).is_none());
    }

    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, to).unwrap();
    }

    #[test]
    fn refuses_symlinks_empty_stores_and_junk() {
        let e2e = fixtures().join("x509/ca/e2e/e2e.crt");

        let tmp = tempfile::tempdir().unwrap();
        copy(&e2e, &tmp.path().join("x509/ca/good/e2e.crt"));
        fs::create_dir_all(tmp.path().join("x509/ca/good/sub")).unwrap();
        fs::write(tmp.path().join("x509/ca/good/README.txt"), "ignored").unwrap();
        assert_eq!(TrustStore::load(tmp.path()).unwrap().stores().count(), 1);

        std::os::unix::fs::symlink(&e2e, tmp.path().join("x509/ca/good/link.crt")).unwrap();
        assert!(matches!(TrustStore::load(tmp.path()), Err(TrustStoreError::Symlink { .. })));

        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("x509/tsa/empty")).unwrap();
        assert!(matches!(TrustStore::load(tmp.path()), Err(TrustStoreError::EmptyStore { .. })));

        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("x509/ca/junk")).unwrap();
        fs::write(tmp.path().join("x509/ca/junk/a.pem"), "not a certificate").unwrap();
        assert!(matches!(TrustStore::load(tmp.path()), Err(TrustStoreError::BadFile { .. })));

        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("x509/ca/bad name")).unwrap();
        assert!(matches!(TrustStore::load(tmp.path()), Err(TrustStoreError::InvalidStoreName { .. })));

        assert!(matches!(TrustStore::load(&tmp.path().join("missing")), Err(TrustStoreError::Io { .. })));
    }

    #[test]
    fn refuses_a_leaf_that_is_not_self_signed() {
        // The leaf of the notation-test-root chain is issued by the root: not an anchor.
        let env: serde_json::Value =
            serde_json::from_slice(&fs::read(fixtures().join("../envelopes/jws-chain-x509-valid.json")).unwrap())
                .unwrap();
        let leaf = base64::engine::general_purpose::STANDARD.decode(env["header"]["x5c"][0].as_str().unwrap()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("x509/ca/leaf")).unwrap();
        fs::write(tmp.path().join("x509/ca/leaf/leaf.cer"), leaf).unwrap();
        assert!(matches!(TrustStore::load(tmp.path()), Err(TrustStoreError::NotAnAnchor { .. })));
    }
}
