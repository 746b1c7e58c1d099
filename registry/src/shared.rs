//! The hook through which the client shares what it fetched with the other
//! nodes of a cluster (the cluster tier, `pullgate-cluster`), without ever
//! trusting what comes back.
//!
//! * Content (manifests, blobs) is shared under its digest and re-hashed on
//!   every read: wrong bytes under a digest are a miss, counted as poisoned.
//! * Referrers lists and tag resolutions are not content-addressed: they are
//!   shared with a short TTL, re-parsed with the same junk rules as a
//!   registry answer, and every descriptor in them is only a pointer — what
//!   it points to is fetched by digest and checked like anything else.
//!   A well-formed list can still be wrong (entries left out, a stale "no
//!   such tag"), so it is only a hint: callers re-decide a non-pass with
//!   [`crate::Client::without_shared_lists`], which never reads them.
//! * Single flight across nodes: the first node to miss takes a lease,
//!   fetches and publishes; the others wait a bounded time for the value and
//!   then fetch themselves. A tier that is down answers "unavailable" at
//!   once and the client goes to the registry.
//!
//! The trait is object safe (boxed futures) so the registry crate does not
//! depend on any Redis client.

use crate::referrers::ReferrerList;
use crate::types::{Descriptor, Referrers, ReferrersSource};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// A boxed future returned by [`SharedTier`] methods.
pub type TierFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a shared key names; each kind has its own TTL and key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedKind {
    /// Manifests and blobs under their digest (re-hashed on every read).
    Content,
    /// The referrers list of (repository, subject, artifact type).
    Referrers,
    /// The digest a tag named (or that it did not exist).
    Tag,
}

impl SharedKind {
    /// Short lower-case name, for keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedKind::Content => "content",
            SharedKind::Referrers => "referrers",
            SharedKind::Tag => "tag",
        }
    }
}

/// A value read from the tier: untrusted bytes and how long ago it was published.
#[derive(Debug, Clone)]
pub struct SharedValue {
    /// The stored bytes (at most the `max_bytes` asked for).
    pub bytes: Vec<u8>,
    /// Time since it was published (zero when the tier cannot tell).
    pub age: Duration,
}

/// The answer to [`SharedTier::try_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This node holds the lease (the token releases it); it fetches and publishes.
    Taken(String),
    /// Another node is fetching: wait for its value, within the bound.
    HeldElsewhere,
    /// The tier cannot be used now (down, slow, breaker open): fetch directly.
    Unavailable,
}

/// What a lookup ended in, reported to the tier for its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A value was read and passed its check.
    Hit,
    /// Nothing usable was there; this node fetches from the registry.
    Miss,
    /// A value was read and failed its check (wrong bytes, junk, oversize).
    Poisoned,
    /// Another node held the lease but no value came within the wait bound.
    WaitedOut,
}

/// A store shared by the nodes of a cluster. Every method is bounded by
/// `deadline` (and the tier's own short timeouts) and never fails: a tier
/// that cannot answer returns `None` / [`Lease::Unavailable`] / nothing.
pub trait SharedTier: Send + Sync {
    /// The value under `key`, if any. At most `max_bytes + 1` bytes are
    /// read, so an oversized value is seen (and counted as poisoned) without
    /// being read whole.
    fn get<'a>(
        &'a self,
        kind: SharedKind,
        key: &'a str,
        max_bytes: u64,
        deadline: Instant,
    ) -> TierFuture<'a, Option<SharedValue>>;
    /// Publishes `bytes` under `key` with the kind's TTL.
    fn put<'a>(&'a self, kind: SharedKind, key: &'a str, bytes: &'a [u8], deadline: Instant) -> TierFuture<'a, ()>;
    /// Tries to take the fetch lease for `key` (a short `SET NX PX`).
    fn try_lease<'a>(&'a self, kind: SharedKind, key: &'a str, deadline: Instant) -> TierFuture<'a, Lease>;
    /// Gives the lease back (only if `token` still holds it).
    fn release<'a>(&'a self, kind: SharedKind, key: &'a str, token: &'a str, deadline: Instant) -> TierFuture<'a, ()>;
    /// Longest a node waits for another node's value before fetching itself.
    fn wait_bound(&self) -> Duration;
    /// How often a waiting node looks for the value.
    fn poll_interval(&self) -> Duration;
    /// False while the tier is known to be down (a waiting node stops waiting).
    fn available(&self) -> bool;
    /// Counts what a lookup ended in.
    fn record(&self, kind: SharedKind, outcome: Outcome);
}

/// A fetch this node does after a miss: publishes the result and gives the
/// lease back, if it held one.
pub(crate) struct Pending<'t> {
    tier: &'t dyn SharedTier,
    kind: SharedKind,
    key: String,
    token: Option<String>,
}

/// The start of a shared lookup.
pub(crate) enum Begin<'t> {
    /// A checked value from the tier.
    Hit(SharedValue),
    /// Fetch from the registry, then [`finish`] (`None`: no tier configured).
    Fetch(Option<Pending<'t>>),
}

/// Looks `key` up in the tier: a value passing `valid` is a hit; otherwise
/// takes the lease or waits (bounded by the tier and by half the time left
/// before `deadline`) for the node holding it.
pub(crate) async fn begin<'t>(
    tier: Option<&'t dyn SharedTier>,
    kind: SharedKind,
    key: &str,
    max_bytes: u64,
    deadline: Instant,
    valid: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Begin<'t> {
    let Some(tier) = tier else { return Begin::Fetch(None) };
    let absent = match read(tier, kind, key, max_bytes, deadline, valid).await {
        Read::Hit(v) => return Begin::Hit(v),
        Read::Absent => true,
        Read::Poisoned => false,
    };
    let token = match tier.try_lease(kind, key, deadline).await {
        Lease::Taken(token) => {
            // The value may have been published (and the lease given back)
            // between the miss above and taking the lease.
            if absent && let Read::Hit(v) = read(tier, kind, key, max_bytes, deadline, valid).await {
                tier.release(kind, key, &token, deadline).await;
                return Begin::Hit(v);
            }
            Some(token)
        }
        Lease::Unavailable => None,
        Lease::HeldElsewhere => {
            if let Some(v) = wait(tier, kind, key, max_bytes, deadline, valid).await {
                return Begin::Hit(v);
            }
            None
        }
    };
    tier.record(kind, Outcome::Miss);
    Begin::Fetch(Some(Pending { tier, kind, key: key.to_string(), token }))
}

/// A lookup that does not read the tier (a list or tag is not trusted from
/// it here) but still publishes what the registry serves, without a lease.
pub(crate) fn publish_only<'t>(tier: Option<&'t dyn SharedTier>, kind: SharedKind, key: &str) -> Begin<'t> {
    Begin::Fetch(tier.map(|tier| Pending { tier, kind, key: key.to_string(), token: None }))
}

/// Ends a fetch begun by [`begin`]: publishes `value` (what the registry
/// served and the client checked) and gives the lease back.
pub(crate) async fn finish(pending: Option<Pending<'_>>, value: Option<&[u8]>, deadline: Instant) {
    let Some(p) = pending else { return };
    if let Some(bytes) = value {
        p.tier.put(p.kind, &p.key, bytes, deadline).await;
    }
    if let Some(token) = &p.token {
        p.tier.release(p.kind, &p.key, token, deadline).await;
    }
}

/// What one read of the tier found.
enum Read {
    Hit(SharedValue),
    Absent,
    Poisoned,
}

async fn read(
    tier: &dyn SharedTier,
    kind: SharedKind,
    key: &str,
    max_bytes: u64,
    deadline: Instant,
    valid: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Read {
    let Some(v) = tier.get(kind, key, max_bytes, deadline).await else { return Read::Absent };
    if v.bytes.len() as u64 <= max_bytes && valid(&v.bytes) {
        tier.record(kind, Outcome::Hit);
        Read::Hit(v)
    } else {
        tracing::warn!(kind = kind.as_str(), key, "shared value failed its check; fetching from the registry");
        tier.record(kind, Outcome::Poisoned);
        Read::Poisoned
    }
}

async fn wait(
    tier: &dyn SharedTier,
    kind: SharedKind,
    key: &str,
    max_bytes: u64,
    deadline: Instant,
    valid: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Option<SharedValue> {
    let now = Instant::now();
    let until = (now + tier.wait_bound()).min(now + deadline.saturating_duration_since(now) / 2);
    loop {
        let next = (Instant::now() + tier.poll_interval()).min(until);
        tokio::time::sleep_until(next).await;
        if let Read::Hit(v) = read(tier, kind, key, max_bytes, deadline, valid).await {
            return Some(v);
        }
        if Instant::now() >= until || !tier.available() {
            tier.record(kind, Outcome::WaitedOut);
            tracing::debug!(kind = kind.as_str(), key, "no shared value within the wait bound; fetching");
            return None;
        }
    }
}

/// True when `bytes` hash to `digest` (content is only ever used after this).
pub(crate) fn holds(digest: &str, bytes: &[u8]) -> bool {
    crate::digest_of(digest, bytes).as_deref() == Some(digest)
}

/// The shared form of a tag resolution: the digest, or `-` for "no such tag".
pub(crate) fn encode_tag(digest: Option<&str>) -> Vec<u8> {
    digest.unwrap_or("-").as_bytes().to_vec()
}

/// A shared tag resolution: `Some(None)` for "no such tag", `Some(Some(d))`
/// for a well-formed digest, `None` for anything else.
pub(crate) fn decode_tag(bytes: &[u8]) -> Option<Option<String>> {
    if bytes == b"-" {
        return Some(None);
    }
    let s = std::str::from_utf8(bytes).ok()?;
    pullgate_reference::Digest::parse(s).ok()?;
    Some(Some(s.to_string()))
}

#[derive(serde::Serialize)]
struct SharedList<'a> {
    source: ReferrersSource,
    manifests: &'a [Descriptor],
}

#[derive(serde::Deserialize)]
struct SharedSource {
    source: String,
}

/// The shared form of a complete referrers list (one without notes).
pub(crate) fn encode_list(r: &Referrers) -> Vec<u8> {
    serde_json::to_vec(&SharedList { source: r.source, manifests: &r.descriptors }).unwrap_or_default()
}

/// A shared referrers list read back through the same rules as a registry
/// answer; `None` when it is not a complete, junk-free list.
pub(crate) fn decode_list(
    bytes: &[u8],
    artifact_type: Option<&str>,
    prefer: &(dyn Fn(&Descriptor) -> bool + Sync),
) -> Option<Referrers> {
    let source = match serde_json::from_slice::<SharedSource>(bytes).ok()?.source.as_str() {
        "api" => ReferrersSource::Api,
        "tag-schema" => ReferrersSource::TagSchema,
        _ => return None,
    };
    let mut list = ReferrerList::new(artifact_type, prefer);
    if !list.add_index("shared referrers list", bytes) {
        return None;
    }
    let r = list.finish(source);
    r.notes.is_empty().then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(i: u32, artifact_type: &str) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{i:064x}"),
            size: 10,
            artifact_type: Some(artifact_type.into()),
            annotations: Default::default(),
        }
    }

    #[test]
    fn lists_round_trip_and_junk_is_refused() {
        let prefer = |_: &Descriptor| false;
        let r = Referrers {
            descriptors: vec![descriptor(1, "a"), descriptor(2, "a")],
            source: ReferrersSource::TagSchema,
            notes: vec![],
            served_by: None,
        };
        let back = decode_list(&encode_list(&r), Some("a"), &prefer).expect("round trip");
        assert_eq!(back.descriptors, r.descriptors);
        assert_eq!(back.source, ReferrersSource::TagSchema);
        // An entry of another type, a bad digest, no source, not JSON: not a usable shared list.
        assert!(decode_list(&encode_list(&r), Some("b"), &prefer).is_some_and(|l| l.descriptors.is_empty()));
        let bad = br#"{"source":"api","manifests":[{"mediaType":"m","digest":"sha256:../x","size":1}]}"#;
        assert!(decode_list(bad, None, &prefer).is_none());
        assert!(decode_list(br#"{"manifests":[]}"#, None, &prefer).is_none());
        assert!(decode_list(br#"{"source":"elsewhere","manifests":[]}"#, None, &prefer).is_none());
        assert!(decode_list(b"\xff junk", None, &prefer).is_none());
    }

    #[test]
    fn tags_decode_only_to_digests_or_absent() {
        let d = format!("sha256:{:064x}", 7);
        assert_eq!(decode_tag(&encode_tag(Some(&d))), Some(Some(d.clone())));
        assert_eq!(decode_tag(&encode_tag(None)), Some(None));
        assert_eq!(decode_tag(b"sha256:short"), None);
        assert_eq!(decode_tag(b"latest"), None);
        assert_eq!(decode_tag(b"\xff\xfe"), None);
    }

    #[test]
    fn content_holds_only_its_own_bytes() {
        let d = crate::sha256_digest(b"abc");
        assert!(holds(&d, b"abc"));
        assert!(!holds(&d, b"abd"));
        assert!(!holds("md5:00", b"abc"));
    }
}
