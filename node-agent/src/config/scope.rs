//! Allowlist and scopes: image patterns and what each scope does with
//! the images it matches.

use super::raw;
use super::types::{Action, Requirements, Scope, VerifierKind};
use super::{Issue, MAX_ENTRIES, MAX_REASON_LEN, issue};
use pullgate_reference::Pattern;

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
    scopes
}

/// Every verifier a scope requires must have its trust configured.
pub(super) fn check_trust_configured(scopes: &[Scope], sigstore: bool, notation: bool, issues: &mut Vec<Issue>) {
    for (i, s) in scopes.iter().enumerate() {
        if let Action::Verify(r) = &s.action
            && (r.verifiers().contains(&VerifierKind::Cosign) || r.verifiers().contains(&VerifierKind::Sigstore))
            && !sigstore
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
            && !notation
        {
            issues.push(issue(
                &format!("scopes[{i}].verify.require"),
                "notation needs a [notation] table with trustPolicy and trustStore".into(),
            ));
        }
    }
}
