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
use serde_json::{Value, json};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

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

/// An index entry for `p`: its own media type unless `media_type` says
/// another, `platform` as `os/arch[/variant]` or none, and `annotations`.
fn raw_entry(p: &Pushed, media_type: Option<&str>, platform: Option<&str>, annotations: serde_json::Value) -> Value {
    let mut e = json!({"mediaType": media_type.unwrap_or(&p.media_type), "digest": p.digest, "size": p.size,
        "annotations": annotations});
    if let Some(platform) = platform {
        let parts: Vec<&str> = platform.split('/').collect();
        e["platform"] = json!({"os": parts[0], "architecture": parts[1]});
        if let Some(v) = parts.get(2) {
            e["platform"]["variant"] = json!(v);
        }
    }
    e
}

/// A plain entry: `p` for `platform`, no annotations.
fn plain(p: &Pushed, platform: &str) -> Value {
    raw_entry(p, None, Some(platform), json!({}))
}

/// Pushes an OCI index of `entries` as `repo:tag`.
async fn push_raw_index(reg: &Registry, repo: &str, tag: &str, entries: Vec<Value>) -> Pushed {
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).unwrap();
    let pushed =
        Pushed { digest: pullgate_testkit::sha256(&index), size: index.len() as u64, media_type: OCI_INDEX.into() };
    reg.push_manifest(repo, tag, OCI_INDEX, index).await;
    pushed
}

/// Signs each of `what` in `repo` with `key`.
async fn sign(reg: &Registry, repo: &str, key: &CosignKey, what: &[&Pushed]) {
    let name = format!("{}/{repo}", reg.host);
    for p in what {
        attach_cosign(reg, repo, &p.digest, &[key.sign(&name, &p.digest)]).await;
    }
}

/// One row: rule and node platform, the pulled index (`repo:tag`), allow or
/// deny, and text the verifier's line must contain.
type Row<'a> = (&'a str, &'a str, &'a str, &'a Pushed, bool, String);

/// Runs every row against the real registry; reports all rows that differ.
/// A deny must be a verified deny, not the failure policy after an error.
fn check_rows(reg: &Registry, key: &CosignKey, repo: &str, rows: &[Row<'_>]) {
    let mut failures = Vec::new();
    for (platforms, node, tag, index, allow, needle) in rows {
        let a = agent(&reg.host, key, platforms, node);
        let run = a.verify(&format!("{}/{repo}:{tag}", reg.host), &descriptor(index));
        let want = if *allow { 0 } else { 1 };
        // A deny here is a verified deny, never the failure policy after an error.
        let policy = run.stdout.contains("failure policy");
        if run.code != Some(want) || !run.stdout.contains(needle.as_str()) || policy {
            failures.push(format!(
                "{platforms} on {node}, {tag}: want exit {want} and {needle:?}, got {:?}: {}",
                run.code,
                run.stdout.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

/// The reviewer's attack: a nested index for the node's platform, in front of
/// (or behind) a signed manifest of the same platform. containerd follows the
/// first best match into the nested index and runs what it names.
#[test]
fn a_nested_index_is_followed_as_containerd_follows_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let repo = "nested";
    let (signed, unsigned, inner_signed) = rt.block_on(async {
        let signed = push_platform_image(&reg, repo, "linux/arm64").await;
        let unsigned = push_platform_image(&reg, repo, "linux/arm64/v8").await;
        let inner_signed = push_platform_image(&reg, repo, "linux/aarch64").await;
        sign(&reg, repo, &key, &[&signed, &inner_signed]).await;
        (signed, unsigned, inner_signed)
    });
    let (first, last, good, deep, short, mislabelled) = rt.block_on(async {
        let evil = push_raw_index(&reg, repo, "evil-inner", vec![plain(&unsigned, "linux/arm64")]).await;
        let fine = push_raw_index(&reg, repo, "fine-inner", vec![plain(&inner_signed, "linux/arm64")]).await;
        let first =
            push_raw_index(&reg, repo, "first", vec![plain(&evil, "linux/arm64"), plain(&signed, "linux/arm64")]);
        let last = push_raw_index(&reg, repo, "last", vec![plain(&signed, "linux/arm64"), plain(&evil, "linux/arm64")]);
        let good = push_raw_index(&reg, repo, "good", vec![plain(&fine, "linux/arm64"), plain(&signed, "linux/arm64")]);
        let deeper = push_raw_index(&reg, repo, "deeper", vec![plain(&fine, "linux/arm64")]).await;
        let deep =
            push_raw_index(&reg, repo, "deep", vec![plain(&deeper, "linux/arm64"), plain(&signed, "linux/arm64")]);
        // The nested index claims one byte less than it has.
        let cut = Pushed { size: fine.size - 1, ..fine.clone() };
        let short =
            push_raw_index(&reg, repo, "short", vec![plain(&cut, "linux/arm64"), plain(&signed, "linux/arm64")]);
        // An image manifest listed as an index.
        let posing = raw_entry(&unsigned, Some(OCI_INDEX), Some("linux/arm64"), json!({}));
        let mislabelled = push_raw_index(&reg, repo, "mislabelled", vec![posing, plain(&signed, "linux/arm64")]);
        (first.await, last.await, good.await, deep.await, short.await, mislabelled.await)
    });
    let d = |p: &Pushed| p.digest.clone();
    let rows: &[Row<'_>] = &[
        ("index-or-node", "linux/arm64", "first", &first, false, d(&unsigned)),
        ("every", "linux/arm64", "first", &first, false, d(&unsigned)),
        // Listed last, the nested index is not what an arm64 node runs, but `every` still needs it.
        ("index-or-node", "linux/arm64", "last", &last, true, d(&signed)),
        ("every", "linux/arm64", "last", &last, false, d(&unsigned)),
        ("index-or-node", "linux/arm64", "good", &good, true, d(&inner_signed)),
        ("every", "linux/arm64", "good", &good, true, d(&inner_signed)),
        ("index-or-node", "linux/arm64", "deep", &deep, false, "nested more than 2 levels".into()),
        ("every", "linux/arm64", "deep", &deep, false, "nested more than 2 levels".into()),
        ("index-or-node", "linux/arm64", "short", &short, false, "fetching the nested index".into()),
        ("every", "linux/arm64", "short", &short, false, "fetching the nested index".into()),
        (
            "index-or-node",
            "linux/arm64",
            "mislabelled",
            &mislabelled,
            false,
            format!("the nested index {}", d(&unsigned)),
        ),
        ("every", "linux/arm64", "mislabelled", &mislabelled, false, format!("the nested index {}", d(&unsigned))),
    ];
    check_rows(&reg, &key, repo, rows);
}

/// An entry of a media type that is neither an image manifest nor an index,
/// where containerd could pick it: a deny naming it, never skipped.
#[test]
fn an_entry_of_unknown_media_type_is_a_deny_where_containerd_could_pick_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let repo = "unknown-type";
    let odd = "application/vnd.example.thing.v1+json";
    let (arm64, other, first, elsewhere) = rt.block_on(async {
        let arm64 = push_platform_image(&reg, repo, "linux/arm64").await;
        let other = push_platform_image(&reg, repo, "linux/arm64/v8").await;
        sign(&reg, repo, &key, &[&arm64]).await;
        let first = push_raw_index(
            &reg,
            repo,
            "first",
            vec![raw_entry(&other, Some(odd), Some("linux/arm64"), json!({})), plain(&arm64, "linux/arm64")],
        );
        let elsewhere = push_raw_index(
            &reg,
            repo,
            "elsewhere",
            vec![raw_entry(&other, Some(odd), Some("linux/s390x"), json!({})), plain(&arm64, "linux/arm64")],
        );
        (arm64, other, first.await, elsewhere.await)
    });
    let rows: &[Row<'_>] = &[
        ("index-or-node", "linux/arm64", "first", &first, false, format!("{} has media type \"{odd}\"", other.digest)),
        ("every", "linux/arm64", "first", &first, false, format!("{} has media type \"{odd}\"", other.digest)),
        // Not this node's platform: containerd here never picks it; `every` still refuses it.
        ("index-or-node", "linux/arm64", "elsewhere", &elsewhere, true, arm64.digest.clone()),
        ("every", "linux/arm64", "elsewhere", &elsewhere, false, format!("{} has media type \"{odd}\"", other.digest)),
    ];
    check_rows(&reg, &key, repo, rows);
}

/// An entry without a platform: containerd sorts it after every matching
/// entry, and picks it when none matches.
#[test]
fn an_entry_without_a_platform_is_the_pick_when_nothing_else_matches() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let repo = "no-platform";
    let (amd64, arm64, bare, bare_signed, rows_idx) = rt.block_on(async {
        let amd64 = push_platform_image(&reg, repo, "linux/amd64").await;
        let arm64 = push_platform_image(&reg, repo, "linux/arm64").await;
        let bare = push_platform_image(&reg, repo, "linux/arm64/v8").await;
        let bare_signed = push_platform_image(&reg, repo, "linux/aarch64").await;
        sign(&reg, repo, &key, &[&amd64, &arm64, &bare_signed]).await;
        let none = |p: &Pushed| raw_entry(p, None, None, json!({}));
        let behind = push_raw_index(&reg, repo, "behind", vec![none(&bare), plain(&arm64, "linux/arm64")]).await;
        let picked = push_raw_index(&reg, repo, "picked", vec![none(&bare), plain(&amd64, "linux/amd64")]).await;
        let signed = push_raw_index(&reg, repo, "signed", vec![none(&bare_signed), plain(&amd64, "linux/amd64")]).await;
        (amd64, arm64, bare, bare_signed, [behind, picked, signed])
    });
    let [behind, picked, signed] = &rows_idx;
    let rows: &[Row<'_>] = &[
        // Listed first, but a matching entry sorts ahead of it.
        ("index-or-node", "linux/arm64", "behind", behind, true, arm64.digest.clone()),
        ("every", "linux/arm64", "behind", behind, false, format!("no platform {}", bare.digest)),
        // Nothing matches arm64: containerd runs the entry without a platform.
        ("index-or-node", "linux/arm64", "picked", picked, false, format!("no platform {}", bare.digest)),
        ("index-or-node", "linux/arm64", "signed", signed, true, format!("no platform {}", bare_signed.digest)),
        ("index-or-node", "linux/amd64", "signed", signed, true, amd64.digest.clone()),
    ];
    check_rows(&reg, &key, repo, rows);
}

/// BuildKit attestation manifests (platform unknown/unknown) are never run
/// and not required; the annotation on a runnable platform skips nothing.
#[test]
fn attestation_manifests_are_skipped_but_only_with_the_unknown_platform() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let key = CosignKey::generate();
    let repo = "buildkit";
    let (arm64, attestation, real, posing) = rt.block_on(async {
        let amd64 = push_platform_image(&reg, repo, "linux/amd64").await;
        let arm64 = push_platform_image(&reg, repo, "linux/arm64").await;
        let attestation = push_platform_image(&reg, repo, "unknown/unknown").await;
        sign(&reg, repo, &key, &[&amd64, &arm64]).await;
        let note = json!({"vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": amd64.digest});
        let real = push_raw_index(
            &reg,
            repo,
            "real",
            vec![
                raw_entry(&attestation, None, Some("unknown/unknown"), note.clone()),
                plain(&amd64, "linux/amd64"),
                plain(&arm64, "linux/arm64"),
            ],
        );
        let posing = push_raw_index(
            &reg,
            repo,
            "posing",
            vec![
                raw_entry(&attestation, None, Some("linux/arm64"), note.clone()),
                plain(&amd64, "linux/amd64"),
                plain(&arm64, "linux/arm64"),
            ],
        );
        (arm64, attestation, real.await, posing.await)
    });
    let rows: &[Row<'_>] = &[
        ("every", "linux/arm64", "real", &real, true, "every:".into()),
        ("index-or-node", "linux/arm64", "real", &real, true, arm64.digest.clone()),
        ("index-or-node", "linux/arm64", "posing", &posing, false, attestation.digest.clone()),
        ("every", "linux/arm64", "posing", &posing, false, attestation.digest.clone()),
    ];
    check_rows(&reg, &key, repo, rows);
    let a = agent(&reg.host, &key, "every", "linux/arm64");
    let run = a.verify(&format!("{}/{repo}:real", reg.host), &descriptor(&real));
    let report = a.explain(&run.report_id());
    let subjects: Vec<&str> =
        report["verification"].as_array().unwrap().iter().filter_map(|r| r["subject"].as_str()).collect();
    assert_eq!(subjects.len(), 2, "exactly the two platform manifests: {report}");
    assert!(!subjects.contains(&attestation.digest.as_str()), "{report}");
}
