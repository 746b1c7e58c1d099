//! containerd conformance: the built `pullgate-verifier` exec'd with every
//! argv and stdin shape containerd 2.x uses (see `CONTAINERD.md`), checked for
//! exit code and for the one-line stdout contract, against a real agent, a
//! stalled agent, no agent, and malformed input.

use pullgate_tests::{
    AgentFiles, INDEX_MEDIA_TYPE, STDIN_MEDIA_TYPE, VerifierRun, containerd_args, current_uid, descriptor_stdin,
    fixture_descriptors, run_verifier, verifier_config,
};
use pullgate_wire::{Descriptor, Request};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// Agent policy: one digest-pinned allowlist entry, an allowing scope for a
/// local registry, a denying scope for Docker Hub, everything else denied.
fn policy(manifest_digest: &str) -> String {
    format!(
        r#"
allowedUids = [{uid}]
allowlist = ["ghcr.io/acme/app@{manifest_digest}"]

[[scopes]]
name = "internal"
images = ["localhost:5000/**"]
action = "allow"

[[scopes]]
name = "docker-hub"
images = ["docker.io/**"]
action = "deny"
reason = "use the internal mirror"
"#,
        uid = current_uid()
    )
}

/// A verifier config for a socket nobody listens on.
fn no_agent_config(policy: &str, bootstrap: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let json = verifier_config(&socket, 2_000, policy, bootstrap);
    (dir, json)
}

fn verify(name: &str, d: &Descriptor, config: &str) -> VerifierRun {
    run_verifier(&containerd_args(name, &d.digest), &descriptor_stdin(d), config)
}

#[test]
fn every_reference_shape_containerd_passes_is_decided_by_the_agent() {
    let fx = fixture_descriptors();
    let m = &fx.manifest;
    let agent = AgentFiles::new(&policy(&m.digest)).start(&[]);
    let cases = [
        ("localhost:5000/team/app:v1", m, "scope internal"),
        (&*format!("ghcr.io/acme/app@{}", m.digest), m, "allowlist entry ghcr.io/acme/app@"),
        (&*format!("ghcr.io/acme/app:v1@{}", m.digest), m, "allowlist entry ghcr.io/acme/app@"),
        // A multi-platform pull: containerd passes the INDEX descriptor, once.
        ("localhost:5000/team/multi:v2", &fx.index, "scope internal"),
    ];
    for (name, d, why) in cases {
        let run = agent.verify(name, d);
        let line = run.allowed();
        // The line names the image once: `-name` alone when it already pins the digest.
        let label = if name.contains('@') { name.to_string() } else { format!("{name}@{}", d.digest) };
        assert!(line.starts_with(&format!("pullgate: allowed {label}: ")), "{line}");
        assert!(line.contains(why), "{name}: {line}");
        let report = agent.explain(&run.report_id());
        assert_eq!(report["reference"], name);
        assert_eq!(report["digest"], d.digest.as_str());
        assert_eq!(report["mediaType"], d.media_type.as_str(), "the descriptor from stdin reaches the report");
        assert_eq!(report["size"], d.size);
        assert_eq!(report["verdict"], "allow");
    }
    assert_eq!(fx.index.media_type, INDEX_MEDIA_TYPE);
}

#[test]
fn denied_images_exit_1_and_explain_finds_the_report_by_id_and_digest() {
    let fx = fixture_descriptors();
    let agent = AgentFiles::new(&policy(&fx.manifest.digest)).start(&[]);

    let hub = agent.verify("alpine:3.20", &fx.manifest);
    let line = hub.denied();
    assert!(line.contains("scope docker-hub: use the internal mirror"), "{line}");
    let other = agent.verify("quay.io/acme/tool:1", &fx.index);
    let line = other.denied();
    assert!(line.contains("defaultAction deny"), "{line}");
    // Same digest, not allowlisted under another name: the pinned entry is for ghcr.io/acme/app only.
    agent.verify("ghcr.io/acme/other:v1", &fx.manifest).denied();

    let by_id = agent.explain(&hub.report_id());
    assert_eq!(by_id["id"], hub.report_id().as_str());
    assert_eq!(by_id["verdict"], "deny");
    assert_eq!(by_id["rule"], "scope docker-hub");
    assert_eq!(by_id["normalized"], "docker.io/library/alpine:3.20");

    let by_digest = agent.explain(&fx.index.digest);
    assert_eq!(by_digest["id"], other.report_id().as_str());
    assert_eq!(by_digest["rule"], "defaultAction");

    // The human rendering names the decision and its verdict.
    let state = agent.state_dir.to_str().unwrap();
    let (code, out, err) = pullgate_tests::agent_command(&["explain", &hub.report_id(), "--state-dir", state]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&hub.report_id()) && out.contains("denied"), "{out}");
    let (code, _, err) = pullgate_tests::agent_command(&["explain", "d-0-404", "--state-dir", state]);
    assert_eq!(code, Some(1), "an unknown id is an error");
    assert!(err.contains("no decision"), "{err}");
}

#[test]
fn flag_equals_value_and_double_dash_forms_are_accepted() {
    let d = fixture_descriptors().manifest;
    let (_dir, config) = no_agent_config("closed", &["registry.k8s.io/pause:3.10"]);
    for args in [
        vec![
            "-name=registry.k8s.io/pause:3.10".to_string(),
            format!("-digest={}", d.digest),
            format!("-stdin-media-type={STDIN_MEDIA_TYPE}"),
        ],
        vec![
            "--name".to_string(),
            "registry.k8s.io/pause:3.10".to_string(),
            format!("--digest={}", d.digest),
            "--stdin-media-type".to_string(),
            STDIN_MEDIA_TYPE.to_string(),
        ],
    ] {
        let run = run_verifier(&args, &descriptor_stdin(&d), &config);
        let line = run.allowed();
        assert!(line.contains("bootstrap allowlist entry registry.k8s.io/pause:3.10"), "{args:?}: {line}");
    }
}

/// A fake agent that accepts connections, reads the request line and never answers.
fn stalled_agent() -> (tempfile::TempDir, PathBuf, mpsc::Receiver<String>) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stalled.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = tx.send(line);
            held.push(stream);
        }
    });
    (dir, socket, rx)
}

fn stalled_agent_verdict(policy: &str) -> (VerifierRun, String) {
    const DEADLINE_MS: u64 = 1_000;
    let d = fixture_descriptors().manifest;
    let (_dir, socket, requests) = stalled_agent();
    let run = verify("localhost:5000/team/app:v1", &d, &verifier_config(&socket, DEADLINE_MS, policy, &[]));
    let deadline = Duration::from_millis(DEADLINE_MS);
    assert!(run.elapsed < deadline + Duration::from_secs(1), "verdict after {:?}: {run:?}", run.elapsed);
    assert!(
        run.elapsed >= deadline - Duration::from_millis(150),
        "verdict after only {:?}; the verifier should have waited for the agent: {run:?}",
        run.elapsed
    );
    let request = requests.recv_timeout(Duration::from_secs(5)).expect("the verifier sent a request");
    match serde_json::from_str::<Request>(&request).unwrap() {
        Request::Verify(v) => {
            assert_eq!(v.reference, "localhost:5000/team/app:v1");
            assert_eq!(v.descriptor, d);
            assert!(v.deadline_ms < DEADLINE_MS, "the agent gets less than the whole budget: {}", v.deadline_ms);
        }
        other => panic!("{other:?}"),
    }
    let line = run.line().to_string();
    (run, line)
}

#[test]
fn stalled_agent_fail_closed_denies_before_the_deadline_passes() {
    let (run, line) = stalled_agent_verdict("closed");
    assert_eq!(run.code, Some(1), "{line}");
    assert!(line.ends_with("; failure policy closed"), "{line}");
}

#[test]
fn stalled_agent_fail_open_allows_before_the_deadline_passes() {
    let (run, line) = stalled_agent_verdict("open");
    assert_eq!(run.code, Some(0), "{line}");
    assert!(line.ends_with("; failure policy open"), "{line}");
}

#[test]
fn absent_agent_the_failure_policy_decides() {
    let d = fixture_descriptors().manifest;
    for (policy, code) in [("closed", 1), ("open", 0)] {
        let (_dir, config) = no_agent_config(policy, &[]);
        let run = verify("localhost:5000/team/app:v1", &d, &config);
        assert_eq!(run.code, Some(code), "{run:?}");
        let line = run.line();
        assert!(line.contains("agent unavailable (connect"), "{line}");
        assert!(line.ends_with(&format!("failure policy {policy}")), "{line}");
    }
}

#[test]
fn bootstrap_allowlist_answers_without_an_agent() {
    let fx = fixture_descriptors();
    let pinned = format!("ghcr.io/acme/pullgate-agent@{}", fx.index.digest);
    let bootstrap = ["registry.k8s.io/pause:3.10", pinned.as_str()];
    for policy in ["closed", "open"] {
        let (_dir, config) = no_agent_config(policy, &bootstrap);
        let line = verify("registry.k8s.io/pause:3.10", &fx.manifest, &config).allowed().to_string();
        assert!(line.contains("bootstrap allowlist entry registry.k8s.io/pause:3.10 (agent not consulted)"), "{line}");
        let line = verify("ghcr.io/acme/pullgate-agent:v0.1.0", &fx.index, &config).allowed().to_string();
        assert!(line.contains(&format!("bootstrap allowlist entry {pinned} ")), "{line}");
        // Not on the bootstrap list (another tag; another digest): the agent is asked, the policy decides.
        for (name, d) in
            [("registry.k8s.io/pause:3.9", &fx.manifest), ("ghcr.io/acme/pullgate-agent:v0.1.0", &fx.manifest)]
        {
            let run = verify(name, d, &config);
            assert_eq!(run.code, Some(if policy == "closed" { 1 } else { 0 }), "{run:?}");
            assert!(run.line().ends_with(&format!("failure policy {policy}")), "{run:?}");
        }
    }
}

#[test]
fn malformed_invocations_are_denied_naming_what_is_wrong() {
    let d = fixture_descriptors().manifest;
    let (name, digest, stdin) = ("registry.k8s.io/pause:3.10", d.digest.as_str(), descriptor_stdin(&d));
    let args = containerd_args;
    // Fail-open with the image on the bootstrap list: malformed input must still be denied.
    let (_dir, config) = no_agent_config("open", &["registry.k8s.io/pause:3.10"]);
    verify(name, &d, &config).allowed();

    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let other = format!("sha256:{}", "0".repeat(64));
    let with_digest = |digest: &str| descriptor_stdin(&Descriptor { digest: digest.into(), ..d.clone() });
    let mut big = stdin.clone();
    big.resize(64 * 1024 + 1, b' ');
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let differs = format!("descriptor digest \"{other}\" differs from -digest {digest}");
    let cases: Vec<(&str, Vec<String>, Vec<u8>, &str)> = vec![
        (
            "missing flag",
            s(&["-digest", digest, "-stdin-media-type", STDIN_MEDIA_TYPE]),
            stdin.clone(),
            "missing -name",
        ),
        ("unknown flag", [args(name, digest), s(&["-verbose", "1"])].concat(), stdin.clone(), "unknown flag -verbose"),
        (
            "flag without value",
            s(&["-name", name, "-digest", digest, "-stdin-media-type"]),
            stdin.clone(),
            "flag -stdin-media-type needs a value",
        ),
        (
            "stray argument",
            [args(name, digest), s(&["extra"])].concat(),
            stdin.clone(),
            "unexpected argument \"extra\"",
        ),
        ("digest without algorithm", args(name, &digest["sha256:".len()..]), stdin.clone(), "expected algorithm:hex"),
        (
            "digest with upper-case hex",
            args(name, &digest.to_uppercase().replace("SHA256", "sha256")),
            stdin.clone(),
            "expected algorithm:hex",
        ),
        ("unsupported algorithm", args(name, md5), with_digest(md5), "unsupported digest algorithm \"md5\""),
        ("descriptor digest differs", args(name, digest), with_digest(&other), &differs),
        ("stdin over 64 KiB", args(name, digest), big, "stdin is larger than 65536 bytes"),
        ("stdin not JSON", args(name, digest), b"mediaType=x\n".to_vec(), "stdin is not an OCI descriptor JSON"),
        ("empty stdin", args(name, digest), Vec::new(), "stdin is empty"),
        (
            "-name pins another digest",
            args(&format!("registry.k8s.io/pause:3.10@{other}"), digest),
            stdin.clone(),
            "-name pins",
        ),
        (
            "wrong stdin media type",
            s(&["-name", name, "-digest", digest, "-stdin-media-type", "application/json"]),
            stdin.clone(),
            "-stdin-media-type \"application/json\"",
        ),
        ("invalid reference", args("registry.k8s.io/Pause:3.10", digest), stdin.clone(), "-name \""),
    ];
    for (what, argv, stdin, needle) in cases {
        let run = run_verifier(&argv, &stdin, &config);
        assert_eq!(run.code, Some(1), "{what}: {run:?}");
        let line = run.line();
        assert!(line.contains("malformed invocation: "), "{what}: {line}");
        assert!(line.contains(needle), "{what}: {needle:?} not in {line}");
        assert!(!line.contains("failure policy"), "{what}: malformed input is not a failure-policy case: {line}");
    }
}

#[test]
fn an_unusable_verifier_config_denies_every_pull() {
    let d = fixture_descriptors().manifest;
    for (config, needle) in [
        ("{not json", "verifier.json"),
        (r#"{"deadlineMs": 5, "failurePolicy": "open"}"#, "deadlineMs: 5 is outside"),
        (r#"{"failurePolicy": "open", "sockett": "/run/x.sock"}"#, "sockett"),
        (r#"{"failurePolicy": "open", "bootstrapAllowlist": ["*.k8s.io/pause"]}"#, "bootstrapAllowlist[0]"),
    ] {
        let run = verify("registry.k8s.io/pause:3.10", &d, config);
        assert_eq!(run.code, Some(1), "{config}: {run:?}");
        let line = run.line();
        assert!(line.contains("verifier config is unusable, denying every pull"), "{line}");
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
}

#[test]
fn output_stays_one_bounded_line_for_hostile_input() {
    let d = fixture_descriptors().manifest;
    let (_dir, config) = no_agent_config("closed", &[]);
    let long = format!("localhost:5000/{}:v1", "a/".repeat(1500).trim_end_matches('/'));
    let run = verify(&long, &d, &config);
    assert_eq!(run.code, Some(1));
    let line = run.line();
    assert!(line.len() < 1024 && line.ends_with('…'), "cut to fit: {} bytes", line.len());
    let run = verify("localhost:5000/a:v1\nforged: line", &d, &config);
    assert_eq!(run.code, Some(1));
    run.line();
}

#[test]
fn a_config_that_never_finishes_reading_still_gets_a_verdict_by_the_default_deadline() {
    // A FIFO with no writer: opening it blocks forever, like a config on a hung mount.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("verifier.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fx = pullgate_tests::fixture_descriptors();
    let mut cmd = std::process::Command::new(pullgate_tests::bin("pullgate-verifier"));
    cmd.args(pullgate_tests::containerd_args("registry.example/app:1", &fx.manifest.digest))
        .env("PULLGATE_VERIFIER_CONFIG", &fifo);
    let (code, stdout, _, elapsed) = pullgate_tests::run_bounded(cmd, pullgate_tests::descriptor_stdin(&fx.manifest));
    assert_eq!(code, Some(1), "fail-closed until a config says otherwise: {stdout}");
    assert!(stdout.contains("no decision within the verifier deadline; failure policy closed"), "{stdout}");
    let default = Duration::from_millis(pullgate_wire::DEFAULT_DEADLINE_MS);
    assert!(
        elapsed >= default - Duration::from_millis(200) && elapsed < default + Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(stdout.lines().count(), 1);
}
