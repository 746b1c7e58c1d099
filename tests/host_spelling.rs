//! Issue 11, end to end through the built `pullgate-verifier` and
//! `pullgate-agent`: under `defaultAction = "allow"`, no other spelling of a
//! denied registry host gets an image allowed. Each hostile spelling is denied
//! by the scope written for the canonical host, or refused as malformed; the
//! verifier runs fail-open, so a deny can come from neither the failure policy
//! nor an unreachable agent.

use pullgate_tests::{
    Agent, AgentFiles, EXIT_CONFIG, agent_command, containerd_args, descriptor_stdin, fixture_descriptors,
    run_verifier, verifier_config,
};

const POLICY: &str = r#"
defaultAction = "allow"

[[scopes]]
name = "local-registry"
images = ["localhost:5101/**"]
action = "deny"
reason = "canonical host localhost:5101"

[[scopes]]
name = "ipv4-registry"
images = ["127.0.0.1:5102/**"]
action = "deny"
reason = "canonical host 127.0.0.1:5102"

[[scopes]]
name = "docker-hub"
images = ["docker.io/**"]
action = "deny"
reason = "canonical host docker.io"
"#;

/// Execs the verifier for `name` against `agent`, fail-open, and returns (exit code, line).
fn pull(agent: &Agent, name: &str) -> (Option<i32>, String) {
    let d = fixture_descriptors().manifest;
    let config = verifier_config(&agent.socket, 20_000, "open", &[]);
    let run = run_verifier(&containerd_args(name, &d.digest), &descriptor_stdin(&d), &config);
    (run.code, run.line().to_string())
}

/// Asserts `name` is denied by the scope whose reason is `reason`, or refused as malformed.
fn assert_denied(agent: &Agent, name: &str, reason: &str) {
    let (code, line) = pull(agent, name);
    assert_eq!(code, Some(1), "{name} must be denied: {line}");
    assert!(
        line.contains(reason) || line.contains("invalid registry host"),
        "{name} was denied, but neither by the scope ({reason}) nor as a malformed host: {line}"
    );
    assert!(!line.contains("failure policy"), "{name}: a failure-policy deny proves nothing: {line}");
}

#[test]
fn every_spelling_of_a_denied_host_is_denied() {
    let agent = Agent::start(POLICY);
    let cases = [
        ("localhost:5101/team/app:v1", "canonical host localhost:5101"),
        ("127.0.0.1:5101/team/app:v1", "canonical host localhost:5101"),
        ("[::1]:5101/team/app:v1", "canonical host localhost:5101"),
        ("[0:0::1]:5101/team/app:v1", "canonical host localhost:5101"),
        ("LOCALHOST:5101/team/app:v1", "canonical host localhost:5101"),
        ("localhost:05101/team/app:v1", "canonical host localhost:5101"),
        ("[::ffff:127.0.0.1]:5101/team/app:v1", "canonical host localhost:5101"),
        ("[::ffff:7f00:1]:5101/team/app:v1", "canonical host localhost:5101"),
        ("127.000.000.001:5101/team/app:v1", "canonical host localhost:5101"),
        ("2130706433:5101/team/app:v1", "canonical host localhost:5101"),
        ("0.0.0.0:5101/team/app:v1", "canonical host localhost:5101"),
        ("localhost:5102/team/app:v1", "canonical host 127.0.0.1:5102"),
        ("127.0.0.1:5102/team/app:v1", "canonical host 127.0.0.1:5102"),
        ("[::1]:5102/team/app:v1", "canonical host 127.0.0.1:5102"),
        ("docker.io/library/alpine:3", "canonical host docker.io"),
        ("alpine:3", "canonical host docker.io"),
        ("docker.io:443/library/alpine:3", "canonical host docker.io"),
        ("registry-1.docker.io:443/library/alpine:3", "canonical host docker.io"),
        ("registry-1.docker.io/library/alpine:3", "canonical host docker.io"),
        ("index.docker.io:443/library/alpine:3", "canonical host docker.io"),
        ("Docker.IO/library/alpine:3", "canonical host docker.io"),
        ("registry.hub.docker.com/library/alpine:3", "canonical host docker.io"),
        ("docker.io:80/library/alpine:3", "canonical host docker.io"),
    ];
    for (name, reason) in cases {
        assert_denied(&agent, name, reason);
    }
}

#[test]
fn other_hosts_still_get_the_default_action() {
    let agent = Agent::start(POLICY);
    // Look-alikes and other ports are other registries: the default allow
    // applies, which shows the deny scopes above are not simply denying everything.
    for name in [
        "quay.io/team/app:v1",
        "localhost:5103/team/app:v1",
        "docker.io.evil.com/library/alpine:3",
        "evil-docker.io/library/alpine:3",
        "localhost.evil:5101/team/app:v1",
        "docker.io:5000/library/alpine:3",
    ] {
        let (code, line) = pull(&agent, name);
        assert_eq!(code, Some(0), "{name} should get defaultAction allow: {line}");
        assert!(line.contains("defaultAction"), "{name}: {line}");
    }
}

#[test]
fn check_config_refuses_hostile_spellings_in_patterns() {
    let scope = |image: &str| {
        format!("defaultAction = \"allow\"\n[[scopes]]\nname = \"s\"\nimages = [{image:?}]\naction = \"deny\"\n")
    };
    for (image, why) in [
        ("localhost:05101/**", "leading zeros"),
        ("[::ffff:127.0.0.1]:5101/**", "write the IPv4 address itself"),
        ("127.1:5101/**", "dotted-quad"),
        ("ghcr.io:80/**", "port 80"),
    ] {
        let files = AgentFiles::new(&scope(image));
        let (code, out, err) = agent_command(&["check-config", files.config_dir.to_str().unwrap()]);
        assert_eq!(code, Some(EXIT_CONFIG), "{image} must make the config invalid: {out}{err}");
        let text = format!("{out}{err}");
        assert!(text.contains("scopes[0].images[0]") && text.contains(why), "{image}: {text}");
    }
    // Non-canonical but unambiguous spellings are accepted: they mean the canonical host.
    let files = AgentFiles::new(&scope("GHCR.io:443/acme/**"));
    let (code, out, err) = agent_command(&["check-config", files.config_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
}
