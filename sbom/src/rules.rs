//! Typed SBOM and vulnerability rules, and their evaluation.
//!
//! Evaluation returns a [`Decision`]: whether the document passes, the
//! findings that decided (capped; the rest are counted), and a one-line
//! summary. Rules are built from already-validated parts ([`LicenseMatcher`],
//! [`Purl`], [`Range`], [`Date`]), so an evaluation cannot meet an invalid
//! rule. Uncertainty fails closed: a denied package whose version cannot be
//! compared under the rule's ordering counts as inside the range, and a
//! report without a scan time fails a `maxAge` rule.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::license::{LicenseMatcher, Term};
use crate::model::{License, Package, Sbom};
use crate::purl::Purl;
use crate::sarif::{Severity, VulnReport, Vulnerability};
use crate::version::{Range, RangeError, Scheme};

/// Which rule a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingRule {
    /// A licence on the deny list stands in the way.
    LicenseDenied,
    /// A licence outside the allow list stands in the way.
    LicenseNotAllowed,
    /// No usable licence under an allow list.
    LicenseUnknown,
    /// A package on the deny list (in its version range).
    PackageDenied,
    /// A vulnerability at or above the severity threshold.
    Severity,
    /// A vulnerability on the deny list.
    CveDenied,
    /// A vulnerability that would deny, let through by an unexpired exception.
    ExceptionApplied,
    /// The report is older than `maxAge`.
    TooOld,
    /// The report's scan time is unknown under a `maxAge` rule.
    ScanTimeUnknown,
}

impl FindingRule {
    /// Its name in reports (`license-denied`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingRule::LicenseDenied => "license-denied",
            FindingRule::LicenseNotAllowed => "license-not-allowed",
            FindingRule::LicenseUnknown => "license-unknown",
            FindingRule::PackageDenied => "package-denied",
            FindingRule::Severity => "severity",
            FindingRule::CveDenied => "cve-denied",
            FindingRule::ExceptionApplied => "exception-applied",
            FindingRule::TooOld => "too-old",
            FindingRule::ScanTimeUnknown => "scan-time-unknown",
        }
    }

    /// Whether a finding of this rule denies.
    pub fn denies(self) -> bool {
        self != FindingRule::ExceptionApplied
    }
}

/// One thing that decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// The rule.
    pub rule: FindingRule,
    /// What it is about: a package (`pkg:deb/debian/openssl@3.0.19-1~deb12u2`) or a CVE id.
    pub item: String,
    /// Why, in a few words.
    pub detail: String,
}

/// The outcome of evaluating one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// No finding denies.
    pub allowed: bool,
    /// Findings, denials first, at most the cap passed in.
    pub findings: Vec<Finding>,
    /// Findings left out by the cap.
    pub omitted: usize,
    /// One line: what was examined and how many findings of each kind.
    pub summary: String,
}

fn decide(mut all: Vec<Finding>, cap: usize, summary: String) -> Decision {
    all.sort_by_key(|f| !f.rule.denies());
    let allowed = !all.iter().any(|f| f.rule.denies());
    let omitted = all.len().saturating_sub(cap);
    all.truncate(cap);
    Decision { allowed, findings: all, omitted, summary }
}

/// A package the deny list names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageMatch {
    /// By purl (type, namespace, name; version and qualifiers if given).
    Purl(Purl),
    /// By exact package name.
    Name(String),
}

/// One `denyPackages` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRule {
    /// Which package.
    pub package: PackageMatch,
    /// Versions denied; `None` denies every version.
    pub versions: Option<Range>,
    /// The ordering the range uses.
    pub scheme: Scheme,
}

impl PackageRule {
    /// A rule; the ordering is the purl type's (deb, rpm) unless `scheme` is given, semver for names.
    pub fn new(
        package: PackageMatch,
        versions: Option<&str>,
        scheme: Option<Scheme>,
    ) -> Result<PackageRule, RangeError> {
        let scheme = scheme.unwrap_or(match &package {
            PackageMatch::Purl(p) => Scheme::for_purl_type(&p.ty),
            PackageMatch::Name(_) => Scheme::Semver,
        });
        let versions = versions.map(|v| Range::parse(v, scheme)).transpose()?;
        Ok(PackageRule { package, versions, scheme })
    }

    /// `None` if the rule does not deny `p`, else why it does.
    fn denies(&self, p: &Package) -> Option<String> {
        let hit = match &self.package {
            PackageMatch::Purl(rule) => p.purl.as_ref().is_some_and(|purl| rule.matches(purl)),
            PackageMatch::Name(n) => &p.name == n,
        };
        if !hit {
            return None;
        }
        let Some(range) = &self.versions else { return Some("every version denied".into()) };
        let version = p.purl.as_ref().and_then(|u| u.version.as_deref()).or(p.version.as_deref());
        match version.map(|v| (v, range.contains(self.scheme, v))) {
            Some((v, Some(true))) => Some(format!("version {v} is in {range}")),
            Some((_, Some(false))) => None,
            Some((v, None)) => {
                Some(format!("version {v} cannot be ordered as {:?}; treated as in {range}", self.scheme))
            }
            None => Some(format!("no version; treated as in {range}")),
        }
    }
}

/// What an SBOM must satisfy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbomRules {
    /// Licences that may not be relied on.
    pub deny_licenses: Vec<LicenseMatcher>,
    /// If set, only these licences may be relied on.
    pub allow_licenses: Option<Vec<LicenseMatcher>>,
    /// Under an allow list, let through packages whose licence is unknown, `NONE` or invalid.
    pub allow_unknown_licenses: bool,
    /// Packages that may not be present.
    pub deny_packages: Vec<PackageRule>,
}

impl SbomRules {
    fn term_ok(&self, t: &Term) -> bool {
        !self.deny_licenses.iter().any(|m| m.matches(t))
            && self.allow_licenses.as_ref().is_none_or(|a| a.iter().any(|m| m.matches(t)))
    }

    fn license_finding(&self, p: &Package) -> Option<Finding> {
        let item = p.label();
        match &p.license {
            License::Expr(e) => {
                let blocking = e.blocking(&|t| self.term_ok(t))?;
                let denied = blocking.iter().any(|t| self.deny_licenses.iter().any(|m| m.matches(t)));
                let names: Vec<String> = blocking.iter().take(8).map(|t| t.to_string()).collect();
                Some(Finding {
                    rule: if denied { FindingRule::LicenseDenied } else { FindingRule::LicenseNotAllowed },
                    item,
                    detail: format!("{e}: cannot be satisfied without {}", names.join(", ")),
                })
            }
            other if self.allow_licenses.is_some() && !self.allow_unknown_licenses => {
                Some(Finding { rule: FindingRule::LicenseUnknown, item, detail: other.describe() })
            }
            _ => None,
        }
    }

    /// Evaluates an SBOM; at most `cap` findings are kept.
    pub fn evaluate(&self, sbom: &Sbom, cap: usize) -> Decision {
        let mut all = Vec::new();
        for p in &sbom.packages {
            all.extend(self.license_finding(p));
            for rule in &self.deny_packages {
                if let Some(why) = rule.denies(p) {
                    all.push(Finding { rule: FindingRule::PackageDenied, item: p.label(), detail: why });
                    break;
                }
            }
        }
        let count = |r: FindingRule| all.iter().filter(|f| f.rule == r).count();
        let summary = format!(
            "{} {}, {} packages: {} licence findings, {} denied packages",
            sbom.format,
            sbom.tool.as_deref().unwrap_or("unknown tool"),
            sbom.packages.len(),
            count(FindingRule::LicenseDenied)
                + count(FindingRule::LicenseNotAllowed)
                + count(FindingRule::LicenseUnknown),
            count(FindingRule::PackageDenied),
        );
        decide(all, cap, summary)
    }
}

/// Why a date did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date of the form YYYY-MM-DD")]
pub struct DateError(pub String);

/// A calendar date (UTC), as `exceptions[].until` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    days: i64,
}

impl Date {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        let err = || DateError(s.chars().take(64).collect());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let num =
            |r: std::ops::Range<usize>| s.get(r).filter(|x| x.bytes().all(|c| c.is_ascii_digit()))?.parse::<i64>().ok();
        let (y, m, d) = (num(0..4).ok_or_else(err)?, num(5..7).ok_or_else(err)?, num(8..10).ok_or_else(err)?);
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !(1..=12).contains(&m) || d < 1 || d > len[(m - 1) as usize] {
            return Err(err());
        }
        // Days since 1970-01-01 (H. Hinnant's days_from_civil).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Ok(Date { days: era * 146_097 + doe - 719_468 })
    }

    /// Whether `now` is on or before this date (UTC).
    pub fn covers(self, now: SystemTime) -> bool {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        secs.div_euclid(86_400) <= self.days
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // civil_from_days
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// A vulnerability let through until a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// The vulnerability id, upper case.
    pub id: String,
    /// The last day it applies (UTC).
    pub until: Date,
    /// Why, for the report.
    pub reason: String,
}

/// What a vulnerability report must satisfy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VulnRules {
    /// Deny vulnerabilities at or above this severity.
    pub severity: Option<Severity>,
    /// Deny these vulnerability ids (upper case) whatever their severity.
    pub deny: Vec<String>,
    /// Let these through until their date.
    pub exceptions: Vec<Exception>,
    /// The report's scan may be at most this old.
    pub max_age: Option<Duration>,
}

impl VulnRules {
    fn finding(&self, v: &Vulnerability, now: SystemTime) -> Option<Finding> {
        let item = v.id.clone();
        let on = v.package.as_deref().map(|p| format!(" in {p}")).unwrap_or_default();
        let (rule, why) = if self.deny.contains(&v.id) {
            (FindingRule::CveDenied, format!("listed in denyCves{on}"))
        } else if self.severity.is_some_and(|s| v.severity >= s) {
            let score = v.score.map(|s| format!(" ({s})")).unwrap_or_default();
            (FindingRule::Severity, format!("severity {}{score}{on}", v.severity.as_str()))
        } else {
            return None;
        };
        let exception = self.exceptions.iter().find(|e| e.id == v.id);
        Some(match exception {
            Some(e) if e.until.covers(now) => Finding {
                rule: FindingRule::ExceptionApplied,
                item,
                detail: format!("{why}; excepted until {}: {}", e.until, e.reason),
            },
            Some(e) => Finding { rule, item, detail: format!("{why}; exception expired after {}", e.until) },
            None => Finding { rule, item, detail: why },
        })
    }

    /// Evaluates a report scanned at `scanned_at` (the report's own time, or
    /// the attachment's creation time when the report has none).
    pub fn evaluate(
        &self,
        report: &VulnReport,
        scanned_at: Option<SystemTime>,
        now: SystemTime,
        cap: usize,
    ) -> Decision {
        let mut all: Vec<Finding> = Vec::new();
        let mut seen = HashSet::new();
        if let Some(max) = self.max_age {
            let scan = humantime::format_duration(max);
            match scanned_at {
                None => all.push(Finding {
                    rule: FindingRule::ScanTimeUnknown,
                    item: report.tool.clone(),
                    detail: format!("the scan time is unknown; maxAge is {scan}"),
                }),
                Some(t) if now.duration_since(t).unwrap_or_default() > max => all.push(Finding {
                    rule: FindingRule::TooOld,
                    item: report.tool.clone(),
                    detail: format!("scanned at {}, older than maxAge {scan}", humantime::format_rfc3339_seconds(t)),
                }),
                Some(_) => {}
            }
        }
        for v in &report.vulnerabilities {
            if let Some(f) = self.finding(v, now)
                && seen.insert(f.clone())
            {
                all.push(f);
            }
        }
        let worst = report.vulnerabilities.iter().map(|v| v.severity).max();
        let summary = format!(
            "{}: {} results, worst {}; {} denying, {} excepted",
            if report.tool.is_empty() { "SARIF" } else { &report.tool },
            report.vulnerabilities.len(),
            worst.map_or("none", Severity::as_str),
            all.iter().filter(|f| f.rule.denies()).count(),
            all.iter().filter(|f| f.rule == FindingRule::ExceptionApplied).count(),
        );
        decide(all, cap, summary)
    }
}
