//! `pullgate-agent` behaviour over a real Unix socket: permissions, peer
//! checks, limits, slow and concurrent clients, signals, socket-file safety,
//! config validation, audit mode and reload.

use nix::sys::signal::Signal;
use pullgate_tests::{
    Agent, AgentFiles, EXIT_CONFIG, agent_command, current_uid, fixture_descriptors, parse_response, raw_exchange,
    raw_request, verify_request,
};
use pullgate_wire::{Response, Verdict};
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Allows one local registry, denies Docker Hub and everything unmatched; this process may connect.
fn policy() -> String {
    policy_for(current_uid())
}

/// [`policy`] with `uid` as the only allowed peer.
fn policy_for(uid: u32) -> String {
    format!(
        r#"
allowedUids = [{uid}]

[[scopes]]
name = "internal"
images = ["localhost:5000/**"]
action = "allow"

[[scopes]]
name = "docker-hub"
images = ["docker.io/**"]
action = "deny"
reason = "use the internal mirror"
"#
    )
}

fn decision(r: Response) -> pullgate_wire::DecisionResponse {
    match r {
        Response::Decision(d) => d,
        other => panic!("expected a decision, got {other:?}"),
    }
}

/// Polls `f` every 50 ms until it returns true, for at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn socket_is_private_and_status_reports_the_loaded_generation() {
    let agent = Agent::start(&policy());
    let meta = std::fs::symlink_metadata(&agent.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "socket mode");

    let dir = agent.config_dir.to_str().unwrap();
    let (code, out, err) = agent_command(&["check-config", dir]);
    assert_eq!(code, Some(0), "{out}{err}");
    let status = agent.status();
    let generation = status["generation"].as_str().expect("a generation is loaded");
    assert!(out.contains(&format!("generation {generation}")), "check-config and status agree: {out}");
    assert_eq!(status["mode"], "enforce");
    assert!(status["configError"].is_null());

    let (code, text, err) = agent_command(&["status", "--socket", agent.socket.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains(generation) && text.contains("enforce"), "{text}");

    let absent = agent.root.path().join("absent.sock");
    let (code, _, err) = agent_command(&["status", "--socket", absent.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is it running?"), "{err}");
}

#[test]
fn a_peer_whose_uid_is_not_allowed_is_refused() {
    let other_uid = if current_uid() == 4242 { 4343 } else { 4242 };
    let agent = Agent::start(&policy_for(other_uid));
    let d = fixture_descriptors().manifest;

    let run = agent.verify("localhost:5000/team/app:v1", &d);
    let line = run.denied();
    assert!(line.contains("agent refused the request"), "{line}");
    assert!(line.contains(&format!("peer uid {} is not allowed", current_uid())), "{line}");
    assert!(line.ends_with("failure policy closed"), "{line}");

    let answer = raw_exchange(&agent.socket, b"", Duration::from_secs(10)).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(raw["type"], "error", "{raw}");
    assert!(raw["message"].as_str().unwrap().contains("allowedUids"), "{raw}");
}

#[test]
fn an_oversize_request_is_refused_and_the_agent_keeps_serving() {
    let agent = Agent::start(&policy());
    let answer = raw_exchange(&agent.socket, &vec![b'x'; 70 * 1024], Duration::from_secs(10)).unwrap();
    match parse_response(&answer) {
        Response::Error { message } => assert!(message.contains("exceeds 65536 bytes"), "{message}"),
        other => panic!("{other:?}"),
    }
    let d = fixture_descriptors().manifest;
    let ok = decision(raw_request(&agent.socket, &verify_request("localhost:5000/team/app:v1", &d)));
    assert_eq!(ok.verdict, Verdict::Allow, "{ok:?}");
    let garbage = raw_exchange(&agent.socket, b"{\"op\":\"launch\"}\n", Duration::from_secs(10)).unwrap();
    match parse_response(&garbage) {
        Response::Error { message } => assert!(message.contains("not understood"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_slow_client_is_cut_off_without_holding_up_others() {
    let agent = AgentFiles::new(&policy()).start(&["--read-timeout", "1s"]);
    let connected = Instant::now();
    let mut slow = UnixStream::connect(&agent.socket).unwrap();

    let d = fixture_descriptors().manifest;
    agent.verify("localhost:5000/team/app:v1", &d).allowed();
    slow.set_nonblocking(true).unwrap();
    let mut answer = vec![0u8; 4096];
    let early = slow.read(&mut answer);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the normal request should be answered while the slow client still waits; slow client got {early:?} after {:?}",
        connected.elapsed()
    );

    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    answer.clear();
    slow.read_to_end(&mut answer).unwrap();
    let waited = connected.elapsed();
    assert!(waited >= Duration::from_millis(900), "cut off after only {waited:?}");
    assert!(waited < Duration::from_secs(10), "cut off only after {waited:?}");
    match parse_response(&answer) {
        Response::Error { message } => assert!(message.contains("no complete request within 1000 ms"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_hundred_concurrent_clients_each_get_their_own_answer() {
    const CLIENTS: usize = 200;
    let agent = Agent::start(&policy());
    let d = fixture_descriptors().manifest;
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (socket, d, start) = (agent.socket.clone(), d.clone(), start.clone());
            std::thread::spawn(move || {
                // Even clients ask for an allowed image, odd ones for a denied one; each name is distinct.
                let name = if i % 2 == 0 { format!("localhost:5000/team/app{i}:v1") } else { format!("alpine:{i}") };
                start.wait();
                (i, name.clone(), decision(raw_request(&socket, &verify_request(&name, &d))))
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in threads {
        let (i, name, answer) = t.join().unwrap();
        let want = if i % 2 == 0 { Verdict::Allow } else { Verdict::Deny };
        assert_eq!(answer.verdict, want, "{name}: {answer:?}");
        assert!(ids.insert(answer.report_id.clone()), "report id {} given twice", answer.report_id);
        let report = agent.explain(&answer.report_id);
        assert_eq!(report["reference"], name.as_str(), "the report is this client's");
    }
    let counters = &agent.status()["counters"];
    assert_eq!(counters["allowed"], CLIENTS as u64 / 2);
    assert_eq!(counters["denied"], CLIENTS as u64 / 2);
}

#[test]
fn sigterm_exits_0_and_removes_the_socket() {
    let mut agent = Agent::start(&policy());
    let status = agent.terminate(Duration::from_secs(15)).expect("the agent exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert!(!agent.socket.exists(), "socket file removed");
    let log = agent.stderr();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!log.contains('\x1b'), "no terminal colour codes in a log written to a file: {log:?}");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let files = AgentFiles::new(&policy());
    std::fs::create_dir_all(files.socket.parent().unwrap()).unwrap();
    drop(UnixListener::bind(&files.socket).unwrap());
    assert!(std::fs::symlink_metadata(&files.socket).unwrap().file_type().is_socket(), "stale socket left behind");
    let agent = files.start(&[]);
    assert!(agent.status()["generation"].is_string());
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let files = AgentFiles::new(&policy());
    std::fs::create_dir_all(files.socket.parent().unwrap()).unwrap();
    std::fs::write(&files.socket, "not a socket").unwrap();
    let (code, stderr) = files.run_to_exit(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&files.socket).unwrap(), "not a socket");
}

#[test]
fn a_second_agent_on_a_live_socket_refuses_to_start() {
    let first = Agent::start(&policy());
    let mut second = AgentFiles::new(&policy());
    second.socket = first.socket.clone();
    let (code, stderr) = second.run_to_exit(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another agent is already listening"), "{stderr}");
    assert!(first.status()["generation"].is_string(), "the first agent still serves");
}

const INVALID: &str = r#"
allowedUids = []
[[scopes]]
name = "empty"
images = []
action = "allow"
"#;

#[test]
fn check_config_names_file_field_and_reason() {
    let files = AgentFiles::new(INVALID);
    let (code, out, _) = agent_command(&["check-config", files.config_dir.to_str().unwrap()]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("error: pullgate.toml: allowedUids: empty list")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("error: pullgate.toml: scopes[0].images: empty")), "{out}");
    assert!(lines.last().unwrap().contains("has 2 error(s)"), "{out}");

    files.write_config("mode = \"enforce\"\nmodee = 1\n");
    let (code, out, _) = agent_command(&["check-config", files.config_dir.to_str().unwrap()]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    assert!(out.contains("error: pullgate.toml: line 2, column 1: ") && out.contains("modee"), "{out}");

    let empty = tempfile::tempdir().unwrap();
    let (code, out, _) = agent_command(&["check-config", empty.path().to_str().unwrap()]);
    assert_eq!(code, Some(EXIT_CONFIG), "{out}");
    assert!(out.contains("has no pullgate.toml"), "{out}");
}

#[test]
fn run_with_an_invalid_config_exits_64_before_binding() {
    let files = AgentFiles::new(INVALID);
    let (code, stderr) = files.run_to_exit(&[]);
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("pullgate.toml: allowedUids:"), "{stderr}");
    assert!(!files.socket.exists(), "no socket was created");
}

#[test]
fn audit_mode_allows_what_enforce_would_deny() {
    let agent = Agent::start(&format!("mode = \"audit\"\n{}", policy()));
    let d = fixture_descriptors().manifest;
    let run = agent.verify("alpine:3.20", &d);
    let line = run.allowed();
    assert!(line.contains("audit mode, enforce would deny: scope docker-hub: use the internal mirror"), "{line}");
    let report = agent.explain(&run.report_id());
    assert_eq!(report["outcome"], "deny", "the report keeps what enforce would have done");
    assert_eq!(report["verdict"], "allow");
    assert_eq!(agent.status()["counters"]["auditWouldDeny"], 1);
}

#[test]
fn sighup_reloads_and_an_invalid_change_keeps_the_last_good_config() {
    let agent = Agent::start(&policy());
    let d = fixture_descriptors().manifest;
    let image = "quay.io/acme/tool:1";
    let first = agent.status()["generation"].as_str().unwrap().to_string();
    assert!(agent.verify(image, &d).denied().contains("defaultAction deny"));

    agent.write_config(&format!("defaultAction = \"allow\"\n{}", policy()));
    agent.signal(Signal::SIGHUP);
    eventually("reload to a new generation", || agent.status()["generation"] != first.as_str());
    let second = agent.status()["generation"].as_str().unwrap().to_string();
    assert!(agent.verify(image, &d).allowed().contains("defaultAction allow"));

    agent.write_config("defaultAction = \"sometimes\"\n");
    agent.signal(Signal::SIGHUP);
    eventually("the rejected config to show in status", || agent.status()["configError"].is_string());
    let status = agent.status();
    assert!(status["configError"].as_str().unwrap().contains("sometimes"), "{status}");
    assert_eq!(status["generation"], second.as_str(), "last known good stays in force");
    assert_eq!(status["counters"]["reloadFailures"], 1);
    assert!(agent.verify(image, &d).allowed().contains("defaultAction allow"));
}
