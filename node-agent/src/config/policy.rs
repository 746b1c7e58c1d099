//! `policy = "policy/FILE.rego"` and `policyMode` on the whole config and
//! on scopes: validated paths, then every named file compiled once for the
//! generation (a file used by several scopes compiles once). A file that
//! does not compile makes the generation invalid, with an [`Issue`] naming
//! `FILE:LINE`.

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

#[derive(Debug)]
struct PolicyRef {
    path: String,
    mode: PolicyMode,
    /// The config field that named it (`policy`, `scopes[2].policy`).
    field: String,
}

/// Checks the `policy` / `policyMode` fields of the file and its scopes.
pub(super) fn parse_refs(raw: &raw::File, issues: &mut Vec<Issue>) -> PolicyRefs {
    let global = parse_one(raw.policy.as_deref(), raw.policy_mode, "", issues);
    let scopes = raw
        .scopes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let at = format!("scopes[{i}].");
            parse_one(s.policy.as_deref(), s.policy_mode, &at, issues).map(|r| (s.name.clone(), r))
        })
        .collect();
    PolicyRefs { global, scopes }
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
