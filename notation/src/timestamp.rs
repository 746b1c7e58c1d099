//! RFC 3161 timestamp countersignatures (`io.cncf.notary.timestampSignature`).
//!
//! A token is a CMS SignedData over a TSTInfo. Verification here: the message imprint is the
//! hash of the envelope's signature bytes; the single SignerInfo carries the contentType,
//! messageDigest and ESS signing-certificate(-v2) attributes and they match; its signature
//! verifies with the TSA certificate's key; the TSA certificate meets the time-stamping leaf
//! profile; and rustls-webpki builds its chain to a `tsa` trust store anchor at the time of the
//! stamp, requiring the time-stamping EKU. Revocation of the TSA chain is not checked (offline).

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use thiserror::Error;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::{Decode, Encode};
use x509_tsp::TstInfo;

use crate::cert::{Cert, Curve, EKU_TIME_STAMPING, KeySpec, Purpose};
use crate::der::{self, tag};

/// Largest timestamp token accepted.
pub(crate) const MAX_TOKEN_BYTES: usize = 256 * 1024;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_SIGNING_CERT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
const OID_SIGNING_CERT_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SHA384_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_SHA512_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
/// ETSI baseline time-stamp policy (RFC 3628): an accuracy of one second when none is stated.
const OID_BASELINE_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.2023.1.1");

/// Why a timestamp countersignature was not accepted.
#[derive(Debug, Error)]
pub(crate) enum TimestampError {
    #[error("timestamp token is {0} bytes, more than the {MAX_TOKEN_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("timestamp token is malformed: {0}")]
    Malformed(String),
    #[error("timestamp token does not cover this signature: {0}")]
    Imprint(String),
    #[error("timestamp token signature is invalid: {0}")]
    Signature(String),
    #[error("timestamp signing certificate is not acceptable: {0}")]
    Certificate(String),
    #[error("timestamp signing certificate is not trusted by the policy's tsa trust stores: {0}")]
    Untrusted(String),
}

/// A verified timestamp: the stamped time as a range (RFC 3161 accuracy applied), in
/// milliseconds since the epoch.
#[derive(Clone, Debug)]
pub(crate) struct VerifiedTimestamp {
    /// `genTime` rounded down to the second.
    pub gen_time: i64,
    /// Earliest time the stamp can stand for.
    pub lower_ms: i64,
    /// Latest time the stamp can stand for.
    pub upper_ms: i64,
    /// Subject of the TSA certificate.
    pub tsa_subject: String,
}

fn malformed(what: impl Into<String>) -> TimestampError {
    TimestampError::Malformed(what.into())
}

fn digest_alg(oid: &ObjectIdentifier) -> Option<&'static digest::Algorithm> {
    match *oid {
        OID_SHA256 => Some(&digest::SHA256),
        OID_SHA384 => Some(&digest::SHA384),
        OID_SHA512 => Some(&digest::SHA512),
        _ => None,
    }
}

/// Verifies `token` as a countersignature over `signature` with the given TSA anchors.
pub(crate) fn verify(
    token: &[u8],
    signature: &[u8],
    anchors: &[TrustAnchor<'static>],
) -> Result<VerifiedTimestamp, TimestampError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TimestampError::TooLarge(token.len()));
    }
    let ci = ContentInfo::from_der(token).map_err(|e| malformed(format!("not a CMS ContentInfo: {e}")))?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(malformed(format!("content type {} is not SignedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(|e| malformed(format!("SignedData: {e}")))?;
    if sd.encap_content_info.econtent_type != OID_TST_INFO {
        return Err(malformed(format!("encapsulated content {} is not TSTInfo", sd.encap_content_info.econtent_type)));
    }
    let econtent: OctetString = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| malformed("the TSTInfo content is absent"))?
        .decode_as()
        .map_err(|e| malformed(format!("eContent: {e}")))?;
    let tst_der = econtent.as_bytes();
    let (tst, fraction_ms) = decode_tst_info(tst_der)?;

    // Message imprint: hash of the envelope's signature value.
    let imprint_alg = digest_alg(&tst.message_imprint.hash_algorithm.oid).ok_or_else(|| {
        TimestampError::Imprint(format!(
            "hash algorithm {} is not SHA-256, SHA-384 or SHA-512",
            tst.message_imprint.hash_algorithm.oid
        ))
    })?;
    if digest::digest(imprint_alg, signature).as_ref() != tst.message_imprint.hashed_message.as_bytes() {
        return Err(TimestampError::Imprint("the message imprint is not the hash of the signature".into()));
    }

    // The single SignerInfo and its signed attributes.
    let signer_infos = &sd.signer_infos.0;
    if signer_infos.len() != 1 {
        return Err(malformed(format!("expected exactly one SignerInfo, found {}", signer_infos.len())));
    }
    let si = signer_infos.get(0).ok_or_else(|| malformed("no SignerInfo"))?;
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| malformed("the SignerInfo has no signed attributes"))?;
    let attr = |oid: ObjectIdentifier| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.get(0));
    let content_type: ObjectIdentifier = attr(OID_CONTENT_TYPE)
        .ok_or_else(|| malformed("the contentType signed attribute is missing"))?
        .decode_as()
        .map_err(|e| malformed(format!("contentType attribute: {e}")))?;
    if content_type != OID_TST_INFO {
        return Err(malformed(format!("the contentType attribute {content_type} is not TSTInfo")));
    }
    let message_digest: OctetString = attr(OID_MESSAGE_DIGEST)
        .ok_or_else(|| malformed("the messageDigest signed attribute is missing"))?
        .decode_as()
        .map_err(|e| malformed(format!("messageDigest attribute: {e}")))?;
    let si_digest = digest_alg(&si.digest_alg.oid).ok_or_else(|| {
        TimestampError::Signature(format!("digest algorithm {} is not SHA-256, SHA-384 or SHA-512", si.digest_alg.oid))
    })?;
    if digest::digest(si_digest, tst_der).as_ref() != message_digest.as_bytes() {
        return Err(TimestampError::Signature("the messageDigest attribute does not match the TSTInfo".into()));
    }

    // Certificates carried in the token; find the signer's.
    let mut certs = Vec::new();
    for (i, choice) in sd.certificates.iter().flat_map(|set| set.0.iter()).enumerate() {
        if let CertificateChoices::Certificate(c) = choice {
            let der = c.to_der().map_err(|e| malformed(format!("certificate {i}: {e}")))?;
            certs.push(Cert::from_der(&der, i).map_err(|e| malformed(e.to_string()))?);
        }
    }
    let signer = certs
        .iter()
        .position(|c| match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                c.parsed.tbs_certificate.issuer == ias.issuer
                    && c.parsed.tbs_certificate.serial_number == ias.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => c.subject_key_id().as_deref() == Some(ski.0.as_bytes()),
        })
        .ok_or_else(|| TimestampError::Certificate("the token does not carry the TSA's signing certificate".into()))?;
    let tsa = &certs[signer];

    check_signing_certificate_attribute(tsa, &attr)?;

    let signed_attrs_der = attrs.to_der().map_err(|e| malformed(format!("signed attributes: {e}")))?;
    let alg = signer_info_algorithm(&si.signature_algorithm, &si.digest_alg.oid, &tsa.key)?;
    UnparsedPublicKey::new(alg, &tsa.public_key)
        .verify(&signed_attrs_der, si.signature.as_bytes())
        .map_err(|_| TimestampError::Signature("the SignerInfo signature does not verify with the TSA key".into()))?;

    tsa.validate_leaf(Purpose::TimeStamping).map_err(|e| TimestampError::Certificate(e.to_string()))?;

    // Chain to a tsa anchor at the stamped time.
    let gen_time = tst.gen_time.to_unix_duration().as_secs() as i64;
    let ee_der = CertificateDer::from(tsa.der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&ee_der)
        .map_err(|e| TimestampError::Certificate(format!("{:?}: {e}", tsa.subject)))?;
    let intermediates: Vec<CertificateDer<'_>> = certs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != signer)
        .map(|(_, c)| CertificateDer::from(c.der.as_slice()))
        .collect();
    if anchors.is_empty() {
        return Err(TimestampError::Untrusted("the trust policy's tsa stores hold no certificates".into()));
    }
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        &intermediates,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(gen_time.max(0) as u64)),
        // `required` would also demand the EKU on CA certificates; the TSA certificate's own
        // EKU (exactly timeStamping, critical) is enforced by `validate_leaf` above.
        webpki::KeyUsage::required_if_present(EKU_TIME_STAMPING),
        None,
        None,
    )
    .map_err(|e| {
        let why = match e {
            webpki::Error::UnknownIssuer => "certificate signed by unknown authority (UnknownIssuer)".to_string(),
            other => other.to_string(),
        };
        TimestampError::Untrusted(format!("{:?} (issuer {:?}): {why}", tsa.subject, tsa.issuer()))
    })?;

    // Accuracy (RFC 3161 2.4.2); baseline policy means one second when unstated.
    let accuracy_ms: i64 = match &tst.accuracy {
        Some(acc) => {
            let secs = acc.seconds.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX / 2_000));
            let millis = i64::from(acc.millis.unwrap_or(0).max(0));
            let micros = i64::from(acc.micros.unwrap_or(0).max(0));
            secs.saturating_mul(1000) + millis + (micros + 999) / 1000
        }
        None if tst.policy == OID_BASELINE_POLICY => 1000,
        None => 0,
    };
    let (frac_floor, frac_ceil) = fraction_ms;
    let stamped_lo = gen_time * 1000 + frac_floor;
    let stamped_hi = gen_time * 1000 + frac_ceil;
    Ok(VerifiedTimestamp {
        gen_time,
        lower_ms: stamped_lo - accuracy_ms,
        upper_ms: stamped_hi + accuracy_ms,
        tsa_subject: tsa.subject.clone(),
    })
}

/// Decodes a TSTInfo. der 0.7 refuses fractional seconds in GeneralizedTime, which RFC 3161
/// allows; such a genTime is rewritten without its fraction before decoding, and the fraction
/// is returned as (floor, ceil) milliseconds.
fn decode_tst_info(der_bytes: &[u8]) -> Result<(TstInfo, (i64, i64)), TimestampError> {
    let err = |e: x509_cert::der::Error| malformed(format!("TSTInfo: {e}"));
    let Some((seq, _)) = der::expect(der_bytes, tag::SEQUENCE) else {
        return TstInfo::from_der(der_bytes).map(|t| (t, (0, 0))).map_err(err);
    };
    let children = der::children(seq.value).ok_or_else(|| malformed("TSTInfo is not valid DER"))?;
    let Some(pos) = children.iter().position(|c| c.tag == tag::GENERALIZED_TIME) else {
        return TstInfo::from_der(der_bytes).map(|t| (t, (0, 0))).map_err(err);
    };
    let time = children[pos].value;
    let Some(dot) = time.iter().position(|&b| b == b'.') else {
        return TstInfo::from_der(der_bytes).map(|t| (t, (0, 0))).map_err(err);
    };
    let (whole, rest) = time.split_at(dot);
    let digits = rest.get(1..rest.len().saturating_sub(1)).unwrap_or_default();
    if rest.last() != Some(&b'Z') || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed("TSTInfo genTime has a malformed fraction"));
    }
    let mut ms = 0i64;
    for (i, d) in digits.iter().take(3).enumerate() {
        ms += i64::from(d - b'0') * [100, 10, 1][i];
    }
    let ceil = if digits.iter().skip(3).any(|&d| d != b'0') { ms + 1 } else { ms };
    let mut new_time = whole.to_vec();
    new_time.push(b'Z');
    let mut body = Vec::with_capacity(seq.value.len());
    for (i, c) in children.iter().enumerate() {
        if i == pos {
            body.push(tag::GENERALIZED_TIME);
            der::encode_len(new_time.len(), &mut body);
            body.extend_from_slice(&new_time);
        } else {
            body.extend_from_slice(c.full);
        }
    }
    let mut rebuilt = vec![tag::SEQUENCE];
    der::encode_len(body.len(), &mut rebuilt);
    rebuilt.extend_from_slice(&body);
    TstInfo::from_der(&rebuilt).map(|t| (t, (ms, ceil))).map_err(err)
}

/// The ESS signing-certificate(-v2) attribute must be present and name the signer's certificate.
fn check_signing_certificate_attribute<'a>(
    tsa: &Cert,
    attr: &impl Fn(ObjectIdentifier) -> Option<&'a x509_cert::der::Any>,
) -> Result<(), TimestampError> {
    let bad = |what: &str| TimestampError::Certificate(format!("ESS signing certificate attribute: {what}"));
    let (value, v2) = match (attr(OID_SIGNING_CERT_V2), attr(OID_SIGNING_CERT)) {
        (Some(v), _) => (v, true),
        (None, Some(v)) => (v, false),
        (None, None) => return Err(bad("missing (RFC 3161 requires signingCertificate or signingCertificateV2)")),
    };
    let encoded = value.to_der().map_err(|e| bad(&e.to_string()))?;
    // SigningCertificate(V2) ::= SEQUENCE { certs SEQUENCE OF ESSCertID(v2), policies OPTIONAL }
    let first_id = der::expect(&encoded, tag::SEQUENCE)
        .and_then(|(outer, _)| der::expect(outer.value, tag::SEQUENCE))
        .and_then(|(certs, _)| der::expect(certs.value, tag::SEQUENCE))
        .map(|(id, _)| id)
        .ok_or_else(|| bad("malformed"))?;
    let fields = der::children(first_id.value).ok_or_else(|| bad("malformed ESSCertID"))?;
    let (hash_alg, hash) = match (v2, fields.first()) {
        (true, Some(f)) if f.tag == tag::SEQUENCE => {
            let oid = der::expect(f.value, tag::OID).ok_or_else(|| bad("malformed hash algorithm"))?.0;
            let oid = ObjectIdentifier::from_bytes(oid.value).map_err(|_| bad("malformed hash algorithm"))?;
            let alg = digest_alg(&oid).ok_or_else(|| bad(&format!("hash algorithm {oid} is not supported")))?;
            (alg, fields.get(1))
        }
        (true, first) => (&digest::SHA256, first),
        (false, first) => (&digest::SHA1_FOR_LEGACY_USE_ONLY, first),
    };
    let hash = hash.filter(|h| h.tag == tag::OCTET_STRING).ok_or_else(|| bad("certHash is missing"))?;
    if digest::digest(hash_alg, &tsa.der).as_ref() != hash.value {
        return Err(bad("certHash does not match the certificate that signed the token"));
    }
    Ok(())
}

fn signer_info_algorithm(
    alg: &x509_cert::spki::AlgorithmIdentifierOwned,
    digest_oid: &ObjectIdentifier,
    key: &KeySpec,
) -> Result<&'static dyn VerificationAlgorithm, TimestampError> {
    let unsupported = || {
        TimestampError::Signature(format!("signature algorithm {} with digest {digest_oid} is not supported", alg.oid))
    };
    let hash_of = |oid: &ObjectIdentifier| match *oid {
        OID_SHA256 => Some(256),
        OID_SHA384 => Some(384),
        OID_SHA512 => Some(512),
        _ => None,
    };
    let rsa_pkcs1 = |h: u16| -> Option<&'static dyn VerificationAlgorithm> {
        match h {
            256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
            384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
            512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        }
    };
    let ecdsa = |h: u16| -> Option<&'static dyn VerificationAlgorithm> {
        match (key, h) {
            (KeySpec::Ec(Curve::P256), 256) => Some(&sig::ECDSA_P256_SHA256_ASN1),
            (KeySpec::Ec(Curve::P256), 384) => Some(&sig::ECDSA_P256_SHA384_ASN1),
            (KeySpec::Ec(Curve::P256), 512) => Some(&sig::ECDSA_P256_SHA512_ASN1),
            (KeySpec::Ec(Curve::P384), 256) => Some(&sig::ECDSA_P384_SHA256_ASN1),
            (KeySpec::Ec(Curve::P384), 384) => Some(&sig::ECDSA_P384_SHA384_ASN1),
            (KeySpec::Ec(Curve::P384), 512) => Some(&sig::ECDSA_P384_SHA512_ASN1),
            (KeySpec::Ec(Curve::P521), 256) => Some(&sig::ECDSA_P521_SHA256_ASN1),
            (KeySpec::Ec(Curve::P521), 384) => Some(&sig::ECDSA_P521_SHA384_ASN1),
            (KeySpec::Ec(Curve::P521), 512) => Some(&sig::ECDSA_P521_SHA512_ASN1),
            _ => None,
        }
    };
    let is_rsa = matches!(key, KeySpec::Rsa { .. });
    let found = match alg.oid {
        OID_RSA if is_rsa => hash_of(digest_oid).and_then(rsa_pkcs1),
        OID_SHA256_RSA if is_rsa => rsa_pkcs1(256),
        OID_SHA384_RSA if is_rsa => rsa_pkcs1(384),
        OID_SHA512_RSA if is_rsa => rsa_pkcs1(512),
        OID_RSA_PSS if is_rsa => {
            let params = alg.parameters.as_ref().and_then(|p| p.to_der().ok());
            let hash = params.as_deref().and_then(pss_hash).and_then(|o| hash_of(&o));
            match hash {
                Some(256) => Some(&sig::RSA_PSS_2048_8192_SHA256 as &'static dyn VerificationAlgorithm),
                Some(384) => Some(&sig::RSA_PSS_2048_8192_SHA384 as &'static dyn VerificationAlgorithm),
                Some(512) => Some(&sig::RSA_PSS_2048_8192_SHA512 as &'static dyn VerificationAlgorithm),
                _ => None,
            }
        }
        OID_EC_PUBLIC_KEY => hash_of(digest_oid).and_then(ecdsa),
        OID_ECDSA_SHA256 => ecdsa(256),
        OID_ECDSA_SHA384 => ecdsa(384),
        OID_ECDSA_SHA512 => ecdsa(512),
        _ => None,
    };
    found.ok_or_else(unsupported)
}

/// The hash OID inside RSASSA-PSS-params (`[0] EXPLICIT AlgorithmIdentifier`; SHA-1 by default,
/// which is refused by returning it and letting the caller find no algorithm).
fn pss_hash(params: &[u8]) -> Option<ObjectIdentifier> {
    let (seq, _) = der::expect(params, tag::SEQUENCE)?;
    let fields = der::children(seq.value)?;
    match fields.iter().find(|f| f.tag == tag::CONTEXT_0) {
        None => Some(OID_SHA1),
        Some(f) => {
            let (alg, _) = der::expect(f.value, tag::SEQUENCE)?;
            let (oid, _) = der::expect(alg.value, tag::OID)?;
            ObjectIdentifier::from_bytes(oid.value).ok()
        }
    }
}
