//! Standalone mode, through the binary: editing `pullgate.toml` in the
//! `--config-dir` changes the verdict on the socket without SIGHUP, and an
//! invalid edit leaves the last good config in force.

use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Request, Response, Verdict, VerifyRequest};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const DIGEST: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

fn ask(socket: &Path, request: &Request) -> Response {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = serde_json::to_vec(request).unwrap();
    line.push(b'\n');
    s.write_all(&line).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn verdict(socket: &Path) -> Verdict {
    let req = Request::Verify(VerifyRequest {
        version: PROTOCOL_VERSION,
        reference: "quay.io/acme/app:1".into(),
        digest: DIGEST.into(),
        descriptor: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: DIGEST.into(),
            size: 517,
        },
        deadline_ms: 2000,
    });
    match ask(socket, &req) {
        Response::Decision(d) => d.verdict,
        other => panic!("{other:?}"),
    }
}

fn status(socket: &Path) -> pullgate_wire::StatusResponse {
    match ask(socket, &Request::Status { version: PROTOCOL_VERSION }) {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn editing_the_config_dir_changes_the_verdict_without_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let toml = |action: &str| format!("allowedUids = [0, {uid}]\ndefaultAction = \"{action}\"\n");
    std::fs::write(config.join("pullgate.toml"), toml("deny")).unwrap();
    let socket = dir.path().join("agent.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pullgate-agent"))
        .arg("run")
        .arg("--config-dir")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the socket", || socket.exists());
    assert_eq!(verdict(&socket), Verdict::Deny);
    let first = status(&socket).generation.unwrap();

    // An editor-style save: write a new file, rename it over the old one.
    std::fs::write(config.join(".pullgate.toml.swp"), toml("allow")).unwrap();
    std::fs::rename(config.join(".pullgate.toml.swp"), config.join("pullgate.toml")).unwrap();
    wait_for("the new verdict", || verdict(&socket) == Verdict::Allow);
    let second = status(&socket).generation.unwrap();
    assert_ne!(first, second);

    // An in-place write of an invalid config: rejected, the last good one stays.
    std::fs::write(config.join("pullgate.toml"), "defaultAction = \"sometimes\"\n").unwrap();
    wait_for("the rejection", || status(&socket).config_error.is_some());
    let s = status(&socket);
    assert_eq!(s.generation.as_deref(), Some(second.as_str()));
    assert!(s.counters["reloadFailures"] >= 1);
    assert_eq!(verdict(&socket), Verdict::Allow);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(c) = child.try_wait().unwrap() {
            break c;
        }
        assert!(Instant::now() < end, "the agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}");
}
