//! Allowlist and scopes: image patterns and what each scope does with
//! the images it matches.

use super::raw;
use super::types::{Action, Combine, DEFAULT_TRUST, Requirements, Scope, VerifierKind};
use super::{Issue, MAX_ENTRIES, MAX_REASON_LEN, issue};
use pullgate_reference::Pattern;
use std::collections::{BTreeMap, HashSet};

/// Validates `allowlist`; entries that are not digest-pinned are warned about.
pub(super) fn parse_allowlist(list: &[String], issues: &mut Vec<Issue>, warnings: &mut Vec<Issue>) -> Vec<Pattern> {
    if list.len() > MAX_ENTRIES {
        issues.push(issue("allowlist", format!("{} entries, more than {MAX_ENTRIES}", list.len())));
    }
    let mut allowlist = Vec::new();
    for (i, entry) in list.iter().enumerate() {
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
    allowlist
}

/// Validates `[[scopes]]`; a scope with any issue is left out (the config is then invalid anyway).
pub(super) fn parse_scopes(raw_scopes: Vec<raw::Scope>, issues: &mut Vec<Issue>) -> Vec<Scope> {
    if raw_scopes.len() > MAX_ENTRIES {
        issues.push(issue("scopes", format!("{} scopes, more than {MAX_ENTRIES}", raw_scopes.len())));
    }
    let mut scopes = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, s) in raw_scopes.into_iter().enumerate() {
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
                Some(v) => parse_verify(v, &at("verify"), issues).map(Action::Verify),
            },
        };
        if s.failure_policy.is_some() && s.action != raw::ActionKind::Verify {
            issues.push(issue(
                &at("failurePolicy"),
                "only a verify scope can fail to reach a decision; remove failurePolicy here".into(),
            ));
        }
        if issues.len() == before
            && let Some(action) = action
        {
            scopes.push(Scope { name: s.name, images, action, failure_policy: s.failure_policy });
        }
    }
    scopes
}

/// Validates a scope's `verify` table (`at` is its field path).
fn parse_verify(v: raw::Verify, at: &str, issues: &mut Vec<Issue>) -> Option<Requirements> {
    let before = issues.len();
    if v.require.is_empty() {
        issues.push(issue(&format!("{at}.require"), "empty; name at least one verifier".into()));
    }
    let mut verifiers = Vec::new();
    for k in v.require {
        if verifiers.contains(&k) {
            issues.push(issue(&format!("{at}.require"), format!("{} is listed twice", k.as_str())));
        } else {
            verifiers.push(k);
        }
    }
    let combine = parse_match(v.combine, verifiers.len(), &format!("{at}.match"), issues);
    let min_signatures = match v.min_signatures {
        None => 1,
        Some(n @ 1..=MAX_MIN_SIGNATURES) => n as usize,
        Some(n) => {
            issues.push(issue(
                &format!("{at}.minSignatures"),
                format!("{n}: give 1 to {MAX_MIN_SIGNATURES} distinct signers each signature verifier must find"),
            ));
            1
        }
    };
    let trust = parse_trust_names(v.trust, &format!("{at}.trust"), issues);
    let platforms = v.platforms.unwrap_or_default();
    (issues.len() == before).then_some(Requirements { verifiers, combine, trust, min_signatures, platforms })
}

/// Most distinct signers a scope may ask each verifier for.
pub const MAX_MIN_SIGNATURES: i64 = 16;

/// `match = "all" | "any" | { atLeast = N }` with 1 ≤ N ≤ the verifiers required.
fn parse_match(m: Option<raw::Match>, required: usize, field: &str, issues: &mut Vec<Issue>) -> Combine {
    match m {
        None | Some(raw::Match::Word(raw::MatchWord::All)) => Combine::All,
        Some(raw::Match::Word(raw::MatchWord::Any)) => Combine::Any,
        Some(raw::Match::AtLeast(a)) if a.at_least >= 1 && (a.at_least as u64) <= required as u64 => {
            Combine::AtLeast(a.at_least as usize)
        }
        Some(raw::Match::AtLeast(a)) => {
            issues.push(issue(
                field,
                format!("atLeast = {}: give 1 to {required} (the number of verifiers in require)", a.at_least),
            ));
            Combine::All
        }
    }
}

/// `trust = [...]`: set names (checked against the sets later), default `["default"]`.
fn parse_trust_names(names: Option<Vec<String>>, field: &str, issues: &mut Vec<Issue>) -> Vec<String> {
    let Some(names) = names else { return vec![DEFAULT_TRUST.to_string()] };
    if names.is_empty() {
        issues.push(issue(field, "empty; name at least one trust set, or leave trust out for \"default\"".into()));
    }
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if out.contains(&n) {
            issues.push(issue(field, format!("{n:?} is listed twice")));
        } else {
            out.push(n);
        }
    }
    out
}

/// What one trust set provides, for checking the scopes that name it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Provides {
    /// Has Notation trust (policy and store).
    pub notation: bool,
    /// Has Sigstore trust (keys or identities).
    pub sigstore: bool,
}

impl Provides {
    fn serves(self, k: VerifierKind) -> bool {
        match k {
            VerifierKind::Notation => self.notation,
            VerifierKind::Cosign | VerifierKind::Sigstore => self.sigstore,
            // Their signers' trust is named in [sbom] / [vulnerability], not by the scope.
            VerifierKind::Sbom | VerifierKind::Vulnerability => true,
        }
    }
}

/// Every trust set a scope names must exist and serve one of its verifiers;
/// every verifier it requires must be served by one of its sets.
pub(super) fn check_trust(scopes: &[Scope], sets: &BTreeMap<String, Provides>, issues: &mut Vec<Issue>) {
    for (i, s) in scopes.iter().enumerate() {
        let Action::Verify(r) = &s.action else { continue };
        let field = format!("scopes[{i}].verify.trust");
        for name in r.trust() {
            match sets.get(name) {
                None if name == DEFAULT_TRUST => {}
                None => issues.push(issue(&field, format!("no trust set {name:?}: define [trust.{name}]"))),
                Some(p) if !r.verifiers().iter().any(|k| p.serves(*k)) => {
                    issues.push(issue(&field, format!("trust set {name:?} has nothing for {}", names(r.verifiers()))))
                }
                Some(_) => {}
            }
        }
        for k in r.verifiers().iter().filter(|k| !matches!(k, VerifierKind::Sbom | VerifierKind::Vulnerability)) {
            if !r.trust().iter().any(|n| sets.get(n).is_some_and(|p| p.serves(*k))) {
                issues.push(issue(&format!("scopes[{i}].verify.require"), missing_trust(*k, r.trust())));
            }
        }
    }
}

/// Named sets that neither a scope nor `also` (the sets `[sbom]` and
/// `[vulnerability]` name for their attachments' signatures) uses are warned about.
pub(super) fn warn_unused_sets(
    scopes: &[Scope],
    sets: &BTreeMap<String, Provides>,
    also: &[String],
    warnings: &mut Vec<Issue>,
) {
    let mut used: HashSet<&str> = also.iter().map(String::as_str).collect();
    for s in scopes {
        if let Action::Verify(r) = &s.action {
            used.extend(r.trust().iter().map(String::as_str));
        }
    }
    for name in sets.keys().filter(|n| *n != DEFAULT_TRUST && !used.contains(n.as_str())) {
        warnings.push(issue(&format!("trust.{name}"), "no scope names this trust set; it is not used".into()));
    }
}

fn names(k: &[VerifierKind]) -> String {
    k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// Why verifier `k` has no trust among the sets `trust`.
fn missing_trust(k: VerifierKind, trust: &[String]) -> String {
    let what = match k {
        VerifierKind::Notation => "notation needs a [notation] table with trustPolicy and trustStore",
        _ => "cosign and sigstore need a [sigstore] table with keys or identities",
    };
    if trust.iter().all(|n| n == DEFAULT_TRUST) {
        what.to_string()
    } else {
        format!("{what} in one of the trust sets {trust:?}")
    }
}

impl super::Config {
    /// The first scope matching the image, if any (after the allowlist, which the caller checks).
    pub fn scope_for(
        &self,
        reference: &pullgate_reference::Reference,
        digest: &pullgate_reference::Digest,
    ) -> Option<&Scope> {
        self.scopes.iter().find(|s| s.images.iter().any(|p| p.matches(reference, digest)))
    }

    /// The failure policy for errors deciding on the image: its scope's
    /// `failurePolicy` when it sets one, else the top-level one.
    pub fn failure_policy_for(
        &self,
        reference: &pullgate_reference::Reference,
        digest: &pullgate_reference::Digest,
    ) -> pullgate_wire::FailurePolicy {
        self.scope_for(reference, digest).and_then(|s| s.failure_policy).unwrap_or(self.failure_policy)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Issue, parse_main};
    use super::*;

    fn parse(s: &str) -> Result<(Config, Vec<Issue>), String> {
        parse_main(s.as_bytes()).map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }

    const SETS: &str = r#"
        [trust.team-a.sigstore]
        keys = ["a.pub"]
        requireTlog = false
        [trust.team-b.sigstore]
        keys = ["b.pub"]
        requireTlog = false
        [trust.spare.sigstore]
        keys = ["c.pub"]
        requireTlog = false
    "#;

    fn scope(verify: &str) -> String {
        format!("[[scopes]]\nname = \"s\"\nimages = [\"ghcr.io/a/**\"]\naction = \"verify\"\nverify = {verify}\n{SETS}")
    }

    #[test]
    fn scopes_name_trust_sets_that_exist_and_unused_ones_warn() {
        let (c, w) = parse(&scope(r#"{ require = ["cosign"], trust = ["team-a", "team-b"] }"#)).unwrap();
        let Action::Verify(r) = &c.scopes[0].action else { panic!() };
        assert_eq!(r.trust(), ["team-a", "team-b"]);
        assert!(w.iter().any(|i| i.field == "trust.spare"), "{w:?}");
        assert!(!w.iter().any(|i| i.field == "trust.team-a"));
        let e = parse(&scope(r#"{ require = ["cosign"], trust = ["team-c"] }"#)).unwrap_err();
        assert!(e.contains("scopes[0].verify.trust: no trust set \"team-c\""), "{e}");
        let e = parse(&scope(r#"{ require = ["notation"], trust = ["team-a"] }"#)).unwrap_err();
        assert!(e.contains("trust set \"team-a\" has nothing for notation"), "{e}");
        let e = parse(&scope(r#"{ require = ["cosign"], trust = [] }"#)).unwrap_err();
        assert!(e.contains("scopes[0].verify.trust: empty"), "{e}");
        let e = parse(&scope(r#"{ require = ["cosign"] }"#)).unwrap_err();
        assert!(e.contains("scopes[0].verify.require: cosign and sigstore need a [sigstore] table"), "{e}");
        let e = parse("[trust.default.sigstore]\nkeys=[\"k\"]\nrequireTlog=false\n[trust.x]\n").unwrap_err();
        assert!(e.contains("trust.default:") && e.contains("trust.x: empty"), "{e}");
        let e = parse("[trust.t.sigstore]\nkeys=[\"../k\"]\n").unwrap_err();
        assert!(e.contains("trust.t.sigstore.keys[0]") && e.contains("trust.t.sigstore.requireTlog"), "{e}");
    }

    #[test]
    fn a_set_named_only_by_sbom_is_used() {
        let text = format!(
            "[sbom]\nrequireSigned = true\ntrust = [\"spare\"]\n{}",
            scope(r#"{ require = ["cosign"], trust = ["team-a", "team-b"] }"#)
        );
        let (_, w) = parse(&text).unwrap();
        assert!(!w.iter().any(|i| i.field == "trust.spare"), "{w:?}");
    }

    #[test]
    fn match_counts_and_min_signatures_are_bounded() {
        let req = |v: &str| match parse(&scope(v)).map(|(c, _)| c.scopes[0].action.clone()) {
            Ok(Action::Verify(r)) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let r = req(
            r#"{ require = ["cosign", "sigstore"], trust = ["team-a"], match = { atLeast = 2 }, minSignatures = 2 }"#,
        )
        .unwrap();
        assert_eq!((r.combine(), r.min_signatures()), (Combine::AtLeast(2), 2));
        assert_eq!(r.combine().needed(2), 2);
        let e = req(r#"{ require = ["cosign"], trust = ["team-a"], match = { atLeast = 2 } }"#).unwrap_err();
        assert!(e.contains("scopes[0].verify.match: atLeast = 2: give 1 to 1"), "{e}");
        let e = req(r#"{ require = ["cosign"], trust = ["team-a"], match = { atLeast = 0 } }"#).unwrap_err();
        assert!(e.contains("atLeast = 0"), "{e}");
        for n in ["0", "-1", "17"] {
            let e =
                req(&format!("{{ require = [\"cosign\"], trust = [\"team-a\"], minSignatures = {n} }}")).unwrap_err();
            assert!(e.contains("scopes[0].verify.minSignatures"), "{e}");
        }
        assert!(req(r#"{ require = ["cosign"], trust = ["team-a"], match = "some" }"#).is_err());
        let r = req(r#"{ require = ["cosign"], trust = ["team-a"], platforms = "index-or-node" }"#).unwrap();
        assert_eq!(r.platforms(), super::super::Platforms::IndexOrNode);
        assert!(req(r#"{ require = ["cosign"], trust = ["team-a"], platforms = "some" }"#).is_err());
    }

    #[test]
    fn failure_policy_per_scope_and_break_glass_and_node_platform() {
        let text = format!(
            "failurePolicy = \"closed\"\n[[scopes]]\nname = \"s\"\nimages = [\"ghcr.io/a/**\"]\naction = \"verify\"\nfailurePolicy = \"open\"\nverify = {{ require = [\"cosign\"], trust = [\"team-a\"] }}\n{SETS}"
        );
        let (c, _) = parse(&text).unwrap();
        assert_eq!(c.scopes[0].failure_policy, Some(pullgate_wire::FailurePolicy::Open));
        let r: pullgate_reference::Reference = "ghcr.io/a/x:1".parse().unwrap();
        let d = pullgate_reference::Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(c.failure_policy_for(&r, &d), pullgate_wire::FailurePolicy::Open);
        let other: pullgate_reference::Reference = "quay.io/x:1".parse().unwrap();
        assert_eq!(c.failure_policy_for(&other, &d), pullgate_wire::FailurePolicy::Closed);
        let e = parse("[[scopes]]\nname='a'\nimages=['x.io/**']\naction='allow'\nfailurePolicy='open'\n").unwrap_err();
        assert!(e.contains("scopes[0].failurePolicy: only a verify scope"), "{e}");
        let soon =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
        let (c, _) = parse(&format!("breakGlass = {{ until = \"{soon}\", reason = \"INC-1\" }}")).unwrap();
        assert!(c.break_glass.unwrap().active_at(std::time::SystemTime::now()));
        // Ended: no effect and a warning, so a restart with the old config keeps the typed policy.
        let (c, w) = parse("breakGlass = { until = \"2020-01-01T00:00:00Z\", reason = \"old\" }").unwrap();
        assert!(c.break_glass.is_none());
        let w: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert!(w.iter().any(|w| w.contains("breakGlass.until") && w.contains("has passed")), "{w:?}");
        let late =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(90_000));
        let e = parse(&format!("breakGlass = {{ until = \"{late}\", reason = \"x\" }}")).unwrap_err();
        assert!(e.contains("24 hours"), "{e}");
        let (c, _) = parse("nodePlatform = \"linux/aarch64\"").unwrap();
        assert_eq!(c.node_platform.unwrap().to_string(), "linux/arm64");
        assert!(parse("nodePlatform = \"linux\"").unwrap_err().contains("nodePlatform"));
    }
}
