//! X.509 certificates as the Notary Project uses them: parsing, subject names, key specs, the
//! issuance check between two certificates, and the certificate profile rules of the signature
//! specification ("Certificate Requirements") for code-signing and time-stamping chains.
//!
//! Chain building against a trust store is not done here: `verify` hands the chain to
//! rustls-webpki. This module checks what webpki does not: the order of the chain in the
//! envelope, the self-signed root at its end, key usage bits, basic constraints on the leaf,
//! the Notary Project EKU exclusions and key sizes.

use std::fmt::Write as _;

use thiserror::Error;
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier};

use crate::der::{self, tag};
use crate::time::UnixSeconds;

/// DER value bytes of the code-signing EKU, 1.3.6.1.5.5.7.3.3.
pub(crate) const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// DER value bytes of the time-stamping EKU, 1.3.6.1.5.5.7.3.8.
pub(crate) const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

const OID_EKU_ANY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
const OID_EKU_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const OID_EKU_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_EKU_EMAIL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const OID_EKU_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const OID_EKU_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Largest certificate accepted anywhere (envelope chains, trust stores, timestamp tokens).
pub(crate) const MAX_CERT_BYTES: usize = 64 * 1024;

/// What went wrong with a certificate or a chain.
#[derive(Debug, Error)]
pub(crate) enum CertError {
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate #{index} is not a valid DER X.509 certificate: {source}")]
    Parse {
        /// Position in the chain or file (0-based).
        index: usize,
        /// The decoder's error.
        #[source]
        source: x509_cert::der::Error,
    },
    /// The certificate is larger than [`MAX_CERT_BYTES`].
    #[error("certificate #{index} is {len} bytes, more than the {MAX_CERT_BYTES}-byte limit")]
    TooLarge {
        /// Position in the chain or file (0-based).
        index: usize,
        /// Its size.
        len: usize,
    },
    /// A rule about one certificate or about the chain is broken.
    #[error("certificate with subject {subject:?}: {reason}")]
    Invalid {
        /// Subject of the offending certificate.
        subject: String,
        /// The rule that is broken.
        reason: String,
    },
}

impl CertError {
    fn invalid(cert: &Cert, reason: impl Into<String>) -> Self {
        CertError::Invalid { subject: cert.subject.clone(), reason: reason.into() }
    }
}

/// Named elliptic curves the Notary Project allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

/// The kind and size of a certificate's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeySpec {
    Rsa { bits: usize },
    Ec(Curve),
    Unsupported(String),
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeySpec::Ec(Curve::P256) => f.write_str("EC P-256"),
            KeySpec::Ec(Curve::P384) => f.write_str("EC P-384"),
            KeySpec::Ec(Curve::P521) => f.write_str("EC P-521"),
            KeySpec::Unsupported(what) => write!(f, "unsupported key ({what})"),
        }
    }
}

/// The purpose a leaf certificate is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    CodeSigning,
    TimeStamping,
}

/// A parsed certificate that keeps the exact bytes its signature and key cover.
#[derive(Clone, Debug)]
pub(crate) struct Cert {
    /// The certificate as received.
    pub der: Vec<u8>,
    /// The typed view.
    pub parsed: Certificate,
    /// `tbsCertificate`, whole element.
    tbs: Vec<u8>,
    /// Contents of the outer `signatureAlgorithm` SEQUENCE.
    sig_alg: Vec<u8>,
    /// The signature bits (unused-bits octet removed).
    signature: Vec<u8>,
    /// The issuer name, whole element.
    issuer_raw: Vec<u8>,
    /// The subject name, whole element.
    subject_raw: Vec<u8>,
    /// Contents of the SubjectPublicKeyInfo's AlgorithmIdentifier SEQUENCE.
    pub spki_alg: Vec<u8>,
    /// The subjectPublicKey bits (unused-bits octet removed): PKCS#1 for RSA, a point for EC.
    pub public_key: Vec<u8>,
    /// Start of validity.
    pub not_before: UnixSeconds,
    /// End of validity.
    pub not_after: UnixSeconds,
    /// Subject in RFC 4514 form (most specific RDN first), e.g. `CN=e2e,O=Notary,L=Seattle,ST=WA,C=US`.
    pub subject: String,
    /// Public key kind and size.
    pub key: KeySpec,
}

fn bit_string_bits(value: &[u8]) -> Option<&[u8]> {
    match value.split_first() {
        Some((0, bits)) => Some(bits),
        _ => None,
    }
}

impl Cert {
    /// Parses a DER certificate; `index` only labels errors.
    pub(crate) fn from_der(der: &[u8], index: usize) -> Result<Cert, CertError> {
        if der.len() > MAX_CERT_BYTES {
            return Err(CertError::TooLarge { index, len: der.len() });
        }
        let parsed = Certificate::from_der(der).map_err(|source| CertError::Parse { index, source })?;
        let malformed = |what: &str| CertError::Invalid {
            subject: format!("certificate #{index}"),
            reason: format!("unexpected DER structure ({what})"),
        };
        let (outer, _) = der::expect(der, tag::SEQUENCE).ok_or_else(|| malformed("outer SEQUENCE"))?;
        let top = der::children(outer.value).ok_or_else(|| malformed("certificate fields"))?;
        let [tbs, sig_alg, signature] = top[..] else {
            return Err(malformed("certificate field count"));
        };
        let tbs_fields = der::children(tbs.value).ok_or_else(|| malformed("tbsCertificate fields"))?;
        // An explicit version is [0]; without it the serial number comes first.
        let skip = usize::from(tbs_fields.first().map(|t| t.tag) == Some(tag::CONTEXT_0));
        let field = |i: usize| tbs_fields.get(skip + i).copied().ok_or_else(|| malformed("tbsCertificate"));
        let issuer = field(2)?;
        let subject = field(4)?;
        let spki = field(5)?;
        let spki_fields = der::children(spki.value).ok_or_else(|| malformed("subjectPublicKeyInfo"))?;
        let [spki_alg, spki_key] = spki_fields[..] else {
            return Err(malformed("subjectPublicKeyInfo field count"));
        };
        let public_key = bit_string_bits(spki_key.value).ok_or_else(|| malformed("subjectPublicKey"))?;
        let signature = bit_string_bits(signature.value).ok_or_else(|| malformed("signature"))?;

        let tbs_cert = &parsed.tbs_certificate;
        let not_before = tbs_cert.validity.not_before.to_unix_duration().as_secs() as i64;
        let not_after = tbs_cert.validity.not_after.to_unix_duration().as_secs() as i64;
        let subject_attrs = name_attributes(&tbs_cert.subject);
        let key = key_spec(&parsed, public_key);
        Ok(Cert {
            der: der.to_vec(),
            tbs: tbs.full.to_vec(),
            sig_alg: sig_alg.value.to_vec(),
            signature: signature.to_vec(),
            issuer_raw: issuer.full.to_vec(),
            subject_raw: subject.full.to_vec(),
            spki_alg: spki_alg.value.to_vec(),
            public_key: public_key.to_vec(),
            not_before,
            not_after,
            subject: format_dn(&subject_attrs),
            key,
            parsed,
        })
    }

    /// Subject attributes in certificate order as (type, value), e.g. `("CN", "e2e")`.
    pub(crate) fn subject_attributes(&self) -> Vec<(String, String)> {
        name_attributes(&self.parsed.tbs_certificate.subject)
    }

    /// The issuer name in RFC 4514 form.
    pub(crate) fn issuer(&self) -> String {
        format_dn(&name_attributes(&self.parsed.tbs_certificate.issuer))
    }

    /// Checks that `issuer`'s subject is this certificate's issuer and that its key signed this
    /// certificate. SHA-1 and other algorithms outside webpki's set are refused.
    pub(crate) fn verify_issued_by(&self, issuer: &Cert) -> Result<(), CertError> {
        if self.issuer_raw != issuer.subject_raw {
            return Err(CertError::invalid(
                self,
                format!("is not issued by {:?} (issuer name differs)", issuer.subject),
            ));
        }
        // Several algorithms can share identifiers (e.g. RSA PKCS#1 SHA-384 for 2048+ and 3072+
        // bit keys): any one that verifies is enough.
        let mut candidates = webpki::ALL_VERIFICATION_ALGS
            .iter()
            .filter(|alg| {
                alg.signature_alg_id().as_ref() == self.sig_alg.as_slice()
                    && alg.public_key_alg_id().as_ref() == issuer.spki_alg.as_slice()
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(CertError::invalid(
                self,
                format!(
                    "its signature algorithm is not supported with the issuer's {} key \
                     (SHA-1 and non-standard parameters are refused)",
                    issuer.key
                ),
            ));
        }
        if candidates.any(|alg| alg.verify_signature(&issuer.public_key, &self.tbs, &self.signature).is_ok()) {
            Ok(())
        } else {
            Err(CertError::invalid(self, format!("signature does not verify with the key of {:?}", issuer.subject)))
        }
    }

    /// A self-signed certificate: its own key verifies its signature and its names match.
    pub(crate) fn is_self_signed(&self) -> bool {
        self.verify_issued_by(self).is_ok()
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&x509_cert::ext::Extension> {
        self.parsed.tbs_certificate.extensions.as_ref()?.iter().find(|e| e.extn_id == oid)
    }

    fn decode_ext<T: for<'a> Decode<'a>>(
        &self,
        oid: ObjectIdentifier,
        name: &str,
    ) -> Result<Option<(bool, T)>, CertError> {
        match self.extension(oid) {
            None => Ok(None),
            Some(ext) => T::from_der(ext.extn_value.as_bytes())
                .map(|v| Some((ext.critical, v)))
                .map_err(|e| CertError::invalid(self, format!("malformed {name} extension: {e}"))),
        }
    }

    /// Basic constraints: (critical, value).
    pub(crate) fn basic_constraints(&self) -> Result<Option<(bool, BasicConstraints)>, CertError> {
        self.decode_ext(OID_BASIC_CONSTRAINTS, "basicConstraints")
    }

    fn key_usage(&self) -> Result<Option<(bool, KeyUsage)>, CertError> {
        self.decode_ext(OID_KEY_USAGE, "keyUsage")
    }

    fn extended_key_usage(&self) -> Result<Option<(bool, ExtendedKeyUsage)>, CertError> {
        self.decode_ext(OID_EXT_KEY_USAGE, "extendedKeyUsage")
    }

    /// The subject key identifier, if the certificate has one.
    pub(crate) fn subject_key_id(&self) -> Option<Vec<u8>> {
        self.decode_ext::<SubjectKeyIdentifier>(OID_SUBJECT_KEY_ID, "subjectKeyIdentifier")
            .ok()
            .flatten()
            .map(|(_, ski)| ski.0.as_bytes().to_vec())
    }

    /// True when basicConstraints says cA.
    pub(crate) fn is_ca(&self) -> Result<bool, CertError> {
        Ok(self.basic_constraints()?.is_some_and(|(_, bc)| bc.ca))
    }

    /// The Notary Project leaf profile ("Leaf Certificates" in the signature specification).
    pub(crate) fn validate_leaf(&self, purpose: Purpose) -> Result<(), CertError> {
        if let Some((_, bc)) = self.basic_constraints()?
            && bc.ca
        {
            return Err(CertError::invalid(
                self,
                "a signing certificate must not be a CA (basicConstraints cA is true)",
            ));
        }
        let Some((critical, ku)) = self.key_usage()? else {
            return Err(CertError::invalid(self, "the keyUsage extension must be present"));
        };
        // Notation accepts a non-critical keyUsage on time-stamping certificates.
        if !critical && purpose == Purpose::CodeSigning {
            return Err(CertError::invalid(self, "the keyUsage extension must be marked critical"));
        }
        if !ku.digital_signature() {
            return Err(CertError::invalid(self, "keyUsage must have digitalSignature set"));
        }
        let forbidden: Vec<&str> = [
            (ku.non_repudiation(), "contentCommitment"),
            (ku.key_encipherment(), "keyEncipherment"),
            (ku.data_encipherment(), "dataEncipherment"),
            (ku.key_agreement(), "keyAgreement"),
            (ku.key_cert_sign(), "keyCertSign"),
            (ku.crl_sign(), "cRLSign"),
            (ku.encipher_only(), "encipherOnly"),
            (ku.decipher_only(), "decipherOnly"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if !forbidden.is_empty() {
            return Err(CertError::invalid(
                self,
                format!("keyUsage must be digitalSignature only, but also has {}", forbidden.join(", ")),
            ));
        }
        self.validate_eku(purpose)?;
        self.validate_key_size()
    }

    fn validate_eku(&self, purpose: Purpose) -> Result<(), CertError> {
        let eku = self.extended_key_usage()?;
        match purpose {
            Purpose::TimeStamping => {
                // RFC 3161 2.3: exactly one EKU, id-kp-timeStamping, and the extension critical.
                match eku {
                    Some((true, ExtendedKeyUsage(oids))) if oids == [OID_EKU_TIME_STAMPING] => Ok(()),
                    Some((false, _)) => {
                        Err(CertError::invalid(self, "the time-stamping extendedKeyUsage extension must be critical"))
                    }
                    _ => Err(CertError::invalid(self, "extendedKeyUsage must be timeStamping and nothing else")),
                }
            }
            Purpose::CodeSigning => {
                let Some((_, ExtendedKeyUsage(oids))) = eku else { return Ok(()) };
                let excluded = [
                    (OID_EKU_ANY, "anyExtendedKeyUsage"),
                    (OID_EKU_SERVER_AUTH, "serverAuth"),
                    (OID_EKU_CLIENT_AUTH, "clientAuth"),
                    (OID_EKU_EMAIL, "emailProtection"),
                    (OID_EKU_TIME_STAMPING, "timeStamping"),
                    (OID_EKU_OCSP_SIGNING, "OCSPSigning"),
                ];
                for oid in &oids {
                    if let Some((_, name)) = excluded.iter().find(|(o, _)| o == oid) {
                        return Err(CertError::invalid(self, format!("extendedKeyUsage must not contain {name}")));
                    }
                }
                Ok(())
            }
        }
    }

    fn validate_key_size(&self) -> Result<(), CertError> {
        match self.key {
            KeySpec::Rsa { bits } if bits >= 2048 => Ok(()),
            KeySpec::Rsa { bits } => Err(CertError::invalid(self, format!("RSA key of {bits} bits is below 2048"))),
            KeySpec::Ec(_) => Ok(()),
            KeySpec::Unsupported(ref what) => Err(CertError::invalid(self, format!("unsupported public key: {what}"))),
        }
    }

    /// The Notary Project CA profile; `below` is the number of CA certificates under this one.
    fn validate_ca(&self, below: usize) -> Result<(), CertError> {
        match self.basic_constraints()? {
            Some((true, bc)) if bc.ca => {
                if let Some(max) = bc.path_len_constraint
                    && usize::from(max) < below
                {
                    return Err(CertError::invalid(
                        self,
                        format!("pathLenConstraint {max} is smaller than the {below} CA certificate(s) below it"),
                    ));
                }
            }
            _ => {
                return Err(CertError::invalid(self, "basicConstraints must be present, critical, and have cA true"));
            }
        }
        match self.key_usage()? {
            Some((_, ku)) if ku.key_cert_sign() => Ok(()),
            Some(_) => Err(CertError::invalid(self, "keyUsage must have keyCertSign set")),
            None => Err(CertError::invalid(self, "the keyUsage extension must be present")),
        }
    }
}

/// Checks an envelope's ordered chain (leaf first, self-signed root last) without any time
/// checks: every certificate is issued by the next, only the last is self-signed, and each
/// meets its profile. A chain of one is a self-signed leaf and must meet the leaf profile.
pub(crate) fn validate_chain(chain: &[Cert], purpose: Purpose) -> Result<(), CertError> {
    let Some(leaf) = chain.first() else {
        return Err(CertError::Invalid { subject: String::new(), reason: "the certificate chain is empty".into() });
    };
    if chain.len() == 1 {
        if !leaf.is_self_signed() {
            return Err(CertError::invalid(
                leaf,
                "a chain of one certificate must be self-signed; the chain must end with its root",
            ));
        }
        return leaf.validate_leaf(purpose);
    }
    let last = chain.len() - 1;
    for (i, cert) in chain.iter().enumerate() {
        if i == last {
            if !cert.is_self_signed() {
                return Err(CertError::invalid(cert, "the last certificate of the chain must be a self-signed root"));
            }
        } else {
            if cert.is_self_signed() {
                let role = if i == 0 { "leaf" } else { "intermediate" };
                return Err(CertError::invalid(cert, format!("the {role} certificate must not be self-signed")));
            }
            cert.verify_issued_by(&chain[i + 1])?;
        }
        if i == 0 {
            cert.validate_leaf(purpose)?;
        } else {
            cert.validate_ca(i - 1)?;
        }
    }
    Ok(())
}

fn key_spec(cert: &Certificate, public_key: &[u8]) -> KeySpec {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid == OID_RSA {
        let bits = der::expect(public_key, tag::SEQUENCE)
            .and_then(|(seq, _)| der::expect(seq.value, tag::INTEGER))
            .map(|(modulus, _)| der::unsigned_integer_bits(modulus.value));
        match bits {
            Some(bits) => KeySpec::Rsa { bits },
            None => KeySpec::Unsupported("malformed RSA public key".into()),
        }
    } else if spki.algorithm.oid == OID_EC {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        match curve {
            Some(c) if c == OID_P256 => KeySpec::Ec(Curve::P256),
            Some(c) if c == OID_P384 => KeySpec::Ec(Curve::P384),
            Some(c) if c == OID_P521 => KeySpec::Ec(Curve::P521),
            Some(c) => KeySpec::Unsupported(format!("EC curve {c}")),
            None => KeySpec::Unsupported("EC key without a named curve".into()),
        }
    } else {
        KeySpec::Unsupported(format!("algorithm {}", spki.algorithm.oid))
    }
}

/// Short names Go and RFC 4514 use for common attribute types.
fn attribute_name(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    crate::policy::short_attribute_name(&dotted).map_or(dotted.clone(), str::to_string)
}

/// A directory string as text; types without a text form become `#` and hex, as in RFC 4514.
fn attribute_value(value: &x509_cert::der::Any) -> String {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString | Tag::NumericString => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        // TeletexString: treated as Latin-1, as Go does.
        Tag::TeletexString => bytes.iter().map(|&b| char::from(b)).collect(),
        Tag::BmpString => {
            let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        _ => {
            let mut out = String::from("#");
            if let Ok(encoded) = x509_cert::der::Encode::to_der(value) {
                for b in encoded {
                    let _ = write!(out, "{b:02x}");
                }
            }
            out
        }
    }
}

/// Attributes of a name in certificate order; multi-valued RDNs are flattened.
pub(crate) fn name_attributes(name: &x509_cert::name::Name) -> Vec<(String, String)> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .map(|atv| (attribute_name(&atv.oid), attribute_value(&atv.value)))
        .collect()
}

/// RFC 4514 string: most specific attribute first, special characters escaped.
pub(crate) fn format_dn(attrs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (ty, value)) in attrs.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(ty);
        out.push('=');
        let n = value.chars().count();
        for (j, c) in value.chars().enumerate() {
            let escape = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
                || (j == 0 && (c == '#' || c == ' '))
                || (j + 1 == n && c == ' ');
            if escape {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}
