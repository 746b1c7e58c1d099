//! Issue 12: multi-platform images through the real registry path. The test
//! builds an index over two platform manifests, signs the index, the
//! platform manifests, or some of them with a cosign key made in the test,
//! and checks each `platforms` rule: `index` (the digest containerd passes),
//! `index-or-node` (index, or else the manifest this node runs, with
//! `nodePlatform` set) and `every` (index, or else every platform manifest).

use pullgate_testkit::sign::{CosignKey, Pushed, attach_cosign, push_index, push_platform_image};
use pullgate_testkit::{Registry, RegistryOptions};
use pullgate_tests::AgentFiles;
use pullgate_wire::Descriptor;

struct Image {
    index: Pushed,
    amd64: Pushed,
    arm64: Pushed,
}

fn descriptor(p: &Pushed) -> Descriptor {
    Descriptor { media_type: p.media_type.clone(), digest: p.digest.clone(), size: p.size }
}

/// Pushes `repo` as a two-platform image and signs what `signed` names
/// (`index`, `amd64`, `arm64`) with `key`.
async fn image(reg: &Registry, repo: &str, key: &CosignKey, signed: &[&str]) -> Image {
    let amd64 = push_platform_image(reg, repo, "linux/amd64").await;
    let arm64 = push_platform_image(reg, repo, "linux/arm64/v8").await;
    let index = push_index(reg, repo, "v1", &[("linux/amd64", &amd64), ("linux/arm64/v8", &arm64)]).await;
    let name = format!("{}/{repo}", reg.host);
    for (what, p) in [("index", &index), ("amd64", &amd64), ("arm64", &arm64)] {
        if signed.contains(&what) {
            attach_cosign(reg, repo, &p.digest, &[key.sign(&name, &p.digest)]).await;
        }
    }
    Image { index, amd64, arm64 }
}

fn agent(host: &str, key: &CosignKey, platforms: &str, node: &str) -> pullgate_tests::Agent {
    let a = AgentFiles::new(&format!(
        r#"
defaultAction = "deny"
nodePlatform = "{node}"
[registries."{host}"]
insecure = true
[[scopes]]
name = "multi"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["cosign"], platforms = "{platforms}" }}
[sigstore]
keys = ["k.pub"]
requireTlog = false
"#
    ));
    std::fs::write(a.config_dir.join("k.pub"), key.public_pem()).unwrap();
    a.start(&[])
}

#[test]
fn index_only_platform_only_and_mixed_signing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let index_only = rt.block_on(image(&reg, "index-only", &key, &["index"]));
    let platform_only = rt.block_on(image(&reg, "platform-only", &key, &["amd64", "arm64"]));
    let mixed = rt.block_on(image(&reg, "mixed", &key, &["amd64"]));
    let name = |repo: &str| format!("{}/{repo}:v1", reg.host);
    let rows: &[(&str, &str, &str, &Image, bool, &str)] = &[
        ("index", "linux/arm64", "index-only", &index_only, true, "cosign signature by key"),
        ("index", "linux/arm64", "platform-only", &platform_only, false, "no cosign signature found"),
        ("index-or-node", "linux/arm64", "index-only", &index_only, true, "cosign signature by key"),
        ("index-or-node", "linux/arm64/v8", "platform-only", &platform_only, true, "index-or-node: linux/arm64"),
        ("index-or-node", "linux/amd64", "mixed", &mixed, true, "index-or-node: linux/amd64"),
        ("index-or-node", "linux/arm64", "mixed", &mixed, false, "index-or-node: linux/arm64"),
        (
            "index-or-node",
            "linux/s390x",
            "platform-only",
            &platform_only,
            false,
            "no manifest for this node's platform linux/s390x",
        ),
        ("every", "linux/arm64", "platform-only", &platform_only, true, "every:"),
        ("every", "linux/arm64", "mixed", &mixed, false, "every: linux/arm64"),
        ("every", "linux/arm64", "index-only", &index_only, true, "cosign signature by key"),
    ];
    let mut failures = Vec::new();
    for (platforms, node, repo, img, allow, needle) in rows {
        let a = agent(&reg.host, &key, platforms, node);
        let run = a.verify(&name(repo), &descriptor(&img.index));
        let want = if *allow { 0 } else { 1 };
        if run.code != Some(want) || !run.stdout.contains(needle) {
            failures.push(format!(
                "{platforms} on {node}, {repo}: want exit {want} and {needle:?}, got {:?}: {}",
                run.code,
                run.stdout.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_report_names_the_manifest_that_carried_the_signature() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let img = rt.block_on(image(&reg, "app", &key, &["arm64"]));
    let a = agent(&reg.host, &key, "index-or-node", "linux/aarch64");
    let run = a.verify(&format!("{}/app:v1", reg.host), &descriptor(&img.index));
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let report = a.explain(&run.report_id());
    let runs = report["verification"].as_array().unwrap();
    assert!(runs[0]["subject"].is_null() && runs[0]["result"] == "fail", "first the index itself: {report}");
    let on_platform =
        runs.iter().find(|r| r["subject"] == img.arm64.digest.as_str()).expect("a run on the arm64 manifest");
    assert_eq!(on_platform["platform"], "linux/arm64", "{report}");
    assert_eq!(on_platform["result"], "pass", "{report}");
    assert!(!runs.iter().any(|r| r["subject"] == img.amd64.digest.as_str()), "the other platform is not examined");
}

#[test]
fn a_single_manifest_is_verified_as_itself_whatever_platforms_says() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let img = rt.block_on(image(&reg, "single", &key, &["index"]));
    for platforms in ["index-or-node", "every"] {
        let a = agent(&reg.host, &key, platforms, "linux/amd64");
        // containerd passes the amd64 manifest (not the index): unsigned, so denied.
        let run = a.verify(&format!("{}/single@{}", reg.host, img.amd64.digest), &descriptor(&img.amd64));
        assert_eq!(run.code, Some(1), "{platforms}: {}", run.stdout);
        assert!(run.stdout.contains("no cosign signature found"), "{}", run.stdout);
        let report = a.explain(&run.report_id());
        assert_eq!(report["verification"].as_array().unwrap().len(), 1, "no index fetched: {report}");
    }
}

#[test]
fn an_index_larger_than_containerd_said_or_than_the_cap_is_a_deny() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let img = rt.block_on(image(&reg, "sized", &key, &["amd64", "arm64"]));
    let a = agent(&reg.host, &key, "every", "linux/amd64");
    let name = format!("{}/sized:v1", reg.host);
    // A descriptor claiming fewer bytes than the index has: not read past the claim.
    let short = Descriptor { size: img.index.size - 1, ..descriptor(&img.index) };
    let run = a.verify(&name, &short);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("fetching the index") && !run.stdout.contains("failure policy"), "{}", run.stdout);
    // One claiming more than the cap: not fetched at all.
    let huge = Descriptor { size: 2 * 1024 * 1024, ..descriptor(&img.index) };
    let run = a.verify(&format!("{}/sized:v2", reg.host), &huge);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("more than 1048576"), "{}", run.stdout);
}

#[test]
fn attestation_manifests_and_nested_indexes_are_not_platform_manifests() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let repo = "buildkit";
    let (index, arm64) = rt.block_on(async {
        let amd64 = push_platform_image(&reg, repo, "linux/amd64").await;
        let arm64 = push_platform_image(&reg, repo, "linux/arm64").await;
        let attestation = push_platform_image(&reg, repo, "unknown/unknown").await;
        let nested = push_index(&reg, repo, "nested", &[("linux/amd64", &amd64)]).await;
        let entry = |p: &Pushed, platform: serde_json::Value, annotations: serde_json::Value| {
            serde_json::json!({"mediaType": p.media_type, "digest": p.digest, "size": p.size,
                "platform": platform, "annotations": annotations})
        };
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                entry(&amd64, serde_json::json!({"os": "linux", "architecture": "amd64"}), serde_json::json!({})),
                entry(&arm64, serde_json::json!({"os": "linux", "architecture": "arm64"}), serde_json::json!({})),
                entry(&attestation, serde_json::json!({"os": "unknown", "architecture": "unknown"}),
                    serde_json::json!({"vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": amd64.digest})),
                entry(&nested, serde_json::json!({"os": "linux", "architecture": "arm64"}), serde_json::json!({})),
            ],
        }))
        .unwrap();
        let pushed = Pushed {
            digest: pullgate_testkit::sha256(&index),
            size: index.len() as u64,
            media_type: "application/vnd.oci.image.index.v1+json".into(),
        };
        reg.push_manifest(repo, "v1", &pushed.media_type, index).await;
        let name = format!("{}/{repo}", reg.host);
        // Only the two runnable platform manifests are signed.
        for p in [&amd64, &arm64] {
            attach_cosign(&reg, repo, &p.digest, &[key.sign(&name, &p.digest)]).await;
        }
        (pushed, arm64)
    });
    let name = format!("{}/{repo}:v1", reg.host);
    let a = agent(&reg.host, &key, "every", "linux/arm64");
    let run = a.verify(&name, &descriptor(&index));
    assert_eq!(run.code, Some(0), "unsigned attestation and nested index entries are not required: {}", run.stdout);
    let report = a.explain(&run.report_id());
    let subjects: Vec<&str> =
        report["verification"].as_array().unwrap().iter().filter_map(|r| r["subject"].as_str()).collect();
    assert_eq!(subjects.len(), 2, "exactly the two platform manifests: {report}");
    drop(a);
    // The node's pick is never the attestation manifest or the nested index.
    let a = agent(&reg.host, &key, "index-or-node", "linux/arm64");
    let run = a.verify(&name, &descriptor(&index));
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains(&arm64.digest), "{}", run.stdout);
}
