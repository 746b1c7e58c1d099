//! Every row of the cosign fixture table (fixtures/cosign, PROVENANCE.md section 2): one
//! layer of a cosign `.sig` manifest each, read from upstream's `signature-1` file (the
//! containers/image `dir:` form holding the layer's media type, payload and annotations),
//! verified for the digest of the case's `manifest.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use base64::Engine as _;
use pullgate_sigstore::{
    ANNOTATION_BUNDLE, CheckStatus, CosignLayer, CosignPolicy, FailureClass, Identity, Matcher, Outcome, PublicKeys,
    Signer, TrustedRoot, verify_cosign_signature,
};
use sha2::{Digest as _, Sha256};

fn cosign_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/cosign"))
}

fn key_text(name: &str) -> String {
    fs::read_to_string(cosign_dir().join("keys").join(name)).unwrap()
}

fn keys(name: &str) -> PublicKeys {
    PublicKeys::parse(name, &key_text(name)).unwrap()
}

/// The layer of one case: media type, payload blob, annotations; and the manifest digest.
struct Layer {
    media_type: String,
    payload: Vec<u8>,
    annotations: BTreeMap<String, String>,
    manifest_digest: String,
}

impl Layer {
    fn load(case: &str) -> Layer {
        let dir = cosign_dir().join(case);
        let raw = fs::read(dir.join("signature-1")).unwrap();
        let json = raw.strip_prefix(b"\x00sigstore-json\n".as_slice()).expect("dir: transport sigstore-json prefix");
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        let payload = base64::engine::general_purpose::STANDARD.decode(v["payload"].as_str().unwrap()).unwrap();
        // The extracted payload.json is byte-identical to the layer blob.
        assert_eq!(payload, fs::read(dir.join("payload.json")).unwrap(), "{case}: payload.json");
        let annotations = v["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let manifest = fs::read(dir.join("manifest.json")).unwrap();
        Layer {
            media_type: v["mimeType"].as_str().unwrap().to_string(),
            payload,
            annotations,
            manifest_digest: format!("sha256:{:x}", Sha256::digest(&manifest)),
        }
    }

    fn verify(&self, policy: &CosignPolicy) -> Outcome {
        let layer =
            CosignLayer { media_type: &self.media_type, payload: &self.payload, annotations: &self.annotations };
        verify_cosign_signature(&self.manifest_digest, &layer, policy, SystemTime::now())
    }
}

fn describe(o: &Outcome) -> String {
    let mut s = format!("verified={} failure={:?}\n", o.verified, o.failure);
    for c in &o.checks {
        s.push_str(&format!("    {:?} {}: {}\n", c.status, c.name, c.detail));
    }
    s
}

fn key_policy(name: &str) -> CosignPolicy {
    CosignPolicy::with_keys(keys(name), TrustedRoot::new(), false)
}

fn rekor_root() -> TrustedRoot {
    let mut root = TrustedRoot::new();
    root.add_tlog_key_pem("https://rekor.sigstore.dev", &key_text("rekor-public-good.pub")).unwrap();
    root
}

fn keyless_root() -> TrustedRoot {
    let mut root = rekor_root();
    root.add_certificate_authority_pem("https://fulcio.sigstore.dev", &key_text("fulcio_v1.crt.pem")).unwrap();
    root
}

fn mitr() -> Identity {
    Identity::exact("https://github.com/login/oauth", "mitr@redhat.com")
}

#[test]
fn key_valid() {
    let layer = Layer::load("key-valid");
    assert_eq!(layer.manifest_digest, "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00");
    let o = layer.verify(&key_policy("cosign.pub"));
    assert!(o.verified, "{}", describe(&o));
    let id = match &o.signer {
        Some(Signer::Key { name, key_id }) => {
            assert_eq!(name, "cosign.pub");
            key_id.clone()
        }
        other => panic!("signer {other:?}"),
    };
    assert_eq!(id, keys("cosign.pub").iter().next().unwrap().key_id());
    assert_eq!(o.log_index, None);

    let o = layer.verify(&key_policy("cosign2.pub"));
    assert_eq!(o.failure_class(), Some(FailureClass::Signature), "{}", describe(&o));

    // Both keys trusted: the right one is found.
    let mut both = keys("cosign2.pub");
    both.add_pem("cosign.pub", &key_text("cosign.pub")).unwrap();
    let o = layer.verify(&CosignPolicy::with_keys(both, TrustedRoot::new(), false));
    assert!(matches!(&o.signer, Some(Signer::Key { name, .. }) if name == "cosign.pub"), "{}", describe(&o));

    // Without a Rekor entry, a policy that requires one rejects it.
    let o = layer.verify(&CosignPolicy::with_keys(keys("cosign.pub"), rekor_root(), true));
    assert_eq!(o.failure_class(), Some(FailureClass::TlogMissing), "{}", describe(&o));

    // Another image digest.
    let layer = Layer { manifest_digest: format!("sha256:{}", "0".repeat(64)), ..Layer::load("key-valid") };
    assert_eq!(layer.verify(&key_policy("cosign.pub")).failure_class(), Some(FailureClass::DigestMismatch));
}

#[test]
fn key_valid_containers_image_signer() {
    let layer = Layer::load("key-valid-containers-image-signer");
    let o = layer.verify(&key_policy("cosign.pub"));
    assert!(o.verified, "{}", describe(&o));
    assert_eq!(layer.verify(&key_policy("cosign2.pub")).failure_class(), Some(FailureClass::Signature));
}

#[test]
fn key_rekor_valid() {
    let layer = Layer::load("key-rekor-valid");
    let policy = CosignPolicy::with_keys(keys("cosign2.pub"), rekor_root(), true);
    let o = layer.verify(&policy);
    assert!(o.verified, "{}", describe(&o));
    assert_eq!(o.log_index, Some(11_608_800));
    assert_eq!(o.integrated_time, Some(1_674_251_859));
    for name in ["tlog-body", "tlog-set"] {
        assert_eq!(o.checks.iter().find(|c| c.name == name).map(|c| c.status), Some(CheckStatus::Passed), "{name}");
    }

    // The wrong key.
    let o = layer.verify(&CosignPolicy::with_keys(keys("cosign.pub"), rekor_root(), true));
    assert_eq!(o.failure_class(), Some(FailureClass::Signature), "{}", describe(&o));

    // The SET checked with another key under the production log's ID.
    let cosign_der = pem_body(&key_text("cosign.pub"));
    let forged = format!(
        r#"{{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[{{
            "baseUrl":"https://rekor.example","hashAlgorithm":"SHA2_256",
            "publicKey":{{"rawBytes":"{cosign_der}","keyDetails":"PKIX_ECDSA_P256_SHA_256"}},
            "logId":{{"keyId":"wNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0="}}}}]}}"#
    );
    let root = TrustedRoot::parse(forged.as_bytes()).unwrap();
    let o = layer.verify(&CosignPolicy::with_keys(keys("cosign2.pub"), root, true));
    assert_eq!(o.failure_class(), Some(FailureClass::TlogSet), "{}", describe(&o));

    // A trust root whose only log is another one: the entry's log is unknown.
    let mut other = TrustedRoot::new();
    other.add_tlog_key_pem("https://rekor.example", &key_text("cosign.pub")).unwrap();
    let o = layer.verify(&CosignPolicy::with_keys(keys("cosign2.pub"), other, true));
    assert_eq!(o.failure_class(), Some(FailureClass::UnknownLog), "{}", describe(&o));

    // A damaged Rekor bundle body no longer binds this payload.
    let mut damaged = Layer::load("key-rekor-valid");
    let bundle = damaged.annotations.get_mut(ANNOTATION_BUNDLE).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(bundle).unwrap();
    v["Payload"]["integratedTime"] = serde_json::json!(1_674_251_860);
    *bundle = v.to_string();
    let o = damaged.verify(&policy);
    assert_eq!(o.failure_class(), Some(FailureClass::TlogSet), "{}", describe(&o));
}

/// The base64 body of a single-block PEM.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn keyless_fulcio_rekor_valid() {
    let layer = Layer::load("keyless-fulcio-rekor-valid");
    let policy = CosignPolicy::keyless(vec![mitr()], keyless_root());
    let o = layer.verify(&policy);
    assert!(o.verified, "{}", describe(&o));
    assert_eq!(
        o.signer,
        Some(Signer::Certificate {
            subject: "mitr@redhat.com".into(),
            issuer: "https://github.com/login/oauth".into()
        })
    );
    assert_eq!(o.log_index, Some(11_605_770));
    assert_eq!(o.integrated_time, Some(1_674_247_893));

    // Another identity, another issuer, an anchored regex that matches and one that does not.
    for (id, ok) in [
        (Identity::exact("https://github.com/login/oauth", "someone@redhat.com"), false),
        (Identity::exact("https://accounts.google.com", "mitr@redhat.com"), false),
        (
            Identity::new(Matcher::exact("https://github.com/login/oauth"), Matcher::regex(r".*@redhat\.com").unwrap()),
            true,
        ),
        (
            Identity::new(Matcher::exact("https://github.com/login/oauth"), Matcher::regex(r"mitr@redhat").unwrap()),
            false,
        ),
        (Identity::new(Matcher::regex(r"https://github\.com/.*").unwrap(), Matcher::exact("mitr@redhat.com")), true),
    ] {
        let o = layer.verify(&CosignPolicy::keyless(vec![id.clone()], keyless_root()));
        if ok {
            assert!(o.verified, "{id}: {}", describe(&o));
        } else {
            assert_eq!(o.failure_class(), Some(FailureClass::Identity), "{id}: {}", describe(&o));
        }
    }

    // No Fulcio root: the chain leads nowhere.
    let o = layer.verify(&CosignPolicy::keyless(vec![mitr()], rekor_root()));
    assert_eq!(o.failure_class(), Some(FailureClass::Certificate), "{}", describe(&o));

    // Without its Rekor entry the expired certificate has no verified time.
    let mut no_tlog = Layer::load("keyless-fulcio-rekor-valid");
    no_tlog.annotations.remove(ANNOTATION_BUNDLE);
    let o = no_tlog.verify(&policy);
    assert_eq!(o.failure_class(), Some(FailureClass::TlogMissing), "{}", describe(&o));
    let mut relaxed = CosignPolicy::keyless(vec![mitr()], keyless_root());
    relaxed.require_tlog = false;
    let o = no_tlog.verify(&relaxed);
    assert_eq!(o.failure_class(), Some(FailureClass::NoVerifiedTime), "{}", describe(&o));

    // The key-based policy ignores the certificate and finds no trusted key.
    let o = layer.verify(&key_policy("cosign.pub"));
    assert_eq!(o.failure_class(), Some(FailureClass::Signature), "{}", describe(&o));
}

#[test]
fn key_modified_manifest() {
    let layer = Layer::load("key-modified-manifest");
    assert!(layer.manifest_digest.starts_with("sha256:d9dcafdb"), "{}", layer.manifest_digest);
    let o = layer.verify(&key_policy("cosign.pub"));
    assert_eq!(o.failure_class(), Some(FailureClass::DigestMismatch), "{}", describe(&o));
    // The signature itself was valid.
    assert_eq!(o.checks.iter().find(|c| c.name == "signature").map(|c| c.status), Some(CheckStatus::Passed));
}

#[test]
fn key_unknown_signer() {
    let layer = Layer::load("key-unknown-signer");
    for key in ["cosign.pub", "cosign2.pub"] {
        let o = layer.verify(&key_policy(key));
        assert_eq!(o.failure_class(), Some(FailureClass::Signature), "{key}: {}", describe(&o));
    }
}

#[test]
fn not_simplesigning_attachment() {
    let layer = Layer::load("not-simplesigning-attachment");
    assert_eq!(layer.media_type, "text/plain");
    let o = layer.verify(&key_policy("cosign.pub"));
    assert_eq!(o.failure_class(), Some(FailureClass::Payload), "{}", describe(&o));
    // Presented under the simple-signing media type it is still rejected: its signature
    // annotation does not verify over it with either key (checked before the payload is read).
    let relabelled = Layer { media_type: pullgate_sigstore::SIMPLE_SIGNING_MEDIA_TYPE.into(), ..layer };
    let mut both = keys("cosign.pub");
    both.add_pem("cosign2.pub", &key_text("cosign2.pub")).unwrap();
    let o = relabelled.verify(&CosignPolicy::with_keys(both, TrustedRoot::new(), false));
    assert_eq!(o.failure_class(), Some(FailureClass::Signature), "{}", describe(&o));
}

#[test]
fn anchored_regex_does_not_match_a_longer_domain() {
    let m = Matcher::regex(r".*@acme\.com").unwrap();
    assert!(m.matches("x@acme.com"));
    assert!(!m.matches("x@acme.com.evil.io"));
}
