//! What the installer did on this node (shared by `pullgate-install` and the agent's
//! doctor), so a second run changes nothing and
//! `uninstall` undoes exactly that: `/etc/pullgate/install/state.json`, with the
//! original bytes of every containerd file it changed under `backup/`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The state file's directory on a default install (beside `/etc/pullgate/verifier.json`).
pub const STATE_DIR: &str = "/etc/pullgate/install";

/// The state directory (host path) for a verifier.json at `verifier_config`: `install/` beside it.
pub fn state_dir_for(verifier_config: &Path) -> PathBuf {
    verifier_config.parent().unwrap_or(Path::new("/etc/pullgate")).join("install")
}

/// One containerd file the installer changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TouchedFile {
    /// The host path.
    pub path: PathBuf,
    /// Whether it existed before the first install (uninstall removes it if not).
    pub existed: bool,
    /// Where its original bytes are kept (host path), when it existed.
    pub backup: Option<PathBuf>,
    /// SHA-256 of the original bytes.
    pub original_sha256: Option<String>,
    /// SHA-256 of what the installer last wrote.
    pub installed_sha256: String,
}

/// A file the installer created and owns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnedFile {
    /// The host path.
    pub path: PathBuf,
    /// SHA-256 of what was written.
    pub sha256: String,
}

/// The whole record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
// No deny_unknown_fields: an older agent or uninstall must read a newer installer's record.
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The verifier binary in bin_dir.
    pub verifier: Option<OwnedFile>,
    /// verifier.json.
    pub verifier_config: Option<OwnedFile>,
    /// Where a verifier.json that existed before the first install is kept (host path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_config_backup: Option<PathBuf>,
    /// hosts.toml files written by `--fix`.
    #[serde(default)]
    pub hosts_files: Vec<OwnedFile>,
    /// containerd config files changed.
    #[serde(default)]
    pub configs: Vec<TouchedFile>,
    /// The containerd version seen at install time (doctor's last resort for it).
    pub containerd_version: Option<String>,
}

/// The state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Unreadable.
    #[error("cannot read the install state {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not what the installer writes.
    #[error(
        "install state {path} is damaged ({source}); move it aside and restore containerd's config from {dir}/backup by hand"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl State {
    /// Reads the state at `file` (a local path); missing means nothing installed.
    pub fn load(file: &Path) -> Result<State, StateError> {
        match std::fs::read(file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Parse {
                path: file.to_path_buf(),
                dir: file.parent().unwrap_or(Path::new("/")).to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Read { path: file.to_path_buf(), source }),
        }
    }

    /// The record for a containerd file.
    pub fn config(&self, path: &Path) -> Option<&TouchedFile> {
        self.configs.iter().find(|c| c.path == path)
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.verifier.is_none()
            && self.verifier_config.is_none()
            && self.hosts_files.is_empty()
            && self.configs.is_empty()
    }
}
