//! The agent's config model: raw TOML in, validated types out.
//!
//! A config directory holds `pullgate.toml` (and, as verifiers arrive, trust
//! material and policy files). [`load_dir`] reads it, parses it into
//! [`raw`] types that mirror the file, then validates everything into a
//! [`Config`] whose types cannot hold invalid values. Every problem found is
//! reported, each naming file, field and reason. The accepted config gets a
//! generation id: a hash over every file in the directory, used in reports
//! and cache keys so a policy change never reuses an old verdict.

use pullgate_reference::Pattern;
use pullgate_wire::FailurePolicy;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Enforce or only record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny what policy denies.
    #[default]
    Enforce,
    /// Allow everything, record what enforce would have denied.
    Audit,
}

impl Mode {
    /// `"enforce"` or `"audit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// Verifiers a `verify` scope can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifierKind {
    /// Notary Project signatures.
    Notation,
    /// Cosign signatures (key or keyless).
    Cosign,
    /// Sigstore bundles and in-toto attestations.
    Sigstore,
    /// SBOM license and package rules.
    Sbom,
    /// Vulnerability report rules.
    Vulnerability,
}

impl VerifierKind {
    /// The name used in config files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifierKind::Notation => "notation",
            VerifierKind::Cosign => "cosign",
            VerifierKind::Sigstore => "sigstore",
            VerifierKind::Sbom => "sbom",
            VerifierKind::Vulnerability => "vulnerability",
        }
    }
}

/// How the required verifiers of a scope combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Every required verifier must pass.
    #[default]
    All,
    /// One passing verifier is enough.
    Any,
}

/// What verification a `verify` scope requires. Holds at least one verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    verifiers: Vec<VerifierKind>,
    combine: Combine,
}

impl Requirements {
    /// The required verifiers, never empty, without duplicates.
    pub fn verifiers(&self) -> &[VerifierKind] {
        &self.verifiers
    }

    /// How they combine.
    pub fn combine(&self) -> Combine {
        self.combine
    }
}

/// What a scope does with the images it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Allow without verification.
    Allow,
    /// Deny, with an optional operator-written reason.
    Deny {
        /// Shown to the user in the verifier's line.
        reason: Option<String>,
    },
    /// Verify with these requirements.
    Verify(Requirements),
}

impl Action {
    /// `"allow"`, `"deny"` or `"verify"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny { .. } => "deny",
            Action::Verify(_) => "verify",
        }
    }
}

/// A named rule: images it covers and what to do with them.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Unique name, shown in reports.
    pub name: String,
    /// Patterns; never empty.
    pub images: Vec<Pattern>,
    /// What to do.
    pub action: Action,
}

/// The action for images no scope matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Allow unmatched images.
    Allow,
    /// Deny unmatched images (the default).
    #[default]
    Deny,
}

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
    /// Notation trust policy and trust store, when configured.
    pub notation: Option<NotationTrust>,
    /// Decision cache lifetimes and bound.
    pub cache: crate::cache::CachePolicy,
    /// Cosign / Sigstore trust (keys, roots, identities, provenance), when configured.
    pub sigstore: Option<SigstoreTrust>,
}

/// Cosign signature and Sigstore bundle policies built from `[sigstore]`.
#[derive(Clone)]
pub struct SigstoreTrust {
    /// For cosign `.sig` signatures.
    pub cosign: Arc<pullgate_sigstore::CosignPolicy>,
    /// For Sigstore bundles (signatures and attestations) attached as referrers.
    pub bundle: Arc<pullgate_sigstore::BundlePolicy>,
}

impl fmt::Debug for SigstoreTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigstoreTrust")
            .field("keys", &self.cosign.keys.len())
            .field("identities", &self.cosign.identities.len())
            .field("require_tlog", &self.cosign.require_tlog)
            .finish_non_exhaustive()
    }
}

/// How to reach one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Plain HTTP. Only for registries explicitly listed as insecure.
    pub insecure: bool,
    /// Extra CA certificates (PEM) for this registry's TLS, read from the config directory.
    pub ca_pem: Option<Vec<u8>>,
    /// Most concurrent requests to it.
    pub max_concurrency: Option<usize>,
}

/// The Notation CLI's trust policy and trust store, loaded and validated.
#[derive(Clone)]
pub struct NotationTrust {
    /// `trustpolicy.json`.
    pub policy: Arc<pullgate_notation::TrustPolicyDocument>,
    /// The `x509/{ca,signingAuthority,tsa}/<name>/` store.
    pub store: Arc<pullgate_notation::TrustStore>,
}

impl fmt::Debug for NotationTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.policy.policies().iter().map(|p| p.name()).collect();
        f.debug_struct("NotationTrust").field("policies", &names).finish_non_exhaustive()
    }
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

mod raw {
    //! Serde mirror of `pullgate.toml`, before validation.
    use super::{Combine, DefaultAction, Mode, VerifierKind};
    use pullgate_wire::FailurePolicy;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct File {
        pub mode: Option<Mode>,
        pub failure_policy: Option<FailurePolicy>,
        pub default_action: Option<DefaultAction>,
        pub allowed_uids: Option<Vec<u32>>,
        #[serde(default)]
        pub allowlist: Vec<String>,
        #[serde(default)]
        pub scopes: Vec<Scope>,
        #[serde(default)]
        pub registries: std::collections::BTreeMap<String, Registry>,
        pub auth: Option<Auth>,
        pub notation: Option<Notation>,
        pub cache: Option<Cache>,
        pub sigstore: Option<Sigstore>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Sigstore {
        #[serde(default)]
        pub keys: Vec<String>,
        pub trusted_root: Option<String>,
        #[serde(default)]
        pub fulcio_roots: Vec<String>,
        #[serde(default)]
        pub rekor_keys: Vec<String>,
        pub require_tlog: Option<bool>,
        #[serde(default)]
        pub identities: Vec<Identity>,
        pub provenance: Option<Provenance>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Identity {
        pub issuer: Option<String>,
        pub issuer_regex: Option<String>,
        pub subject: Option<String>,
        pub subject_regex: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Provenance {
        pub builder_id: Option<String>,
        pub source_repository: Option<String>,
        pub build_type: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Cache {
        pub allow_ttl: Option<String>,
        pub deny_ttl: Option<String>,
        pub error_ttl: Option<String>,
        pub max_entries: Option<usize>,
        pub content_max_bytes: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Registry {
        pub insecure: Option<bool>,
        pub ca: Option<String>,
        pub max_concurrency: Option<usize>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Auth {
        pub docker_config: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Notation {
        pub trust_policy: String,
        pub trust_store: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Scope {
        pub name: String,
        pub images: Vec<String>,
        pub action: ActionKind,
        pub reason: Option<String>,
        pub verify: Option<Verify>,
    }

    #[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum ActionKind {
        Allow,
        Deny,
        Verify,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Verify {
        pub require: Vec<VerifierKind>,
        #[serde(rename = "match")]
        pub combine: Option<Combine>,
    }
}

/// Loads and validates a config directory.
pub fn load_dir(dir: &Path) -> Result<Loaded, ConfigError> {
    let files = read_tree(dir)?;
    let Some((_, main)) = files.iter().find(|(name, _)| name == CONFIG_FILE) else {
        return Err(ConfigError::Missing { dir: dir.to_path_buf() });
    };
    let invalid = |issues| ConfigError::Invalid { dir: dir.to_path_buf(), issues };
    let (mut config, warnings, refs) = parse_raw(main).map_err(invalid)?;
    resolve_files(&mut config, refs, dir, &files).map_err(invalid)?;
    Ok(Loaded { config, generation: generation_id(&files), dir: dir.to_path_buf(), warnings })
}

/// Files `pullgate.toml` refers to, resolved against the config directory by [`resolve_files`].
#[derive(Debug, Default)]
pub struct FileRefs {
    /// `registries.<host>.ca` paths by host.
    ca: Vec<(String, String)>,
    /// `notation.trustPolicy` and `notation.trustStore`.
    notation: Option<(String, String)>,
    /// `[sigstore]` file references and the policy parts that need no files.
    sigstore: Option<SigstoreRefs>,
}

/// The parts of `[sigstore]` read from files, and the rest already validated.
#[derive(Debug, Default)]
struct SigstoreRefs {
    keys: Vec<String>,
    trusted_root: Option<String>,
    fulcio_roots: Vec<String>,
    rekor_keys: Vec<String>,
    require_tlog: bool,
    identities: Vec<pullgate_sigstore::Identity>,
    provenance: Option<pullgate_sigstore::ProvenancePolicy>,
}

/// Parses and validates the text of `pullgate.toml`, returning the config
/// and its warnings, or every issue found. Files the config refers to (CA
/// bundles, Notation trust material) are not read: see [`load_dir`].
pub fn parse_main(bytes: &[u8]) -> Result<(Config, Vec<Issue>), Vec<Issue>> {
    parse_raw(bytes).map(|(c, w, _)| (c, w))
}

fn parse_raw(bytes: &[u8]) -> Result<(Config, Vec<Issue>, FileRefs), Vec<Issue>> {
    let issue = |field: &str, reason: String| Issue { file: CONFIG_FILE.into(), field: field.into(), reason };
    let text = std::str::from_utf8(bytes).map_err(|e| vec![issue("", format!("not UTF-8: {e}"))])?;
    let raw: raw::File = toml::from_str(text).map_err(|e| {
        let field = e.span().map(|s| location(text, s.start)).unwrap_or_default();
        vec![issue(&field, e.message().to_string())]
    })?;
    let mut issues = Vec::new();
    let mut warnings = Vec::new();

    let allowed_uids = raw.allowed_uids.unwrap_or_else(|| vec![0]);
    if allowed_uids.is_empty() {
        issues.push(issue(
            "allowedUids",
            "empty list would refuse every client; list at least one uid (0 for root)".into(),
        ));
    }
    if raw.allowlist.len() > MAX_ENTRIES {
        issues.push(issue("allowlist", format!("{} entries, more than {MAX_ENTRIES}", raw.allowlist.len())));
    }
    let mut allowlist = Vec::new();
    for (i, entry) in raw.allowlist.iter().enumerate() {
        let field = format!("allowlist[{i}]");
        match Pattern::parse(entry) {
            Ok(p) => {
                if !p.is_digest_pinned() {
                    warnings.push(issue(
                        &field,
                        format!(
                            "{entry:?} is not digest-pinned: anyone who can push to that repository gets images allowed; pin @sha256:… where you can"
                        ),
                    ));
                }
                allowlist.push(p);
            }
            Err(e) => issues.push(issue(&field, e.to_string())),
        }
    }

    if raw.scopes.len() > MAX_ENTRIES {
        issues.push(issue("scopes", format!("{} scopes, more than {MAX_ENTRIES}", raw.scopes.len())));
    }
    let mut scopes = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, s) in raw.scopes.into_iter().enumerate() {
        let at = |f: &str| format!("scopes[{i}].{f}");
        let before = issues.len();
        if s.name.is_empty()
            || s.name.len() > 64
            || !s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            issues.push(issue(&at("name"), format!("{:?} must be 1-64 characters of letters, digits, - _ .", s.name)));
        } else if !names.insert(s.name.clone()) {
            issues.push(issue(&at("name"), format!("{:?} is used by an earlier scope; names must be unique", s.name)));
        }
        if s.images.is_empty() {
            issues.push(issue(&at("images"), "empty; a scope needs at least one image pattern".into()));
        }
        if s.images.len() > MAX_ENTRIES {
            issues.push(issue(&at("images"), format!("{} patterns, more than {MAX_ENTRIES}", s.images.len())));
        }
        let mut images = Vec::new();
        for (j, img) in s.images.iter().enumerate() {
            match Pattern::parse(img) {
                Ok(p) => images.push(p),
                Err(e) => issues.push(issue(&format!("scopes[{i}].images[{j}]"), e.to_string())),
            }
        }
        let action = match s.action {
            raw::ActionKind::Allow | raw::ActionKind::Verify if s.reason.is_some() => {
                issues.push(issue(&at("reason"), "only a deny scope takes a reason".into()));
                None
            }
            raw::ActionKind::Allow | raw::ActionKind::Deny if s.verify.is_some() => {
                issues.push(issue(&at("verify"), "only a scope with action = \"verify\" takes a verify table".into()));
                None
            }
            raw::ActionKind::Allow => Some(Action::Allow),
            raw::ActionKind::Deny => match s.reason {
                Some(r) if r.len() > MAX_REASON_LEN || r.chars().any(char::is_control) => {
                    issues.push(issue(&at("reason"), format!("must be one line of at most {MAX_REASON_LEN} bytes")));
                    None
                }
                reason => Some(Action::Deny { reason }),
            },
            raw::ActionKind::Verify => match s.verify {
                None => {
                    issues.push(issue(
                        &at("verify"),
                        "action = \"verify\" needs a verify table with require = [...]".into(),
                    ));
                    None
                }
                Some(v) if v.require.is_empty() => {
                    issues.push(issue(&at("verify.require"), "empty; name at least one verifier".into()));
                    None
                }
                Some(v) => {
                    let mut verifiers = Vec::new();
                    for k in v.require {
                        if matches!(k, VerifierKind::Sbom | VerifierKind::Vulnerability) {
                            issues.push(issue(
                                &at("verify.require"),
                                format!(
                                    "{} verification is not available in this version; every pull would go to the failure policy. Remove it",
                                    k.as_str()
                                ),
                            ));
                        } else if verifiers.contains(&k) {
                            issues.push(issue(&at("verify.require"), format!("{} is listed twice", k.as_str())));
                        } else {
                            verifiers.push(k);
                        }
                    }
                    Some(Action::Verify(Requirements { verifiers, combine: v.combine.unwrap_or_default() }))
                }
            },
        };
        if issues.len() == before
            && let Some(action) = action
        {
            scopes.push(Scope { name: s.name, images, action });
        }
    }

    let mut refs = FileRefs::default();
    let mut registries = BTreeMap::new();
    for (host, r) in raw.registries {
        let at = |f: &str| format!("registries.\"{host}\".{f}");
        let probe = format!("{host}/x");
        match pullgate_reference::Reference::parse(&probe) {
            Ok(parsed) if parsed.host() == host => {}
            Ok(parsed) => issues.push(issue(
                &format!("registries.\"{host}\""),
                format!(
                    "not a registry host[:port] in canonical form (lower case, no :443, Docker Hub as docker.io); write {:?}",
                    parsed.host()
                ),
            )),
            Err(e) => issues.push(issue(&format!("registries.\"{host}\""), format!("not a registry host[:port]: {e}"))),
        }
        if let Some(n) = r.max_concurrency
            && !(1..=256).contains(&n)
        {
            issues.push(issue(&at("maxConcurrency"), format!("{n} is outside 1..=256")));
        }
        if let Some(ca) = &r.ca {
            match safe_relative(ca) {
                Ok(()) => refs.ca.push((host.clone(), ca.clone())),
                Err(why) => issues.push(issue(&at("ca"), why)),
            }
        }
        if r.insecure == Some(true) {
            warnings.push(issue(
                &at("insecure"),
                "plain HTTP: signatures still verify, but requests and any credentials configured for it cross the network in clear text".into(),
            ));
        }
        registries.insert(
            host,
            RegistrySettings {
                insecure: r.insecure.unwrap_or(false),
                ca_pem: None,
                max_concurrency: r.max_concurrency,
            },
        );
    }
    let docker_config = match raw.auth.and_then(|a| a.docker_config) {
        Some(p) if Path::new(&p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => {
            issues.push(issue("auth.dockerConfig", format!("{p:?} must be an absolute path on the node")));
            None
        }
        None => None,
    };
    if let Some(n) = &raw.notation {
        for (field, value) in [("notation.trustPolicy", &n.trust_policy), ("notation.trustStore", &n.trust_store)] {
            if let Err(why) = safe_relative(value) {
                issues.push(issue(field, why));
            }
        }
        refs.notation = Some((n.trust_policy.clone(), n.trust_store.clone()));
    }
    if let Some(sg) = raw.sigstore {
        let mut refs_sg = SigstoreRefs { require_tlog: sg.require_tlog.unwrap_or(true), ..Default::default() };
        for (field, list) in [
            ("sigstore.keys", &sg.keys),
            ("sigstore.fulcioRoots", &sg.fulcio_roots),
            ("sigstore.rekorKeys", &sg.rekor_keys),
        ] {
            for (i, p) in list.iter().enumerate() {
                if let Err(why) = safe_relative(p) {
                    issues.push(issue(&format!("{field}[{i}]"), why));
                }
            }
        }
        if let Some(p) = &sg.trusted_root
            && let Err(why) = safe_relative(p)
        {
            issues.push(issue("sigstore.trustedRoot", why));
        }
        let matcher =
            |field: String, exact: Option<String>, regex: Option<String>, issues: &mut Vec<Issue>| match (exact, regex)
            {
                (Some(v), None) => Some(pullgate_sigstore::Matcher::exact(v)),
                (None, Some(r)) => match pullgate_sigstore::Matcher::regex(&r) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        issues.push(issue(&field, format!("{r:?}: {e}")));
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    issues.push(issue(&field, "give the exact value or the regex, not both".into()));
                    None
                }
                (None, None) => {
                    issues.push(issue(&field, "missing: give the exact value or a regex (always anchored)".into()));
                    None
                }
            };
        for (i, id) in sg.identities.into_iter().enumerate() {
            let issuer = matcher(format!("sigstore.identities[{i}].issuer"), id.issuer, id.issuer_regex, &mut issues);
            let subject =
                matcher(format!("sigstore.identities[{i}].subject"), id.subject, id.subject_regex, &mut issues);
            if let (Some(issuer), Some(subject)) = (issuer, subject) {
                refs_sg.identities.push(pullgate_sigstore::Identity::new(issuer, subject));
            }
        }
        if refs_sg.require_tlog && sg.trusted_root.is_none() && sg.rekor_keys.is_empty() {
            issues.push(issue(
                "sigstore.requireTlog",
                "a transparency log entry is required (the default) but no Rekor key is configured: set rekorKeys or trustedRoot, or requireTlog = false".into(),
            ));
        }
        if sg.keys.is_empty() && refs_sg.identities.is_empty() {
            issues.push(issue("sigstore", "name at least one key (keys) or keyless identity (identities)".into()));
        }
        if !refs_sg.identities.is_empty() && sg.trusted_root.is_none() && sg.fulcio_roots.is_empty() {
            issues.push(issue(
                "sigstore.identities",
                "keyless identities need Fulcio roots: set trustedRoot (a Sigstore trusted_root.json) or fulcioRoots"
                    .into(),
            ));
        }
        refs_sg.provenance = sg.provenance.map(|p| pullgate_sigstore::ProvenancePolicy {
            builder_id: p.builder_id.map(pullgate_sigstore::Matcher::exact),
            source_repository: p.source_repository.map(pullgate_sigstore::Matcher::exact),
            build_type: p.build_type.map(pullgate_sigstore::Matcher::exact),
        });
        refs_sg.keys = sg.keys;
        refs_sg.trusted_root = sg.trusted_root;
        refs_sg.fulcio_roots = sg.fulcio_roots;
        refs_sg.rekor_keys = sg.rekor_keys;
        refs.sigstore = Some(refs_sg);
    }
    for (i, s) in scopes.iter().enumerate() {
        if let Action::Verify(r) = &s.action
            && (r.verifiers().contains(&VerifierKind::Cosign) || r.verifiers().contains(&VerifierKind::Sigstore))
            && refs.sigstore.is_none()
        {
            issues.push(issue(
                &format!("scopes[{i}].verify.require"),
                "cosign and sigstore need a [sigstore] table with keys or identities".into(),
            ));
        }
    }
    for (i, s) in scopes.iter().enumerate() {
        if let Action::Verify(r) = &s.action
            && r.verifiers().contains(&VerifierKind::Notation)
            && raw.notation.is_none()
        {
            issues.push(issue(
                &format!("scopes[{i}].verify.require"),
                "notation needs a [notation] table with trustPolicy and trustStore".into(),
            ));
        }
    }

    let mut cache = crate::cache::CachePolicy::default();
    if let Some(c) = raw.cache {
        let mut ttl = |field: &str, value: Option<String>, max: std::time::Duration, slot: &mut std::time::Duration| {
            let Some(v) = value else { return };
            match humantime::parse_duration(&v) {
                Ok(d) if d <= max => *slot = d,
                Ok(_) => issues.push(issue(field, format!("{v:?} is longer than {}", humantime::format_duration(max)))),
                Err(e) => issues.push(issue(field, format!("{v:?} is not a duration like \"30s\" or \"1h\": {e}"))),
            }
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        ttl("cache.allowTtl", c.allow_ttl, day, &mut cache.allow_ttl);
        ttl("cache.denyTtl", c.deny_ttl, day, &mut cache.deny_ttl);
        ttl("cache.errorTtl", c.error_ttl, crate::cache::MAX_ERROR_TTL, &mut cache.error_ttl);
        if let Some(n) = c.max_entries {
            if (100..=10_000_000).contains(&n) {
                cache.max_entries = n;
            } else {
                issues.push(issue("cache.maxEntries", format!("{n} is outside 100..=10000000")));
            }
        }
        if let Some(n) = c.content_max_bytes {
            if n <= crate::cache::MAX_CONTENT_STORE_BYTES {
                cache.content_max_bytes = n;
            } else {
                let max = crate::cache::MAX_CONTENT_STORE_BYTES;
                issues.push(issue("cache.contentMaxBytes", format!("{n} is outside 0..={max} (bytes)")));
            }
        }
    }

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
        notation: None,
        cache,
        sigstore: None,
    };
    Ok((config, warnings, refs))
}

/// A path inside the config directory: relative, no `..`, no empty or dot components.
fn safe_relative(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c.starts_with('.')) {
        return Err(format!(
            "{p:?} must be a relative path inside the config directory, with no component starting with ."
        ));
    }
    Ok(())
}

/// Reads the files the config refers to: CA bundles from the in-memory file
/// set, Notation trust material from the directory.
fn resolve_files(
    config: &mut Config,
    refs: FileRefs,
    dir: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<(), Vec<Issue>> {
    let mut issues = Vec::new();
    let file = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone());
    for (host, ca) in refs.ca {
        match file(&ca) {
            Some(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                if let Some(r) = config.registries.get_mut(&host) {
                    r.ca_pem = Some(pem);
                }
            }
            Some(_) => issues.push(Issue {
                file: ca.clone(),
                field: String::new(),
                reason: format!("not a PEM certificate bundle (registries.\"{host}\".ca)"),
            }),
            None => issues.push(Issue {
                file: CONFIG_FILE.into(),
                field: format!("registries.\"{host}\".ca"),
                reason: format!("{ca} does not exist in the config directory"),
            }),
        }
    }
    if let Some((policy_path, store_path)) = refs.notation {
        let policy = match file(&policy_path) {
            Some(bytes) => match pullgate_notation::TrustPolicyDocument::parse(&bytes) {
                Ok(p) => Some(p),
                Err(e) => {
                    issues.push(Issue { file: policy_path.clone(), field: String::new(), reason: e.to_string() });
                    None
                }
            },
            None => {
                issues.push(Issue {
                    file: CONFIG_FILE.into(),
                    field: "notation.trustPolicy".into(),
                    reason: format!("{policy_path} does not exist in the config directory"),
                });
                None
            }
        };
        let store = match pullgate_notation::TrustStore::load(&dir.join(&store_path)) {
            Ok(s) => Some(s),
            Err(e) => {
                issues.push(Issue {
                    file: store_path.clone(),
                    field: "notation.trustStore".into(),
                    reason: e.to_string(),
                });
                None
            }
        };
        if let (Some(policy), Some(store)) = (policy, store) {
            // Every store a policy names must exist, or verification would fail at pull time.
            for p in policy.policies() {
                for r in p.trust_stores() {
                    if store.certificates(r).is_none_or(|c| c.is_empty()) {
                        issues.push(Issue {
                            file: policy_path.clone(),
                            field: format!("trustPolicies[{}].trustStores", p.name()),
                            reason: format!("trust store {r} has no certificates under {store_path}/x509/"),
                        });
                    }
                }
            }
            config.notation = Some(NotationTrust { policy: Arc::new(policy), store: Arc::new(store) });
        }
    }
    if let Some(sg) = refs.sigstore {
        let text = |field: &str, name: &str, issues: &mut Vec<Issue>| -> Option<String> {
            match file(name).map(String::from_utf8) {
                Some(Ok(t)) => Some(t),
                Some(Err(_)) => {
                    issues.push(Issue { file: name.into(), field: String::new(), reason: "not UTF-8 text".into() });
                    None
                }
                None => {
                    issues.push(Issue {
                        file: CONFIG_FILE.into(),
                        field: field.into(),
                        reason: format!("{name} does not exist in the config directory"),
                    });
                    None
                }
            }
        };
        let mut keys = pullgate_sigstore::PublicKeys::new();
        for (i, k) in sg.keys.iter().enumerate() {
            if let Some(pem) = text(&format!("sigstore.keys[{i}]"), k, &mut issues)
                && let Err(e) = keys.add_pem(k, &pem)
            {
                issues.push(Issue { file: k.clone(), field: String::new(), reason: e.to_string() });
            }
        }
        let mut root = pullgate_sigstore::TrustedRoot::new();
        if let Some(r) = &sg.trusted_root
            && let Some(bytes) = file(r)
        {
            match pullgate_sigstore::TrustedRoot::parse(&bytes) {
                Ok(t) => root = t,
                Err(e) => issues.push(Issue { file: r.clone(), field: String::new(), reason: e.to_string() }),
            }
        } else if let Some(r) = &sg.trusted_root {
            text("sigstore.trustedRoot", r, &mut issues);
        }
        for (i, f) in sg.fulcio_roots.iter().enumerate() {
            if let Some(pem) = text(&format!("sigstore.fulcioRoots[{i}]"), f, &mut issues)
                && let Err(e) = root.add_certificate_authority_pem(f, &pem)
            {
                issues.push(Issue { file: f.clone(), field: String::new(), reason: e.to_string() });
            }
        }
        for (i, k) in sg.rekor_keys.iter().enumerate() {
            if let Some(pem) = text(&format!("sigstore.rekorKeys[{i}]"), k, &mut issues)
                && let Err(e) = root.add_tlog_key_pem(k, &pem)
            {
                issues.push(Issue { file: k.clone(), field: String::new(), reason: e.to_string() });
            }
        }
        let cosign = pullgate_sigstore::CosignPolicy {
            keys: keys.clone(),
            identities: sg.identities.clone(),
            trusted_root: root.clone(),
            require_tlog: sg.require_tlog,
        };
        let bundle = pullgate_sigstore::BundlePolicy {
            trusted_root: root,
            identities: sg.identities,
            keys,
            require_tlog: sg.require_tlog,
            provenance: sg.provenance,
        };
        config.sigstore = Some(SigstoreTrust { cosign: Arc::new(cosign), bundle: Arc::new(bundle) });
    }
    if issues.is_empty() { Ok(()) } else { Err(issues) }
}

/// `line L, column C` for a byte offset, for parse errors.
fn location(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// Reads every regular file under `dir` (following symlinks, skipping names
/// starting with `..`, where ConfigMap volumes keep their `..data`
/// machinery), sorted by relative path, within the size limits.
pub fn read_tree(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, rel, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // `..data` and `..<timestamp>` are a ConfigMap volume's own
            // machinery (the keys are symlinks into them). Other dot files
            // count: a trust store reads them, so the generation must too.
            if name.starts_with("..") {
                continue;
            }
            let full = entry.path();
            let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let meta = std::fs::metadata(&full).map_err(|source| ConfigError::Read { path: full.clone(), source })?;
            if meta.is_dir() {
                if depth >= 8 {
                    return Err(ConfigError::TooLarge {
                        dir: dir.into(),
                        why: format!("{child_rel} is nested more than 8 levels deep"),
                    });
                }
                stack.push((full, child_rel, depth + 1));
            } else if meta.is_file() {
                if meta.len() > MAX_FILE_BYTES {
                    return Err(ConfigError::TooLarge {
                        dir: dir.into(),
                        why: format!("{child_rel} is {} bytes, more than {MAX_FILE_BYTES}", meta.len()),
                    });
                }
                total += meta.len();
                if total > MAX_DIR_BYTES || out.len() >= MAX_DIR_FILES {
                    return Err(ConfigError::TooLarge {
                        dir: dir.into(),
                        why: format!("more than {MAX_DIR_FILES} files or {MAX_DIR_BYTES} bytes"),
                    });
                }
                let bytes = std::fs::read(&full).map_err(|source| ConfigError::Read { path: full.clone(), source })?;
                out.push((child_rel, bytes));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The generation id of a set of files: SHA-256 over each path and content,
/// length-prefixed so no two different sets hash the same input.
pub fn generation_id(files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in files {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Config, Vec<Issue>) {
        parse_main(s.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }
    fn bad(s: &str) -> Vec<String> {
        parse_main(s.as_bytes()).expect_err("should be invalid").iter().map(ToString::to_string).collect()
    }

    #[test]
    fn registry_keys_must_be_canonical_hosts() {
        let errs = bad("[registries.\"ghcr.io:443\"]\n[registries.\"localhost:05000\"]\n");
        assert!(
            errs.iter().any(|e| e.contains("registries.\"ghcr.io:443\"") && e.contains("write \"ghcr.io\"")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("localhost:05000") && e.contains("leading zeros")), "{errs:?}");
        ok("[registries.\"localhost:5000\"]\n[registries.\"[::1]:5000\"]\n");
    }

    #[test]
    fn content_store_bound_in_bytes() {
        assert_eq!(ok("").0.cache.content_max_bytes, crate::cache::DEFAULT_CONTENT_MAX_BYTES);
        assert_eq!(ok("[cache]\ncontentMaxBytes = 1048576\n").0.cache.content_max_bytes, 1_048_576);
        assert_eq!(ok("[cache]\ncontentMaxBytes = 0\n").0.cache.content_max_bytes, 0);
        let errs = bad("[cache]\ncontentMaxBytes = 99999999999999\n");
        assert!(errs.iter().any(|e| e.contains("cache.contentMaxBytes") && e.contains("99999999999999")), "{errs:?}");
    }

    #[test]
    fn defaults() {
        let (c, w) = ok("");
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.failure_policy, FailurePolicy::Closed);
        assert_eq!(c.default_action, DefaultAction::Deny);
        assert_eq!(c.allowed_uids, vec![0]);
        assert!(w.is_empty());
    }

    #[test]
    fn full_config() {
        let (c, w) = ok(r#"
            mode = "audit"
            notation = { trustPolicy = "n/trustpolicy.json", trustStore = "n/store" }
            sigstore = { keys = ["k/cosign.pub"], requireTlog = false }
            failurePolicy = "open"
            defaultAction = "allow"
            allowedUids = [0, 1000]
            allowlist = ["registry.k8s.io/pause:3.10", "ghcr.io/acme/agent@sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9"]
            [[scopes]]
            name = "acme"
            images = ["ghcr.io/acme/**"]
            action = "verify"
            verify = { require = ["notation", "cosign"], match = "any" }
            [[scopes]]
            name = "hub"
            images = ["docker.io/**"]
            action = "deny"
            reason = "pull through the mirror"
        "#);
        assert_eq!(c.mode, Mode::Audit);
        assert_eq!(c.scopes.len(), 2);
        match &c.scopes[0].action {
            Action::Verify(r) => {
                assert_eq!(r.verifiers(), &[VerifierKind::Notation, VerifierKind::Cosign]);
                assert_eq!(r.combine(), Combine::Any);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.len(), 1, "the tag entry warns, the pinned one does not");
        assert_eq!(w[0].field, "allowlist[0]");
    }

    #[test]
    fn every_issue_reported_with_field() {
        let e = bad(r#"
            allowedUids = []
            allowlist = ["*.io/x", "ok.io/y"]
            [[scopes]]
            name = "a"
            images = []
            action = "verify"
            [[scopes]]
            name = "a"
            images = ["ghcr.io/acme-evil/**", "ghcr.io/**/x"]
            action = "allow"
            reason = "no"
        "#);
        let joined = e.join("\n");
        for needle in [
            "pullgate.toml: allowedUids:",
            "allowlist[0]",
            "scopes[0].images: empty",
            "scopes[0].verify:",
            "scopes[1].name: \"a\" is used",
            "scopes[1].images[1]",
            "scopes[1].reason",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in\n{joined}");
        }
    }

    #[test]
    fn sigstore_table_is_validated() {
        let e = bad(r#"
            [[scopes]]
            name = "c"
            images = ["ghcr.io/acme/**"]
            action = "verify"
            verify = { require = ["cosign"] }
        "#)
        .join("\n");
        assert!(e.contains("scopes[0].verify.require: cosign and sigstore need a [sigstore] table"), "{e}");
        let e = bad(r#"
            [sigstore]
            identities = [
                { issuer = "https://token.actions.githubusercontent.com", subjectRegex = "(" },
                { issuer = "x", subject = "y", subjectRegex = "z" },
                { subject = "y" },
                { issuer = "https://accounts.google.com", subject = "ci@example.com" },
            ]
            keys = ["../escape.pub"]
        "#)
        .join("\n");
        for needle in [
            "sigstore.identities[0].subject",
            "sigstore.identities[1].subject: give the exact value or the regex, not both",
            "sigstore.identities[2].issuer: missing",
            "sigstore.keys[0]",
            "sigstore.identities: keyless identities need Fulcio roots",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in\n{e}");
        }
    }

    #[test]
    fn parse_errors_name_location_and_field() {
        let e = bad("mode = \"enforce\"\nmodee = 1\n").join("\n");
        assert!(e.contains("line 2") && e.contains("modee"), "{e}");
        let e = bad("mode = \"strict\"").join("\n");
        assert!(e.contains("strict") && e.contains("line 1"), "{e}");
        let e = bad("[[scopes]]\nname='x'\nimages=['a']\naction='verify'\nverify={require=['pgp']}").join("\n");
        assert!(e.contains("pgp"), "{e}");
    }

    #[test]
    fn generation_changes_with_any_file() {
        let a = vec![("pullgate.toml".to_string(), b"x".to_vec())];
        let mut b = a.clone();
        b.push(("trust/ca.pem".into(), b"y".to_vec()));
        assert_ne!(generation_id(&a), generation_id(&b));
        assert_eq!(generation_id(&a), generation_id(&a.clone()));
        let c = vec![("pullgate.tom".to_string(), b"lx".to_vec())];
        assert_ne!(generation_id(&a), generation_id(&c));
    }

    #[test]
    fn load_dir_reads_and_skips_dotfiles() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load_dir(dir.path()), Err(ConfigError::Missing { .. })));
        std::fs::write(dir.path().join(CONFIG_FILE), "mode = \"audit\"").unwrap();
        let g1 = load_dir(dir.path()).unwrap().generation;
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("..data/x"), "ignored").unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().generation, g1);
        std::fs::write(dir.path().join("extra.rego"), "package x").unwrap();
        let g2 = load_dir(dir.path()).unwrap().generation;
        assert_ne!(g2, g1);
        // A dot file inside a trust store is read by the store, so it changes the generation.
        std::fs::create_dir_all(dir.path().join("store/x509/ca/a")).unwrap();
        std::fs::write(dir.path().join("store/x509/ca/a/.old.pem"), "x").unwrap();
        assert_ne!(load_dir(dir.path()).unwrap().generation, g2);
    }
}
