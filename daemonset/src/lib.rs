//! `pullgate-install`: puts pullgate on a node and takes it off again.
//!
//! * [`install`]: reads containerd's config (imports, version 2 or 3), refuses
//!   settings that make CRI pulls skip verifiers (or rewrites them with `--fix`),
//!   puts `pullgate-verifier` into `bin_dir` under a name that sorts first, writes
//!   `/etc/pullgate/verifier.json`, merges the bindir plugin settings into the config
//!   with `toml_edit`, and restarts containerd only if its config changed.
//! * [`uninstall`]: restores every containerd file byte for byte and removes only
//!   the installer's own files.
//!
//! Everything the installer did is recorded in [`state`]; a second run with the same
//! inputs changes no byte and restarts nothing.

pub mod files;
pub mod install;
pub mod restart;
pub use pullgate_containerd::install_state as state;
pub mod uninstall;

pub use install::{InstallError, Options, install};
pub use uninstall::{UninstallOptions, uninstall};

/// What a run did, for the user.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per change made.
    pub changes: Vec<String>,
    /// Things worth knowing that did not stop the run.
    pub warnings: Vec<String>,
    /// Whether containerd was restarted.
    pub restarted: bool,
}
