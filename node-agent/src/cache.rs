//! The decision cache: evaluated outcomes keyed by (agent version, config
//! generation, normalised reference, digest), with separate lifetimes for allow, deny and
//! error outcomes, a size bound, and persistence across restarts.
//!
//! Storage sits behind the narrow [`Store`] trait with two implementations:
//! [`SledStore`] on disk (sled, with a bounded page cache; a database that
//! fails to open is moved aside and rebuilt so the agent keeps serving) and
//! [`MemoryStore`], its in-memory twin for tests and for `verify` one-shots.
//! Every stored value repeats its own key and is checked on read, so a torn
//! or misplaced record is a miss, never a wrong verdict. Credentials are
//! never stored: values hold outcomes, reasons and report data only.

use crate::report::{Source, Step, VerifierRun};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default lifetime of an allow outcome.
pub const DEFAULT_ALLOW_TTL: Duration = Duration::from_secs(3600);
/// Default lifetime of a deny outcome: short, to absorb kubelet back-off storms
/// without keeping a stale deny after a signature is pushed.
pub const DEFAULT_DENY_TTL: Duration = Duration::from_secs(30);
/// Default lifetime of an error outcome.
pub const DEFAULT_ERROR_TTL: Duration = Duration::from_secs(5);
/// Longest lifetime an error outcome may have.
pub const MAX_ERROR_TTL: Duration = Duration::from_secs(30);
/// Default entry bound.
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;
/// sled page cache bound.
const SLED_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest stored value accepted on read.
const MAX_VALUE_BYTES: usize = 256 * 1024;

/// Why the cache store failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The on-disk database failed.
    #[error("decision cache {path}: {source}")]
    Sled {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The database could not be moved aside.
    #[error("moving the unreadable decision cache {path} aside: {source}")]
    MoveAside {
        /// The database directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The narrow storage interface the cache needs.
pub trait Store: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError>;
    /// Stores `value` under `key`; returns true when the key is new.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<bool, CacheError>;
    /// Removes `key`.
    fn remove(&self, key: &[u8]) -> Result<(), CacheError>;
    /// Calls `f` with every (key, value).
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), CacheError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), CacheError>;
}

/// The in-memory twin of [`SledStore`].
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.map.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned())
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<bool, CacheError> {
        Ok(self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_vec(), value.to_vec()).is_none())
    }
    fn remove(&self, key: &[u8]) -> Result<(), CacheError> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        Ok(())
    }
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), CacheError> {
        for (k, v) in self.map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f(k, v);
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// sled on disk.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
}

impl SledStore {
    /// Opens the database at `path`. If it cannot be opened (corruption after
    /// an unclean stop, a format change), it is renamed to
    /// `<path>.corrupt-<unix-seconds>` and a fresh one is created.
    pub fn open(path: &Path) -> Result<SledStore, CacheError> {
        let open = || sled::Config::new().path(path).cache_capacity(SLED_CACHE_BYTES).flush_every_ms(Some(500)).open();
        let db = match open() {
            Ok(db) => db,
            // Locked by another agent, or not readable by us: never move a live
            // database aside; the caller reports it and stops.
            Err(sled::Error::Io(e))
                if !matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof) =>
            {
                return Err(CacheError::Sled { path: path.into(), source: sled::Error::Io(e) });
            }
            Err(first) => {
                let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let aside = path.with_extension(format!("corrupt-{secs}"));
                tracing::error!(cache = %path.display(), error = %first, aside = %aside.display(), "decision cache unreadable; moving it aside and starting empty");
                std::fs::rename(path, &aside).map_err(|source| CacheError::MoveAside { path: path.into(), source })?;
                open().map_err(|source| CacheError::Sled { path: path.into(), source })?
            }
        };
        Ok(SledStore { path: path.into(), db })
    }

    fn err(&self, source: sled::Error) -> CacheError {
        CacheError::Sled { path: self.path.clone(), source }
    }

    /// The content-addressed store for fetched manifests and blobs, a tree of
    /// the same database, bounded by `max_entries` and
    /// [`DEFAULT_CONTENT_MAX_BYTES`] until the config in force sets its byte
    /// bound ([`pullgate_registry::ContentStore::set_max_bytes`]).
    pub fn content_store(&self, max_entries: usize) -> Result<SledContent, CacheError> {
        self.content_store_bounded(max_entries, DEFAULT_CONTENT_MAX_BYTES)
    }

    /// The content store (with a small index tree of sizes and use order),
    /// bounded by `max_entries` and `max_bytes`. What is already stored is
    /// evicted only when something is added or the bound is set.
    pub fn content_store_bounded(&self, max_entries: usize, max_bytes: u64) -> Result<SledContent, CacheError> {
        let tree = self.db.open_tree("content").map_err(|e| self.err(e))?;
        let meta = self.db.open_tree("content-index").map_err(|e| self.err(e))?;
        let mut index = ContentIndex::default();
        for item in meta.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            match (std::str::from_utf8(&k), <[u8; 16]>::try_from(v.as_ref())) {
                (Ok(digest), Ok(v)) => {
                    let seq = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                    let len = u64::from_be_bytes(v[8..].try_into().unwrap_or_default());
                    index.insert(digest.to_string(), seq, len);
                }
                _ => index.broken = true,
            }
        }
        // Content without an index entry (an older agent, a torn write) is
        // dropped: everything here can be fetched again.
        if index.broken || index.seq_of.len() != tree.len() {
            tracing::info!("artifact content store index does not match its content; emptying it");
            tree.clear().map_err(|e| self.err(e))?;
            meta.clear().map_err(|e| self.err(e))?;
            index = ContentIndex::default();
        }
        Ok(SledContent { tree, meta, index: Mutex::new(index), max_entries, max_bytes: AtomicU64::new(max_bytes) })
    }
}

/// Sizes and use order of what [`SledContent`] holds.
#[derive(Default)]
struct ContentIndex {
    /// Use order → (digest, length); the smallest is evicted first.
    by_seq: BTreeMap<u64, (String, u64)>,
    seq_of: HashMap<String, u64>,
    bytes: u64,
    next: u64,
    broken: bool,
}

impl ContentIndex {
    fn insert(&mut self, digest: String, seq: u64, len: u64) {
        self.next = self.next.max(seq + 1);
        self.bytes += len;
        self.seq_of.insert(digest.clone(), seq);
        self.by_seq.insert(seq, (digest, len));
    }

    fn remove(&mut self, digest: &str) -> Option<u64> {
        let seq = self.seq_of.remove(digest)?;
        let (_, len) = self.by_seq.remove(&seq)?;
        self.bytes -= len;
        Some(len)
    }
}

/// Fetched manifests and blobs by digest, on disk: only what a verification
/// used (the registry client re-hashes everything it reads from here).
/// Bounded in entries and in bytes; past either bound the least recently
/// used items are evicted (everything here can be fetched again).
pub struct SledContent {
    tree: sled::Tree,
    meta: sled::Tree,
    index: Mutex<ContentIndex>,
    max_entries: usize,
    max_bytes: AtomicU64,
}

/// Default entry bound of [`SledContent`].
pub const DEFAULT_MAX_CONTENT_ENTRIES: usize = 20_000;
/// Default byte bound of [`SledContent`] (`[cache] contentMaxBytes`).
pub const DEFAULT_CONTENT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Largest `[cache] contentMaxBytes` accepted.
pub const MAX_CONTENT_STORE_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Largest item kept in [`SledContent`].
const MAX_CONTENT_BYTES: usize = 4 * 1024 * 1024;

impl SledContent {
    /// Bytes currently held (item lengths; sled's own overhead not counted).
    pub fn bytes(&self) -> u64 {
        self.index.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Records `digest` as just used, under a fresh sequence number.
    fn touch(&self, index: &mut ContentIndex, digest: &str, len: u64) {
        index.remove(digest);
        let seq = index.next;
        index.insert(digest.to_string(), seq, len);
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&seq.to_be_bytes());
        v[8..].copy_from_slice(&len.to_be_bytes());
        if let Err(e) = self.meta.insert(digest.as_bytes(), &v[..]) {
            tracing::warn!(error = %e, digest, "artifact content index write failed");
        }
    }

    /// Evicts least recently used items until both bounds hold.
    fn evict(&self, index: &mut ContentIndex) {
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        let mut evicted = 0usize;
        while index.bytes > max_bytes || index.seq_of.len() > self.max_entries {
            let Some((_, (digest, _))) = index.by_seq.first_key_value().map(|(s, v)| (*s, v.clone())) else { break };
            index.remove(&digest);
            let _ = self.tree.remove(digest.as_bytes());
            let _ = self.meta.remove(digest.as_bytes());
            evicted += 1;
        }
        if evicted > 0 {
            tracing::info!(evicted, bytes = index.bytes, max_bytes, "artifact content store evicted items");
        }
    }
}

impl pullgate_registry::ContentStore for SledContent {
    fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = self.tree.get(digest.as_bytes()).ok().flatten().map(|v| v.to_vec())?;
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if index.seq_of.contains_key(digest) {
            self.touch(&mut index, digest, bytes.len() as u64);
        }
        Some(bytes)
    }

    fn put(&self, digest: &str, bytes: &[u8]) {
        let len = bytes.len() as u64;
        if bytes.len() > MAX_CONTENT_BYTES || len > self.max_bytes.load(Ordering::Relaxed) {
            return;
        }
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if !index.seq_of.contains_key(digest)
            && let Err(e) = self.tree.insert(digest.as_bytes(), bytes)
        {
            tracing::warn!(error = %e, digest, "artifact content store write failed");
            return;
        }
        self.touch(&mut index, digest, len);
        self.evict(&mut index);
    }

    fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.evict(&mut self.index.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        self.db.get(key).map(|v| v.map(|v| v.to_vec())).map_err(|e| self.err(e))
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<bool, CacheError> {
        self.db.insert(key, value).map(|old| old.is_none()).map_err(|e| self.err(e))
    }
    fn remove(&self, key: &[u8]) -> Result<(), CacheError> {
        self.db.remove(key).map(|_| ()).map_err(|e| self.err(e))
    }
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), CacheError> {
        for item in self.db.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            f(&k, &v);
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), CacheError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

/// What was decided, before the failure policy and mode apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    /// Policy allows.
    Allow(String),
    /// Policy denies.
    Deny(String),
    /// No decision could be reached.
    Error(String),
}

/// An evaluated decision as cached and shared between concurrent requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The outcome.
    pub outcome: Outcome,
    /// The rule that applied.
    pub rule: Option<String>,
    /// Where it came from.
    pub source: Source,
    /// Verifier runs, for the report.
    pub verification: Vec<VerifierRun>,
    /// Id of the report that first made this evaluation.
    pub origin: Option<String>,
    /// The stages it went through.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// What the Rego policy saw and answered, when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyReport>,
}

impl Evaluation {
    /// An evaluation that reached no decision.
    pub fn error(why: String) -> Evaluation {
        Evaluation {
            outcome: Outcome::Error(why),
            rule: None,
            source: Source::FailurePolicy,
            verification: Vec::new(),
            origin: None,
            steps: Vec::new(),
            policy: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    key: String,
    expires_ms: u64,
    evaluation: Evaluation,
}

/// Lifetimes and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Lifetime of allow outcomes.
    pub allow_ttl: Duration,
    /// Lifetime of deny outcomes.
    pub deny_ttl: Duration,
    /// Lifetime of error outcomes (at most [`MAX_ERROR_TTL`]).
    pub error_ttl: Duration,
    /// Most entries kept.
    pub max_entries: usize,
    /// Most bytes the artifact content store keeps (`contentMaxBytes`).
    pub content_max_bytes: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            allow_ttl: DEFAULT_ALLOW_TTL,
            deny_ttl: DEFAULT_DENY_TTL,
            error_ttl: DEFAULT_ERROR_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
            content_max_bytes: DEFAULT_CONTENT_MAX_BYTES,
        }
    }
}

/// The decision cache.
pub struct DecisionCache {
    store: Box<dyn Store>,
    entries: AtomicUsize,
    evicting: Mutex<()>,
}

/// The cache key of a decision.
/// The agent version is part of the key: an upgrade never reuses a verdict
/// an older verifier reached.
pub fn key(generation: &str, normalized_reference: &str, digest: &str) -> String {
    format!("d\0{}\0{generation}\0{normalized_reference}\0{digest}", env!("CARGO_PKG_VERSION"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl DecisionCache {
    /// A cache over `store`.
    pub fn new(store: Box<dyn Store>) -> DecisionCache {
        let mut n = 0;
        let _ = store.for_each(&mut |_, _| n += 1);
        DecisionCache { store, entries: AtomicUsize::new(n), evicting: Mutex::new(()) }
    }

    /// An in-memory cache.
    pub fn in_memory() -> DecisionCache {
        DecisionCache::new(Box::<MemoryStore>::default())
    }

    /// Makes every write so far durable (on shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "decision cache flush failed; recent entries may be verified again after restart");
        }
    }

    /// Entries currently stored (approximate while writes race).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unexpired evaluation under `key`. Store errors and records that do
    /// not belong to `key` are logged and treated as misses.
    pub fn get(&self, key: &str) -> Option<Evaluation> {
        let bytes = match self.store.get(key.as_bytes()) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "decision cache read failed; verifying afresh");
                return None;
            }
        };
        if bytes.len() > MAX_VALUE_BYTES {
            let _ = self.store.remove(key.as_bytes());
            return None;
        }
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.key == key && r.expires_ms > now_ms() => Some(r.evaluation),
            Ok(r) if r.key == key => None,
            _ => {
                tracing::warn!("decision cache record does not match its key; dropping it");
                let _ = self.store.remove(key.as_bytes());
                None
            }
        }
    }

    /// Stores an evaluation for the outcome's lifetime under `policy`.
    pub fn put(&self, key: &str, evaluation: &Evaluation, policy: &CachePolicy) {
        let ttl = match evaluation.outcome {
            Outcome::Allow(_) => policy.allow_ttl,
            Outcome::Deny(_) => policy.deny_ttl,
            Outcome::Error(_) => policy.error_ttl.min(MAX_ERROR_TTL),
        };
        if ttl.is_zero() {
            return;
        }
        let record = Record {
            key: key.to_string(),
            expires_ms: now_ms() + ttl.as_millis() as u64,
            evaluation: evaluation.clone(),
        };
        let Ok(bytes) = serde_json::to_vec(&record) else { return };
        match self.store.insert(key.as_bytes(), &bytes) {
            Ok(true) => {
                if self.entries.fetch_add(1, Ordering::Relaxed) + 1 > policy.max_entries {
                    self.evict(policy.max_entries);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "decision cache write failed; the decision stands"),
        }
    }

    /// Drops expired records, then the soonest-expiring ones, down to 90 % of `max`.
    fn evict(&self, max: usize) {
        let Ok(_guard) = self.evicting.try_lock() else { return };
        let now = now_ms();
        let mut live: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut dead: Vec<Vec<u8>> = Vec::new();
        let _ = self.store.for_each(&mut |k, v| match serde_json::from_slice::<Record>(v) {
            Ok(r) if r.expires_ms > now => live.push((r.expires_ms, k.to_vec())),
            _ => dead.push(k.to_vec()),
        });
        let target = max - max / 10;
        if live.len() > target {
            live.sort_unstable();
            let excess = live.len() - target;
            dead.extend(live.drain(..excess).map(|(_, k)| k));
        }
        for k in &dead {
            let _ = self.store.remove(k);
        }
        self.entries.store(live.len(), Ordering::Relaxed);
        tracing::info!(removed = dead.len(), kept = live.len(), "decision cache evicted entries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(o: Outcome) -> Evaluation {
        Evaluation {
            outcome: o,
            rule: Some("scope x".into()),
            source: Source::Verify,
            verification: vec![],
            origin: None,
            steps: vec![],
            policy: None,
        }
    }

    fn caches() -> Vec<(DecisionCache, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(&dir.path().join("cache")).unwrap();
        vec![(DecisionCache::in_memory(), None), (DecisionCache::new(Box::new(sled)), Some(dir))]
    }

    #[test]
    fn ttl_per_outcome() {
        for (c, _d) in caches() {
            let p = CachePolicy { deny_ttl: Duration::ZERO, ..Default::default() };
            c.put("a", &eval(Outcome::Allow("ok".into())), &p);
            c.put("d", &eval(Outcome::Deny("no".into())), &p);
            assert_eq!(c.get("a").unwrap().outcome, Outcome::Allow("ok".into()));
            assert!(c.get("d").is_none(), "a zero TTL stores nothing");
            let p = CachePolicy { error_ttl: Duration::from_millis(1), ..Default::default() };
            c.put("e", &eval(Outcome::Error("x".into())), &p);
            std::thread::sleep(Duration::from_millis(5));
            assert!(c.get("e").is_none(), "expired");
        }
    }

    #[test]
    fn misplaced_record_is_a_miss() {
        let store = MemoryStore::default();
        let c = DecisionCache::new(Box::new(store));
        c.put("k1", &eval(Outcome::Allow("ok".into())), &CachePolicy::default());
        // Copy k1's record under k2: it names k1, so k2 must miss.
        let v = c.store.get(b"k1").unwrap().unwrap();
        c.store.insert(b"k2", &v).unwrap();
        assert!(c.get("k2").is_none());
        c.store.insert(b"k3", b"{not json").unwrap();
        assert!(c.get("k3").is_none());
        assert!(c.store.get(b"k3").unwrap().is_none(), "garbage is dropped");
    }

    #[test]
    fn bounded_with_eviction() {
        for (c, _d) in caches() {
            let p = CachePolicy { max_entries: 100, ..Default::default() };
            for i in 0..250 {
                c.put(&format!("k{i}"), &eval(Outcome::Allow(format!("{i}"))), &p);
            }
            assert!(c.len() <= 100, "{}", c.len());
            assert!(c.get("k249").is_some(), "the newest survive");
        }
    }

    #[test]
    fn content_store_is_bounded_in_entries_and_separate_from_decisions() {
        use pullgate_registry::ContentStore as _;
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(&dir.path().join("cache")).unwrap();
        let content = sled.content_store_bounded(3, 1 << 20).unwrap();
        let c = DecisionCache::new(Box::new(sled));
        c.put("k", &eval(Outcome::Allow("ok".into())), &CachePolicy::default());
        for i in 0..3 {
            content.put(&format!("sha256:{i}"), b"bytes");
        }
        assert_eq!(content.get("sha256:0").as_deref(), Some(&b"bytes"[..]), "a read counts as a use");
        content.put("sha256:3", b"more");
        assert!(content.get("sha256:1").is_none(), "the least recently used item is evicted");
        for kept in ["sha256:0", "sha256:2", "sha256:3"] {
            assert!(content.get(kept).is_some(), "{kept} is kept: eviction, not emptying");
        }
        assert_eq!(c.len(), 1);
        assert!(c.get("k").is_some(), "decisions are untouched");
    }

    #[test]
    fn content_store_is_bounded_in_bytes_across_reopen_and_limit_changes() {
        use pullgate_registry::ContentStore as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let item = vec![7u8; 1000];
        {
            let sled = SledStore::open(&path).unwrap();
            let content = sled.content_store_bounded(1000, 4500).unwrap();
            for i in 0..10 {
                content.put(&format!("sha256:{i}"), &item);
                assert!(content.bytes() <= 4500, "{} bytes after item {i}", content.bytes());
            }
            assert_eq!(content.bytes(), 4000);
            assert!(content.get("sha256:9").is_some() && content.get("sha256:5").is_none());
            content.put("sha256:big", &vec![0u8; 5000]);
            assert!(content.get("sha256:big").is_none(), "an item larger than the bound is not kept");
            sled.db.flush().unwrap();
        }
        let sled = SledStore::open(&path).unwrap();
        let content = sled.content_store_bounded(1000, 4500).unwrap();
        assert_eq!(content.bytes(), 4000, "the index survives a restart");
        assert!(content.get("sha256:9").is_some());
        content.set_max_bytes(2000);
        assert_eq!(content.bytes(), 2000, "lowering the bound evicts at once");
        assert!(content.get("sha256:9").is_some(), "the most recently used stay");
        let sled2 = SledStore::open(&dir.path().join("other")).unwrap();
        let reopened = sled2.content_store_bounded(1000, 1500).unwrap();
        reopened.put("sha256:a", &item);
        assert_eq!(reopened.bytes(), 1000);
    }

    #[test]
    fn a_locked_database_is_an_error_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let _held = SledStore::open(&path).unwrap();
        let err = SledStore::open(&path).err().expect("the second open must fail");
        assert!(err.to_string().contains("lock"), "{err}");
        let moved = std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("corrupt"));
        assert!(!moved, "a live database must not be moved aside");
    }

    #[test]
    fn survives_reopen_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        {
            let c = DecisionCache::new(Box::new(SledStore::open(&path).unwrap()));
            c.put("k", &eval(Outcome::Deny("no".into())), &CachePolicy::default());
        }
        let c = DecisionCache::new(Box::new(SledStore::open(&path).unwrap()));
        assert_eq!(c.get("k").unwrap().outcome, Outcome::Deny("no".into()));
        assert_eq!(c.len(), 1);
        drop(c);
        // Wreck the database: it is moved aside and a fresh one serves.
        for e in std::fs::read_dir(&path).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, b"garbage garbage garbage").unwrap();
            }
        }
        let c = DecisionCache::new(Box::new(SledStore::open(&path).unwrap()));
        assert!(c.get("k").is_none());
        c.put("k2", &eval(Outcome::Allow("ok".into())), &CachePolicy::default());
        assert!(c.get("k2").is_some());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("corrupt-"));
        assert_eq!(aside.count(), 1, "the broken database was kept aside for inspection");
    }
}
