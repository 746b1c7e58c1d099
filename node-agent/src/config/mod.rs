//! The agent's config model: raw TOML in, validated types out.
//!
//! A config directory holds `pullgate.toml` (and the trust material and
//! policy files it names). [`load_dir`] reads it, parses it into [`raw`]
//! types that mirror the file, then validates everything into a [`Config`]
//! whose types cannot hold invalid values. Every problem found is reported,
//! each naming file, field and reason. The accepted config gets a generation
//! id: a hash over every file in the directory, used in reports and cache
//! keys so a policy change never reuses an old verdict.
//!
//! One file per part of the config: [`types`] (value types), [`scope`]
//! (allowlist and scopes), [`registries`], [`trust`] (Notation and
//! Sigstore), [`cache`], [`files`] (the directory walk, referenced files,
//! generation id). This module owns the whole [`Config`] and the order in
//! which the parts are validated.

mod attachments;
mod cache;
mod cluster;
mod endpoints;
mod files;
mod policy;
mod raw;
mod registries;
mod scope;
#[cfg(test)]
mod tests;
mod trust;
mod types;

pub use attachments::{Discovery, SbomPolicy, VulnerabilityPolicy};
pub use cluster::ClusterConfig;
pub use endpoints::{Endpoints, check_node_files, node_hosts_problems};
pub use files::{FileRefs, generation_id, read_tree};
pub use registries::RegistrySettings;
pub use trust::{NotationTrust, ScopeTrust, SigstoreTrust, TrustSet};
pub use types::{Action, Combine, DEFAULT_TRUST, DefaultAction, Mode, Platforms, Requirements, Scope, VerifierKind};

use pullgate_reference::Pattern;
use pullgate_wire::FailurePolicy;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The main config file inside a config directory.
pub const CONFIG_FILE: &str = "pullgate.toml";
/// Largest single file read from a config directory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Largest total size of a config directory.
pub const MAX_DIR_BYTES: u64 = 16 * 1024 * 1024;
/// Most files in a config directory.
pub const MAX_DIR_FILES: usize = 1024;
/// Most allowlist entries, scopes, or images in one scope.
pub const MAX_ENTRIES: usize = 4096;
/// Longest operator-written reason for a `deny` scope.
pub const MAX_REASON_LEN: usize = 200;

/// A validated agent config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Enforce or audit.
    pub mode: Mode,
    /// What to answer when no decision can be reached.
    pub failure_policy: FailurePolicy,
    /// Action for images no scope matches.
    pub default_action: DefaultAction,
    /// Peer uids allowed on the socket (root is only allowed when listed).
    pub allowed_uids: Vec<u32>,
    /// Images always allowed.
    pub allowlist: Vec<Pattern>,
    /// Scopes in file order; the first matching one applies.
    pub scopes: Vec<Scope>,
    /// Connection settings by registry host.
    pub registries: BTreeMap<String, RegistrySettings>,
    /// A docker `config.json` on the node to read registry credentials from.
    pub docker_config: Option<PathBuf>,
    /// containerd's hosts.toml tree, kubelet's credential providers, the registry rate.
    pub endpoints: Endpoints,
    /// Notation trust policy and trust store, when configured.
    pub notation: Option<NotationTrust>,
    /// Decision cache lifetimes and bound.
    pub cache: crate::cache::CachePolicy,
    /// Rego policies compiled for this generation (`policy`, `scopes[].policy`).
    pub policies: crate::policy::Policies,
    /// The cluster tier (`[cluster]`), when configured.
    pub cluster: Option<ClusterConfig>,
    /// Cosign / Sigstore trust (keys, roots, identities, provenance), when configured.
    pub sigstore: Option<SigstoreTrust>,
    /// SBOM discovery and rules (`[sbom]`), for scopes that require `sbom`.
    pub sbom: Option<std::sync::Arc<SbomPolicy>>,
    /// Vulnerability report discovery and rules (`[vulnerability]`).
    pub vulnerability: Option<std::sync::Arc<VulnerabilityPolicy>>,
    /// Named trust sets (`[trust.NAME]`); `notation` and `sigstore` above are the `default` set.
    pub trust: BTreeMap<String, TrustSet>,
    /// Allow everything, loudly, until a time (`breakGlass`).
    pub break_glass: Option<crate::breakglass::BreakGlass>,
    /// `nodePlatform`: the platform `index-or-node` scopes pick (default: the agent's own).
    pub node_platform: Option<crate::platform::Platform>,
}

/// A config together with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// Hash of every file in the directory (first 16 hex digits of SHA-256).
    pub generation: String,
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Non-fatal findings, e.g. allowlist entries that are not digest-pinned.
    pub warnings: Vec<Issue>,
    /// The attached-artifact verifiers' policies and trust sets, built once per generation.
    pub attachments: std::sync::Arc<crate::attached::Attachments>,
}

/// One problem in a config, located by file and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The file, relative to the config directory.
    pub file: String,
    /// Dotted field path (`scopes[1].images[0]`), or empty for the whole file.
    pub field: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.reason)
        }
    }
}

/// Why a config directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The directory or a file in it could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The directory has no `pullgate.toml`.
    #[error("{dir} has no {CONFIG_FILE}; write one (see docs/configuration.md) or point --config-dir elsewhere")]
    Missing {
        /// The config directory.
        dir: PathBuf,
    },
    /// The directory is larger than the limits allow.
    #[error("config directory {dir} is too large: {why}")]
    TooLarge {
        /// The config directory.
        dir: PathBuf,
        /// Which limit was exceeded.
        why: String,
    },
    /// One or more problems in the files.
    #[error("config in {dir} is invalid:\n{}", issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The config directory.
        dir: PathBuf,
        /// Every problem found.
        issues: Vec<Issue>,
    },
}

/// Loads and validates a config directory.
pub fn load_dir(dir: &Path) -> Result<Loaded, ConfigError> {
    let files = read_tree(dir)?;
    let Some((_, main)) = files.iter().find(|(name, _)| name == CONFIG_FILE) else {
        return Err(ConfigError::Missing { dir: dir.to_path_buf() });
    };
    let invalid = |issues| ConfigError::Invalid { dir: dir.to_path_buf(), issues };
    let (mut config, warnings, mut refs) = parse_raw(main).map_err(invalid)?;
    let policies = std::mem::take(&mut refs.policy);
    files::resolve_files(&mut config, refs, dir, &files).map_err(invalid)?;
    if let Some(c) = &mut config.cluster {
        cluster::resolve(c, &files).map_err(invalid)?;
    }
    config.policies = policy::compile(policies, &files).map_err(invalid)?;
    let attachments = crate::attached::Attachments::of(&config);
    Ok(Loaded { config, generation: generation_id(&files), dir: dir.to_path_buf(), warnings, attachments })
}

/// An issue in `pullgate.toml` at `field`.
pub(crate) fn issue(field: &str, reason: String) -> Issue {
    Issue { file: CONFIG_FILE.into(), field: field.into(), reason }
}

/// Parses and validates the text of `pullgate.toml`, returning the config
/// and its warnings, or every issue found. Files the config refers to (CA
/// bundles, Notation trust material) are not read: see [`load_dir`].
pub fn parse_main(bytes: &[u8]) -> Result<(Config, Vec<Issue>), Vec<Issue>> {
    parse_raw(bytes).map(|(c, w, _)| (c, w))
}

fn parse_raw(bytes: &[u8]) -> Result<(Config, Vec<Issue>, FileRefs), Vec<Issue>> {
    let text = std::str::from_utf8(bytes).map_err(|e| vec![issue("", format!("not UTF-8: {e}"))])?;
    let raw: raw::File = toml::from_str(text).map_err(|e| {
        let field = e.span().map(|s| files::location(text, s.start)).unwrap_or_default();
        vec![issue(&field, e.message().to_string())]
    })?;
    let mut issues = Vec::new();
    let mut warnings = Vec::new();

    let policies = policy::parse_refs(&raw, &mut issues);
    let allowed_uids = raw.allowed_uids.unwrap_or_else(|| vec![0]);
    if allowed_uids.is_empty() {
        issues.push(issue(
            "allowedUids",
            "empty list would refuse every client; list at least one uid (0 for root)".into(),
        ));
    }
    let allowlist = scope::parse_allowlist(&raw.allowlist, &mut issues, &mut warnings);
    let scopes = scope::parse_scopes(raw.scopes, &mut issues);
    let mut refs = FileRefs { policy: policies, ..FileRefs::default() };
    let registries = registries::parse_registries(raw.registries, &mut refs.ca, &mut issues, &mut warnings);
    let docker_config = registries::parse_docker_config(raw.auth, &mut issues);
    let endpoints = endpoints::parse(raw.containerd, raw.credential_providers, raw.registry_rate, &mut issues);
    refs.notation = raw.notation.as_ref().map(|n| trust::parse_notation(n, &mut issues));
    refs.sigstore = raw.sigstore.map(|sg| trust::parse_sigstore(sg, &mut issues));
    let default_trust = scope::Provides { notation: refs.notation.is_some(), sigstore: refs.sigstore.is_some() };
    let (sets, provides) = trust::parse_sets(raw.trust, default_trust, &mut issues);
    refs.trust = sets;
    scope::check_trust(&scopes, &provides, &mut issues);
    let sbom = raw.sbom.map(|s| std::sync::Arc::new(attachments::parse_sbom(s, &provides, &mut issues)));
    let vulnerability =
        raw.vulnerability.map(|v| std::sync::Arc::new(attachments::parse_vulnerability(v, &provides, &mut issues)));
    attachments::check_scopes(&scopes, sbom.is_some(), vulnerability.is_some(), &mut issues);
    let discoveries = [sbom.as_deref().map(|s| &s.discovery), vulnerability.as_deref().map(|v| &v.discovery)];
    let attachment_sets: Vec<String> =
        discoveries.into_iter().flatten().flat_map(|d| d.signed_by.clone().unwrap_or_default()).collect();
    scope::warn_unused_sets(&scopes, &provides, &attachment_sets, &mut warnings);
    let cache = cache::parse_cache(raw.cache, &mut issues);
    let cluster = cluster::parse_cluster(raw.cluster, &mut issues, &mut warnings);
    let break_glass =
        raw.break_glass.and_then(|b| crate::breakglass::parse_config(&b.until, &b.reason, &mut issues, &mut warnings));
    let node_platform = raw.node_platform.and_then(|p| {
        crate::platform::Platform::parse(&p).map_err(|e| issues.push(issue("nodePlatform", e.to_string()))).ok()
    });

    if !issues.is_empty() {
        return Err(issues);
    }
    let config = Config {
        mode: raw.mode.unwrap_or_default(),
        failure_policy: raw.failure_policy.unwrap_or_default(),
        default_action: raw.default_action.unwrap_or_default(),
        allowed_uids,
        allowlist,
        scopes,
        registries,
        docker_config,
        endpoints,
        notation: None,
        cache,
        cluster,
        policies: Default::default(),
        sigstore: None,
        sbom,
        vulnerability,
        trust: BTreeMap::new(),
        break_glass,
        node_platform,
    };
    Ok((config, warnings, refs))
}
