//! Cosign image signatures: one layer of a cosign `.sig` manifest (tag
//! `sha256-<digest>.sig`), i.e. a simple-signing payload blob and the layer's annotations,
//! verified against a [`CosignPolicy`].
//!
//! * Key-based (`cosign sign --key`): the `dev.cosignproject.cosign/signature` annotation
//!   verifies over the payload with one of the policy's [`PublicKeys`].
//! * Keyless: the Fulcio certificate of `dev.sigstore.cosign/certificate` (with the
//!   intermediates of `dev.sigstore.cosign/chain`; roots there are ignored, anchors come only
//!   from the trusted root) verifies the signature, chains to a certificate authority of the
//!   trusted root at the Rekor integrated time (or RFC 3161 time), and matches an
//!   [`Identity`].
//! * The payload is a simple-signing document whose `critical.type` is
//!   `cosign container image signature` and whose `critical.image.docker-manifest-digest` is
//!   the digest being pulled.
//! * Rekor (`dev.sigstore.cosign/bundle`): the hashedrekord body records SHA-256 of the
//!   payload, the signature and the key or certificate; the SET verifies with the log's key
//!   from the trusted root. Required when the policy says so, and for keyless signatures (as
//!   the time source) unless an RFC 3161 timestamp (`dev.sigstore.cosign/rfc3161timestamp`)
//!   provides the time.
//!
//! Checks: `media-type` → `signature` → `payload` → `digest` → `tlog-log`, `tlog-body`,
//! `tlog-set` → `timestamp` → `verified-time` → `certificate-validity`,
//! `certificate-chain` → `identity`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

use crate::bundle;
use crate::certs::Cert;
use crate::encoding::{self, b64, hex, sha256};
use crate::identity::Identity;
use crate::keys::{PublicKey, PublicKeys};
use crate::outcome::{Failure, FailureClass, Outcome, Recorder, Signer, fail};
use crate::rekor::{self, Signed, Verifier};
use crate::timestamp;
use crate::trust::TrustedRoot;

/// Media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// `critical.type` of a cosign container image signature.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// Annotation: base64 signature over the payload.
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// Annotation: PEM Fulcio certificate (keyless).
pub const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// Annotation: PEM chain of the certificate (intermediates, then root).
pub const ANNOTATION_CHAIN: &str = "dev.sigstore.cosign/chain";
/// Annotation: Rekor bundle (SET and entry).
pub const ANNOTATION_BUNDLE: &str = "dev.sigstore.cosign/bundle";
/// Annotation: RFC 3161 timestamp over the signature, `{"SignedRFC3161Timestamp": base64}`.
pub const ANNOTATION_RFC3161: &str = "dev.sigstore.cosign/rfc3161timestamp";
/// Largest simple-signing payload accepted.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest annotation value accepted.
pub const MAX_ANNOTATION_BYTES: usize = 1024 * 1024;
/// A log's integrated time may be this far ahead of the verifier's clock.
const CLOCK_SKEW_SECS: i64 = 300;

/// One layer of a cosign signature manifest.
#[derive(Clone, Copy, Debug)]
pub struct CosignLayer<'a> {
    /// The layer descriptor's media type.
    pub media_type: &'a str,
    /// The layer blob (the simple-signing payload), exactly as stored.
    pub payload: &'a [u8],
    /// The layer descriptor's annotations.
    pub annotations: &'a BTreeMap<String, String>,
}

/// Policy for [`verify_cosign_signature`].
#[derive(Clone, Debug)]
pub struct CosignPolicy {
    /// Trusted keys (key-based signatures).
    pub keys: PublicKeys,
    /// Accepted keyless identities.
    pub identities: Vec<Identity>,
    /// Fulcio roots, Rekor keys and timestamp authorities.
    pub trusted_root: TrustedRoot,
    /// Require a verified Rekor entry (SET) for every signature, key-based ones included.
    pub require_tlog: bool,
}

impl CosignPolicy {
    /// A key-based policy; `trusted_root` supplies Rekor keys when `require_tlog` is set.
    pub fn with_keys(keys: PublicKeys, trusted_root: TrustedRoot, require_tlog: bool) -> CosignPolicy {
        CosignPolicy { keys, identities: Vec::new(), trusted_root, require_tlog }
    }

    /// A keyless policy.
    pub fn keyless(identities: Vec<Identity>, trusted_root: TrustedRoot) -> CosignPolicy {
        CosignPolicy { keys: PublicKeys::new(), identities, trusted_root, require_tlog: true }
    }
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: Image,
    identity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Deserialize)]
struct TimestampAnnotation {
    #[serde(rename = "SignedRFC3161Timestamp")]
    signed_rfc3161_timestamp: String,
}

fn annotation<'a>(layer: &'a CosignLayer<'_>, key: &str) -> Result<Option<&'a str>, Failure> {
    match layer.annotations.get(key) {
        Some(v) if v.len() > MAX_ANNOTATION_BYTES => {
            Err(fail(FailureClass::Parse, format!("annotation {key} is {} bytes, too large", v.len())))
        }
        Some(v) => Ok(Some(v.as_str())),
        None => Ok(None),
    }
}

/// Verifies one cosign signature layer for the image manifest `subject_digest`
/// (`sha256:<hex>`). `now` is the verifier's clock: a keyless certificate is judged at the
/// verified log or timestamp time, as Sigstore does, never at `now`.
pub fn verify_cosign_signature(
    subject_digest: &str,
    layer: &CosignLayer<'_>,
    policy: &CosignPolicy,
    now: SystemTime,
) -> Outcome {
    let mut rec = Recorder::default();
    let result = run(&mut rec, subject_digest, layer, policy, encoding::unix_seconds(now));
    rec.finish(result)
}

enum Mode {
    Key(PublicKey),
    Keyless { leaf: Box<Cert>, intermediates: Vec<Cert> },
}

fn run(
    rec: &mut Recorder,
    subject_digest: &str,
    layer: &CosignLayer<'_>,
    policy: &CosignPolicy,
    now: i64,
) -> Result<(), Failure> {
    rec.run(
        "media-type",
        if layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE {
            Ok(((), format!("layer media type {SIMPLE_SIGNING_MEDIA_TYPE}")))
        } else {
            Err(fail(
                FailureClass::Payload,
                format!(
                    "layer media type {:?} is not {SIMPLE_SIGNING_MEDIA_TYPE:?}: not a simple-signing payload",
                    layer.media_type
                ),
            ))
        },
    )?;
    if layer.payload.len() > MAX_PAYLOAD_BYTES {
        return rec.run(
            "payload",
            Err(fail(
                FailureClass::Payload,
                format!("the payload is {} bytes, more than {MAX_PAYLOAD_BYTES}", layer.payload.len()),
            )),
        );
    }

    // The signature, with a trusted key or the certificate.
    let mode = rec.run("signature", signature(layer, policy))?;
    let sig = annotation(layer, ANNOTATION_SIGNATURE)?.and_then(b64).unwrap_or_default();
    rec.signer = match &mode {
        Mode::Key(k) => Some(Signer::Key { name: k.name().to_string(), key_id: k.key_id().to_string() }),
        Mode::Keyless { leaf, .. } => bundle::cert_signer(leaf).ok(),
    };

    // The simple-signing payload and the digest it binds.
    let doc = rec.run("payload", payload(layer.payload))?;
    rec.run(
        "digest",
        if doc.critical.image.docker_manifest_digest == subject_digest {
            Ok(((), format!("payload binds {subject_digest}")))
        } else {
            Err(fail(
                FailureClass::DigestMismatch,
                format!(
                    "the payload signs {} but the image being verified is {subject_digest}",
                    doc.critical.image.docker_manifest_digest
                ),
            ))
        },
    )?;

    // Rekor.
    let payload_sha = sha256(layer.payload);
    let (verifier_der, is_cert) = match &mode {
        Mode::Key(k) => (k.spki_der().to_vec(), false),
        Mode::Keyless { leaf, .. } => (leaf.der.clone(), true),
    };
    let verifier = if is_cert { Verifier::Certificate(&verifier_der) } else { Verifier::Key(&verifier_der) };
    let mut times = Vec::new();
    match annotation(layer, ANNOTATION_BUNDLE)? {
        Some(json) => {
            let entry = rec.run(
                "tlog-entry",
                rekor::parse_cosign_bundle(json)
                    .map(|e| {
                        let d = format!("Rekor bundle for entry {}", e.log_index);
                        (e, d)
                    })
                    .map_err(|e| fail(FailureClass::Parse, e)),
            )?;
            let log = rec.run("tlog-log", rekor::find_log(&policy.trusted_root, &entry))?;
            let signed = Signed::Message { sha256: &payload_sha, signature: &sig };
            rec.run("tlog-body", rekor::check_body(&entry, &signed, verifier).map(|d| ((), d)))?;
            let t = rec.run("tlog-set", rekor::check_set(&entry, log))?;
            if t > now + CLOCK_SKEW_SECS {
                return rec.run(
                    "integrated-time",
                    Err(fail(
                        FailureClass::TimeNotInValidity,
                        format!("the integrated time {} is in the future", encoding::format_time(t)),
                    )),
                );
            }
            rec.log_index = Some(entry.log_index);
            rec.integrated_time = Some(t);
            times.push(t);
        }
        None if policy.require_tlog => {
            return rec.run(
                "tlog",
                Err(fail(
                    FailureClass::TlogMissing,
                    format!("the policy requires a Rekor entry and the layer has no {ANNOTATION_BUNDLE} annotation"),
                )),
            );
        }
        None => rec.skip("tlog", "no Rekor bundle annotation; the policy does not require one"),
    }

    // RFC 3161 timestamp.
    if let Some(json) = annotation(layer, ANNOTATION_RFC3161)? {
        let ts: TimestampAnnotation = serde_json::from_str(json).map_err(|e| {
            fail(FailureClass::Timestamp, format!("the {ANNOTATION_RFC3161} annotation is not valid: {e}"))
        })?;
        let token = b64(&ts.signed_rfc3161_timestamp)
            .ok_or_else(|| fail(FailureClass::Timestamp, "the RFC 3161 timestamp is not base64"))?;
        let ts = rec.run(
            "timestamp",
            timestamp::verify(&token, &sig, &policy.trusted_root, now).map(|ts| {
                let d = format!("RFC 3161 timestamp {} from {}", encoding::format_time(ts.time), ts.authority);
                (ts, d)
            }),
        )?;
        rec.timestamps.push(ts.time);
        times.push(ts.time);
    }

    match mode {
        Mode::Key(_) => {
            rec.skip("identity", "key-based signature");
            Ok(())
        }
        Mode::Keyless { leaf, intermediates } => {
            if times.is_empty() {
                return rec.run(
                    "verified-time",
                    Err(fail(
                        FailureClass::NoVerifiedTime,
                        "a keyless signature needs a verified time (Rekor SET or RFC 3161 timestamp) and there is none",
                    )),
                );
            }
            rec.pass("verified-time", format!("{} verified time(s)", times.len()));
            bundle::certificate_at_times(rec, &leaf, &intermediates, &policy.trusted_root, &times)?;
            rec.run("identity", bundle::identity(&leaf, &policy.identities))
        }
    }
}

fn signature(layer: &CosignLayer<'_>, policy: &CosignPolicy) -> Result<(Mode, String), Failure> {
    let sig_b64 = annotation(layer, ANNOTATION_SIGNATURE)?
        .ok_or_else(|| fail(FailureClass::Parse, format!("the layer has no {ANNOTATION_SIGNATURE} annotation")))?;
    let sig = b64(sig_b64)
        .ok_or_else(|| fail(FailureClass::Parse, format!("the {ANNOTATION_SIGNATURE} annotation is not base64")))?;
    let cert_pem = annotation(layer, ANNOTATION_CERTIFICATE)?.filter(|c| !c.trim().is_empty());
    match cert_pem {
        Some(pem) if !policy.identities.is_empty() => {
            let cert_err = |r: String| fail(FailureClass::Certificate, r);
            let mut certs = Cert::from_pem_chain(pem, "the certificate annotation").map_err(cert_err)?;
            if certs.len() != 1 {
                return Err(cert_err(format!(
                    "the certificate annotation holds {} certificates, expected one",
                    certs.len()
                )));
            }
            let leaf = certs.remove(0);
            let intermediates = match annotation(layer, ANNOTATION_CHAIN)? {
                Some(chain) => Cert::from_pem_chain(chain, "the chain annotation")
                    .map_err(cert_err)?
                    .into_iter()
                    .filter(|c| !c.is_self_issued())
                    .collect(),
                None => Vec::new(),
            };
            if !leaf.key.verify(layer.payload, &sig) {
                return Err(fail(FailureClass::Signature, "the signature does not verify with the certificate's key"));
            }
            let d = format!("signature verifies with the {} key of the Fulcio certificate", leaf.key.kind());
            Ok((Mode::Keyless { leaf: Box::new(leaf), intermediates }, d))
        }
        _ if !policy.keys.is_empty() => {
            for key in policy.keys.iter() {
                if key.verify(layer.payload, &sig) {
                    let d = format!("signature verifies with trusted key {} (sha256:{})", key.name(), key.key_id());
                    return Ok((Mode::Key(key.clone()), d));
                }
            }
            Err(fail(
                FailureClass::Signature,
                format!("the signature verifies with none of the {} trusted key(s)", policy.keys.len()),
            ))
        }
        Some(_) => Err(fail(
            FailureClass::Material,
            "the signature is keyless (it carries a certificate) but the policy lists no identities and no keys",
        )),
        None => Err(fail(
            FailureClass::Material,
            "the signature carries no certificate and the policy has no keys to verify it with",
        )),
    }
}

fn payload(bytes: &[u8]) -> Result<(SimpleSigning, String), Failure> {
    let doc: SimpleSigning = serde_json::from_slice(bytes)
        .map_err(|e| fail(FailureClass::Payload, format!("the payload is not a simple-signing JSON document: {e}")))?;
    if doc.critical.kind != SIMPLE_SIGNING_TYPE {
        return Err(fail(
            FailureClass::Payload,
            format!("critical.type is {:?}, not {SIMPLE_SIGNING_TYPE:?}", doc.critical.kind),
        ));
    }
    let reference = doc
        .critical
        .identity
        .as_ref()
        .and_then(|i| i.get("docker-reference"))
        .and_then(|r| r.as_str())
        .unwrap_or("(none)")
        .to_string();
    let d = format!(
        "simple-signing payload (sha256:{}) for {}, docker-reference {reference}",
        hex(&sha256(bytes)),
        doc.critical.image.docker_manifest_digest
    );
    Ok((doc, d))
}
