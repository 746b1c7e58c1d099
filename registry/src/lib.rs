//! pullgate-registry: everything the agent fetches from OCI registries.
//!
//! * [`Client`] — manifests and blobs by digest (size-capped, digest-checked),
//!   manifests by tag, and referrers (OCI 1.1 API with `Link` pagination and
//!   `artifactType` filtering, tag-schema fallback; junk in a list is a
//!   note, never an error), with per-registry concurrency limits, deadlines
//!   on every request, retries that honour `Retry-After`, redirects for blob
//!   downloads only (never with credentials to another host), and error
//!   bodies reduced to a short sanitised reason.
//! * [`auth`] — the keychain (longest registry/repository prefix), docker
//!   `config.json` and credential helpers, the bearer token flow and an
//!   in-memory token cache. Credentials never touch the disk or the logs.
//! * [`types`] — descriptors, manifests and indexes.
//! * [`hosts`] — containerd's `hosts.toml` tree: the endpoints (mirrors,
//!   then the registry) containerd pulls from, in its order.
//! * [`tls`] — the system trust anchors read once per process and shared.
//! * [`polite`] — per-registry concurrency, token bucket, `Retry-After`
//!   pauses and request statistics.
//! * [`credprovider`] — kubelet credential-provider plugins (exec with a
//!   deadline, bounded output, kubelet's match rules and answer cache).
//! * [`shared`] — the hook for the cluster tier: content shared under its
//!   digest and re-hashed on read, short-TTL referrers lists and tags, and
//!   leases so one node per cluster fetches.

pub mod auth;
mod client;
pub mod credprovider;
pub mod hosts;
pub mod polite;
mod referrers;
pub mod shared;
pub mod tls;
pub mod types;

pub use client::{
    Client, ClientOptions, ContentStore, HostOptions, LatencyObserver, MAX_MANIFEST_BYTES, MAX_REDIRECTS,
    REFERRERS_TTL, RegistryError, RequestObserver,
};
pub use referrers::MAX_REFERRERS;

use sha2::Digest as _;
use std::fmt;

/// A repository on a registry: `host[:port]` and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub host: String,
    /// Repository path (`library/alpine`).
    pub path: String,
}

impl Repository {
    /// The repository a parsed reference names.
    pub fn of(reference: &pullgate_reference::Reference) -> Repository {
        Repository { host: reference.host().to_string(), path: reference.path().to_string() }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

/// The SHA-256 digest string of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

/// The digest of `bytes` computed with the algorithm of `expected`
/// (`sha256:` or `sha512:`); `None` for other algorithms.
pub fn digest_of(expected: &str, bytes: &[u8]) -> Option<String> {
    match expected.split_once(':').map(|(a, _)| a) {
        Some("sha256") => Some(sha256_digest(bytes)),
        Some("sha512") => Some(format!("sha512:{}", hex(&sha2::Sha512::digest(bytes)))),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
