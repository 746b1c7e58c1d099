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

/// Runs a command with stdin closed, killing it after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::io::Result<Option<Output>> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output().map(Some);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
