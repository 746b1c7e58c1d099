//! The distribution-API client: requests with deadlines, auth, retries,
//! per-registry concurrency limits, bounded bodies and digest checks.
//!
//! Built on reqwest (rustls with aws-lc-rs) rather than on oci-client's
//! `Client`: oci-client stores one credential per registry host (the first
//! repository's credentials would be used for every repository of that
//! host), falls back from the referrers API only on 404, does not follow
//! `Link` pagination, and ignores a token's `expires_in`. Each of those is a
//! correctness problem for a verifier, so this module owns the transport.

use crate::auth::{self, Challenge, Credential, Keychain, TokenCache};
use crate::credprovider::Providers;
use crate::hosts::{self, HostsDirs};
use crate::polite::{Polite, Rate, RegistryStats};
use crate::referrers::ReferrerList;
use crate::shared::{self, Begin, SharedKind, SharedTier};
use crate::types::{Descriptor, MANIFEST_MEDIA_TYPES, Manifest, OCI_INDEX, Referrers, ReferrersSource};
use crate::{Repository, digest_of, tls};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Largest manifest or index accepted.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Most referrers pages followed.
pub const MAX_REFERRER_PAGES: usize = 16;
/// Most redirects followed for one blob download (other requests follow none).
pub const MAX_REDIRECTS: usize = 5;
/// Largest token-endpoint answer accepted.
const MAX_TOKEN_BYTES: u64 = 256 * 1024;
/// Largest error body read for a reason (the rest is discarded).
const MAX_ERROR_BODY: usize = 16 * 1024;
/// Longest reason from an error body that goes into a message.
const MAX_ERROR_REASON: usize = 200;
/// Attempts for throttled (429/503) or unreachable requests.
const MAX_ATTEMPTS: u32 = 3;
/// How long a registry's hosts.toml endpoints are reused before the files are read again.
const HOSTS_TTL: Duration = Duration::from_secs(10);

/// Per-registry connection settings.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Plain HTTP instead of HTTPS. Only for registries explicitly listed as insecure.
    pub insecure: bool,
    /// Extra CA certificates (PEM) trusted for this registry, on top of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Most concurrent requests to this registry (default [`ClientOptions::default_concurrency`]).
    pub max_concurrency: Option<usize>,
    /// Token bucket for this registry (default [`ClientOptions::rate`]).
    pub rate: Option<Rate>,
}

/// Client-wide settings.
#[derive(Clone)]
pub struct ClientOptions {
    /// Settings by registry host (`host[:port]`).
    pub hosts: HashMap<String, HostOptions>,
    /// Concurrent requests per registry when not set per host.
    pub default_concurrency: usize,
    /// Connect timeout for every request.
    pub connect_timeout: Duration,
    /// User-Agent header.
    pub user_agent: String,
    /// Called once per HTTP request with (registry, status or error class), e.g. for metrics.
    pub observer: Option<RequestObserver>,
    /// Content-addressed cache for manifests and blobs fetched by digest.
    pub content_store: Option<Arc<dyn ContentStore>>,
    /// The cluster tier: content, referrers lists and tags shared with other nodes, never trusted.
    pub shared: Option<Arc<dyn SharedTier>>,
    /// containerd's `config_path` tree: mirrors and per-endpoint TLS, tried in containerd's order.
    pub hosts_dirs: Option<Arc<HostsDirs>>,
    /// Kubelet credential-provider plugins, asked when no keychain entry matches.
    pub credential_providers: Option<Arc<Providers>>,
    /// Token bucket per registry endpoint when not set per host.
    pub rate: Rate,
    /// Called once per HTTP request to a registry endpoint with its latency, e.g. for metrics.
    pub latency_observer: Option<LatencyObserver>,
}

/// A content-addressed store for manifests and blobs fetched by digest (the
/// agent's on-disk cache). What it returns is re-hashed before use, so a
/// damaged or poisoned entry is a miss, never trusted content.
pub trait ContentStore: Send + Sync {
    /// The bytes stored under `digest`, if any.
    fn get(&self, digest: &str) -> Option<Vec<u8>>;
    /// Stores verified `bytes` under their `digest`.
    fn put(&self, digest: &str, bytes: &[u8]);
    /// Sets the most bytes the store may hold (from the config in force),
    /// evicting what no longer fits. Stores without a byte bound ignore it.
    fn set_max_bytes(&self, _max_bytes: u64) {}
}

/// How long a referrers list is reused before the registry is asked again.
pub const REFERRERS_TTL: Duration = Duration::from_secs(30);

/// Callback told about every registry request: `(registry host, "200" | "404" | "token-200" | "timeout" | "error")`.
pub type RequestObserver = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Callback told the latency of every registry request: `(registry endpoint host, time to the answer)`.
pub type LatencyObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("hosts", &self.hosts)
            .field("default_concurrency", &self.default_concurrency)
            .field("connect_timeout", &self.connect_timeout)
            .field("observer", &self.observer.is_some())
            .field("content_store", &self.content_store.is_some())
            .field("shared", &self.shared.is_some())
            .field("hosts_dirs", &self.hosts_dirs)
            .field("credential_providers", &self.credential_providers.as_ref().map(|p| p.len()))
            .field("rate", &self.rate)
            .field("latency_observer", &self.latency_observer.is_some())
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            hosts: HashMap::new(),
            default_concurrency: 8,
            connect_timeout: Duration::from_secs(5),
            user_agent: format!("pullgate/{}", env!("CARGO_PKG_VERSION")),
            observer: None,
            content_store: None,
            shared: None,
            hosts_dirs: None,
            credential_providers: None,
            rate: Rate::default(),
            latency_observer: None,
        }
    }
}

/// Why a registry operation failed. Every variant names the registry and what was being fetched.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error("registry {registry} is unreachable while fetching {what}: {}", chain(source))]
    Unreachable {
        /// Registry host.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The deadline passed.
    #[error("registry {registry}: fetching {what} did not finish before the deadline")]
    Deadline {
        /// Registry host.
        registry: String,
        /// What was being fetched.
        what: String,
    },
    /// Credentials were missing or refused.
    #[error("registry {registry} refused access to {repository} ({detail}); check the credentials configured for it")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What the registry or token endpoint said.
        detail: String,
    },
    /// Credentials could not be obtained.
    #[error("registry {registry}: obtaining credentials: {source}")]
    Credentials {
        /// Registry host.
        registry: String,
        /// The keychain error.
        #[source]
        source: auth::AuthError,
    },
    /// An unexpected HTTP status.
    #[error("registry {registry}: fetching {what}: HTTP {status}{detail}")]
    Status {
        /// Registry host.
        registry: String,
        /// What was being fetched.
        what: String,
        /// HTTP status code.
        status: u16,
        /// Start of the error body, if any.
        detail: String,
    },
    /// The content does not hash to the digest it was requested by.
    #[error(
        "registry {registry}: {what} does not match its digest {expected} (content hashes to {actual}); the registry or a proxy served tampered bytes"
    )]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// What was fetched.
        what: String,
        /// The requested digest.
        expected: String,
        /// The digest of what was served.
        actual: String,
    },
    /// The content is larger than allowed.
    #[error("registry {registry}: {what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// Registry host.
        registry: String,
        /// What was fetched.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The content is not what was expected.
    #[error("registry {registry}: {what}: {detail}")]
    Invalid {
        /// Registry host.
        registry: String,
        /// What was fetched.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// What was asked for does not exist in the registry.
    #[error("registry {registry}: {what} does not exist; check the repository and tag")]
    NotFound {
        /// Registry host.
        registry: String,
        /// What was looked up.
        what: String,
    },
    /// The TLS settings for a registry are unusable.
    #[error("registry {registry}: TLS settings: {detail}")]
    Tls {
        /// Registry host.
        registry: String,
        /// What is wrong.
        detail: String,
    },
}

impl RegistryError {
    /// True for a 404 answer or a missing tag.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::Status { status: 404, .. } | RegistryError::NotFound { .. })
    }
}

/// A registry client shared by every verification on the node.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// False for a [`Client::without_shared_lists`] view.
    shared_lists: bool,
}

struct Inner {
    options: ClientOptions,
    keychain: RwLock<Keychain>,
    tokens: TokenCache,
    basic_hosts: Mutex<HashSet<String>>,
    http: Mutex<HashMap<String, reqwest::Client>>,
    polite: Polite,
    /// Endpoints by registry host, re-read after [`HOSTS_TTL`].
    resolved: Mutex<HashMap<String, (Arc<hosts::Resolved>, std::time::Instant)>>,
    /// The mirror that last served each repository (`host/path`), for reports.
    served_by: Mutex<HashMap<String, String>>,
    helper_cache: Mutex<HashMap<(String, String), (Credential, std::time::Instant)>>,
    requests: Mutex<BTreeMap<(String, String), u64>>,
    /// Complete lists, when they were fetched, and whether from the cluster tier.
    referrers: Mutex<HashMap<String, (Referrers, std::time::Instant, bool)>>,
}

/// What to fetch, for error messages.
struct Target<'a> {
    repo: &'a Repository,
    path: String,
    what: String,
    accept: &'a [&'a str],
    /// Blob downloads only: registries hand them to storage backends.
    follow_redirects: bool,
}

impl Client {
    /// A client with these options and an empty (anonymous) keychain.
    pub fn new(options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(Inner {
                options,
                keychain: RwLock::new(Keychain::new()),
                tokens: TokenCache::default(),
                basic_hosts: Mutex::new(HashSet::new()),
                http: Mutex::new(HashMap::new()),
                polite: Polite::default(),
                resolved: Mutex::new(HashMap::new()),
                served_by: Mutex::new(HashMap::new()),
                helper_cache: Mutex::new(HashMap::new()),
                requests: Mutex::new(BTreeMap::new()),
                referrers: Mutex::new(HashMap::new()),
            }),
            shared_lists: true,
        }
    }

    /// The same client (connections, tokens, caches) but never trusting a
    /// referrers list or tag resolution from the cluster tier: those are
    /// fetched from the registry (and the fresh answer published). Content by
    /// digest is still shared, as it is re-hashed. For decisions a poisoned
    /// list could change: attached-artifact verifiers, and re-deciding a
    /// non-pass built on shared lists.
    pub fn without_shared_lists(&self) -> Client {
        Client { inner: self.inner.clone(), shared_lists: false }
    }

    /// True when lists and tags may come from a configured cluster tier, so a
    /// non-pass may rest on them and is worth re-deciding with
    /// [`Client::without_shared_lists`].
    pub fn reads_shared_lists(&self) -> bool {
        self.shared_lists && self.tier().is_some()
    }

    /// Replaces the keychain (e.g. after a pull secret changed) and drops cached tokens.
    pub fn set_keychain(&self, keychain: Keychain) {
        *self.inner.keychain.write().unwrap_or_else(|p| p.into_inner()) = keychain;
        self.inner.tokens.clear();
        self.inner.helper_cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Requests sent so far, by (registry, HTTP status or error class).
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.inner.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests, 429s and latency by registry endpoint host.
    pub fn registry_stats(&self) -> BTreeMap<String, RegistryStats> {
        self.inner.polite.stats()
    }

    /// The hosts.toml endpoint (a mirror, `scheme://host/path`) that last
    /// served content of `repo`; `None` when the registry itself did. Under
    /// concurrent lookups this may be another request's endpoint: reports
    /// use [`Referrers::served_by`], which travels with the list.
    pub fn served_by(&self, repo: &Repository) -> Option<String> {
        self.inner.served_by.lock().unwrap_or_else(|p| p.into_inner()).get(&repo.to_string()).cloned()
    }

    /// Fetches a manifest by digest; the bytes must hash to `digest`.
    pub async fn manifest_by_digest(
        &self,
        repo: &Repository,
        digest: &str,
        deadline: Instant,
    ) -> Result<Manifest, RegistryError> {
        self.manifest_by_digest_limited(repo, digest, MAX_MANIFEST_BYTES, deadline).await
    }

    /// [`Client::manifest_by_digest`] accepting at most `limit` bytes (capped
    /// at [`MAX_MANIFEST_BYTES`]); a larger body is discarded unread past
    /// the limit and is [`RegistryError::TooLarge`].
    pub async fn manifest_by_digest_limited(
        &self,
        repo: &Repository,
        digest: &str,
        limit: u64,
        deadline: Instant,
    ) -> Result<Manifest, RegistryError> {
        let limit = limit.min(MAX_MANIFEST_BYTES);
        check_digest(repo, digest)?;
        if let Some(bytes) = self.stored(digest)
            && bytes.len() as u64 <= limit
        {
            return Ok(Manifest { media_type: media_type_of(None, &bytes), digest: digest.to_string(), bytes });
        }
        let valid = |b: &[u8]| shared::holds(digest, b);
        let pending = match shared::begin(self.tier(), SharedKind::Content, digest, limit, deadline, &valid).await {
            Begin::Hit(v) => {
                return Ok(Manifest {
                    media_type: media_type_of(None, &v.bytes),
                    digest: digest.to_string(),
                    bytes: v.bytes,
                });
            }
            Begin::Fetch(p) => p,
        };
        let result = self.fetch_manifest(repo, digest, limit, deadline).await;
        shared::finish(pending, result.as_ref().ok().map(|m| m.bytes.as_slice()), deadline).await;
        result
    }

    /// The registry half of [`Client::manifest_by_digest_limited`].
    async fn fetch_manifest(
        &self,
        repo: &Repository,
        digest: &str,
        limit: u64,
        deadline: Instant,
    ) -> Result<Manifest, RegistryError> {
        let target = Target {
            repo,
            path: format!("/v2/{}/manifests/{digest}", repo.path),
            what: format!("manifest {}@{digest}", repo),
            accept: MANIFEST_MEDIA_TYPES,
            follow_redirects: false,
        };
        let (bytes, content_type) = self.get(&target, limit, deadline).await?;
        let actual = digest_of(digest, &bytes).ok_or_else(|| RegistryError::Invalid {
            registry: repo.host.clone(),
            what: target.what.clone(),
            detail: format!("unsupported digest {digest}"),
        })?;
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                registry: repo.host.clone(),
                what: target.what,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(Manifest { media_type: media_type_of(content_type, &bytes), digest: actual, bytes })
    }

    /// The cluster tier, if one is configured.
    fn tier(&self) -> Option<&dyn SharedTier> {
        self.inner.options.shared.as_deref()
    }

    /// Verified bytes for `digest` from the content store, if it holds them.
    fn stored(&self, digest: &str) -> Option<Vec<u8>> {
        let store = self.inner.options.content_store.as_ref()?;
        let bytes = store.get(digest)?;
        if digest_of(digest, &bytes).as_deref() == Some(digest) {
            Some(bytes)
        } else {
            tracing::warn!(digest, "cached content does not match its digest; fetching it again");
            None
        }
    }

    /// Keeps verified `bytes` under `digest` in the content store, so a later
    /// verification (another config generation, a restart) need not fetch
    /// them again. Nothing is kept automatically: callers keep what a
    /// verification actually used, never junk that did not verify.
    pub fn keep(&self, digest: &str, bytes: &[u8]) {
        if let Some(store) = &self.inner.options.content_store
            && digest_of(digest, bytes).as_deref() == Some(digest)
        {
            store.put(digest, bytes);
        }
    }

    /// Fetches a manifest by tag; `None` when the tag does not exist.
    pub async fn manifest_by_tag(
        &self,
        repo: &Repository,
        tag: &str,
        deadline: Instant,
    ) -> Result<Option<Manifest>, RegistryError> {
        let key = format!("{repo}:{tag}");
        let valid = |b: &[u8]| shared::decode_tag(b).is_some();
        let begun = if self.shared_lists {
            shared::begin(self.tier(), SharedKind::Tag, &key, 256, deadline, &valid).await
        } else {
            shared::publish_only(self.tier(), SharedKind::Tag, &key)
        };
        let pending = match begun {
            Begin::Hit(v) => match shared::decode_tag(&v.bytes).flatten() {
                None => return Ok(None),
                // Only a pointer: the manifest is fetched by digest and checked.
                Some(d) => match self.manifest_by_digest(repo, &d, deadline).await {
                    Ok(m) => return Ok(Some(m)),
                    Err(_) => None,
                },
            },
            Begin::Fetch(p) => p,
        };
        let result = self.fetch_by_tag(repo, tag, deadline).await;
        if let (Ok(Some(m)), Some(tier)) = (&result, self.tier()) {
            tier.put(SharedKind::Content, &m.digest, &m.bytes, deadline).await;
        }
        let value = result.as_ref().ok().map(|m| shared::encode_tag(m.as_ref().map(|m| m.digest.as_str())));
        shared::finish(pending, value.as_deref(), deadline).await;
        result
    }

    /// The registry half of [`Client::manifest_by_tag`].
    async fn fetch_by_tag(
        &self,
        repo: &Repository,
        tag: &str,
        deadline: Instant,
    ) -> Result<Option<Manifest>, RegistryError> {
        let target = Target {
            repo,
            path: format!("/v2/{}/manifests/{tag}", repo.path),
            what: format!("manifest {repo}:{tag}"),
            accept: MANIFEST_MEDIA_TYPES,
            follow_redirects: false,
        };
        match self.get(&target, MAX_MANIFEST_BYTES, deadline).await {
            Ok((bytes, ct)) => {
                let digest = crate::sha256_digest(&bytes);
                Ok(Some(Manifest { media_type: media_type_of(ct, &bytes), digest, bytes }))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resolves `tag` to the descriptor of the manifest (or index) it names:
    /// `(digest, media type, size)`. The digest is computed from the bytes
    /// served, not taken from a header. A missing tag is [`RegistryError::NotFound`].
    /// Always asks the registry: which image is verified never comes from the
    /// cluster tier.
    pub async fn resolve(
        &self,
        repo: &Repository,
        tag: &str,
        deadline: Instant,
    ) -> Result<(String, String, u64), RegistryError> {
        match self.fetch_by_tag(repo, tag, deadline).await? {
            Some(m) => {
                let size = m.bytes.len() as u64;
                Ok((m.digest, m.media_type, size))
            }
            None => Err(RegistryError::NotFound { registry: repo.host.clone(), what: format!("tag {repo}:{tag}") }),
        }
    }

    /// Fetches a blob; its size must equal `descriptor.size` (at most `limit`)
    /// and its bytes must hash to `descriptor.digest`.
    pub async fn blob(
        &self,
        repo: &Repository,
        descriptor: &Descriptor,
        limit: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, RegistryError> {
        check_digest(repo, &descriptor.digest)?;
        let what = format!("blob {}@{}", repo, descriptor.digest);
        if descriptor.size > limit {
            return Err(RegistryError::TooLarge { registry: repo.host.clone(), what, limit });
        }
        if let Some(bytes) = self.stored(&descriptor.digest)
            && bytes.len() as u64 == descriptor.size
        {
            return Ok(bytes);
        }
        let valid = |b: &[u8]| b.len() as u64 == descriptor.size && shared::holds(&descriptor.digest, b);
        let (key, size) = (descriptor.digest.as_str(), descriptor.size);
        let pending = match shared::begin(self.tier(), SharedKind::Content, key, size, deadline, &valid).await {
            Begin::Hit(v) => return Ok(v.bytes),
            Begin::Fetch(p) => p,
        };
        let result = self.fetch_blob(repo, descriptor, what, deadline).await;
        shared::finish(pending, result.as_deref().ok(), deadline).await;
        result
    }

    /// The registry half of [`Client::blob`].
    async fn fetch_blob(
        &self,
        repo: &Repository,
        descriptor: &Descriptor,
        what: String,
        deadline: Instant,
    ) -> Result<Vec<u8>, RegistryError> {
        let target = Target {
            repo,
            path: format!("/v2/{}/blobs/{}", repo.path, descriptor.digest),
            what,
            accept: &["*/*"],
            follow_redirects: true,
        };
        let (bytes, _) = self.get(&target, descriptor.size, deadline).await?;
        if bytes.len() as u64 != descriptor.size {
            return Err(RegistryError::Invalid {
                registry: repo.host.clone(),
                what: target.what,
                detail: format!("{} bytes served, descriptor says {}", bytes.len(), descriptor.size),
            });
        }
        let actual = digest_of(&descriptor.digest, &bytes).ok_or_else(|| RegistryError::Invalid {
            registry: repo.host.clone(),
            what: target.what.clone(),
            detail: format!("unsupported digest {}", descriptor.digest),
        })?;
        if actual != descriptor.digest {
            return Err(RegistryError::DigestMismatch {
                registry: repo.host.clone(),
                what: target.what,
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Lists the artifacts referring to `subject` (optionally only those of
    /// `artifact_type`): the OCI 1.1 referrers API with `Link` pagination,
    /// falling back to the `sha256-<hex>` tag schema when the registry has no
    /// referrers API (404, 400 or 405).
    ///
    /// Problems with the list itself that anyone able to push can cause (an
    /// entry without a size or digest, too many entries, a page or index too
    /// large or not JSON) do not fail the call: the usable entries are
    /// returned and [`Referrers::notes`] says what was left out. Only what the
    /// registry failed to do (unreachable, 5xx, refused access, deadline) is
    /// an error. A list is reused for [`REFERRERS_TTL`], so a burst of
    /// verifications of one image asks the registry once.
    pub async fn referrers(
        &self,
        repo: &Repository,
        subject: &str,
        artifact_type: Option<&str>,
        deadline: Instant,
    ) -> Result<Referrers, RegistryError> {
        self.referrers_preferring(repo, subject, artifact_type, &|_| false, deadline).await
    }

    /// [`Client::referrers`], keeping the entries `prefer` selects when the
    /// list holds more than [`MAX_REFERRERS`]: past the bound an entry that
    /// is not preferred is dropped to make room for one that is, so junk
    /// listed first cannot push a usable signature out of the list.
    pub async fn referrers_preferring(
        &self,
        repo: &Repository,
        subject: &str,
        artifact_type: Option<&str>,
        prefer: &(dyn Fn(&Descriptor) -> bool + Sync),
        deadline: Instant,
    ) -> Result<Referrers, RegistryError> {
        let key = format!("{repo}\0{subject}\0{}", artifact_type.unwrap_or(""));
        {
            let mut cache = self.inner.referrers.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (_, at, _)| at.elapsed() < REFERRERS_TTL);
            if let Some((r, _, from_tier)) = cache.get(&key)
                && (self.shared_lists || !from_tier)
            {
                return Ok(r.clone());
            }
        }
        check_digest(repo, subject)?;
        let valid = |b: &[u8]| shared::decode_list(b, artifact_type, prefer).is_some();
        let kind = SharedKind::Referrers;
        let begun = if self.shared_lists {
            shared::begin(self.tier(), kind, &key, MAX_MANIFEST_BYTES, deadline, &valid).await
        } else {
            shared::publish_only(self.tier(), kind, &key)
        };
        let pending = match begun {
            Begin::Hit(v) => match shared::decode_list(&v.bytes, artifact_type, prefer) {
                Some(r) => {
                    self.remember_referrers(key, &r, v.age, true);
                    return Ok(r);
                }
                None => None,
            },
            Begin::Fetch(p) => p,
        };
        let mut list = ReferrerList::new(artifact_type, prefer);
        let (source, served_by) = match self.fetch_referrers(repo, subject, &mut list, deadline).await {
            Ok(s) => s,
            Err(e) => {
                shared::finish(pending, None, deadline).await;
                return Err(e);
            }
        };
        let r = Referrers { served_by, ..list.finish(source) };
        // A list with notes may have been cut to the bound, which depends on
        // `prefer`: it is neither cached nor shared.
        let complete = r.notes.is_empty().then(|| shared::encode_list(&r));
        if complete.is_some() {
            self.remember_referrers(key, &r, Duration::ZERO, false);
        }
        shared::finish(pending, complete.as_deref(), deadline).await;
        Ok(r)
    }

    /// Caches a complete list for what is left of [`REFERRERS_TTL`] after
    /// `age` (a shared list's age counts, so sharing adds no staleness);
    /// `from_tier` marks a list a [`Client::without_shared_lists`] view skips.
    fn remember_referrers(&self, key: String, r: &Referrers, age: Duration, from_tier: bool) {
        let now = std::time::Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        let mut cache = self.inner.referrers.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() < 4096 {
            cache.insert(key, (r.clone(), at, from_tier));
        }
    }

    /// Referrers from the first endpoint that has any, in containerd's order:
    /// a mirror without the subject's referrers (or failing) is passed over.
    /// With the source, the mirror that served them (`None`: the registry).
    async fn fetch_referrers(
        &self,
        repo: &Repository,
        subject: &str,
        list: &mut ReferrerList<'_>,
        deadline: Instant,
    ) -> Result<(ReferrersSource, Option<String>), RegistryError> {
        let vias = self.vias(repo, Need::Referrers)?;
        let mut last = None;
        for (i, via) in vias.iter().enumerate() {
            let more = i + 1 < vias.len();
            match self.referrers_via(repo, via, subject, list, deadline).await {
                Ok((source, true)) => {
                    self.note_served(repo, via);
                    return Ok((source, via.mirror()));
                }
                Ok((source, false)) if !more => return Ok((source, via.mirror())),
                Ok(_) => {
                    tracing::debug!(registry = %repo.host, endpoint = %via.endpoint.display(), "no referrers here; trying the next endpoint")
                }
                Err(e) if more && falls_back(&e) => {
                    tracing::info!(registry = %repo.host, endpoint = %via.endpoint.display(), error = %e, "endpoint failed; trying the next one");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| no_endpoint(repo, "referrers")))
    }

    /// The referrers API (pages) or the tag schema at one endpoint; true
    /// when the endpoint listed anything.
    async fn referrers_via(
        &self,
        repo: &Repository,
        via: &Via,
        subject: &str,
        list: &mut ReferrerList<'_>,
        deadline: Instant,
    ) -> Result<(ReferrersSource, bool), RegistryError> {
        let mut path = format!("/v2/{}/referrers/{subject}", repo.path);
        if let Some(t) = list.artifact_type {
            path.push_str(&format!("?artifactType={}", urlencode(t)));
        }
        let mut found = false;
        for page in 0..MAX_REFERRER_PAGES {
            let target = Target {
                repo,
                path: path.clone(),
                what: format!("referrers of {repo}@{subject} (page {}){}", page + 1, via.label),
                accept: &[OCI_INDEX],
                follow_redirects: false,
            };
            let resp = self.send_via(&target, via, deadline).await?;
            let status = resp.status().as_u16();
            if page == 0 && matches!(status, 404 | 400 | 405) {
                tracing::debug!(registry = %repo.host, status, "no referrers API; using the tag schema");
                let found = self.referrers_by_tag(repo, via, subject, list, deadline).await?;
                return Ok((ReferrersSource::TagSchema, found));
            }
            if status != 200 {
                return Err(status_error(&via.repo, &target.what, resp, true).await);
            }
            let next = next_link(resp.headers());
            let bytes = match read_body(&via.repo, &target.what, resp, MAX_MANIFEST_BYTES, deadline).await {
                Ok((b, _)) => b,
                Err(RegistryError::TooLarge { .. }) => {
                    list.note(format!("{} is larger than {MAX_MANIFEST_BYTES} bytes; not read", target.what));
                    return Ok((ReferrersSource::Api, true));
                }
                Err(e) => return Err(e),
            };
            found |= lists_anything(&bytes);
            if !list.add_index(&target.what, &bytes) {
                return Ok((ReferrersSource::Api, true));
            }
            match next {
                Some(_) if page + 1 == MAX_REFERRER_PAGES => {
                    list.note(format!("more than {MAX_REFERRER_PAGES} referrers pages; the rest were not read"));
                }
                Some(n) => path = n,
                None => break,
            }
        }
        Ok((ReferrersSource::Api, found))
    }

    /// The tag-schema index at one endpoint; true when the tag exists.
    async fn referrers_by_tag(
        &self,
        repo: &Repository,
        via: &Via,
        subject: &str,
        list: &mut ReferrerList<'_>,
        deadline: Instant,
    ) -> Result<bool, RegistryError> {
        let tag = subject.replace(':', "-");
        let what = format!("referrers tag {repo}:{tag}");
        let target = Target {
            repo,
            path: format!("/v2/{}/manifests/{tag}", repo.path),
            what: what.clone(),
            accept: MANIFEST_MEDIA_TYPES,
            follow_redirects: false,
        };
        match self.get_via(&target, via, MAX_MANIFEST_BYTES, false, deadline).await {
            Ok((bytes, _)) => {
                list.add_index(&what, &bytes);
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(RegistryError::TooLarge { .. }) => {
                list.note(format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes; not read"));
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// GET with auth and retries, returning a bounded, successful body, from
    /// the first endpoint (hosts.toml order) that serves it. Content named
    /// by digest is checked against it at each endpoint, so a mirror serving
    /// other bytes is passed over, never trusted.
    async fn get(
        &self,
        target: &Target<'_>,
        limit: u64,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let vias = self.vias(target.repo, need_for(&target.path))?;
        let mut last = None;
        for (i, via) in vias.iter().enumerate() {
            let more = i + 1 < vias.len();
            match self.get_via(target, via, limit, vias.len() > 1, deadline).await {
                Ok(v) => {
                    self.note_served(target.repo, via);
                    return Ok(v);
                }
                Err(e) if more && falls_back(&e) => {
                    tracing::info!(registry = %target.repo.host, endpoint = %via.endpoint.display(), error = %e, "endpoint failed; trying the next one");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| no_endpoint(target.repo, &target.what)))
    }

    /// [`Client::get`] at one endpoint; with `check`, content requested by
    /// digest must hash to it.
    async fn get_via(
        &self,
        target: &Target<'_>,
        via: &Via,
        limit: u64,
        check: bool,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let what = format!("{}{}", target.what, via.label);
        let resp = self.send_via(target, via, deadline).await?;
        if !resp.status().is_success() {
            return Err(status_error(&via.repo, &what, resp, true).await);
        }
        let (bytes, ct) = read_body(&via.repo, &what, resp, limit, deadline).await?;
        if check && let Some(expected) = digest_in_path(&target.path) {
            let actual = digest_of(expected, &bytes).unwrap_or_default();
            if actual != expected {
                return Err(RegistryError::DigestMismatch {
                    registry: via.repo.host.clone(),
                    what,
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok((bytes, ct))
    }

    /// The endpoints for `repo` that may serve `need`, in containerd's order.
    fn vias(&self, repo: &Repository, need: Need) -> Result<Vec<Via>, RegistryError> {
        let resolved = self.resolved(&repo.host);
        let mut out = Vec::new();
        for ep in resolved.endpoints.iter().filter(|e| need.allowed(e)) {
            let itself =
                ep.upstream || ep.host == repo.host || (repo.host == "docker.io" && ep.host == "registry-1.docker.io");
            let scheme = match &ep.scheme {
                Some(s) => s.clone(),
                None => self.scheme(&repo.host).to_string(),
            };
            let via_repo =
                if itself { repo.clone() } else { Repository { host: ep.host.clone(), path: repo.path.clone() } };
            let plain = scheme == "http";
            let secrets = !plain || self.host_options(&via_repo.host).insecure;
            let auth_key = if secrets { via_repo.host.clone() } else { format!("http://{}", via_repo.host) };
            let label = if itself { String::new() } else { format!(" via {}", ep.display()) };
            out.push(Via {
                repo: via_repo,
                base: format!("{scheme}://{}{}", ep.host, ep.path),
                endpoint: ep.clone(),
                label,
                plain,
                secrets,
                auth_key,
            });
        }
        if out.is_empty() {
            return Err(RegistryError::Invalid {
                registry: repo.host.clone(),
                what: format!("{need:?} requests"),
                detail: "no hosts.toml endpoint of this registry has the capabilities for it; add pull and resolve"
                    .into(),
            });
        }
        Ok(out)
    }

    /// The registry's endpoints from hosts.toml (cached for [`HOSTS_TTL`]).
    fn resolved(&self, host: &str) -> Arc<hosts::Resolved> {
        let Some(dirs) = &self.inner.options.hosts_dirs else {
            return Arc::new(HostsDirs::default().resolve(host));
        };
        let mut cache = self.inner.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, at)) = cache.get(host)
            && at.elapsed() < HOSTS_TTL
        {
            return r.clone();
        }
        let r = Arc::new(dirs.resolve(host));
        for p in &r.problems {
            tracing::warn!(registry = host, file = %p.file.display(), field = %p.field, "hosts.toml: {}", p.reason);
        }
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(host.to_string(), (r.clone(), std::time::Instant::now()));
        r
    }

    fn note_served(&self, repo: &Repository, via: &Via) {
        let mut m = self.inner.served_by.lock().unwrap_or_else(|p| p.into_inner());
        if via.label.is_empty() {
            m.remove(&repo.to_string());
        } else if m.len() < 4096 {
            m.insert(repo.to_string(), via.endpoint.display());
        }
    }

    /// Sends one GET to one endpoint, handling auth challenges, throttling,
    /// transient failures and, for blob downloads only, redirects. Auth,
    /// limits, counts and errors are those of the endpoint's host.
    ///
    /// A redirect of anything but a blob is a registry failure (status
    /// only). A blob redirect to another host is followed without the
    /// registry's credentials, and whatever that host answers is reported by
    /// status only: neither its body nor its challenges are acted on.
    async fn send_via(
        &self,
        target: &Target<'_>,
        via: &Via,
        deadline: Instant,
    ) -> Result<reqwest::Response, RegistryError> {
        let target = &Target {
            repo: &via.repo,
            path: target.path.clone(),
            what: format!("{}{}", target.what, via.label),
            accept: target.accept,
            follow_redirects: target.follow_redirects,
        };
        let host = via.repo.host.as_str();
        let opts = self.host_options(host);
        let concurrency = opts.max_concurrency.unwrap_or(self.inner.options.default_concurrency);
        let rate = opts.rate.unwrap_or(self.inner.options.rate);
        let Some(_permit) = self.inner.polite.acquire(host, concurrency, rate, deadline).await else {
            // Held back past the deadline by the rate limit or a Retry-After:
            // like a 429, so the next endpoint may still be tried.
            if Instant::now() < deadline {
                return Err(RegistryError::Status {
                    registry: host.into(),
                    what: target.what.clone(),
                    status: 429,
                    detail: ": held back by the rate limit or the registry's Retry-After until past the deadline"
                        .into(),
                });
            }
            return Err(RegistryError::Deadline { registry: host.into(), what: target.what.clone() });
        };
        let http = self.http_for(via)?;
        let origin = format!("{}{}", via.base, target.path.strip_prefix("/v2").unwrap_or(&target.path));
        let origin = reqwest::Url::parse(&origin).map_err(|e| RegistryError::Invalid {
            registry: host.into(),
            what: target.what.clone(),
            detail: format!("request URL is not valid: {e}"),
        })?;
        let mut url = origin.clone();
        for _ in 0..=MAX_REDIRECTS {
            let on_registry = same_origin(&url, &origin);
            let resp = if on_registry {
                self.send_to_registry(target, via, &http, &url, deadline).await?
            } else {
                self.send_elsewhere(target, &http, &url, deadline).await?
            };
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let status = resp.status().as_u16();
            if !target.follow_redirects {
                return Err(RegistryError::Status {
                    registry: host.into(),
                    what: target.what.clone(),
                    status,
                    detail: ": a redirect, which is followed only for blob downloads".into(),
                });
            }
            url = Self::redirect_target(target, via, &url, &resp)?;
            tracing::debug!(registry = host, to = %url.host_str().unwrap_or_default(), status, "following a blob redirect");
        }
        Err(RegistryError::Status {
            registry: host.into(),
            what: target.what.clone(),
            status: 310,
            detail: format!(": more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Where a redirect answer points, if it may be followed: an absolute or
    /// relative `Location`, HTTPS unless the endpoint itself is plain HTTP.
    fn redirect_target(
        target: &Target<'_>,
        via: &Via,
        from: &reqwest::Url,
        resp: &reqwest::Response,
    ) -> Result<reqwest::Url, RegistryError> {
        let host = target.repo.host.as_str();
        let bad = |detail: &str| RegistryError::Status {
            registry: host.into(),
            what: target.what.clone(),
            status: resp.status().as_u16(),
            detail: format!(": {detail}"),
        };
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad("a redirect without a usable Location"))?;
        let to = from.join(location).map_err(|_| bad("a redirect to an invalid Location"))?;
        match to.scheme() {
            "https" => Ok(to),
            "http" if via.plain => Ok(to),
            _ => Err(bad("a redirect to a location that is not HTTPS")),
        }
    }

    /// One GET to a host the registry redirected to: no credentials, no
    /// retries, no token flow.
    async fn send_elsewhere(
        &self,
        target: &Target<'_>,
        http: &reqwest::Client,
        url: &reqwest::Url,
        deadline: Instant,
    ) -> Result<reqwest::Response, RegistryError> {
        let host = target.repo.host.as_str();
        let req = http.get(url.clone()).header(reqwest::header::ACCEPT, target.accept.join(", "));
        match tokio::time::timeout_at(deadline, req.send()).await {
            Err(_) => {
                self.count(host, "timeout");
                Err(RegistryError::Deadline { registry: host.into(), what: target.what.clone() })
            }
            Ok(Err(e)) => {
                self.count(host, "error");
                Err(RegistryError::Unreachable { registry: host.into(), what: target.what.clone(), source: e })
            }
            Ok(Ok(r)) => {
                let status = r.status().as_u16();
                self.count(host, &status.to_string());
                if r.status().is_success() || r.status().is_redirection() {
                    Ok(r)
                } else {
                    Err(status_error(target.repo, &format!("{} (redirected)", target.what), r, false).await)
                }
            }
        }
    }

    /// One attempt's GET to an endpoint: its hosts.toml headers, then its
    /// token, or its basic credentials once it asked for them.
    async fn endpoint_request(
        &self,
        target: &Target<'_>,
        via: &Via,
        http: &reqwest::Client,
        url: &reqwest::Url,
        scope: &str,
        deadline: Instant,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        let mut req = http.get(url.clone()).header(reqwest::header::ACCEPT, target.accept.join(", "));
        for (name, value) in &via.endpoint.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(token) = self.inner.tokens.get(&via.auth_key, scope) {
            req = req.bearer_auth(token);
        } else if self.inner.basic_hosts.lock().unwrap_or_else(|p| p.into_inner()).contains(&via.auth_key)
            && let Credential::Basic { username, password } = self.credential_for(via, deadline).await?
        {
            req = req.basic_auth(username, Some(password));
        }
        Ok(req)
    }

    /// One GET to the registry itself, with its credentials, challenges,
    /// throttling and transient-failure retries.
    async fn send_to_registry(
        &self,
        target: &Target<'_>,
        via: &Via,
        http: &reqwest::Client,
        url: &reqwest::Url,
        deadline: Instant,
    ) -> Result<reqwest::Response, RegistryError> {
        let repo = target.repo;
        let host = repo.host.as_str();
        let scope = format!("repository:{}:pull", repo.path);
        let mut authed_once = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self.endpoint_request(target, via, http, url, &scope, deadline).await?;
            let started = Instant::now();
            let sent = tokio::time::timeout_at(deadline, req.send()).await;
            let status = sent.as_ref().ok().and_then(|r| r.as_ref().ok()).map(|r| r.status().as_u16());
            self.inner.polite.record(host, status, started.elapsed());
            if let Some(observe) = &self.inner.options.latency_observer {
                observe(host, started.elapsed());
            }
            let resp = match sent {
                Err(_) => {
                    self.count(host, "timeout");
                    return Err(RegistryError::Deadline { registry: host.into(), what: target.what.clone() });
                }
                Ok(Err(e)) => {
                    self.count(host, "error");
                    if attempt < MAX_ATTEMPTS && (e.is_connect() || e.is_timeout()) {
                        let backoff = Duration::from_millis(100 * u64::from(attempt));
                        if Instant::now() + backoff < deadline {
                            tracing::debug!(registry = host, attempt, error = %e, "retrying after a transport error");
                            tokio::time::sleep(backoff).await;
                            continue;
                        }
                    }
                    return Err(RegistryError::Unreachable {
                        registry: host.into(),
                        what: target.what.clone(),
                        source: e,
                    });
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            self.count(host, &status.to_string());
            if status == 401 && !authed_once {
                authed_once = true;
                if self.answer_challenge(via, http, &resp, &scope, deadline).await? {
                    continue;
                }
            }
            if status == 401 || status == 403 {
                let detail = match self.credential_for(via, deadline).await? {
                    Credential::Anonymous if !via.secrets => format!("HTTP {status}; {}", no_secrets(via)),
                    Credential::Anonymous => format!("HTTP {status}, no credentials configured"),
                    _ => format!("HTTP {status} with the configured credentials"),
                };
                return Err(RegistryError::Unauthorized {
                    registry: host.into(),
                    repository: repo.path.clone(),
                    detail,
                });
            }
            if (status == 429 || status == 503) && attempt < MAX_ATTEMPTS {
                let asked = retry_after(resp.headers());
                let wait = asked.unwrap_or(Duration::from_millis(200 * u64::from(attempt)));
                if let Some(w) = asked {
                    // Everyone waits, not only this request.
                    self.inner.polite.pause(host, w);
                }
                if Instant::now() + wait < deadline {
                    tracing::info!(registry = host, status, wait_ms = wait.as_millis() as u64, "throttled; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Acts on the registry's own 401 challenge: a bearer token for `scope`,
    /// or basic auth when credentials are configured. True when the request
    /// should be sent again.
    async fn answer_challenge(
        &self,
        via: &Via,
        http: &reqwest::Client,
        resp: &reqwest::Response,
        scope: &str,
        deadline: Instant,
    ) -> Result<bool, RegistryError> {
        let repo = &via.repo;
        let host = repo.host.as_str();
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.fetch_token(via, http, &realm, service.as_deref(), scope, deadline).await.map(|()| true)
            }
            Some(Challenge::Basic) => match self.credential_for(via, deadline).await? {
                Credential::Basic { .. } => {
                    self.inner.basic_hosts.lock().unwrap_or_else(|p| p.into_inner()).insert(via.auth_key.clone());
                    Ok(true)
                }
                _ => Err(RegistryError::Unauthorized {
                    registry: host.into(),
                    repository: repo.path.clone(),
                    detail: if via.secrets {
                        "basic auth required and no credentials are configured".into()
                    } else {
                        format!("basic auth required; {}", no_secrets(via))
                    },
                }),
            },
            None => Ok(false),
        }
    }

    /// Runs the bearer token flow for `scope` and caches the token.
    async fn fetch_token(
        &self,
        via: &Via,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        deadline: Instant,
    ) -> Result<(), RegistryError> {
        let repo = &via.repo;
        let host = repo.host.as_str();
        let what = format!("token for {scope}");
        let mut url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Invalid {
            registry: host.into(),
            what: what.clone(),
            detail: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        // A plain-HTTP realm only for an endpoint that is plain HTTP itself.
        if url.scheme() != "https" && !via.plain {
            return Err(RegistryError::Invalid {
                registry: host.into(),
                what,
                detail: format!("token realm {realm} is not HTTPS; mark the registry insecure to allow it"),
            });
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = http.get(url);
        if let Credential::Basic { username, password } = self.credential_for(via, deadline).await? {
            req = req.basic_auth(username, Some(password));
        }
        let resp = match tokio::time::timeout_at(deadline, req.send()).await {
            Err(_) => return Err(RegistryError::Deadline { registry: host.into(), what }),
            Ok(Err(e)) => return Err(RegistryError::Unreachable { registry: host.into(), what, source: e }),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        self.count(host, &format!("token-{status}"));
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                registry: host.into(),
                repository: repo.path.clone(),
                detail: format!("token endpoint answered HTTP {status}"),
            });
        }
        if status != 200 {
            return Err(status_error(repo, &what, resp, false).await);
        }
        let (bytes, _) = read_body(repo, &what, resp, MAX_TOKEN_BYTES, deadline).await?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            registry: host.into(),
            what: what.clone(),
            detail: format!("token answer is not JSON: {e}"),
        })?;
        let token = answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
            RegistryError::Invalid { registry: host.into(), what, detail: "token answer has no token".into() }
        })?;
        // The distribution token spec: 60 s when expires_in is absent.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(1, 24 * 3600));
        self.inner.tokens.insert(&via.auth_key, scope, token, lifetime);
        Ok(())
    }

    /// The credential an endpoint may be sent: none over plain HTTP unless
    /// its host is marked insecure (see [`Via::secrets`]), so no helper or
    /// provider is even run for such an endpoint.
    async fn credential_for(&self, via: &Via, deadline: Instant) -> Result<Credential, RegistryError> {
        if !via.secrets {
            return Ok(Credential::Anonymous);
        }
        self.credential(&via.repo, deadline).await
    }

    /// The credential for a repository, running a credential helper if needed.
    /// Precedence: the keychain (pull Secrets over the node's docker
    /// config, longest prefix), then kubelet credential providers, then anonymous.
    async fn credential(&self, repo: &Repository, deadline: Instant) -> Result<Credential, RegistryError> {
        let cred = self.inner.keychain.read().unwrap_or_else(|p| p.into_inner()).lookup(&repo.host, &repo.path);
        if cred == Credential::Anonymous
            && let Some(providers) = &self.inner.options.credential_providers
            && let Some(c) = providers.credential(&repo.to_string(), deadline).await
        {
            return Ok(c);
        }
        let Credential::Helper(helper) = cred else { return Ok(cred) };
        let key = (helper.clone(), repo.host.clone());
        if let Some((c, exp)) = self.inner.helper_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && *exp > std::time::Instant::now()
        {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout_at(deadline, auth::run_helper(&helper, &repo.host))
            .await
            .map_err(|_| RegistryError::Deadline { registry: repo.host.clone(), what: "credential helper".into() })?
            .map_err(|source| RegistryError::Credentials { registry: repo.host.clone(), source })?;
        self.inner
            .helper_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (c.clone(), std::time::Instant::now() + Duration::from_secs(300)));
        Ok(c)
    }

    /// The agent's own settings for `host`. Only these make a host
    /// insecure: a hosts.toml `http://` endpoint is plain HTTP for that
    /// endpoint of that registry alone (see [`Via::plain`]).
    fn host_options(&self, host: &str) -> HostOptions {
        self.inner.options.hosts.get(host).cloned().unwrap_or_default()
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.host_options(host).insecure { "http" } else { "https" }
    }

    /// The HTTP client for an endpoint: one per endpoint and TLS settings,
    /// all sharing the process's trust anchors (see [`crate::tls`]).
    fn http_for(&self, via: &Via) -> Result<reqwest::Client, RegistryError> {
        let host = via.repo.host.as_str();
        let ep = &via.endpoint;
        let key = format!("{}\0{host}\0{:?}\0{:?}\0{:?}", via.base, ep.ca, ep.client, ep.skip_verify);
        let mut map = self.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let opts = self.host_options(host);
        let tls_err = |detail: String| RegistryError::Tls { registry: host.into(), detail };
        let mut settings = tls::TlsSettings { skip_verify: ep.skip_verify.unwrap_or(false), ..Default::default() };
        if let Some(pem) = &opts.ca_pem {
            settings.extra_roots = tls::parse_certificates("CA bundle", pem).map_err(|e| tls_err(e.to_string()))?;
        }
        for file in &ep.ca {
            let pem = read_pem(file).map_err(&tls_err)?;
            let what = file.display().to_string();
            settings.extra_roots.extend(tls::parse_certificates(&what, &pem).map_err(|e| tls_err(e.to_string()))?);
        }
        // rustls presents one identity: the first pair, as listed.
        if let Some((cert, key_file)) = ep.client.first() {
            let cert_pem = read_pem(cert).map_err(&tls_err)?;
            let key_pem = match key_file {
                Some(k) => read_pem(k).map_err(&tls_err)?,
                None => cert_pem.clone(),
            };
            let what = cert.display().to_string();
            settings.identity =
                Some(tls::ClientIdentity::from_pem(&what, &cert_pem, &key_pem).map_err(|e| tls_err(e.to_string()))?);
        }
        let config = tls::client_config(host, settings).map_err(|e| tls_err(e.to_string()))?;
        let c = reqwest::Client::builder()
            .connect_timeout(self.inner.options.connect_timeout)
            .user_agent(self.inner.options.user_agent.clone())
            // Redirects are handled in `send_via`: only for blobs, and without
            // credentials when they leave the registry's host.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!via.plain)
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| tls_err(e.to_string()))?;
        if map.len() >= 1024 {
            map.clear();
        }
        map.insert(key, c.clone());
        Ok(c)
    }

    fn count(&self, host: &str, class: &str) {
        if let Some(observe) = &self.inner.options.observer {
            observe(host, class);
        }
        *self
            .inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((host.into(), class.into()))
            .or_insert(0) += 1;
    }
}

/// An error and its causes on one line (reqwest's own message omits the
/// cause: connection refused, DNS failure and TLS failure would look alike).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

/// Digests from registry documents go into URLs: only well-formed ones do.
fn check_digest(repo: &Repository, digest: &str) -> Result<(), RegistryError> {
    pullgate_reference::Digest::parse(digest).map(|_| ()).map_err(|e| RegistryError::Invalid {
        registry: repo.host.clone(),
        what: format!("content of {repo}"),
        detail: format!("digest {:?} is not usable: {e}", digest.chars().take(80).collect::<String>()),
    })
}

/// One endpoint as a request uses it.
struct Via {
    /// The repository as addressed at this endpoint: for a mirror, the
    /// mirror's host (its own credentials, tokens, limits, counts, errors).
    repo: Repository,
    /// `scheme://host/api-root`; the request path after `/v2` is appended.
    base: String,
    /// The endpoint (TLS, headers).
    endpoint: hosts::Endpoint,
    /// ` via <endpoint>` for a mirror, empty for the registry itself.
    label: String,
    /// `base` is plain HTTP. Only this endpoint is: the scheme belongs to
    /// the endpoint as this registry's config lists it, never to its host,
    /// so one registry's hosts.toml cannot turn TLS off for another. Token
    /// realms and blob redirects may be plain HTTP only here.
    plain: bool,
    /// Credentials (keychain, helpers, providers, tokens got with them) may
    /// be sent: over HTTPS, or over plain HTTP to a host the agent's own
    /// `[registries]` settings mark insecure. A hosts.toml `http://` endpoint
    /// alone is used anonymously.
    secrets: bool,
    /// Key of this endpoint's tokens and basic-auth state: the host, or
    /// `http://host` for an anonymous plain endpoint, so a token got with
    /// credentials over HTTPS is never sent over plain HTTP.
    auth_key: String,
}

impl Via {
    /// The endpoint for reports when it is a mirror; `None` for the registry itself.
    fn mirror(&self) -> Option<String> {
        (!self.label.is_empty()).then(|| self.endpoint.display())
    }
}

/// What a request needs of an endpoint (containerd's capabilities).
#[derive(Debug, Clone, Copy)]
enum Need {
    /// Content by digest.
    Pull,
    /// A tag.
    Resolve,
    /// Referrers lookups (both).
    Referrers,
}

impl Need {
    fn allowed(self, ep: &hosts::Endpoint) -> bool {
        let c = ep.capabilities;
        match self {
            Need::Pull => c.pull,
            Need::Resolve => c.resolve,
            Need::Referrers => c.pull && c.resolve,
        }
    }
}

fn need_for(path: &str) -> Need {
    match path.rsplit_once("/manifests/") {
        Some((_, reference)) if !reference.contains(':') => Need::Resolve,
        _ if path.contains("/referrers/") => Need::Referrers,
        _ => Need::Pull,
    }
}

/// The digest a `/manifests/<digest>` or `/blobs/<digest>` path names.
fn digest_in_path(path: &str) -> Option<&str> {
    let last = path.rsplit('/').next()?;
    (path.contains("/manifests/") || path.contains("/blobs/")).then_some(last).filter(|d| d.contains(':'))
}

/// Whether the next endpoint is tried after this failure (containerd tries
/// it after any failure; only a spent deadline ends the search).
fn falls_back(e: &RegistryError) -> bool {
    !matches!(e, RegistryError::Deadline { .. })
}

/// Why an endpoint was sent no credentials, and what to do about it.
fn no_secrets(via: &Via) -> String {
    format!(
        "credentials are not sent over plain HTTP to {}; mark it insecure under [registries] to allow that",
        via.repo.host
    )
}

fn no_endpoint(repo: &Repository, what: &str) -> RegistryError {
    RegistryError::Invalid { registry: repo.host.clone(), what: what.into(), detail: "no endpoint was tried".into() }
}

/// True when a referrers index lists at least one entry.
fn lists_anything(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).map(|a| !a.is_empty()))
        .unwrap_or(false)
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    hosts::read_file(path, tls::MAX_PEM_BYTES)
}

fn media_type_of(content_type: Option<String>, bytes: &[u8]) -> String {
    if let Some(ct) = content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_string())
        && !ct.is_empty()
        && ct != "application/json"
    {
        return ct;
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// Reads a body of at most `limit` bytes before `deadline`.
async fn read_body(
    repo: &Repository,
    what: &str,
    mut resp: reqwest::Response,
    limit: u64,
    deadline: Instant,
) -> Result<(Vec<u8>, Option<String>), RegistryError> {
    let too_large = || RegistryError::TooLarge { registry: repo.host.clone(), what: what.into(), limit };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let ct = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(1024).min(limit) as usize);
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| RegistryError::Deadline { registry: repo.host.clone(), what: what.into() })?
            .map_err(|e| RegistryError::Unreachable { registry: repo.host.clone(), what: what.into(), source: e })?;
        let Some(chunk) = chunk else { break };
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, ct))
}

/// The error for an unexpected status. With `reason`, the body's
/// distribution-spec error (`{"errors":[{"code","message"}]}`) becomes a
/// short reason: printable ASCII only, at most [`MAX_ERROR_REASON`] bytes.
/// Nothing else of the body reaches a message, and a host the registry
/// redirected to (`reason` false) is reported by status only.
async fn status_error(repo: &Repository, what: &str, mut resp: reqwest::Response, reason: bool) -> RegistryError {
    let status = resp.status().as_u16();
    let mut detail = String::new();
    if reason {
        // Reading the body is bounded in size and time: a hostile registry
        // cannot stall or exhaust the agent here.
        let mut body = Vec::new();
        let read = async {
            while body.len() < MAX_ERROR_BODY {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(MAX_ERROR_BODY - body.len())]),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        if let Some(r) = error_reason(&body) {
            detail = format!(": {r}");
        }
    }
    RegistryError::Status { registry: repo.host.clone(), what: what.into(), status, detail }
}

/// The first distribution-spec error of an error body as `CODE: message`,
/// sanitised (printable ASCII, whitespace collapsed, at most
/// [`MAX_ERROR_REASON`] bytes); `None` for any other body.
fn error_reason(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let parsed: Errors = serde_json::from_slice(body).ok()?;
    let first = parsed.errors.first()?;
    let text = match (first.code.is_empty(), first.message.is_empty()) {
        (true, true) => return None,
        (false, true) => first.code.clone(),
        (true, false) => first.message.clone(),
        (false, false) => format!("{}: {}", first.code, first.message),
    };
    let clean: String = text.chars().map(|c| if c.is_ascii_graphic() { c } else { ' ' }).collect();
    let mut clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    clean.truncate(MAX_ERROR_REASON);
    (!clean.is_empty()).then_some(clean)
}

/// True when `a` and `b` are the same scheme, host and port.
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// `Retry-After` in seconds (HTTP dates are not used by registries), capped at 60 s.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// The path and query of a `Link: <...>; rel="next"` header, when it stays on the same registry.
fn next_link(h: &reqwest::header::HeaderMap) -> Option<String> {
    for v in h.get_all(reqwest::header::LINK) {
        let v = v.to_str().ok()?;
        for part in v.split(',') {
            let (target, params) = part.split_once(';')?;
            if !params.split(';').any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next") {
                continue;
            }
            let t = target.trim().trim_start_matches('<').trim_end_matches('>');
            if t.starts_with("/v2/") {
                return Some(t.to_string());
            }
            // Absolute links are followed only as path+query on the same host.
            if let Ok(u) = reqwest::Url::parse(t) {
                let mut p = u.path().to_string();
                if let Some(q) = u.query() {
                    p.push('?');
                    p.push_str(q);
                }
                return p.starts_with("/v2/").then_some(p);
            }
        }
    }
    None
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn link_header() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("</v2/a/referrers/sha256:x?n=2&last=y>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/referrers/sha256:x?n=2&last=y"));
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("<https://r.example/v2/a/referrers/d?last=z>; rel=next"),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/referrers/d?last=z"));
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::LINK, HeaderValue::from_static("</v2/a>; rel=\"prev\""));
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn retry_after_is_capped() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }

    #[test]
    fn encoding_and_endpoints() {
        assert_eq!(urlencode("application/vnd.cncf.notary.signature"), "application%2Fvnd.cncf.notary.signature");
        assert!(matches!(need_for("/v2/a/manifests/latest"), Need::Resolve));
        assert!(matches!(need_for("/v2/a/manifests/sha256:ab"), Need::Pull));
        assert!(matches!(need_for("/v2/a/referrers/sha256:ab"), Need::Referrers));
        assert_eq!(digest_in_path("/v2/a/blobs/sha256:ab"), Some("sha256:ab"));
        assert_eq!(digest_in_path("/v2/a/manifests/v1"), None);
        assert_eq!(media_type_of(Some("application/vnd.oci.image.index.v1+json; charset=x".into()), b"{}"), OCI_INDEX);
        assert_eq!(media_type_of(None, br#"{"mediaType":"m"}"#), "m");
    }

    #[test]
    fn error_reasons_are_short_printable_ascii_from_distribution_errors_only() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest\u001b[31m unknown\n\u00e9"}]}"#;
        assert_eq!(error_reason(body).as_deref(), Some("MANIFEST_UNKNOWN: manifest [31m unknown"));
        let long = format!(r#"{{"errors":[{{"code":"X","message":"{}"}}]}}"#, "a".repeat(5000));
        assert_eq!(error_reason(long.as_bytes()).map(|r| r.len()), Some(MAX_ERROR_REASON));
        assert_eq!(error_reason(b"<html>secret internal page</html>"), None);
        assert_eq!(error_reason(br#"{"errors":[]}"#), None);
    }
}
