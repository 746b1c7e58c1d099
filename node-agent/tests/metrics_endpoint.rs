//! The metrics endpoint of the real `pullgate-agent run`: a decision made on
//! the socket shows up in `GET /metrics` with its labels; the endpoint stops
//! with the agent; non-loopback addresses need `--metrics-allow-remote`; an
//! address that cannot be bound stops an agent that was asked to use it.

use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Request, Response, Verdict, VerifyRequest};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DIGEST: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const BOUND: Duration = Duration::from_secs(20);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// A config dir allowing this test's uid on the socket, denying by default,
/// with one allowlisted image.
fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    std::fs::write(
        config.join("pullgate.toml"),
        format!("allowedUids = [0, {uid}]\ndefaultAction = \"deny\"\nallowlist = [\"registry.k8s.io/pause:3.10\"]\n"),
    )
    .unwrap();
    let socket = dir.path().join("agent.sock");
    (dir, config, socket)
}

fn agent(dir: &Path, config: &Path, socket: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullgate-agent"));
    cmd.arg("run")
        .arg("--config-dir")
        .arg(config)
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    cmd
}

fn wait_exit(child: &mut Child) -> Option<ExitStatus> {
    let end = Instant::now() + BOUND;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the agent on drop, whatever the test's outcome.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        if wait_exit(&mut self.0).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn decide(socket: &Path, reference: &str) -> Verdict {
    let req = Request::Verify(VerifyRequest {
        version: PROTOCOL_VERSION,
        reference: reference.into(),
        digest: DIGEST.into(),
        descriptor: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: DIGEST.into(),
            size: 517,
        },
        deadline_ms: 5000,
    });
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut line = serde_json::to_vec(&req).unwrap();
    line.push(b'\n');
    s.write_all(&line).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    match serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")) {
        Response::Decision(d) => d.verdict,
        other => panic!("{other:?}"),
    }
}

/// One HTTP/1.1 exchange: (status line, headers and body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, BOUND)?;
    s.set_read_timeout(Some(BOUND))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (status, rest) = out.split_once("\r\n").unwrap_or((&out, ""));
    Ok((status.to_string(), rest.to_string()))
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + BOUND;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn decisions_show_up_on_the_metrics_endpoint() {
    let (dir, config, socket) = layout();
    let addr = free_addr();
    let child = agent(dir.path(), &config, &socket, &["--metrics-addr", &addr.to_string()]).spawn().unwrap();
    let mut running = Running(child);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    wait_for("the socket and the metrics endpoint", || socket.exists() && TcpStream::connect(addr).is_ok());

    let (status, rest) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{rest}");
    assert!(rest.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{rest}");
    let allowed = r#"pullgate_decisions_total{result="allow",mode="enforce",source="allowlist"}"#;
    let denied = r#"pullgate_decisions_total{result="deny",mode="enforce",source="policy"}"#;
    assert_eq!(sample(&rest, allowed).unwrap_or(0.0), 0.0, "{rest}");

    assert_eq!(decide(&socket, "registry.k8s.io/pause:3.10"), Verdict::Allow);
    assert_eq!(decide(&socket, "quay.io/acme/app:1"), Verdict::Deny);
    assert_eq!(decide(&socket, "quay.io/acme/app:2"), Verdict::Deny);
    let (_, body) = http_get(addr, "/metrics").unwrap();
    assert_eq!(sample(&body, allowed), Some(1.0), "after one allowlisted pull:\n{body}\nagent stderr:\n{}", stderr());
    assert_eq!(sample(&body, denied), Some(2.0), "after two default-denied pulls:\n{body}");
    assert!(
        sample(&body, r#"pullgate_decision_duration_seconds_count{source="policy"}"#).is_some_and(|n| n >= 2.0),
        "{body}"
    );

    let (status, _) = http_get(addr, "/").unwrap();
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // SIGTERM stops the endpoint with the agent.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(running.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let code = wait_exit(&mut running.0).expect("the agent stops on SIGTERM");
    assert!(code.success(), "{code:?}: {}", stderr());
    assert!(TcpStream::connect(addr).is_err(), "the metrics port is closed after shutdown");
}

#[test]
fn non_loopback_needs_allow_remote_and_a_taken_address_is_fatal() {
    let (dir, config, socket) = layout();
    let mut child = agent(dir.path(), &config, &socket, &["--metrics-addr", "0.0.0.0:0"]).spawn().unwrap();
    let code = wait_exit(&mut child).expect("the agent refuses to start");
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(code.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--metrics-allow-remote"), "{stderr}");
    assert!(!socket.exists(), "nothing was bound");

    let mut child = agent(dir.path(), &config, &socket, &["--metrics-addr", "localhost:9464"]).spawn().unwrap();
    let code = wait_exit(&mut child).expect("a bad address is a usage error");
    assert_ne!(code.code(), Some(0));

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = agent(dir.path(), &config, &socket, &["--metrics-addr", &addr]).spawn().unwrap();
    let code = wait_exit(&mut child).expect("the agent gives up on an address it cannot bind");
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("binding the metrics endpoint"), "{stderr}");
    assert!(!socket.exists(), "the socket is not left behind");
}
