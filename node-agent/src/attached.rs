//! The attached-artifact verifiers `sbom` and `vulnerability`: what is
//! inside the image, as SBOMs and vulnerability reports attached to it as
//! OCI referrers say.
//!
//! Discovery goes through the same referrers path as signatures (the API,
//! or the tag-schema fallback inside the registry client), preferring the
//! configured artifact types so junk referrers cannot push them out of a
//! bounded list. Candidates are examined newest first by their
//! `org.opencontainers.image.created` annotation, at most
//! [`MAX_CANDIDATES`], within the decision's shared [`Budget`]. For each:
//! the manifest is fetched (at most [`MAX_ATTACHMENT_MANIFEST_BYTES`]), its
//! `subject` must be the image; with `requireSigned` its own Notation or
//! cosign signature (the attachment's manifest digest as the signed subject)
//! must verify under the named trust sets before its document is fetched;
//! the document (at most `maxBytes`) is parsed by `pullgate-sbom`, and must
//! bind to this image. The first candidate that passes all of that decides,
//! through the rules; every candidate passed over is listed in the report
//! with why. No usable attachment is a deny ("require an SBOM/report").

use crate::config::{Config, Discovery, NotationTrust, SigstoreTrust, TrustSet, VerifierKind};
use crate::report::VerifierRun;
use crate::verify::{Budget, Subject};
use pullgate_reference::Digest;
use pullgate_registry::types::{Descriptor, ImageManifest, OCI_MANIFEST, ReferrersSource};
use pullgate_registry::{Client, Repository};
use pullgate_sbom::{Binding, Decision, ImageIds, SbomKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// OCI annotation giving an artifact's creation time (RFC 3339).
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// Most attachments examined per verifier run.
pub const MAX_CANDIDATES: usize = 8;
/// Largest attachment manifest fetched (real ones are under 1 KiB).
pub const MAX_ATTACHMENT_MANIFEST_BYTES: u64 = 64 * 1024;
/// Most findings kept in a report.
pub const MAX_FINDINGS: usize = 20;
/// Most passed-over attachments listed in a report.
const MAX_IGNORED: usize = 16;
/// Longest finding detail kept in a report.
const MAX_DETAIL: usize = 300;

/// The config's `[sbom]` / `[vulnerability]` policies and the trust sets
/// they name, carried to the verifiers with the subject.
#[derive(Debug, Clone, Default)]
pub struct Attachments {
    sbom: Option<Arc<crate::config::SbomPolicy>>,
    vulnerability: Option<Arc<crate::config::VulnerabilityPolicy>>,
    trust: BTreeMap<String, TrustSet>,
}

impl Attachments {
    /// What `cfg` configures for the attached-artifact verifiers.
    pub fn of(cfg: &Config) -> Arc<Attachments> {
        let mut trust = BTreeMap::new();
        let discoveries = [cfg.sbom.as_ref().map(|s| &s.discovery), cfg.vulnerability.as_ref().map(|v| &v.discovery)];
        for name in discoveries.into_iter().flatten().filter_map(|d| d.signed_by.as_ref()).flatten() {
            let set = match cfg.trust.get(name) {
                Some(s) => s.clone(),
                None if name == crate::config::DEFAULT_TRUST => {
                    TrustSet { notation: cfg.notation.clone(), sigstore: cfg.sigstore.clone() }
                }
                None => continue,
            };
            trust.insert(name.clone(), set);
        }
        Arc::new(Attachments { sbom: cfg.sbom.clone(), vulnerability: cfg.vulnerability.clone(), trust })
    }
}

/// What an attached-artifact verifier found, for the report and policies
/// (`input.verification[].attached`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedReport {
    /// The attachment (manifest digest) whose document decided, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Its artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Who signed it, when `requireSigned` (the signature verifier's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
    /// One line: format, tool, counts.
    pub summary: String,
    /// What decided: denied licences and packages, vulnerabilities, exceptions applied (capped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingReport>,
    /// Findings left out by the cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
    /// Attachments passed over, and why (capped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<IgnoredAttachment>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One finding that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingReport {
    /// `license-denied`, `package-denied`, `severity`, `cve-denied`, `exception-applied`, …
    pub rule: String,
    /// The package (purl) or vulnerability id.
    pub item: String,
    /// Why.
    pub detail: String,
}

/// An attachment that was not believed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredAttachment {
    /// Its manifest digest.
    pub manifest: String,
    /// Why it was passed over.
    pub reason: String,
}

/// Which attached-artifact verifier runs.
#[derive(Clone, Copy)]
enum Kind {
    Sbom,
    Vulnerability,
}

impl Kind {
    fn verifier(self) -> VerifierKind {
        match self {
            Kind::Sbom => VerifierKind::Sbom,
            Kind::Vulnerability => VerifierKind::Vulnerability,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Sbom => "SBOM",
            Kind::Vulnerability => "vulnerability report",
        }
    }
}

/// Runs the `sbom` verifier on `subject`.
pub(crate) async fn sbom(client: &Client, subject: &Subject, budget: &mut Budget) -> VerifierRun {
    run(client, subject, budget, Kind::Sbom).await
}

/// Runs the `vulnerability` verifier on `subject`.
pub(crate) async fn vulnerability(client: &Client, subject: &Subject, budget: &mut Budget) -> VerifierRun {
    run(client, subject, budget, Kind::Vulnerability).await
}

fn new_run(kind: Kind, repo: &Repository) -> VerifierRun {
    VerifierRun {
        verifier: kind.verifier().as_str().into(),
        result: "error".into(),
        reason: String::new(),
        registry: Some(repo.host.clone()),
        referrers: None,
        signatures: Vec::new(),
        subject: None,
        platform: None,
        attached: None,
    }
}

fn finish(mut run: VerifierRun, result: &str, reason: String, report: AttachedReport) -> VerifierRun {
    run.result = result.into();
    run.reason = reason;
    run.attached = Some(report);
    run
}

/// A candidate that got through to a decision.
struct Believed {
    manifest: String,
    artifact_type: String,
    signed: Option<String>,
    decision: Decision,
}

/// The state of one run: the report being built.
struct Exam<'a> {
    client: &'a Client,
    subject: &'a Subject,
    repo: Repository,
    discovery: &'a Discovery,
    report: AttachedReport,
    config_digest: Option<Option<String>>,
}

impl Exam<'_> {
    fn ignore(&mut self, manifest: &str, reason: String) {
        tracing::debug!(manifest, reason = %reason, "attachment ignored");
        if self.report.ignored.len() < MAX_IGNORED {
            let reason = reason.chars().take(MAX_DETAIL).collect();
            self.report.ignored.push(IgnoredAttachment { manifest: manifest.into(), reason });
        }
    }
}

async fn run(client: &Client, subject: &Subject, budget: &mut Budget, kind: Kind) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let run = new_run(kind, &repo);
    let a = subject.attachments.clone();
    let discovery = match kind {
        Kind::Sbom => a.sbom.as_ref().map(|p| &p.discovery),
        Kind::Vulnerability => a.vulnerability.as_ref().map(|p| &p.discovery),
    };
    let Some(discovery) = discovery else {
        let reason = format!("no [{}] table in the config", kind.verifier().as_str());
        return finish(run, "error", reason, AttachedReport::default());
    };
    let digest = subject.digest.to_string();
    let wanted = |d: &Descriptor| d.artifact_type.as_ref().is_some_and(|t| discovery.artifact_types.contains(t));
    let listed = client.referrers_preferring(&repo, &digest, None, &wanted, budget.until).await;
    let mut run = run;
    let referrers = match listed {
        Ok(r) => r,
        Err(e) => return finish(run, "error", format!("listing attachments: {e}"), AttachedReport::default()),
    };
    run.referrers = Some(match referrers.source {
        ReferrersSource::Api => "referrers-api".into(),
        ReferrersSource::TagSchema => "tag-schema".into(),
    });
    let mut exam = Exam { client, subject, repo, discovery, report: AttachedReport::default(), config_digest: None };
    let mut candidates: Vec<&Descriptor> = referrers.descriptors.iter().filter(|d| wanted(d)).collect();
    // Newest first; undated ones last; the digest breaks ties.
    candidates.sort_by_key(|d| (std::cmp::Reverse(created(&d.annotations)), d.digest.clone()));
    if candidates.len() > MAX_CANDIDATES {
        for d in &candidates[MAX_CANDIDATES..] {
            exam.ignore(&d.digest, format!("more than {MAX_CANDIDATES} attachments; older ones not examined"));
        }
        candidates.truncate(MAX_CANDIDATES);
    }
    for d in candidates {
        match examine(&mut exam, &a, d, budget, kind).await {
            Ok(Some(b)) => return decided(run, exam.report, b, kind),
            Ok(None) => {}
            Err(reason) => return finish(run, "error", reason, exam.report),
        }
        if budget.summary().is_some() {
            break;
        }
    }
    let ignored = exam.report.ignored.len();
    let mut reason = format!("no usable {} attached to {digest}", kind.noun());
    if ignored > 0 {
        reason.push_str(&format!(" ({ignored} ignored: {})", exam.report.ignored[0].reason));
    }
    if let Some(b) = budget.summary() {
        reason.push_str(&format!("; {b}"));
    }
    exam.report.summary = reason.clone();
    finish(run, "fail", reason, exam.report)
}

fn decided(run: VerifierRun, mut report: AttachedReport, b: Believed, kind: Kind) -> VerifierRun {
    let d = b.decision;
    report.document = Some(b.manifest.clone());
    report.artifact_type = Some(b.artifact_type);
    report.signed = b.signed.map(|s| s.chars().take(MAX_DETAIL).collect());
    report.summary = d.summary.clone();
    report.omitted = d.omitted;
    report.findings = d
        .findings
        .iter()
        .map(|f| FindingReport {
            rule: f.rule.as_str().into(),
            item: f.item.chars().take(MAX_DETAIL).collect(),
            detail: f.detail.chars().take(MAX_DETAIL).collect(),
        })
        .collect();
    let denying: Vec<String> = d
        .findings
        .iter()
        .filter(|f| f.rule.denies())
        .take(3)
        .map(|f| format!("{} {}", f.rule.as_str(), f.item))
        .collect();
    let (result, reason) = if d.allowed {
        ("pass", format!("{} {} passes: {}", kind.noun(), b.manifest, d.summary))
    } else {
        let more = d.findings.iter().filter(|f| f.rule.denies()).count() + d.omitted;
        (
            "fail",
            format!("{} {} denies ({more} findings: {}): {}", kind.noun(), b.manifest, denying.join(", "), d.summary),
        )
    };
    finish(run, result, reason, report)
}

fn created(annotations: &BTreeMap<String, String>) -> Option<SystemTime> {
    annotations.get(CREATED_ANNOTATION).and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok())
}

/// Examines one candidate: `Ok(Some)` when it decides, `Ok(None)` when it is
/// passed over (recorded), `Err` on a registry failure that is no one's junk.
async fn examine(
    exam: &mut Exam<'_>,
    a: &Attachments,
    d: &Descriptor,
    budget: &mut Budget,
    kind: Kind,
) -> Result<Option<Believed>, String> {
    if d.media_type != OCI_MANIFEST {
        exam.ignore(&d.digest, format!("listed as {:?}, not an OCI image manifest", d.media_type));
        return Ok(None);
    }
    if d.size > MAX_ATTACHMENT_MANIFEST_BYTES {
        exam.ignore(&d.digest, format!("manifest is {} bytes, more than {MAX_ATTACHMENT_MANIFEST_BYTES}", d.size));
        return Ok(None);
    }
    if !budget.allow(d.size) {
        return Ok(None);
    }
    let m = match exam.client.manifest_by_digest_limited(&exam.repo, &d.digest, d.size, budget.until).await {
        Ok(m) => m,
        Err(e) => return skip_or_fail(exam, &d.digest, e),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&m.bytes) else {
        exam.ignore(&d.digest, "not an OCI image manifest".into());
        return Ok(None);
    };
    let image = exam.subject.digest.to_string();
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(image.as_str()) {
        exam.ignore(&d.digest, format!("its subject is not {image}"));
        return Ok(None);
    }
    let artifact_type = manifest.artifact_type.clone().unwrap_or_else(|| manifest.config.media_type.clone());
    if !exam.discovery.artifact_types.contains(&artifact_type) {
        exam.ignore(&d.digest, format!("its manifest says artifact type {artifact_type:?}, the list said otherwise"));
        return Ok(None);
    }
    let signed = match &exam.discovery.signed_by {
        None => None,
        Some(names) => match signature(exam, a, names, &d.digest, d.size, budget).await {
            Ok(who) => Some(who),
            Err(why) => {
                exam.ignore(&d.digest, format!("not believed: {why}"));
                return Ok(None);
            }
        },
    };
    let [layer] = manifest.layers.as_slice() else {
        exam.ignore(
            &d.digest,
            format!("has {} layers; an attachment carries its document as one layer", manifest.layers.len()),
        );
        return Ok(None);
    };
    let Some(bytes) = document(exam, &d.digest, layer, budget).await? else { return Ok(None) };
    let scanned = created(&manifest.annotations).or_else(|| created(&d.annotations));
    let decision = match kind {
        Kind::Sbom => sbom_decision(exam, &d.digest, &artifact_type, layer, &bytes).await,
        Kind::Vulnerability => report_decision(exam, a, &d.digest, &bytes, scanned).await,
    };
    Ok(decision.map(|decision| Believed { manifest: d.digest.clone(), artifact_type, signed, decision }))
}

fn skip_or_fail<T>(
    exam: &mut Exam<'_>,
    manifest: &str,
    e: pullgate_registry::RegistryError,
) -> Result<Option<T>, String> {
    use pullgate_registry::RegistryError as E;
    match &e {
        E::NotFound { .. } | E::TooLarge { .. } | E::Invalid { .. } => {
            exam.ignore(manifest, format!("cannot be fetched: {e}"));
            Ok(None)
        }
        _ => Err(format!("fetching attachment {manifest}: {e}")),
    }
}

/// Fetches the attachment's document (at most `maxBytes`).
async fn document(
    exam: &mut Exam<'_>,
    manifest: &str,
    layer: &Descriptor,
    budget: &mut Budget,
) -> Result<Option<Vec<u8>>, String> {
    let max = exam.discovery.max_bytes;
    if layer.size > max {
        exam.ignore(manifest, format!("its document is {} bytes, more than maxBytes {max}; not fetched", layer.size));
        return Ok(None);
    }
    if !budget.allow(layer.size) {
        return Ok(None);
    }
    match exam.client.blob(&exam.repo, layer, max, budget.until).await {
        Ok(b) => Ok(Some(b)),
        Err(e) => skip_or_fail(exam, manifest, e),
    }
}

async fn sbom_decision(
    exam: &mut Exam<'_>,
    manifest: &str,
    artifact_type: &str,
    layer: &Descriptor,
    bytes: &[u8],
) -> Option<Decision> {
    let a = exam.subject.attachments.clone();
    let policy = a.sbom.as_ref()?;
    let kind = SbomKind::from_media_type(artifact_type).or_else(|| SbomKind::from_media_type(&layer.media_type));
    let doc = match pullgate_sbom::parse_sbom(bytes, kind, exam.discovery.max_bytes as usize) {
        Ok(d) => d,
        Err(e) => {
            exam.ignore(manifest, format!("unreadable SBOM: {e}"));
            return None;
        }
    };
    let image = exam.subject.digest.to_string();
    match doc.describes.binding(ImageIds { manifest: &image, config: None }) {
        Binding::Bound => Some(policy.rules.evaluate(&doc, MAX_FINDINGS)),
        Binding::Unclaimed => {
            exam.ignore(manifest, format!("the SBOM ({}) names no image digest; it must describe {image}", doc.format));
            None
        }
        Binding::Other(d) => {
            exam.ignore(manifest, format!("the SBOM describes {d}, not {image}"));
            None
        }
    }
}

async fn report_decision(
    exam: &mut Exam<'_>,
    a: &Attachments,
    manifest: &str,
    bytes: &[u8],
    created: Option<SystemTime>,
) -> Option<Decision> {
    let policy = a.vulnerability.as_ref()?;
    let report = match pullgate_sbom::parse_report(bytes, exam.discovery.max_bytes as usize) {
        Ok(r) => r,
        Err(e) => {
            exam.ignore(manifest, format!("unreadable report: {e}"));
            return None;
        }
    };
    let image = exam.subject.digest.to_string();
    let mut binding = report.describes.binding(ImageIds { manifest: &image, config: None });
    if matches!(binding, Binding::Other(_)) {
        let config = image_config(exam).await;
        binding = report.describes.binding(ImageIds { manifest: &image, config: config.as_deref() });
    }
    if let Binding::Other(d) = binding {
        exam.ignore(manifest, format!("the report is for image {d}, not {image} (nor its config)"));
        return None;
    }
    let scanned = report.scanned_at.or(created);
    Some(policy.rules.evaluate(&report, scanned, SystemTime::now(), MAX_FINDINGS))
}

/// The image's config digest (Trivy's `imageID`), fetched once per run.
async fn image_config(exam: &mut Exam<'_>) -> Option<String> {
    if let Some(c) = &exam.config_digest {
        return c.clone();
    }
    let digest = exam.subject.digest.to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let limit = pullgate_registry::MAX_MANIFEST_BYTES;
    let got = exam.client.manifest_by_digest_limited(&exam.repo, &digest, limit, deadline).await.ok();
    let config = got.and_then(|m| serde_json::from_slice::<ImageManifest>(&m.bytes).ok()).map(|m| m.config.digest);
    exam.config_digest = Some(config.clone());
    config
}

/// Verifies the attachment's own signature under the trust sets `names`:
/// Notation first where a set has Notation trust, then cosign.
async fn signature(
    exam: &Exam<'_>,
    a: &Attachments,
    names: &[String],
    manifest: &str,
    size: u64,
    budget: &mut Budget,
) -> Result<String, String> {
    let Ok(digest) = Digest::parse(manifest) else { return Err(format!("{manifest:?} is not a digest")) };
    let subject = Subject {
        reference: exam.subject.reference.clone(),
        digest,
        media_type: OCI_MANIFEST.into(),
        size,
        examine_time: exam.subject.examine_time,
        attachments: Arc::default(),
    };
    let sets: Vec<(&str, &TrustSet)> = names.iter().filter_map(|n| a.trust.get(n).map(|s| (n.as_str(), s))).collect();
    let notation: Vec<(&str, &NotationTrust)> =
        sets.iter().filter_map(|(n, s)| s.notation.as_ref().map(|t| (*n, t))).collect();
    let sigstore: Vec<(&str, &SigstoreTrust)> =
        sets.iter().filter_map(|(n, s)| s.sigstore.as_ref().map(|t| (*n, t))).collect();
    let mut why = Vec::new();
    if !notation.is_empty() {
        let r = crate::verify::notation(exam.client, &notation, 1, &subject, budget).await;
        if r.result == "pass" {
            return Ok(format!("notation: {}", r.reason));
        }
        why.push(format!("notation: {}", r.reason));
    }
    if !sigstore.is_empty() {
        let r = crate::verify::cosign(exam.client, &sigstore, 1, &subject, budget).await;
        if r.result == "pass" {
            return Ok(format!("cosign: {}", r.reason));
        }
        why.push(format!("cosign: {}", r.reason));
    }
    if why.is_empty() {
        why.push("none of its trust sets has Notation or Sigstore trust".into());
    }
    Err(why.join("; "))
}
