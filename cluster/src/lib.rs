//! pullgate-cluster: the cluster tier. The agents of a cluster share what
//! they fetched from registries through a Redis the operator already runs
//! (a single server, Sentinel or Redis Cluster), so a new image rolled out
//! to thousands of nodes costs the registry about one verification's
//! requests instead of one per node.
//!
//! Redis is never trusted: [`ClusterTier`] implements the registry client's
//! [`SharedTier`](pullgate_registry::shared::SharedTier) hook, and the client
//! re-hashes every content value and re-parses every list it reads, so a
//! poisoned Redis causes a miss, never a different verdict. Verdicts,
//! credentials and tokens are never written to Redis.
//!
//! * [`tier`] — the Redis operations behind the hook: keys, TTLs, leases,
//!   bounded reads, counters.
//! * [`breaker`] — the circuit breaker that makes a dead Redis cost nothing.
//! * `conn` — connections for the three topologies, plain or TLS.

pub mod breaker;
mod conn;
pub mod tier;

pub use tier::{ClusterTier, Counts, Event, Observer};

use std::time::Duration;

/// How the Redis deployment is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One server (or a proxy in front of several).
    Single,
    /// Sentinels (the URLs) that name the current primary of `master`.
    Sentinel {
        /// The monitored primary's name.
        master: String,
    },
    /// A Redis Cluster; the URLs are seed nodes.
    Cluster,
}

/// The Redis password, read from a file (a mounted Secret). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password read from its file.
    pub fn new(password: String) -> Password {
        Password(password)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Everything the tier needs, validated by the agent's config loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Topology.
    pub mode: Mode,
    /// `redis://` or `rediss://` URLs without credentials (one for
    /// [`Mode::Single`], sentinels or seed nodes otherwise).
    pub urls: Vec<String>,
    /// ACL user name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Password>,
    /// CA certificates (PEM) trusted for `rediss://` instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Prefix of every key (several clusters can share one Redis).
    pub key_prefix: String,
    /// Lifetime of content values (manifests, blobs).
    pub content_ttl: Duration,
    /// Lifetime of referrers lists and tag resolutions: the longest a stale
    /// list can hide a newly pushed signature.
    pub list_ttl: Duration,
    /// Lifetime of a fetch lease (a lease holder that died frees it after this).
    pub lease_ttl: Duration,
    /// Longest a node waits for the lease holder's value.
    pub wait_bound: Duration,
    /// Bound on every Redis operation (and on connecting).
    pub timeout: Duration,
    /// How long Redis is skipped after the breaker opens.
    pub breaker_cooldown: Duration,
    /// Largest value written (larger content is not shared).
    pub max_value_bytes: u64,
}

impl Settings {
    /// Settings for one `url` with the defaults the config documents.
    pub fn single(url: &str) -> Settings {
        Settings {
            mode: Mode::Single,
            urls: vec![url.to_string()],
            username: None,
            password: None,
            ca_pem: None,
            key_prefix: "pullgate".into(),
            content_ttl: Duration::from_secs(24 * 3600),
            list_ttl: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(3),
            wait_bound: Duration::from_secs(2),
            timeout: Duration::from_millis(250),
            breaker_cooldown: Duration::from_secs(5),
            max_value_bytes: 4 * 1024 * 1024,
        }
    }

    /// True for `rediss://` URLs.
    pub fn tls(&self) -> bool {
        self.urls.first().is_some_and(|u| u.starts_with("rediss://"))
    }
}

/// Checks that the Redis client accepts `settings` (URLs, TLS material)
/// without connecting; what `check-config` reports.
pub fn check(settings: &Settings) -> Result<(), ClusterError> {
    conn::Connector::new(settings).map(|_| ())
}

/// Checks that the Redis client can parse `url`.
pub fn check_url(url: &str) -> Result<(), ClusterError> {
    use redis::IntoConnectionInfo as _;
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| ClusterError::Url { url: conn::redact(url), detail: e.to_string() })
}

/// Why the tier could not be set up. Operations never fail: they fall back.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No URL was given.
    #[error("cluster tier: no Redis URL configured; set [cluster] url")]
    NoUrl,
    /// A URL could not be parsed.
    #[error("cluster tier: Redis URL {url:?} is not usable: {detail}")]
    Url {
        /// The URL.
        url: String,
        /// What the client said.
        detail: String,
    },
    /// A URL carries a user or password.
    #[error(
        "cluster tier: Redis URL {url} carries credentials; remove them and set [cluster] passwordFile (a mounted Secret) instead"
    )]
    CredentialsInUrl {
        /// The URL with its credentials redacted.
        url: String,
    },
    /// The client refused the settings (TLS material, mixed schemes, …).
    #[error("cluster tier: Redis client settings refused: {detail}")]
    Client {
        /// What the client said.
        detail: String,
    },
}
