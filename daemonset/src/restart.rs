//! Restarting containerd after its config changed, and waiting until it answers.
//!
//! The default restart enters the namespaces of the host's PID 1 (the installer runs
//! in a container with `hostPID: true`) and runs `systemctl restart containerd`
//! there: `pullgate-install host-exec -- systemctl restart containerd`, a re-exec of
//! this binary that calls setns(2) before any thread exists. `--restart-command`
//! replaces it (words split on whitespace, run directly, no shell).

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the restart command may run.
pub const RESTART_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A restart that did not bring containerd back.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The command could not be run or failed.
    #[error("restart command `{command}` {what}")]
    Command {
        /// The command line.
        command: String,
        /// How it failed.
        what: String,
    },
    /// containerd did not answer in time.
    #[error("containerd did not answer on {socket} within {timeout:?} after the restart: {last}")]
    NotAnswering {
        /// The socket.
        socket: String,
        /// The wait.
        timeout: Duration,
        /// The last error seen.
        last: String,
    },
}

/// The default restart command line.
pub fn default_command() -> Vec<String> {
    let me = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "pullgate-install".into());
    vec![me, "host-exec".into(), "--".into(), "systemctl".into(), "restart".into(), "containerd".into()]
}

/// Runs the restart command to completion (bounded).
pub fn run_command(argv: &[String]) -> Result<(), RestartError> {
    let shown = argv.join(" ");
    let fail = |what: String| RestartError::Command { command: shown.clone(), what };
    let (program, args) = argv.split_first().ok_or_else(|| fail("is empty".into()))?;
    let out = pullgate_containerd::dump::run_bounded(Command::new(program).args(args), RESTART_COMMAND_TIMEOUT)
        .map_err(|e| fail(format!("could not be started: {e}")))?
        .ok_or_else(|| fail(format!("did not finish within {RESTART_COMMAND_TIMEOUT:?}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("failed ({}): {}", out.status, stderr.trim())));
    }
    Ok(())
}

/// Polls containerd's `Version` call on `socket` until it answers or `timeout` passes.
pub async fn wait_answering(socket: &Path, timeout: Duration) -> Result<String, RestartError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match pullgate_containerd::socket::version(socket, Duration::from_secs(2)).await {
            Ok(v) => return Ok(v.version),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(RestartError::NotAnswering { socket: socket.display().to_string(), timeout, last })
}

/// `host-exec`: joins PID 1's namespaces, then runs `argv` and returns its exit code.
/// Must run before any other thread starts (setns of a mount namespace needs that).
pub fn host_exec(argv: &[String]) -> Result<i32, String> {
    use nix::sched::{CloneFlags, setns};
    let (program, args) = argv.split_first().ok_or("host-exec needs a command")?;
    let kinds = [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut opened = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/1/ns/{name}");
        let f = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {path}: {e} (the installer needs hostPID: true and root)"))?;
        opened.push((path, flag, f));
    }
    for (path, flag, f) in &opened {
        setns(f.as_fd(), *flag).map_err(|e| format!("cannot enter {path}: {e} (needs CAP_SYS_ADMIN)"))?;
    }
    // The pid namespace applies to children: the command runs as one.
    let status =
        Command::new(program).args(args).status().map_err(|e| format!("cannot run {program} on the host: {e}"))?;
    Ok(status.code().unwrap_or(1))
}
