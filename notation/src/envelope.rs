//! Notary Project signature envelopes: JWS JSON serialization (`application/jose+json`, flattened
//! form) and COSE_Sign1_Tagged (`application/cose`), parsed into one [`Envelope`] with the signed
//! attributes, the exact bytes the signature covers, the certificate chain and the optional
//! RFC 3161 countersignature. No cryptography happens here; `verify` checks the signature.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coset::cbor::value::Value;
use coset::{CoseSign1, Label, RegisteredLabel, RegisteredLabelWithPrivate, TaggedCborSerializable, iana};
use serde::Deserialize;
use thiserror::Error;

use crate::time::{self, UnixSeconds};

/// Media type of JWS envelopes.
pub const MEDIA_TYPE_JWS: &str = "application/jose+json";
/// Media type of COSE envelopes.
pub const MEDIA_TYPE_COSE: &str = "application/cose";
/// The only payload content type the Notary Project defines.
pub const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
/// Largest envelope accepted.
pub const MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;
/// Most certificates accepted in an envelope's chain.
pub const MAX_CHAIN_LEN: usize = 10;

const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const VERIFICATION_PLUGIN: &str = "io.cncf.notary.verificationPlugin";
const VERIFICATION_PLUGIN_MIN_VERSION: &str = "io.cncf.notary.verificationPluginMinVersion";
const TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";
const COSE_X5CHAIN: i64 = 33;

/// The Notary Project signing schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningScheme {
    /// `notary.x509`: a signer's certificate chains to a `ca` store; an optional RFC 3161
    /// countersignature proves the signing time.
    X509,
    /// `notary.x509.signingAuthority`: a signing authority chains to a `signingAuthority` store
    /// and states the authentic signing time itself.
    X509SigningAuthority,
}

impl SigningScheme {
    /// The value of the `io.cncf.notary.signingScheme` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningScheme::X509 => "notary.x509",
            SigningScheme::X509SigningAuthority => "notary.x509.signingAuthority",
        }
    }
}

/// The signature algorithms the Notary Project allows, with their JWS names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignatureAlgorithm {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl SignatureAlgorithm {
    pub(crate) fn jws_name(self) -> &'static str {
        match self {
            SignatureAlgorithm::Ps256 => "PS256",
            SignatureAlgorithm::Ps384 => "PS384",
            SignatureAlgorithm::Ps512 => "PS512",
            SignatureAlgorithm::Es256 => "ES256",
            SignatureAlgorithm::Es384 => "ES384",
            SignatureAlgorithm::Es512 => "ES512",
        }
    }

    fn from_jws(name: &str) -> Option<Self> {
        [Self::Ps256, Self::Ps384, Self::Ps512, Self::Es256, Self::Es384, Self::Es512]
            .into_iter()
            .find(|a| a.jws_name() == name)
    }

    fn from_cose(alg: &iana::Algorithm) -> Option<Self> {
        match alg {
            iana::Algorithm::PS256 => Some(Self::Ps256),
            iana::Algorithm::PS384 => Some(Self::Ps384),
            iana::Algorithm::PS512 => Some(Self::Ps512),
            iana::Algorithm::ES256 => Some(Self::Es256),
            iana::Algorithm::ES384 => Some(Self::Es384),
            iana::Algorithm::ES512 => Some(Self::Es512),
            _ => None,
        }
    }
}

/// Why an envelope could not be parsed or breaks an envelope rule (an integrity failure).
#[derive(Debug, Error)]
pub(crate) enum EnvelopeError {
    #[error("signature envelope media type {0:?} is not supported; use application/jose+json or application/cose")]
    UnsupportedMediaType(String),
    #[error("signature envelope is {0} bytes, more than the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("signature envelope is not a JWS JSON serialization: {0}")]
    JwsJson(#[source] serde_json::Error),
    #[error("JWS field {field} is not valid base64: {source}")]
    Base64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("signature envelope is not a COSE_Sign1_Tagged message: {0}")]
    Cose(String),
    #[error("signature envelope header {header}: {reason}")]
    Header { header: String, reason: String },
}

fn header_err(header: impl Into<String>, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Header { header: header.into(), reason: reason.into() }
}

/// A protected header value in format-neutral form.
#[derive(Clone, Debug)]
enum HeaderValue {
    Text(String),
    /// Seconds since the epoch (COSE tag 1, or a JWS RFC 3339 string converted on demand).
    Time(UnixSeconds),
    Other,
}

/// A parsed envelope.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    pub alg: SignatureAlgorithm,
    pub signing_scheme: SigningScheme,
    pub signing_time: Option<UnixSeconds>,
    pub authentic_signing_time: Option<UnixSeconds>,
    pub expiry: Option<UnixSeconds>,
    pub verification_plugin: Option<String>,
    pub verification_plugin_min_version: Option<String>,
    /// Critical attributes this implementation does not know.
    pub extended_critical: Vec<String>,
    /// The payload (the Notary Project payload JSON).
    pub payload: Vec<u8>,
    /// The exact bytes the signature covers.
    pub signed_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    /// DER certificates, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// RFC 3161 TimeStampToken (a CMS ContentInfo), if present.
    pub timestamp_token: Option<Vec<u8>>,
}

impl Envelope {
    /// The time the certificate chain is judged against when nothing better is known: the
    /// authentic signing time under the signing-authority scheme, the claimed one otherwise.
    pub(crate) fn claimed_signing_time(&self) -> Option<UnixSeconds> {
        match self.signing_scheme {
            SigningScheme::X509 => self.signing_time,
            SigningScheme::X509SigningAuthority => self.authentic_signing_time,
        }
    }
}

/// Parses an envelope of the given media type.
pub(crate) fn parse(media_type: &str, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge(bytes.len()));
    }
    match media_type {
        MEDIA_TYPE_JWS => parse_jws(bytes),
        MEDIA_TYPE_COSE => parse_cose(bytes),
        other => Err(EnvelopeError::UnsupportedMediaType(other.to_string())),
    }
}

/// Everything both formats share once their headers are in neutral form.
struct Headers {
    alg: SignatureAlgorithm,
    content_type: Option<String>,
    crit: Vec<String>,
    fields: BTreeMap<String, HeaderValue>,
}

struct SignedAttributes {
    signing_scheme: SigningScheme,
    signing_time: Option<UnixSeconds>,
    authentic_signing_time: Option<UnixSeconds>,
    expiry: Option<UnixSeconds>,
    verification_plugin: Option<String>,
    verification_plugin_min_version: Option<String>,
    extended_critical: Vec<String>,
}

fn signed_attributes(h: Headers) -> Result<SignedAttributes, EnvelopeError> {
    match h.content_type.as_deref() {
        Some(PAYLOAD_CONTENT_TYPE) => {}
        Some(other) => {
            return Err(header_err("cty", format!("payload content type {other:?} is not {PAYLOAD_CONTENT_TYPE:?}")));
        }
        None => return Err(header_err("cty", "the payload content type is missing")),
    }
    if h.crit.is_empty() {
        return Err(header_err("crit", format!("is missing or empty; it must list {SIGNING_SCHEME}")));
    }
    for name in &h.crit {
        if !h.fields.contains_key(name) {
            return Err(header_err("crit", format!("lists {name:?}, which is not in the protected header")));
        }
    }
    let critical = |name: &str| h.crit.iter().any(|c| c == name);
    for name in [SIGNING_SCHEME, AUTHENTIC_SIGNING_TIME, EXPIRY, VERIFICATION_PLUGIN, VERIFICATION_PLUGIN_MIN_VERSION] {
        if h.fields.contains_key(name) && !critical(name) {
            return Err(header_err(name, "must be marked critical (listed in crit)"));
        }
    }
    let text = |name: &str| -> Result<Option<String>, EnvelopeError> {
        match h.fields.get(name) {
            None => Ok(None),
            Some(HeaderValue::Text(s)) => Ok(Some(s.clone())),
            Some(_) => Err(header_err(name, "must be a string")),
        }
    };
    let time = |name: &str| -> Result<Option<UnixSeconds>, EnvelopeError> {
        match h.fields.get(name) {
            None => Ok(None),
            Some(HeaderValue::Time(t)) => Ok(Some(*t)),
            Some(HeaderValue::Text(s)) => time::parse_rfc3339(s)
                .map(Some)
                .ok_or_else(|| header_err(name, format!("{s:?} is not an RFC 3339 date-time"))),
            Some(HeaderValue::Other) => Err(header_err(name, "must be a date-time")),
        }
    };
    let signing_scheme = match text(SIGNING_SCHEME)?.as_deref() {
        Some("notary.x509") => SigningScheme::X509,
        Some("notary.x509.signingAuthority") => SigningScheme::X509SigningAuthority,
        Some(other) => {
            return Err(header_err(
                SIGNING_SCHEME,
                format!("{other:?} is not supported; use notary.x509 or notary.x509.signingAuthority"),
            ));
        }
        None => return Err(header_err(SIGNING_SCHEME, "is missing")),
    };
    let signing_time = time(SIGNING_TIME)?;
    let authentic_signing_time = time(AUTHENTIC_SIGNING_TIME)?;
    let expiry = time(EXPIRY)?;
    let reference = match signing_scheme {
        SigningScheme::X509 => signing_time.ok_or_else(|| header_err(SIGNING_TIME, "is required by notary.x509"))?,
        SigningScheme::X509SigningAuthority => authentic_signing_time
            .ok_or_else(|| header_err(AUTHENTIC_SIGNING_TIME, "is required by notary.x509.signingAuthority"))?,
    };
    if let Some(expiry) = expiry
        && expiry <= reference
    {
        return Err(header_err(EXPIRY, "must be after the signing time"));
    }
    let known = [
        SIGNING_SCHEME,
        SIGNING_TIME,
        AUTHENTIC_SIGNING_TIME,
        EXPIRY,
        VERIFICATION_PLUGIN,
        VERIFICATION_PLUGIN_MIN_VERSION,
    ];
    let mut extended_critical: Vec<String> = h.crit.iter().filter(|c| !known.contains(&c.as_str())).cloned().collect();
    extended_critical.dedup();
    Ok(SignedAttributes {
        signing_scheme,
        signing_time,
        authentic_signing_time,
        expiry,
        verification_plugin: text(VERIFICATION_PLUGIN)?,
        verification_plugin_min_version: text(VERIFICATION_PLUGIN_MIN_VERSION)?,
        extended_critical,
    })
}

fn assemble(
    h: Headers,
    payload: Vec<u8>,
    signed_bytes: Vec<u8>,
    signature: Vec<u8>,
    cert_chain: Vec<Vec<u8>>,
    timestamp_token: Option<Vec<u8>>,
) -> Result<Envelope, EnvelopeError> {
    let alg = h.alg;
    let attrs = signed_attributes(h)?;
    if cert_chain.is_empty() {
        return Err(header_err("x5c", "the certificate chain is missing or empty"));
    }
    if cert_chain.len() > MAX_CHAIN_LEN {
        return Err(header_err("x5c", format!("has more than {MAX_CHAIN_LEN} certificates")));
    }
    if signature.is_empty() {
        return Err(header_err("signature", "is empty"));
    }
    Ok(Envelope {
        alg,
        signing_scheme: attrs.signing_scheme,
        signing_time: attrs.signing_time,
        authentic_signing_time: attrs.authentic_signing_time,
        expiry: attrs.expiry,
        verification_plugin: attrs.verification_plugin,
        verification_plugin_min_version: attrs.verification_plugin_min_version,
        extended_critical: attrs.extended_critical,
        payload,
        signed_bytes,
        signature,
        cert_chain,
        timestamp_token,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwsJson {
    payload: String,
    protected: String,
    #[serde(default)]
    header: serde_json::Map<String, serde_json::Value>,
    signature: String,
}

/// JWS header names registered by RFC 7515 that `crit` must not list.
const JWS_REGISTERED: [&str; 11] = ["alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit"];

fn parse_jws(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let jws: JwsJson = serde_json::from_slice(bytes).map_err(EnvelopeError::JwsJson)?;
    let b64url = |field: &'static str, s: &str| {
        URL_SAFE_NO_PAD.decode(s).map_err(|source| EnvelopeError::Base64 { field, source })
    };
    let protected_bytes = b64url("protected", &jws.protected)?;
    let payload = b64url("payload", &jws.payload)?;
    let signature = b64url("signature", &jws.signature)?;
    let protected: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&protected_bytes)
        .map_err(|e| header_err("protected", format!("is not a JSON object: {e}")))?;
    if let Some(name) = protected.keys().find(|k| jws.header.contains_key(*k)) {
        return Err(header_err(name.clone(), "appears in both the protected and the unprotected header"));
    }

    let alg_name = protected.get("alg").and_then(|v| v.as_str()).ok_or_else(|| header_err("alg", "is missing"))?;
    let alg = SignatureAlgorithm::from_jws(alg_name).ok_or_else(|| {
        header_err("alg", format!("{alg_name:?} is not allowed; use PS256, PS384, PS512, ES256, ES384 or ES512"))
    })?;
    let content_type = match protected.get("cty") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(header_err("cty", "must be a string")),
    };
    let crit = match protected.get("crit") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| header_err("crit", "must be an array of strings")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(header_err("crit", "must be an array of strings")),
    };
    if let Some(reg) = crit.iter().find(|c| JWS_REGISTERED.contains(&c.as_str())) {
        return Err(header_err("crit", format!("must not list the registered header {reg:?}")));
    }
    let fields = protected
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alg" | "cty" | "crit"))
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => HeaderValue::Text(s.clone()),
                _ => HeaderValue::Other,
            };
            (k.clone(), value)
        })
        .collect();

    let cert_chain = match jws.header.get("x5c") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(|| header_err("x5c", "must be an array of base64 strings"))?;
                STANDARD.decode(s).map_err(|source| EnvelopeError::Base64 { field: "x5c", source })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(header_err("x5c", "must be an array of base64 strings")),
    };
    let timestamp_token = match jws.header.get(TIMESTAMP_SIGNATURE) {
        None => None,
        Some(serde_json::Value::String(s)) => {
            Some(STANDARD.decode(s).map_err(|source| EnvelopeError::Base64 { field: TIMESTAMP_SIGNATURE, source })?)
        }
        Some(_) => return Err(header_err(TIMESTAMP_SIGNATURE, "must be a base64 string")),
    };

    let mut signed_bytes = Vec::with_capacity(jws.protected.len() + 1 + jws.payload.len());
    signed_bytes.extend_from_slice(jws.protected.as_bytes());
    signed_bytes.push(b'.');
    signed_bytes.extend_from_slice(jws.payload.as_bytes());

    assemble(Headers { alg, content_type, crit, fields }, payload, signed_bytes, signature, cert_chain, timestamp_token)
}

fn cose_value(v: &Value) -> HeaderValue {
    match v {
        Value::Text(s) => HeaderValue::Text(s.clone()),
        Value::Tag(1, inner) => match inner.as_ref() {
            Value::Integer(i) => i64::try_from(i128::from(*i)).map(HeaderValue::Time).unwrap_or(HeaderValue::Other),
            Value::Float(f) if f.is_finite() => HeaderValue::Time(f.floor() as i64),
            _ => HeaderValue::Other,
        },
        _ => HeaderValue::Other,
    }
}

fn cose_certs(v: &Value) -> Result<Vec<Vec<u8>>, EnvelopeError> {
    match v {
        Value::Bytes(b) => Ok(vec![b.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Bytes(b) => Ok(b.clone()),
                _ => Err(header_err("x5chain", "must be an array of byte strings")),
            })
            .collect(),
        _ => Err(header_err("x5chain", "must be a byte string or an array of byte strings")),
    }
}

fn parse_cose(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let msg = CoseSign1::from_tagged_slice(bytes).map_err(|e| EnvelopeError::Cose(format!("{e:?}")))?;
    let ph = &msg.protected.header;
    let alg = match &ph.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => SignatureAlgorithm::from_cose(a)
            .ok_or_else(|| header_err("alg", format!("{a:?} is not allowed; use PS256/384/512 or ES256/384/512")))?,
        Some(other) => return Err(header_err("alg", format!("{other:?} is not allowed"))),
        None => return Err(header_err("alg", "is missing from the protected header")),
    };
    let content_type = match &ph.content_type {
        None => None,
        Some(RegisteredLabel::Text(s)) => Some(s.clone()),
        Some(RegisteredLabel::Assigned(f)) => {
            return Err(header_err(
                "content type",
                format!("CoAP content format {f:?} is not {PAYLOAD_CONTENT_TYPE:?}"),
            ));
        }
    };
    let mut crit = Vec::with_capacity(ph.crit.len());
    for c in &ph.crit {
        match c {
            RegisteredLabelWithPrivate::Text(s) => crit.push(s.clone()),
            other => {
                return Err(header_err("crit", format!("lists {other:?}; only text labels may be critical")));
            }
        }
    }
    let mut fields = BTreeMap::new();
    let mut cert_chain = Vec::new();
    for (label, value) in &ph.rest {
        match label {
            Label::Text(name) => {
                if fields.insert(name.clone(), cose_value(value)).is_some() {
                    return Err(header_err(name.clone(), "appears twice"));
                }
            }
            Label::Int(COSE_X5CHAIN) => cert_chain = cose_certs(value)?,
            Label::Int(_) => {}
        }
    }
    let mut timestamp_token = None;
    for (label, value) in &msg.unprotected.rest {
        match label {
            Label::Int(COSE_X5CHAIN) => {
                if !cert_chain.is_empty() {
                    return Err(header_err("x5chain", "appears in both the protected and the unprotected header"));
                }
                cert_chain = cose_certs(value)?;
            }
            Label::Text(name) if name == TIMESTAMP_SIGNATURE => match value {
                Value::Bytes(b) => timestamp_token = Some(b.clone()),
                _ => return Err(header_err(TIMESTAMP_SIGNATURE, "must be a byte string")),
            },
            Label::Text(name) if fields.contains_key(name) => {
                return Err(header_err(name.clone(), "appears in both the protected and the unprotected header"));
            }
            _ => {}
        }
    }
    let payload = msg.payload.clone().ok_or_else(|| EnvelopeError::Cose("the payload is detached (nil)".into()))?;
    let signed_bytes = msg.tbs_data(b"");
    assemble(
        Headers { alg, content_type, crit, fields },
        payload,
        signed_bytes,
        msg.signature.clone(),
        cert_chain,
        timestamp_token,
    )
}

/// The Notary Project payload's `targetArtifact` descriptor.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TargetArtifact {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

/// Parses the payload JSON; `targetArtifact` with `mediaType`, `digest` and `size` is required.
pub(crate) fn parse_payload(payload: &[u8]) -> Result<TargetArtifact, String> {
    serde_json::from_slice::<Payload>(payload).map(|p| p.target_artifact).map_err(|e| {
        format!("the signed payload is not a Notary Project payload with a targetArtifact descriptor: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jws(protected: &str, header: &str) -> Vec<u8> {
        let p = URL_SAFE_NO_PAD.encode(protected);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"targetArtifact":{"mediaType":"m","digest":"sha256:00","size":1}}"#);
        format!(r#"{{"payload":"{payload}","protected":"{p}","header":{header},"signature":"AAAA"}}"#).into_bytes()
    }

    const CERT: &str = r#"{"x5c":["MAA="]}"#;

    fn header_error(r: Result<Envelope, EnvelopeError>) -> String {
        match r {
            Err(e @ EnvelopeError::Header { .. }) => e.to_string(),
            other => panic!("expected a header error, got {other:?}"),
        }
    }

    #[test]
    fn parses_x509_headers_with_unknown_critical() {
        let e = parse(
            MEDIA_TYPE_JWS,
            &jws(
                r#"{"alg":"PS384","cty":"application/vnd.cncf.notary.payload.v1+json","crit":["io.cncf.notary.signingScheme","io.cncf.notary.expiry","SomeKey"],"SomeKey":"v","io.cncf.notary.signingScheme":"notary.x509","io.cncf.notary.signingTime":"2020-11-09T07:00:00Z","io.cncf.notary.expiry":"2120-11-09T07:00:00Z"}"#,
                CERT,
            ),
        )
        .unwrap();
        assert_eq!(e.alg, SignatureAlgorithm::Ps384);
        assert_eq!(e.signing_scheme, SigningScheme::X509);
        assert_eq!(e.extended_critical, ["SomeKey"]);
        assert_eq!(e.expiry.map(time::format_rfc3339).as_deref(), Some("2120-11-09T07:00:00Z"));
        assert!(e.signed_bytes.contains(&b'.'));
    }

    #[test]
    fn header_rules_are_integrity_errors() {
        let base = |extra: &str, crit: &str| {
            format!(
                r#"{{"alg":"PS256","cty":"application/vnd.cncf.notary.payload.v1+json","crit":{crit},"io.cncf.notary.signingScheme":"notary.x509","io.cncf.notary.signingTime":"2020-11-09T07:00:00Z"{extra}}}"#
            )
        };
        let scheme_crit = r#"["io.cncf.notary.signingScheme"]"#;
        let cases = [
            (base("", "[]"), "crit"),
            (base(r#","io.cncf.notary.expiry":"2120-11-09T07:00:00Z""#, scheme_crit), "must be marked critical"),
            (base("", r#"["io.cncf.notary.signingScheme","missing"]"#), "not in the protected header"),
            (base("", r#"["io.cncf.notary.signingScheme","alg"]"#), "registered header"),
            (
                base(
                    r#","io.cncf.notary.expiry":"2019-11-09T07:00:00Z""#,
                    r#"["io.cncf.notary.signingScheme","io.cncf.notary.expiry"]"#,
                ),
                "after the signing time",
            ),
            (base("", scheme_crit).replace("notary.x509\"", "notary.other\""), "not supported"),
            (base("", scheme_crit).replace("PS256", "HS256"), "not allowed"),
            (base("", scheme_crit).replace("payload.v1", "payload.v9"), "content type"),
            (base("", scheme_crit).replace("2020-11-09T07:00:00Z", "yesterday"), "RFC 3339"),
        ];
        for (protected, expect) in cases {
            let msg = header_error(parse(MEDIA_TYPE_JWS, &jws(&protected, CERT)));
            assert!(msg.contains(expect), "{msg:?} should mention {expect:?}");
        }
        let msg = header_error(parse(MEDIA_TYPE_JWS, &jws(&base("", scheme_crit), r#"{"cty":"x","x5c":["MAA="]}"#)));
        assert!(msg.contains("both the protected and the unprotected"), "{msg}");
        let msg = header_error(parse(MEDIA_TYPE_JWS, &jws(&base("", scheme_crit), "{}")));
        assert!(msg.contains("certificate chain"), "{msg}");
    }

    #[test]
    fn rejects_padding_unknown_fields_and_other_media_types() {
        let mut v: serde_json::Value = serde_json::from_slice(&jws(
            r#"{"alg":"PS256","cty":"application/vnd.cncf.notary.payload.v1+json","crit":["io.cncf.notary.signingScheme"],"io.cncf.notary.signingScheme":"notary.x509","io.cncf.notary.signingTime":"2020-11-09T07:00:00Z"}"#,
            CERT,
        ))
        .unwrap();
        let padded = format!("{}=", v["payload"].as_str().unwrap());
        v["payload"] = padded.into();
        assert!(matches!(
            parse(MEDIA_TYPE_JWS, &serde_json::to_vec(&v).unwrap()),
            Err(EnvelopeError::Base64 { field: "payload", .. })
        ));
        assert!(matches!(parse(MEDIA_TYPE_JWS, br#"{"signatures":[]}"#), Err(EnvelopeError::JwsJson(_))));
        assert!(matches!(parse("text/plain", b"x"), Err(EnvelopeError::UnsupportedMediaType(_))));
        assert!(matches!(parse(MEDIA_TYPE_COSE, b"malformed signature"), Err(EnvelopeError::Cose(_))));
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(parse(MEDIA_TYPE_JWS, &big), Err(EnvelopeError::TooLarge(_))));
    }

    #[test]
    fn payload_needs_a_full_descriptor() {
        assert!(parse_payload(br#"{"targetArtifact":{"mediaType":"m","digest":"d","size":3}}"#).is_ok());
        assert!(parse_payload(br#"{"targetArtifact":{"mediaType":"m","digest":"d"}}"#).is_err());
        assert!(parse_payload(b"[]").is_err());
    }
}
