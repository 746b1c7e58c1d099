//! Fuzzing Notation verification on stable Rust with proptest: the real
//! fixture envelopes of `shared/fixtures/notation` (PROVENANCE.md section 1),
//! each first shown to verify, then mutated (bit flips, truncations,
//! insertions, deletions, JSON fields replaced by random JSON, random bytes).
//! `verify` must never panic, must report a failed check whenever it does not
//! verify, and must never verify mutated bytes, except inside regions no
//! signature covers and the verifier does not use: the informational
//! `io.cncf.notary.signingAgent` entry of the unprotected header, and the copy
//! of the TSA root certificate a timestamp token carries in its certificate
//! bag (the root used is the trust store's own; a changed copy is ignored).
//!
//! Trust policy documents are fuzzed the same way from the fixture policies.
//! `PROPTEST_CASES` raises the number of cases (scripts/fuzz does).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use proptest::prelude::*;
use pullgate_notation::{SignatureOutcome, SubjectDescriptor, TrustPolicyDocument, TrustStore, verify};
use serde_json::{Value, json};

const REPO: &str = "localhost:5000/e2e";
const JWS: &str = "application/jose+json";
const COSE: &str = "application/cose";
const AGENT_KEY: &[u8] = b"io.cncf.notary.signingAgent";

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation"))
}

fn read(rel: &str) -> Vec<u8> {
    let path = fixtures().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A policy of one global-scope trust policy, as the notation-go vectors use.
fn policy(stores: &[&str], verify_timestamp: Option<&str>) -> TrustPolicyDocument {
    let mut sv = json!({ "level": "strict" });
    if let Some(v) = verify_timestamp {
        sv["verifyTimestamp"] = json!(v);
    }
    let doc = json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": "fuzz", "registryScopes": ["*"], "signatureVerification": sv,
            "trustStores": stores, "trustedIdentities": ["*"],
        }]
    });
    TrustPolicyDocument::parse(&serde_json::to_vec(&doc).unwrap()).expect("the fuzz policy parses")
}

/// One envelope that verifies as it is, with what it verifies against.
struct Seed {
    name: &'static str,
    media_type: &'static str,
    bytes: Vec<u8>,
    subject: SubjectDescriptor,
    policy: TrustPolicyDocument,
    /// Byte ranges a change inside which may still verify (unsigned and unused).
    unsigned: Vec<Range<usize>>,
}

impl Seed {
    fn verify(&self, bytes: &[u8]) -> SignatureOutcome {
        verify(&self.subject, REPO, self.media_type, bytes, &self.policy, store(), now())
    }
}

fn store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(|| TrustStore::load(&fixtures().join("truststore")).expect("fixture trust store loads"))
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The byte range of the signing-agent entry (key and value) in a JWS (JSON) or COSE (CBOR) envelope.
fn signing_agent_entry(bytes: &[u8], media_type: &str) -> Range<usize> {
    let Some(key) = bytes.windows(AGENT_KEY.len()).position(|w| w == AGENT_KEY) else { return 0..0 };
    let key_end = key + AGENT_KEY.len();
    if media_type == JWS {
        // "key":"value" — from the opening quote of the key to the closing quote of the value.
        let value_start = key_end + 2;
        let close = bytes[value_start + 1..].iter().position(|b| *b == b'"').expect("a closed JSON string");
        (key - 1)..(value_start + 1 + close + 1)
    } else {
        // CBOR: a 2-byte text header (0x78 0x1b) before the key, a 1-byte one (0x60 + len) before the value.
        let len = usize::from(bytes[key_end] - 0x60);
        (key - 2)..(key_end + 1 + len)
    }
}

/// The signing-agent entry, then every copy of a TSA trust-store root inside
/// the envelope's timestamp token (raw DER in COSE, base64 in JWS).
fn unsigned_regions(bytes: &[u8], media_type: &str) -> Vec<Range<usize>> {
    let mut out = vec![signing_agent_entry(bytes, media_type)];
    for root in tsa_roots() {
        if media_type == COSE {
            if let Some(at) = bytes.windows(root.len()).position(|w| w == root.as_slice()) {
                out.push(at..at + root.len());
            }
            continue;
        }
        let doc: Value = serde_json::from_slice(bytes).expect("a JWS seed is JSON");
        let Some(text) = doc["header"]["io.cncf.notary.timestampSignature"].as_str() else { continue };
        let token = b64_decode(text, B64STD);
        if let Some(at) = token.windows(root.len()).position(|w| w == root.as_slice()) {
            let base = bytes.windows(text.len()).position(|w| w == text.as_bytes()).expect("the token text");
            // Base64 characters whose six bits all fall inside the copy.
            out.push(base + (at * 8).div_ceil(6)..base + (at + root.len()) * 8 / 6);
        }
    }
    out
}

/// The DER certificates of the fixture trust store's TSA roots.
fn tsa_roots() -> Vec<Vec<u8>> {
    let dir = fixtures().join("truststore/x509/tsa");
    let mut out = Vec::new();
    for store in std::fs::read_dir(&dir).unwrap() {
        for file in std::fs::read_dir(store.unwrap().path()).unwrap() {
            let data = std::fs::read(file.unwrap().path()).unwrap();
            let Ok(text) = std::str::from_utf8(&data) else {
                out.push(data);
                continue;
            };
            for block in text.split("-----BEGIN CERTIFICATE-----").skip(1) {
                let body: String = block.split("-----END").next().unwrap().split_whitespace().collect();
                out.push(b64_decode(&body, B64STD));
            }
        }
    }
    out
}

fn layout_blob(layout: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    read(&format!("oci-layouts/{layout}/blobs/sha256/{hex}"))
}

/// The signature envelope of `e2e-valid-signature` and the image it signs.
fn e2e_seed() -> Seed {
    let layout = "e2e-valid-signature";
    let index: Value = serde_json::from_slice(&read(&format!("oci-layouts/{layout}/index.json"))).unwrap();
    let subject_digest = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
    let (media_type, bytes) = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| serde_json::from_slice::<Value>(&layout_blob(layout, d["digest"].as_str()?)).ok())
        .find(|m| m["subject"]["digest"] == subject_digest)
        .map(|m| {
            let layer = &m["layers"][0];
            (layer["mediaType"].as_str().unwrap().to_string(), layout_blob(layout, layer["digest"].as_str().unwrap()))
        })
        .expect("the layout holds a signature for the e2e image");
    assert_eq!(media_type, JWS);
    let subject = SubjectDescriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: subject_digest.into(),
        size: 517,
    };
    let policy = TrustPolicyDocument::parse(&read("trustpolicy/trustpolicy.json")).unwrap();
    let unsigned = unsigned_regions(&bytes, JWS);
    Seed { name: "e2e-valid-signature (JWS)", media_type: JWS, bytes, subject, policy, unsigned }
}

fn alpine_subject() -> SubjectDescriptor {
    let bytes = read("subjects/sha256-19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0.json");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    SubjectDescriptor {
        media_type: manifest["mediaType"].as_str().unwrap().to_string(),
        digest: format!("sha256:{}", sha256_hex(&bytes)),
        size: bytes.len() as u64,
    }
}

fn d1() -> SubjectDescriptor {
    SubjectDescriptor {
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        digest: "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda".into(),
        size: 528,
    }
}

/// Every seed, each checked to verify unmutated, so a mutation that fails proves something.
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let loose = |name: &'static str, media_type: &'static str, subject, policy| {
            let bytes = read(&format!("envelopes/{name}"));
            let unsigned = unsigned_regions(&bytes, media_type);
            Seed { name, media_type, bytes, subject, policy, unsigned }
        };
        let alpine = || policy(&["ca:extracted-alpine-2123"], None);
        let tsa = || policy(&["ca:alpine-2033", "tsa:globalsign-r6"], Some("always"));
        let all = vec![
            e2e_seed(),
            loose("jws-selfsigned-alpine.sig", JWS, alpine_subject(), alpine()),
            loose("cose-selfsigned-alpine.sig", COSE, alpine_subject(), alpine()),
            loose("jws-timestamped.sig", JWS, d1(), tsa()),
            loose("cose-timestamped.sig", COSE, d1(), tsa()),
        ];
        for s in &all {
            let o = s.verify(&s.bytes);
            assert!(o.verified, "seed {} must verify unmutated: {o:#?}", s.name);
            assert!(!s.unsigned[0].is_empty(), "seed {} has a signing-agent entry", s.name);
        }
        all
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

/// The mutated bytes and the `(start, end)` spans of original bytes the mutation touched.
fn apply(original: &[u8], m: &Mutation) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut b = original.to_vec();
    let len = original.len();
    match m {
        Mutation::Flip(flips) => {
            let at: Vec<usize> = flips.iter().map(|(i, _)| i % len).collect();
            flips.iter().zip(&at).for_each(|((_, bit), i)| b[*i] ^= 1 << bit);
            (b, at.iter().map(|i| (*i, i + 1)).collect())
        }
        Mutation::Truncate(n) => {
            b.truncate(n % len);
            (b, vec![(n % len, len)])
        }
        Mutation::Insert(i, bytes) => {
            let i = i % (len + 1);
            b.splice(i..i, bytes.iter().copied());
            (b, vec![(i, i + 1)])
        }
        Mutation::Delete(i, n) => {
            let i = i % len;
            let end = (i + n).min(len);
            b.drain(i..end);
            (b, vec![(i, end)])
        }
    }
}

/// Arbitrary JSON, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        "[A-Za-z0-9_-]{0,64}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z.]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Where a JSON-level mutation of a JWS envelope goes.
const JWS_FIELDS: [&str; 7] = [
    "/payload",
    "/protected",
    "/signature",
    "/header",
    "/header/x5c",
    "/header/x5c/0",
    "/header/io.cncf.notary.timestampSignature",
];

#[track_caller]
fn assert_failed_cleanly(seed: &Seed, o: &SignatureOutcome, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!o.verified, "{} verified after {}: {:#?}", seed.name, what, o);
    prop_assert!(o.failure().is_some(), "{}: not verified but no failed check after {}: {:#?}", seed.name, what, o);
    Ok(())
}

proptest! {
    #[test]
    fn mutated_envelopes_never_verify(which in 0usize..5, m in mutation()) {
        let seed = &seeds()[which];
        let (bytes, touched) = apply(&seed.bytes, &m);
        prop_assume!(bytes != seed.bytes);
        let o = seed.verify(&bytes);
        let only_unsigned =
            touched.iter().all(|(start, end)| seed.unsigned.iter().any(|r| *start >= r.start && *end <= r.end));
        if o.verified {
            prop_assert!(only_unsigned, "{} verified after {:?} (bytes {:?}): {:#?}", seed.name, m, touched, o);
        } else {
            prop_assert!(o.failure().is_some(), "{}: not verified but no failed check: {:#?}", seed.name, o);
        }
    }

    #[test]
    fn jws_fields_replaced_by_random_json_never_verify(which in prop::sample::select(vec![0usize, 1, 3]), field in prop::sample::select(JWS_FIELDS.to_vec()), v in json_value()) {
        let seed = &seeds()[which];
        let mut doc: Value = serde_json::from_slice(&seed.bytes).unwrap();
        let Some(slot) = doc.pointer_mut(field) else { return Ok(()) };
        prop_assume!(*slot != v);
        *slot = v;
        assert_failed_cleanly(seed, &seed.verify(&serde_json::to_vec(&doc).unwrap()), field)?;
    }

    #[test]
    fn re_signed_looking_protected_headers_never_verify(which in prop::sample::select(vec![0usize, 1, 3]), key in "[a-z.]{1,24}", v in json_value()) {
        // Decode the protected header, change one attribute, re-encode: the
        // signature covers the header's text, so nothing re-encoded may verify.
        let seed = &seeds()[which];
        let mut doc: Value = serde_json::from_slice(&seed.bytes).unwrap();
        let header = b64url_decode(doc["protected"].as_str().unwrap());
        let mut header: Value = serde_json::from_slice(&header).unwrap();
        prop_assume!(header.get(&key) != Some(&v));
        header[&key] = v;
        doc["protected"] = Value::from(b64url_encode(&serde_json::to_vec(&header).unwrap()));
        assert_failed_cleanly(seed, &seed.verify(&serde_json::to_vec(&doc).unwrap()), "a protected-header change")?;
    }

    #[test]
    fn random_bytes_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..2048), cose in any::<bool>(), which in 0usize..5) {
        let seed = &seeds()[which];
        let media_type = if cose { COSE } else { JWS };
        let o = verify(&seed.subject, REPO, media_type, &bytes, &seed.policy, store(), now());
        prop_assert!(!o.verified && o.failure().is_some(), "{:#?}", o);
    }

    #[test]
    fn random_json_envelopes_never_verify(v in json_value(), which in 0usize..5) {
        let seed = &seeds()[which];
        let bytes = serde_json::to_vec(&v).unwrap();
        let o = verify(&seed.subject, REPO, JWS, &bytes, &seed.policy, store(), now());
        prop_assert!(!o.verified && o.failure().is_some(), "{:#?}", o);
    }

    #[test]
    fn mutated_trust_policies_never_panic(which in 0usize..TRUST_POLICIES.len(), m in mutation(), repo in "[a-z0-9.:/-]{0,40}") {
        let original = read(&format!("trustpolicy/{}", TRUST_POLICIES[which]));
        let (bytes, _) = apply(&original, &m);
        if let Ok(doc) = TrustPolicyDocument::parse(&bytes) {
            let _ = doc.applicable_policy(&repo);
            let _ = doc.applicable_policy(REPO);
            let seed = &seeds()[0];
            let o = verify(&seed.subject, REPO, seed.media_type, &seed.bytes, &doc, store(), now());
            prop_assert!(o.verified || o.failure().is_some(), "{:#?}", o);
        }
    }

    #[test]
    fn random_json_trust_policies_never_panic(v in json_value(), policies in prop::collection::vec(json_value(), 0..3), repo in "[a-z0-9.:/*-]{0,40}") {
        let _ = TrustPolicyDocument::parse(&serde_json::to_vec(&v).unwrap());
        let doc = json!({ "version": "1.0", "trustPolicies": policies });
        if let Ok(doc) = TrustPolicyDocument::parse(&serde_json::to_vec(&doc).unwrap()) {
            let _ = doc.applicable_policy(&repo);
        }
    }
}

/// The fixture trust policies (all must parse unmutated).
const TRUST_POLICIES: [&str; 10] = [
    "audit_trustpolicy.json",
    "invalid_trusted_identity_trustpolicy.json",
    "override_strict_trustpolicy.json",
    "permissive_trustpolicy.json",
    "registry_scope_trustpolicy.json",
    "skip_trustpolicy.json",
    "timestamp_after_cert_expiry_trustpolicy.json",
    "timestamp_trustpolicy.json",
    "trustpolicy.json",
    "valid_trusted_identity_trustpolicy.json",
];

#[test]
fn seeds_verify_and_fixture_policies_parse() {
    assert_eq!(seeds().len(), 5);
    for p in TRUST_POLICIES {
        TrustPolicyDocument::parse(&read(&format!("trustpolicy/{p}"))).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    // The allowed region is really unsigned: changing it keeps the verdict.
    for seed in seeds() {
        let mut bytes = seed.bytes.clone();
        let i = seed.unsigned[0].end - 2;
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        assert!(seed.verify(&bytes).verified, "{}: the signing agent is informational", seed.name);
        // A timestamp token's copy of its TSA root is not used: the trust store's root is.
        let timestamped = seed.name.contains("timestamped");
        assert_eq!(seed.unsigned.len(), if timestamped { 2 } else { 1 }, "{}: {:?}", seed.name, seed.unsigned);
        if let Some(root) = seed.unsigned.get(1) {
            let mut bytes = seed.bytes.clone();
            let i = root.start + root.len() / 2;
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert!(seed.verify(&bytes).verified, "{}: the token's root copy is unused", seed.name);
        }
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64url_decode(s: &str) -> Vec<u8> {
    b64_decode(s, B64URL)
}

/// Decodes unpadded or padded base64 in `alphabet`.
fn b64_decode(s: &str, alphabet: &[u8; 64]) -> Vec<u8> {
    let s = s.trim_end_matches('=');
    let val = |c: u8| alphabet.iter().position(|x| *x == c).expect("base64") as u32;
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | val(*c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn b64url_encode(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | u32::from(*c) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
