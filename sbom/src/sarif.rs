//! SARIF 2.1.0 vulnerability reports (Trivy and Grype shapes).
//!
//! Each result becomes a [`Vulnerability`]: its id is the CVE/GHSA id the
//! rule id starts with (Grype writes `CVE-1999-0001-package-1`), its
//! severity comes from the rule's `properties.security-severity` (a CVSS
//! score: ≥ 9 critical, ≥ 7 high, ≥ 4 medium, > 0 low, 0 none) and, when a
//! rule has none, from the SARIF level (result `level`, else the rule's
//! `defaultConfiguration.level`, else `warning`): error → high,
//! warning → medium, note → low, none → none. The scan time is the latest
//! `invocations[].endTimeUtc` (else `startTimeUtc`). The image claims are
//! Trivy's `runs[].properties.imageID` and `repoDigests`.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Deserialize;

use crate::json::{Score, capped, sha256_digest};
use crate::model::ImageClaims;
use crate::{MAX_RESULTS, MAX_SMALL_LIST, ParseError};

/// How severe a vulnerability is, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Informational (score 0 or level `none`).
    None,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// From a CVSS score (the `security-severity` property).
    pub fn from_score(score: f64) -> Severity {
        match score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            s if s > 0.0 => Severity::Low,
            _ => Severity::None,
        }
    }

    /// From a SARIF `level`; `None` for an unknown level.
    pub fn from_level(level: &str) -> Option<Severity> {
        Some(match level {
            "error" => Severity::High,
            "warning" => Severity::Medium,
            "note" => Severity::Low,
            "none" => Severity::None,
            _ => return None,
        })
    }

    /// Parses a configured severity name (`low`, `medium`, `high`, `critical`, `none`).
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => Severity::None,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    /// Its lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One vulnerability a report lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Vulnerability {
    /// The vulnerability id, upper case (`CVE-2019-1549`).
    pub id: String,
    /// Its severity.
    pub severity: Severity,
    /// The CVSS score, if the rule gave one.
    pub score: Option<f64>,
    /// The affected package as the report names it, if it does.
    pub package: Option<String>,
}

/// A parsed vulnerability report.
#[derive(Debug, Clone, PartialEq)]
pub struct VulnReport {
    /// The scanner (`Trivy dev`, `grype 0.0.0-dev`).
    pub tool: String,
    /// When the scan ran, if the report says.
    pub scanned_at: Option<SystemTime>,
    /// The image digests the report says it scanned.
    pub describes: ImageClaims,
    /// Every result.
    pub vulnerabilities: Vec<Vulnerability>,
}

#[derive(Deserialize)]
struct Log {
    version: String,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    tool: ToolWrap,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_RESULTS>")]
    results: Vec<SResult>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    invocations: Vec<Invocation>,
    properties: Option<RunProperties>,
}

#[derive(Deserialize)]
struct ToolWrap {
    driver: Driver,
}

#[derive(Deserialize)]
struct Driver {
    name: String,
    version: Option<String>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_RESULTS>")]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: String,
    default_configuration: Option<Configuration>,
    properties: Option<RuleProperties>,
}

#[derive(Deserialize)]
struct Configuration {
    level: Option<String>,
}

#[derive(Deserialize)]
struct RuleProperties {
    #[serde(rename = "security-severity", default)]
    security_severity: Option<Score>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    purls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SResult {
    rule_id: Option<String>,
    rule_index: Option<usize>,
    level: Option<String>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Invocation {
    start_time_utc: Option<String>,
    end_time_utc: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunProperties {
    #[serde(rename = "imageID")]
    image_id: Option<String>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    repo_digests: Vec<String>,
}

/// The vulnerability id a rule id starts with (`CVE-1999-0001-package-1` → `CVE-1999-0001`).
pub fn vulnerability_id(rule_id: &str) -> String {
    let up = rule_id.trim().to_ascii_uppercase();
    let parts: Vec<&str> = up.split('-').collect();
    let digits = |s: &str, min: usize| s.len() >= min && s.bytes().all(|b| b.is_ascii_digit());
    if parts.len() >= 3 && parts[0] == "CVE" && digits(parts[1], 4) && digits(parts[2], 4) {
        return parts[..3].join("-");
    }
    let alnum4 = |s: &str| s.len() == 4 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if parts.len() >= 4 && parts[0] == "GHSA" && parts[1..4].iter().all(|p| alnum4(p)) {
        return parts[..4].join("-");
    }
    up
}

/// Trivy's message starts `Package: <name>\nInstalled Version: <v>`.
fn trivy_package(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let name = lines.next()?.strip_prefix("Package: ")?.trim();
    let version = lines.next().and_then(|l| l.strip_prefix("Installed Version: ")).map(str::trim);
    Some(match version {
        Some(v) => format!("{name}@{v}"),
        None => name.to_owned(),
    })
}

fn time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim()).ok()
}

fn run_vulnerabilities(run: &Run, out: &mut Vec<Vulnerability>) -> Result<(), ParseError> {
    let by_id: HashMap<&str, &Rule> = run.tool.driver.rules.iter().map(|r| (r.id.as_str(), r)).collect();
    for r in &run.results {
        if out.len() >= MAX_RESULTS {
            return Err(ParseError::TooMany { what: "results", max: MAX_RESULTS });
        }
        let rule = match (&r.rule_id, r.rule_index) {
            (Some(id), _) => by_id.get(id.as_str()).copied(),
            (None, Some(i)) => run.tool.driver.rules.get(i),
            (None, None) => None,
        };
        let Some(rule_id) = r.rule_id.as_deref().or(rule.map(|r| r.id.as_str())) else {
            return Err(ParseError::Invalid { format: "SARIF", reason: "a result names no rule".into() });
        };
        let props = rule.and_then(|r| r.properties.as_ref());
        let score = props.and_then(|p| p.security_severity).and_then(|s| s.0);
        let level = r
            .level
            .as_deref()
            .or(rule.and_then(|r| r.default_configuration.as_ref()).and_then(|c| c.level.as_deref()))
            .unwrap_or("warning");
        let severity = match score {
            Some(s) => Severity::from_score(s),
            None => Severity::from_level(level).ok_or_else(|| ParseError::Invalid {
                format: "SARIF",
                reason: format!("result level {level:?} is not a SARIF level"),
            })?,
        };
        let package = props
            .and_then(|p| p.purls.first().cloned())
            .or_else(|| r.message.as_ref().and_then(|m| m.text.as_deref()).and_then(trivy_package));
        out.push(Vulnerability { id: vulnerability_id(rule_id), severity, score, package });
    }
    Ok(())
}

/// Parses a SARIF 2.1.0 log.
pub fn parse(bytes: &[u8]) -> Result<VulnReport, ParseError> {
    let log: Log = serde_json::from_slice(bytes).map_err(|e| ParseError::Json { format: "SARIF", source: e })?;
    if log.version != "2.1.0" {
        return Err(ParseError::Unsupported { format: "SARIF", version: log.version });
    }
    if log.runs.is_empty() {
        return Err(ParseError::Invalid { format: "SARIF", reason: "the log has no runs".into() });
    }
    let mut report = VulnReport {
        tool: String::new(),
        scanned_at: None,
        describes: ImageClaims::default(),
        vulnerabilities: Vec::new(),
    };
    let mut tools = Vec::new();
    for run in &log.runs {
        let d = &run.tool.driver;
        let tool = format!("{} {}", d.name, d.version.as_deref().unwrap_or("")).trim().to_owned();
        if !tools.contains(&tool) {
            tools.push(tool);
        }
        for inv in &run.invocations {
            let t = inv.end_time_utc.as_deref().or(inv.start_time_utc.as_deref()).and_then(time);
            report.scanned_at = report.scanned_at.max(t);
        }
        if let Some(p) = &run.properties {
            report.describes.add(p.image_id.as_deref().and_then(sha256_digest));
            for rd in &p.repo_digests {
                report.describes.add(rd.rsplit_once('@').and_then(|(_, d)| sha256_digest(d)));
            }
        }
        run_vulnerabilities(run, &mut report.vulnerabilities)?;
    }
    report.tool = tools.join(", ");
    Ok(report)
}
