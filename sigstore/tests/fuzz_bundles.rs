//! Fuzzing Sigstore bundle and Cosign verification on stable Rust with
//! proptest. The seeds are the real fixtures (PROVENANCE.md sections 2 and 3:
//! the valid sigstore-conformance bundles and the valid cosign signature
//! layers), each first shown to verify; then mutated (bit flips,
//! truncations, insertions, deletions, JSON values replaced by random JSON,
//! annotations damaged or removed, random bytes). Verification must never
//! panic, must say why whenever it rejects, and must never accept the mutated
//! bytes, with two exceptions that change nothing the verdict rests on, each
//! checked precisely when it happens:
//!
//! * A bundle whose only changes are in parts the verdict did not rest on:
//!   see [`excuse`] (two of its cases are leniencies worth fixing).
//! * A change confined to the Fulcio root copy at the end of a cosign `chain`
//!   annotation: the root used is the policy's own.
//!
//! `PROPTEST_CASES` raises the number of cases (scripts/fuzz does).

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use base64::Engine as _;
use proptest::prelude::*;
use pullgate_sigstore::{
    Artifact, BundlePolicy, CheckStatus, CosignLayer, CosignPolicy, Identity, Outcome, PublicKeys, TrustedRoot,
    verify_bundle, verify_cosign_signature,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ACTIONS: &str = "https://token.actions.githubusercontent.com";

/// How many bundle seeds there are: [`VALID_BUNDLES`] and cosign's OCI attestation.
const BUNDLE_SEEDS: usize = VALID_BUNDLES.len() + 1;

/// The conformance cases that verify (the `_fail` cases are already failures).
const VALID_BUNDLES: [&str; 9] = [
    "happy-path-intoto-in-dsse-v3",
    "happy-path-v0.1",
    "happy-path-v0.2",
    "happy-path-v0.3",
    "happy-path-v0.3-new-mediaType",
    "managed-key-happy-path",
    "rekor2-dsse-happy-path",
    "rekor2-happy-path",
    "rekor2-timestamp-with-expired-cert-chain",
];

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures"))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A valid bundle with what it verifies against.
struct BundleSeed {
    name: &'static str,
    bundle: Vec<u8>,
    artifact: Vec<u8>,
    digest: String,
    dsse: bool,
    policy: BundlePolicy,
    /// The trusted root's TSA certificates (a token's copies of them are unused).
    tsa_certs: Vec<Vec<u8>>,
}

impl BundleSeed {
    fn load(name: &'static str) -> BundleSeed {
        let conformance = shared().join("sigstore-bundle/conformance");
        let dir = conformance.join(name);
        let bundle = fs::read(dir.join("bundle.sigstore.json")).unwrap();
        let artifact = fs::read(dir.join("artifact")).or_else(|_| fs::read(conformance.join("a.txt"))).unwrap();
        let dsse = serde_json::from_slice::<Value>(&bundle).unwrap().get("dsseEnvelope").is_some();
        let root_path = Some(dir.join("trusted_root.json"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| shared().join("sigstore-bundle/trusted_root.public-good.json"));
        let root_bytes = fs::read(root_path).unwrap();
        let root = TrustedRoot::parse(&root_bytes).unwrap();
        let tsa_certs = tsa_certificates(&serde_json::from_slice(&root_bytes).unwrap());
        let text = |f: &str| fs::read_to_string(dir.join(f)).ok().map(|s| s.trim().to_string());
        let policy = match fs::read_to_string(dir.join("key.pub")) {
            Ok(pem) => BundlePolicy::with_keys(root, PublicKeys::parse("key.pub", &pem).unwrap()),
            Err(_) => {
                let id = Identity::exact(
                    text("issuer").unwrap_or_else(|| ACTIONS.into()),
                    text("identity").unwrap_or_else(|| BEACON.into()),
                );
                BundlePolicy::keyless(root, vec![id])
            }
        };
        BundleSeed { name, digest: sha256(&artifact), bundle, artifact, dsse, policy, tsa_certs }
    }

    /// cosign's image attestation bundle (PROVENANCE.md, cosign-oci-attestation), for its image digest.
    fn oci_attestation() -> BundleSeed {
        let dir = shared().join("sigstore-bundle/cosign-oci-attestation");
        let root_bytes = fs::read(dir.join("trusted_root_pgi.json")).unwrap();
        let identity = Identity::exact("https://github.com/login/oauth", "cody@soyland.com");
        BundleSeed {
            name: "cosign-oci-attestation",
            bundle: fs::read(dir.join("oci-attestation.sigstore.json")).unwrap(),
            artifact: Vec::new(),
            digest: "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4".into(),
            dsse: true,
            policy: BundlePolicy::keyless(TrustedRoot::parse(&root_bytes).unwrap(), vec![identity]),
            tsa_certs: tsa_certificates(&serde_json::from_slice(&root_bytes).unwrap()),
        }
    }

    fn verify(&self, bundle: &[u8]) -> Outcome {
        let artifact = if self.dsse { Artifact::Digest(&self.digest) } else { Artifact::Bytes(&self.artifact) };
        verify_bundle(bundle, artifact, &self.policy, SystemTime::now())
    }
}

/// A valid cosign signature layer with what it verifies against.
struct CosignSeed {
    name: &'static str,
    media_type: String,
    payload: Vec<u8>,
    annotations: BTreeMap<String, String>,
    digest: String,
    policy: CosignPolicy,
}

impl CosignSeed {
    fn load(name: &'static str, policy: CosignPolicy) -> CosignSeed {
        let dir = shared().join("cosign").join(name);
        let raw = fs::read(dir.join("signature-1")).unwrap();
        let json = raw.strip_prefix(b"\x00sigstore-json\n".as_slice()).expect("dir: transport prefix");
        let v: Value = serde_json::from_slice(json).unwrap();
        let payload = base64::engine::general_purpose::STANDARD.decode(v["payload"].as_str().unwrap()).unwrap();
        let annotations = v["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().into()))
            .collect();
        CosignSeed {
            name,
            media_type: v["mimeType"].as_str().unwrap().to_string(),
            payload,
            annotations,
            digest: sha256(&fs::read(dir.join("manifest.json")).unwrap()),
            policy,
        }
    }

    fn verify(&self, payload: &[u8], annotations: &BTreeMap<String, String>) -> Outcome {
        let layer = CosignLayer { media_type: &self.media_type, payload, annotations };
        verify_cosign_signature(&self.digest, &layer, &self.policy, SystemTime::now())
    }
}

fn cosign_key(name: &str) -> String {
    fs::read_to_string(shared().join("cosign/keys").join(name)).unwrap()
}

fn rekor_root(with_fulcio: bool) -> TrustedRoot {
    let mut root = TrustedRoot::new();
    root.add_tlog_key_pem("https://rekor.sigstore.dev", &cosign_key("rekor-public-good.pub")).unwrap();
    if with_fulcio {
        root.add_certificate_authority_pem("https://fulcio.sigstore.dev", &cosign_key("fulcio_v1.crt.pem")).unwrap();
    }
    root
}

fn keys(name: &str) -> PublicKeys {
    PublicKeys::parse(name, &cosign_key(name)).unwrap()
}

fn bundle_seeds() -> &'static [BundleSeed] {
    static SEEDS: OnceLock<Vec<BundleSeed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<BundleSeed> = VALID_BUNDLES.iter().map(|n| BundleSeed::load(n)).collect();
        seeds.push(BundleSeed::oci_attestation());
        for s in &seeds {
            let o = s.verify(&s.bundle);
            assert!(o.verified, "seed {} must verify unmutated: {:?}", s.name, o.failure);
        }
        seeds
    })
}

fn cosign_seeds() -> &'static [CosignSeed] {
    static SEEDS: OnceLock<Vec<CosignSeed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mitr = Identity::exact("https://github.com/login/oauth", "mitr@redhat.com");
        let seeds = vec![
            CosignSeed::load("key-valid", CosignPolicy::with_keys(keys("cosign.pub"), TrustedRoot::new(), false)),
            CosignSeed::load("key-rekor-valid", CosignPolicy::with_keys(keys("cosign2.pub"), rekor_root(false), true)),
            CosignSeed::load("keyless-fulcio-rekor-valid", CosignPolicy::keyless(vec![mitr], rekor_root(true))),
        ];
        for s in &seeds {
            let o = s.verify(&s.payload, &s.annotations);
            assert!(o.verified, "seed {} must verify unmutated: {:?}", s.name, o.failure);
        }
        seeds
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => prop::collection::vec((any::<usize>(), 0u8..8), 1..5).prop_map(Mutation::Flip),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(original: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = original.to_vec();
    let len = original.len().max(1);
    match m {
        Mutation::Flip(flips) if !b.is_empty() => flips.iter().for_each(|(i, bit)| b[i % len] ^= 1 << bit),
        Mutation::Flip(_) => b.push(0),
        Mutation::Truncate(n) => b.truncate(n % len),
        Mutation::Insert(i, bytes) => {
            let i = i % (b.len() + 1);
            b.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let from = (i % len).min(b.len());
            b.drain(from..(from + n).min(b.len()));
        }
    }
    b
}

/// The DER certificates of the trusted root's timestamp authorities.
fn tsa_certificates(root_json: &Value) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    root_json["timestampAuthorities"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|ta| ta["certChain"]["certificates"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| b64.decode(c["rawBytes"].as_str()?).ok())
        .collect()
}

/// Arbitrary JSON, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,64}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON pointers to every value in `v`, the root excluded.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => {
            m.iter().map(|(k, c)| (format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), c)).collect()
        }
        Value::Array(a) => a.iter().enumerate().map(|(i, c)| (format!("{at}/{i}"), c)).collect(),
        _ => Vec::new(),
    };
    for (p, c) in children {
        out.push(p.clone());
        pointers(c, p, out);
    }
}

/// Why an accepted, changed bundle is still sound, or `None` if it is not.
/// Every difference between the two documents (ignoring keys only `mutated`
/// has: the parser ignores unknown keys) must be one of:
///
/// * under `publicKey`: the key hint, unsigned; the keys tried are the policy's;
/// * under `checkpoint`, when the verifier skipped the checkpoint (a Rekor v1
///   entry with a signed entry timestamp is proven by that; the
///   protobuf-specs mark the checkpoint REQUIRED and sigstore-go rejects
///   unknown keys, so this is a leniency, reported);
/// * under `timestampVerificationData`, when no timestamp was used;
/// * under `kindVersion`: the entry's kind and version are read from the
///   signed canonicalized body; the bundle's copy is not compared (a
///   leniency, reported);
/// * in a checkpoint's signature lines: lines of other signers (witness
///   cosignatures, not verified), and the key name on the log's own line
///   (`— NAME base64`): the signature is matched by its key hash and the name
///   is not compared (a deviation from the signed-note format, reported);
///   and the origin line, which is not compared with the log's expected
///   origin while the signature verifies (a leniency, reported);
/// * under `messageDigest`: for identification only, the bundle
///   specification says; the signature is checked over the artifact;
/// * unsigned parts of an RFC 3161 response: its `status`, the token's
///   `SignedData.digestAlgorithms` and the signer's `signatureAlgorithm`
///   (not checked: leniencies, reported), and the token's copies of
///   certificates the trusted root holds;
/// * under `inclusionProof` when the verifier skipped it and the signed
///   entry timestamp proved the entry (a v0.1 bundle needs no proof);
/// * under `inclusionPromise` when the entry was proven by its inclusion
///   proof, and `integratedTime` when no integrated time was used;
/// * an entry's own `logIndex` when no signed entry timestamp covers it (the
///   inclusion proof carries the index it proves; the outer copy is not
///   compared, a leniency, reported).
fn excuse(original: &Value, mutated: &Value, o: &Outcome, tsa_certs: &[Vec<u8>]) -> Option<&'static str> {
    let mut diffs = Vec::new();
    differences(original, mutated, &mut Vec::new(), &mut diffs);
    let status = |name: &str| o.checks.iter().find(|c| c.name == name).map(|c| c.status);
    let skipped = |name: &str| status(name) == Some(CheckStatus::Skipped);
    let no_set = status("tlog-set") != Some(CheckStatus::Passed);
    let mut why = None;
    for (path, a, b) in diffs {
        let under = |k: &str| path.iter().any(|p| p == k);
        why = Some(if under("publicKey") {
            "key hint"
        } else if under("messageDigest") {
            "identification only: the signature is checked over the artifact"
        } else if path.last().is_some_and(|p| p == "signedTimestamp") && only_unused_token_parts(a, b, tsa_certs) {
            "the response status outside the signed token"
        } else if under("kindVersion") {
            "kind and version come from the signed body"
        } else if path.last().is_some_and(|p| p == "envelope") && under("checkpoint") && only_unused_note_parts(a, b) {
            "checkpoint signature lines not relied on"
        } else if under("inclusionPromise") && no_set && status("inclusion-proof") == Some(CheckStatus::Passed) {
            "proven by the inclusion proof instead"
        } else if under("integratedTime") && o.integrated_time.is_none() {
            "integrated time unused"
        } else if path.len() == 4 && path[1] == "tlogEntries" && path[3] == "logIndex" && no_set {
            "the entry's own log index is unsigned without a signed entry timestamp"
        } else if under("inclusionProof") && skipped("inclusion-proof") && !no_set {
            "proven by the signed entry timestamp instead"
        } else if under("checkpoint") && skipped("checkpoint") {
            "checkpoint skipped"
        } else if under("timestampVerificationData") && o.timestamps.is_empty() {
            "timestamps unused"
        } else {
            return None;
        });
    }
    why
}

/// Paths where `original` and `mutated` differ, with both values (absent = `None`).
fn differences<'a>(
    original: &'a Value,
    mutated: &'a Value,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<&'a Value>, Option<&'a Value>)>,
) {
    match (original, mutated) {
        (Value::Object(o), Value::Object(m)) => {
            for (k, v) in o {
                path.push(k.clone());
                match m.get(k) {
                    Some(mv) => differences(v, mv, path, out),
                    None => out.push((path.clone(), Some(v), None)),
                }
                path.pop();
            }
        }
        (Value::Array(o), Value::Array(m)) if o.len() == m.len() => {
            for (i, (a, b)) in o.iter().zip(m).enumerate() {
                path.push(i.to_string());
                differences(a, b, path, out);
                path.pop();
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push((path.clone(), Some(a), Some(b))),
    }
}

/// Two checkpoint envelopes (signed notes) whose tree size, root hash and log
/// signature are equal: they differ only in the origin line, in other
/// signers' lines or in the name on the log's line (the first one).
fn only_unused_note_parts(a: Option<&Value>, b: Option<&Value>) -> bool {
    let (Some(Value::String(a)), Some(Value::String(b))) = (a, b) else { return false };
    let (Some((text_a, sigs_a)), Some((text_b, sigs_b))) = (a.split_once("\n\n"), b.split_once("\n\n")) else {
        return false;
    };
    // The log signs first; witnesses add their lines after it.
    let log_signature =
        sigs_a.lines().find(|l| l.starts_with("\u{2014} ")).and_then(|l| l.rsplit_once(' ').map(|p| p.1));
    let body = |t: &str| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    body(text_a) == body(text_b)
        && log_signature.is_some_and(|sig| sigs_b.lines().any(|l| l.ends_with(&format!(" {sig}"))))
}

/// Two RFC 3161 responses (base64) of one length differing only inside
/// elements no signature covers and the verifier does not rely on (see
/// [`unsigned_response_parts`]), or inside the token's copies of
/// certificates the trusted root holds (the root's own are used).
fn only_unused_token_parts(a: Option<&Value>, b: Option<&Value>, tsa_certs: &[Vec<u8>]) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(Value::String(a)), Some(Value::String(b))) = (a, b) else { return false };
    let (Ok(a), Ok(b)) = (b64.decode(a), b64.decode(b)) else { return false };
    let Some(mut unsigned) = unsigned_response_parts(&a) else { return false };
    for cert in tsa_certs {
        if let Some(at) = a.windows(cert.len()).position(|w| w == cert.as_slice()) {
            unsigned.push(at..at + cert.len());
        }
    }
    a.len() == b.len()
        && a.iter().zip(&b).enumerate().all(|(i, (x, y))| x == y || unsigned.iter().any(|r| r.contains(&i)))
}

/// `(start of content, end)` of the DER element at `at`.
fn der_element(d: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *d.get(at + 1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        (d.get(at + 2..at + 2 + n)?.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)), 2 + n)
    };
    Some((at + header, at + header + len))
}

/// The elements inside the element whose content is `start..end`: `(start, end, tag)` each.
fn der_children(d: &[u8], start: usize, end: usize) -> Option<Vec<(usize, usize, u8)>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let (_, next) = der_element(d, at)?;
        out.push((at, next, *d.get(at)?));
        at = next;
    }
    Some(out)
}

/// The ranges of the unsigned elements of a TimeStampResp the verifier does
/// not rely on: `status`, `SignedData.digestAlgorithms`, and the first
/// signer's `signatureAlgorithm` (the algorithm follows the TSA key).
fn unsigned_response_parts(d: &[u8]) -> Option<Vec<Range<usize>>> {
    let (resp, _) = der_element(d, 0)?;
    let (_, status_end) = der_element(d, resp)?;
    let (content_info, _) = der_element(d, status_end)?;
    let (_, oid_end) = der_element(d, content_info)?;
    let (explicit, _) = der_element(d, oid_end)?;
    let (signed_data, signed_end) = der_element(d, explicit)?;
    let parts = der_children(d, signed_data, signed_end)?;
    let (algorithms, signer_infos) = (parts.get(1)?, parts.last()?);
    let (first_signer, _) = der_element(d, der_element(d, signer_infos.0)?.0)?;
    let (_, signer_end) = der_element(d, der_element(d, signer_infos.0)?.0)?;
    let signer = der_children(d, first_signer, signer_end)?;
    let after_attrs = signer.iter().position(|c| c.2 == 0xa0).map_or(3, |i| i + 1);
    let algorithm = signer.get(after_attrs)?;
    Some(vec![resp..status_end, algorithms.0..algorithms.1, algorithm.0..algorithm.1])
}

/// The base64 bodies of the PEM blocks in `s`, whitespace removed: equal
/// bodies are the same certificates, however the text is laid out.
fn pem_bodies(s: &str) -> Vec<String> {
    s.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| b.split("-----END CERTIFICATE-----").next().unwrap_or_default().split_whitespace().collect())
        .collect()
}

#[track_caller]
fn assert_rejected(o: &Outcome, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!o.verified, "accepted after {}: {:?}", what, o.checks.iter().map(|c| &c.name).collect::<Vec<_>>());
    prop_assert!(o.failure.is_some(), "rejected without a failure after {}", what);
    Ok(())
}

proptest! {
    #[test]
    fn mutated_bundles_never_verify(which in 0usize..BUNDLE_SEEDS, m in mutation()) {
        let seed = &bundle_seeds()[which];
        let bytes = apply(&seed.bundle, &m);
        prop_assume!(bytes != seed.bundle);
        // Reformatting the same JSON (whitespace) is not a change of content.
        let same_json = serde_json::from_slice::<Value>(&bytes).ok() == serde_json::from_slice::<Value>(&seed.bundle).ok();
        prop_assume!(!same_json);
        let o = seed.verify(&bytes);
        if o.verified {
            let original: Value = serde_json::from_slice(&seed.bundle).unwrap();
            let excused =
                serde_json::from_slice::<Value>(&bytes).is_ok_and(|m| excuse(&original, &m, &o, &seed.tsa_certs).is_some());
            prop_assert!(excused, "{} accepted after {:?}", seed.name, m);
        } else {
            prop_assert!(o.failure.is_some(), "rejected without a failure");
        }
    }

    #[test]
    fn bundle_values_replaced_by_random_json_never_verify(which in 0usize..BUNDLE_SEEDS, pick in any::<prop::sample::Index>(), v in json_value()) {
        let seed = &bundle_seeds()[which];
        let mut doc: Value = serde_json::from_slice(&seed.bundle).unwrap();
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let field = pick.get(&all).clone();
        let slot = doc.pointer_mut(&field).unwrap();
        prop_assume!(*slot != v);
        *slot = v;
        let o = seed.verify(&serde_json::to_vec(&doc).unwrap());
        let original: Value = serde_json::from_slice(&seed.bundle).unwrap();
        if !(o.verified && excuse(&original, &doc, &o, &seed.tsa_certs).is_some()) {
            assert_rejected(&o, &format!("{} {field}", seed.name))?;
        }
    }

    #[test]
    fn random_bundles_never_verify(v in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..512), which in 0usize..BUNDLE_SEEDS) {
        let seed = &bundle_seeds()[which];
        assert_rejected(&seed.verify(&serde_json::to_vec(&v).unwrap()), "random JSON")?;
        assert_rejected(&seed.verify(&bytes), "random bytes")?;
    }

    #[test]
    fn mutated_cosign_payloads_never_verify(which in 0usize..3, m in mutation()) {
        let seed = &cosign_seeds()[which];
        let payload = apply(&seed.payload, &m);
        prop_assume!(payload != seed.payload);
        assert_rejected(&seed.verify(&payload, &seed.annotations), &format!("{} payload {m:?}", seed.name))?;
    }

    #[test]
    fn mutated_cosign_annotations_never_verify(which in 0usize..3, pick in any::<prop::sample::Index>(), m in mutation(), remove in any::<bool>()) {
        let seed = &cosign_seeds()[which];
        let keys: Vec<&String> = seed.annotations.keys().collect();
        let key = pick.get(&keys).to_string();
        let mut annotations = seed.annotations.clone();
        if remove {
            annotations.remove(&key);
            // Only the signature and what proves it are required; other annotations are informational.
            prop_assume!(key.starts_with("dev.cosignproject.cosign/") || key.starts_with("dev.sigstore.cosign/"));
        } else {
            let value = String::from_utf8_lossy(&apply(seed.annotations[&key].as_bytes(), &m)).into_owned();
            prop_assume!(value != seed.annotations[&key]);
            annotations.insert(key.clone(), value);
        }
        let o = seed.verify(&seed.payload, &annotations);
        let pem = key.ends_with("/certificate") || key == CHAIN;
        if o.verified && pem && !remove && pem_bodies(&annotations[&key]) == pem_bodies(&seed.annotations[&key]) {
            // Only the PEM layout changed (e.g. a trailing newline): the same certificates.
        } else if o.verified && key == BUNDLE && !remove && same_but_hex_case(&seed.annotations[&key], &annotations[&key]) {
            // The log id is hex, compared case-insensitively: the same id.
        } else if o.verified && key == CHAIN && !remove {
            let (intermediate, _) = root_copy(&seed.annotations[CHAIN]);
            prop_assert!(annotations[CHAIN].starts_with(intermediate), "{}: chain accepted after a change outside the root copy: {:?}", seed.name, m);
        } else {
            assert_rejected(&o, &format!("{} annotation {key} {m:?} remove={remove}", seed.name))?;
        }
    }
}

const CHAIN: &str = "dev.sigstore.cosign/chain";
const BUNDLE: &str = "dev.sigstore.cosign/bundle";

/// Two cosign bundle annotations equal but for the letter case of `Payload.logID` (hex).
fn same_but_hex_case(a: &str, b: &str) -> bool {
    let (Ok(mut a), Ok(mut b)) = (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) else {
        return false;
    };
    let ids =
        (a["Payload"]["logID"].as_str().map(str::to_lowercase), b["Payload"]["logID"].as_str().map(str::to_lowercase));
    a["Payload"]["logID"] = Value::Null;
    b["Payload"]["logID"] = Value::Null;
    a == b && ids.0.is_some() && ids.0 == ids.1
}

/// Splits a chain annotation after its first certificate; asserts that the
/// rest is exactly the trusted Fulcio root, so a change there is unused.
fn root_copy(chain: &str) -> (&str, &str) {
    const END: &str = "-----END CERTIFICATE-----";
    let cut = chain.find(END).expect("a PEM chain") + END.len();
    let (first, rest) = chain.split_at(cut);
    let body = |pem: &str| pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    assert_eq!(body(rest.trim()), body(&cosign_key("fulcio_v1.crt.pem")), "the chain ends with the trusted root");
    (first, rest)
}

#[test]
fn seeds_verify() {
    assert_eq!(bundle_seeds().len(), BUNDLE_SEEDS);
    assert_eq!(cosign_seeds().len(), 3);
    for s in cosign_seeds() {
        assert!(!s.annotations.is_empty(), "{} has annotations to mutate", s.name);
    }
}

/// The excuses are narrow: the same kinds of change to what the verdict does
/// rest on are rejected.
#[test]
fn signed_parts_next_to_the_excused_ones_are_checked() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let seed = bundle_seeds().iter().find(|s| s.name == "managed-key-happy-path").unwrap();
    let mut doc: Value = serde_json::from_slice(&seed.bundle).unwrap();
    let at = "/verificationMaterial/timestampVerificationData/rfc3161Timestamps/0/signedTimestamp";
    let mut token = b64.decode(doc.pointer(at).unwrap().as_str().unwrap()).unwrap();
    let last = token.len() - 1;
    token[last] ^= 1; // inside the TSA's signature
    *doc.pointer_mut(at).unwrap() = Value::from(b64.encode(&token));
    let o = seed.verify(&serde_json::to_vec(&doc).unwrap());
    assert!(!o.verified || o.timestamps.is_empty(), "a damaged TSA signature was used: {:?}", o.timestamps);

    let mut doc: Value = serde_json::from_slice(&seed.bundle).unwrap();
    let sig = "/messageSignature/signature";
    let mut bytes = b64.decode(doc.pointer(sig).unwrap().as_str().unwrap()).unwrap();
    bytes[10] ^= 1;
    *doc.pointer_mut(sig).unwrap() = Value::from(b64.encode(&bytes));
    assert!(!seed.verify(&serde_json::to_vec(&doc).unwrap()).verified, "a damaged message signature verified");
}
