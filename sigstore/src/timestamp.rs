//! RFC 3161 timestamps as Sigstore bundles carry them (`timestampVerificationData.
//! rfc3161Timestamps[].signedTimestamp`, a DER TimeStampResp or bare token) and cosign's
//! `dev.sigstore.cosign/rfc3161timestamp` annotation.
//!
//! A timestamp is accepted when: its message imprint is the hash of the signature bytes; its
//! single SignerInfo has the contentType and messageDigest signed attributes, and the
//! messageDigest is the hash of the TSTInfo; the SignerInfo identifies the leaf certificate of
//! a timestamp authority of the trusted root and verifies with its key; that authority's chain
//! is valid at the stamped time (webpki, time-stamping EKU) and its validity window holds the
//! time; and the time is not in the future. Certificates embedded in the token are never
//! trusted by themselves. Revocation is not checked (offline).
//!
//! This is separate from `pullgate-notation`'s timestamp verifier on purpose: Sigstore tokens
//! usually carry no certificates (the TSA chain comes from the trusted root), and the Notary
//! Project's certificate profile rules do not apply.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};

use crate::certs::{self, Cert, EKU_TIME_STAMPING};
use crate::encoding::{self, der};
use crate::keys::Hash;
use crate::outcome::{Failure, FailureClass, fail};
use crate::trust::TrustedRoot;

/// Largest timestamp response accepted.
pub(crate) const MAX_TIMESTAMP_BYTES: usize = 256 * 1024;
/// A stamped time may be this far ahead of the verifier's clock.
const CLOCK_SKEW_SECS: i64 = 300;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SHA384_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_SHA512_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

/// A timestamp that passed every check.
#[derive(Clone, Debug)]
pub(crate) struct VerifiedTimestamp {
    /// `genTime`, Unix seconds (fraction dropped).
    pub time: i64,
    /// Which timestamp authority of the trusted root issued it.
    pub authority: String,
}

fn malformed(r: impl Into<String>) -> Failure {
    fail(FailureClass::Timestamp, format!("the RFC 3161 timestamp is malformed: {}", r.into()))
}

fn hash_of(oid: &ObjectIdentifier) -> Option<Hash> {
    match *oid {
        OID_SHA256 => Some(Hash::Sha256),
        OID_SHA384 => Some(Hash::Sha384),
        OID_SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// The token (ContentInfo) inside a TimeStampResp, or the input if it already is a token.
fn unwrap_response(input: &[u8]) -> Result<&[u8], Failure> {
    let (outer, _) = der::expect(input, der::SEQUENCE).ok_or_else(|| malformed("not a DER SEQUENCE"))?;
    let kids = der::children(outer.value).ok_or_else(|| malformed("invalid DER"))?;
    match kids.as_slice() {
        // TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken OPTIONAL }
        [status, token, ..] if status.tag == der::SEQUENCE => {
            let (code, _) = der::expect(status.value, der::INTEGER).ok_or_else(|| malformed("PKIStatusInfo"))?;
            // granted (0) or grantedWithMods (1)
            if !matches!(code.value, [0] | [1]) {
                return Err(fail(FailureClass::Timestamp, "the timestamp response does not grant a timestamp"));
            }
            Ok(token.full)
        }
        [status] if status.tag == der::SEQUENCE => {
            Err(fail(FailureClass::Timestamp, "the timestamp response carries no timestamp token"))
        }
        _ => Ok(input),
    }
}

/// Parsed parts of a TSTInfo: imprint algorithm and value, and genTime.
struct TstInfo {
    imprint_hash: Hash,
    imprint: Vec<u8>,
    gen_time: i64,
}

/// Parses `YYYYMMDDHHMMSS[.fff]Z`.
fn parse_generalized_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| whole[r].parse::<u32>().ok();
    encoding::from_civil(i64::from(n(0..4)?), n(4..6)?, n(6..8)?, n(8..10)?, n(10..12)?, n(12..14)?)
}

fn parse_tst_info(bytes: &[u8]) -> Result<TstInfo, Failure> {
    let (seq, _) = der::expect(bytes, der::SEQUENCE).ok_or_else(|| malformed("TSTInfo is not a SEQUENCE"))?;
    let f = der::children(seq.value).ok_or_else(|| malformed("TSTInfo is not valid DER"))?;
    // version, policy, messageImprint, serialNumber, genTime, …
    let [version, policy, imprint, serial, gen_time, ..] = f.as_slice() else {
        return Err(malformed("TSTInfo has too few fields"));
    };
    if version.tag != der::INTEGER || policy.tag != der::OID || serial.tag != der::INTEGER {
        return Err(malformed("TSTInfo fields are out of order"));
    }
    let parts = (imprint.tag == der::SEQUENCE).then(|| der::children(imprint.value)).flatten();
    let [alg, hashed] = parts.as_deref().unwrap_or_default() else {
        return Err(malformed("messageImprint"));
    };
    let (oid, _) = der::expect(alg.value, der::OID).ok_or_else(|| malformed("messageImprint algorithm"))?;
    let oid = ObjectIdentifier::from_bytes(oid.value).map_err(|_| malformed("messageImprint algorithm OID"))?;
    let imprint_hash = hash_of(&oid).ok_or_else(|| {
        fail(FailureClass::Timestamp, format!("the timestamp's imprint uses hash {oid}, not SHA-256/384/512"))
    })?;
    if hashed.tag != der::OCTET_STRING {
        return Err(malformed("messageImprint hash"));
    }
    if gen_time.tag != der::GENERALIZED_TIME {
        return Err(malformed("genTime"));
    }
    let gen_time = parse_generalized_time(gen_time.value).ok_or_else(|| malformed("genTime is not a valid time"))?;
    Ok(TstInfo { imprint_hash, imprint: hashed.value.to_vec(), gen_time })
}

/// The exact bytes the SignerInfo signature covers: its `[0] IMPLICIT` signedAttrs re-tagged
/// as a universal SET (RFC 5652 §5.4), taken from the token as received.
fn signed_attrs_bytes(token: &[u8]) -> Option<Vec<u8>> {
    let (ci, _) = der::expect(token, der::SEQUENCE)?;
    let ci = der::children(ci.value)?;
    let content = ci.get(1).filter(|c| c.tag == 0xa0)?;
    let (sd, _) = der::expect(content.value, der::SEQUENCE)?;
    let sd = der::children(sd.value)?;
    let signer_infos = sd.last().filter(|s| s.tag == 0x31)?;
    let infos = der::children(signer_infos.value)?;
    let si = infos.first().filter(|s| s.tag == der::SEQUENCE)?;
    let fields = der::children(si.value)?;
    let attrs = fields.iter().find(|f| f.tag == 0xa0)?;
    let mut out = attrs.full.to_vec();
    out[0] = 0x31;
    Some(out)
}

/// Verifies `response` as a timestamp over `signature` against the trusted root's timestamp
/// authorities, at wall-clock `now` (Unix seconds).
pub(crate) fn verify(
    response: &[u8],
    signature: &[u8],
    root: &TrustedRoot,
    now: i64,
) -> Result<VerifiedTimestamp, Failure> {
    if response.len() > MAX_TIMESTAMP_BYTES {
        return Err(malformed(format!("{} bytes, more than the {MAX_TIMESTAMP_BYTES}-byte limit", response.len())));
    }
    let token = unwrap_response(response)?;
    let ci = ContentInfo::from_der(token).map_err(|e| malformed(format!("not a CMS ContentInfo: {e}")))?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(malformed(format!("content type {} is not SignedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(|e| malformed(format!("SignedData: {e}")))?;
    if sd.encap_content_info.econtent_type != OID_TST_INFO {
        return Err(malformed("the encapsulated content is not a TSTInfo"));
    }
    let econtent: OctetString = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| malformed("the TSTInfo is absent"))?
        .decode_as()
        .map_err(|e| malformed(format!("eContent: {e}")))?;
    let tst_der = econtent.as_bytes();
    let tst = parse_tst_info(tst_der)?;

    if tst.imprint_hash.digest(signature) != tst.imprint {
        return Err(fail(
            FailureClass::Timestamp,
            "the timestamp's message imprint is not the hash of this signature (a timestamp for something else)",
        ));
    }

    let infos = &sd.signer_infos.0;
    if infos.len() != 1 {
        return Err(malformed(format!("{} SignerInfos, expected exactly one", infos.len())));
    }
    let si = infos.get(0).ok_or_else(|| malformed("no SignerInfo"))?;
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| malformed("the SignerInfo has no signed attributes"))?;
    let attr = |oid: ObjectIdentifier| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.get(0));
    let content_type: ObjectIdentifier = attr(OID_CONTENT_TYPE)
        .ok_or_else(|| malformed("the contentType signed attribute is missing"))?
        .decode_as()
        .map_err(|e| malformed(format!("contentType attribute: {e}")))?;
    if content_type != OID_TST_INFO {
        return Err(malformed("the contentType signed attribute is not TSTInfo"));
    }
    let message_digest: OctetString = attr(OID_MESSAGE_DIGEST)
        .ok_or_else(|| malformed("the messageDigest signed attribute is missing"))?
        .decode_as()
        .map_err(|e| malformed(format!("messageDigest attribute: {e}")))?;
    let digest_hash = hash_of(&si.digest_alg.oid).ok_or_else(|| {
        malformed(format!("SignerInfo digest algorithm {} is not SHA-256/384/512", si.digest_alg.oid))
    })?;
    if digest_hash.digest(tst_der) != message_digest.as_bytes() {
        return Err(fail(
            FailureClass::Timestamp,
            "the timestamp's messageDigest attribute does not match its TSTInfo",
        ));
    }
    let sig_hash = match si.signature_algorithm.oid {
        OID_ECDSA_SHA256 | OID_SHA256_RSA => Hash::Sha256,
        OID_ECDSA_SHA384 | OID_SHA384_RSA => Hash::Sha384,
        OID_ECDSA_SHA512 | OID_SHA512_RSA => Hash::Sha512,
        _ => digest_hash,
    };
    let signed_attrs = signed_attrs_bytes(token).ok_or_else(|| malformed("cannot locate the signed attributes"))?;

    // The signer must be the leaf of a timestamp authority in the trusted root.
    let matches_leaf = |leaf: &Cert| match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            leaf.parsed.tbs_certificate.issuer == ias.issuer
                && leaf.parsed.tbs_certificate.serial_number == ias.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => leaf.subject_key_id().as_deref() == Some(ski.0.as_bytes()),
    };
    let signer_name = match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => format!("a certificate issued by {:?}", ias.issuer.to_string()),
        SignerIdentifier::SubjectKeyIdentifier(_) => "a certificate named by key identifier".to_string(),
    };
    let tsas = root.timestamp_authorities();
    let candidates: Vec<_> = tsas.iter().filter(|a| a.chain.first().is_some_and(matches_leaf)).collect();
    if candidates.is_empty() {
        return Err(fail(
            FailureClass::UntrustedTsa,
            format!(
                "the timestamp is signed by {signer_name}, which is not one of the {} timestamp authorities of the trusted root{}",
                tsas.len(),
                if sd.certificates.is_some() { " (certificates embedded in the token are not trusted)" } else { "" }
            ),
        ));
    }
    let mut errors = Vec::new();
    for tsa in candidates {
        let leaf = &tsa.chain[0];
        if !leaf.key.verify_with_hash(&signed_attrs, si.signature.as_bytes(), sig_hash) {
            errors.push((
                FailureClass::Timestamp,
                format!("the timestamp signature does not verify with the key of {}", tsa.label()),
            ));
            continue;
        }
        if !tsa.valid_for.contains(tst.gen_time) {
            errors.push((
                FailureClass::UntrustedTsa,
                format!("timestamp authority {} was not valid at {}", tsa.label(), encoding::format_time(tst.gen_time)),
            ));
            continue;
        }
        let single = std::slice::from_ref(tsa);
        if let Err(e) = certs::verify_chain(leaf, &[], single, tst.gen_time, EKU_TIME_STAMPING) {
            errors.push((FailureClass::UntrustedTsa, format!("the timestamp authority's chain: {e}")));
            continue;
        }
        if tst.gen_time > now + CLOCK_SKEW_SECS {
            return Err(fail(
                FailureClass::Timestamp,
                format!("the timestamp's time {} is in the future", encoding::format_time(tst.gen_time)),
            ));
        }
        return Ok(VerifiedTimestamp { time: tst.gen_time, authority: tsa.label() });
    }
    let class = errors.first().map_or(FailureClass::UntrustedTsa, |e| e.0);
    Err(fail(class, errors.into_iter().map(|e| e.1).collect::<Vec<_>>().join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_with_and_without_fraction() {
        assert_eq!(parse_generalized_time(b"20250612120218Z"), encoding::parse_rfc3339("2025-06-12T12:02:18Z"));
        assert_eq!(parse_generalized_time(b"20250612120218.123Z"), encoding::parse_rfc3339("2025-06-12T12:02:18Z"));
        assert_eq!(parse_generalized_time(b"20250612120218.Z"), None);
        assert_eq!(parse_generalized_time(b"20250612120218"), None);
        assert_eq!(parse_generalized_time(b"2025061212021Z"), None);
    }
}
