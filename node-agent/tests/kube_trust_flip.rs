//! Kubernetes mode end to end: the agent binary follows labelled ConfigMaps
//! from the API server double, verifies a Notation-signed image in a real
//! Debian `docker-registry`, and a change to the trust-store ConfigMap flips
//! the verdict without restarting the agent.

mod apiserver;

use apiserver::{ApiServer, Kind, NS, configmap};
use pullgate_testkit::{Registry, RegistryOptions};
use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Request, Response, Verdict, VerifyRequest};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DIGEST: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const LABEL: (&str, &str) = ("pullgate.io/config", "true");

fn notation_fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(notation_fixtures().join(rel)).unwrap()
}

fn truststore_cm(cert_file: &str) -> serde_json::Value {
    configmap(
        "pullgate-truststore-e2e",
        &[LABEL],
        &[("pullgate.io/path", "notation/truststore/x509/ca/e2e")],
        &[("signer.crt", &read(cert_file))],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_store_configmap_change_flips_the_verdict_without_restart() {
    let reg = Registry::start(RegistryOptions::default()).await;
    reg.push_layout("signed", &notation_fixtures().join("oci-layouts/e2e-valid-signature")).await;
    let api = ApiServer::start().await;
    let uid = nix::unistd::getuid().as_raw();
    let main = pullgate_testkit::notation_config(&reg.host, &format!("allowedUids = [0, {uid}]"));
    api.apply(Kind::ConfigMap, configmap("pullgate-main", &[LABEL], &[], &[("pullgate.toml", &main)]));
    api.apply(
        Kind::ConfigMap,
        configmap(
            "pullgate-trustpolicy",
            &[LABEL],
            &[("pullgate.io/path", "notation")],
            &[("trustpolicy.json", &read("trustpolicy/trustpolicy.json"))],
        ),
    );
    // First the store holds a certificate that did not sign the image.
    api.apply(Kind::ConfigMap, truststore_cm("truststore/x509/ca/e2e-other/new_e2e.crt"));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let socket = dir.path().join("agent.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pullgate-agent"))
        .args(["run", "--kubernetes", "--metrics-addr", "off", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let name = format!("{}/signed:v1", reg.host);
    let ask = || -> Option<(Verdict, String)> {
        let req = Request::Verify(VerifyRequest {
            version: PROTOCOL_VERSION,
            reference: name.clone(),
            digest: DIGEST.into(),
            descriptor: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: DIGEST.into(),
                size: 517,
            },
            deadline_ms: 5000,
        });
        let mut s = std::os::unix::net::UnixStream::connect(&socket).ok()?;
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        s.write_all(&line).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        match serde_json::from_str(&out).ok()? {
            Response::Decision(d) => Some((d.verdict, d.reason)),
            _ => None,
        }
    };
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let wait_for = |want: Verdict, needle: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((v, reason)) = ask()
                && v == want
                && reason.contains(needle)
            {
                return reason;
            }
            assert!(Instant::now() < end, "no {want:?} verdict with {needle:?}; last {:?}\n{}", ask(), log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let pid = child.id();
    let denied = tokio::task::block_in_place(|| wait_for(Verdict::Deny, "authenticity failed"));
    assert!(denied.contains("scope signed"), "{denied}");

    // Put the signer's CA into the trust-store ConfigMap: the agent syncs a new
    // generation, the cache key changes with it, and the same pull is allowed.
    api.apply(Kind::ConfigMap, truststore_cm("truststore/x509/ca/e2e/e2e.crt"));
    let allowed = tokio::task::block_in_place(|| wait_for(Verdict::Allow, "verified"));
    assert!(allowed.contains("scope signed"), "{allowed}");
    assert_eq!(child.id(), pid);
    assert!(child.try_wait().unwrap().is_none(), "the agent was not restarted");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = child.wait();
}
