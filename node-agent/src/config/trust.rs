//! Trust material: the Notation trust policy and store, and the Cosign /
//! Sigstore keys, roots and identities, validated and then read from the
//! config directory.

use super::files::safe_relative;
use super::raw;
use super::scope::Provides;
use super::types::{DEFAULT_TRUST, Requirements};
use super::{CONFIG_FILE, Config, Issue, MAX_ENTRIES, issue};
use std::collections::BTreeMap;
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
    parse_notation_at(n, "notation", issues)
}

/// [`parse_notation`] for the table at field path `at`.
fn parse_notation_at(n: &raw::Notation, at: &str, issues: &mut Vec<Issue>) -> (String, String) {
    for (field, value) in [("trustPolicy", &n.trust_policy), ("trustStore", &n.trust_store)] {
        if let Err(why) = safe_relative(value) {
            issues.push(issue(&format!("{at}.{field}"), why));
        }
    }
    (n.trust_policy.clone(), n.trust_store.clone())
}

/// Validates `[sigstore]`; file references are read later by [`resolve_sigstore`].
pub(super) fn parse_sigstore(sg: raw::Sigstore, issues: &mut Vec<Issue>) -> SigstoreRefs {
    parse_sigstore_at(sg, "sigstore", issues)
}

/// [`parse_sigstore`] for the table at field path `at`.
fn parse_sigstore_at(sg: raw::Sigstore, at: &str, issues: &mut Vec<Issue>) -> SigstoreRefs {
    let mut refs_sg = SigstoreRefs { require_tlog: sg.require_tlog.unwrap_or(true), ..Default::default() };
    for (field, list) in [("keys", &sg.keys), ("fulcioRoots", &sg.fulcio_roots), ("rekorKeys", &sg.rekor_keys)] {
        for (i, p) in list.iter().enumerate() {
            if let Err(why) = safe_relative(p) {
                issues.push(issue(&format!("{at}.{field}[{i}]"), why));
            }
        }
    }
    if let Some(p) = &sg.trusted_root
        && let Err(why) = safe_relative(p)
    {
        issues.push(issue(&format!("{at}.trustedRoot"), why));
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
        let issuer = matcher(format!("{at}.identities[{i}].issuer"), id.issuer, id.issuer_regex, issues);
        let subject = matcher(format!("{at}.identities[{i}].subject"), id.subject, id.subject_regex, issues);
        if let (Some(issuer), Some(subject)) = (issuer, subject) {
            refs_sg.identities.push(pullgate_sigstore::Identity::new(issuer, subject));
        }
    }
    if refs_sg.require_tlog && sg.trusted_root.is_none() && sg.rekor_keys.is_empty() {
        issues.push(issue(
            &format!("{at}.requireTlog"),
            "a transparency log entry is required (the default) but no Rekor key is configured: set rekorKeys or trustedRoot, or requireTlog = false".into(),
        ));
    }
    if sg.keys.is_empty() && refs_sg.identities.is_empty() {
        issues.push(issue(at, "name at least one key (keys) or keyless identity (identities)".into()));
    }
    if !refs_sg.identities.is_empty() && sg.trusted_root.is_none() && sg.fulcio_roots.is_empty() {
        issues.push(issue(
            &format!("{at}.identities"),
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
    paths: (String, String),
    dir: &Path,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) {
    config.notation = load_notation("notation", paths, dir, file, issues);
}

/// Reads and checks a Notation trust policy and store named at field path `at`.
fn load_notation(
    at: &str,
    (policy_path, store_path): (String, String),
    dir: &Path,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) -> Option<NotationTrust> {
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
                field: format!("{at}.trustPolicy"),
                reason: format!("{policy_path} does not exist in the config directory"),
            });
            None
        }
    };
    let store = match pullgate_notation::TrustStore::load(&dir.join(&store_path)) {
        Ok(s) => Some(s),
        Err(e) => {
            issues.push(Issue { file: store_path.clone(), field: format!("{at}.trustStore"), reason: e.to_string() });
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
        return Some(NotationTrust { policy: Arc::new(policy), store: Arc::new(store) });
    }
    None
}

/// Reads the Sigstore keys and roots into `config.sigstore`.
pub(super) fn resolve_sigstore(
    config: &mut Config,
    sg: SigstoreRefs,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) {
    config.sigstore = Some(load_sigstore("sigstore", sg, file, issues));
}

/// Reads the Sigstore keys and roots of the table at field path `at`.
fn load_sigstore(
    at: &str,
    sg: SigstoreRefs,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) -> SigstoreTrust {
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
        if let Some(pem) = text(&format!("{at}.keys[{i}]"), k, issues)
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
        text(&format!("{at}.trustedRoot"), r, issues);
    }
    for (i, f) in sg.fulcio_roots.iter().enumerate() {
        if let Some(pem) = text(&format!("{at}.fulcioRoots[{i}]"), f, issues)
            && let Err(e) = root.add_certificate_authority_pem(f, &pem)
        {
            issues.push(Issue { file: f.clone(), field: String::new(), reason: e.to_string() });
        }
    }
    for (i, k) in sg.rekor_keys.iter().enumerate() {
        if let Some(pem) = text(&format!("{at}.rekorKeys[{i}]"), k, issues)
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
    SigstoreTrust { cosign: Arc::new(cosign), bundle: Arc::new(bundle) }
}

/// One named trust set (`[trust.NAME]`), or the default one made of the
/// top-level `[notation]` and `[sigstore]` tables.
#[derive(Debug, Clone, Default)]
pub struct TrustSet {
    /// Notation trust policy and store, when the set has them.
    pub notation: Option<NotationTrust>,
    /// Cosign / Sigstore trust, when the set has it.
    pub sigstore: Option<SigstoreTrust>,
}

/// A trust set a scope accepts, by name, as handed to the verifiers.
#[derive(Debug, Clone, Copy)]
pub struct ScopeTrust<'a> {
    /// The set's name (`default` for the top-level tables).
    pub name: &'a str,
    /// Its Notation trust.
    pub notation: Option<&'a NotationTrust>,
    /// Its Sigstore trust.
    pub sigstore: Option<&'a SigstoreTrust>,
}

/// Longest trust set name.
const MAX_SET_NAME: usize = 64;

/// The file references of one named trust set, read by [`resolve_sets`].
#[derive(Debug, Default)]
pub(super) struct SetRefs {
    notation: Option<(String, String)>,
    sigstore: Option<SigstoreRefs>,
}

/// Validates `[trust.NAME]` tables; returns their file references to read
/// later and what each provides (with the default set's, when configured).
pub(super) fn parse_sets(
    raw_sets: BTreeMap<String, raw::TrustSet>,
    default: Provides,
    issues: &mut Vec<Issue>,
) -> (BTreeMap<String, SetRefs>, BTreeMap<String, Provides>) {
    let mut refs = BTreeMap::new();
    let mut provides = BTreeMap::new();
    if default.notation || default.sigstore {
        provides.insert(DEFAULT_TRUST.to_string(), default);
    }
    if raw_sets.len() > MAX_ENTRIES {
        issues.push(issue("trust", format!("{} trust sets, more than {MAX_ENTRIES}", raw_sets.len())));
    }
    for (name, set) in raw_sets {
        let at = format!("trust.{name}");
        if name == DEFAULT_TRUST {
            issues.push(issue(&at, "\"default\" is the top-level [notation] and [sigstore]; pick another name".into()));
            continue;
        }
        if name.is_empty()
            || name.len() > MAX_SET_NAME
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            issues.push(issue(&at, format!("{name:?} must be 1-{MAX_SET_NAME} letters, digits, - or _")));
            continue;
        }
        if set.notation.is_none() && set.sigstore.is_none() {
            issues.push(issue(&at, "empty; give it a notation or sigstore table".into()));
        }
        let r = SetRefs {
            notation: set.notation.as_ref().map(|n| parse_notation_at(n, &format!("{at}.notation"), issues)),
            sigstore: set.sigstore.map(|sg| parse_sigstore_at(sg, &format!("{at}.sigstore"), issues)),
        };
        provides.insert(name.clone(), Provides { notation: r.notation.is_some(), sigstore: r.sigstore.is_some() });
        refs.insert(name, r);
    }
    (refs, provides)
}

/// Reads the trust material of every named set into `config.trust`.
pub(super) fn resolve_sets(
    config: &mut Config,
    sets: BTreeMap<String, SetRefs>,
    dir: &Path,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
    issues: &mut Vec<Issue>,
) {
    for (name, r) in sets {
        let at = format!("trust.{name}");
        let set = TrustSet {
            notation: r.notation.and_then(|n| load_notation(&format!("{at}.notation"), n, dir, file, issues)),
            sigstore: r.sigstore.map(|sg| load_sigstore(&format!("{at}.sigstore"), sg, file, issues)),
        };
        config.trust.insert(name, set);
    }
}

impl Config {
    /// The trust sets a scope with `requirements` accepts, in the order it names them.
    pub fn trust_for(&self, requirements: &Requirements) -> Vec<ScopeTrust<'_>> {
        requirements
            .trust()
            .iter()
            .filter_map(|name| {
                if name == DEFAULT_TRUST {
                    return Some(ScopeTrust {
                        name: DEFAULT_TRUST,
                        notation: self.notation.as_ref(),
                        sigstore: self.sigstore.as_ref(),
                    });
                }
                let (name, set) = self.trust.get_key_value(name)?;
                Some(ScopeTrust { name, notation: set.notation.as_ref(), sigstore: set.sigstore.as_ref() })
            })
            .collect()
    }
}
