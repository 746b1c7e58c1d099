//! The Sigstore trust root: certificate authorities (Fulcio), transparency logs (Rekor) and
//! timestamp authorities, each with its validity window. Read from a Sigstore
//! `trusted_root.json` ([`TrustedRoot::parse`]) or assembled from PEM files for cosign-style
//! configuration (a Fulcio root and a Rekor public key).
//!
//! CT logs (`ctlogs`) are read past but not used: embedded SCTs of Fulcio certificates are not
//! verified (see the crate documentation).

use serde::Deserialize;
use thiserror::Error;

use crate::certs::{Cert, MAX_CHAIN_LEN};
use crate::encoding;
use crate::keys::{KeyError, PublicKey};

/// Largest `trusted_root.json` accepted.
pub const MAX_TRUSTED_ROOT_BYTES: usize = 4 * 1024 * 1024;
/// Most entries of each kind (logs, certificate authorities, timestamp authorities).
pub const MAX_ROOT_ENTRIES: usize = 256;

/// Why a trust root could not be loaded.
#[derive(Debug, Error)]
pub enum TrustRootError {
    /// The document is larger than [`MAX_TRUSTED_ROOT_BYTES`].
    #[error("trusted root is {0} bytes, more than the {MAX_TRUSTED_ROOT_BYTES}-byte limit")]
    TooLarge(usize),
    /// The document is not JSON of the trusted-root shape.
    #[error("trusted root is not a valid Sigstore trusted_root.json document: {0}")]
    Json(#[source] serde_json::Error),
    /// The media type is not a Sigstore trusted root.
    #[error(
        "trusted root media type {0:?} is not supported; expected application/vnd.dev.sigstore.trustedroot+json;version=0.1 (or 0.2)"
    )]
    MediaType(String),
    /// An entry is malformed.
    #[error("trusted root {what}: {reason}")]
    Entry {
        /// Which entry (e.g. `tlogs[1]`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A public key of an entry could not be loaded.
    #[error("trusted root {what}: {source}")]
    Key {
        /// Which entry.
        what: String,
        /// The key problem.
        #[source]
        source: KeyError,
    },
    /// More than [`MAX_ROOT_ENTRIES`] entries of one kind.
    #[error("trusted root has more than {MAX_ROOT_ENTRIES} {0}")]
    TooMany(&'static str),
}

/// A validity window; an open end is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidityWindow {
    /// Start (Unix seconds), inclusive.
    pub start: Option<i64>,
    /// End (Unix seconds), inclusive.
    pub end: Option<i64>,
}

impl ValidityWindow {
    /// True if `t` (Unix seconds) lies inside the window.
    pub fn contains(&self, t: i64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log (Rekor) instance.
#[derive(Clone, Debug)]
pub struct TransparencyLog {
    /// Its base URL (informational).
    pub base_url: String,
    /// The log ID entries name it by (SHA-256 of its key for Rekor v1).
    pub log_id: Vec<u8>,
    /// Its signing key.
    pub key: PublicKey,
    /// When the key may be used.
    pub valid_for: ValidityWindow,
}

/// A certificate authority (Fulcio) or timestamp authority: a chain ending in its root.
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    /// Its URI (informational).
    pub uri: String,
    /// Leaf-most first, root last (the trusted_root.json order).
    pub(crate) chain: Vec<Cert>,
    /// When it may be relied on.
    pub valid_for: ValidityWindow,
}

impl CertificateAuthority {
    /// Subjects of its certificates, leaf-most first.
    pub fn subjects(&self) -> Vec<String> {
        self.chain.iter().map(|c| c.subject.clone()).collect()
    }

    pub(crate) fn label(&self) -> String {
        match (self.uri.is_empty(), self.chain.last()) {
            (false, _) => self.uri.clone(),
            (true, Some(root)) => root.subject.clone(),
            (true, None) => "(empty authority)".into(),
        }
    }
}

/// The trust material of keyless verification.
#[derive(Clone, Debug, Default)]
pub struct TrustedRoot {
    tlogs: Vec<TransparencyLog>,
    certificate_authorities: Vec<CertificateAuthority>,
    timestamp_authorities: Vec<CertificateAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootJson {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<TlogJson>,
    #[serde(default)]
    certificate_authorities: Vec<CaJson>,
    #[serde(default)]
    timestamp_authorities: Vec<CaJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogJson {
    #[serde(default)]
    base_url: String,
    public_key: KeyJson,
    log_id: LogIdJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    raw_bytes: Option<String>,
    valid_for: Option<ValidForJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogIdJson {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaJson {
    #[serde(default)]
    uri: String,
    cert_chain: ChainJson,
    valid_for: Option<ValidForJson>,
}

#[derive(Deserialize)]
struct ChainJson {
    #[serde(default)]
    certificates: Vec<RawBytesJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytesJson {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ValidForJson {
    start: Option<String>,
    end: Option<String>,
}

fn window(v: Option<&ValidForJson>, what: &str) -> Result<ValidityWindow, TrustRootError> {
    let parse = |s: &Option<String>, which: &str| -> Result<Option<i64>, TrustRootError> {
        match s {
            None => Ok(None),
            Some(s) => encoding::parse_rfc3339(s).map(Some).ok_or_else(|| TrustRootError::Entry {
                what: what.to_string(),
                reason: format!("validFor.{which} {s:?} is not an RFC 3339 time"),
            }),
        }
    };
    match v {
        None => Ok(ValidityWindow::default()),
        Some(v) => Ok(ValidityWindow { start: parse(&v.start, "start")?, end: parse(&v.end, "end")? }),
    }
}

fn authority(ca: &CaJson, what: &str) -> Result<CertificateAuthority, TrustRootError> {
    let entry = |reason: String| TrustRootError::Entry { what: what.to_string(), reason };
    if ca.cert_chain.certificates.is_empty() {
        return Err(entry("certChain holds no certificates".into()));
    }
    if ca.cert_chain.certificates.len() > MAX_CHAIN_LEN {
        return Err(entry(format!("certChain holds more than {MAX_CHAIN_LEN} certificates")));
    }
    let chain = ca
        .cert_chain
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let der = encoding::b64(&c.raw_bytes).ok_or_else(|| entry(format!("certificate #{i} is not base64")))?;
            Cert::from_der(&der, &format!("certificate #{i}")).map_err(entry)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CertificateAuthority { uri: ca.uri.clone(), chain, valid_for: window(ca.valid_for.as_ref(), what)? })
}

impl TrustedRoot {
    /// An empty trust root (everything keyless fails against it).
    pub fn new() -> TrustedRoot {
        TrustedRoot::default()
    }

    /// Parses a Sigstore `trusted_root.json` (media type
    /// `application/vnd.dev.sigstore.trustedroot+json;version=0.1`). Every certificate and key
    /// is decoded and checked now.
    pub fn parse(json: &[u8]) -> Result<TrustedRoot, TrustRootError> {
        if json.len() > MAX_TRUSTED_ROOT_BYTES {
            return Err(TrustRootError::TooLarge(json.len()));
        }
        let doc: RootJson = serde_json::from_slice(json).map_err(TrustRootError::Json)?;
        let mt = doc.media_type.as_str();
        if !matches!(
            mt,
            "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
                | "application/vnd.dev.sigstore.trustedroot+json;version=0.2"
                | "application/vnd.dev.sigstore.trustedroot.v0.2+json"
        ) {
            return Err(TrustRootError::MediaType(doc.media_type));
        }
        for (n, what) in [
            (doc.tlogs.len(), "tlogs"),
            (doc.certificate_authorities.len(), "certificate authorities"),
            (doc.timestamp_authorities.len(), "timestamp authorities"),
        ] {
            if n > MAX_ROOT_ENTRIES {
                return Err(TrustRootError::TooMany(what));
            }
        }
        let mut root = TrustedRoot::new();
        for (i, t) in doc.tlogs.iter().enumerate() {
            let what = format!("tlogs[{i}] ({})", t.base_url);
            let entry = |reason: &str| TrustRootError::Entry { what: what.clone(), reason: reason.to_string() };
            let raw = t.public_key.raw_bytes.as_deref().ok_or_else(|| entry("publicKey.rawBytes is missing"))?;
            let der = encoding::b64(raw).ok_or_else(|| entry("publicKey.rawBytes is not base64"))?;
            let key = PublicKey::from_spki_der(&t.base_url, &der)
                .map_err(|source| TrustRootError::Key { what: what.clone(), source })?;
            let log_id = encoding::b64(&t.log_id.key_id).ok_or_else(|| entry("logId.keyId is not base64"))?;
            root.tlogs.push(TransparencyLog {
                base_url: t.base_url.clone(),
                log_id,
                key,
                valid_for: window(t.public_key.valid_for.as_ref(), &what)?,
            });
        }
        for (i, ca) in doc.certificate_authorities.iter().enumerate() {
            root.certificate_authorities.push(authority(ca, &format!("certificateAuthorities[{i}] ({})", ca.uri))?);
        }
        for (i, ca) in doc.timestamp_authorities.iter().enumerate() {
            root.timestamp_authorities.push(authority(ca, &format!("timestampAuthorities[{i}] ({})", ca.uri))?);
        }
        Ok(root)
    }

    fn pem_authority(uri: &str, pem: &str, what: &str) -> Result<CertificateAuthority, TrustRootError> {
        let chain = Cert::from_pem_chain(pem, what)
            .map_err(|reason| TrustRootError::Entry { what: what.to_string(), reason })?;
        if chain.is_empty() {
            return Err(TrustRootError::Entry { what: what.to_string(), reason: "no PEM CERTIFICATE block".into() });
        }
        Ok(CertificateAuthority { uri: uri.to_string(), chain, valid_for: ValidityWindow::default() })
    }

    /// Adds a certificate authority from PEM certificates (intermediates first, root last, as
    /// in trusted_root.json; a lone root is the usual case), valid at all times.
    pub fn add_certificate_authority_pem(&mut self, uri: &str, pem: &str) -> Result<(), TrustRootError> {
        if self.certificate_authorities.len() >= MAX_ROOT_ENTRIES {
            return Err(TrustRootError::TooMany("certificate authorities"));
        }
        let ca = Self::pem_authority(uri, pem, "certificate authority PEM")?;
        self.certificate_authorities.push(ca);
        Ok(())
    }

    /// Adds a timestamp authority from PEM certificates (TSA certificate first, root last),
    /// valid at all times.
    pub fn add_timestamp_authority_pem(&mut self, uri: &str, pem: &str) -> Result<(), TrustRootError> {
        if self.timestamp_authorities.len() >= MAX_ROOT_ENTRIES {
            return Err(TrustRootError::TooMany("timestamp authorities"));
        }
        let ca = Self::pem_authority(uri, pem, "timestamp authority PEM")?;
        self.timestamp_authorities.push(ca);
        Ok(())
    }

    /// Adds a Rekor v1 log by its PEM public key; its log ID is the SHA-256 of the key's DER,
    /// as Rekor v1 computes it.
    pub fn add_tlog_key_pem(&mut self, base_url: &str, pem: &str) -> Result<(), TrustRootError> {
        if self.tlogs.len() >= MAX_ROOT_ENTRIES {
            return Err(TrustRootError::TooMany("tlogs"));
        }
        let key = PublicKey::from_pem(base_url, pem)
            .map_err(|source| TrustRootError::Key { what: format!("tlog key {base_url:?}"), source })?;
        let log_id = encoding::sha256(key.spki_der()).to_vec();
        self.tlogs.push(TransparencyLog {
            base_url: base_url.to_string(),
            log_id,
            key,
            valid_for: ValidityWindow::default(),
        });
        Ok(())
    }

    /// The transparency logs.
    pub fn tlogs(&self) -> &[TransparencyLog] {
        &self.tlogs
    }

    /// The certificate authorities.
    pub fn certificate_authorities(&self) -> &[CertificateAuthority] {
        &self.certificate_authorities
    }

    /// The timestamp authorities.
    pub fn timestamp_authorities(&self) -> &[CertificateAuthority] {
        &self.timestamp_authorities
    }

    pub(crate) fn find_log(&self, log_id: &[u8]) -> Option<&TransparencyLog> {
        self.tlogs.iter().find(|l| l.log_id == log_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_are_inclusive_and_open_ends_unbounded() {
        let w = ValidityWindow { start: Some(10), end: Some(20) };
        assert!(w.contains(10) && w.contains(20) && !w.contains(9) && !w.contains(21));
        assert!(ValidityWindow::default().contains(i64::MIN));
        assert!(ValidityWindow { start: Some(5), end: None }.contains(i64::MAX));
    }

    #[test]
    fn refuses_wrong_media_type_and_bad_entries() {
        let doc = br#"{"mediaType":"application/json","tlogs":[]}"#;
        assert!(matches!(TrustedRoot::parse(doc), Err(TrustRootError::MediaType(_))));
        let doc = br#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "certificateAuthorities":[{"uri":"x","certChain":{"certificates":[{"rawBytes":"AAEC"}]}}]}"#;
        assert!(matches!(TrustedRoot::parse(doc), Err(TrustRootError::Entry { .. })));
        assert!(matches!(TrustedRoot::parse(b"{"), Err(TrustRootError::Json(_))));
    }
}
