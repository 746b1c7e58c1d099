//! `policy = "policy/FILE.rego"` and `policyMode` on the whole config, on
//! `[trust.NAME]` sets and on scopes: validated paths, then every named
//! file compiled once for the generation (a file used by several scopes
//! compiles once). A file that does not compile makes the generation
//! invalid, with an [`Issue`] naming `FILE:LINE:COL`.
//!
//! Which policy a scope runs is settled here: its own `policy`, else the
//! policy of the one trust set in its `verify.trust` that has one (two sets
//! with different policies are an issue: give the scope its own), else the
//! top-level one (resolved per decision by [`Policies::for_scope`]).

use super::files::safe_relative;
use super::{CONFIG_FILE, Issue, issue, raw};
use crate::policy::{Bound, Module, Policies, PolicyMode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Policy files named by the config, before they are read.
#[derive(Debug, Default)]
pub struct PolicyRefs {
    global: Option<PolicyRef>,
    scopes: Vec<(String, PolicyRef)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyRef {
    path: String,
    mode: PolicyMode,
    /// The config field that named it (`policy`, `scopes[2].policy`).
    field: String,
}

/// Checks the `policy` / `policyMode` fields of the file and its scopes.
pub(super) fn parse_refs(raw: &raw::File, issues: &mut Vec<Issue>) -> PolicyRefs {
    let global = parse_one(raw.policy.as_deref(), raw.policy_mode, "", issues);
    let sets: BTreeMap<&str, PolicyRef> = raw
        .trust
        .iter()
        .filter_map(|(name, t)| {
            let at = format!("trust.{name}.");
            parse_one(t.policy.as_deref(), t.policy_mode, &at, issues).map(|r| (name.as_str(), r))
        })
        .collect();
    let mut scopes = Vec::new();
    for (i, s) in raw.scopes.iter().enumerate() {
        let at = format!("scopes[{i}].");
        let own = parse_one(s.policy.as_deref(), s.policy_mode, &at, issues);
        if let Some(r) = own.or_else(|| from_trust_sets(s, &sets, &at, issues)) {
            scopes.push((s.name.clone(), r));
        }
    }
    PolicyRefs { global, scopes }
}

/// The policy a scope without its own gets from the trust sets it names.
fn from_trust_sets(
    s: &raw::Scope,
    sets: &BTreeMap<&str, PolicyRef>,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Option<PolicyRef> {
    let names = s.verify.as_ref().and_then(|v| v.trust.as_ref())?;
    let mut found: Vec<(&str, &PolicyRef)> = Vec::new();
    for n in names {
        if let Some(r) = sets.get(n.as_str())
            && !found.iter().any(|(_, f)| (&f.path, f.mode) == (&r.path, r.mode))
        {
            found.push((n, r));
        }
    }
    match found.as_slice() {
        [] => None,
        [(_, r)] => Some((*r).clone()),
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
            issues.push(issue(
                &format!("{at}verify.trust"),
                format!("trust sets {names:?} each have a different policy and a scope runs one; give the scope its own policy"),
            ));
            None
        }
    }
}

fn parse_one(path: Option<&str>, mode: Option<PolicyMode>, at: &str, issues: &mut Vec<Issue>) -> Option<PolicyRef> {
    let field = format!("{at}policy");
    let Some(path) = path else {
        if mode.is_some() {
            issues
                .push(issue(&format!("{at}policyMode"), "policyMode needs a policy = \"FILE.rego\" beside it".into()));
        }
        return None;
    };
    if let Err(why) = safe_relative(path) {
        issues.push(issue(&field, why));
        return None;
    }
    if !path.ends_with(".rego") {
        issues.push(issue(&field, format!("{path:?} must be a .rego file")));
        return None;
    }
    Some(PolicyRef { path: path.to_string(), mode: mode.unwrap_or_default(), field })
}

/// Compiles every referenced file from the directory's `files`.
pub(super) fn compile(refs: PolicyRefs, files: &[(String, Vec<u8>)]) -> Result<Policies, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut modules: BTreeMap<String, Option<Arc<Module>>> = BTreeMap::new();
    let mut bind = |r: PolicyRef, issues: &mut Vec<Issue>| -> Option<Bound> {
        let module = modules.entry(r.path.clone()).or_insert_with(|| compile_file(&r, files, issues)).clone()?;
        Some(Bound { file: r.path, mode: r.mode, module })
    };
    let global = refs.global.and_then(|r| bind(r, &mut issues));
    let mut scopes = BTreeMap::new();
    for (name, r) in refs.scopes {
        if let Some(b) = bind(r, &mut issues) {
            scopes.insert(name, b);
        }
    }
    if issues.is_empty() { Ok(Policies { global, scopes }) } else { Err(issues) }
}

fn compile_file(r: &PolicyRef, files: &[(String, Vec<u8>)], issues: &mut Vec<Issue>) -> Option<Arc<Module>> {
    let Some((_, source)) = files.iter().find(|(n, _)| *n == r.path) else {
        issues.push(Issue {
            file: CONFIG_FILE.into(),
            field: r.field.clone(),
            reason: format!("{} does not exist in the config directory", r.path),
        });
        return None;
    };
    match Module::compile(&r.path, source) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            let line = match &e {
                crate::policy::CompileError::Rego { line, column, .. } if *line > 0 => format!(":{line}:{column}"),
                _ => String::new(),
            };
            issues.push(Issue {
                file: format!("{}{line}", r.path),
                field: String::new(),
                reason: format!("{e} (named by {}; the config is not applied)", r.field),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(toml: &str) -> (PolicyRefs, Vec<Issue>) {
        let raw: raw::File = toml::from_str(toml).unwrap();
        let mut issues = Vec::new();
        (parse_refs(&raw, &mut issues), issues)
    }

    const GOOD: &str = "package pullgate\n\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\n";

    #[test]
    fn paths_and_modes_are_checked() {
        let (_, issues) = refs("policy = \"/etc/x.rego\"");
        assert_eq!(issues[0].field, "policy");
        let (_, issues) = refs("policy = \"p.txt\"");
        assert!(issues[0].reason.contains(".rego"));
        let (_, issues) = refs("policyMode = \"override\"");
        assert_eq!(issues[0].field, "policyMode");
        assert!(toml::from_str::<raw::File>("policyMode = \"loose\"\npolicy = \"p.rego\"").is_err());
    }

    #[test]
    fn scopes_get_their_trust_sets_policy_unless_they_have_one() {
        let toml = r#"
            policy = "policy/all.rego"
            [trust.team-a]
            sigstore = { keys = ["a.pub"] }
            policy = "policy/a.rego"
            [trust.team-b]
            sigstore = { keys = ["b.pub"] }
            policy = "policy/b.rego"
            policyMode = "override"
            [trust.plain]
            sigstore = { keys = ["c.pub"] }
            [[scopes]]
            name = "a"
            images = ["ghcr.io/a/**"]
            action = "verify"
            verify = { require = ["cosign"], trust = ["plain", "team-a"] }
            [[scopes]]
            name = "own"
            images = ["ghcr.io/own/**"]
            action = "verify"
            verify = { require = ["cosign"], trust = ["team-a"] }
            policy = "policy/own.rego"
            [[scopes]]
            name = "plain"
            images = ["ghcr.io/plain/**"]
            action = "verify"
            verify = { require = ["cosign"], trust = ["plain"] }
            [[scopes]]
            name = "both"
            images = ["ghcr.io/both/**"]
            action = "verify"
            verify = { require = ["cosign"], trust = ["team-a", "team-b"] }
        "#;
        let (r, issues) = refs(toml);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].field, "scopes[3].verify.trust");
        let files: Vec<(String, Vec<u8>)> =
            ["all", "a", "b", "own"].iter().map(|n| (format!("policy/{n}.rego"), GOOD.as_bytes().to_vec())).collect();
        let p = compile(r, &files).unwrap();
        assert_eq!(p.for_scope(Some("a")).unwrap().file, "policy/a.rego");
        assert_eq!(p.for_scope(Some("own")).unwrap().file, "policy/own.rego");
        assert_eq!(p.for_scope(Some("plain")).unwrap().file, "policy/all.rego", "no set policy: the top-level one");
        let (_, issues) = refs("[trust.x]\nsigstore = { keys = [\"a.pub\"] }\npolicyMode = \"override\"\n");
        assert_eq!(issues[0].field, "trust.x.policyMode");
    }

    #[test]
    fn one_compile_per_file_and_located_errors() {
        let toml = r#"
            policy = "policy/all.rego"
            [[scopes]]
            name = "a"
            images = ["ghcr.io/a/**"]
            action = "allow"
            policy = "policy/all.rego"
            policyMode = "override"
            [[scopes]]
            name = "b"
            images = ["ghcr.io/b/**"]
            action = "allow"
            policy = "policy/bad.rego"
        "#;
        let (r, issues) = refs(toml);
        assert!(issues.is_empty(), "{issues:?}");
        let bad = "package pullgate\n\ndecision := {\"allow\": true,\n  oops oops\n";
        let files = vec![("policy/all.rego".to_string(), GOOD.into()), ("policy/bad.rego".to_string(), bad.into())];
        let issues = compile(r, &files).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].file.starts_with("policy/bad.rego:"), "{issues:?}");
        assert!(issues[0].reason.contains("scopes[1].policy"), "{issues:?}");
        let (r, _) = refs(toml);
        let files = vec![("policy/all.rego".to_string(), GOOD.into()), ("policy/bad.rego".to_string(), GOOD.into())];
        let p = compile(r, &files).unwrap();
        assert!(Arc::ptr_eq(&p.global.as_ref().unwrap().module, &p.scopes["a"].module), "compiled once");
        assert_eq!(p.scopes["a"].mode, PolicyMode::Override);
        assert_eq!(p.for_scope(Some("b")).unwrap().file, "policy/bad.rego");
        assert_eq!(p.for_scope(None).unwrap().file, "policy/all.rego");
        let (r, _) = refs(toml);
        let issues = compile(r, &[]).unwrap_err();
        assert!(issues.iter().all(|i| i.reason.contains("does not exist")), "{issues:?}");
    }
}
