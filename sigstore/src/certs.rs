//! X.509 certificates as Sigstore uses them: Fulcio leaf certificates (subject alternative
//! names, the OIDC issuer extensions 1.3.6.1.4.1.57264.1.1 and .1.8, the code-signing EKU),
//! certificate authority and timestamp authority chains from the trusted root, and chain
//! validation at a given time with rustls-webpki.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName, SubjectKeyIdentifier};

use crate::encoding::{self, der};
use crate::keys::PublicKey;
use crate::trust::CertificateAuthority;

/// Largest certificate accepted anywhere.
pub(crate) const MAX_CERT_BYTES: usize = 64 * 1024;
/// Most certificates accepted in one chain.
pub(crate) const MAX_CHAIN_LEN: usize = 10;

/// DER contents of the code-signing EKU OID, 1.3.6.1.5.5.7.3.3.
pub(crate) const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// DER contents of the time-stamping EKU OID, 1.3.6.1.5.5.7.3.8.
pub(crate) const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_EKU_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
/// Fulcio: OIDC issuer, raw string value (deprecated but still issued).
const OID_FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio: OIDC issuer, DER UTF8String value.
const OID_FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio: username SAN (otherName type id).
const OID_FULCIO_USERNAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");

/// A parsed certificate that keeps its exact DER.
#[derive(Clone, Debug)]
pub(crate) struct Cert {
    pub der: Vec<u8>,
    pub parsed: Certificate,
    pub not_before: i64,
    pub not_after: i64,
    pub key: PublicKey,
    pub subject: String,
}

impl Cert {
    /// Parses a DER certificate; `what` labels errors ("signing certificate", "chain #1").
    pub(crate) fn from_der(der: &[u8], what: &str) -> Result<Cert, String> {
        if der.len() > MAX_CERT_BYTES {
            return Err(format!("{what} is {} bytes, more than the {MAX_CERT_BYTES}-byte limit", der.len()));
        }
        let parsed =
            Certificate::from_der(der).map_err(|e| format!("{what} is not a valid DER X.509 certificate: {e}"))?;
        let tbs = &parsed.tbs_certificate;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("{what}: re-encoding its public key failed: {e}"))?;
        let key = PublicKey::from_spki_der(what, &spki).map_err(|e| format!("{what}: {e}"))?;
        Ok(Cert {
            der: der.to_vec(),
            not_before: tbs.validity.not_before.to_unix_duration().as_secs() as i64,
            not_after: tbs.validity.not_after.to_unix_duration().as_secs() as i64,
            subject: tbs.subject.to_string(),
            key,
            parsed,
        })
    }

    /// Parses every `CERTIFICATE` block of PEM text, in order.
    pub(crate) fn from_pem_chain(pem: &str, what: &str) -> Result<Vec<Cert>, String> {
        let blocks = encoding::pem_blocks(pem).map_err(|e| format!("{what}: {e}"))?;
        let certs: Vec<_> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
        if certs.len() > MAX_CHAIN_LEN {
            return Err(format!("{what} holds {} certificates, more than {MAX_CHAIN_LEN}", certs.len()));
        }
        certs.iter().enumerate().map(|(i, b)| Cert::from_der(&b.der, &format!("{what} #{i}"))).collect()
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&x509_cert::ext::Extension> {
        self.parsed.tbs_certificate.extensions.as_ref()?.iter().find(|e| e.extn_id == oid)
    }

    /// Issuer and subject names are equal (a root, or a self-issued CA certificate).
    pub(crate) fn is_self_issued(&self) -> bool {
        self.parsed.tbs_certificate.issuer == self.parsed.tbs_certificate.subject
    }

    /// The basicConstraints extension says this is a CA.
    pub(crate) fn is_ca(&self) -> bool {
        self.extension(OID_BASIC_CONSTRAINTS)
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// True if the EKU extension lists code signing.
    pub(crate) fn has_code_signing_eku(&self) -> bool {
        self.extension(OID_EXT_KEY_USAGE)
            .and_then(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|eku| eku.0.contains(&OID_EKU_CODE_SIGNING))
    }

    /// The subjectKeyIdentifier, if present.
    pub(crate) fn subject_key_id(&self) -> Option<Vec<u8>> {
        let e = self.extension(OID_SUBJECT_KEY_ID)?;
        SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok().map(|s| s.0.as_bytes().to_vec())
    }

    /// Subject alternative names usable as a Sigstore identity: email addresses, URIs and the
    /// Fulcio username otherName.
    pub(crate) fn identities(&self) -> Result<Vec<String>, String> {
        let Some(ext) = self.extension(OID_SAN) else {
            return Ok(Vec::new());
        };
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("the subjectAltName extension is malformed: {e}"))?;
        let mut out = Vec::new();
        for name in san.0 {
            match name {
                GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => out.push(s.to_string()),
                GeneralName::OtherName(other) if other.type_id == OID_FULCIO_USERNAME => {
                    if let Ok(s) = other.value.decode_as::<String>() {
                        out.push(s);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The OIDC issuer Fulcio recorded. When both extensions are present they must agree.
    pub(crate) fn oidc_issuer(&self) -> Result<Option<String>, String> {
        let v1 = match self.extension(OID_FULCIO_ISSUER_V1) {
            Some(e) => Some(
                String::from_utf8(e.extn_value.as_bytes().to_vec())
                    .map_err(|_| "the Fulcio issuer extension 1.3.6.1.4.1.57264.1.1 is not UTF-8".to_string())?,
            ),
            None => None,
        };
        let v2 = match self.extension(OID_FULCIO_ISSUER_V2) {
            Some(e) => {
                let (tlv, _) = der::expect(e.extn_value.as_bytes(), der::UTF8_STRING)
                    .filter(|(_, rest)| rest.is_empty())
                    .ok_or("the Fulcio issuer extension 1.3.6.1.4.1.57264.1.8 is not a DER UTF8String")?;
                Some(
                    String::from_utf8(tlv.value.to_vec())
                        .map_err(|_| "the Fulcio issuer extension 1.3.6.1.4.1.57264.1.8 is not UTF-8".to_string())?,
                )
            }
            None => None,
        };
        match (v1, v2) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "the Fulcio issuer extensions disagree: 1.3.6.1.4.1.57264.1.1 says {a:?}, 1.3.6.1.4.1.57264.1.8 says {b:?}"
            )),
            (_, Some(b)) => Ok(Some(b)),
            (a, None) => Ok(a),
        }
    }

    /// True if `t` is inside notBefore..=notAfter.
    pub(crate) fn valid_at(&self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

fn unix_time(t: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.max(0) as u64))
}

/// Validates `leaf` against the certificate authorities of the trusted root at time `t`:
/// some authority whose validity window holds `t` must anchor a path (its own intermediates
/// plus `extra_intermediates`) that webpki accepts at `t` for the given EKU. Returns the
/// authority's URI (or the anchor's subject) on success.
pub(crate) fn verify_chain(
    leaf: &Cert,
    extra_intermediates: &[Cert],
    authorities: &[CertificateAuthority],
    t: i64,
    eku: &'static [u8],
) -> Result<String, String> {
    let candidates: Vec<&CertificateAuthority> = authorities.iter().filter(|a| a.valid_for.contains(t)).collect();
    if candidates.is_empty() {
        return Err(format!(
            "none of the {} certificate authorities of the trusted root is valid at {}",
            authorities.len(),
            encoding::format_time(t)
        ));
    }
    let leaf_der = CertificateDer::from(leaf.der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("certificate {:?} cannot be processed: {e}", leaf.subject))?;
    let mut errors = Vec::new();
    for ca in candidates {
        let Some((root, inner)) = ca.chain.split_last() else {
            continue;
        };
        // A single-certificate authority whose certificate *is* the leaf (a self-signed TSA).
        if inner.is_empty() && root.der == leaf.der {
            if leaf.valid_at(t) {
                return Ok(ca.label());
            }
            errors.push(format!("{}: the certificate is not valid at {}", ca.label(), encoding::format_time(t)));
            continue;
        }
        let root_der = CertificateDer::from(root.der.as_slice());
        let anchor = match webpki::anchor_from_trusted_cert(&root_der) {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{}: its root cannot be used as a trust anchor: {e}", ca.label()));
                continue;
            }
        };
        let intermediates: Vec<CertificateDer<'_>> = inner
            .iter()
            .chain(extra_intermediates)
            .filter(|c| c.der != root.der && c.der != leaf.der)
            .map(|c| CertificateDer::from(c.der.as_slice()))
            .collect();
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &intermediates,
            unix_time(t),
            webpki::KeyUsage::required_if_present(eku),
            None,
            None,
        ) {
            Ok(_) => return Ok(ca.label()),
            Err(e) => errors.push(format!("{}: {e}", ca.label())),
        }
    }
    Err(format!(
        "certificate {:?} (issuer {:?}) does not chain to a trusted certificate authority at {}: {}",
        leaf.subject,
        leaf.parsed.tbs_certificate.issuer.to_string(),
        encoding::format_time(t),
        errors.join("; ")
    ))
}
