//! The verifier's local config file (`/etc/pullgate/verifier.json`).
//!
//! Written by the node installer, read by `pullgate-verifier` on every exec,
//! so it is small JSON parsed with serde_json. Parsing validates everything;
//! a [`VerifierConfig`] always holds usable values.

use crate::FailurePolicy;
use pullgate_reference::Pattern;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the verifier looks for its config unless [`CONFIG_PATH_ENV`] says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pullgate/verifier.json";
/// Environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_PATH_ENV: &str = "PULLGATE_VERIFIER_CONFIG";
/// Default agent socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/pullgate/agent.sock";
/// Default deadline: containerd's default `per_verifier_timeout` is 10 s.
pub const DEFAULT_DEADLINE_MS: u64 = 8_000;
/// Smallest deadline accepted.
pub const MIN_DEADLINE_MS: u64 = 50;
/// Largest deadline accepted (containerd would need a longer timeout than any sane node uses).
pub const MAX_DEADLINE_MS: u64 = 120_000;
/// Largest config file the verifier reads.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;
/// Most bootstrap allowlist entries.
pub const MAX_BOOTSTRAP_ENTRIES: usize = 256;

/// The validated verifier config.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Agent socket path.
    pub socket: PathBuf,
    /// Total time budget from exec to exit, in milliseconds.
    pub deadline_ms: u64,
    /// What to answer when the agent cannot.
    pub failure_policy: FailurePolicy,
    /// Images always allowed without asking the agent.
    pub bootstrap_allowlist: Vec<Pattern>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            socket: PathBuf::from(DEFAULT_SOCKET_PATH),
            deadline_ms: DEFAULT_DEADLINE_MS,
            failure_policy: FailurePolicy::Closed,
            bootstrap_allowlist: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    socket: Option<PathBuf>,
    deadline_ms: Option<u64>,
    failure_policy: Option<FailurePolicy>,
    #[serde(default)]
    bootstrap_allowlist: Vec<String>,
}

/// Why the verifier config could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file exists but could not be read.
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    TooLarge {
        /// The config file.
        path: PathBuf,
    },
    /// The file is not valid JSON of the expected shape.
    Parse {
        /// The config file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A field has a value that is not allowed.
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Why the value is not allowed.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            ConfigError::TooLarge { path } => {
                write!(f, "{} is larger than {MAX_CONFIG_BYTES} bytes", path.display())
            }
            ConfigError::Parse { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::Invalid { path, field, reason } => write!(f, "{}: {field}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Parse { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl VerifierConfig {
    /// Loads the config from `path`. A missing file gives the defaults
    /// (fail-closed, no bootstrap entries); any other problem is an error.
    pub fn load(path: &Path) -> Result<VerifierConfig, ConfigError> {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VerifierConfig::default()),
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        let mut bytes = Vec::with_capacity(1024);
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_path_buf() });
        }
        VerifierConfig::from_json(path, &bytes)
    }

    /// Parses and validates config JSON; `path` is only used in error messages.
    pub fn from_json(path: &Path, bytes: &[u8]) -> Result<VerifierConfig, ConfigError> {
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })?;
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let mut cfg = VerifierConfig::default();
        if let Some(s) = raw.socket {
            if !s.is_absolute() {
                return Err(invalid("socket", format!("{:?} must be an absolute path", s.display().to_string())));
            }
            cfg.socket = s;
        }
        if let Some(d) = raw.deadline_ms {
            if !(MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&d) {
                return Err(invalid(
                    "deadlineMs",
                    format!(
                        "{d} is outside {MIN_DEADLINE_MS}..={MAX_DEADLINE_MS}; keep it below containerd's per_verifier_timeout (8000 for the default 10s)"
                    ),
                ));
            }
            cfg.deadline_ms = d;
        }
        if let Some(p) = raw.failure_policy {
            cfg.failure_policy = p;
        }
        if raw.bootstrap_allowlist.len() > MAX_BOOTSTRAP_ENTRIES {
            return Err(invalid(
                "bootstrapAllowlist",
                format!("{} entries, more than the limit of {MAX_BOOTSTRAP_ENTRIES}", raw.bootstrap_allowlist.len()),
            ));
        }
        for (i, entry) in raw.bootstrap_allowlist.iter().enumerate() {
            let p = Pattern::parse(entry).map_err(|e| invalid(&format!("bootstrapAllowlist[{i}]"), e.to_string()))?;
            cfg.bootstrap_allowlist.push(p);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<VerifierConfig, ConfigError> {
        VerifierConfig::from_json(Path::new("/etc/pullgate/verifier.json"), s.as_bytes())
    }

    #[test]
    fn defaults_and_full_file() {
        let c = parse("{}").unwrap();
        assert_eq!(c.deadline_ms, DEFAULT_DEADLINE_MS);
        assert_eq!(c.failure_policy, FailurePolicy::Closed);
        let c = parse(
            r#"{"socket":"/tmp/a.sock","deadlineMs":2000,"failurePolicy":"open","bootstrapAllowlist":["registry.k8s.io/pause:3.10"]}"#,
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.failure_policy, FailurePolicy::Open);
        assert_eq!(c.bootstrap_allowlist.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"{"deadlineMs":10}"#).unwrap_err().to_string();
        assert!(e.contains("deadlineMs") && e.contains("10"), "{e}");
        let e = parse(r#"{"bootstrapAllowlist":["ok.io/a","*.io/x"]}"#).unwrap_err().to_string();
        assert!(e.contains("bootstrapAllowlist[1]"), "{e}");
        let e = parse(r#"{"socket":"rel.sock"}"#).unwrap_err().to_string();
        assert!(e.contains("socket"), "{e}");
        let e = parse(r#"{"failurePolicy":"maybe"}"#).unwrap_err().to_string();
        assert!(e.contains("maybe"), "{e}");
        let e = parse(r#"{"sockett":"/x"}"#).unwrap_err().to_string();
        assert!(e.contains("sockett"), "{e}");
    }

    #[test]
    fn missing_file_is_default() {
        let c = VerifierConfig::load(Path::new("/nonexistent/pullgate/verifier.json")).unwrap();
        assert_eq!(c.failure_policy, FailurePolicy::Closed);
    }
}
