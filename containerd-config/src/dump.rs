//! What containerd itself says: `containerd --version` and `containerd config dump`
//! (the effective config after imports and migration, exactly as the daemon would
//! run it). Used when the binary can run here; otherwise [`crate::load`] reads the files.

use crate::version::Version;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use toml::Table;

/// How long one `containerd` invocation may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A `containerd` invocation that did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The binary could not be run.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It ran past [`COMMAND_TIMEOUT`] and was killed.
    #[error("{binary} {args} did not finish within {COMMAND_TIMEOUT:?}")]
    Timeout {
        /// The binary.
        binary: String,
        /// Its arguments.
        args: String,
    },
    /// It exited non-zero.
    #[error("{binary} {args} failed ({status}): {stderr}")]
    Failed {
        /// The binary.
        binary: String,
        /// Its arguments.
        args: String,
        /// The exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// Its output was not what it should print.
    #[error("{binary} {args} printed something that is not {what}")]
    Output {
        /// The binary.
        binary: String,
        /// Its arguments.
        args: String,
        /// What was expected.
        what: &'static str,
    },
}

/// Most bytes kept from a command's stdout and from its stderr (the rest is read and dropped).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Runs a command with stdin closed in a process group of its own; after `timeout` the
/// whole group is killed and `Ok(None)` returned. Output is drained as it comes (a chatty
/// command cannot block on a full pipe) and kept up to [`MAX_OUTPUT_BYTES`]; a grandchild
/// that keeps the pipes open does not keep this waiting once the command itself exited.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::io::Result<Option<Output>> {
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).spawn()?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(mut pipe) = pipe {
            let (b, d) = (buf.clone(), done.clone());
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
                    let room = MAX_OUTPUT_BYTES.saturating_sub(b.len());
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
                d.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
        (buf, done)
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let deadline = Instant::now() + timeout;
    let kill_group = |pid: u32| {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    };
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Let the readers catch up, briefly: a grandchild may hold the pipes open forever.
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle
        && !(out.1.load(std::sync::atomic::Ordering::SeqCst) && err.1.load(std::sync::atomic::Ordering::SeqCst))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Some(Output { status, stdout: take(&out.0), stderr: take(&err.0) }))
}

fn run(binary: &Path, args: &[&std::ffi::OsStr]) -> Result<String, DumpError> {
    let name = binary.display().to_string();
    let shown = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let out = run_bounded(Command::new(binary).args(args), COMMAND_TIMEOUT)
        .map_err(|source| DumpError::Spawn { binary: name.clone(), source })?
        .ok_or_else(|| DumpError::Timeout { binary: name.clone(), args: shown.clone() })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.trim().chars().rev().take(400).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(DumpError::Failed { binary: name, args: shown, status: out.status.to_string(), stderr: tail });
    }
    String::from_utf8(out.stdout).map_err(|_| DumpError::Output { binary: name, args: shown, what: "UTF-8 text" })
}

/// `containerd --version`.
pub fn binary_version(binary: &Path) -> Result<Version, DumpError> {
    let text = run(binary, &["--version".as_ref()])?;
    Version::find_in(&text).ok_or_else(|| DumpError::Output {
        binary: binary.display().to_string(),
        args: "--version".into(),
        what: "a version line",
    })
}

/// `containerd --config CONFIG config dump`, parsed.
pub fn config_dump(binary: &Path, config: &Path) -> Result<Table, DumpError> {
    let text = run(binary, &["--config".as_ref(), config.as_os_str(), "config".as_ref(), "dump".as_ref()])?;
    text.parse().map_err(|_| DumpError::Output {
        binary: binary.display().to_string(),
        args: "config dump".into(),
        what: "a TOML document",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grandchild_holding_the_pipe_does_not_hang_it() {
        let started = Instant::now();
        let out = run_bounded(Command::new("sh").args(["-c", "sleep 30 & echo protocol 1"]), Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "protocol 1");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[test]
    fn a_hung_command_is_killed_with_its_group_and_chatter_is_capped() {
        assert!(
            run_bounded(Command::new("sh").args(["-c", "sleep 30"]), Duration::from_millis(200)).unwrap().is_none()
        );
        let out = run_bounded(Command::new("sh").args(["-c", "head -c 5000000 /dev/zero"]), Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout.len(), MAX_OUTPUT_BYTES);
    }
}
