//! `[sbom]` and `[vulnerability]`: what the attached-artifact verifiers look
//! for, how much of it they fetch, whose signature an attachment needs, and
//! the rules its content must satisfy — validated into typed values from
//! `pullgate-sbom`, so the verifiers never meet an invalid rule.

use super::scope::Provides;
use super::types::{Action, DEFAULT_TRUST, Scope, VerifierKind};
use super::{Issue, MAX_ENTRIES, issue};
use pullgate_sbom::license::LicenseMatcher;
use pullgate_sbom::purl::Purl;
use pullgate_sbom::rules::{Date, Exception, PackageMatch, PackageRule, SbomRules, VulnRules};
use pullgate_sbom::version::Scheme;
use pullgate_sbom::{SbomKind, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `maxBytes` of one SBOM or report.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Largest `maxBytes` accepted (and what the parsers accept at most).
pub const MAX_MAX_BYTES: u64 = pullgate_sbom::MAX_DOCUMENT_BYTES as u64;
/// Longest `maxAge` accepted.
pub const MAX_AGE_LIMIT: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest exception reason.
const MAX_EXCEPTION_REASON: usize = 200;

/// `[sbom]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSbom {
    artifact_types: Option<Vec<String>>,
    max_bytes: Option<u64>,
    require_signed: Option<bool>,
    trust: Option<Vec<String>>,
    #[serde(default)]
    deny_licenses: Vec<String>,
    allow_licenses: Option<Vec<String>>,
    allow_unknown_licenses: Option<bool>,
    #[serde(default)]
    deny_packages: Vec<RawPackage>,
}

/// One `denyPackages` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPackage {
    purl: Option<String>,
    name: Option<String>,
    versions: Option<String>,
    scheme: Option<String>,
}

/// `[vulnerability]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVulnerability {
    artifact_types: Option<Vec<String>>,
    max_bytes: Option<u64>,
    require_signed: Option<bool>,
    trust: Option<Vec<String>>,
    severity: Option<String>,
    #[serde(default)]
    deny_cves: Vec<String>,
    #[serde(default)]
    exceptions: Vec<RawException>,
    max_age: Option<String>,
}

/// One `exceptions` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawException {
    id: String,
    until: String,
    reason: String,
}

/// What one attached-artifact verifier fetches and whose signature it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Referrer artifact types looked for, in preference order; never empty.
    pub artifact_types: Vec<String>,
    /// Largest document fetched, in bytes.
    pub max_bytes: u64,
    /// `Some(trust set names)` when an attachment must carry a signature that
    /// verifies under one of them (checked at load time to exist and to have
    /// Notation or Sigstore trust); `None` when unsigned attachments are believed.
    pub signed_by: Option<Vec<String>>,
}

/// `[sbom]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomPolicy {
    /// What to fetch.
    pub discovery: Discovery,
    /// The rules its content must satisfy.
    pub rules: SbomRules,
}

/// `[vulnerability]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulnerabilityPolicy {
    /// What to fetch.
    pub discovery: Discovery,
    /// The rules the report must satisfy.
    pub rules: VulnRules,
}

/// Default SBOM artifact types (SPDX JSON, CycloneDX JSON).
pub const SBOM_ARTIFACT_TYPES: [&str; 2] = ["application/spdx+json", "application/vnd.cyclonedx+json"];
/// Default vulnerability report artifact type (SARIF).
pub const SARIF_ARTIFACT_TYPE: &str = "application/sarif+json";

fn media_type_ok(s: &str) -> bool {
    let Some((ty, sub)) = s.split_once('/') else { return false };
    let token = |t: &str| {
        !t.is_empty() && t.len() <= 127 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    token(ty) && token(sub)
}

struct Common {
    artifact_types: Option<Vec<String>>,
    max_bytes: Option<u64>,
    require_signed: Option<bool>,
    trust: Option<Vec<String>>,
}

fn parse_discovery(
    at: &str,
    c: Common,
    defaults: &[&str],
    sbom: bool,
    sets: &BTreeMap<String, Provides>,
    issues: &mut Vec<Issue>,
) -> Discovery {
    let artifact_types = c.artifact_types.unwrap_or_else(|| defaults.iter().map(|s| s.to_string()).collect());
    if artifact_types.is_empty() || artifact_types.len() > 16 {
        issues.push(issue(&format!("{at}.artifactTypes"), "give 1 to 16 artifact types".into()));
    }
    for (i, t) in artifact_types.iter().enumerate() {
        let field = format!("{at}.artifactTypes[{i}]");
        if !media_type_ok(t) {
            issues.push(issue(&field, format!("{t:?} is not a media type like \"application/spdx+json\"")));
        } else if sbom && SbomKind::from_media_type(t).is_none() {
            issues.push(issue(
                &field,
                format!("{t:?}: pullgate reads SPDX JSON (application/spdx+json) and CycloneDX JSON (application/vnd.cyclonedx+json) only"),
            ));
        } else if !sbom && t != SARIF_ARTIFACT_TYPE {
            issues.push(issue(&field, format!("{t:?}: pullgate reads SARIF 2.1.0 ({SARIF_ARTIFACT_TYPE}) only")));
        }
    }
    let max_bytes = c.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if !(1024..=MAX_MAX_BYTES).contains(&max_bytes) {
        issues.push(issue(&format!("{at}.maxBytes"), format!("{max_bytes} is outside 1024..={MAX_MAX_BYTES} (bytes)")));
    }
    let signed_by = match (c.require_signed.unwrap_or(false), c.trust) {
        (false, Some(_)) => {
            issues.push(issue(
                &format!("{at}.trust"),
                "only used with requireSigned = true; set it or remove trust".into(),
            ));
            None
        }
        (false, None) => None,
        (true, names) => Some(parse_signers(&format!("{at}.trust"), names, sets, issues)),
    };
    Discovery { artifact_types, max_bytes, signed_by }
}

fn parse_signers(
    field: &str,
    names: Option<Vec<String>>,
    sets: &BTreeMap<String, Provides>,
    issues: &mut Vec<Issue>,
) -> Vec<String> {
    let names = names.unwrap_or_else(|| vec![DEFAULT_TRUST.to_string()]);
    if names.is_empty() {
        issues.push(issue(field, "empty; name a trust set, or leave trust out for \"default\"".into()));
    }
    for n in &names {
        match sets.get(n) {
            Some(p) if p.notation || p.sigstore => {}
            Some(_) | None if n == DEFAULT_TRUST => issues.push(issue(
                field,
                "requireSigned needs trust for the attachment's signature: a [notation] or [sigstore] table, or a named [trust.NAME] set".into(),
            )),
            _ => issues.push(issue(field, format!("no trust set {n:?}: define [trust.{n}]"))),
        }
    }
    names
}

fn licenses(field: &str, list: &[String], issues: &mut Vec<Issue>) -> Vec<LicenseMatcher> {
    if list.len() > MAX_ENTRIES {
        issues.push(issue(field, format!("{} entries, more than {MAX_ENTRIES}", list.len())));
    }
    let mut out = Vec::new();
    for (i, l) in list.iter().enumerate() {
        match LicenseMatcher::parse(l) {
            Ok(m) => out.push(m),
            Err(e) => issues.push(issue(&format!("{field}[{i}]"), format!("{l:?}: {e}"))),
        }
    }
    out
}

fn package_rule(field: &str, p: RawPackage, issues: &mut Vec<Issue>) -> Option<PackageRule> {
    let scheme = match p.scheme.as_deref() {
        None => None,
        Some("semver") => Some(Scheme::Semver),
        Some("deb") => Some(Scheme::Debian),
        Some("rpm") => Some(Scheme::Rpm),
        Some(other) => {
            issues.push(issue(&format!("{field}.scheme"), format!("{other:?}: give \"semver\", \"deb\" or \"rpm\"")));
            return None;
        }
    };
    let package = match (p.purl, p.name) {
        (Some(u), None) => match Purl::parse(&u) {
            Ok(purl) => PackageMatch::Purl(purl),
            Err(e) => {
                issues.push(issue(&format!("{field}.purl"), e.to_string()));
                return None;
            }
        },
        (None, Some(n)) if !n.is_empty() && n.len() <= 256 => PackageMatch::Name(n),
        _ => {
            issues.push(issue(field, "give exactly one of purl = \"pkg:…\" or name = \"…\" (1-256 bytes)".into()));
            return None;
        }
    };
    match PackageRule::new(package, p.versions.as_deref(), scheme) {
        Ok(r) => Some(r),
        Err(e) => {
            let hint = if scheme.is_none() {
                "; for a Debian or RPM package by name, add scheme = \"deb\" or \"rpm\""
            } else {
                ""
            };
            issues.push(issue(&format!("{field}.versions"), format!("{e}{hint}")));
            None
        }
    }
}

/// Validates `[sbom]`.
pub(super) fn parse_sbom(raw: RawSbom, sets: &BTreeMap<String, Provides>, issues: &mut Vec<Issue>) -> SbomPolicy {
    let common = Common {
        artifact_types: raw.artifact_types,
        max_bytes: raw.max_bytes,
        require_signed: raw.require_signed,
        trust: raw.trust,
    };
    let discovery = parse_discovery("sbom", common, &SBOM_ARTIFACT_TYPES, true, sets, issues);
    if raw.allow_unknown_licenses.is_some() && raw.allow_licenses.is_none() {
        issues.push(issue("sbom.allowUnknownLicenses", "only used with allowLicenses; set it or remove this".into()));
    }
    if raw.deny_packages.len() > MAX_ENTRIES {
        issues
            .push(issue("sbom.denyPackages", format!("{} entries, more than {MAX_ENTRIES}", raw.deny_packages.len())));
    }
    let deny_packages = raw
        .deny_packages
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| package_rule(&format!("sbom.denyPackages[{i}]"), p, issues))
        .collect();
    let rules = SbomRules {
        deny_licenses: licenses("sbom.denyLicenses", &raw.deny_licenses, issues),
        allow_licenses: raw.allow_licenses.map(|a| licenses("sbom.allowLicenses", &a, issues)),
        allow_unknown_licenses: raw.allow_unknown_licenses.unwrap_or(false),
        deny_packages,
    };
    SbomPolicy { discovery, rules }
}

fn vuln_id(field: &str, id: &str, issues: &mut Vec<Issue>) -> String {
    let up = id.trim().to_ascii_uppercase();
    if up.is_empty() || up.len() > 64 || !up.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        issues.push(issue(
            field,
            format!("{id:?} is not a vulnerability id like \"CVE-2024-1234\" or \"GHSA-xxxx-xxxx-xxxx\""),
        ));
    }
    up
}

/// Validates `[vulnerability]`.
pub(super) fn parse_vulnerability(
    raw: RawVulnerability,
    sets: &BTreeMap<String, Provides>,
    issues: &mut Vec<Issue>,
) -> VulnerabilityPolicy {
    let common = Common {
        artifact_types: raw.artifact_types,
        max_bytes: raw.max_bytes,
        require_signed: raw.require_signed,
        trust: raw.trust,
    };
    let discovery = parse_discovery("vulnerability", common, &[SARIF_ARTIFACT_TYPE], false, sets, issues);
    let severity = raw.severity.as_deref().and_then(|s| {
        let parsed = Severity::parse(s);
        if parsed.is_none() {
            issues.push(issue("vulnerability.severity", format!("{s:?}: give low, medium, high or critical")));
        }
        parsed
    });
    if raw.deny_cves.len() > MAX_ENTRIES || raw.exceptions.len() > MAX_ENTRIES {
        issues.push(issue("vulnerability", format!("denyCves and exceptions take at most {MAX_ENTRIES} entries")));
    }
    let deny = raw
        .deny_cves
        .iter()
        .enumerate()
        .map(|(i, c)| vuln_id(&format!("vulnerability.denyCves[{i}]"), c, issues))
        .collect();
    let mut exceptions: Vec<Exception> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, e) in raw.exceptions.into_iter().enumerate() {
        let at = format!("vulnerability.exceptions[{i}]");
        let id = vuln_id(&format!("{at}.id"), &e.id, issues);
        if seen.contains(&id) {
            issues.push(issue(&format!("{at}.id"), format!("{id} has an earlier exception; give one per id")));
        }
        if e.reason.trim().is_empty() || e.reason.len() > MAX_EXCEPTION_REASON || e.reason.chars().any(char::is_control)
        {
            issues
                .push(issue(&format!("{at}.reason"), format!("say why in one line of 1-{MAX_EXCEPTION_REASON} bytes")));
        }
        seen.push(id.clone());
        match Date::parse(&e.until) {
            Ok(until) => exceptions.push(Exception { id, until, reason: e.reason }),
            Err(err) => {
                issues.push(issue(&format!("{at}.until"), format!("{err}; the last day the exception applies (UTC)")))
            }
        }
    }
    let max_age = raw.max_age.and_then(|v| match humantime::parse_duration(&v) {
        Ok(d) if d > Duration::ZERO && d <= MAX_AGE_LIMIT => Some(d),
        Ok(_) => {
            issues.push(issue("vulnerability.maxAge", format!("{v:?}: give more than 0 and at most 366 days")));
            None
        }
        Err(e) => {
            issues.push(issue("vulnerability.maxAge", format!("{v:?} is not a duration like \"7d\" or \"12h\": {e}")));
            None
        }
    });
    VulnerabilityPolicy { discovery, rules: VulnRules { severity, deny, exceptions, max_age } }
}

/// A scope requiring `sbom` or `vulnerability` needs the matching table.
pub(super) fn check_scopes(scopes: &[Scope], sbom: bool, vulnerability: bool, issues: &mut Vec<Issue>) {
    for (i, s) in scopes.iter().enumerate() {
        let Action::Verify(r) = &s.action else { continue };
        for k in r.verifiers() {
            let (has, table) = match k {
                VerifierKind::Sbom => (sbom, "[sbom]"),
                VerifierKind::Vulnerability => (vulnerability, "[vulnerability]"),
                _ => continue,
            };
            if !has {
                issues.push(issue(
                    &format!("scopes[{i}].verify.require"),
                    format!("{} needs a {table} table with its rules (see docs/configuration.md)", k.as_str()),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, parse_main};
    use pullgate_sbom::Severity;
    use std::time::Duration;

    fn ok(s: &str) -> Config {
        parse_main(s.as_bytes()).unwrap_or_else(|e| panic!("{e:?}")).0
    }

    fn bad(s: &str) -> Vec<String> {
        parse_main(s.as_bytes()).expect_err("should be invalid").iter().map(ToString::to_string).collect()
    }

    const SCOPE: &str = r#"
        [[scopes]]
        name = "acme"
        images = ["ghcr.io/acme/**"]
        action = "verify"
        verify = { require = ["sbom", "vulnerability"] }
    "#;

    #[test]
    fn every_key_is_read() {
        let c = ok(&format!(
            r#"sigstore = {{ keys = ["k/cosign.pub"], requireTlog = false }}
            {SCOPE}
            [sbom]
            artifactTypes = ["application/spdx+json"]
            maxBytes = 1048576
            requireSigned = true
            trust = ["default"]
            denyLicenses = ["GPL-3.0-only", "AGPL-3.0-or-later"]
            allowLicenses = ["MIT", "Apache-2.0", "LicenseRef-GPL"]
            allowUnknownLicenses = true
            denyPackages = [
                {{ purl = "pkg:deb/debian/openssl", versions = "< 3.0.19-1~deb12u2" }},
                {{ name = "log4j-core", versions = ">= 2.0.0, < 2.17.1" }},
                {{ name = "libc6", versions = "<= 2.36-9", scheme = "deb" }},
            ]
            [vulnerability]
            severity = "high"
            denyCves = ["cve-2021-44228"]
            exceptions = [{{ id = "CVE-2019-1551", until = "2027-01-01", reason = "no fix in alpine 3.10" }}]
            maxAge = "7d"
            "#
        ));
        let s = c.sbom.unwrap();
        assert_eq!(s.discovery.artifact_types, ["application/spdx+json"]);
        assert_eq!(s.discovery.max_bytes, 1_048_576);
        assert_eq!(s.discovery.signed_by.as_deref(), Some(&["default".to_string()][..]));
        assert_eq!(s.rules.deny_licenses.len(), 2);
        assert_eq!(s.rules.allow_licenses.as_ref().map(Vec::len), Some(3));
        assert!(s.rules.allow_unknown_licenses);
        assert_eq!(s.rules.deny_packages.len(), 3);
        let v = c.vulnerability.unwrap();
        assert_eq!(v.discovery.artifact_types, [super::SARIF_ARTIFACT_TYPE]);
        assert_eq!(v.discovery.max_bytes, super::DEFAULT_MAX_BYTES);
        assert_eq!(v.discovery.signed_by, None);
        assert_eq!(v.rules.severity, Some(Severity::High));
        assert_eq!(v.rules.deny, ["CVE-2021-44228"]);
        assert_eq!(v.rules.exceptions[0].until.to_string(), "2027-01-01");
        assert_eq!(v.rules.max_age, Some(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn defaults_are_the_standard_artifact_types() {
        let c = ok(&format!("{SCOPE}\n[sbom]\n[vulnerability]\n"));
        assert_eq!(c.sbom.unwrap().discovery.artifact_types, super::SBOM_ARTIFACT_TYPES);
    }

    #[test]
    fn a_scope_requiring_them_needs_the_tables() {
        let errs = bad(SCOPE);
        assert!(errs.iter().any(|e| e.contains("scopes[0].verify.require") && e.contains("[sbom] table")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("[vulnerability] table")), "{errs:?}");
    }

    #[test]
    fn each_bad_value_is_an_issue_on_its_field() {
        let errs = bad(&format!(
            r#"{SCOPE}
            [sbom]
            artifactTypes = ["application/x-unknown+json", "not a type"]
            maxBytes = 10
            trust = ["default"]
            denyLicenses = ["MIT OR GPL-3.0-only", "MIT/X11"]
            allowUnknownLicenses = true
            denyPackages = [
                {{ purl = "deb/debian/openssl" }},
                {{ name = "libc6", versions = "<= 1:2.36-9" }},
                {{ purl = "pkg:deb/debian/x", name = "x" }},
                {{ name = "x", scheme = "apk" }},
            ]
            [vulnerability]
            requireSigned = true
            severity = "severe"
            denyCves = ["CVE 2021"]
            exceptions = [
                {{ id = "CVE-2019-1551", until = "2027-02-30", reason = "x" }},
                {{ id = "CVE-2019-1551", until = "2027-01-01", reason = "" }},
            ]
            maxAge = "soon"
            "#
        ));
        for (field, what) in [
            ("sbom.artifactTypes[0]", "SPDX JSON"),
            ("sbom.artifactTypes[1]", "not a media type"),
            ("sbom.maxBytes", "outside"),
            ("sbom.trust", "requireSigned"),
            ("sbom.denyLicenses[0]", "single licence"),
            ("sbom.denyLicenses[1]", "not allowed"),
            ("sbom.allowUnknownLicenses", "allowLicenses"),
            ("sbom.denyPackages[0].purl", "pkg:"),
            ("sbom.denyPackages[1].versions", "scheme = \"deb\""),
            ("sbom.denyPackages[2]", "exactly one"),
            ("sbom.denyPackages[3].scheme", "apk"),
            ("vulnerability.trust", "[notation] or [sigstore]"),
            ("vulnerability.severity", "severe"),
            ("vulnerability.denyCves[0]", "not a vulnerability id"),
            ("vulnerability.exceptions[0].until", "YYYY-MM-DD"),
            ("vulnerability.exceptions[1].id", "earlier exception"),
            ("vulnerability.exceptions[1].reason", "say why"),
            ("vulnerability.maxAge", "not a duration"),
        ] {
            assert!(errs.iter().any(|e| e.contains(&format!("{field}:")) && e.contains(what)), "{field}: {errs:#?}");
        }
        let errs = bad("[sbom]\nsomething = 1\n");
        assert!(errs.iter().any(|e| e.contains("unknown field")), "{errs:?}");
        let errs = bad("[sbom]\nrequireSigned = true\ntrust = [\"nope\"]\n");
        assert!(errs.iter().any(|e| e.contains("no trust set \"nope\"")), "{errs:?}");
    }
}
