//! cosign's image attestation bundle (fixtures/sigstore-bundle/cosign-oci-attestation,
//! PROVENANCE.md section 3): a v0.3 bundle with a DSSE envelope holding an in-toto Statement
//! v0.1 about image digest 732112…0aa4, a Fulcio certificate for cody@soyland.com and a Rekor
//! dsse 0.0.1 entry, verified with cosign's `trusted_root_pgi.json`.

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use pullgate_sigstore::{
    Artifact, BundlePolicy, FailureClass, Identity, Matcher, Outcome, ProvenancePolicy, Signer, TrustedRoot,
    verify_bundle,
};

const DIGEST: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
const ISSUER: &str = "https://github.com/login/oauth";

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/sigstore-bundle/cosign-oci-attestation"))
}

fn bundle() -> Vec<u8> {
    fs::read(dir().join("oci-attestation.sigstore.json")).unwrap()
}

fn root() -> TrustedRoot {
    TrustedRoot::parse(&fs::read(dir().join("trusted_root_pgi.json")).unwrap()).unwrap()
}

fn verify(digest: &str, identity: Identity) -> Outcome {
    verify_bundle(
        &bundle(),
        Artifact::Digest(digest),
        &BundlePolicy::keyless(root(), vec![identity]),
        SystemTime::now(),
    )
}

fn describe(o: &Outcome) -> String {
    let mut s = format!("verified={} failure={:?}\n", o.verified, o.failure);
    for c in &o.checks {
        s.push_str(&format!("    {:?} {}: {}\n", c.status, c.name, c.detail));
    }
    s
}

#[test]
fn valid_for_the_image_digest_and_identity() {
    let o = verify(DIGEST, Identity::exact(ISSUER, "cody@soyland.com"));
    assert!(o.verified, "{}", describe(&o));
    assert_eq!(o.signer, Some(Signer::Certificate { subject: "cody@soyland.com".into(), issuer: ISSUER.into() }));
    assert_eq!(o.log_index, Some(175_508_996));
    // 2025-02-28T19:18:11Z, inside the (long expired) certificate's ten minutes.
    assert_eq!(o.integrated_time, Some(1_740_770_291));
    assert_eq!(o.predicate_type.as_deref(), Some("https://cosign.sigstore.dev/attestation/v1"));
    // The bare hex form of the digest is accepted too.
    let o = verify(DIGEST.trim_start_matches("sha256:"), Identity::exact(ISSUER, "cody@soyland.com"));
    assert!(o.verified, "{}", describe(&o));
}

#[test]
fn fails_for_another_digest() {
    let other = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00";
    let o = verify(other, Identity::exact(ISSUER, "cody@soyland.com"));
    assert_eq!(o.failure_class(), Some(FailureClass::DigestMismatch), "{}", describe(&o));
}

#[test]
fn fails_for_another_identity() {
    for id in [
        Identity::exact(ISSUER, "mitr@redhat.com"),
        Identity::exact("https://token.actions.githubusercontent.com", "cody@soyland.com"),
        Identity::new(Matcher::exact(ISSUER), Matcher::regex(r"cody@soyland\.co").unwrap()),
    ] {
        let o = verify(DIGEST, id.clone());
        assert_eq!(o.failure_class(), Some(FailureClass::Identity), "{id}: {}", describe(&o));
    }
    let o = verify(DIGEST, Identity::new(Matcher::exact(ISSUER), Matcher::regex(r".*@soyland\.com").unwrap()));
    assert!(o.verified, "{}", describe(&o));
}

#[test]
fn not_slsa_provenance() {
    let mut policy = BundlePolicy::keyless(root(), vec![Identity::exact(ISSUER, "cody@soyland.com")]);
    policy.provenance = Some(ProvenancePolicy::default());
    let o = verify_bundle(&bundle(), Artifact::Digest(DIGEST), &policy, SystemTime::now());
    assert_eq!(o.failure_class(), Some(FailureClass::Provenance), "{}", describe(&o));
}

#[test]
fn the_trust_root_decides_log_and_certificate_authority() {
    // The public-good root of the conformance suite has the same Fulcio CAs: still valid.
    let public_good = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/sigstore-bundle/trusted_root.public-good.json"
    ));
    let pg = TrustedRoot::parse(&fs::read(public_good).unwrap()).unwrap();
    let policy = BundlePolicy::keyless(pg, vec![Identity::exact(ISSUER, "cody@soyland.com")]);
    let o = verify_bundle(&bundle(), Artifact::Digest(DIGEST), &policy, SystemTime::now());
    assert!(o.verified, "{}", describe(&o));
    // The staging root of rekor2-happy-path: neither the log nor the CA.
    let staging = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/sigstore-bundle/conformance/rekor2-happy-path/trusted_root.json"
    ));
    let st = TrustedRoot::parse(&fs::read(staging).unwrap()).unwrap();
    let policy = BundlePolicy::keyless(st, vec![Identity::exact(ISSUER, "cody@soyland.com")]);
    let o = verify_bundle(&bundle(), Artifact::Digest(DIGEST), &policy, SystemTime::now());
    assert_eq!(o.failure_class(), Some(FailureClass::UnknownLog), "{}", describe(&o));
}
