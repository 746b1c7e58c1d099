//! Rego policies end to end (issue 12 item 5): `pullgate-verifier` exec'd as
//! containerd does → the agent → a real `docker-registry` holding the
//! cosign fixture signature → typed verdict → the policy → the answer.
//!
//! Covers: a typed allow tightened to a deny (deny `latest`) and the
//! versioned input the policy saw, recorded in the report; `override`
//! allowing a typed deny (and tighten not doing so); a compile error
//! failing check-config with FILE:LINE; a policy that runs too long ending
//! in the failure policy; `policy test` passing and failing on an input
//! recorded by `explain --json`.

use pullgate_testkit::{Registry, RegistryOptions, sha256};
use pullgate_tests::{AgentFiles, EXIT_CONFIG, agent_command, fixtures_dir};
use pullgate_wire::Descriptor;
use std::path::Path;

const CASE: &str = "key-valid";
const INPUT_VERSION: &str = "pullgate.dev/policy-input/v1";

/// Denies `latest`; names the rule that decided.
const DENY_LATEST: &str = r#"package pullgate

default decision := {"allow": true, "reason": "no rule objects", "rule": "default"}

decision := {"allow": false, "reason": "tag latest is not allowed; pin a version", "rule": "deny-latest"} if {
	input.image.tag == "latest"
}
"#;

/// Allows the fixture repository whatever the typed rules said.
const ALLOW_REPO: &str = r#"package pullgate

default decision := {"allow": false, "reason": "not vouched for"}

decision := {"allow": true, "reason": "key-valid is vouched for by policy", "rule": "vouched"} if {
	input.image.repository == "key-valid"
	input.typed.outcome == "deny"
}
"#;

/// Counts a nine-million-element join: far past the evaluation time limit.
const SLOW: &str = r#"package pullgate

n := count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); x == y])

decision := {"allow": n > 0, "reason": "counted"}
"#;

fn subject() -> Descriptor {
    let manifest = std::fs::read(fixtures_dir().join("cosign").join(CASE).join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap().to_string(),
        digest: sha256(&manifest),
        size: manifest.len() as u64,
    }
}

/// A registry holding the cosign fixture signature for the fixture image in repository `key-valid`.
fn registry(rt: &tokio::runtime::Runtime) -> Registry {
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let digest = rt.block_on(reg.attach_cosign_signature(CASE, &fixtures_dir().join("cosign").join(CASE)));
    assert_eq!(digest, subject().digest);
    reg
}

/// An agent verifying `host/**` with cosign and `key` (`cosign.pub` verifies
/// the fixture, `cosign2.pub` does not), `policy_lines` added to the scope,
/// and `policy.rego` holding `rego`.
fn agent(host: &str, key: &str, policy_lines: &str, rego: &str, top: &str) -> AgentFiles {
    let toml = format!(
        r#"{top}
defaultAction = "deny"
[registries."{host}"]
insecure = true
[[scopes]]
name = "signed"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["cosign"] }}
policy = "policy/policy.rego"
{policy_lines}
[sigstore]
keys = ["keys/{key}"]
requireTlog = false
"#
    );
    let a = AgentFiles::new(&toml);
    std::fs::create_dir_all(a.config_dir.join("keys")).unwrap();
    std::fs::create_dir_all(a.config_dir.join("policy")).unwrap();
    std::fs::copy(fixtures_dir().join("cosign/keys").join(key), a.config_dir.join("keys").join(key)).unwrap();
    std::fs::write(a.config_dir.join("policy/policy.rego"), rego).unwrap();
    a
}

#[test]
fn a_policy_tightens_a_typed_allow_and_the_report_keeps_its_input() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let a = agent(&reg.host, "cosign.pub", "", DENY_LATEST, "").start(&[]);
    let run = a.verify(&format!("{}/{CASE}:v1", reg.host), &subject());
    assert_eq!(run.code, Some(0), "a pinned tag passes the policy: {}", run.stdout);
    let run = a.verify(&format!("{}/{CASE}:latest", reg.host), &subject());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("policy policy/policy.rego denies: tag latest is not allowed"), "{}", run.stdout);
    let r = a.explain(&run.report_id());
    assert_eq!(r["source"], "rego", "{r}");
    assert!(r["rule"].as_str().unwrap().contains("scope signed + policy policy/policy.rego"), "{r}");
    let p = &r["policy"];
    assert_eq!(
        (p["typed"].as_str(), p["allow"].as_bool(), p["changed"].as_bool()),
        (Some("allow"), Some(false), Some(true))
    );
    assert!(p["rule"].as_str().unwrap().contains("deny-latest"), "{p}");
    let input = &p["input"];
    assert_eq!(input["apiVersion"], INPUT_VERSION, "the input document is versioned");
    assert_eq!(input["image"]["tag"], "latest");
    assert_eq!(input["image"]["digest"], subject().digest.as_str());
    assert_eq!(input["scope"]["name"], "signed");
    let sig = &input["verification"][0]["signatures"][0];
    assert_eq!((sig["verified"].as_bool(), sig["format"].as_str()), (Some(true), Some("cosign")), "{sig}");
    assert!(sig["keyId"].as_str().is_some_and(|k| k.len() == 64), "{sig}");
    assert_eq!(sig["subject"], subject().digest.as_str());
    // `explain` (text) shows the deciding rule and the input.
    let state = a.state_dir.to_str().unwrap();
    let (code, out, _) = agent_command(&["explain", &run.report_id(), "--state-dir", state]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("decided by data.pullgate.decision (rule deny-latest)") && out.contains(INPUT_VERSION),
        "{out}"
    );
}

#[test]
fn override_allows_a_typed_deny_and_tighten_does_not() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let image = format!("{}/{CASE}:v1", reg.host);
    // cosign2.pub did not sign the fixture: the typed rules deny.
    let a = agent(&reg.host, "cosign2.pub", "", ALLOW_REPO, "").start(&[]);
    let run = a.verify(&image, &subject());
    assert_eq!(run.code, Some(1), "tighten cannot allow a typed deny: {}", run.stdout);
    let r = a.explain(&run.report_id());
    assert_eq!((r["policy"]["allow"].as_bool(), r["policy"]["changed"].as_bool()), (Some(true), Some(false)), "{r}");
    drop(a);
    let a = agent(&reg.host, "cosign2.pub", "policyMode = \"override\"", ALLOW_REPO, "").start(&[]);
    let run = a.verify(&image, &subject());
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("overrides and allows: key-valid is vouched for"), "{}", run.stdout);
    let r = a.explain(&run.report_id());
    assert_eq!((r["outcome"].as_str(), r["source"].as_str()), (Some("allow"), Some("rego")), "{r}");
}

#[test]
fn compile_errors_fail_check_config_with_file_and_line() {
    let bad = "package pullgate\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n\ndecision := {\"allow\": false,\n  reason oops\n";
    let a = agent("127.0.0.1:9", "cosign.pub", "", bad, "");
    let dir = a.config_dir.to_str().unwrap();
    let (code, out, err) = agent_command(&["check-config", dir]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}{err}");
    let line = out.lines().find(|l| l.contains("policy/policy.rego:")).unwrap_or_else(|| panic!("{out}"));
    let n: u32 = line.split("policy/policy.rego:").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert!((5..=6).contains(&n), "the error names line 5 or 6: {line}");
    assert!(line.contains("scopes[0].policy"), "{line}");
    // No `decision` rule: refused too, and the daemon does not start on it.
    let a = agent("127.0.0.1:9", "cosign.pub", "", "package pullgate\n\nallow := true\n", "");
    let (code, out) = a.run_to_exit(&[]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    assert!(out.contains("no rule data.pullgate.decision"), "{out}");
}

#[test]
fn a_policy_that_runs_too_long_goes_to_the_failure_policy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let image = format!("{}/{CASE}:v1", reg.host);
    let a = agent(&reg.host, "cosign.pub", "", SLOW, "").start(&[]);
    let run = a.verify(&image, &subject());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("exceeded") && run.stdout.contains("failure policy closed"), "{}", run.stdout);
    let r = a.explain(&run.report_id());
    assert_eq!((r["outcome"].as_str(), r["source"].as_str()), (Some("error"), Some("failure-policy")), "{r}");
    assert!(r["policy"]["allow"].is_null(), "{r}");
    drop(a);
    let a = agent(&reg.host, "cosign.pub", "", SLOW, "failurePolicy = \"open\"").start(&[]);
    let run = a.verify(&image, &subject());
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains("failure policy open"), "{}", run.stdout);
}

/// Tests that pass on the recorded `latest` decision, and one that does not.
const TESTS_PASS: &str = r#"package pullgate_test

test_latest_is_denied if {
	not data.pullgate.decision.allow with input as data.inputs.latest
}

test_signed_by_a_key if {
	some sig in data.inputs.latest.verification[0].signatures
	sig.verified
	sig.keyId != ""
}
"#;
const TESTS_FAIL: &str = r#"package pullgate_test

test_latest_is_allowed if data.pullgate.decision.allow with input as data.inputs.latest
"#;

fn policy_test(dir: &Path) -> (Option<i32>, String) {
    let (code, out, err) = agent_command(&["policy", "test", dir.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn policy_test_runs_on_inputs_recorded_by_explain() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let a = agent(&reg.host, "cosign.pub", "", DENY_LATEST, "").start(&[]);
    let run = a.verify(&format!("{}/{CASE}:latest", reg.host), &subject());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let state = a.state_dir.to_str().unwrap();
    let (code, recorded, err) = agent_command(&["explain", &run.report_id(), "--state-dir", state, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inputs")).unwrap();
    std::fs::write(dir.path().join("inputs/latest.json"), &recorded).unwrap();
    std::fs::write(dir.path().join("policy.rego"), DENY_LATEST).unwrap();
    std::fs::write(dir.path().join("policy_test.rego"), TESTS_PASS).unwrap();
    let (code, out) = policy_test(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("data.pullgate_test.test_latest_is_denied: PASS") && out.contains("PASS: 2/2"), "{out}");
    std::fs::write(dir.path().join("policy_test.rego"), TESTS_FAIL).unwrap();
    let (code, out) = policy_test(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("data.pullgate_test.test_latest_is_allowed: FAIL") && out.contains("FAIL: 1/1"), "{out}");
    // A recorded file that is not an input is refused, not run.
    std::fs::write(dir.path().join("inputs/junk.json"), "{\"id\": \"d-1\"}").unwrap();
    let (code, out) = policy_test(dir.path());
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    assert!(out.contains("junk.json"), "{out}");
}
