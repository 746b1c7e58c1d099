//! Issue 15, containerd's hosts.toml end to end: `pullgate-verifier` → the
//! agent → real Debian `docker-registry` instances. The image is named on an
//! "upstream" registry that holds it unsigned; a mirror configured in
//! hosts.toml holds the Notation signature. Signature lookups must go where
//! containerd pulls from, in its order, past endpoints that fail or lack the
//! artifact, never trusting a mirror's bytes that do not match their digest;
//! a malformed hosts.toml is ignored as containerd ignores it and reported.

use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, notation_config};
use pullgate_tests::{Agent, AgentFiles, EXIT_CONFIG, MANIFEST_MEDIA_TYPE, agent_command, fixtures_dir};
use pullgate_wire::Descriptor;
use std::path::Path;

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
/// The Notation signature manifest of `e2e-valid-signature` (PROVENANCE 1a).
const SIGNATURE: &str = "sha256:90ceaff260d657d797c408ac73564a9c7bb9d86055877c2a811f0e63b8c6524f";

fn subject() -> Descriptor {
    Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: SUBJECT.into(), size: 517 }
}

fn layout(name: &str) -> std::path::PathBuf {
    fixtures_dir().join("notation/oci-layouts").join(name)
}

/// A registry holding `layout` (if any) as repository `app`.
fn registry(rt: &tokio::runtime::Runtime, with: Option<&str>) -> Registry {
    rt.block_on(async {
        let reg = Registry::start(RegistryOptions::default()).await;
        if let Some(l) = with {
            reg.push_layout("app", &layout(l)).await;
        }
        reg
    })
}

/// Writes `certs.d/<dir>/hosts.toml` and returns the certs.d root.
fn hosts_toml(root: &Path, dir: &str, text: &str) -> std::path::PathBuf {
    let certs = root.join("certs.d");
    std::fs::create_dir_all(certs.join(dir)).unwrap();
    std::fs::write(certs.join(dir).join("hosts.toml"), text).unwrap();
    certs
}

/// An agent verifying `upstream`'s images with Notation, with `[containerd]` when given.
fn start_agent(upstream: &Registry, containerd: Option<&Path>) -> Agent {
    let extra = containerd.map(|d| format!("[containerd]\nhostsDir = \"{}\"\n", d.display())).unwrap_or_default();
    let files = AgentFiles::new(&notation_config(&upstream.host, &extra));
    install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
    files.start(&[])
}

fn referrers_field(agent: &Agent, id: &str) -> String {
    let report = agent.explain(id);
    report["verification"][0]["referrers"].as_str().unwrap_or_default().to_string()
}

#[test]
fn signatures_come_from_the_mirror_containerd_pulls_from_and_the_report_names_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = registry(&rt, Some("e2e-unsigned"));
    let mirror = registry(&rt, Some("e2e-valid-signature"));
    let name = format!("{}/app:v1", upstream.host);

    // Without hosts.toml the registry itself is asked: no signature there.
    start_agent(&upstream, None).verify(&name, &subject()).denied();

    let node = tempfile::tempdir().unwrap();
    let certs = hosts_toml(
        node.path(),
        &upstream.host,
        &format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host, mirror.host
        ),
    );
    let agent = start_agent(&upstream, Some(&certs));
    let run = agent.verify(&name, &subject());
    run.allowed();
    let via = referrers_field(&agent, &run.report_id());
    assert!(via.ends_with(&format!("via http://{}/v2", mirror.host)), "the report names the mirror: {via:?}");
}

#[test]
fn endpoints_are_tried_in_file_order_past_failures_misses_and_unusable_capabilities() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = registry(&rt, Some("e2e-unsigned"));
    let empty = registry(&rt, None);
    let push_only = registry(&rt, Some("e2e-valid-signature"));
    let mirror = registry(&rt, Some("e2e-valid-signature"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // `host_port_` is the first directory name containerd looks for.
    let (h, p) = upstream.host.split_once(':').unwrap();
    let node = tempfile::tempdir().unwrap();
    let certs = hosts_toml(
        node.path(),
        &format!("{h}_{p}_"),
        &format!(
            "[host.\"http://{closed}\"]\n[host.\"http://{}\"]\n  capabilities = [\"push\"]\n[host.\"http://{}\"]\n[host.\"http://{}\"]\n",
            push_only.host, empty.host, mirror.host
        ),
    );
    let before = push_only.access_count();
    let agent = start_agent(&upstream, Some(&certs));
    let run = agent.verify(&format!("{}/app:v1", upstream.host), &subject());
    run.allowed();
    assert!(empty.access_count() > 0, "the endpoint before the mirror was asked first");
    assert_eq!(push_only.access_count(), before, "a push-only endpoint is never asked for pulls");
    let via = referrers_field(&agent, &run.report_id());
    assert!(via.contains(&mirror.host), "{via:?}");
}

#[test]
fn a_mirror_serving_other_bytes_for_a_digest_is_passed_over_never_trusted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mirror = registry(&rt, Some("e2e-valid-signature"));
    let stored = mirror.blob_data_path(SIGNATURE);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[50] ^= 0x20;
    std::fs::write(&stored, bytes).unwrap();
    let node = tempfile::tempdir().unwrap();

    // The registry itself holds the intact signature: the lookup falls back to it.
    let intact = registry(&rt, Some("e2e-valid-signature"));
    let certs = hosts_toml(node.path(), &intact.host, &format!("[host.\"http://{}\"]\n", mirror.host));
    start_agent(&intact, Some(&certs)).verify(&format!("{}/app:v1", intact.host), &subject()).allowed();

    // Only the mirror has it: tampered bytes are never used.
    let unsigned = registry(&rt, Some("e2e-unsigned"));
    let certs = hosts_toml(node.path(), &unsigned.host, &format!("[host.\"http://{}\"]\n", mirror.host));
    start_agent(&unsigned, Some(&certs)).verify(&format!("{}/app:v1", unsigned.host), &subject()).denied();
}

#[test]
fn a_malformed_hosts_toml_is_ignored_like_containerd_does_and_reported() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = registry(&rt, Some("e2e-unsigned"));
    let mirror = registry(&rt, Some("e2e-valid-signature"));
    let node = tempfile::tempdir().unwrap();
    let bad = format!("[host.\"http://{}\"]\n  capabilities = [\"pull\", \"fly\"]\n", mirror.host);
    let certs = hosts_toml(node.path(), &upstream.host, &bad);
    // containerd would pull from the registry itself, so pullgate asks it too: unsigned there.
    let agent = start_agent(&upstream, Some(&certs));
    agent.verify(&format!("{}/app:v1", upstream.host), &subject()).denied();
    assert_eq!(mirror.access_count(), 0, "the mirror of an ignored file is not asked");

    let config = agent.config_dir.to_str().unwrap();
    let (code, out, _) = agent_command(&["check-config", config]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    assert!(out.contains("hosts.toml") && out.contains("unknown capability \"fly\""), "{out}");
}

#[test]
fn hosts_toml_paths_outside_the_node_and_huge_files_are_reported() {
    let node = tempfile::tempdir().unwrap();
    let host_root = node.path().join("host");
    let certs = host_root.join("etc/containerd/certs.d");
    std::fs::create_dir_all(certs.join("a.example")).unwrap();
    std::fs::write(
        certs.join("a.example/hosts.toml"),
        "[host.\"https://m.example\"]\n  ca = \"../../../../../etc/shadow\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(certs.join("b.example")).unwrap();
    std::fs::write(certs.join("b.example/hosts.toml"), vec![b'#'; 300 * 1024]).unwrap();
    let toml = format!("[containerd]\nhostsDir = \"{}\"\nhostRoot = \"{}\"\n", certs.display(), host_root.display());
    let files = AgentFiles::new(&toml);
    let (code, out, _) = agent_command(&["check-config", files.config_dir.to_str().unwrap()]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    assert!(out.contains("a.example/hosts.toml") && out.contains("outside"), "{out}");
    assert!(out.contains("b.example/hosts.toml") && out.contains("larger than"), "{out}");
}
