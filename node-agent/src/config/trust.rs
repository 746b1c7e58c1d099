//! Trust material: the Notation trust policy and store, and the Cosign /
//! Sigstore keys, roots and identities, validated and then read from the
//! config directory.

use super::files::safe_relative;
use super::raw;
use super::{CONFIG_FILE, Config, Issue, issue};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

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

/// The parts of `[sigstore]` read from files, and the rest already validated.
#[derive(Debug, Default)]
pub(super) struct SigstoreRefs {
    keys: Vec<String>,
    trusted_root: Option<String>,
    fulcio_roots: Vec<String>,
    rekor_keys: Vec<String>,
    require_tlog: bool,
    identities: Vec<pullgate_sigstore::Identity>,
    provenance: Option<pullgate_sigstore::ProvenancePolicy>,
}

/// Validates `[notation]`'s paths; returns `(trustPolicy, trustStore)` to read later.
pub(super) fn parse_notation(n: &raw::Notation, issues: &mut Vec<Issue>) -> (String, String) {
    for (field, value) in [("notation.trustPolicy", &n.trust_policy), ("notation.trustStore", &n.trust_store)] {
        if let Err(why) = safe_relative(value) {
            issues.push(issue(field, why));
        }
    }
    (n.trust_policy.clone(), n.trust_store.clone())
}

/// Validates `[sigstore]`; file references are read later by [`resolve_sigstore`].
pub(super) fn parse_sigstore(sg: raw::Sigstore, issues: &mut Vec<Issue>) -> SigstoreRefs {
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
        |field: String, exact: Option<String>, regex: Option<String>, issues: &mut Vec<Issue>| match (exact, regex) {
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
        let issuer = matcher(format!("sigstore.identities[{i}].issuer"), id.issuer, id.issuer_regex, issues);
        let subject = matcher(format!("sigstore.identities[{i}].subject"), id.subject, id.subject_regex, issues);
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
    refs_sg
}

/// Reads and checks the Notation trust policy and store into `config.notation`.
pub(super) fn resolve_notation(
    config: &mut Config,
    (policy_path, store_path): (String, String),
    dir: &Path,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) {
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
            issues.push(Issue { file: store_path.clone(), field: "notation.trustStore".into(), reason: e.to_string() });
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

/// Reads the Sigstore keys and roots into `config.sigstore`.
pub(super) fn resolve_sigstore(
    config: &mut Config,
    sg: SigstoreRefs,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) {
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
        if let Some(pem) = text(&format!("sigstore.keys[{i}]"), k, issues)
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
        text("sigstore.trustedRoot", r, issues);
    }
    for (i, f) in sg.fulcio_roots.iter().enumerate() {
        if let Some(pem) = text(&format!("sigstore.fulcioRoots[{i}]"), f, issues)
            && let Err(e) = root.add_certificate_authority_pem(f, &pem)
        {
            issues.push(Issue { file: f.clone(), field: String::new(), reason: e.to_string() });
        }
    }
    for (i, k) in sg.rekor_keys.iter().enumerate() {
        if let Some(pem) = text(&format!("sigstore.rekorKeys[{i}]"), k, issues)
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
