//! Issue 12 through the real registry path: named trust sets (a key trusted
//! for team A does not admit team B's images), minSignatures counting
//! distinct signers, `match = { atLeast = N }`, a scope's own failurePolicy,
//! and break-glass. Signatures are the cosign fixtures where they fit, else
//! real cosign signatures made in the test with a generated P-256 key.

use pullgate_testkit::sign::{CosignKey, attach_cosign};
use pullgate_testkit::{Registry, RegistryOptions, sha256};
use pullgate_tests::{AgentFiles, fixtures_dir};
use pullgate_wire::Descriptor;

/// The image the `key-valid` fixture signature covers.
fn key_valid() -> Descriptor {
    let manifest = std::fs::read(fixtures_dir().join("cosign/key-valid/manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap().into(),
        digest: sha256(&manifest),
        size: manifest.len() as u64,
    }
}

fn copy_key(a: &AgentFiles, name: &str) {
    std::fs::create_dir_all(a.config_dir.join("keys")).unwrap();
    std::fs::copy(fixtures_dir().join("cosign/keys").join(name), a.config_dir.join("keys").join(name)).unwrap();
}

/// Two teams, each with its own trust set; `scope_b_trust` is team B's `trust` list.
fn teams_config(host: &str, scope_b_trust: &str) -> String {
    format!(
        r#"
defaultAction = "deny"
[registries."{host}"]
insecure = true
[[scopes]]
name = "team-a"
images = ["{host}/team-a/**"]
action = "verify"
verify = {{ require = ["cosign"], trust = ["team-a"] }}
[[scopes]]
name = "team-b"
images = ["{host}/team-b/**"]
action = "verify"
verify = {{ require = ["cosign"], trust = {scope_b_trust} }}
[trust.team-a.sigstore]
keys = ["keys/cosign.pub"]
requireTlog = false
[trust.team-b.sigstore]
keys = ["keys/cosign2.pub"]
requireTlog = false
"#
    )
}

#[test]
fn a_key_trusted_for_team_a_does_not_admit_team_b_images() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let case = fixtures_dir().join("cosign/key-valid");
    // The same image, signed by team A's key, in both teams' repositories.
    for repo in ["team-a/app", "team-b/app"] {
        rt.block_on(reg.attach_cosign_signature(repo, &case));
    }
    let a = AgentFiles::new(&teams_config(&reg.host, "[\"team-b\"]"));
    copy_key(&a, "cosign.pub");
    copy_key(&a, "cosign2.pub");
    let a = a.start(&[]);
    let run = a.verify(&format!("{}/team-a/app:1", reg.host), &key_valid());
    assert_eq!(run.code, Some(0), "team A's key admits team A's image: {}", run.stdout);
    assert!(run.stdout.contains("(trust set team-a)"), "{}", run.stdout);
    let report = a.explain(&run.report_id());
    let sig = report["verification"][0]["signatures"].as_array().unwrap().iter().find(|s| s["verified"] == true);
    assert_eq!(sig.unwrap()["trustSet"], "team-a", "{report}");
    let run = a.verify(&format!("{}/team-b/app:1", reg.host), &key_valid());
    assert_eq!(run.code, Some(1), "team A's key must not admit team B's image: {}", run.stdout);
    assert!(
        run.stdout.contains("scope team-b") && run.stdout.contains("no cosign signature verified"),
        "{}",
        run.stdout
    );
    drop(a);
    // A scope naming both sets accepts a signature under either, and says which.
    let a = AgentFiles::new(&teams_config(&reg.host, "[\"team-b\", \"team-a\"]"));
    copy_key(&a, "cosign.pub");
    copy_key(&a, "cosign2.pub");
    let a = a.start(&[]);
    let run = a.verify(&format!("{}/team-b/app:1", reg.host), &key_valid());
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("(trust set team-a)"), "{}", run.stdout);
}

#[test]
fn check_config_names_unknown_and_unused_trust_sets() {
    let a = AgentFiles::new(&teams_config("127.0.0.1:9", "[\"team-c\"]").replace("[\"team-a\"] }", "[\"team-b\"] }"));
    copy_key(&a, "cosign.pub");
    copy_key(&a, "cosign2.pub");
    let dir = a.config_dir.to_str().unwrap();
    let (code, out, err) = pullgate_tests::agent_command(&["check-config", dir]);
    let all = format!("{out}{err}");
    assert_eq!(code, Some(64), "{all}");
    assert!(all.contains("scopes[1].verify.trust: no trust set \"team-c\""), "{all}");
    let ok = AgentFiles::new(&teams_config("127.0.0.1:9", "[\"team-b\"]").replace("[\"team-a\"] }", "[\"team-b\"] }"));
    copy_key(&ok, "cosign.pub");
    copy_key(&ok, "cosign2.pub");
    let dir = ok.config_dir.to_str().unwrap();
    let (code, out, err) = pullgate_tests::agent_command(&["check-config", dir]);
    let all = format!("{out}{err}");
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("trust.team-a") && all.contains("not used"), "an unused set is warned about: {all}");
}

/// One scope requiring cosign with `verify` extra keys, trusting `keys`.
fn signers_config(host: &str, verify: &str, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        r#"
defaultAction = "deny"
[registries."{host}"]
insecure = true
[[scopes]]
name = "two-person"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["cosign"]{verify} }}
[sigstore]
keys = [{}]
requireTlog = false
"#,
        keys.join(", ")
    )
}

#[test]
fn min_signatures_counts_distinct_signers_never_copies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let (k1, k2) = (CosignKey::generate(), CosignKey::generate());
    let image = rt.block_on(pullgate_testkit::sign::push_platform_image(&reg, "two", "linux/amd64"));
    let d = Descriptor { media_type: image.media_type.clone(), digest: image.digest.clone(), size: image.size };
    let name = format!("{}/two:1", reg.host);
    // Three copies of one signer's signature (fresh ECDSA nonces: different bytes).
    let copies: Vec<_> = (0..3).map(|_| k1.sign(&name, &image.digest)).collect();
    rt.block_on(attach_cosign(&reg, "two", &image.digest, &copies));
    let write = |a: &AgentFiles| {
        std::fs::write(a.config_dir.join("k1.pub"), k1.public_pem()).unwrap();
        std::fs::write(a.config_dir.join("k2.pub"), k2.public_pem()).unwrap();
    };
    let files = AgentFiles::new(&signers_config(&reg.host, ", minSignatures = 2", &["k1.pub", "k2.pub"]));
    write(&files);
    let a = files.start(&[]);
    let run = a.verify(&name, &d);
    assert_eq!(run.code, Some(1), "copies by one signer are one signer: {}", run.stdout);
    assert!(run.stdout.contains("only 1 of 2 distinct signers"), "{}", run.stdout);
    let report = a.explain(&run.report_id());
    let sigs = report["verification"][0]["signatures"].as_array().unwrap().clone();
    let dup =
        sigs.iter().filter(|s| s["checks"].as_array().unwrap().iter().any(|c| c["status"] == "duplicate")).count();
    assert_eq!(dup, 2, "both repeats are marked: {report}");
    // A second signer makes two.
    let mut both = copies.clone();
    both.push(k2.sign(&name, &image.digest));
    rt.block_on(attach_cosign(&reg, "two", &image.digest, &both));
    let other = format!("{}/two:2", reg.host);
    let run = a.verify(&other, &d);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    drop(a);
    // Only k1 trusted: k2's signature does not count, whatever minSignatures says.
    let files = AgentFiles::new(&signers_config(&reg.host, ", minSignatures = 2", &["k1.pub"]));
    write(&files);
    let a = files.start(&[]);
    let run = a.verify(&format!("{}/two:3", reg.host), &d);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
}

#[test]
fn at_least_n_of_the_verifiers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    rt.block_on(reg.attach_cosign_signature("app", &fixtures_dir().join("cosign/key-valid")));
    let run_with = |verify: &str| {
        let toml = signers_config(&reg.host, verify, &["keys/cosign.pub"])
            .replace("[\"cosign\"]", "[\"cosign\", \"sigstore\"]");
        let a = AgentFiles::new(&toml);
        copy_key(&a, "cosign.pub");
        let a = a.start(&[]);
        a.verify(&format!("{}/app:1", reg.host), &key_valid())
    };
    // cosign passes, no Sigstore bundle is attached: 1 of 2.
    let run = run_with(", match = { atLeast = 1 }");
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("1 of 2 passed, 1 needed"), "{}", run.stdout);
    let run = run_with(", match = { atLeast = 2 }");
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("2 needed"), "{}", run.stdout);
}

/// Two scopes on an unreachable registry: one fails open, the other closed;
/// `extra` goes at the top of the file.
fn outage_config(host: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
failurePolicy = "closed"
[registries."{host}"]
insecure = true
[[scopes]]
name = "best-effort"
images = ["{host}/tools/**"]
action = "verify"
failurePolicy = "open"
verify = {{ require = ["cosign"] }}
[[scopes]]
name = "strict"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["cosign"] }}
[sigstore]
keys = ["keys/cosign.pub"]
requireTlog = false
"#
    )
}

#[test]
fn a_scope_overrides_the_failure_policy_and_break_glass_allows_loudly() {
    // A port nothing listens on: every registry request fails.
    let host = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let a = AgentFiles::new(&outage_config(&host, ""));
    copy_key(&a, "cosign.pub");
    let a = a.start(&[]);
    let run = a.verify(&format!("{host}/tools/x:1"), &key_valid());
    assert_eq!(run.code, Some(0), "the scope's own failurePolicy open: {}", run.stdout);
    assert!(run.stdout.contains("failure policy open"), "{}", run.stdout);
    let run = a.verify(&format!("{host}/app/x:1"), &key_valid());
    assert_eq!(run.code, Some(1), "the top-level closed: {}", run.stdout);
    assert!(run.stdout.contains("failure policy closed"), "{}", run.stdout);
    let report = a.explain(&run.report_id());
    assert_eq!(report["failurePolicy"], "closed", "{report}");
    drop(a);

    let until = humantime_until(3600);
    let bg = format!("breakGlass = {{ until = \"{until}\", reason = \"INC-7 registry outage\" }}");
    let a = AgentFiles::new(&outage_config(&host, &bg));
    copy_key(&a, "cosign.pub");
    let a = a.start(&[]);
    let run = a.verify(&format!("{host}/app/x:1"), &key_valid());
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("break-glass until") && run.stdout.contains("INC-7"), "{}", run.stdout);
    assert!(run.stdout.contains("policy would deny"), "it says what the policy decided: {}", run.stdout);
    let report = a.explain(&run.report_id());
    assert_eq!(report["source"], "break-glass", "{report}");
    // Answered again (a cache hit for the typed outcome): still labelled.
    let run = a.verify(&format!("{host}/app/x:1"), &key_valid());
    assert!(run.stdout.contains("break-glass until"), "{}", run.stdout);
    assert_eq!(a.status()["counters"]["breakGlass"], 2, "{}", a.status());
    assert!(a.stderr().contains("BREAK-GLASS ACTIVE"), "the warning is logged at start: {}", a.stderr());
    drop(a);
    // check-config refuses one that ends more than 24 h ahead.
    let late = format!("breakGlass = {{ until = \"{}\", reason = \"x\" }}", humantime_until(25 * 3600));
    let a = AgentFiles::new(&outage_config(&host, &late));
    copy_key(&a, "cosign.pub");
    let (code, out, err) = pullgate_tests::agent_command(&["check-config", a.config_dir.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(format!("{out}{err}").contains("breakGlass.until"), "{out}{err}");
}

/// RFC 3339 UTC `secs` from now.
fn humantime_until(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(secs)).to_string()
}

/// Copies the fixture trust policy and the fixture CA store `store` into
/// `config_dir/dir/` as a trust set's `trustpolicy.json` and `truststore`
/// (store name `e2e`, as the fixture policy names it).
fn notation_set(config_dir: &std::path::Path, dir: &str, store: &str) {
    let n = fixtures_dir().join("notation");
    let dest = config_dir.join(dir).join("truststore/x509/ca/e2e");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::copy(n.join("trustpolicy/trustpolicy.json"), config_dir.join(dir).join("trustpolicy.json")).unwrap();
    for e in std::fs::read_dir(n.join("truststore/x509/ca").join(store)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
}

#[test]
fn notation_trust_sets_keep_teams_apart_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let layout = fixtures_dir().join("notation/oci-layouts/e2e-valid-signature");
    for repo in ["team-a/app", "team-b/app"] {
        rt.block_on(reg.push_layout(repo, &layout));
    }
    let host = &reg.host;
    let a = AgentFiles::new(&format!(
        r#"
defaultAction = "deny"
[registries."{host}"]
insecure = true
[[scopes]]
name = "team-a"
images = ["{host}/team-a/**"]
action = "verify"
verify = {{ require = ["notation"], trust = ["team-a"] }}
[[scopes]]
name = "team-b"
images = ["{host}/team-b/**"]
action = "verify"
verify = {{ require = ["notation"], trust = ["team-b"] }}
[trust.team-a.notation]
trustPolicy = "team-a/trustpolicy.json"
trustStore = "team-a/truststore"
[trust.team-b.notation]
trustPolicy = "team-b/trustpolicy.json"
trustStore = "team-b/truststore"
"#
    ));
    // The image is signed under the e2e CA: team A trusts it, team B trusts another CA.
    notation_set(&a.config_dir, "team-a", "e2e");
    notation_set(&a.config_dir, "team-b", "e2e-other");
    let a = a.start(&[]);
    let d = pullgate_tests::fixture_descriptors().manifest;
    let run = a.verify(&format!("{host}/team-a/app:v1"), &d);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("(trust set team-a)"), "{}", run.stdout);
    let run = a.verify(&format!("{host}/team-b/app:v1"), &d);
    assert_eq!(run.code, Some(1), "team A's CA must not admit team B's image: {}", run.stdout);
    assert!(run.stdout.contains("authenticity failed"), "{}", run.stdout);
}
