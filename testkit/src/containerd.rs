//! A real, throw-away containerd (the v2.2.7 build in `../shared/containerd`)
//! for tests: everything under one temporary root, a free socket path, plain
//! HTTP registries on 127.0.0.1 reached through `certs.d/<host>/hosts.toml`.
//!
//! The config file is the test's to edit (installer tests merge into it);
//! [`Containerd::restart`] stops the daemon and starts it again on the
//! same file. A restart command for `pullgate-install` is provided as a small
//! script ([`Containerd::restart_script`]) that does the same from outside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Where the real containerd binaries live, relative to the workspace root.
const SHARED_BIN: &str = "../shared/containerd/bin";

/// The directory holding `containerd`, `ctr` and `cri-pull`, or why it cannot be used.
pub fn bin_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("PULLGATE_CONTAINERD_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SHARED_BIN),
    };
    if !dir.join("containerd").exists() {
        return Err(format!("no containerd at {}", dir.display()));
    }
    Ok(dir.canonicalize().unwrap_or(dir))
}

/// Set (by `scripts/test`, when it runs as root, as CI does) when the real
/// containerd must run: a missing binary is then a failed test, never a skip
/// that passes without having tested anything.
pub const REQUIRE_ENV: &str = "PULLGATE_REQUIRE_CONTAINERD";

/// `Ok(())` when a throw-away containerd can run here, else the reason to
/// skip. Panics instead when [`REQUIRE_ENV`] is set.
pub fn available() -> Result<(), String> {
    let ready = bin_dir().and_then(|_| {
        if nix_is_root() { Ok(()) } else { Err("containerd needs root (mounts, chown of its root dir)".into()) }
    });
    if let Err(why) = &ready
        && std::env::var_os(REQUIRE_ENV).is_some()
    {
        panic!("{REQUIRE_ENV} is set, but the real containerd cannot run here: {why}");
    }
    ready
}

fn nix_is_root() -> bool {
    // The effective uid, from /proc (testkit has no libc binding).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}

/// A running containerd; killed on drop.
pub struct Containerd {
    child: Option<Child>,
    dir: TempDir,
    bin: PathBuf,
    /// The config file containerd runs with (version 3 unless the test wrote another).
    pub config: PathBuf,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// The image-verifier `bin_dir` named in the initial config.
    pub verifier_dir: PathBuf,
    /// `registry.config_path` / transfer `config_path` (hosts.toml tree).
    pub certs_d: PathBuf,
    /// Environment given to containerd (and so to the verifiers it execs).
    pub env: Vec<(String, String)>,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        self.stop_external();
    }
}

/// The initial config for a throw-away instance under `dir`.
pub fn default_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "version = 3\nroot = '{d}/root'\nstate = '{d}/state'\ndisabled_plugins = ['io.containerd.nri.v1.nri']\n\n\
         [grpc]\n  address = '{d}/run/containerd.sock'\n[ttrpc]\n  address = ''\n[debug]\n  address = '{d}/run/debug.sock'\n\n\
         [plugins]\n  [plugins.'io.containerd.image-verifier.v1.bindir']\n    bin_dir = '{d}/verifiers'\n    max_verifiers = 10\n    per_verifier_timeout = '3s'\n\
         \x20 [plugins.'io.containerd.internal.v1.opt']\n    path = '{d}/opt'\n\
         \x20 [plugins.'io.containerd.transfer.v1.local']\n    config_path = '{d}/certs.d'\n\
         \x20 [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'overlayfs'\n\
         \x20   [plugins.'io.containerd.cri.v1.images'.registry]\n      config_path = '{d}/certs.d'\n"
    )
}

impl Containerd {
    /// Writes the default config under a new temp root (without starting containerd).
    pub fn prepare() -> Containerd {
        let bin = bin_dir().expect("containerd binaries");
        let dir = tempfile::Builder::new().prefix("pg-ctd").tempdir().expect("tempdir");
        for sub in ["run", "verifiers", "certs.d", "opt"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, default_config(dir.path())).expect("write containerd config");
        Containerd {
            child: None,
            socket: dir.path().join("run/containerd.sock"),
            verifier_dir: dir.path().join("verifiers"),
            certs_d: dir.path().join("certs.d"),
            env: Vec::new(),
            config,
            bin,
            dir,
        }
    }

    /// Writes the default config and starts containerd on it.
    pub fn start() -> Containerd {
        let mut c = Containerd::prepare();
        c.launch();
        c
    }

    /// The temp root everything lives under.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A binary from the shared containerd directory (`containerd`, `ctr`, `cri-pull`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// containerd's log (stdout and stderr of every start, appended).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Starts containerd on [`Containerd::config`] and waits for its socket.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "containerd is already running");
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .expect("containerd log");
        let child = Command::new(self.tool("containerd"))
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() && self.ctr(&["version"]).status.success() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("containerd exited with {status} before its socket answered:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "containerd did not answer within 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts containerd on the (possibly edited) config file.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Lets containerd reach a plain-HTTP registry at `host` (`127.0.0.1:PORT`).
    pub fn trust_plain_http(&self, host: &str) {
        let dir = self.certs_d.join(host);
        std::fs::create_dir_all(&dir).expect("mkdir certs.d host");
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .expect("write hosts.toml");
    }

    /// Runs `ctr --address SOCKET ARGS…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(self.tool("ctr"))
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// `ctr image pull --plain-http REF` (through the transfer service: verifiers run).
    pub fn ctr_pull(&self, reference: &str) -> Output {
        self.ctr(&["image", "pull", "--plain-http", reference])
    }

    /// One CRI `PullImage`, as kubelet makes it (`cri-pull SOCKET REF`).
    pub fn cri_pull(&self, reference: &str) -> Output {
        Command::new(self.tool("cri-pull"))
            .arg(&self.socket)
            .arg(reference)
            .stdin(Stdio::null())
            .output()
            .expect("run cri-pull")
    }

    /// Removes an image from both namespaces tests pull into (`default` for ctr, `k8s.io` for CRI).
    pub fn remove_image(&self, reference: &str) {
        let _ = self.ctr(&["image", "rm", "--sync", reference]);
        let _ = self.ctr(&["--namespace", "k8s.io", "image", "rm", "--sync", reference]);
    }

    /// A shell script that restarts this containerd from outside the test process
    /// (for `pullgate-install --restart-command`): it stops the daemon whose pid is in
    /// `<root>/containerd.pid` and starts a new one on the same config.
    ///
    /// Call [`Containerd::adopt_external`] first: from then on the daemon is the
    /// script's child, and `Drop` kills it through the pid file.
    pub fn restart_script(&self) -> PathBuf {
        let script = self.dir.path().join("restart-containerd.sh");
        let d = self.dir.path().display();
        let exports: String = self.env.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
        let body = format!(
            "#!/bin/sh\nset -e\n{exports}if [ -f {d}/containerd.pid ]; then\n  pid=$(cat {d}/containerd.pid)\n  kill -TERM \"$pid\" 2>/dev/null || true\n  i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n  kill -KILL \"$pid\" 2>/dev/null || true\nfi\nrm -f {sock}\nsetsid {bin} --config {cfg} </dev/null >>{d}/containerd.log 2>&1 &\necho $! > {d}/containerd.pid\n",
            sock = self.socket.display(),
            bin = self.tool("containerd").display(),
            cfg = self.config.display(),
        );
        std::fs::write(&script, body).expect("write restart script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }

    /// Stops the daemon this handle started and runs it through [`Containerd::restart_script`]
    /// instead, so that an installer's restart command can replace it.
    pub fn adopt_external(&mut self) {
        self.stop();
        let script = self.restart_script();
        let st = Command::new(&script).status().expect("run restart script");
        assert!(st.success(), "restart script failed");
        self.wait_ready();
    }

    /// Kills an externally started daemon (see [`Containerd::adopt_external`]).
    pub fn stop_external(&self) {
        let pidfile = self.dir.path().join("containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.trim()).status();
            let _ = std::fs::remove_file(pidfile);
        }
    }

    /// Waits until the socket answers `ctr version` (after an external restart).
    pub fn wait_answering(&mut self) {
        self.wait_ready();
    }

    /// True when containerd's log says CRI pulls fall back to the local (unverified) path.
    pub fn logged_local_pull_fallback(&self) -> bool {
        self.log().contains("Falling back to local image pull mode")
    }
}
