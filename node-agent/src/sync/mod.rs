//! Getting config to the engine: Kubernetes sync and standalone reload.
//!
//! * [`kube`] — Kubernetes mode: kube-runtime watchers on labelled
//!   ConfigMaps (→ config generations on disk) and pull Secrets (→ in-memory
//!   [`credentials::RegistryCredentials`]), with Events for rejected configs;
//! * [`generation`] — writing a generation atomically and switching the
//!   `current` symlink the engine reads, pruning old generations;
//! * [`files`] — the file set of a generation and the rules for safe names;
//! * [`credentials`] — the in-memory registry credential store;
//! * [`watch`] — standalone mode: reload when the config directory changes.
//!
//! In both modes a config that fails validation never replaces the one in
//! force: the engine keeps its last good config and `status` says why.

pub mod credentials;
pub mod files;
pub mod generation;
pub mod kube;
pub mod watch;

pub use credentials::RegistryCredentials;
