//! The attached-artifact verifiers `sbom` and `vulnerability`: what is
//! inside the image, as SBOMs and vulnerability reports attached to it as
//! OCI referrers say.
//!
//! Discovery goes through the same referrers path as signatures (the API,
//! or the tag-schema fallback inside the registry client), preferring the
//! configured artifact types so junk referrers cannot push them out of a
//! bounded list. The list is unsigned (a tag-schema index anyone able to push
//! can rewrite, a mirror, the cluster cache tier), so its
//! `org.opencontainers.image.created` annotations are only a hint for the
//! order candidates are fetched in; at most [`MAX_CANDIDATES`] are examined,
//! within the decision's shared [`Budget`], and the report says how many were
//! left out. For each: the manifest is fetched (at most
//! [`MAX_ATTACHMENT_MANIFEST_BYTES`]), its `subject` must be the image; with
//! `requireSigned` its own Notation or cosign signature (the attachment's
//! manifest digest as the signed subject) must verify under the named trust
//! sets before its document is fetched; the document (at most `maxBytes`) is
//! parsed by `pullgate-sbom`, and must bind to this image.
//!
//! Every candidate that passes all of that is *believed*, and every believed
//! one counts, so a list that omits or reorders entries cannot pick the
//! verdict from the believed ones it keeps: any believed SBOM that denies
//! denies; for vulnerability reports, any believed report within `maxAge`
//! (its scan time, else the fetched manifest's own creation annotation, never
//! the list's) that denies denies, and when none is within `maxAge` the
//! newest one's `too-old` denies. The attachment named in the report is the
//! newest deciding one by its manifest's own annotation. Every candidate
//! passed over is listed with why. No believed attachment, or a budget that
//! ran out before the examined candidates were all examined, is a deny.

use crate::config::{Config, Discovery, NotationTrust, SigstoreTrust, TrustSet, VerifierKind};
use crate::report::VerifierRun;
use crate::verify::{Budget, Subject};
use pullgate_reference::Digest;
use pullgate_registry::types::{Descriptor, ImageManifest, OCI_MANIFEST, ReferrersSource};
use pullgate_registry::{Client, Repository};
use pullgate_sbom::{Binding, Decision, FindingRule, ImageIds, SbomKind};
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
    /// How many attachments were believed (all of them count towards the verdict).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub believed: usize,
    /// Candidates listed beyond [`MAX_CANDIDATES`], not examined.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_examined: usize,
}

impl AttachedReport {
    /// `explain`'s lines for this report: the deciding document, its
    /// findings, the attachments passed over (each line indented by two).
    pub fn render(&self) -> String {
        let mut s = String::new();
        match &self.document {
            Some(d) => s.push_str(&format!(
                "  document {d} ({}){}: {}\n",
                self.artifact_type.as_deref().unwrap_or("-"),
                self.signed.as_deref().map(|w| format!(" signed {w}")).unwrap_or_default(),
                self.summary
            )),
            None => s.push_str(&format!("  no document decided: {}\n", self.summary)),
        }
        if self.believed > 1 {
            s.push_str(&format!("  {} attachments believed, all counted\n", self.believed));
        }
        for f in &self.findings {
            s.push_str(&format!("  finding {} {}: {}\n", f.rule, f.item, f.detail));
        }
        if self.omitted > 0 {
            s.push_str(&format!("  {} more findings not kept\n", self.omitted));
        }
        for i in &self.ignored {
            s.push_str(&format!("  ignored {}: {}\n", i.manifest, i.reason));
        }
        if self.not_examined > 0 {
            s.push_str(&format!(
                "  {} more candidates listed, not examined (at most {MAX_CANDIDATES})\n",
                self.not_examined
            ));
        }
        s
    }
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
    /// Its fetched manifest's own `created` annotation (covered by its signature).
    created: Option<SystemTime>,
    decision: Decision,
}

impl Believed {
    /// Under `maxAge`, a report too old or of unknown age does not count.
    fn current(&self) -> bool {
        !self.decision.findings.iter().any(|f| matches!(f.rule, FindingRule::TooOld | FindingRule::ScanTimeUnknown))
    }
}

/// Picks the believed attachment that decides: the newest (by its own
/// annotation) denying one among those that count, else the newest counting
/// one; when none counts (all too old), the newest, whose `too-old` denies.
fn deciding(mut believed: Vec<Believed>) -> Option<Believed> {
    believed.sort_by_key(|b| (std::cmp::Reverse(b.created), b.manifest.clone()));
    let counted = believed.iter().position(Believed::current);
    let denying = believed.iter().position(|b| b.current() && !b.decision.allowed);
    let at = denying.or(counted).unwrap_or(0);
    (at < believed.len()).then(|| believed.swap_remove(at))
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
    // A well-formed shared list can omit the newest report: never use one here.
    let client = &client.without_shared_lists();
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
    let source = match referrers.source {
        ReferrersSource::Api => "referrers-api".into(),
        ReferrersSource::TagSchema => "tag-schema".into(),
    };
    run.referrers = Some(crate::client::via_mirror(source, referrers.served_by.clone()));
    let mut exam = Exam { client, subject, repo, discovery, report: AttachedReport::default(), config_digest: None };
    let mut candidates: Vec<&Descriptor> = referrers.descriptors.iter().filter(|d| wanted(d)).collect();
    // Fetch order only (the list is unsigned): newest first as listed; undated last; the digest breaks ties.
    candidates.sort_by_key(|d| (std::cmp::Reverse(created(&d.annotations)), d.digest.clone()));
    if candidates.len() > MAX_CANDIDATES {
        for d in &candidates[MAX_CANDIDATES..] {
            let why =
                format!("not examined: more than {MAX_CANDIDATES} candidates, and the list says this one is older");
            exam.ignore(&d.digest, why);
        }
        exam.report.not_examined = candidates.len() - MAX_CANDIDATES;
        candidates.truncate(MAX_CANDIDATES);
    }
    let mut believed = Vec::new();
    for d in candidates {
        match examine(&mut exam, &a, d, budget, kind).await {
            Ok(Some(b)) => believed.push(b),
            Ok(None) => {}
            Err(reason) => return finish(run, "error", reason, exam.report),
        }
        if budget.summary().is_some() {
            break;
        }
    }
    exam.report.believed = believed.len();
    // A budget that ran out may have kept a denying attachment from being examined.
    if let (Some(b), false) = (budget.summary(), believed.is_empty()) {
        let reason = format!("{} not decided: {b} before every listed one was examined", kind.noun());
        exam.report.summary = reason.clone();
        return finish(run, "fail", reason, exam.report);
    }
    if let Some(b) = deciding(believed) {
        return decided(run, exam.report, b, kind);
    }
    let ignored = exam.report.ignored.len();
    let mut reason = format!("no usable {} attached to {digest}", kind.noun());
    if ignored > 0 {
        reason.push_str(&format!(" ({ignored} ignored: {})", exam.report.ignored[0].reason));
    }
    if let Some(b) = budget.summary() {
        reason.push_str(&format!("; {b}"));
    }
    reason.push_str(&not_examined(&exam.report));
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
    let of = if report.believed > 1 { format!(" (decides among {} believed)", report.believed) } else { String::new() };
    let (result, reason) = if d.allowed {
        ("pass", format!("{} {} passes{of}: {}", kind.noun(), b.manifest, d.summary))
    } else {
        let more = d.findings.iter().filter(|f| f.rule.denies()).count() + d.omitted;
        (
            "fail",
            format!(
                "{} {} denies{of} ({more} findings: {}): {}",
                kind.noun(),
                b.manifest,
                denying.join(", "),
                d.summary
            ),
        )
    };
    let reason = reason + &not_examined(&report);
    finish(run, result, reason, report)
}

/// `; N more listed, not examined` when the list held more candidates than the cap.
fn not_examined(report: &AttachedReport) -> String {
    match report.not_examined {
        0 => String::new(),
        n => format!("; {n} more listed, not examined (at most {MAX_CANDIDATES})"),
    }
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
    // The manifest's own annotation (what a signature covers), never the list's.
    let created = created(&manifest.annotations);
    let decision = match kind {
        Kind::Sbom => sbom_decision(exam, &d.digest, &artifact_type, layer, &bytes).await,
        Kind::Vulnerability => report_decision(exam, a, &d.digest, &bytes, created).await,
    };
    Ok(decision.map(|decision| Believed { manifest: d.digest.clone(), artifact_type, signed, created, decision }))
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
