//! Harness for pullgate's end-to-end tests: the built `pullgate-agent` and
//! `pullgate-verifier` binaries, run as real processes on real sockets and files.
//!
//! * [`bin`] finds a built binary (`target/debug`, or `PULLGATE_BIN_DIR`).
//! * [`AgentFiles`] / [`Agent`] write a config directory, start
//!   `pullgate-agent run` in a temporary directory and stop it on drop.
//! * [`run_verifier`] execs the verifier exactly as containerd does, with its
//!   JSON config in a temporary file named by `PULLGATE_VERIFIER_CONFIG`.
//! * [`fixture_descriptors`] reads real OCI descriptors from the shared
//!   fixtures, so stdin carries what containerd would write for them.

use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Request, Response, VerifyRequest};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `-stdin-media-type` containerd passes.
pub const STDIN_MEDIA_TYPE: &str = pullgate_wire::OCI_DESCRIPTOR_MEDIA_TYPE;
/// Media type of a single-platform image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a multi-platform image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Environment variable overriding where the built binaries are looked up.
pub const BIN_DIR_ENV: &str = "PULLGATE_BIN_DIR";
/// Longest time to wait for an agent to start, stop, or a verifier to exit.
pub const PROCESS_BOUND: Duration = Duration::from_secs(30);
/// Exit code of `pullgate-agent` for an invalid config.
pub const EXIT_CONFIG: i32 = 64;

/// Directory holding the built binaries: `PULLGATE_BIN_DIR`, or the cargo
/// profile directory of the running test (`…/target/debug/deps/X` → `…/target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let mut dir = exe.parent().expect("the test executable has a parent directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of a built binary; panics with what to do when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace` first (or set {BIN_DIR_ENV} to the directory holding it)",
        path.display()
    );
    path
}

/// Where the shared, read-only test fixtures live.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures"))
}

/// Real descriptors from an OCI layout in the fixtures (`notation/oci-layouts/e2e-valid-signature`):
/// the image manifest (`v1`, 517 bytes) and an image index, reduced to the three fields containerd sends.
pub struct FixtureDescriptors {
    /// The signed image's manifest descriptor.
    pub manifest: Descriptor,
    /// An `application/vnd.oci.image.index.v1+json` descriptor from the same layout.
    pub index: Descriptor,
}

/// Reads [`FixtureDescriptors`] from the fixture layout's `index.json`.
pub fn fixture_descriptors() -> FixtureDescriptors {
    let path = fixtures_dir().join("notation/oci-layouts/e2e-valid-signature/index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let index: serde_json::Value = serde_json::from_str(&text).expect("fixture index.json is JSON");
    let manifests = index["manifests"].as_array().expect("fixture index.json has manifests");
    let find = |media_type: &str| {
        let m = manifests
            .iter()
            .find(|m| m["mediaType"] == media_type)
            .unwrap_or_else(|| panic!("no {media_type} in {}", path.display()));
        Descriptor {
            media_type: media_type.to_string(),
            digest: m["digest"].as_str().expect("digest is a string").to_string(),
            size: m["size"].as_u64().expect("size is a number"),
        }
    };
    FixtureDescriptors { manifest: find(MANIFEST_MEDIA_TYPE), index: find(INDEX_MEDIA_TYPE) }
}

/// The bytes containerd writes on the verifier's stdin: the descriptor's
/// `mediaType`, `digest` and `size` as JSON, then `\n` (Go's `json.Encoder`).
pub fn descriptor_stdin(d: &Descriptor) -> Vec<u8> {
    let mut v = serde_json::to_vec(d).expect("a descriptor encodes");
    v.push(b'\n');
    v
}

/// containerd's argv: `-name REF -digest DIGEST -stdin-media-type application/vnd.oci.descriptor.v1+json`.
pub fn containerd_args(name: &str, digest: &str) -> Vec<String> {
    ["-name", name, "-digest", digest, "-stdin-media-type", STDIN_MEDIA_TYPE].map(String::from).to_vec()
}

/// A verifier config as JSON.
pub fn verifier_config(socket: &Path, deadline_ms: u64, failure_policy: &str, bootstrap: &[&str]) -> String {
    serde_json::json!({
        "socket": socket,
        "deadlineMs": deadline_ms,
        "failurePolicy": failure_policy,
        "bootstrapAllowlist": bootstrap,
    })
    .to_string()
}

/// What one verifier exec produced.
#[derive(Debug)]
pub struct VerifierRun {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Time from spawn to exit.
    pub elapsed: Duration,
}

impl VerifierRun {
    /// The verdict line, after checking containerd's output contract: stdout
    /// is exactly one `\n`-terminated line of at most 1024 bytes that starts
    /// with `pullgate: allowed` or `pullgate: denied`, matching the exit code.
    pub fn line(&self) -> &str {
        let out = &self.stdout;
        assert!(out.len() <= 1024, "stdout is {} bytes, more than 1024: {out:?}", out.len());
        assert!(out.ends_with('\n') && out.matches('\n').count() == 1, "stdout is not exactly one line: {out:?}");
        let line = out.trim_end_matches('\n');
        match self.code {
            Some(0) => assert!(line.starts_with("pullgate: allowed "), "exit 0 but the line says: {line:?}"),
            Some(1) => assert!(line.starts_with("pullgate: denied "), "exit 1 but the line says: {line:?}"),
            other => panic!("verifier exit {other:?} (want 0 or 1); stdout {out:?}; stderr {:?}", self.stderr),
        }
        line
    }

    /// Asserts an allow (exit 0) and returns the line.
    pub fn allowed(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected an allow: {self:?}");
        self.line()
    }

    /// Asserts a deny (exit 1) and returns the line.
    pub fn denied(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected a deny: {self:?}");
        self.line()
    }

    /// The `(report ID)` at the end of an agent's verdict line.
    pub fn report_id(&self) -> String {
        let line = self.line();
        let start = line.rfind("(report ").unwrap_or_else(|| panic!("no report id in {line:?}")) + "(report ".len();
        let id = line[start..].strip_suffix(')').unwrap_or_else(|| panic!("report id is not last in {line:?}"));
        assert!(id.starts_with("d-"), "report id {id:?} in {line:?}");
        id.to_string()
    }
}

/// Execs `pullgate-verifier` with `args`, `stdin` and its config file holding
/// `config_json`, as containerd would. Bounded by [`PROCESS_BOUND`].
pub fn run_verifier(args: &[String], stdin: &[u8], config_json: &str) -> VerifierRun {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("verifier.json");
    std::fs::write(&config, config_json).expect("writing the verifier config");
    let mut cmd = Command::new(bin("pullgate-verifier"));
    cmd.args(args).env(pullgate_wire::CONFIG_PATH_ENV, &config);
    let (code, stdout, stderr, elapsed) = run_bounded(cmd, stdin.to_vec());
    VerifierRun { code, stdout, stderr, elapsed }
}

/// Runs `cmd` with `stdin` written to it (a broken pipe is not an error: the
/// program may exit without reading), collecting its output; kills it and
/// panics if it has not exited within [`PROCESS_BOUND`].
pub fn run_bounded(mut cmd: Command, stdin: Vec<u8>) -> (Option<i32>, String, String, Duration) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id();
    let mut input = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, started.elapsed()));
    });
    let (out, elapsed) = match rx.recv_timeout(PROCESS_BOUND) {
        Ok((out, elapsed)) => (out.unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}")), elapsed),
        Err(_) => {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{cmd:?} did not exit within {PROCESS_BOUND:?}");
        }
    };
    let _ = writer.join();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap_or_else(|e| panic!("output of {cmd:?} is not UTF-8: {e}"));
    (out.status.code(), text(out.stdout), text(out.stderr), elapsed)
}

/// Runs a `pullgate-agent` subcommand (`check-config`, `explain`, `status`)
/// and returns its exit code, stdout and stderr.
pub fn agent_command(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin("pullgate-agent"));
    cmd.args(args).env("NO_COLOR", "1");
    let (code, out, err, _) = run_bounded(cmd, Vec::new());
    (code, out, err)
}

/// Sends `sig` to the process `pid` (one this harness started).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits in i32"));
    let _ = nix::sys::signal::kill(pid, sig);
}

/// A temporary agent layout: config dir, socket path and state dir, all under
/// one temporary directory removed on drop.
pub struct AgentFiles {
    /// The temporary directory holding everything below.
    pub root: TempDir,
    /// Config directory with `pullgate.toml`.
    pub config_dir: PathBuf,
    /// Socket path the agent binds (may be changed before starting).
    pub socket: PathBuf,
    /// State directory (decision log).
    pub state_dir: PathBuf,
}

impl AgentFiles {
    /// A new layout whose `pullgate.toml` holds `toml`.
    pub fn new(toml: &str) -> AgentFiles {
        let root = tempfile::tempdir().expect("a temporary directory");
        let files = AgentFiles {
            config_dir: root.path().join("config"),
            socket: root.path().join("run/agent.sock"),
            state_dir: root.path().join("state"),
            root,
        };
        std::fs::create_dir_all(&files.config_dir).expect("creating the config directory");
        files.write_config(toml);
        files
    }

    /// Replaces `pullgate.toml`.
    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.config_dir.join("pullgate.toml"), toml).expect("writing pullgate.toml");
    }

    /// The agent's stderr log file.
    pub fn stderr_path(&self) -> PathBuf {
        self.root.path().join("agent.stderr")
    }

    /// What the agent has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// `pullgate-agent run` for this layout with `extra` arguments; stderr
    /// goes to [`AgentFiles::stderr_path`].
    fn command(&self, extra: &[&str]) -> Command {
        let stderr = File::create(self.stderr_path()).expect("creating the agent's stderr file");
        let mut cmd = Command::new(bin("pullgate-agent"));
        cmd.arg("run")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(extra)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        cmd
    }

    /// Starts the agent and waits (bounded) until it answers on its socket.
    pub fn start(self, extra: &[&str]) -> Agent {
        self.start_with_env(extra, &[])
    }

    /// [`AgentFiles::start`] with extra environment variables for the agent
    /// (e.g. a `PATH` holding a docker credential helper).
    pub fn start_with_env(self, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = self.command(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning pullgate-agent");
        let mut agent = Agent { files: self, child: Some(child) };
        let deadline = Instant::now() + PROCESS_BOUND;
        loop {
            if UnixStream::connect(&agent.files.socket).is_ok() {
                return agent;
            }
            if let Some(status) = agent.try_wait() {
                panic!("pullgate-agent exited with {status} before listening; stderr:\n{}", agent.files.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "pullgate-agent did not listen on {} within {PROCESS_BOUND:?}; stderr:\n{}",
                agent.files.socket.display(),
                agent.files.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the agent expecting it to exit by itself (bounded), returning its
    /// exit code and stderr.
    pub fn run_to_exit(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut child = self.command(extra).spawn().expect("spawning pullgate-agent");
        let status = wait_bounded(&mut child, PROCESS_BOUND).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pullgate-agent kept running; it was expected to exit. stderr:\n{}", self.stderr())
        });
        (status.code(), self.stderr())
    }

    /// A verifier config pointing at this agent's socket.
    pub fn verifier_config(&self, deadline_ms: u64, failure_policy: &str) -> String {
        verifier_config(&self.socket, deadline_ms, failure_policy, &[])
    }

    /// Execs the verifier as containerd would for `name` and `descriptor`,
    /// against this agent, fail-closed with a generous deadline.
    pub fn verify(&self, name: &str, descriptor: &Descriptor) -> VerifierRun {
        run_verifier(
            &containerd_args(name, &descriptor.digest),
            &descriptor_stdin(descriptor),
            &self.verifier_config(20_000, "closed"),
        )
    }

    /// `pullgate-agent explain ID_OR_DIGEST --json` against this state dir: the report as JSON.
    pub fn explain(&self, id_or_digest: &str) -> serde_json::Value {
        let state = self.state_dir.to_str().expect("UTF-8 temp path");
        let (code, out, err) = agent_command(&["explain", id_or_digest, "--state-dir", state, "--json"]);
        assert_eq!(code, Some(0), "explain {id_or_digest} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain --json printed {out:?}: {e}"))
    }

    /// `pullgate-agent status --json` against this socket.
    pub fn status(&self) -> serde_json::Value {
        let socket = self.socket.to_str().expect("UTF-8 temp path");
        let (code, out, err) = agent_command(&["status", "--socket", socket, "--json"]);
        assert_eq!(code, Some(0), "status failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json printed {out:?}: {e}"))
    }
}

/// Polls `child` until it exits or `bound` passes.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(s) = child.try_wait().expect("polling a child process") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `pullgate-agent`. Dropping it sends SIGTERM, then SIGKILL if it
/// has not exited within a bound; a failing test also gets the agent's stderr.
pub struct Agent {
    files: AgentFiles,
    child: Option<Child>,
}

impl std::ops::Deref for Agent {
    type Target = AgentFiles;
    fn deref(&self) -> &AgentFiles {
        &self.files
    }
}

impl Agent {
    /// Starts an agent with `toml` as its config and default options.
    pub fn start(toml: &str) -> Agent {
        AgentFiles::new(toml).start(&[])
    }

    /// Process id of the agent.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent was started").id()
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.pid(), sig);
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("polling the agent"))
    }

    /// Kills the agent with SIGKILL (no drain, no cleanup) and hands back its
    /// files, so the same config, socket path and state can be started again.
    pub fn kill(mut self) -> AgentFiles {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let files = AgentFiles {
            root: tempfile::tempdir().expect("a placeholder directory"),
            config_dir: PathBuf::new(),
            socket: PathBuf::new(),
            state_dir: PathBuf::new(),
        };
        std::mem::replace(&mut self.files, files)
    }

    /// Sends SIGTERM and waits up to `bound` for the agent to exit.
    pub fn terminate(&mut self, bound: Duration) -> Option<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = wait_bounded(self.child.as_mut().expect("the agent was started"), bound);
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            if wait_bounded(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- pullgate-agent stderr ---\n{}--- end ---", self.files.stderr());
        }
    }
}

/// A verify request for `name` and `descriptor`, as the verifier sends it.
pub fn verify_request(name: &str, descriptor: &Descriptor) -> Request {
    Request::Verify(VerifyRequest {
        version: PROTOCOL_VERSION,
        reference: name.to_string(),
        digest: descriptor.digest.clone(),
        descriptor: descriptor.clone(),
        deadline_ms: 10_000,
    })
}

/// Writes `bytes` to the socket and reads until the agent closes the
/// connection (bounded by `timeout` per read). Returns what was read.
pub fn raw_exchange(socket: &Path, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Sends one request line and parses the one response line.
pub fn raw_request(socket: &Path, request: &Request) -> Response {
    let mut line = serde_json::to_vec(request).expect("a request encodes");
    line.push(b'\n');
    let answer = raw_exchange(socket, &line, PROCESS_BOUND).expect("exchanging with the agent");
    parse_response(&answer)
}

/// Parses one `\n`-terminated response line.
pub fn parse_response(answer: &[u8]) -> Response {
    assert!(answer.ends_with(b"\n"), "the answer is not one line: {:?}", String::from_utf8_lossy(answer));
    serde_json::from_slice(answer)
        .unwrap_or_else(|e| panic!("answer {:?} is not a response: {e}", String::from_utf8_lossy(answer)))
}

/// The uid of this test process (root on CI), for `allowedUids`.
pub fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Parses `--name value` pairs, as the benchmark binaries take them.
pub fn long_flags(args: impl IntoIterator<Item = String>) -> Result<std::collections::HashMap<String, String>, String> {
    let mut flags = std::collections::HashMap::new();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let key = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        flags.insert(key.to_string(), value);
    }
    Ok(flags)
}
