//! in-toto Statements inside DSSE envelopes (Statement v0.1 and v1): subject digest matching,
//! and a small typed policy over SLSA provenance predicates ([`ProvenancePolicy`]: builder id,
//! source repository, build type) for SLSA v1 and v0.2.

use serde_json::Value;

use crate::identity::Matcher;
use crate::outcome::{Failure, FailureClass, fail};

/// The DSSE payload type of in-toto Statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// in-toto Statement v0.1 (still written by cosign attestations).
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// SLSA provenance v1 predicate type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// SLSA provenance v0.2 predicate type.
pub const SLSA_PROVENANCE_V02: &str = "https://slsa.dev/provenance/v0.2";

/// A parsed Statement.
#[derive(Clone, Debug)]
pub(crate) struct Statement {
    /// `(name, sha256 hex)` of each subject that has a SHA-256 digest.
    pub subjects: Vec<(String, String)>,
    pub predicate_type: String,
    pub predicate: Value,
}

fn bad(reason: impl Into<String>) -> Failure {
    fail(FailureClass::Statement, reason)
}

/// Parses a DSSE payload as an in-toto Statement v0.1 or v1.
pub(crate) fn parse(payload_type: &str, payload: &[u8]) -> Result<Statement, Failure> {
    if payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(bad(format!("the DSSE payload type is {payload_type:?}, not {IN_TOTO_PAYLOAD_TYPE:?}")));
    }
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| bad(format!("the DSSE payload is not a JSON statement: {e}")))?;
    let ty = v.get("_type").and_then(Value::as_str).unwrap_or_default();
    if ty != STATEMENT_V1 && ty != STATEMENT_V01 {
        return Err(bad(format!("statement _type {ty:?} is not {STATEMENT_V1:?} or {STATEMENT_V01:?}")));
    }
    let subjects = v
        .get("subject")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("the statement has no subject"))?;
    let mut out = Vec::new();
    for s in subjects {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let digest = s.get("digest").and_then(Value::as_object).ok_or_else(|| bad("a subject has no digest map"))?;
        if let Some(h) = digest.get("sha256").and_then(Value::as_str) {
            out.push((name, h.to_ascii_lowercase()));
        }
    }
    let predicate_type = v
        .get("predicateType")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("the statement has no predicateType"))?
        .to_string();
    Ok(Statement { subjects: out, predicate_type, predicate: v.get("predicate").cloned().unwrap_or(Value::Null) })
}

impl Statement {
    /// The subject whose SHA-256 is `sha256_hex`, if any.
    pub(crate) fn subject_for(&self, sha256_hex: &str) -> Option<&str> {
        self.subjects.iter().find(|(_, d)| d == sha256_hex).map(|(n, _)| n.as_str())
    }
}

/// Requirements on an SLSA provenance predicate (v1 or v0.2). Unset fields are not checked;
/// with a policy present, a statement of any other predicate type is rejected.
#[derive(Clone, Debug, Default)]
pub struct ProvenancePolicy {
    /// The builder: v1 `runDetails.builder.id`, v0.2 `builder.id`.
    pub builder_id: Option<Matcher>,
    /// The source repository: v1 `buildDefinition.externalParameters.workflow.repository`
    /// (GitHub Actions build types) or else the URI of the first `resolvedDependencies` entry;
    /// v0.2 `invocation.configSource.uri` or else the first `materials` URI. A `git+` prefix and
    /// an `@ref` suffix are removed, so `https://github.com/org/repo` is what is matched.
    pub source_repository: Option<Matcher>,
    /// The build type: v1 `buildDefinition.buildType`, v0.2 `buildType`.
    pub build_type: Option<Matcher>,
}

fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn repo_from_uri(uri: &str) -> String {
    let uri = uri.strip_prefix("git+").unwrap_or(uri);
    // Strip `@ref` after the path (not an `@` of user info before the host).
    let path_start = uri.find("://").map_or(0, |i| i + 3);
    match uri[path_start..].rfind('@') {
        Some(i) if uri[path_start..][..i].contains('/') => uri[..path_start + i].to_string(),
        _ => uri.to_string(),
    }
}

/// The provenance facts a policy looks at.
struct Provenance {
    builder_id: Option<String>,
    source_repository: Option<String>,
    build_type: Option<String>,
}

fn extract(stmt: &Statement) -> Option<Provenance> {
    let p = &stmt.predicate;
    match stmt.predicate_type.as_str() {
        SLSA_PROVENANCE_V1 => {
            let first_dep = p
                .get("buildDefinition")
                .and_then(|b| b.get("resolvedDependencies"))
                .and_then(Value::as_array)
                .and_then(|d| d.first())
                .and_then(|d| d.get("uri"))
                .and_then(Value::as_str);
            let source = at(p, &["buildDefinition", "externalParameters", "workflow", "repository"]).or(first_dep);
            Some(Provenance {
                builder_id: at(p, &["runDetails", "builder", "id"]).map(str::to_string),
                source_repository: source.map(repo_from_uri),
                build_type: at(p, &["buildDefinition", "buildType"]).map(str::to_string),
            })
        }
        SLSA_PROVENANCE_V02 => {
            let first_material = p
                .get("materials")
                .and_then(Value::as_array)
                .and_then(|m| m.first())
                .and_then(|m| m.get("uri"))
                .and_then(Value::as_str);
            let source = at(p, &["invocation", "configSource", "uri"]).or(first_material);
            Some(Provenance {
                builder_id: at(p, &["builder", "id"]).map(str::to_string),
                source_repository: source.map(repo_from_uri),
                build_type: at(p, &["buildType"]).map(str::to_string),
            })
        }
        _ => None,
    }
}

impl ProvenancePolicy {
    /// Checks the statement's predicate against the policy.
    pub(crate) fn check(&self, stmt: &Statement) -> Result<String, Failure> {
        let prov = extract(stmt).ok_or_else(|| {
            fail(
                FailureClass::Provenance,
                format!(
                    "predicate type {:?} is not SLSA provenance ({SLSA_PROVENANCE_V1} or {SLSA_PROVENANCE_V02})",
                    stmt.predicate_type
                ),
            )
        })?;
        let mut checked = Vec::new();
        for (what, matcher, value) in [
            ("builder id", &self.builder_id, &prov.builder_id),
            ("source repository", &self.source_repository, &prov.source_repository),
            ("build type", &self.build_type, &prov.build_type),
        ] {
            let Some(m) = matcher else { continue };
            match value {
                Some(v) if m.matches(v) => checked.push(format!("{what} {v:?}")),
                Some(v) => {
                    return Err(fail(FailureClass::Provenance, format!("provenance {what} {v:?} does not match {m}")));
                }
                None => {
                    return Err(fail(
                        FailureClass::Provenance,
                        format!("the provenance states no {what} (policy requires {m})"),
                    ));
                }
            }
        }
        Ok(if checked.is_empty() {
            format!("{} predicate present; the policy checks no fields", stmt.predicate_type)
        } else {
            format!("{}: {}", stmt.predicate_type, checked.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_from_uri() {
        assert_eq!(repo_from_uri("git+https://github.com/org/repo@refs/heads/main"), "https://github.com/org/repo");
        assert_eq!(repo_from_uri("https://github.com/org/repo"), "https://github.com/org/repo");
        assert_eq!(repo_from_uri("git+https://user@host.example/org/repo@v1"), "https://user@host.example/org/repo");
    }

    #[test]
    fn statements_need_type_subject_and_predicate_type() {
        let ok = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"AB"}}],"predicateType":"x"}"#;
        let s = parse(IN_TOTO_PAYLOAD_TYPE, ok).unwrap();
        assert_eq!(s.subject_for("ab"), Some("a"));
        assert!(parse("text/plain", ok).is_err());
        let no_subject = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x"}"#;
        assert_eq!(parse(IN_TOTO_PAYLOAD_TYPE, no_subject).unwrap_err().class, FailureClass::Statement);
        let other = br#"{"_type":"https://example.com/Statement","subject":[{"digest":{}}],"predicateType":"x"}"#;
        assert_eq!(parse(IN_TOTO_PAYLOAD_TYPE, other).unwrap_err().class, FailureClass::Statement);
    }
}
