//! Issue 11: nothing pushed next to an image can change its verdict, through
//! the size or the bytes of the answer it makes the agent give.
//!
//! `pullgate-verifier` exec'd as containerd does → the agent → a real Debian
//! `docker-registry` holding the unsigned fixture image with hostile junk
//! attached: well-formed but untrusted Notation signatures whose protected
//! headers name a ~100 KB verification plugin and a long `crit` list (one
//! with a ~100 KB envelope media type), all built from a fixture envelope by
//! rewriting its protected header (so their signatures no longer verify), and
//! a cosign signature manifest with 1000 junk layers. Every reason those
//! produce is attacker-sized text full of quotes, backslashes, NULs,
//! newlines and multibyte characters.
//!
//! Under every combination of the agent's and the verifier's failure policy
//! the image stays denied with a one-line answer of at most 1 KiB that names
//! its report (never an "agent unavailable" failure-policy verdict); in audit
//! mode it is allowed with the audit reason, not through an error.

use base64::Engine as _;
use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, sha256};
use pullgate_tests::{AgentFiles, MANIFEST_MEDIA_TYPE, containerd_args, descriptor_stdin, fixtures_dir, run_verifier};
use pullgate_wire::Descriptor;
use serde_json::{Value, json};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const REPO: &str = "junk";
const NOTATION_ARTIFACT: &str = "application/vnd.cncf.notary.signature";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The fixture's JWS envelope (`e2e-valid-signature`), used as the template.
const ENVELOPE: &str = "c9af07e038b2b1a463e648986ad7273157511ffeba0b689f33e5472bae471f50";

fn subject() -> Descriptor {
    Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: SUBJECT.into(), size: 517 }
}

/// About `len` bytes of text that is expensive to escape and breaks lines.
fn hostile(len: usize) -> String {
    let piece = "\"\\\u{0}\n\r\u{1b}[31mé😀\\u0000\u{2028} ";
    piece.repeat(len / piece.len() + 1)
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The fixture envelope with `change` applied to its protected header.
fn rewritten_envelope(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let path = fixtures_dir().join("notation/oci-layouts/e2e-valid-signature/blobs/sha256").join(ENVELOPE);
    let mut jws: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let protected = b64url().decode(jws["protected"].as_str().unwrap()).unwrap();
    let mut header: serde_json::Map<String, Value> = serde_json::from_slice(&protected).unwrap();
    change(&mut header);
    jws["protected"] = Value::String(b64url().encode(serde_json::to_vec(&header).unwrap()));
    serde_json::to_vec(&jws).unwrap()
}

/// Pushes one Notation signature manifest for the subject whose one layer is
/// `envelope` with media type `layer_type`; returns its index entry.
async fn push_signature(reg: &Registry, envelope: Vec<u8>, layer_type: &str) -> Value {
    let config = reg.push_blob(REPO, b"{}".to_vec()).await;
    let size = envelope.len();
    let layer = reg.push_blob(REPO, envelope).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": NOTATION_ARTIFACT, "digest": config, "size": 2},
        "layers": [{"mediaType": layer_type, "digest": layer, "size": size}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 517},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&bytes);
    let len = bytes.len();
    reg.push_manifest(REPO, &digest, OCI_MANIFEST, bytes).await;
    json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": len, "artifactType": NOTATION_ARTIFACT})
}

/// Three untrusted Notation signatures, listed under the referrers tag
/// (`sha256-<hex>`) the way the fixture layouts list theirs.
async fn attach_notation_junk(reg: &Registry) {
    let plugin = rewritten_envelope(|h| {
        let name = format!("plugin {}", hostile(100_000));
        h.insert("io.cncf.notary.verificationPlugin".into(), Value::String(name.clone()));
        // Marked critical under a name the header does not hold: the header is refused, quoting it.
        let crit = h["crit"].as_array_mut().unwrap();
        crit.push(Value::String("io.cncf.notary.verificationPlugin".into()));
        crit.push(Value::String(name));
    });
    let crit_list = rewritten_envelope(|h| {
        let crit = h["crit"].as_array_mut().unwrap();
        crit.extend((0..3000).map(|i| Value::String(format!("{}{i}", hostile(40)))));
    });
    let plain = rewritten_envelope(|_| {});
    let mut entries = Vec::new();
    entries.push(push_signature(reg, plugin, "application/jose+json").await);
    entries.push(push_signature(reg, crit_list, "application/jose+json").await);
    let huge_type = format!("application/jose+json; x={}", hostile(100_000));
    entries.push(push_signature(reg, plain, &huge_type).await);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let tag = SUBJECT.replace(':', "-");
    reg.push_manifest(REPO, &tag, OCI_INDEX, serde_json::to_vec(&index).unwrap()).await;
}

/// A cosign signature manifest (`sha256-<hex>.sig`) with 1000 junk layers.
async fn attach_cosign_junk(reg: &Registry) {
    let payload = format!(r#"{{"critical":{{"identity":{{"docker-reference":"{}"}}}}}}"#, "x".repeat(2000));
    let payload_len = payload.len();
    let payload = reg.push_blob(REPO, payload.into_bytes()).await;
    let config = reg.push_blob(REPO, b"{}".to_vec()).await;
    let junk = serde_json::to_string(&hostile(600)).unwrap();
    let junk: String = serde_json::from_str(&junk).unwrap();
    let layers: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": payload,
                "size": payload_len,
                "annotations": {
                    "dev.cosignproject.cosign/signature": format!("{i}{junk}"),
                    "dev.sigstore.cosign/certificate": junk,
                },
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers,
    });
    let tag = format!("{}.sig", SUBJECT.replace(':', "-"));
    reg.push_manifest(REPO, &tag, OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap()).await;
}

/// An agent verifying `host` with Notation (fixture trust) or cosign (fixture
/// key), `match = "any"`, in `mode` with the agent's `failure_policy`.
fn agent(host: &str, mode: &str, failure_policy: &str) -> AgentFiles {
    let toml = format!(
        r#"defaultAction = "deny"
mode = "{mode}"
failurePolicy = "{failure_policy}"
[notation]
trustPolicy = "notation/trustpolicy.json"
trustStore = "notation/truststore"
[sigstore]
keys = ["keys/cosign.pub"]
requireTlog = false
[registries."{host}"]
insecure = true
[[scopes]]
name = "signed"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["notation", "cosign"], match = "any" }}
"#
    );
    let files = AgentFiles::new(&toml);
    install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
    std::fs::create_dir_all(files.config_dir.join("keys")).unwrap();
    std::fs::copy(fixtures_dir().join("cosign/keys/cosign.pub"), files.config_dir.join("keys/cosign.pub")).unwrap();
    files
}

/// Longest text anywhere in a report's verification section.
fn longest_text(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(longest_text).max().unwrap_or(0),
        Value::Object(o) => o.values().map(longest_text).max().unwrap_or(0),
        _ => 0,
    }
}

#[test]
fn junk_next_to_an_unsigned_image_never_changes_its_verdict() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(async {
        let reg = Registry::start(RegistryOptions::default()).await;
        reg.push_layout(REPO, &fixtures_dir().join("notation/oci-layouts/e2e-unsigned")).await;
        attach_notation_junk(&reg).await;
        attach_cosign_junk(&reg).await;
        reg
    });
    let name = format!("{}/{REPO}:v1", reg.host);
    let mut failures = Vec::new();
    for (mode, agent_policy) in [("enforce", "closed"), ("enforce", "open"), ("audit", "closed"), ("audit", "open")] {
        let agent = agent(&reg.host, mode, agent_policy).start(&[]);
        for verifier_policy in ["open", "closed"] {
            let case =
                format!("mode {mode}, agent failurePolicy {agent_policy}, verifier failurePolicy {verifier_policy}");
            let run = run_verifier(
                &containerd_args(&name, SUBJECT),
                &descriptor_stdin(&subject()),
                &agent.verifier_config(20_000, verifier_policy),
            );
            // One line of at most 1 KiB whose verdict matches the exit code.
            let line = run.line().to_string();
            let want_allow = mode == "audit";
            let ok = if want_allow { run.code == Some(0) } else { run.code == Some(1) };
            let shape = if want_allow {
                line.contains(": audit mode, enforce would deny: scope signed: ")
            } else {
                line.starts_with(&format!("pullgate: denied {name}@{SUBJECT}: scope signed: "))
            };
            if !ok || !shape || line.contains("failure policy") || line.contains("agent unavailable") {
                failures.push(format!("{case}: exit {:?}: {line}", run.code));
                continue;
            }
            // The agent decided, and its report holds the attacker-sized detail
            // the answer left out (so the test really sent junk through).
            let report = agent.explain(&run.report_id());
            assert_eq!(report["outcome"], "deny", "{case}: {report}");
            let runs = report["verification"].as_array().cloned().unwrap_or_default();
            let examined: Vec<usize> = runs.iter().map(|r| r["signatures"].as_array().map_or(0, Vec::len)).collect();
            assert!(examined.len() == 2 && examined.iter().all(|n| *n > 0), "{case}: signatures examined {examined:?}");
            let longest = longest_text(&report["verification"]);
            let size = report.to_string().len();
            eprintln!(
                "{case}: {line}\n  signatures examined {examined:?}, report {size} bytes, longest text {longest}"
            );
            assert!(longest > 1024, "{case}: the junk never reached a reason (longest text {longest} bytes)");
        }
    }
    assert!(failures.is_empty(), "{} cases changed verdict:\n{}", failures.len(), failures.join("\n"));
}

/// A fake agent on `socket` that answers every connection with `answer`.
fn answering_agent(socket: &std::path::Path, answer: Vec<u8>) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(&answer);
        }
    });
}

/// The real verifier binary, fail-open: an answer that is too large, does not
/// parse or is not a decision denies, naming why; only no answer at all is
/// left to the failure policy.
#[test]
fn unusable_answers_deny_even_when_the_verifier_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let huge = format!(r#"{{"type":"decision","verdict":"allow","reason":"{}","reportId":"d-1"}}"#, "x".repeat(70_000));
    let status = r#"{"type":"status","agentVersion":"1","uptimeSecs":1,"generation":null,"mode":null,"configError":null,"counters":{}}"#;
    let cases: [(&str, String, &str); 4] = [
        (
            "huge",
            format!("{huge}\n"),
            "agent answer is larger than 65536 bytes; denying (not a failure-policy case: the agent answered)",
        ),
        ("unterminated", "x".repeat(70_000), "agent answer is larger than 65536 bytes; denying"),
        ("garbage", "{\"type\":\"decision\",\"verdict\":\n".into(), "agent answer is not understood"),
        ("status", format!("{status}\n"), "agent answered a verify request with a status; denying"),
    ];
    let name = format!("registry.example/app:1@{SUBJECT}");
    for (what, answer, want) in cases {
        let socket = dir.path().join(format!("{what}.sock"));
        answering_agent(&socket, answer.into_bytes());
        let config = pullgate_tests::verifier_config(&socket, 5_000, "open", &[]);
        let run = run_verifier(&containerd_args(&name, SUBJECT), &descriptor_stdin(&subject()), &config);
        let line = run.denied();
        assert!(line.contains(want) && !line.contains("failure policy"), "{what}: {line}");
    }
    // Control: a closed connection with no answer is unavailability, and fail-open allows it.
    let socket = dir.path().join("closed.sock");
    answering_agent(&socket, Vec::new());
    let config = pullgate_tests::verifier_config(&socket, 5_000, "open", &[]);
    let run = run_verifier(&containerd_args(&name, SUBJECT), &descriptor_stdin(&subject()), &config);
    assert!(run.allowed().ends_with("agent closed the connection without answering; failure policy open"), "{run:?}");
}
