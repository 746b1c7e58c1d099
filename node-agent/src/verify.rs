//! Runs the verifiers a `verify` scope requires: discovers the artifacts
//! attached to the pulled digest in its registry, fetches them (bounded,
//! digest-checked) and hands the bytes to the pure verifier crates.
//!
//! Registry problems are errors (they go through the failure policy);
//! signatures that do not verify are failures (deny). Junk that anyone able
//! to push can attach (unusable list entries, oversized or malformed
//! artifacts) is skipped and noted, never an error; candidates are filtered
//! on what the list says before anything is fetched, examined in an order
//! junk cannot bias, and within one time and byte [`Budget`] per decision,
//! whose exhaustion is a deny. Every signature examined is recorded for the
//! report.

use crate::config::{Combine, DEFAULT_TRUST, NotationTrust, Requirements, ScopeTrust, SigstoreTrust, VerifierKind};
use crate::report::{CheckReport, SignatureFacts, SignatureReport, VerifierRun};
use pullgate_notation::StoreType;
use pullgate_reference::{Digest, Reference};
use pullgate_registry::types::{Descriptor, ImageManifest, Manifest, OCI_MANIFEST, ReferrersSource};
use pullgate_registry::{Client, MAX_MANIFEST_BYTES, Repository};
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Artifact type of Notation signature manifests.
pub const NOTATION_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";

/// The pulled image, as containerd described it.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The parsed reference.
    pub reference: Reference,
    /// The digest being pulled.
    pub digest: Digest,
    /// The descriptor's media type.
    pub media_type: String,
    /// The descriptor's size.
    pub size: u64,
    /// How long examining attached artifacts may take (at most [`EXAMINE_TIME`]): derived
    /// from the first requester's deadline, so junk ends in a deny before a short
    /// `deadlineMs` runs out (and the verifier's failure policy would decide).
    pub examine_time: Duration,
    /// The config's `[sbom]` / `[vulnerability]` policies, for those verifiers.
    pub attachments: std::sync::Arc<crate::attached::Attachments>,
}

/// How one verifier run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// The requirement is met.
    Pass,
    /// The requirement is not met: deny.
    Fail,
    /// No answer could be reached: the failure policy decides.
    Error,
}

impl RunResult {
    fn as_str(self) -> &'static str {
        match self {
            RunResult::Pass => "pass",
            RunResult::Fail => "fail",
            RunResult::Error => "error",
        }
    }
}

/// Longest time one decision spends examining attached artifacts, for all
/// the verifiers of a scope together. It ends well inside the verifier's
/// default 8 s deadline, so junk costs a deny with a report, never a
/// requester that gave up (and its failure policy).
pub const EXAMINE_TIME: Duration = Duration::from_millis(4_500);
/// Most bytes of attached artifacts (manifests, envelopes, payloads,
/// bundles) one decision fetches, for all its verifiers together.
pub const EXAMINE_BYTES: u64 = 32 * 1024 * 1024;
/// Largest Notation signature or Sigstore bundle manifest fetched (real ones
/// are under 2 KiB); larger ones are junk and are not fetched.
pub const MAX_SIGNATURE_MANIFEST_BYTES: u64 = 256 * 1024;
/// Notation's annotation listing the SHA-256 thumbprints of the signing
/// certificate chain (a JSON array of hex strings), on signature manifests
/// and copied into referrers lists.
pub const THUMBPRINT_ANNOTATION: &str = "io.cncf.notary.x509chain.thumbprint#S256";
/// Ignored artifacts listed one by one in a report; the rest are counted.
const MAX_IGNORED_LISTED: usize = 16;
/// Signatures that did not verify listed one by one in a report (with all
/// their checks); the rest are counted, so junk cannot make reports and the
/// decision log grow without bound.
const MAX_TRIED_LISTED: usize = 16;
/// Failures quoted in a verdict reason; the rest are counted.
const MAX_FAILURES_QUOTED: usize = 3;

/// The time and byte budget for examining attached artifacts in one decision.
///
/// Running out of it while examining what the registry served is a failure
/// (no valid signature: deny), not an error: anyone able to push can fill a
/// repository with junk, and a fail-open node must not allow because of it.
pub struct Budget {
    pub(crate) until: Instant,
    bytes_left: u64,
    examined: usize,
    exhausted: Option<String>,
}

impl Budget {
    /// [`EXAMINE_TIME`] and [`EXAMINE_BYTES`] from now, ending no later than `deadline`.
    pub fn new(deadline: Instant) -> Budget {
        Budget::with_limits(deadline, EXAMINE_TIME, EXAMINE_BYTES)
    }

    /// A budget of `time` and `bytes` from now, ending no later than `deadline`.
    pub fn with_limits(deadline: Instant, time: Duration, bytes: u64) -> Budget {
        Budget { until: (Instant::now() + time).min(deadline), bytes_left: bytes, examined: 0, exhausted: None }
    }

    /// A budget for re-deciding: the same end (so the decision's deadline
    /// holds), a fresh byte allowance, nothing examined yet.
    fn renewed(&self) -> Budget {
        Budget { until: self.until, bytes_left: EXAMINE_BYTES, examined: 0, exhausted: None }
    }

    /// When the budget's time ends.
    pub(crate) fn deadline(&self) -> Instant {
        self.until
    }

    /// True when `size` more bytes may be fetched now (and charges them).
    pub(crate) fn allow(&mut self, size: u64) -> bool {
        if self.exhausted.is_some() {
            return false;
        }
        if Instant::now() >= self.until {
            self.time_out();
            return false;
        }
        if size > self.bytes_left {
            self.exhausted = Some(format!("byte budget of {} MiB", EXAMINE_BYTES / (1024 * 1024)));
            return false;
        }
        self.bytes_left -= size;
        true
    }

    fn time_out(&mut self) {
        if self.exhausted.is_none() {
            self.exhausted = Some(format!("time budget of {} ms", EXAMINE_TIME.as_millis()));
        }
    }

    /// `budget exhausted after N candidates (…)`, once it ran out.
    pub(crate) fn summary(&self) -> Option<String> {
        self.exhausted.as_ref().map(|why| format!("budget exhausted after {} candidates ({why})", self.examined))
    }
}

/// Runs every required verifier and combines them; returns the combined
/// result, its reason and each run for the report. The verifiers share one
/// [`Budget`]; each verifies under the scope's trust sets `trust` only.
pub async fn run_all(
    trust: &[ScopeTrust<'_>],
    client: &Client,
    requirements: &Requirements,
    subject: &Subject,
    deadline: Instant,
) -> (RunResult, String, Vec<VerifierRun>) {
    let mut budget = Budget::with_limits(deadline, subject.examine_time.min(EXAMINE_TIME), EXAMINE_BYTES);
    run_with_budget(trust, client, requirements, subject, &mut budget).await
}

/// [`run_all`] within a budget the caller owns (one budget for every
/// manifest of a multi-platform image).
///
/// With a cluster tier, a shared referrers list or "no such tag" is only a
/// hint (it may be well-formed and wrong): a non-pass is re-decided once from
/// the registry with shared lists bypassed, before the same deadline.
pub async fn run_with_budget(
    trust: &[ScopeTrust<'_>],
    client: &Client,
    requirements: &Requirements,
    subject: &Subject,
    budget: &mut Budget,
) -> (RunResult, String, Vec<VerifierRun>) {
    let (result, reason, runs) = run_once(trust, client, requirements, subject, budget).await;
    // Attached-artifact verifiers never read shared lists: nothing to re-decide for them alone.
    let attached = |k: &&VerifierKind| matches!(k, VerifierKind::Sbom | VerifierKind::Vulnerability);
    let signatures = requirements.verifiers().iter().any(|k| !attached(&k));
    if result == RunResult::Pass || !signatures || !client.reads_shared_lists() {
        return (result, reason, runs);
    }
    tracing::info!(reference = %subject.reference, digest = %subject.digest, first = result.as_str(), "{REDECIDED}");
    let mut again = budget.renewed();
    let direct = client.without_shared_lists();
    let (result, reason, mut runs) = run_once(trust, &direct, requirements, subject, &mut again).await;
    again.examined += budget.examined;
    *budget = again;
    for run in &mut runs {
        run.reason = format!("{REDECIDED}; {}", run.reason);
    }
    (result, format!("{REDECIDED}: {reason}"), runs)
}

/// Marks a result re-decided from the registry after a non-pass with the
/// cluster tier's lists and tags (in reasons, so in the report's trace).
const REDECIDED: &str = "cluster: re-decided without shared lists";

/// One pass of [`run_with_budget`] with `client` as it is.
async fn run_once(
    trust: &[ScopeTrust<'_>],
    client: &Client,
    requirements: &Requirements,
    subject: &Subject,
    budget: &mut Budget,
) -> (RunResult, String, Vec<VerifierRun>) {
    let min = requirements.min_signatures();
    let needed = requirements.combine().needed(requirements.verifiers().len());
    let notation_sets: Vec<(&str, &NotationTrust)> =
        trust.iter().filter_map(|t| t.notation.map(|n| (t.name, n))).collect();
    let sigstore_sets: Vec<(&str, &SigstoreTrust)> =
        trust.iter().filter_map(|t| t.sigstore.map(|n| (t.name, n))).collect();
    let mut runs = Vec::new();
    for kind in requirements.verifiers() {
        let run = match kind {
            VerifierKind::Notation if notation_sets.is_empty() => {
                error_run(*kind, "none of the scope's trust sets has a Notation trust policy".into())
            }
            VerifierKind::Notation => notation(client, &notation_sets, min, subject, budget).await,
            VerifierKind::Cosign | VerifierKind::Sigstore if sigstore_sets.is_empty() => {
                error_run(*kind, "none of the scope's trust sets has Sigstore trust".into())
            }
            VerifierKind::Cosign => cosign(client, &sigstore_sets, min, subject, budget).await,
            VerifierKind::Sigstore => bundles(client, &sigstore_sets, min, subject, budget).await,
            VerifierKind::Sbom => crate::attached::sbom(client, subject, budget).await,
            VerifierKind::Vulnerability => crate::attached::vulnerability(client, subject, budget).await,
        };
        let result = match run.result.as_str() {
            "pass" => RunResult::Pass,
            "fail" => RunResult::Fail,
            _ => RunResult::Error,
        };
        runs.push((result, run));
        // Once enough have passed, skip the registry work of the rest.
        if runs.iter().filter(|(r, _)| *r == RunResult::Pass).count() >= needed {
            break;
        }
    }
    let (result, reason) = combine(requirements.combine(), requirements.verifiers().len(), &runs);
    (result, reason, runs.into_iter().map(|(_, r)| r).collect())
}

/// Combines the runs of `required` verifiers: enough passes is a pass; a
/// shortfall errors could still fill is an error (for the failure policy);
/// anything else fails.
fn combine(how: Combine, required: usize, runs: &[(RunResult, VerifierRun)]) -> (RunResult, String) {
    let needed = how.needed(required);
    let count = |r: RunResult| runs.iter().filter(|(res, _)| *res == r).count();
    let describe = |run: &VerifierRun| format!("{}: {}", run.verifier, run.reason);
    let of = |r: RunResult| runs.iter().filter(|(res, _)| *res == r).map(|(_, run)| describe(run)).collect::<Vec<_>>();
    let (passed, errors) = (count(RunResult::Pass), count(RunResult::Error));
    let counted = |list: Vec<String>| match how {
        Combine::AtLeast(n) => format!("{} of {required} passed, {n} needed: {}", passed, list.join("; ")),
        _ => list.join("; "),
    };
    if passed >= needed {
        (RunResult::Pass, counted(of(RunResult::Pass)))
    } else if passed + errors >= needed && errors > 0 {
        (RunResult::Error, counted(of(RunResult::Error)))
    } else if how == Combine::All {
        (RunResult::Fail, of(RunResult::Fail).into_iter().next().unwrap_or_default())
    } else {
        let all: Vec<String> = runs.iter().map(|(_, r)| describe(r)).collect();
        match how {
            Combine::Any => (RunResult::Fail, format!("none passed: {}", all.join("; "))),
            _ => (RunResult::Fail, counted(all)),
        }
    }
}

fn error_run(kind: VerifierKind, reason: String) -> VerifierRun {
    VerifierRun {
        verifier: kind.as_str().into(),
        result: RunResult::Error.as_str().into(),
        reason,
        registry: None,
        referrers: None,
        signatures: Vec::new(),
        subject: None,
        platform: None,
        attached: None,
    }
}

/// Artifacts skipped without being verified, for the report: the first
/// [`MAX_IGNORED_LISTED`] one by one, the rest counted.
struct Ignored {
    listed: Vec<SignatureReport>,
    more: usize,
    notes: usize,
}

impl Ignored {
    /// Starts with the notes of a referrers list.
    fn new(notes: &[String]) -> Ignored {
        let mut i = Ignored { listed: Vec::new(), more: 0, notes: notes.len() };
        for n in notes {
            i.listed.push(SignatureReport {
                manifest: "referrers list".into(),
                envelope_media_type: String::new(),
                signer: None,
                policy: None,
                level: None,
                verified: false,
                checks: vec![CheckReport { check: "list".into(), status: "ignored".into(), reason: n.clone() }],
                facts: Default::default(),
                trust_set: None,
            });
        }
        i
    }

    fn push(&mut self, manifest: &str, why: String) {
        tracing::debug!(manifest, reason = %why, "attached artifact ignored");
        if self.listed.len() < MAX_IGNORED_LISTED {
            self.listed.push(ignored_signature(manifest, why));
        } else {
            self.more += 1;
        }
    }

    /// Number of artifacts (not list notes) ignored.
    fn count(&self) -> usize {
        self.listed.iter().filter(|s| s.checks.iter().any(|c| c.check == "artifact")).count() + self.more
    }

    /// `; N attached artifacts ignored; M referrers list notes …` for a verdict reason.
    fn suffix(&self) -> String {
        let mut s = String::new();
        let skipped = self.count();
        if skipped > 0 {
            s.push_str(&format!("; {skipped} attached artifacts ignored"));
        }
        if self.notes > 0 {
            s.push_str(&format!("; {} referrers list notes (see the report)", self.notes));
        }
        s
    }

    /// Appends everything to `run.signatures`, and the budget note if it ran out.
    fn finish(mut self, run: &mut VerifierRun, budget: &Budget) {
        if self.more > 0 {
            self.listed.push(ignored_signature("", format!("{} more attached artifacts ignored", self.more)));
        }
        if let Some(s) = budget.summary() {
            self.listed.push(SignatureReport {
                checks: vec![CheckReport { check: "budget".into(), status: "exhausted".into(), reason: s }],
                ..ignored_signature("", String::new())
            });
        }
        run.signatures.extend(self.listed);
    }
}

/// The outcome of fetching one candidate artifact.
enum Step<T> {
    /// Fetched and digest-checked.
    Got(T),
    /// Junk: recorded in [`Ignored`]; go on with the next candidate.
    Skip,
    /// The budget ran out: stop examining.
    Stop,
    /// The registry failed: the run ends in an error (or a deny on tampering).
    Fail(String, pullgate_registry::RegistryError),
}

/// Fetches and parses a candidate manifest listed as `d` (at most `limit`
/// bytes and at most the size the list gives), within the budget.
async fn candidate_manifest(
    client: &Client,
    repo: &Repository,
    d: &Descriptor,
    limit: u64,
    budget: &mut Budget,
    ignored: &mut Ignored,
) -> Step<(Manifest, ImageManifest)> {
    if d.size > limit {
        ignored.push(&d.digest, format!("its manifest is {} bytes, more than {limit}; not fetched", d.size));
        return Step::Skip;
    }
    if !budget.allow(d.size) {
        return Step::Stop;
    }
    budget.examined += 1;
    match client.manifest_by_digest_limited(repo, &d.digest, d.size, budget.until).await {
        Ok(m) => match serde_json::from_slice::<ImageManifest>(&m.bytes) {
            Ok(parsed) => Step::Got((m, parsed)),
            Err(e) => {
                ignored.push(&d.digest, format!("not an OCI image manifest: {e}"));
                Step::Skip
            }
        },
        Err(e) => fetch_failure(e, &d.digest, format!("fetching signature manifest {}", d.digest), budget, ignored),
    }
}

/// Fetches a candidate blob (`layer` of `manifest`, at most `limit` bytes), within the budget.
async fn candidate_blob(
    client: &Client,
    repo: &Repository,
    manifest: &str,
    layer: &Descriptor,
    limit: u64,
    budget: &mut Budget,
    ignored: &mut Ignored,
) -> Step<Vec<u8>> {
    if layer.size > limit {
        ignored.push(manifest, format!("its {}-byte blob is larger than {limit} bytes; not fetched", layer.size));
        return Step::Skip;
    }
    if !budget.allow(layer.size) {
        return Step::Stop;
    }
    match client.blob(repo, layer, limit, budget.until).await {
        Ok(b) => Step::Got(b),
        Err(e) => fetch_failure(e, manifest, format!("fetching blob {}", layer.digest), budget, ignored),
    }
}

/// Classifies a failed candidate fetch: junk is skipped, the deadline of the
/// budget stops the examination (the list was a usable answer, so this is
/// a deny), anything else the registry failed to do is an error.
fn fetch_failure<T>(
    e: pullgate_registry::RegistryError,
    manifest: &str,
    what: String,
    budget: &mut Budget,
    ignored: &mut Ignored,
) -> Step<T> {
    if skippable(&e) {
        ignored.push(manifest, format!("cannot be fetched: {e}"));
        Step::Skip
    } else if matches!(e, pullgate_registry::RegistryError::Deadline { .. }) {
        budget.time_out();
        Step::Stop
    } else {
        Step::Fail(what, e)
    }
}

/// An attacker cannot predict this order: a per-verification random key.
fn shuffle_key(state: &RandomState, digest: &str) -> u64 {
    state.hash_one(digest)
}

fn source_name(source: ReferrersSource) -> String {
    match source {
        ReferrersSource::Api => "referrers-api".into(),
        ReferrersSource::TagSchema => "tag-schema".into(),
    }
}

/// A run stopped before it started because the shared budget is spent.
fn spent_run(mut run: VerifierRun, budget: &Budget) -> VerifierRun {
    run.result = RunResult::Fail.as_str().into();
    run.reason = format!("no valid signature examined: {}", budget.summary().unwrap_or_default());
    run
}

/// SHA-256 thumbprints (lower-case hex) of the certificates of the `ca` and
/// `signingAuthority` stores the trust policy for `repository` names.
pub fn trusted_thumbprints(trust: &NotationTrust, repository: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(policy) = trust.policy.applicable_policy(repository) else { return out };
    for kind in [StoreType::Ca, StoreType::SigningAuthority] {
        for store in policy.stores_of(kind) {
            for cert in trust.store.certificates(store).unwrap_or_default() {
                let digest = pullgate_registry::sha256_digest(cert.der());
                out.insert(digest.trim_start_matches("sha256:").to_string());
            }
        }
    }
    out
}

/// Examination group of a Notation signature listed as `d`, from its
/// thumbprint annotation and before anything is fetched: 0 when its chain
/// names a trusted certificate, 1 when it has no readable annotation, 2 when
/// it names only certificates outside the trust store (it cannot verify).
fn thumbprint_group(d: &Descriptor, trusted: &HashSet<String>) -> usize {
    let listed = d.annotations.get(THUMBPRINT_ANNOTATION).and_then(|v| serde_json::from_str::<Vec<String>>(v).ok());
    match listed {
        Some(l) if l.iter().any(|t| trusted.contains(&t.to_ascii_lowercase())) => 0,
        None => 1,
        Some(_) => 2,
    }
}

/// A Notation signature manifest that passed the checks made before its
/// envelope is fetched.
struct NotationCandidate {
    manifest: Manifest,
    layer: Descriptor,
    rank: (bool, u64, u64),
}

/// Notation: referrers of artifact type `application/vnd.cncf.notary.signature`,
/// examined in an order junk cannot bias — signatures whose thumbprint
/// annotation names a certificate trusted by one of the scope's sets first,
/// then those without one, then those naming only untrusted ones; within
/// each, smallest first with a random tie-break — until `min` distinct
/// signers satisfy the trust policy of one of the sets, or the budget runs out.
pub(crate) async fn notation(
    client: &Client,
    sets: &[(&str, &NotationTrust)],
    min: usize,
    subject: &Subject,
    budget: &mut Budget,
) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut run = new_run(VerifierKind::Notation, &repo);
    if budget.exhausted.is_some() {
        return spent_run(run, budget);
    }
    // The sets whose trust policy applies to this repository.
    let mut applicable = Vec::new();
    let mut not_applicable = Vec::new();
    for (name, trust) in sets {
        match trust.policy.applicable_policy(&repo.to_string()) {
            Ok(p) => applicable.push((*name, *trust, p)),
            Err(e) if *name == DEFAULT_TRUST => not_applicable.push(e.to_string()),
            Err(e) => not_applicable.push(format!("trust set {name}: {e}")),
        }
    }
    if applicable.is_empty() {
        run.result = RunResult::Fail.as_str().into();
        run.reason = not_applicable.join("; ");
        return run;
    }
    if let Some((name, _, p)) =
        applicable.iter().find(|(_, _, p)| p.level() == pullgate_notation::VerificationLevel::Skip)
    {
        run.result = RunResult::Pass.as_str().into();
        let set = if *name == DEFAULT_TRUST { String::new() } else { format!(" (trust set {name})") };
        run.reason = format!(
            "trust policy {:?}{set}: trust policy {:?} has level skip: signatures are not verified",
            p.name(),
            p.name()
        );
        return run;
    }
    let trusted: HashSet<String> =
        applicable.iter().flat_map(|(_, t, _)| trusted_thumbprints(t, &repo.to_string())).collect();
    let prefer = |d: &Descriptor| thumbprint_group(d, &trusted) == 0;
    let listed = client.referrers_preferring(&repo, &digest, Some(NOTATION_ARTIFACT_TYPE), &prefer, budget.until).await;
    let referrers = match listed {
        Ok(r) => r,
        Err(e) => return registry_failure(run, "listing signatures".into(), &e),
    };
    run.referrers = Some(crate::client::via_mirror(source_name(referrers.source), referrers.served_by.clone()));
    let mut ignored = Ignored::new(&referrers.notes);
    let state = RandomState::new();
    let mut groups: [Vec<&Descriptor>; 3] = Default::default();
    for d in &referrers.descriptors {
        if d.media_type != OCI_MANIFEST {
            ignored.push(&d.digest, format!("listed as {:?}, not an OCI image manifest; not fetched", d.media_type));
        } else {
            groups[thumbprint_group(d, &trusted)].push(d);
        }
    }
    let usable: Vec<(&str, &NotationTrust)> = applicable.iter().map(|(n, t, _)| (*n, *t)).collect();
    let mut tally = Tally::new(min);
    for mut group in groups {
        group.sort_by_key(|d| (d.size, shuffle_key(&state, &d.digest)));
        let exam = Exam { client, subject, state: &state };
        match notation_group(&exam, &usable, &group, budget, &mut ignored, &mut tally).await {
            Ok(()) if tally.enough() => break,
            Ok(()) => {}
            Err((what, e)) => return registry_failure(run, what, &e),
        }
        if budget.exhausted.is_some() {
            break;
        }
    }
    let policy = applicable[0].2.name();
    notation_verdict(&mut run, policy, &tally, &ignored, budget, referrers.descriptors.is_empty(), subject);
    list_tried(&mut run, tally.tried.into_iter().map(|(r, _)| r).collect());
    ignored.finish(&mut run, budget);
    run
}

/// The parts of a verifier run every candidate examination needs.
struct Exam<'a> {
    client: &'a Client,
    subject: &'a Subject,
    state: &'a RandomState,
}

/// What one verifier run examined: every signature tried (report and
/// one-line summary) and the distinct signers among those that verified.
struct Tally {
    tried: Vec<(SignatureReport, String)>,
    signers: Vec<String>,
    needed: usize,
}

impl Tally {
    fn new(needed: usize) -> Tally {
        Tally { tried: Vec::new(), signers: Vec::new(), needed: needed.max(1) }
    }

    /// True once `needed` distinct signers verified.
    fn enough(&self) -> bool {
        self.signers.len() >= self.needed
    }

    /// Records a signature examined. A verified one counts only when its
    /// signer (`signer`: a key id, an identity or a certificate subject) is
    /// new; a repeat is recorded as not counted, so copies of one signer's
    /// signatures never make up `minSignatures`.
    fn record(&mut self, mut report: SignatureReport, summary: String, signer: Option<String>) {
        if report.verified {
            let signer = signer.unwrap_or_else(|| "an unnamed signer".into());
            if self.signers.contains(&signer) {
                report.verified = false;
                report.checks.push(CheckReport {
                    check: "signer".into(),
                    status: "duplicate".into(),
                    reason: format!("{signer} is already counted; minSignatures counts distinct signers"),
                });
            } else {
                self.signers.push(signer);
            }
        }
        self.tried.push((report, summary));
    }

    /// `; only K of N distinct signers verified (…)` when some but not enough verified.
    fn shortfall(&self) -> Option<String> {
        (!self.signers.is_empty() && !self.enough()).then(|| {
            format!(
                "only {} of {} distinct signers required verified ({})",
                self.signers.len(),
                self.needed,
                self.signers.join(", ")
            )
        })
    }
}

/// Appends the signatures examined to the report: the one that verified and
/// the first [`MAX_TRIED_LISTED`] others in full, then a count of the rest.
fn list_tried(run: &mut VerifierRun, tried: Vec<SignatureReport>) {
    let mut more = 0;
    for (i, r) in tried.into_iter().enumerate() {
        if r.verified || i < MAX_TRIED_LISTED {
            run.signatures.push(r);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        run.signatures.push(SignatureReport {
            checks: vec![CheckReport {
                check: "signature".into(),
                status: "failed".into(),
                reason: format!("{more} more signatures examined did not verify"),
            }],
            ..ignored_signature("", String::new())
        });
    }
}

/// Examines one group of signature manifests: fetches the manifests, then
/// the envelopes smallest first, verifying each under the trust sets `sets`
/// (the first that admits it wins) until the tally has enough signers.
async fn notation_group(
    exam: &Exam<'_>,
    sets: &[(&str, &NotationTrust)],
    group: &[&Descriptor],
    budget: &mut Budget,
    ignored: &mut Ignored,
    tally: &mut Tally,
) -> Result<(), (String, pullgate_registry::RegistryError)> {
    let (client, subject) = (exam.client, exam.subject);
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut candidates = Vec::new();
    for d in group {
        let (manifest, parsed) =
            match candidate_manifest(client, &repo, d, MAX_SIGNATURE_MANIFEST_BYTES, budget, ignored).await {
                Step::Got(m) => m,
                Step::Skip => continue,
                Step::Stop => break,
                Step::Fail(what, e) => return Err((what, e)),
            };
        if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
            ignored.push(&d.digest, format!("its subject is not {digest}"));
            continue;
        }
        let [layer] = parsed.layers.as_slice() else {
            ignored.push(&d.digest, format!("{} layers, a signature has exactly one", parsed.layers.len()));
            continue;
        };
        let envelope_type = [pullgate_notation::MEDIA_TYPE_JWS, pullgate_notation::MEDIA_TYPE_COSE]
            .contains(&layer.media_type.as_str());
        let rank = (!envelope_type, layer.size, shuffle_key(exam.state, &layer.digest));
        candidates.push(NotationCandidate { manifest, layer: layer.clone(), rank });
    }
    candidates.sort_by_key(|c| c.rank);
    let sd = pullgate_notation::SubjectDescriptor {
        media_type: subject.media_type.clone(),
        digest: digest.clone(),
        size: subject.size,
    };
    let limit = pullgate_notation::MAX_ENVELOPE_BYTES as u64;
    for c in candidates {
        let m = &c.manifest.digest;
        let bytes = match candidate_blob(client, &repo, m, &c.layer, limit, budget, ignored).await {
            Step::Got(b) => b,
            Step::Skip => continue,
            Step::Stop => break,
            Step::Fail(what, e) => return Err((what, e)),
        };
        let (set, outcome) = first_admitting(
            sets,
            |t| {
                let now = SystemTime::now();
                pullgate_notation::verify(&sd, &repo.to_string(), &c.layer.media_type, &bytes, &t.policy, &t.store, now)
            },
            |o| o.verified,
        );
        let mut report = notation_report(m, &c.layer.media_type, &outcome);
        report.trust_set = outcome.verified.then(|| set.to_string());
        let signer = outcome.signer_subject.as_ref().map(|s| format!("certificate {s}"));
        tally.record(report, outcome.summary(), signer);
        if outcome.verified {
            client.keep(m, &c.manifest.bytes);
            client.keep(&c.layer.digest, &bytes);
            if tally.enough() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Verifies under each trust set in order and returns the first set that
/// admits the signature with its outcome, or the first set's outcome when
/// none does. `sets` is never empty.
fn first_admitting<'s, T: Copy, O>(
    sets: &[(&'s str, T)],
    verify: impl Fn(T) -> O,
    admitted: impl Fn(&O) -> bool,
) -> (&'s str, O) {
    let mut first = None;
    for (name, t) in sets {
        let o = verify(*t);
        if admitted(&o) {
            return (name, o);
        }
        first.get_or_insert((*name, o));
    }
    first.expect("a verifier runs only with at least one trust set")
}

fn notation_report(manifest: &str, media_type: &str, sig: &pullgate_notation::SignatureOutcome) -> SignatureReport {
    SignatureReport {
        manifest: manifest.to_string(),
        envelope_media_type: media_type.to_string(),
        signer: sig.signer_subject.clone(),
        policy: sig.policy.clone(),
        level: sig.level.map(|l| l.as_str().to_string()),
        verified: sig.verified,
        checks: sig
            .checks
            .iter()
            .map(|c| CheckReport {
                check: c.check.as_str().into(),
                status: format!("{:?}", c.status).to_lowercase(),
                reason: c.reason.clone(),
            })
            .collect(),
        facts: SignatureFacts {
            format: Some("notation".into()),
            scheme: sig.signing_scheme.map(str::to_string),
            chain_subjects: sig.signer_subject.iter().cloned().collect(),
            ..SignatureFacts::default()
        },
        trust_set: None,
    }
}

/// The result and reason of a Notation run from the signatures tried
/// (report and one-line summary each), what was ignored and the budget.
fn notation_verdict(
    run: &mut VerifierRun,
    policy: &str,
    tally: &Tally,
    ignored: &Ignored,
    budget: &Budget,
    none_listed: bool,
    subject: &Subject,
) {
    let repo = Repository::of(&subject.reference);
    let tried = &tally.tried;
    let n = tried.len();
    if tally.enough() {
        run.result = RunResult::Pass.as_str().into();
        let ok: Vec<String> = tried
            .iter()
            .enumerate()
            .filter(|(_, (r, _))| r.verified)
            .map(|(i, (r, s))| match &r.trust_set {
                Some(t) if t != DEFAULT_TRUST => format!("signature #{} of {n} examined (trust set {t}): {s}", i + 1),
                _ => format!("signature #{} of {n} examined: {s}", i + 1),
            })
            .collect();
        let policy = tried.iter().find_map(|(r, _)| r.verified.then(|| r.policy.clone()).flatten());
        run.reason = format!("trust policy {:?}: {}", policy.as_deref().unwrap_or("?"), ok.join("; "));
        return;
    }
    run.result = RunResult::Fail.as_str().into();
    let mut reason = if let Some(short) = tally.shortfall() {
        format!("trust policy {policy:?}: {short}")
    } else if none_listed {
        format!("no Notation signature found for {} in {repo}", subject.digest)
    } else if n == 0 {
        format!("no usable Notation signature for {} in {repo}", subject.digest)
    } else {
        format!("trust policy {policy:?}: no signature verified ({})", quote_failures(tried.iter().map(|(_, s)| s)))
    };
    reason.push_str(&ignored.suffix());
    if let Some(s) = budget.summary() {
        reason.push_str(&format!("; {s}"));
    }
    run.reason = reason;
}

/// `#1: …; #2: …` for the first [`MAX_FAILURES_QUOTED`] failures, then a count.
fn quote_failures<'a>(failures: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&String> = failures.collect();
    let mut parts: Vec<String> =
        all.iter().take(MAX_FAILURES_QUOTED).enumerate().map(|(i, s)| format!("#{}: {s}", i + 1)).collect();
    if all.len() > MAX_FAILURES_QUOTED {
        parts.push(format!("and {} more", all.len() - MAX_FAILURES_QUOTED));
    }
    parts.join("; ")
}

/// Artifact type of cosign signature manifests attached as OCI 1.1 referrers.
pub const COSIGN_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Prefix of Sigstore bundle artifact types (`…bundle.v0.3+json`, `…bundle+json;version=0.x`).
pub const BUNDLE_ARTIFACT_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// A run that has not reached a verdict yet.
fn new_run(kind: VerifierKind, repo: &Repository) -> VerifierRun {
    VerifierRun {
        verifier: kind.as_str().into(),
        result: RunResult::Error.as_str().into(),
        reason: String::new(),
        registry: Some(repo.host.clone()),
        referrers: None,
        signatures: Vec::new(),
        subject: None,
        platform: None,
        attached: None,
    }
}

/// Turns a Sigstore outcome into the report's signature entry.
fn sigstore_report(manifest: &str, media_type: &str, o: &pullgate_sigstore::Outcome, format: &str) -> SignatureReport {
    let mut checks: Vec<CheckReport> = o
        .checks
        .iter()
        .map(|c| CheckReport {
            check: c.name.into(),
            status: format!("{:?}", c.status).to_lowercase(),
            reason: c.detail.clone(),
        })
        .collect();
    if let Some(f) = &o.failure {
        checks.push(CheckReport { check: "verdict".into(), status: f.class.as_str().into(), reason: f.reason.clone() });
    }
    let mut signer = o.signer.as_ref().map(|s| s.to_string());
    if let (Some(s), Some(i)) = (&mut signer, o.log_index) {
        s.push_str(&format!(" (rekor log index {i})"));
    }
    SignatureReport {
        manifest: manifest.into(),
        envelope_media_type: media_type.into(),
        signer,
        policy: None,
        level: None,
        verified: o.verified,
        checks,
        facts: sigstore_facts(format, o),
        trust_set: None,
    }
}

/// Ends a run on a registry error: served bytes that do not match their
/// digest are evidence of tampering and deny the pull whatever the failure
/// policy says; every other registry problem is an error for the failure policy.
fn registry_failure(mut run: VerifierRun, what: String, e: &pullgate_registry::RegistryError) -> VerifierRun {
    run.result = match e {
        pullgate_registry::RegistryError::DigestMismatch { .. } => RunResult::Fail,
        _ => RunResult::Error,
    }
    .as_str()
    .into();
    run.reason = format!("{what}: {e}");
    run
}

/// Problems with one attached artifact (missing, oversized, malformed, refused
/// as a bad request, a redirect that may not be followed) that anyone able
/// to push can cause: that artifact is ignored and the others are still
/// examined, so junk can neither turn a deny into an error (allowed under
/// fail-open) nor hide a valid signature. Outages, auth failures and
/// tampering are not skippable.
fn skippable(e: &pullgate_registry::RegistryError) -> bool {
    use pullgate_registry::RegistryError as E;
    match e {
        E::NotFound { .. } | E::TooLarge { .. } | E::Invalid { .. } => true,
        E::Status { status, .. } => (300..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429),
        _ => false,
    }
}

/// One-line verdict over the signatures a Sigstore verifier examined.
fn sigstore_verdict(
    run: &mut VerifierRun,
    kind: &str,
    tally: &Tally,
    ignored: &Ignored,
    budget: &Budget,
    subject: &Subject,
) {
    let repo = Repository::of(&subject.reference);
    let tried: Vec<&SignatureReport> = tally.tried.iter().map(|(r, _)| r).collect();
    if tally.enough() {
        run.result = RunResult::Pass.as_str().into();
        let by: Vec<String> = tried
            .iter()
            .filter(|s| s.verified)
            .map(|s| {
                let who = s.signer.as_deref().unwrap_or("a trusted signer");
                match s.trust_set.as_deref() {
                    Some(t) if t != DEFAULT_TRUST => format!("{who} (trust set {t})"),
                    _ => who.to_string(),
                }
            })
            .collect();
        run.reason = format!("{kind} by {} verified", by.join(", "));
        return;
    }
    run.result = RunResult::Fail.as_str().into();
    let skipped = ignored.count();
    let mut reason = if let Some(short) = tally.shortfall() {
        format!("{kind}: {short}")
    } else if tried.is_empty() && skipped == 0 {
        format!("no {kind} found for {} in {repo}", subject.digest)
    } else if tried.is_empty() {
        format!("no usable {kind} for {} in {repo}", subject.digest)
    } else {
        let why: Vec<String> = tried
            .iter()
            .map(|s| {
                let last = s.checks.iter().rev().find(|c| c.check == "verdict");
                last.map_or("not verified".to_string(), |c| format!("{}: {}", c.status, c.reason))
            })
            .collect();
        format!("no {kind} verified ({})", quote_failures(why.iter()))
    };
    reason.push_str(&ignored.suffix());
    if let Some(s) = budget.summary() {
        reason.push_str(&format!("; {s}"));
    }
    run.reason = reason;
}

/// The distinct-signer key of a verified Sigstore signature: the key id
/// for key-based signing, issuer and identity for keyless.
fn sigstore_signer(o: &pullgate_sigstore::Outcome) -> Option<String> {
    o.signer.as_ref().map(|s| match s {
        pullgate_sigstore::Signer::Key { key_id, .. } => format!("key sha256:{key_id}"),
        pullgate_sigstore::Signer::Certificate { subject, issuer } => format!("{subject} (issuer {issuer})"),
    })
}

/// A cosign signature layer found in a signature manifest.
struct CosignCandidate {
    manifest: String,
    manifest_bytes: Option<Vec<u8>>,
    layer: Descriptor,
}

/// Cosign: the `sha256-<hex>.sig` tag (cosign's default scheme) and signature
/// manifests attached as referrers; every layer is a simple-signing payload
/// with its signature, certificate and Rekor bundle in annotations. Layers
/// are examined simple-signing-with-signature first, smallest first with a
/// random tie-break, until `min` distinct signers verified under one of the
/// trust sets `sets`, or the budget runs out.
pub(crate) async fn cosign(
    client: &Client,
    sets: &[(&str, &SigstoreTrust)],
    min: usize,
    subject: &Subject,
    budget: &mut Budget,
) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut run = new_run(VerifierKind::Cosign, &repo);
    if budget.exhausted.is_some() {
        return spent_run(run, budget);
    }
    let (mut candidates, mut ignored) = match cosign_candidates(client, &repo, &digest, budget, &mut run).await {
        Ok(c) => c,
        Err((what, e)) => return registry_failure(run, what, &e),
    };
    let state = RandomState::new();
    let simple = pullgate_sigstore::SIMPLE_SIGNING_MEDIA_TYPE;
    candidates.sort_by_key(|c| {
        let signed =
            c.layer.media_type == simple && c.layer.annotations.contains_key(pullgate_sigstore::ANNOTATION_SIGNATURE);
        (!signed, c.layer.size, shuffle_key(&state, &c.layer.digest))
    });
    let mut tally = Tally::new(min);
    let limit = pullgate_sigstore::MAX_PAYLOAD_BYTES as u64;
    for c in candidates {
        let payload = match candidate_blob(client, &repo, &c.manifest, &c.layer, limit, budget, &mut ignored).await {
            Step::Got(b) => b,
            Step::Skip => continue,
            Step::Stop => break,
            Step::Fail(what, e) => return registry_failure(run, what, &e),
        };
        let cl = pullgate_sigstore::CosignLayer {
            media_type: &c.layer.media_type,
            payload: &payload,
            annotations: &c.layer.annotations,
        };
        let verify =
            |t: &SigstoreTrust| pullgate_sigstore::verify_cosign_signature(&digest, &cl, &t.cosign, SystemTime::now());
        let (set, outcome) = first_admitting(sets, verify, |o| o.verified);
        let mut report = sigstore_report(&c.manifest, &c.layer.media_type, &outcome, "cosign");
        report.trust_set = outcome.verified.then(|| set.to_string());
        tally.record(report, String::new(), sigstore_signer(&outcome));
        if outcome.verified {
            if let Some(bytes) = &c.manifest_bytes {
                client.keep(&c.manifest, bytes);
            }
            client.keep(&c.layer.digest, &payload);
            if tally.enough() {
                break;
            }
        }
    }
    sigstore_verdict(&mut run, "cosign signature", &tally, &ignored, budget, subject);
    list_tried(&mut run, tally.tried.into_iter().map(|(r, _)| r).collect());
    ignored.finish(&mut run, budget);
    run
}

/// Every layer of the `.sig` tag's manifest and of the cosign signature
/// manifests attached as referrers (fetched smallest first, within the budget).
async fn cosign_candidates(
    client: &Client,
    repo: &Repository,
    digest: &str,
    budget: &mut Budget,
    run: &mut VerifierRun,
) -> Result<(Vec<CosignCandidate>, Ignored), (String, pullgate_registry::RegistryError)> {
    let mut out = Vec::new();
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let by_tag = client.manifest_by_tag(repo, &tag, budget.until).await;
    let listed = client.referrers(repo, digest, Some(COSIGN_ARTIFACT_TYPE), budget.until).await;
    let referrers = listed.map_err(|e| ("listing cosign referrers".to_string(), e))?;
    let mut ignored = Ignored::new(&referrers.notes);
    match by_tag {
        Ok(Some(m)) if budget.allow(m.bytes.len() as u64) => match serde_json::from_slice::<ImageManifest>(&m.bytes) {
            Ok(parsed) => out.extend(parsed.layers.into_iter().map(|layer| CosignCandidate {
                manifest: m.digest.clone(),
                manifest_bytes: None,
                layer,
            })),
            Err(e) => ignored.push(&m.digest, format!("{tag} is not an image manifest: {e}")),
        },
        Ok(_) => {}
        Err(e) if skippable(&e) => ignored.push(&tag, format!("cannot be fetched: {e}")),
        Err(e) => return Err((format!("looking up {tag}"), e)),
    }
    run.referrers = Some(match (referrers.descriptors.is_empty(), referrers.source) {
        (true, _) => "cosign-tag".into(),
        (false, ReferrersSource::Api) => {
            crate::client::via_mirror("cosign-tag+referrers-api".into(), referrers.served_by.clone())
        }
        (false, ReferrersSource::TagSchema) => {
            crate::client::via_mirror("cosign-tag+tag-schema".into(), referrers.served_by.clone())
        }
    });
    let state = RandomState::new();
    let mut listed: Vec<&Descriptor> = referrers.descriptors.iter().collect();
    listed.sort_by_key(|d| (d.size, shuffle_key(&state, &d.digest)));
    for d in listed {
        match candidate_manifest(client, repo, d, MAX_MANIFEST_BYTES, budget, &mut ignored).await {
            Step::Got((m, parsed)) => out.extend(parsed.layers.into_iter().map(|layer| CosignCandidate {
                manifest: m.digest.clone(),
                manifest_bytes: Some(m.bytes.clone()),
                layer,
            })),
            Step::Skip => {}
            Step::Stop => break,
            Step::Fail(what, e) => return Err((what, e)),
        }
    }
    Ok((out, ignored))
}

/// A Sigstore bundle manifest that passed the checks made before its bundle is fetched.
struct BundleCandidate {
    manifest: Manifest,
    layer: Descriptor,
}

/// Sigstore bundles (cosign v3 signatures and attestations, GitHub artifact
/// attestations) attached as referrers; the bundle must bind the pulled
/// digest. Bundles are examined smallest first with a random tie-break,
/// until `min` distinct signers verified under one of the trust sets `sets`.
async fn bundles(
    client: &Client,
    sets: &[(&str, &SigstoreTrust)],
    min: usize,
    subject: &Subject,
    budget: &mut Budget,
) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut run = new_run(VerifierKind::Sigstore, &repo);
    if budget.exhausted.is_some() {
        return spent_run(run, budget);
    }
    let is_bundle = |d: &Descriptor| d.artifact_type.as_deref().is_some_and(|t| t.starts_with(BUNDLE_ARTIFACT_PREFIX));
    let referrers = match client.referrers_preferring(&repo, &digest, None, &is_bundle, budget.until).await {
        Ok(r) => r,
        Err(e) => return registry_failure(run, "listing bundles".into(), &e),
    };
    run.referrers = Some(crate::client::via_mirror(source_name(referrers.source), referrers.served_by.clone()));
    let mut ignored = Ignored::new(&referrers.notes);
    let state = RandomState::new();
    let mut listed: Vec<&Descriptor> = referrers.descriptors.iter().filter(|d| is_bundle(d)).collect();
    listed.sort_by_key(|d| (d.size, shuffle_key(&state, &d.digest)));
    let mut candidates = Vec::new();
    for d in listed {
        match candidate_manifest(client, &repo, d, MAX_SIGNATURE_MANIFEST_BYTES, budget, &mut ignored).await {
            Step::Got((manifest, parsed)) => match parsed.layers.into_iter().next() {
                Some(layer) => candidates.push(BundleCandidate { manifest, layer }),
                None => ignored.push(&d.digest, "no layer holds the bundle".into()),
            },
            Step::Skip => {}
            Step::Stop => break,
            Step::Fail(what, e) => return registry_failure(run, what, &e),
        }
    }
    candidates.sort_by_key(|c| (c.layer.size, shuffle_key(&state, &c.layer.digest)));
    let mut tally = Tally::new(min);
    let limit = pullgate_sigstore::MAX_BUNDLE_BYTES as u64;
    for c in candidates {
        let m = &c.manifest.digest;
        let bytes = match candidate_blob(client, &repo, m, &c.layer, limit, budget, &mut ignored).await {
            Step::Got(b) => b,
            Step::Skip => continue,
            Step::Stop => break,
            Step::Fail(what, e) => return registry_failure(run, what, &e),
        };
        let artifact = pullgate_sigstore::Artifact::Digest(&digest);
        let verify =
            |t: &SigstoreTrust| pullgate_sigstore::verify_bundle(&bytes, artifact, &t.bundle, SystemTime::now());
        let (set, outcome) = first_admitting(sets, verify, |o| o.verified);
        let mut report = sigstore_report(m, &c.layer.media_type, &outcome, "sigstore-bundle");
        report.trust_set = outcome.verified.then(|| set.to_string());
        tally.record(report, String::new(), sigstore_signer(&outcome));
        if outcome.verified {
            client.keep(m, &c.manifest.bytes);
            client.keep(&c.layer.digest, &bytes);
            if tally.enough() {
                break;
            }
        }
    }
    sigstore_verdict(&mut run, "Sigstore bundle", &tally, &ignored, budget, subject);
    list_tried(&mut run, tally.tried.into_iter().map(|(r, _)| r).collect());
    ignored.finish(&mut run, budget);
    run
}

/// The Sigstore outcome's signer and times, for policies; `format` is `cosign` or `sigstore-bundle`.
fn sigstore_facts(format: &str, o: &pullgate_sigstore::Outcome) -> SignatureFacts {
    let mut f = SignatureFacts {
        format: Some(format.into()),
        signing_time: o.integrated_time.and_then(crate::report::unix_rfc3339),
        timestamps: o.timestamps.iter().filter_map(|t| crate::report::unix_rfc3339(*t)).collect(),
        predicate_type: o.predicate_type.clone(),
        ..SignatureFacts::default()
    };
    match &o.signer {
        Some(pullgate_sigstore::Signer::Key { name, key_id }) => {
            (f.key_name, f.key_id) = (Some(name.clone()), Some(key_id.clone()));
        }
        Some(pullgate_sigstore::Signer::Certificate { subject, issuer }) => {
            (f.identity, f.issuer) = (Some(subject.clone()), Some(issuer.clone()));
        }
        None => {}
    }
    f
}

fn ignored_signature(manifest: &str, why: String) -> SignatureReport {
    SignatureReport {
        manifest: manifest.to_string(),
        envelope_media_type: String::new(),
        signer: None,
        policy: None,
        level: None,
        verified: false,
        checks: vec![CheckReport { check: "artifact".into(), status: "ignored".into(), reason: why }],
        facts: SignatureFacts::default(),
        trust_set: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(annotation: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{:064x}", 1),
            size: 700,
            artifact_type: Some(NOTATION_ARTIFACT_TYPE.into()),
            annotations: annotation.map(|a| (THUMBPRINT_ANNOTATION.to_string(), a.to_string())).into_iter().collect(),
        }
    }

    #[test]
    fn thumbprints_group_candidates_before_anything_is_fetched() {
        let trusted: HashSet<String> = ["ab".repeat(32)].into_iter().collect();
        let t = format!("[\"{}\", \"{}\"]", "cd".repeat(32), "AB".repeat(32));
        assert_eq!(thumbprint_group(&listed(Some(&t)), &trusted), 0, "any certificate of the chain, any case");
        assert_eq!(thumbprint_group(&listed(None), &trusted), 1);
        assert_eq!(thumbprint_group(&listed(Some("not json")), &trusted), 1);
        assert_eq!(thumbprint_group(&listed(Some(&format!("[\"{}\"]", "cd".repeat(32)))), &trusted), 2);
    }

    fn run(kind: VerifierKind, result: RunResult) -> (RunResult, VerifierRun) {
        let mut r = new_run(kind, &Repository { host: "h".into(), path: "p".into() });
        r.result = result.as_str().into();
        r.reason = result.as_str().into();
        (result, r)
    }

    #[test]
    fn at_least_n_passes_errors_that_could_fill_the_gap_go_to_the_failure_policy() {
        use RunResult::{Error, Fail, Pass};
        let (n, c, s) = (VerifierKind::Notation, VerifierKind::Cosign, VerifierKind::Sigstore);
        let two = Combine::AtLeast(2);
        let (r, why) = combine(two, 3, &[run(n, Pass), run(c, Fail), run(s, Pass)]);
        assert_eq!(r, Pass);
        assert!(why.starts_with("2 of 3 passed, 2 needed: notation: pass; sigstore: pass"), "{why}");
        assert_eq!(combine(two, 3, &[run(n, Pass), run(c, Error), run(s, Fail)]).0, Error, "the error could be a pass");
        assert_eq!(combine(two, 3, &[run(n, Pass), run(c, Fail), run(s, Fail)]).0, Fail);
        assert_eq!(combine(two, 3, &[run(n, Error), run(c, Fail), run(s, Fail)]).0, Fail, "one error cannot make two");
        assert_eq!(combine(Combine::All, 2, &[run(n, Fail), run(c, Error)]).0, Fail, "all: a failure denies");
        assert_eq!(combine(Combine::All, 2, &[run(n, Pass), run(c, Error)]).0, Error);
        let (r, why) = combine(Combine::Any, 2, &[run(n, Fail), run(c, Fail)]);
        assert!(r == Fail && why.starts_with("none passed: "), "{why}");
        assert_eq!(combine(Combine::Any, 2, &[run(n, Fail), run(c, Error)]).0, Error);
    }

    #[test]
    fn a_signer_counts_once_however_many_signatures_it_made() {
        let verified = |m: &str| SignatureReport { verified: true, ..ignored_signature(m, String::new()) };
        let mut t = Tally::new(2);
        t.record(verified("m1"), String::new(), Some("key sha256:aa".into()));
        t.record(verified("m2"), String::new(), Some("key sha256:aa".into()));
        assert!(!t.enough());
        assert!(!t.tried[1].0.verified, "the repeat is not counted");
        assert!(t.tried[1].0.checks.iter().any(|c| c.check == "signer" && c.status == "duplicate"));
        assert_eq!(t.shortfall().unwrap(), "only 1 of 2 distinct signers required verified (key sha256:aa)");
        t.record(ignored_signature("m3", String::new()), String::new(), Some("key sha256:bb".into()));
        assert!(!t.enough(), "a signature that did not verify names no signer");
        t.record(verified("m4"), String::new(), Some("key sha256:bb".into()));
        assert!(t.enough() && t.shortfall().is_none());
    }

    #[test]
    fn the_budget_ends_on_bytes_or_time_and_says_so() {
        let far = Instant::now() + Duration::from_secs(60);
        let mut b = Budget::with_limits(far, Duration::from_secs(60), 100);
        assert!(b.allow(60) && !b.allow(41), "41 more bytes do not fit");
        b.examined = 2;
        assert_eq!(b.summary().as_deref(), Some("budget exhausted after 2 candidates (byte budget of 32 MiB)"));
        assert!(!b.allow(1), "once exhausted, nothing more is fetched");
        let mut t = Budget::with_limits(Instant::now(), Duration::from_secs(60), 100);
        assert!(!t.allow(1), "the budget ends no later than the deadline");
        assert!(t.summary().unwrap().contains("time budget"));
    }

    #[test]
    fn junk_artifacts_are_skippable_registry_failures_are_not() {
        use pullgate_registry::RegistryError as E;
        let status = |status| E::Status { registry: "r".into(), what: "w".into(), status, detail: String::new() };
        assert!(skippable(&status(302)) && skippable(&status(404)) && skippable(&status(400)));
        for s in [401, 403, 429, 500, 503] {
            assert!(!skippable(&status(s)), "{s}");
        }
        assert!(skippable(&E::TooLarge { registry: "r".into(), what: "w".into(), limit: 1 }));
        assert!(!skippable(&E::Deadline { registry: "r".into(), what: "w".into() }));
    }

    #[test]
    fn reports_list_a_bounded_number_of_failed_signatures() {
        let mut run = new_run(VerifierKind::Notation, &Repository { host: "h".into(), path: "p".into() });
        let mut tried: Vec<SignatureReport> =
            (0..40).map(|i| ignored_signature(&format!("m{i}"), "x".into())).collect();
        tried[39].verified = true;
        list_tried(&mut run, tried);
        assert_eq!(run.signatures.len(), MAX_TRIED_LISTED + 2, "16 failures, the verified one, a count");
        assert!(run.signatures.iter().any(|s| s.verified && s.manifest == "m39"));
        assert!(run.signatures.last().unwrap().checks[0].reason.starts_with("23 more signatures"));
        let quoted = quote_failures(["a".to_string(), "b".into(), "c".into(), "d".into()].iter());
        assert_eq!(quoted, "#1: a; #2: b; #3: c; and 1 more");
    }
}
