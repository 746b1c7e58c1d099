//! Node coverage in Kubernetes mode: the agent binary, run against the in-process
//! API server double, posts a `NodeNotCovered` Warning Event on its own pod when
//! containerd's config makes CRI pulls skip the verifier, and `status` says so.

mod apiserver;

use apiserver::{ApiServer, NS};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_coverage_is_an_event_on_the_agent_pod() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let containerd_config = dir.path().join("config.toml");
    std::fs::write(
        &containerd_config,
        "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  discard_unpacked_layers = true\n",
    )
    .unwrap();
    let socket = dir.path().join("agent.sock");
    let bin = env!("CARGO_BIN_EXE_pullgate-agent");
    let mut child = std::process::Command::new(bin)
        .args(["run", "--kubernetes", "--no-inventory", "--metrics-addr", "off", "--coverage-interval", "1s"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--containerd-config")
        .arg(&containerd_config)
        .arg("--containerd-bin")
        .arg("/nonexistent/containerd")
        .arg("--containerd-socket")
        .arg(dir.path().join("no-containerd.sock"))
        .arg("--verifier-config")
        .arg(dir.path().join("verifier.json"))
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", "pullgate-agent-x7k2p")
        .env("NODE_NAME", "node-7")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let found = api.events().into_iter().find(|e| e["reason"] == "NodeNotCovered");
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < end, "no NodeNotCovered Event; events: {:?}", api.events());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // One Event per change of verdict, not one per check (checks run every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(api.events().iter().filter(|e| e["reason"] == "NodeNotCovered").count(), 1);
    assert_eq!(event["involvedObject"]["kind"], "Pod");
    assert_eq!(event["involvedObject"]["name"], "pullgate-agent-x7k2p");
    assert_eq!(event["type"], "Warning");
    let msg = event["message"].as_str().unwrap();
    assert!(msg.starts_with("bypassed: "), "{msg}");
}
