//! Cosign end to end: `pullgate-verifier` exec'd as containerd does → the
//! agent → a real Debian `docker-registry` → verdict, for every row of the
//! cosign table of `shared/fixtures/PROVENANCE.md` (section 2).
//!
//! The harness attaches each fixture signature the way cosign does: an OCI
//! manifest tagged `sha256-<image digest>.sig` whose layer is the
//! simple-signing payload, with the signature, certificate, chain and Rekor
//! bundle in the layer's annotations. The signed images themselves need not
//! be in the registry: the agent verifies the digest containerd gives it.

use pullgate_testkit::{Registry, RegistryOptions, sha256};
use pullgate_tests::{AgentFiles, fixtures_dir};
use pullgate_wire::Descriptor;
use std::path::{Path, PathBuf};

fn case_dir(case: &str) -> PathBuf {
    fixtures_dir().join("cosign").join(case)
}

fn keys_dir() -> PathBuf {
    fixtures_dir().join("cosign/keys")
}

/// The signed image's descriptor, as containerd would describe it.
fn subject(case: &str) -> Descriptor {
    let manifest = std::fs::read(case_dir(case).join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap().to_string(),
        digest: sha256(&manifest),
        size: manifest.len() as u64,
    }
}

/// Pushes the case's signature as cosign lays it out, into repository `repo`.
async fn attach(reg: &Registry, repo: &str, case: &str) {
    let digest = reg.attach_cosign_signature(repo, &case_dir(case)).await;
    assert_eq!(digest, subject(case).digest);
}

/// An agent verifying everything on `host` with cosign, with `sigstore` as the
/// body of its `[sigstore]` table; `files` are copied from the fixture keys.
fn agent(host: &str, sigstore: &str, files: &[&str]) -> AgentFiles {
    let a = AgentFiles::new(&sigstore_config(host, "cosign", sigstore));
    std::fs::create_dir_all(a.config_dir.join("keys")).unwrap();
    for f in files {
        copy(&keys_dir().join(f), &a.config_dir.join("keys").join(f));
    }
    a
}

/// A config that verifies every image on `host` with `verifier` (`cosign` or
/// `sigstore`), `sigstore` being the body of its `[sigstore]` table.
fn sigstore_config(host: &str, verifier: &str, sigstore: &str) -> String {
    format!(
        r#"
defaultAction = "deny"
[registries."{host}"]
insecure = true
[[scopes]]
name = "{verifier}-required"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["{verifier}"] }}
[sigstore]
{sigstore}
"#
    )
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

struct Case {
    case: &'static str,
    sigstore: &'static str,
    files: &'static [&'static str],
    allow: bool,
    reason: &'static str,
}

const KEY: &str = "keys = [\"keys/cosign.pub\"]\nrequireTlog = false";
const KEY2: &str = "keys = [\"keys/cosign2.pub\"]\nrequireTlog = false";
const KEY2_REKOR: &str =
    "keys = [\"keys/cosign2.pub\"]\nrekorKeys = [\"keys/rekor-public-good.pub\"]\nrequireTlog = true";
const KEYLESS: &str = "fulcioRoots = [\"keys/fulcio_v1.crt.pem\"]\nrekorKeys = [\"keys/rekor-public-good.pub\"]\nidentities = [{ issuer = \"https://github.com/login/oauth\", subject = \"mitr@redhat.com\" }]";
const KEYLESS_OTHER: &str = "fulcioRoots = [\"keys/fulcio_v1.crt.pem\"]\nrekorKeys = [\"keys/rekor-public-good.pub\"]\nidentities = [{ issuer = \"https://github.com/login/oauth\", subjectRegex = \".*@acme\\\\.com\" }]";

fn cases() -> Vec<Case> {
    let k1: &'static [&'static str] = &["cosign.pub"];
    let k2: &'static [&'static str] = &["cosign2.pub"];
    let k2r: &'static [&'static str] = &["cosign2.pub", "rekor-public-good.pub"];
    let kl: &'static [&'static str] = &["fulcio_v1.crt.pem", "rekor-public-good.pub"];
    vec![
        Case { case: "key-valid", sigstore: KEY, files: k1, allow: true, reason: "cosign signature by key" },
        Case { case: "key-valid", sigstore: KEY2, files: k2, allow: false, reason: "signature:" },
        Case {
            case: "key-valid-containers-image-signer",
            sigstore: KEY,
            files: k1,
            allow: true,
            reason: "cosign signature by key",
        },
        Case {
            case: "key-rekor-valid",
            sigstore: KEY2_REKOR,
            files: k2r,
            allow: true,
            reason: "rekor log index 11608800",
        },
        Case {
            case: "key-rekor-valid",
            sigstore: "keys = [\"keys/cosign.pub\"]\nrequireTlog = false",
            files: k1,
            allow: false,
            reason: "signature:",
        },
        Case {
            case: "keyless-fulcio-rekor-valid",
            sigstore: KEYLESS,
            files: kl,
            allow: true,
            reason: "mitr@redhat.com",
        },
        Case {
            case: "keyless-fulcio-rekor-valid",
            sigstore: KEYLESS_OTHER,
            files: kl,
            allow: false,
            reason: "identity:",
        },
        Case { case: "key-modified-manifest", sigstore: KEY, files: k1, allow: false, reason: "digest-mismatch:" },
        Case { case: "key-unknown-signer", sigstore: KEY, files: k1, allow: false, reason: "signature:" },
        Case { case: "not-simplesigning-attachment", sigstore: KEY, files: k1, allow: false, reason: "payload:" },
    ]
}

#[test]
fn every_cosign_row_end_to_end() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let mut pushed = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for c in cases() {
        let repo = c.case.to_string();
        if pushed.insert(repo.clone()) {
            rt.block_on(attach(&reg, &repo, c.case));
        }
        let agent = agent(&reg.host, c.sigstore, c.files).start(&[]);
        let run = agent.verify(&format!("{}/{repo}:latest", reg.host), &subject(c.case));
        let want = if c.allow { 0 } else { 1 };
        let line = run.stdout.trim_end();
        if run.code != Some(want) || !line.contains(c.reason) {
            failures.push(format!(
                "{} with [{}]: expected exit {want} and {:?}, got {:?}: {line}",
                c.case,
                c.sigstore.replace('\n', "; "),
                c.reason,
                run.code
            ));
            continue;
        }
        let report = agent.explain(&run.report_id());
        let sigs = &report["verification"][0]["signatures"];
        if sigs.as_array().is_none_or(|s| s.is_empty()) {
            failures.push(format!("{}: the report lists no signature: {report}", c.case));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn unsigned_image_is_denied_and_registry_errors_use_the_failure_policy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let a = agent(&reg.host, KEY, &["cosign.pub"]).start(&[]);
    let run = a.verify(&format!("{}/nothing-here:1", reg.host), &subject("key-valid"));
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("no cosign signature found"), "{}", run.stdout);
    drop(a);
    let host = reg.host.clone();
    drop(reg);
    let a = agent(&host, KEY, &["cosign.pub"]).start(&[]);
    let run = a.verify(&format!("{host}/gone:1"), &subject("key-valid"));
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("unreachable") && run.stdout.contains("failure policy closed"), "{}", run.stdout);
}

const ATTESTED: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Attaches the cosign attestation bundle fixture to `subject` as an OCI 1.1
/// referrer, and lists it in the referrers tag-schema index (docker-registry
/// has no referrers API).
async fn attach_bundle(reg: &Registry, repo: &str, subject: &str) {
    let bundle =
        std::fs::read(fixtures_dir().join("sigstore-bundle/cosign-oci-attestation/oci-attestation.sigstore.json"))
            .unwrap();
    let bundle_len = bundle.len();
    let bundle_digest = reg.push_blob(repo, bundle).await;
    let empty_digest = reg.push_blob(repo, b"{}".to_vec()).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": BUNDLE_TYPE, "digest": bundle_digest, "size": bundle_len}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 528},
    }))
    .unwrap();
    let manifest_digest = sha256(&manifest);
    let manifest_len = manifest.len();
    reg.push_manifest(repo, &manifest_digest, "application/vnd.oci.image.manifest.v1+json", manifest).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_len,
            "artifactType": BUNDLE_TYPE,
        }],
    }))
    .unwrap();
    reg.push_manifest(repo, &subject.replace(':', "-"), "application/vnd.oci.image.index.v1+json", index).await;
}

fn bundle_agent(host: &str, subject_id: &str) -> AgentFiles {
    let sigstore = format!(
        "trustedRoot = \"trusted_root.json\"\nidentities = [{{ issuer = \"https://github.com/login/oauth\", subject = \"{subject_id}\" }}]"
    );
    let toml = sigstore_config(host, "sigstore", &sigstore);
    let a = AgentFiles::new(&toml);
    copy(
        &fixtures_dir().join("sigstore-bundle/cosign-oci-attestation/trusted_root_pgi.json"),
        &a.config_dir.join("trusted_root.json"),
    );
    a
}

#[test]
fn sigstore_bundle_attestation_end_to_end() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let other = format!("sha256:{}", "ab".repeat(32));
    rt.block_on(attach_bundle(&reg, "attested", ATTESTED));
    rt.block_on(attach_bundle(&reg, "attested", &other));
    let d = |digest: &str| Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest.into(),
        size: 528,
    };
    let a = bundle_agent(&reg.host, "cody@soyland.com").start(&[]);
    let run = a.verify(&format!("{}/attested:latest", reg.host), &d(ATTESTED));
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains("cody@soyland.com") && run.stdout.contains("rekor log index 175508996"),
        "{}",
        run.stdout
    );
    // The same bundle attached to another image does not vouch for it.
    let run = a.verify(&format!("{}/attested:other", reg.host), &d(&other));
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("digest-mismatch"), "{}", run.stdout);
    drop(a);
    // Another identity is not trusted.
    let a = bundle_agent(&reg.host, "someone@else.example").start(&[]);
    let run = a.verify(&format!("{}/attested:latest", reg.host), &d(ATTESTED));
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("identity"), "{}", run.stdout);
}
