//! Sigstore bundles (v0.1, v0.2, v0.3; media types
//! `application/vnd.dev.sigstore.bundle+json;version=0.1|0.2|0.3` and
//! `application/vnd.dev.sigstore.bundle.v0.3+json`) verified offline against a
//! [`TrustedRoot`]: message signatures (hashedrekord) and DSSE envelopes with in-toto
//! statements, Rekor v1 and v2 entries, RFC 3161 timestamps, Fulcio certificates or managed
//! keys, identity rules and an optional SLSA provenance policy.
//!
//! Checks run in this order and stop at the first failure (each becomes a [`Check`]):
//! `parse` → `material` → `artifact-digest` (message signatures) → `signature` → `statement`
//! and `subject` (DSSE) → per log entry `tlog-log`, `tlog-body`, `tlog-set`,
//! `inclusion-proof`, `checkpoint` → `timestamp` (each) → `verified-time` →
//! `certificate-validity` and `certificate-chain` at every verified time → `identity` →
//! `provenance`.
//!
//! Version rules: v0.1 entries must carry a signed entry timestamp; from v0.2 on every entry
//! must carry an inclusion proof; an entry without a SET (Rekor v2) must carry a signed
//! checkpoint. A certificate-signed bundle needs at least one verified time: the integrated
//! time of an entry whose SET verified, or a verified RFC 3161 timestamp; the certificate and
//! its chain must be valid at every one of them. Rekor v2 entries have no integrated time, so
//! they always need a timestamp.
//!
//! [`Check`]: crate::Check

use std::time::SystemTime;

use serde::Deserialize;

use crate::certs::{self, Cert, EKU_CODE_SIGNING};
use crate::encoding::{self, b64, hex, sha256};
use crate::identity::Identity;
use crate::keys::{Hash, PublicKeys};
use crate::outcome::{Failure, FailureClass, Outcome, Recorder, Signer, fail};
use crate::rekor::{self, InclusionProof, Signed, TlogEntry, Verifier};
use crate::statement::{self, ProvenancePolicy};
use crate::timestamp;
use crate::trust::TrustedRoot;

/// Largest bundle accepted.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// Most transparency log entries accepted in one bundle.
pub const MAX_TLOG_ENTRIES: usize = 16;
/// Most RFC 3161 timestamps accepted in one bundle.
pub const MAX_TIMESTAMPS: usize = 16;
/// A log's integrated time may be this far ahead of the verifier's clock.
const CLOCK_SKEW_SECS: i64 = 300;

/// What the bundle is verified against.
#[derive(Clone, Copy, Debug)]
pub enum Artifact<'a> {
    /// The SHA-256 of the artifact, as `sha256:<hex>` or bare hex (for an OCI image: its
    /// manifest digest). Message signatures are then checked over the digest; Ed25519
    /// signatures need [`Artifact::Bytes`].
    Digest(&'a str),
    /// The artifact's bytes.
    Bytes(&'a [u8]),
}

/// Policy for [`verify_bundle`].
#[derive(Clone, Debug)]
pub struct BundlePolicy {
    /// Certificate authorities, logs and timestamp authorities.
    pub trusted_root: TrustedRoot,
    /// Accepted keyless signers; a certificate-signed bundle must match one.
    pub identities: Vec<Identity>,
    /// Accepted keys; a key-signed bundle must verify with one.
    pub keys: PublicKeys,
    /// Require at least one transparency log entry (the default; certificate-signed bundles
    /// also need a verified time, which normally comes from the log).
    pub require_tlog: bool,
    /// Requirements on an SLSA provenance statement; when set, only DSSE bundles with such a
    /// statement can pass.
    pub provenance: Option<ProvenancePolicy>,
}

impl BundlePolicy {
    /// A keyless policy: these identities, this root, a log entry required.
    pub fn keyless(trusted_root: TrustedRoot, identities: Vec<Identity>) -> BundlePolicy {
        BundlePolicy { trusted_root, identities, keys: PublicKeys::new(), require_tlog: true, provenance: None }
    }

    /// A key-based policy: these keys, this root (for logs and timestamp authorities), a log
    /// entry required.
    pub fn with_keys(trusted_root: TrustedRoot, keys: PublicKeys) -> BundlePolicy {
        BundlePolicy { trusted_root, identities: Vec::new(), keys, require_tlog: true, provenance: None }
    }
}

// ---------------------------------------------------------------------------------------------
// Bundle JSON (protobuf JSON mapping of dev.sigstore.bundle.v1.Bundle)

/// An int64 in protobuf JSON: a string, or a number.
#[derive(Clone, Copy, Debug)]
struct I64(i64);

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(I64(n)),
            Raw::Str(s) => s.parse().map(I64).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleJson {
    media_type: String,
    verification_material: Option<MaterialJson>,
    message_signature: Option<MessageSignatureJson>,
    dsse_envelope: Option<DsseJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaterialJson {
    certificate: Option<RawBytesJson>,
    x509_certificate_chain: Option<ChainJson>,
    public_key: Option<HintJson>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntryJson>,
    timestamp_verification_data: Option<TimestampDataJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytesJson {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ChainJson {
    #[serde(default)]
    certificates: Vec<RawBytesJson>,
}

#[derive(Deserialize)]
struct HintJson {
    #[serde(default)]
    hint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntryJson {
    log_index: I64,
    log_id: LogIdJson,
    kind_version: Option<KindVersionJson>,
    integrated_time: Option<I64>,
    inclusion_promise: Option<PromiseJson>,
    inclusion_proof: Option<ProofJson>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogIdJson {
    key_id: String,
}

#[derive(Deserialize)]
struct KindVersionJson {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromiseJson {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProofJson {
    log_index: I64,
    root_hash: String,
    tree_size: I64,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<CheckpointJson>,
}

#[derive(Deserialize)]
struct CheckpointJson {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimestampDataJson {
    #[serde(default)]
    rfc3161_timestamps: Vec<SignedTimestampJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedTimestampJson {
    signed_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignatureJson {
    message_digest: Option<DigestJson>,
    signature: String,
}

#[derive(Deserialize)]
struct DigestJson {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseJson {
    payload: String,
    payload_type: String,
    #[serde(default)]
    signatures: Vec<DsseSignatureJson>,
}

#[derive(Deserialize)]
struct DsseSignatureJson {
    sig: String,
}

// ---------------------------------------------------------------------------------------------
// Decoded bundle

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V01,
    V02,
    V03,
}

enum Material {
    /// DER certificates, leaf first.
    Certificates(Vec<Vec<u8>>),
    Key {
        hint: String,
    },
}

enum Content {
    Message { digest: Option<(Hash, Vec<u8>)>, signature: Vec<u8> },
    Dsse { payload_type: String, payload: Vec<u8>, signature: Vec<u8> },
}

impl Content {
    fn signature(&self) -> &[u8] {
        match self {
            Content::Message { signature, .. } | Content::Dsse { signature, .. } => signature,
        }
    }
}

struct Parsed {
    version: Version,
    material: Material,
    content: Content,
    tlog: Vec<TlogEntry>,
    timestamps: Vec<Vec<u8>>,
}

fn parse_err(r: impl Into<String>) -> Failure {
    fail(FailureClass::Parse, r)
}

fn decode(what: &str, s: &str) -> Result<Vec<u8>, Failure> {
    b64(s).ok_or_else(|| parse_err(format!("{what} is not valid base64")))
}

fn to_u64(what: &str, v: I64) -> Result<u64, Failure> {
    u64::try_from(v.0).map_err(|_| parse_err(format!("{what} {} is negative", v.0)))
}

fn parse(json: &[u8]) -> Result<(Parsed, String), Failure> {
    if json.len() > MAX_BUNDLE_BYTES {
        return Err(parse_err(format!(
            "the bundle is {} bytes, more than the {MAX_BUNDLE_BYTES}-byte limit",
            json.len()
        )));
    }
    let b: BundleJson =
        serde_json::from_slice(json).map_err(|e| parse_err(format!("the bundle is not valid bundle JSON: {e}")))?;
    let version = match b.media_type.as_str() {
        "application/vnd.dev.sigstore.bundle+json;version=0.1" => Version::V01,
        "application/vnd.dev.sigstore.bundle+json;version=0.2" => Version::V02,
        "application/vnd.dev.sigstore.bundle+json;version=0.3" | "application/vnd.dev.sigstore.bundle.v0.3+json" => {
            Version::V03
        }
        other => return Err(parse_err(format!("bundle media type {other:?} is not a supported version (0.1-0.3)"))),
    };
    let vm = b.verification_material.ok_or_else(|| parse_err("the bundle has no verificationMaterial"))?;
    let material = match (vm.certificate, vm.x509_certificate_chain, vm.public_key) {
        (Some(c), None, None) => Material::Certificates(vec![decode("the certificate", &c.raw_bytes)?]),
        (None, Some(chain), None) => Material::Certificates(
            chain
                .certificates
                .iter()
                .enumerate()
                .map(|(i, c)| decode(&format!("certificate #{i}"), &c.raw_bytes))
                .collect::<Result<_, _>>()?,
        ),
        (None, None, Some(k)) => Material::Key { hint: k.hint },
        _ => {
            return Err(parse_err(
                "verificationMaterial must hold exactly one of certificate, x509CertificateChain or publicKey",
            ));
        }
    };
    let content = match (b.message_signature, b.dsse_envelope) {
        (Some(m), None) => {
            let digest = match m.message_digest {
                None => None,
                Some(d) => {
                    let hash = match d.algorithm.as_str() {
                        "SHA2_256" => Hash::Sha256,
                        "SHA2_384" => Hash::Sha384,
                        "SHA2_512" => Hash::Sha512,
                        other => return Err(parse_err(format!("message digest algorithm {other:?} is not supported"))),
                    };
                    Some((hash, decode("the message digest", &d.digest)?))
                }
            };
            Content::Message { digest, signature: decode("the message signature", &m.signature)? }
        }
        (None, Some(d)) => {
            let [one] = d.signatures.as_slice() else {
                return Err(parse_err(format!(
                    "the DSSE envelope has {} signatures; Sigstore bundles carry exactly one",
                    d.signatures.len()
                )));
            };
            Content::Dsse {
                payload_type: d.payload_type,
                payload: decode("the DSSE payload", &d.payload)?,
                signature: decode("the DSSE signature", &one.sig)?,
            }
        }
        _ => return Err(parse_err("the bundle must hold exactly one of messageSignature or dsseEnvelope")),
    };
    if vm.tlog_entries.len() > MAX_TLOG_ENTRIES {
        return Err(parse_err(format!("the bundle has more than {MAX_TLOG_ENTRIES} log entries")));
    }
    let mut tlog = Vec::new();
    for (i, e) in vm.tlog_entries.into_iter().enumerate() {
        let what = |f: &str| format!("tlogEntries[{i}].{f}");
        let proof = match e.inclusion_proof {
            None => None,
            Some(p) => {
                if p.hashes.len() > 64 {
                    return Err(parse_err(format!("{} has more than 64 hashes", what("inclusionProof"))));
                }
                Some(InclusionProof {
                    log_index: to_u64(&what("inclusionProof.logIndex"), p.log_index)?,
                    root_hash: decode(&what("inclusionProof.rootHash"), &p.root_hash)?,
                    tree_size: to_u64(&what("inclusionProof.treeSize"), p.tree_size)?,
                    hashes: p
                        .hashes
                        .iter()
                        .map(|h| decode(&what("inclusionProof.hashes"), h))
                        .collect::<Result<_, _>>()?,
                    checkpoint: p.checkpoint.map(|c| c.envelope).filter(|c| !c.is_empty()),
                })
            }
        };
        tlog.push(TlogEntry {
            log_index: to_u64(&what("logIndex"), e.log_index)?,
            log_id: decode(&what("logId.keyId"), &e.log_id.key_id)?,
            kind_version: e.kind_version.map(|kv| (kv.kind, kv.version)),
            // protobuf JSON writes an unset int64 as 0 (or omits it).
            integrated_time: e.integrated_time.map(|t| t.0).filter(|&t| t != 0),
            set: match e.inclusion_promise {
                Some(p) => Some(decode(&what("inclusionPromise.signedEntryTimestamp"), &p.signed_entry_timestamp)?),
                None => None,
            },
            proof,
            body: decode(&what("canonicalizedBody"), &e.canonicalized_body)?,
        });
    }
    let stamps = vm.timestamp_verification_data.map(|t| t.rfc3161_timestamps).unwrap_or_default();
    if stamps.len() > MAX_TIMESTAMPS {
        return Err(parse_err(format!("the bundle has more than {MAX_TIMESTAMPS} timestamps")));
    }
    let timestamps = stamps
        .iter()
        .enumerate()
        .map(|(i, t)| decode(&format!("rfc3161Timestamps[{i}]"), &t.signed_timestamp))
        .collect::<Result<_, _>>()?;
    let detail = format!(
        "{} bundle with a {}, {} log entr{} and {} timestamp(s)",
        match version {
            Version::V01 => "v0.1",
            Version::V02 => "v0.2",
            Version::V03 => "v0.3",
        },
        match content {
            Content::Message { .. } => "message signature",
            Content::Dsse { .. } => "DSSE envelope",
        },
        tlog.len(),
        if tlog.len() == 1 { "y" } else { "ies" },
        stamps.len()
    );
    Ok((Parsed { version, material, content, tlog, timestamps }, detail))
}

/// The artifact's SHA-256 and, if given, its bytes.
fn artifact_sha256(artifact: Artifact<'_>) -> Result<([u8; 32], Option<&[u8]>), Failure> {
    match artifact {
        Artifact::Bytes(b) => Ok((sha256(b), Some(b))),
        Artifact::Digest(d) => {
            let h = d.strip_prefix("sha256:").unwrap_or(d);
            let bytes = (h.len() == 64).then(|| encoding::unhex(h)).flatten().ok_or_else(|| {
                parse_err(format!("artifact digest {d:?} is not a SHA-256 digest (sha256:<64 hex digits>)"))
            })?;
            let mut out = [0u8; 32];
            out.copy_from_slice(&bytes);
            Ok((out, None))
        }
    }
}

/// DSSE pre-authentication encoding.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verifies a Sigstore bundle offline against `artifact` and `policy`. `now` is the verifier's
/// clock: log and timestamp times after it are refused; certificate validity is judged at the
/// verified log and timestamp times, never at `now`.
pub fn verify_bundle(bundle_json: &[u8], artifact: Artifact<'_>, policy: &BundlePolicy, now: SystemTime) -> Outcome {
    let mut rec = Recorder::default();
    let result = run(&mut rec, bundle_json, artifact, policy, encoding::unix_seconds(now));
    rec.finish(result)
}

fn run(
    rec: &mut Recorder,
    json: &[u8],
    artifact: Artifact<'_>,
    policy: &BundlePolicy,
    now: i64,
) -> Result<(), Failure> {
    let p = rec.run("parse", parse(json))?;

    // Verification material against the policy.
    let leaf_and_key = rec.run("material", material(&p, policy))?;

    // Message digest consistency (the digest field is a hint, but must not contradict).
    let (artifact_digest, artifact_bytes) = artifact_sha256(artifact)?;
    if let Content::Message { digest, .. } = &p.content {
        rec.run("artifact-digest", message_digest(digest.as_ref(), &artifact_digest, artifact_bytes))?;
    }

    // The signature itself.
    let signer_key = rec.run("signature", signature(&p, &leaf_and_key, policy, &artifact_digest, artifact_bytes))?;
    let (leaf, verifier_der, signer) = match (&leaf_and_key, signer_key) {
        (Some(leaf), _) => (Some(leaf), leaf.der.clone(), None),
        (None, Some(key)) => (None, key.spki_der().to_vec(), Some(key)),
        (None, None) => {
            return Err(fail(FailureClass::Material, "neither a certificate nor a trusted key signed the bundle"));
        }
    };
    rec.signer = match (signer, leaf) {
        (Some(key), _) => Some(Signer::Key { name: key.name().to_string(), key_id: key.key_id().to_string() }),
        (None, Some(leaf)) => cert_signer(leaf).ok(),
        (None, None) => None,
    };
    let verifier = match leaf {
        Some(_) => Verifier::Certificate(&verifier_der),
        None => Verifier::Key(&verifier_der),
    };

    // DSSE: the statement and its subject.
    let mut stmt = None;
    let (payload_sha, pae_sha, dsse_sigs) = match &p.content {
        Content::Dsse { payload_type, payload, signature } => {
            let s = rec.run(
                "statement",
                statement::parse(payload_type, payload).map(|s| {
                    let d = format!("in-toto statement with predicate {:?}", s.predicate_type);
                    (s, d)
                }),
            )?;
            rec.predicate_type = Some(s.predicate_type.clone());
            let want = hex(&artifact_digest);
            let subject = s.subject_for(&want).map(str::to_string);
            rec.run(
                "subject",
                match subject {
                    Some(name) => Ok(((), format!("statement subject {name:?} has digest sha256:{want}"))),
                    None => Err(fail(
                        FailureClass::DigestMismatch,
                        format!(
                            "the artifact digest sha256:{want} matches no statement subject ({})",
                            s.subjects.iter().map(|(n, d)| format!("{n}: sha256:{d}")).collect::<Vec<_>>().join(", ")
                        ),
                    )),
                },
            )?;
            stmt = Some(s);
            (sha256(payload).to_vec(), sha256(&pae(payload_type, payload)).to_vec(), vec![signature.clone()])
        }
        Content::Message { .. } => (Vec::new(), Vec::new(), Vec::new()),
    };
    let signed = match &p.content {
        Content::Message { signature, .. } => Signed::Message { sha256: &artifact_digest, signature },
        Content::Dsse { .. } => {
            Signed::Dsse { payload_sha256: &payload_sha, pae_sha256: &pae_sha, signatures: &dsse_sigs }
        }
    };

    // Transparency log entries.
    let mut times: Vec<i64> = Vec::new();
    let mut needs_timestamp = false;
    if p.tlog.is_empty() {
        if policy.require_tlog {
            return rec.run(
                "tlog",
                Err(fail(
                    FailureClass::TlogMissing,
                    "the policy requires a transparency log entry and the bundle has none",
                )),
            );
        }
        rec.skip("tlog", "no transparency log entry; the policy does not require one");
    }
    for entry in &p.tlog {
        let log = rec.run("tlog-log", rekor::find_log(&policy.trusted_root, entry))?;
        rec.run("tlog-body", rekor::check_body(entry, &signed, verifier).map(|d| ((), d)))?;
        match &entry.set {
            Some(_) => {
                let t = rec.run("tlog-set", rekor::check_set(entry, log))?;
                if t > now + CLOCK_SKEW_SECS {
                    return rec.run(
                        "integrated-time",
                        Err(fail(
                            FailureClass::TimeNotInValidity,
                            format!("the entry's integrated time {} is in the future", encoding::format_time(t)),
                        )),
                    );
                }
                times.push(t);
                rec.integrated_time.get_or_insert(t);
            }
            None if p.version == Version::V01 => {
                return rec.run(
                    "tlog-set",
                    Err(fail(FailureClass::TlogSet, "a v0.1 bundle's log entry must carry a signed entry timestamp")),
                );
            }
            None => {
                rec.skip("tlog-set", "no signed entry timestamp (Rekor v2 entry); its time must come from a timestamp");
                needs_timestamp = true;
            }
        }
        match &entry.proof {
            Some(proof) => {
                rec.run("inclusion-proof", rekor::check_inclusion(entry, proof).map(|d| ((), d)))?;
                if proof.checkpoint.is_some() || entry.set.is_none() {
                    rec.run("checkpoint", rekor::check_checkpoint(proof, log).map(|d| ((), d)))?;
                } else {
                    rec.skip("checkpoint", "no checkpoint; the entry is proven by its signed entry timestamp");
                }
            }
            None if p.version >= Version::V02 || entry.set.is_none() => {
                return rec.run(
                    "inclusion-proof",
                    Err(fail(
                        FailureClass::InclusionProof,
                        "the log entry has no inclusion proof, which this bundle version requires",
                    )),
                );
            }
            None => rec.skip("inclusion-proof", "no inclusion proof (v0.1 bundle); the entry is proven by its SET"),
        }
        rec.log_index.get_or_insert(entry.log_index);
    }

    // RFC 3161 timestamps.
    for token in &p.timestamps {
        let ts = rec.run(
            "timestamp",
            timestamp::verify(token, p.content.signature(), &policy.trusted_root, now).map(|ts| {
                let d = format!("RFC 3161 timestamp {} from {}", encoding::format_time(ts.time), ts.authority);
                (ts, d)
            }),
        )?;
        times.push(ts.time);
        rec.timestamps.push(ts.time);
    }

    // A verified time is needed for certificates and for Rekor v2 entries.
    if (leaf.is_some() || needs_timestamp) && (times.is_empty() || (needs_timestamp && rec.timestamps.is_empty())) {
        return rec.run(
            "verified-time",
            Err(fail(
                FailureClass::NoVerifiedTime,
                if needs_timestamp {
                    "a Rekor v2 entry has no integrated time and the bundle has no verified RFC 3161 timestamp"
                } else {
                    "there is no verified time (no SET-backed integrated time and no RFC 3161 timestamp) to judge the certificate at"
                },
            )),
        );
    }
    if !times.is_empty() {
        rec.pass("verified-time", format!("{} verified time(s)", times.len()));
    }

    // The certificate at every verified time, and the identity.
    if let Some(leaf) = leaf {
        certificate_at_times(rec, leaf, &[], &policy.trusted_root, &times)?;
        rec.run("identity", identity(leaf, &policy.identities))?;
    } else {
        rec.skip("identity", "key-signed bundle");
    }

    // Provenance.
    match (&policy.provenance, &stmt) {
        (Some(pp), Some(s)) => rec.run("provenance", pp.check(s).map(|d| ((), d)))?,
        (Some(_), None) => {
            return rec.run(
                "provenance",
                Err(fail(
                    FailureClass::Provenance,
                    "the policy requires SLSA provenance but the bundle holds a message signature",
                )),
            );
        }
        (None, _) => {}
    }
    Ok(())
}

/// Parses and screens the verification material; returns the leaf certificate, if any.
fn material(p: &Parsed, policy: &BundlePolicy) -> Result<(Option<Cert>, String), Failure> {
    match &p.material {
        Material::Certificates(ders) => {
            let cert_err = |r: String| fail(FailureClass::Certificate, r);
            let Some((leaf_der, rest)) = ders.split_first() else {
                return Err(cert_err("the bundle's certificate chain is empty".into()));
            };
            if ders.len() > certs::MAX_CHAIN_LEN {
                return Err(cert_err(format!(
                    "the certificate chain has more than {} certificates",
                    certs::MAX_CHAIN_LEN
                )));
            }
            let leaf = Cert::from_der(leaf_der, "the signing certificate").map_err(cert_err)?;
            for (i, der) in rest.iter().enumerate() {
                let c = Cert::from_der(der, &format!("chain certificate #{}", i + 1)).map_err(cert_err)?;
                if c.is_self_issued() {
                    return Err(cert_err(format!(
                        "the bundle's certificate chain includes the root certificate {:?}; roots must come only from the trusted root",
                        c.subject
                    )));
                }
            }
            if leaf.is_ca() {
                return Err(cert_err("the signing certificate is a CA certificate".into()));
            }
            if policy.identities.is_empty() {
                return Err(fail(
                    FailureClass::Material,
                    "the bundle is signed with a certificate but the policy lists no identities (key-based policy)",
                ));
            }
            let d = format!("signing certificate issued by {:?}", leaf.parsed.tbs_certificate.issuer.to_string());
            Ok((Some(leaf), d))
        }
        Material::Key { hint } => {
            if policy.keys.is_empty() {
                return Err(fail(
                    FailureClass::Material,
                    format!(
                        "the bundle is signed with a key (hint {hint:?}), not a certificate, and the policy has no keys"
                    ),
                ));
            }
            Ok((None, format!("key-signed bundle (hint {hint:?}); {} trusted key(s)", policy.keys.len())))
        }
    }
}

fn message_digest(
    digest: Option<&(Hash, Vec<u8>)>,
    artifact_sha256: &[u8; 32],
    bytes: Option<&[u8]>,
) -> Result<((), String), Failure> {
    let Some((hash, value)) = digest else {
        return Ok(((), format!("no message digest in the bundle; artifact is sha256:{}", hex(artifact_sha256))));
    };
    let actual = match (hash, bytes) {
        (Hash::Sha256, _) => artifact_sha256.to_vec(),
        (h, Some(b)) => h.digest(b),
        (h, None) => {
            return Err(fail(
                FailureClass::DigestMismatch,
                format!(
                    "the bundle's message digest is {h:?}, which cannot be compared with a SHA-256 artifact digest"
                ),
            ));
        }
    };
    if &actual != value {
        return Err(fail(
            FailureClass::DigestMismatch,
            format!("the bundle's message digest {} is not the artifact's digest {}", hex(value), hex(&actual)),
        ));
    }
    Ok(((), format!("message digest matches the artifact ({hash:?} {})", hex(&actual))))
}

/// Verifies the signature; returns the trusted key that verified it (key-signed bundles).
fn signature<'k>(
    p: &Parsed,
    leaf: &Option<Cert>,
    policy: &'k BundlePolicy,
    artifact_sha256: &[u8; 32],
    bytes: Option<&[u8]>,
) -> Result<(Option<&'k crate::keys::PublicKey>, String), Failure> {
    let check = |key: &crate::keys::PublicKey| -> Result<bool, String> {
        match &p.content {
            Content::Message { signature, .. } => match bytes {
                Some(b) => Ok(key.verify(b, signature)),
                None => key.verify_prehashed(Hash::Sha256, artifact_sha256, signature),
            },
            Content::Dsse { payload_type, payload, signature } => {
                Ok(key.verify(&pae(payload_type, payload), signature))
            }
        }
    };
    let what = match &p.content {
        Content::Message { .. } => "message signature",
        Content::Dsse { .. } => "DSSE signature",
    };
    match leaf {
        Some(leaf) => match check(&leaf.key) {
            Ok(true) => Ok((None, format!("{what} verifies with the certificate's {} key", leaf.key.kind()))),
            Ok(false) => {
                Err(fail(FailureClass::Signature, format!("the {what} does not verify with the certificate's key")))
            }
            Err(e) => Err(fail(FailureClass::Signature, e)),
        },
        None => {
            let mut notes = Vec::new();
            for key in policy.keys.iter() {
                match check(key) {
                    Ok(true) => return Ok((Some(key), format!("{what} verifies with trusted key {}", key.name()))),
                    Ok(false) => {}
                    Err(e) => notes.push(format!("{}: {e}", key.name())),
                }
            }
            Err(fail(
                FailureClass::Signature,
                format!(
                    "the {what} verifies with none of the {} trusted key(s){}",
                    policy.keys.len(),
                    if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) }
                ),
            ))
        }
    }
}

/// Checks the leaf's validity and chain at every verified time (records two checks).
pub(crate) fn certificate_at_times(
    rec: &mut Recorder,
    leaf: &Cert,
    intermediates: &[Cert],
    root: &TrustedRoot,
    times: &[i64],
) -> Result<(), Failure> {
    let outside: Vec<i64> = times.iter().copied().filter(|&t| !leaf.valid_at(t)).collect();
    rec.run(
        "certificate-validity",
        if let Some(&t) = outside.first() {
            Err(fail(
                FailureClass::TimeNotInValidity,
                format!(
                    "the verified time {} is outside the certificate's validity {} to {}",
                    encoding::format_time(t),
                    encoding::format_time(leaf.not_before),
                    encoding::format_time(leaf.not_after)
                ),
            ))
        } else {
            Ok((
                (),
                format!(
                    "certificate valid {} to {}, which holds every verified time",
                    encoding::format_time(leaf.not_before),
                    encoding::format_time(leaf.not_after)
                ),
            ))
        },
    )?;
    let mut anchors = Vec::new();
    for &t in times {
        let a = certs::verify_chain(leaf, intermediates, root.certificate_authorities(), t, EKU_CODE_SIGNING)
            .map_err(|e| fail(FailureClass::Certificate, e));
        match a {
            Ok(a) => anchors.push(a),
            Err(f) => return rec.run("certificate-chain", Err(f)),
        }
    }
    if !leaf.has_code_signing_eku() {
        return rec.run(
            "certificate-chain",
            Err(fail(FailureClass::Certificate, "the signing certificate lacks the code-signing extended key usage")),
        );
    }
    anchors.dedup();
    rec.pass("certificate-chain", format!("certificate chains to {} at every verified time", anchors.join(", ")));
    Ok(())
}

/// The certificate's OIDC issuer and its identity SANs (at least one).
fn cert_identity(leaf: &Cert) -> Result<(String, Vec<String>), Failure> {
    let issuer = leaf.oidc_issuer().map_err(|e| fail(FailureClass::Certificate, e))?.ok_or_else(|| {
        fail(FailureClass::Identity, "the certificate records no OIDC issuer (not a Fulcio certificate?)")
    })?;
    let sans = leaf.identities().map_err(|e| fail(FailureClass::Certificate, e))?;
    if sans.is_empty() {
        return Err(fail(
            FailureClass::Identity,
            "the certificate has no email, URI or username subject alternative name",
        ));
    }
    Ok((issuer, sans))
}

/// The certificate's signer: its first identity SAN and its OIDC issuer.
pub(crate) fn cert_signer(leaf: &Cert) -> Result<Signer, Failure> {
    let (issuer, mut sans) = cert_identity(leaf)?;
    Ok(Signer::Certificate { subject: sans.swap_remove(0), issuer })
}

/// Matches the certificate's identity against the policy.
pub(crate) fn identity(leaf: &Cert, identities: &[Identity]) -> Result<((), String), Failure> {
    let (issuer, sans) = cert_identity(leaf)?;
    let subject = &sans[0];
    match identities.iter().find(|id| id.matches(&issuer, &sans)) {
        Some(id) => Ok(((), format!("{subject} from {issuer} matches {id}"))),
        None => Err(fail(
            FailureClass::Identity,
            format!(
                "certificate identity {:?} from issuer {issuer:?} matches none of the {} policy identities",
                sans.join(", "),
                identities.len()
            ),
        )),
    }
}
