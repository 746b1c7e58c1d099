//! [`ClusterTier`]: the Redis operations behind the registry client's
//! [`SharedTier`] hook.
//!
//! Key layout: `{prefix}:content:{digest}` for manifests and blobs,
//! `{prefix}:referrers:{sha256}` and `{prefix}:tag:{sha256}` for lists and
//! tags (the SHA-256 of the client's key, so repository names of any shape
//! make bounded keys), `{prefix}:lease:{kind}:{id}` for fetch leases. Every
//! operation runs under the breaker and the configured timeout (never past
//! the caller's deadline); a failure is a fallback, counted, never an error.
//! Reads take at most `max_bytes + 1` bytes (`GETRANGE`), so an oversized
//! value is seen as such without being read whole.

use crate::breaker::{Breaker, Transition};
use crate::conn::{Conn, Connector};
use crate::{ClusterError, Settings};
use pullgate_registry::shared::{Lease, Outcome, SharedKind, SharedTier, SharedValue, TierFuture};
use redis::RedisResult;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How often a node waiting for another node's value looks for it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Compare-and-delete: a lease is released only by the node holding it.
const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Something worth a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A lookup ended in `outcome`.
    Lookup {
        /// What was looked up.
        kind: SharedKind,
        /// How it ended.
        outcome: Outcome,
    },
    /// An operation skipped Redis or failed on it; the registry is used.
    Fallback,
    /// A value was published.
    Published {
        /// What was published.
        kind: SharedKind,
    },
    /// The breaker opened (`true`) or closed again (`false`).
    Breaker {
        /// Whether Redis is now skipped.
        open: bool,
    },
}

/// Called for every [`Event`] (the agent's metrics).
pub type Observer = Arc<dyn Fn(Event) + Send + Sync>;

/// Totals since start, for tests and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Values read that passed their check.
    pub hits: u64,
    /// Lookups that went to the registry.
    pub misses: u64,
    /// Values read that failed their check.
    pub poisoned: u64,
    /// Waits for another node's value that ran out.
    pub waited_out: u64,
    /// Operations that skipped or failed on Redis.
    pub fallbacks: u64,
    /// Values published.
    pub published: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    poisoned: AtomicU64,
    waited_out: AtomicU64,
    fallbacks: AtomicU64,
    published: AtomicU64,
    breaker_opened: AtomicU64,
}

/// The cluster tier on one Redis deployment.
pub struct ClusterTier {
    settings: Settings,
    connector: Connector,
    conn: tokio::sync::Mutex<Option<Conn>>,
    breaker: Breaker,
    counters: Counters,
    observer: Option<Observer>,
    leases: AtomicU64,
}

impl std::fmt::Debug for ClusterTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTier").field("settings", &self.settings).field("breaker", &self.breaker).finish()
    }
}

impl ClusterTier {
    /// A tier for `settings`. Connects lazily: a Redis that is down at start
    /// only means lookups fall back until it is up.
    pub fn new(settings: Settings, observer: Option<Observer>) -> Result<ClusterTier, ClusterError> {
        let connector = Connector::new(&settings)?;
        Ok(ClusterTier {
            breaker: Breaker::new(settings.breaker_cooldown),
            settings,
            connector,
            conn: tokio::sync::Mutex::new(None),
            counters: Counters::default(),
            observer,
            leases: AtomicU64::new(0),
        })
    }

    /// Totals since start.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            hits: l(&c.hits),
            misses: l(&c.misses),
            poisoned: l(&c.poisoned),
            waited_out: l(&c.waited_out),
            fallbacks: l(&c.fallbacks),
            published: l(&c.published),
            breaker_opened: l(&c.breaker_opened),
        }
    }

    /// True while Redis is being skipped.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The Redis key of a value.
    pub fn value_key(&self, kind: SharedKind, key: &str) -> String {
        format!("{}:{}:{}", self.settings.key_prefix, kind.as_str(), id(kind, key))
    }

    /// The Redis key of a fetch lease.
    pub fn lease_key(&self, kind: SharedKind, key: &str) -> String {
        format!("{}:lease:{}:{}", self.settings.key_prefix, kind.as_str(), id(kind, key))
    }

    fn ttl(&self, kind: SharedKind) -> Duration {
        match kind {
            SharedKind::Content => self.settings.content_ttl,
            SharedKind::Referrers | SharedKind::Tag => self.settings.list_ttl,
        }
    }

    fn emit(&self, e: Event) {
        if let Some(o) = &self.observer {
            o(e);
        }
    }

    async fn connection(&self) -> RedisResult<Conn> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connector.connect(self.settings.timeout).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` under the breaker and the timeout; `None` is a fallback.
    async fn run<T, F, Fut>(&self, what: &'static str, deadline: Instant, op: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let budget = self.settings.timeout.min(deadline.saturating_duration_since(Instant::now()));
        if budget.is_zero() || !self.breaker.allow(std::time::Instant::now()) {
            self.fallback();
            return None;
        }
        let result = tokio::time::timeout(budget, async { op(self.connection().await?).await }).await;
        match result {
            Ok(Ok(v)) => {
                if self.breaker.success() == Some(Transition::Closed) {
                    tracing::info!("cluster tier: Redis answers again; sharing fetched artifacts resumes");
                    self.emit(Event::Breaker { open: false });
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(what, &format!("no answer within {budget:?}"));
                None
            }
        }
    }

    fn failed(&self, what: &str, error: &str) {
        if let Ok(mut slot) = self.conn.try_lock() {
            *slot = None;
        }
        self.fallback();
        tracing::debug!(operation = what, error, "cluster tier: Redis operation failed; using the registry");
        if self.breaker.failure(std::time::Instant::now()) == Some(Transition::Opened) {
            self.counters.breaker_opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                operation = what,
                error,
                cooldown = ?self.settings.breaker_cooldown,
                "cluster tier: Redis is failing; fetching from registries directly until it answers again (verdicts are unaffected)"
            );
            self.emit(Event::Breaker { open: true });
        }
    }

    fn fallback(&self) {
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::Fallback);
    }

    fn token(&self) -> String {
        let n = self.leases.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("{}-{t}-{n}", std::process::id())
    }

    async fn get_value(&self, kind: SharedKind, key: &str, max: u64, deadline: Instant) -> Option<SharedValue> {
        let k = self.value_key(kind, key);
        let mut p = redis::pipe();
        p.cmd("GETRANGE").arg(&k).arg(0).arg(max).cmd("PTTL").arg(&k);
        let (bytes, pttl): (Vec<u8>, i64) =
            self.run("get", deadline, move |mut c| async move { c.pipe(&p).await }).await?;
        if bytes.is_empty() {
            return None;
        }
        let ttl = self.ttl(kind);
        if kind != SharedKind::Content && !expiry_within(pttl, ttl) {
            // Lists and tags are trusted for at most their TTL: one written
            // without an expiry (or a longer one) did not come from a node.
            tracing::warn!(kind = kind.as_str(), pttl, "shared value outlives its kind's TTL; ignoring it");
            self.record(kind, Outcome::Poisoned);
            return None;
        }
        let left = Duration::from_millis(pttl.max(0) as u64);
        Some(SharedValue { bytes, age: ttl.saturating_sub(left) })
    }

    async fn put_value(&self, kind: SharedKind, key: &str, bytes: &[u8], deadline: Instant) {
        if bytes.is_empty() || bytes.len() as u64 > self.settings.max_value_bytes {
            return;
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.value_key(kind, key)).arg(bytes).arg("PX").arg(self.ttl(kind).as_millis() as u64);
        if self.run("put", deadline, move |mut c| async move { c.query::<()>(&cmd).await }).await.is_some() {
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            self.emit(Event::Published { kind });
        }
    }

    async fn lease(&self, kind: SharedKind, key: &str, deadline: Instant) -> Lease {
        let token = self.token();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lease_key(kind, key)).arg(&token).arg("NX").arg("PX");
        cmd.arg(self.settings.lease_ttl.as_millis() as u64);
        match self.run("lease", deadline, move |mut c| async move { c.query::<Option<String>>(&cmd).await }).await {
            Some(Some(_)) => Lease::Taken(token),
            Some(None) => Lease::HeldElsewhere,
            None => Lease::Unavailable,
        }
    }

    async fn release_lease(&self, kind: SharedKind, key: &str, token: &str, deadline: Instant) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT).arg(1).arg(self.lease_key(kind, key)).arg(token);
        self.run("release", deadline, move |mut c| async move { c.query::<i64>(&cmd).await }).await;
    }
}

impl SharedTier for ClusterTier {
    fn get<'a>(
        &'a self,
        kind: SharedKind,
        key: &'a str,
        max_bytes: u64,
        deadline: Instant,
    ) -> TierFuture<'a, Option<SharedValue>> {
        Box::pin(self.get_value(kind, key, max_bytes, deadline))
    }

    fn put<'a>(&'a self, kind: SharedKind, key: &'a str, bytes: &'a [u8], deadline: Instant) -> TierFuture<'a, ()> {
        Box::pin(self.put_value(kind, key, bytes, deadline))
    }

    fn try_lease<'a>(&'a self, kind: SharedKind, key: &'a str, deadline: Instant) -> TierFuture<'a, Lease> {
        Box::pin(self.lease(kind, key, deadline))
    }

    fn release<'a>(&'a self, kind: SharedKind, key: &'a str, token: &'a str, deadline: Instant) -> TierFuture<'a, ()> {
        Box::pin(self.release_lease(kind, key, token, deadline))
    }

    fn wait_bound(&self) -> Duration {
        self.settings.wait_bound
    }

    fn poll_interval(&self) -> Duration {
        POLL_INTERVAL
    }

    fn available(&self) -> bool {
        !self.breaker.is_open()
    }

    fn record(&self, kind: SharedKind, outcome: Outcome) {
        let c = &self.counters;
        let counter = match outcome {
            Outcome::Hit => &c.hits,
            Outcome::Miss => &c.misses,
            Outcome::Poisoned => &c.poisoned,
            Outcome::WaitedOut => &c.waited_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::Lookup { kind, outcome });
    }
}

/// True when a `PTTL` answer (milliseconds left; -1 for no expiry, -2 for
/// no key) is an expiry no later than `ttl` from now.
fn expiry_within(pttl: i64, ttl: Duration) -> bool {
    pttl >= 0 && pttl as u128 <= ttl.as_millis()
}

/// The key part after the kind: a content digest as it is (the registry
/// client checked its grammar), anything else hashed.
fn id(kind: SharedKind, key: &str) -> String {
    let plain =
        kind == SharedKind::Content && key.len() <= 140 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':');
    if plain { key.to_string() } else { pullgate_registry::sha256_digest(key.as_bytes()).replacen("sha256:", "", 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(url: &str) -> ClusterTier {
        let mut s = Settings::single(url);
        s.key_prefix = "pg-test".into();
        s.timeout = Duration::from_millis(200);
        ClusterTier::new(s, None).expect("tier")
    }

    #[test]
    fn keys_are_prefixed_and_bounded() {
        let t = tier("redis://127.0.0.1:1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(t.value_key(SharedKind::Content, &d), format!("pg-test:content:{d}"));
        assert_eq!(t.lease_key(SharedKind::Content, &d), format!("pg-test:lease:content:{d}"));
        let long = format!("host/{}\0{d}\0type", "x".repeat(5000));
        let k = t.value_key(SharedKind::Referrers, &long);
        assert!(k.starts_with("pg-test:referrers:") && k.len() == "pg-test:referrers:".len() + 64, "{k}");
        assert_ne!(k, t.value_key(SharedKind::Tag, &long), "kinds have their own key spaces");
        // A content key that is not a plain digest is hashed too.
        assert!(!t.value_key(SharedKind::Content, "a b\n").contains(' '));
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        let e = ClusterTier::new(Settings::single("redis://:hunter2@127.0.0.1:6379"), None).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ClusterError::CredentialsInUrl { .. }), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("passwordFile"), "{msg}");
    }

    #[tokio::test]
    async fn nothing_listening_means_fallbacks_and_then_an_open_breaker() {
        // Port 1 on loopback: connection refused at once.
        let t = tier("redis://127.0.0.1:1");
        let deadline = Instant::now() + Duration::from_secs(5);
        for _ in 0..crate::breaker::FAILURES_TO_OPEN {
            assert!(t.get(SharedKind::Content, "sha256:00", 10, deadline).await.is_none());
        }
        assert!(t.breaker_open());
        assert!(!t.available());
        assert_eq!(t.try_lease(SharedKind::Tag, "x", deadline).await, Lease::Unavailable);
        let c = t.counts();
        assert_eq!(c.breaker_opened, 1);
        assert_eq!(c.fallbacks, crate::breaker::FAILURES_TO_OPEN as u64 + 1, "{c:?}");
    }

    #[test]
    fn only_values_expiring_within_the_ttl_are_used() {
        let ttl = Duration::from_secs(10);
        assert!(expiry_within(0, ttl));
        assert!(expiry_within(10_000, ttl));
        assert!(!expiry_within(10_001, ttl), "a longer TTL than any node writes");
        assert!(!expiry_within(-1, ttl), "no expiry");
        assert!(!expiry_within(-2, ttl), "gone between GETRANGE and PTTL");
    }

    #[tokio::test]
    async fn a_passed_deadline_skips_redis() {
        let t = tier("redis://127.0.0.1:1");
        assert!(t.get(SharedKind::Content, "sha256:00", 10, Instant::now()).await.is_none());
        assert!(!t.breaker_open(), "no attempt, so no failure");
        assert_eq!(t.counts().fallbacks, 1);
    }
}
