//! Every case of the sigstore-conformance `bundle-verify` suite (fixtures/sigstore-bundle,
//! PROVENANCE.md section 3), run with the suite's harness conventions: artifact
//! `<case>/artifact` or `../a.txt` (DSSE bundles: its SHA-256 digest), identity and issuer from
//! `<case>/identity` / `<case>/issuer` or the beacon workflow defaults, `key.pub` for
//! key-based verification, `trusted_root.json` or the public-good root. Every `_fail` case
//! must be rejected with the stated class of failure.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pullgate_sigstore::{
    Artifact, BundlePolicy, CheckStatus, FailureClass, Identity, KeyError, Matcher, Outcome, ProvenancePolicy,
    PublicKeys, Signer, TrustedRoot, verify_bundle,
};
use sha2::{Digest as _, Sha256};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/sigstore-bundle"))
}

fn conformance() -> PathBuf {
    fixtures().join("conformance")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Valid,
    Fail(FailureClass),
    /// The case's key.pub cannot be loaded, so no verification can be configured.
    KeyRejected,
}

use Expect::{Fail, KeyRejected, Valid};

const CASES: &[(&str, Expect)] = &[
    ("bundle-empty-certificate-chain_fail", Fail(FailureClass::Certificate)),
    ("bundle-from-wrong-instance_fail", Fail(FailureClass::UnknownLog)),
    ("bundle-invalid-base64-signature_fail", Fail(FailureClass::Parse)),
    ("bundle-malformed-json_fail", Fail(FailureClass::Parse)),
    ("bundle-unknown-version_fail", Fail(FailureClass::Parse)),
    ("bundle-with-root-cert_fail", Fail(FailureClass::Certificate)),
    ("checkpoint-wrong-roothash_fail", Fail(FailureClass::Checkpoint)),
    ("dsse-invalid-sig_fail", Fail(FailureClass::Signature)),
    ("dsse-mismatch-envelope_fail", Fail(FailureClass::TlogBody)),
    ("happy-path-intoto-in-dsse-v3", Valid),
    ("happy-path-v0.1", Valid),
    ("happy-path-v0.2", Valid),
    ("happy-path-v0.3", Valid),
    ("happy-path-v0.3-new-mediaType", Valid),
    ("inclusion-proof-corrupted-hash_fail", Fail(FailureClass::InclusionProof)),
    ("incorrect-public-key_fail", Fail(FailureClass::TlogBody)),
    ("integrated-time-in-future_fail", Fail(FailureClass::TimeNotInValidity)),
    ("invalid-inclusion-proof_fail", Fail(FailureClass::InclusionProof)),
    ("managed-key-happy-path", Valid),
    ("managed-key-no-key_fail", Fail(FailureClass::Material)),
    ("managed-key-wrong-key_fail", KeyRejected),
    ("message-digest-mismatch_fail", Fail(FailureClass::DigestMismatch)),
    ("rekor2-dsse-happy-path", Valid),
    ("rekor2-happy-path", Valid),
    ("rekor2-no-inclusion-proof_fail", Fail(FailureClass::InclusionProof)),
    ("rekor2-no-timestamp_fail", Fail(FailureClass::NoVerifiedTime)),
    ("rekor2-timestamp-payload-mismatch_fail", Fail(FailureClass::Timestamp)),
    ("rekor2-timestamp-untrusted-tsa-with-embedded-cert_fail", Fail(FailureClass::UntrustedTsa)),
    ("rekor2-timestamp-with-expired-cert-chain", Valid),
    ("set-invalid-signature_fail", Fail(FailureClass::TlogSet)),
    ("signature-mismatch_fail", Fail(FailureClass::Signature)),
    ("wrong-hashedrekord-entry_fail", Fail(FailureClass::TlogBody)),
    ("wrong-material_fail", Fail(FailureClass::DigestMismatch)),
];

/// What the harness conventions give for one case.
struct Case {
    bundle: Vec<u8>,
    artifact: Vec<u8>,
    artifact_digest: String,
    is_dsse: bool,
    identity: String,
    issuer: String,
    key_pem: Option<String>,
    root: TrustedRoot,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn load_case(name: &str) -> Case {
    let dir = conformance().join(name);
    let bundle = fs::read(dir.join("bundle.sigstore.json")).expect("bundle");
    let artifact = fs::read(dir.join("artifact")).or_else(|_| fs::read(conformance().join("a.txt"))).expect("artifact");
    let artifact_digest = format!("sha256:{:x}", Sha256::digest(&artifact));
    let is_dsse = serde_json::from_slice::<serde_json::Value>(&bundle).is_ok_and(|v| v.get("dsseEnvelope").is_some());
    let root_path = if dir.join("trusted_root.json").exists() {
        dir.join("trusted_root.json")
    } else {
        fixtures().join("trusted_root.public-good.json")
    };
    let root = TrustedRoot::parse(&fs::read(&root_path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    Case {
        bundle,
        artifact,
        artifact_digest,
        is_dsse,
        identity: read_trimmed(&dir.join("identity")).unwrap_or_else(|| DEFAULT_IDENTITY.into()),
        issuer: read_trimmed(&dir.join("issuer")).unwrap_or_else(|| DEFAULT_ISSUER.into()),
        key_pem: fs::read_to_string(dir.join("key.pub")).ok(),
        root,
    }
}

fn policy_for(case: &Case) -> Result<BundlePolicy, KeyError> {
    Ok(match &case.key_pem {
        Some(pem) => BundlePolicy::with_keys(case.root.clone(), PublicKeys::parse("key.pub", pem)?),
        None => BundlePolicy::keyless(case.root.clone(), vec![Identity::exact(&case.issuer, &case.identity)]),
    })
}

fn verify_case(case: &Case, policy: &BundlePolicy) -> Outcome {
    let artifact = if case.is_dsse { Artifact::Digest(&case.artifact_digest) } else { Artifact::Bytes(&case.artifact) };
    verify_bundle(&case.bundle, artifact, policy, SystemTime::now())
}

fn describe(o: &Outcome) -> String {
    let mut s = format!("verified={} failure={:?}\n", o.verified, o.failure);
    for c in &o.checks {
        s.push_str(&format!("    {:?} {}: {}\n", c.status, c.name, c.detail));
    }
    s
}

#[test]
fn the_table_covers_every_case_directory() {
    let dirs: BTreeSet<String> = fs::read_dir(conformance())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    let table: BTreeSet<String> = CASES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(dirs, table, "conformance directories and the expectation table differ");
    for (name, expect) in CASES {
        assert_eq!(name.ends_with("_fail"), *expect != Valid, "{name}: a `_fail` case must be expected to fail");
    }
    assert_eq!(CASES.iter().filter(|(n, _)| n.ends_with("_fail")).count(), 24);
}

#[test]
fn every_conformance_case_meets_its_expectation() {
    let mut problems = Vec::new();
    for (name, expect) in CASES {
        let case = load_case(name);
        let policy = match policy_for(&case) {
            Ok(p) => p,
            Err(e) => {
                if *expect != KeyRejected {
                    problems.push(format!("{name}: key.pub rejected ({e}), expected {expect:?}"));
                } else if !matches!(e, KeyError::Pem { .. }) {
                    problems.push(format!("{name}: key.pub rejected for another reason than its damaged PEM: {e}"));
                }
                continue;
            }
        };
        if *expect == KeyRejected {
            problems.push(format!("{name}: key.pub was accepted, expected it to be rejected"));
            continue;
        }
        let outcome = verify_case(&case, &policy);
        let ok = match expect {
            Valid => outcome.verified && outcome.failure.is_none(),
            Fail(class) => !outcome.verified && outcome.failure_class() == Some(*class),
            KeyRejected => false,
        };
        if !ok {
            problems.push(format!("{name}: expected {expect:?}, got {}", describe(&outcome)));
        }
        // A rejection is always the last check, and it failed.
        if !outcome.verified {
            let last = outcome.checks.last().map(|c| c.status);
            if last != Some(CheckStatus::Failed) && outcome.failure_class() != Some(FailureClass::Parse) {
                problems.push(format!("{name}: rejected but the last check did not fail: {}", describe(&outcome)));
            }
        }
    }
    assert!(problems.is_empty(), "{} case(s) wrong:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn happy_paths_report_signer_log_and_time() {
    let case = load_case("happy-path-v0.1");
    let outcome = verify_case(&case, &policy_for(&case).unwrap());
    assert!(outcome.verified, "{}", describe(&outcome));
    assert_eq!(
        outcome.signer,
        Some(Signer::Certificate { subject: DEFAULT_IDENTITY.into(), issuer: DEFAULT_ISSUER.into() })
    );
    assert_eq!(outcome.log_index, Some(27_246_492));
    assert_eq!(outcome.integrated_time, Some(1_689_177_396));
    for name in ["tlog-set", "inclusion-proof", "checkpoint", "certificate-chain", "identity"] {
        let c = outcome.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} check"));
        assert_eq!(c.status, CheckStatus::Passed, "{name}");
    }

    // Rekor v2: no integrated time; the time comes from the RFC 3161 timestamp.
    let case = load_case("rekor2-happy-path");
    let outcome = verify_case(&case, &policy_for(&case).unwrap());
    assert!(outcome.verified, "{}", describe(&outcome));
    assert_eq!(outcome.integrated_time, None);
    assert_eq!(outcome.timestamps.len(), 1);
    assert_eq!(outcome.log_index, Some(735));

    let case = load_case("managed-key-happy-path");
    let outcome = verify_case(&case, &policy_for(&case).unwrap());
    assert!(outcome.verified, "{}", describe(&outcome));
    assert!(matches!(&outcome.signer, Some(Signer::Key { name, .. }) if name == "key.pub"));
    assert_eq!(outcome.timestamps.len(), 1);
}

#[test]
fn happy_paths_fail_for_another_identity_artifact_or_root() {
    for name in ["happy-path-v0.1", "happy-path-v0.3", "happy-path-intoto-in-dsse-v3", "rekor2-happy-path"] {
        let case = load_case(name);
        // Another subject from the right issuer.
        let policy = BundlePolicy::keyless(
            case.root.clone(),
            vec![Identity::exact(
                DEFAULT_ISSUER,
                "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main",
            )],
        );
        assert_eq!(verify_case(&case, &policy).failure_class(), Some(FailureClass::Identity), "{name}");
        // The right subject from another issuer.
        let policy = BundlePolicy::keyless(
            case.root.clone(),
            vec![Identity::exact("https://accounts.google.com", &case.identity)],
        );
        assert_eq!(verify_case(&case, &policy).failure_class(), Some(FailureClass::Identity), "{name}");
        // An anchored regex over the right subject passes; a prefix of it does not.
        let policy = BundlePolicy::keyless(
            case.root.clone(),
            vec![Identity::new(
                Matcher::exact(DEFAULT_ISSUER),
                Matcher::regex(r"https://github\.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.*")
                    .unwrap(),
            )],
        );
        let o = verify_case(&case, &policy);
        assert!(o.verified, "{name}: {}", describe(&o));
        let policy = BundlePolicy::keyless(
            case.root.clone(),
            vec![Identity::new(
                Matcher::exact(DEFAULT_ISSUER),
                Matcher::regex(r"https://github\.com/sigstore-conformance").unwrap(),
            )],
        );
        assert_eq!(verify_case(&case, &policy).failure_class(), Some(FailureClass::Identity), "{name}");

        // Another artifact.
        let mut other = load_case(name);
        other.artifact = b"not the signed artifact\n".to_vec();
        other.artifact_digest = format!("sha256:{:x}", Sha256::digest(&other.artifact));
        let o = verify_case(&other, &policy_for(&other).unwrap());
        assert_eq!(o.failure_class(), Some(FailureClass::DigestMismatch), "{name}: {}", describe(&o));

        // An empty trust root knows no log.
        let id = vec![Identity::exact(&case.issuer, &case.identity)];
        let empty = BundlePolicy::keyless(TrustedRoot::new(), id.clone());
        assert_eq!(verify_case(&case, &empty).failure_class(), Some(FailureClass::UnknownLog), "{name}");
        // A root with the production Rekor key but no certificate authority: the Rekor v1
        // entries verify, the certificate chains to nothing.
        if !name.starts_with("rekor2") {
            let mut logs_only = TrustedRoot::new();
            let rekor = fs::read_to_string(fixtures().join("../cosign/keys/rekor-public-good.pub")).unwrap();
            logs_only.add_tlog_key_pem("https://rekor.sigstore.dev", &rekor).unwrap();
            let o = verify_case(&case, &BundlePolicy::keyless(logs_only, id));
            assert_eq!(o.failure_class(), Some(FailureClass::Certificate), "{name}: {}", describe(&o));
        }
    }
}

#[test]
fn message_bundles_verify_by_digest_too() {
    let case = load_case("happy-path-v0.3");
    let o = verify_bundle(
        &case.bundle,
        Artifact::Digest(&case.artifact_digest),
        &policy_for(&case).unwrap(),
        SystemTime::now(),
    );
    assert!(o.verified, "{}", describe(&o));
    let o = verify_bundle(
        &case.bundle,
        Artifact::Digest("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
        &policy_for(&case).unwrap(),
        SystemTime::now(),
    );
    assert_eq!(o.failure_class(), Some(FailureClass::DigestMismatch));
    let o = verify_bundle(&case.bundle, Artifact::Digest("sha256:abc"), &policy_for(&case).unwrap(), SystemTime::now());
    assert_eq!(o.failure_class(), Some(FailureClass::Parse));
}

#[test]
fn the_log_is_required_unless_the_policy_says_otherwise() {
    // Strip the tlog entries of a key-signed bundle: rejected by default.
    let case = load_case("managed-key-happy-path");
    let mut doc: serde_json::Value = serde_json::from_slice(&case.bundle).unwrap();
    doc["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
    let stripped = serde_json::to_vec(&doc).unwrap();
    let mut policy = policy_for(&case).unwrap();
    let o = verify_bundle(&stripped, Artifact::Bytes(&case.artifact), &policy, SystemTime::now());
    assert_eq!(o.failure_class(), Some(FailureClass::TlogMissing), "{}", describe(&o));
    policy.require_tlog = false;
    let o = verify_bundle(&stripped, Artifact::Bytes(&case.artifact), &policy, SystemTime::now());
    assert!(o.verified, "{}", describe(&o));

    // A keyless bundle without its entry has no verified time even when the log is optional.
    let case = load_case("happy-path-v0.3");
    let mut doc: serde_json::Value = serde_json::from_slice(&case.bundle).unwrap();
    doc["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
    let stripped = serde_json::to_vec(&doc).unwrap();
    let mut policy = policy_for(&case).unwrap();
    policy.require_tlog = false;
    let o = verify_bundle(&stripped, Artifact::Bytes(&case.artifact), &policy, SystemTime::now());
    assert_eq!(o.failure_class(), Some(FailureClass::NoVerifiedTime), "{}", describe(&o));
}

#[test]
fn slsa_provenance_policy() {
    let case = load_case("happy-path-intoto-in-dsse-v3");
    let mut policy = policy_for(&case).unwrap();
    policy.provenance = Some(ProvenancePolicy {
        builder_id: Some(
            Matcher::regex(r"https://github\.com/loosebazooka/aa-test/\.github/workflows/[^@]+@refs/heads/main")
                .unwrap(),
        ),
        source_repository: Some(Matcher::exact("https://github.com/loosebazooka/aa-test")),
        build_type: Some(Matcher::exact("https://actions.github.io/buildtypes/workflow/v1")),
    });
    let o = verify_case(&case, &policy);
    assert!(o.verified, "{}", describe(&o));
    assert_eq!(o.predicate_type.as_deref(), Some("https://slsa.dev/provenance/v1"));

    let wrong = [
        ProvenancePolicy {
            builder_id: Some(Matcher::exact("https://github.com/slsa-framework/slsa-github-generator")),
            ..Default::default()
        },
        ProvenancePolicy {
            source_repository: Some(Matcher::exact("https://github.com/loosebazooka/aa")),
            ..Default::default()
        },
        ProvenancePolicy {
            source_repository: Some(Matcher::regex(r"https://github\.com/loosebazooka/aa").unwrap()),
            ..Default::default()
        },
        ProvenancePolicy {
            build_type: Some(Matcher::exact("https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1")),
            ..Default::default()
        },
    ];
    for pp in wrong {
        policy.provenance = Some(pp.clone());
        let o = verify_case(&case, &policy);
        assert_eq!(o.failure_class(), Some(FailureClass::Provenance), "{pp:?}: {}", describe(&o));
    }

    // A message-signature bundle cannot satisfy a provenance policy.
    let case = load_case("happy-path-v0.3");
    let mut policy = policy_for(&case).unwrap();
    policy.provenance = Some(ProvenancePolicy::default());
    assert_eq!(verify_case(&case, &policy).failure_class(), Some(FailureClass::Provenance));
}
