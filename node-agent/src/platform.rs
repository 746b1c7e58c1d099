//! Multi-platform images: the node's platform, index parsing bound by
//! digest, platform matching, and the `platforms` rule of a verify scope.
//!
//! containerd passes the digest it resolved: for a multi-platform image that
//! is the index. With `platforms = "index"` (the default) only that digest
//! is verified. `"index-or-node"` accepts a signature on the index, or else
//! on the platform manifest this node would run; `"every"` accepts a
//! signature on the index, or else requires one on every platform manifest.
//! The index is fetched through the registry client (size-capped, its bytes
//! checked against the pulled digest), and each entry is verified by its own
//! digest, so what is verified is exactly what the index binds. When
//! containerd passes a single manifest, `platforms` changes nothing.
//!
//! Nothing containerd might run is skipped. A nested index is followed, as
//! containerd follows it, to [`MAX_INDEX_DEPTH`] levels (fetched with the
//! same caps, bound by its digest, charged to the same budget); deeper, or
//! an entry of a type that is neither an image manifest nor an index, is a
//! deny where containerd could pick it. Only BuildKit attestation manifests
//! (annotated, platform `unknown/unknown`, which no node matches) are left
//! out of `every`.
//!
//! Matching follows the OCI image-spec platform fields and containerd's
//! normalisation: `os`, `architecture` and `variant` compare after
//! normalising (`aarch64` is `arm64`, whose variant `v8` is its default;
//! `x86_64` is `amd64`, whose `v1` is its default; `arm` defaults to `v7`);
//! `os.version` and `os.features` are ignored. The node's pick is the entry
//! containerd would choose (`images.Manifest`, `LimitManifests`): of the
//! entries whose platform matches or is absent, whatever their media type,
//! the best-ranked (its own platform first, then the older variants and
//! 32-bit architectures it can also run), the first listed among equals,
//! and an entry without a platform only when none matches.

use crate::config::{Platforms, Requirements, ScopeTrust};
use crate::report::VerifierRun;
use crate::verify::{self, Budget, RunResult, Subject};
use pullgate_reference::Digest;
use pullgate_registry::types::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use pullgate_registry::{Client, Repository};
use serde::Deserialize;
use std::fmt;
use tokio::time::Instant;

/// Largest index fetched (real ones are a few KiB).
pub const MAX_INDEX_BYTES: u64 = 1024 * 1024;
/// Most entries of an index examined; the rest make the index unusable.
pub const MAX_INDEX_ENTRIES: usize = 256;
/// Levels of index followed: the pulled index and the indexes it names.
pub const MAX_INDEX_DEPTH: usize = 2;
/// Longest media type quoted in a reason.
const MAX_SHOWN: usize = 128;
/// Longest os, architecture or variant accepted.
const MAX_FIELD: usize = 32;

/// An OCI platform, normalised (`linux/arm64` for `linux/aarch64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: String,
}

/// Why a platform string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a platform like linux/amd64 or linux/arm64/v8: {why}")]
pub struct PlatformError {
    input: String,
    why: &'static str,
}

impl Platform {
    /// A normalised platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            o => o.to_string(),
        };
        Platform { os, architecture, variant }
    }

    /// `linux`, `windows`, …
    pub fn os(&self) -> &str {
        &self.os
    }

    /// `amd64`, `arm64`, … (normalised).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// `v8`, `v7`, …, or empty.
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Parses `os/architecture[/variant]` (as `nodePlatform` is written).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let err = |why| PlatformError { input: s.chars().take(64).collect(), why };
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(err("give os/architecture or os/architecture/variant"));
        }
        let ok = |p: &str| {
            !p.is_empty() && p.len() <= MAX_FIELD && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if !parts.iter().all(|p| ok(p)) {
            return Err(err("each part is 1-32 letters, digits, _ . -"));
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied().unwrap_or("")))
    }

    /// The platform this agent runs on (and so the node's): from the
    /// target it was built for.
    pub fn node() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = match arch {
            "arm" if cfg!(target_feature = "v7") => "v7",
            "arm" => "v6",
            _ => "",
        };
        Platform::new(std::env::consts::OS, arch, variant)
    }

    /// The platforms a node of this platform runs, best first (containerd's
    /// order): itself, older amd64 levels and 386, older arm variants, and
    /// for arm64 the 32-bit arm variants from v8 down.
    fn preference(&self) -> Vec<Platform> {
        let mut out = vec![self.clone()];
        let same = |arch: &str, variant: String| Platform { os: self.os.clone(), architecture: arch.into(), variant };
        let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        match self.architecture.as_str() {
            "amd64" => {
                let n = level(&self.variant).unwrap_or(1);
                out.extend((2..n).rev().map(|l| same("amd64", format!("v{l}"))));
                if n > 1 {
                    out.push(same("amd64", String::new()));
                }
                out.push(same("386", String::new()));
            }
            "arm" => {
                let n = level(&self.variant).unwrap_or(7);
                out.extend((5..n).rev().map(|l| same("arm", format!("v{l}"))));
            }
            "arm64" => out.extend((5..=8).rev().map(|l| same("arm", format!("v{l}")))),
            _ => {}
        }
        out
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// containerd's architecture and variant normalisation.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = (arch.to_ascii_lowercase(), variant.to_ascii_lowercase());
    let (a, v) = match (arch.as_str(), variant.as_str()) {
        ("i386", _) => ("386", ""),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
        ("aarch64" | "arm64", "8" | "v8") => ("arm64", ""),
        ("aarch64" | "arm64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "" | "7") => ("arm", "v7"),
        ("arm", "5") => ("arm", "v5"),
        ("arm", "6") => ("arm", "v6"),
        ("arm", "8") => ("arm", "v8"),
        (a, v) => (a, v),
    };
    (a.to_string(), v.to_string())
}

/// What an index entry points at, by the media type the index gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OCI or Docker image manifest: verified by its digest.
    Manifest,
    /// An OCI index or Docker manifest list: containerd follows it.
    Index,
    /// Anything else: pullgate cannot verify it.
    Other,
}

/// One entry an index binds.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its digest, as the index gives it.
    pub digest: Digest,
    /// Its media type, as the index gives it (empty when absent).
    pub media_type: String,
    /// What the media type says it is.
    pub kind: Kind,
    /// Its size.
    pub size: u64,
    /// Its platform, normalised; `None` when the index gives none.
    pub platform: Option<Platform>,
    /// A BuildKit attestation manifest: annotated
    /// `vnd.docker.reference.type = attestation-manifest` and on platform
    /// `unknown/unknown`, which no node matches. The annotation alone counts for nothing.
    pub attestation: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<EntryDoc>,
    // An image manifest's fields or type: present, the document is not an index.
    #[serde(default)]
    media_type: String,
    config: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryDoc {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    platform: Option<PlatformDoc>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct PlatformDoc {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Parses every entry of an index, whatever its media type: each needs a
/// valid digest and a size within limits. A malformed document, an image
/// manifest, or more than [`MAX_INDEX_ENTRIES`] entries is an error.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let doc: IndexDoc = serde_json::from_slice(bytes).map_err(|e| format!("not an image index: {e}"))?;
    if doc.config.is_some() || doc.layers.is_some() || kind_of(&doc.media_type) == Kind::Manifest {
        return Err("an image manifest, not an image index".into());
    }
    if doc.manifests.len() > MAX_INDEX_ENTRIES {
        return Err(format!("{} entries, more than {MAX_INDEX_ENTRIES}", doc.manifests.len()));
    }
    let mut out = Vec::new();
    for e in doc.manifests {
        let digest = Digest::parse(&e.digest).map_err(|err| format!("entry digest {:?}: {err}", e.digest))?;
        if e.size > pullgate_registry::MAX_MANIFEST_BYTES {
            return Err(format!("entry {digest} claims {} bytes", e.size));
        }
        let platform = e.platform.map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or("")));
        let annotated = e.annotations.get("vnd.docker.reference.type").is_some_and(|t| t == "attestation-manifest");
        let unknown = platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
        let kind = kind_of(&e.media_type);
        out.push(Entry {
            digest,
            media_type: e.media_type,
            kind,
            size: e.size,
            platform,
            attestation: annotated && unknown,
        });
    }
    Ok(out)
}

/// The kind of entry a media type names.
fn kind_of(media_type: &str) -> Kind {
    if [OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type) {
        Kind::Manifest
    } else if is_index(media_type) {
        Kind::Index
    } else {
        Kind::Other
    }
}

/// The entry containerd on a node of platform `node` picks, whatever its
/// type: the best-ranked matching platform, the first listed among equals;
/// else the first entry without a platform.
pub fn node_entry<'a>(entries: &'a [Entry], node: &Platform) -> Option<&'a Entry> {
    let wanted = node.preference();
    let rank = |p: &Platform| wanted.iter().position(|w| w == p);
    entries
        .iter()
        .filter_map(|e| e.platform.as_ref().and_then(rank).map(|r| (r, e)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, e)| e)
        .or_else(|| entries.iter().find(|e| e.platform.is_none()))
}

/// True for index media types.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// A scope's verification with its `platforms` rule: the pulled digest
/// first; for an index under `index-or-node` or `every`, then the platform
/// manifests the rule names. One budget covers all of it.
pub async fn verify(
    trust: &[ScopeTrust<'_>],
    client: &Client,
    req: &Requirements,
    subject: &Subject,
    node: &Platform,
    deadline: Instant,
) -> (RunResult, String, Vec<VerifierRun>) {
    let mut budget =
        Budget::with_limits(deadline, subject.examine_time.min(verify::EXAMINE_TIME), verify::EXAMINE_BYTES);
    let (result, reason, mut runs) = verify::run_with_budget(trust, client, req, subject, &mut budget).await;
    if result == RunResult::Pass || req.platforms() == Platforms::Index || !is_index(&subject.media_type) {
        return (result, reason, runs);
    }
    let targets = match platform_targets(client, req.platforms(), subject, node, &mut budget).await {
        Ok(t) => t,
        Err((r, why)) => return (r, format!("{reason}; {why}"), runs),
    };
    let mut outcomes = Vec::new();
    for e in &targets {
        let sub =
            Subject { digest: e.digest.clone(), media_type: e.media_type.clone(), size: e.size, ..subject.clone() };
        let (r, why, mut more) = verify::run_with_budget(trust, client, req, &sub, &mut budget).await;
        let label = e.platform.as_ref().map_or_else(|| "no platform".to_string(), ToString::to_string);
        for run in &mut more {
            run.subject = Some(e.digest.to_string());
            run.platform = Some(label.clone());
        }
        runs.extend(more);
        outcomes.push((r, format!("{label} {}: {why}", e.digest)));
    }
    let (r, why) = combine_platforms(&outcomes);
    (r, format!("index: {reason}; {}: {why}", req.platforms().as_str()), runs)
}

/// Every platform manifest must pass: a failure fails, else an error errs.
fn combine_platforms(outcomes: &[(RunResult, String)]) -> (RunResult, String) {
    let first = |r: RunResult| outcomes.iter().find(|(x, _)| *x == r).map(|(_, w)| w.clone());
    if let Some(f) = first(RunResult::Fail) {
        (RunResult::Fail, f)
    } else if let Some(e) = first(RunResult::Error) {
        (RunResult::Error, e)
    } else {
        let all: Vec<&str> = outcomes.iter().map(|(_, w)| w.as_str()).collect();
        (RunResult::Pass, all.join("; "))
    }
}

/// An index to read: the pulled one (depth 1) or one nested in it.
struct IndexAt {
    digest: Digest,
    size: u64,
    depth: usize,
}

impl IndexAt {
    fn name(&self) -> String {
        if self.depth == 1 { "the index".into() } else { format!("the nested index {}", self.digest) }
    }

    fn nested(&self, e: &Entry) -> IndexAt {
        IndexAt { digest: e.digest.clone(), size: e.size, depth: self.depth + 1 }
    }
}

/// The platform manifests the rule names, following nested indexes.
/// Registry problems are errors; a malformed, oversized or too deeply nested
/// index, one without a manifest for the rule, or an entry of a type that
/// cannot be verified where containerd could pick it, is a failure.
async fn platform_targets(
    client: &Client,
    rule: Platforms,
    subject: &Subject,
    node: &Platform,
    budget: &mut Budget,
) -> Result<Vec<Entry>, (RunResult, String)> {
    let repo = Repository::of(&subject.reference);
    let top = IndexAt { digest: subject.digest.clone(), size: subject.size, depth: 1 };
    match rule {
        Platforms::IndexOrNode => node_target(client, &repo, top, node, budget).await.map(|e| vec![e]),
        _ => every_target(client, &repo, top, budget).await,
    }
}

/// The image manifest containerd runs on this node, through nested indexes.
async fn node_target(
    client: &Client,
    repo: &Repository,
    mut at: IndexAt,
    node: &Platform,
    budget: &mut Budget,
) -> Result<Entry, (RunResult, String)> {
    loop {
        let entries = fetch_index(client, repo, &at, budget).await?;
        let Some(pick) = node_entry(&entries, node) else {
            return Err((RunResult::Fail, format!("{} has no manifest for this node's platform {node}", at.name())));
        };
        match pick.kind {
            Kind::Manifest => return Ok(pick.clone()),
            Kind::Index if at.depth < MAX_INDEX_DEPTH => at = at.nested(pick),
            Kind::Index => return Err((RunResult::Fail, too_deep(pick))),
            Kind::Other => return Err((RunResult::Fail, unverifiable(pick))),
        }
    }
}

/// Every image manifest containerd could run on any platform: all entries
/// but attestation manifests, through nested indexes.
async fn every_target(
    client: &Client,
    repo: &Repository,
    top: IndexAt,
    budget: &mut Budget,
) -> Result<Vec<Entry>, (RunResult, String)> {
    let mut pending = std::collections::VecDeque::from([top]);
    let (mut out, mut listed) = (Vec::new(), 0usize);
    while let Some(at) = pending.pop_front() {
        let entries = fetch_index(client, repo, &at, budget).await?;
        listed += entries.len();
        if listed > MAX_INDEX_ENTRIES {
            let why = format!("the index and its nested indexes list more than {MAX_INDEX_ENTRIES} entries");
            return Err((RunResult::Fail, why));
        }
        for e in entries.into_iter().filter(|e| !e.attestation) {
            match e.kind {
                Kind::Manifest => out.push(e),
                Kind::Index if at.depth < MAX_INDEX_DEPTH => pending.push_back(at.nested(&e)),
                Kind::Index => return Err((RunResult::Fail, too_deep(&e))),
                Kind::Other => return Err((RunResult::Fail, unverifiable(&e))),
            }
        }
    }
    if out.is_empty() {
        return Err((RunResult::Fail, "the index lists no platform manifest".into()));
    }
    Ok(out)
}

/// Why a nested index past [`MAX_INDEX_DEPTH`] is a deny.
fn too_deep(e: &Entry) -> String {
    format!("entry {} is an index nested more than {MAX_INDEX_DEPTH} levels deep", e.digest)
}

/// Why an entry that is neither a manifest nor an index is a deny.
fn unverifiable(e: &Entry) -> String {
    let shown: String = e.media_type.chars().take(MAX_SHOWN).collect();
    format!(
        "entry {} has media type {shown:?}, neither an image manifest nor an index: it cannot be verified",
        e.digest
    )
}

/// Fetches one index, size-capped and bound to its digest, charged to the
/// budget, and parses its entries.
async fn fetch_index(
    client: &Client,
    repo: &Repository,
    at: &IndexAt,
    budget: &mut Budget,
) -> Result<Vec<Entry>, (RunResult, String)> {
    if at.size > MAX_INDEX_BYTES {
        return Err((RunResult::Fail, format!("{} is {} bytes, more than {MAX_INDEX_BYTES}", at.name(), at.size)));
    }
    if !budget.allow(at.size) {
        return Err((RunResult::Fail, format!("no budget left to fetch {}", at.name())));
    }
    let digest = at.digest.to_string();
    let index = match client.manifest_by_digest_limited(repo, &digest, at.size, budget.deadline()).await {
        Ok(m) => m,
        // Bytes that are not the index named, or more than it was said to be: a deny.
        Err(
            e @ (pullgate_registry::RegistryError::DigestMismatch { .. }
            | pullgate_registry::RegistryError::TooLarge { .. }),
        ) => {
            return Err((RunResult::Fail, format!("fetching {}: {e}", at.name())));
        }
        Err(e) => return Err((RunResult::Error, format!("fetching {}: {e}", at.name()))),
    };
    parse_index(&index.bytes).map_err(|why| (RunResult::Fail, format!("{}: {why}", at.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, platform: &str, attestation: bool) -> String {
        let (os, arch, variant) = {
            let p: Vec<&str> = platform.split('/').collect();
            (p[0], p[1], p.get(2).copied())
        };
        let v = variant.map(|v| format!(",\"variant\":\"{v}\"")).unwrap_or_default();
        let a =
            if attestation { ",\"annotations\":{\"vnd.docker.reference.type\":\"attestation-manifest\"}" } else { "" };
        format!(
            "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"sha256:{}\",\"size\":500,\"platform\":{{\"os\":\"{os}\",\"architecture\":\"{arch}\"{v}}}{a}}}",
            format!("{n:02x}").repeat(32)
        )
    }

    fn index(entries: &[String]) -> Vec<u8> {
        format!("{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}", entries.join(","))
            .into_bytes()
    }

    #[test]
    fn normalisation_follows_containerd() {
        assert_eq!(Platform::parse("linux/aarch64/v8").unwrap(), Platform::parse("linux/arm64").unwrap());
        assert_eq!(Platform::parse("Linux/x86_64/v1").unwrap().to_string(), "linux/amd64");
        assert_eq!(Platform::parse("linux/arm").unwrap().to_string(), "linux/arm/v7");
        assert_eq!(Platform::parse("linux/armhf").unwrap().to_string(), "linux/arm/v7");
        assert_eq!(Platform::parse("linux/arm64/v9").unwrap().to_string(), "linux/arm64/v9");
        for bad in ["linux", "linux/amd64/v2/x", "linux//v8", "linux/amd 64", &"x".repeat(40)] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert!(!Platform::node().to_string().is_empty());
    }

    #[test]
    fn the_node_runs_its_own_platform_first_then_compatible_ones() {
        let entries = parse_index(&index(&[
            entry(1, "linux/arm/v7", false),
            entry(2, "linux/arm64/v8", true),
            entry(3, "linux/arm64", false),
            entry(4, "linux/386", false),
            entry(5, "linux/amd64", false),
        ]))
        .unwrap();
        let pick = |p: &str| node_entry(&entries, &Platform::parse(p).unwrap()).map(|e| e.digest.to_string());
        // The annotation alone on a runnable platform: containerd picks it, listed first.
        assert_eq!(pick("linux/arm64/v8").unwrap(), format!("sha256:{}", "02".repeat(32)), "first among equals");
        assert_eq!(pick("linux/amd64").unwrap(), format!("sha256:{}", "05".repeat(32)));
        assert_eq!(pick("linux/amd64/v3").unwrap(), format!("sha256:{}", "05".repeat(32)), "v3 runs v1");
        assert_eq!(pick("linux/arm/v8").unwrap(), format!("sha256:{}", "01".repeat(32)), "arm/v8 runs arm/v7");
        assert_eq!(pick("linux/arm/v6"), None, "arm/v6 cannot run arm/v7");
        assert_eq!(pick("windows/amd64"), None);
        let only_386 = parse_index(&index(&[entry(4, "linux/386", false)])).unwrap();
        assert!(node_entry(&only_386, &Platform::parse("linux/amd64").unwrap()).is_some(), "amd64 runs 386");
    }

    #[test]
    fn hostile_indexes_are_refused() {
        assert!(parse_index(b"{").is_err());
        let bad_digest =
            format!("{{\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"sha256:zz\",\"size\":1}}]}}");
        assert!(parse_index(bad_digest.as_bytes()).unwrap_err().contains("digest"));
        let many: Vec<String> = (0..=MAX_INDEX_ENTRIES).map(|i| entry((i % 250) as u8, "linux/amd64", false)).collect();
        assert!(parse_index(&index(&many)).unwrap_err().contains("entries"));
        let huge = format!(
            "{{\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"sha256:{}\",\"size\":99999999999}}]}}",
            "a".repeat(64)
        );
        assert!(parse_index(huge.as_bytes()).unwrap_err().contains("claims"));
        let nested = format!(
            "{{\"manifests\":[{{\"mediaType\":\"{OCI_INDEX}\",\"digest\":\"sha256:{}\",\"size\":9}}]}}",
            "a".repeat(64)
        );
        let nested = parse_index(nested.as_bytes()).unwrap();
        assert_eq!(nested[0].kind, Kind::Index, "a nested index is kept, to be followed");
        let manifest = format!("{{\"config\":{{}},\"layers\":[],\"manifests\":[{}]}}", entry(1, "linux/amd64", false));
        assert!(parse_index(manifest.as_bytes()).unwrap_err().contains("not an image index"));
        let typed = format!("{{\"mediaType\":\"{OCI_MANIFEST}\",\"manifests\":[]}}");
        assert!(parse_index(typed.as_bytes()).unwrap_err().contains("not an image index"));
    }

    fn raw(n: u8, media_type: &str, platform: Option<&str>, attestation: bool) -> String {
        let p = platform.map(|p| {
            let p: Vec<&str> = p.split('/').collect();
            format!(",\"platform\":{{\"os\":\"{}\",\"architecture\":\"{}\"}}", p[0], p[1])
        });
        let a =
            if attestation { ",\"annotations\":{\"vnd.docker.reference.type\":\"attestation-manifest\"}" } else { "" };
        format!(
            "{{\"mediaType\":\"{media_type}\",\"digest\":\"sha256:{}\",\"size\":500{}{a}}}",
            format!("{n:02x}").repeat(32),
            p.unwrap_or_default()
        )
    }

    #[test]
    fn the_pick_is_containerds_whatever_the_entry_type() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let pick = |entries: &[String]| {
            let parsed = parse_index(&index(entries)).unwrap();
            node_entry(&parsed, &arm64).map(|e| (e.digest.to_string()[7..9].to_string(), e.kind))
        };
        let odd = "application/x-odd";
        // A nested index or an unknown type listed first among equals is the pick.
        assert_eq!(
            pick(&[raw(1, OCI_INDEX, Some("linux/arm64"), false), entry(2, "linux/arm64", false)]).unwrap(),
            ("01".into(), Kind::Index)
        );
        assert_eq!(
            pick(&[raw(1, odd, Some("linux/arm64"), false), entry(2, "linux/arm64", false)]).unwrap(),
            ("01".into(), Kind::Other)
        );
        // No platform sorts after every match, and is the pick when none matches.
        assert_eq!(pick(&[raw(1, OCI_MANIFEST, None, false), entry(2, "linux/arm64", false)]).unwrap().0, "02");
        assert_eq!(pick(&[raw(1, OCI_MANIFEST, None, false), entry(2, "linux/amd64", false)]).unwrap().0, "01");
        // A better rank wins over the order listed.
        assert_eq!(pick(&[entry(1, "linux/arm/v7", false), entry(2, "linux/arm64", false)]).unwrap().0, "02");
        // Attestation: the annotation and platform unknown/unknown, both.
        let parsed = parse_index(&index(&[
            raw(1, OCI_MANIFEST, Some("unknown/unknown"), true),
            raw(2, OCI_MANIFEST, Some("linux/arm64"), true),
            raw(3, OCI_MANIFEST, Some("unknown/unknown"), false),
            raw(4, "", None, false),
        ]))
        .unwrap();
        let flags: Vec<(bool, Kind)> = parsed.iter().map(|e| (e.attestation, e.kind)).collect();
        assert_eq!(
            flags,
            [(true, Kind::Manifest), (false, Kind::Manifest), (false, Kind::Manifest), (false, Kind::Other)]
        );
    }
}
