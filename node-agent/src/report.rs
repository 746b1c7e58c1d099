//! Decision reports, their ids, and the JSON-lines decision log.
//!
//! Every decision gets a [`Report`] with an id, the inputs, the rule that
//! matched, each step taken and its timing. Reports are appended, one JSON
//! object per line, to `decisions.jsonl` in the state directory before the
//! verifier gets its answer, so `pullgate-agent explain ID` can always find
//! the decision a user was just shown. The log rotates to `decisions.jsonl.1`
//! at a size limit; `explain` searches both.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// File name of the current decision log.
pub const LOG_FILE: &str = "decisions.jsonl";
/// Default size at which the log rotates.
pub const DEFAULT_ROTATE_BYTES: u64 = 32 * 1024 * 1024;
/// Longest log line `explain` will parse.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Longest summary of one signature inside a decision's reason; the full
/// text of every check stays in the report's `verification`.
pub const MAX_SIGNATURE_SUMMARY_BYTES: usize = 240;
/// Longest reason kept with a decision (cached and in the report); the
/// answer to the verifier is cut further, to [`pullgate_wire::MAX_REASON_BYTES`].
pub const MAX_DECISION_REASON_BYTES: usize = 4 * 1024;
/// Longest text of one report field (a step, a check's reason) in the decision log.
pub const MAX_REPORT_TEXT_BYTES: usize = 16 * 1024;
/// Largest report written to the decision log; `explain` reads lines up to [`MAX_LINE_BYTES`].
pub const MAX_REPORT_BYTES: usize = 512 * 1024;

/// Cuts every `#N: …` item of a reason (the per-signature summaries the
/// verifiers build, `(#1: …; #2: …)`) to [`MAX_SIGNATURE_SUMMARY_BYTES`], so
/// one signature carrying a 100 KB plugin name cannot crowd out the others,
/// and then the whole reason to [`MAX_DECISION_REASON_BYTES`].
pub fn summarize(reason: &str) -> String {
    let items = summary_items(reason);
    let mut out = String::with_capacity(reason.len().min(MAX_DECISION_REASON_BYTES));
    let mut at = 0;
    for (i, &(start, _)) in items.iter().enumerate() {
        out.push_str(&reason[at..start]);
        let end = items.get(i + 1).map_or(reason.len(), |&(next, sep)| next - sep);
        let item = &reason[start..end];
        // What closes the list (`)`, or `); cosign: no … verified ` before the
        // next verifier's list) is kept when it is short.
        let close_at = match item.rfind("); ") {
            Some(k) if i + 1 < items.len() && item.len() - k <= 160 => k,
            _ if i + 1 == items.len() && item.ends_with(')') => item.len() - 1,
            _ => item.len(),
        };
        let (body, close) = item.split_at(close_at);
        out.push_str(&pullgate_wire::truncate(body, MAX_SIGNATURE_SUMMARY_BYTES, "…"));
        out.push_str(close);
        at = end;
        if out.len() > MAX_DECISION_REASON_BYTES {
            break;
        }
    }
    if at < reason.len() && items.is_empty() {
        out.push_str(reason);
    }
    pullgate_wire::truncate(&out, MAX_DECISION_REASON_BYTES, pullgate_wire::TRUNCATED)
}

/// Byte offsets of `#N: ` items that follow `(` or `; `, with the length of that separator.
fn summary_items(reason: &str) -> Vec<(usize, usize)> {
    let mut items = Vec::new();
    for (i, _) in reason.match_indices('#') {
        let before = &reason[..i];
        let sep = if before.ends_with("; ") {
            2
        } else if before.ends_with('(') {
            1
        } else {
            continue;
        };
        let rest = &reason[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(": ") {
            items.push((i, sep));
        }
    }
    items
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The agent's allowlist.
    Allowlist,
    /// A scope's allow or deny action, or the default action.
    Policy,
    /// The outcome of verification.
    Verify,
    /// No decision could be reached; the failure policy answered.
    FailurePolicy,
    /// The request itself was invalid.
    Input,
    /// An earlier decision for the same image and config generation.
    Cache,
    /// A Rego policy changed the typed outcome.
    Rego,
    /// An active `breakGlass` allowed it, whatever the policy decided.
    BreakGlass,
}

impl Source {
    /// The name used in reports and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Allowlist => "allowlist",
            Source::Policy => "policy",
            Source::Verify => "verify",
            Source::FailurePolicy => "failure-policy",
            Source::Input => "input",
            Source::Cache => "cache",
            Source::Rego => "rego",
            Source::BreakGlass => "break-glass",
        }
    }
}

/// One step of the pipeline, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Pipeline stage (`request`, `allowlist`, `scope`, `verify`, `failure-policy`, `mode`).
    pub stage: String,
    /// What the stage concluded.
    pub result: String,
    /// Microseconds since the request was received when the stage ended.
    pub at_us: u64,
}

/// The full record of one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Unique id (`explain ID`).
    pub id: String,
    /// RFC 3339 time the request was received.
    pub time: String,
    /// Config generation in force, if any.
    pub generation: Option<String>,
    /// `-name` as containerd passed it.
    pub reference: String,
    /// The normalised reference, when it parsed.
    pub normalized: Option<String>,
    /// `-digest` as containerd passed it.
    pub digest: String,
    /// Media type of the top-level descriptor.
    pub media_type: String,
    /// Size of the top-level descriptor.
    pub size: u64,
    /// Peer uid and pid on the socket.
    pub peer: Option<Peer>,
    /// `enforce` or `audit`.
    pub mode: Option<String>,
    /// `open` or `closed`.
    pub failure_policy: Option<String>,
    /// The rule that applied (`allowlist[2] ghcr.io/…`, `scope acme`, `defaultAction`).
    pub rule: Option<String>,
    /// Where the verdict came from.
    pub source: Source,
    /// What policy concluded before mode was applied: `allow`, `deny` or `error`.
    pub outcome: String,
    /// The final verdict (`allow` / `deny`).
    pub verdict: pullgate_wire::Verdict,
    /// The one-line reason given to containerd.
    pub reason: String,
    /// Every stage, in order.
    pub steps: Vec<Step>,
    /// Each verifier run: registry, artifacts found, every signature and check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<VerifierRun>,
    /// The Rego policy's part, when one applied: its input and what decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyReport>,
    /// Total time spent, in microseconds.
    pub duration_us: u64,
}

impl Report {
    /// Keeps the report within [`MAX_REPORT_BYTES`] however much text the
    /// registry content put into it: every text field is cut to
    /// [`MAX_REPORT_TEXT_BYTES`], then to 2 KiB; while it is still too large,
    /// a run keeps its first 32 signatures, then its first 8 (its reason says
    /// how many were dropped), with text cut to 256 bytes.
    pub fn bound(&mut self) {
        for (text, keep) in [(MAX_REPORT_TEXT_BYTES, usize::MAX), (2048, usize::MAX), (2048, 32), (256, 32), (256, 8)] {
            self.keep_signatures(keep);
            self.cut_text(text);
            if self.encoded_len() <= MAX_REPORT_BYTES {
                return;
            }
        }
    }

    fn keep_signatures(&mut self, keep: usize) {
        for run in &mut self.verification {
            if run.signatures.len() > keep {
                let dropped = run.signatures.len() - keep;
                run.signatures.truncate(keep);
                run.reason = format!("[{dropped} more signatures not kept in the report] {}", run.reason);
            }
        }
    }

    fn cut_text(&mut self, limit: usize) {
        let cut = |s: &mut String| {
            if s.len() > limit {
                *s = pullgate_wire::truncate(s, limit, pullgate_wire::TRUNCATED);
            }
        };
        for s in [&mut self.reason, &mut self.reference, &mut self.media_type] {
            cut(s);
        }
        self.steps.iter_mut().for_each(|st| cut(&mut st.result));
        for run in &mut self.verification {
            cut(&mut run.reason);
            for sig in &mut run.signatures {
                for s in [&mut sig.manifest, &mut sig.envelope_media_type] {
                    cut(s);
                }
                for s in [&mut sig.signer, &mut sig.policy].into_iter().flatten() {
                    cut(s);
                }
                sig.checks.iter_mut().for_each(|c| cut(&mut c.reason));
                sig.facts.texts().for_each(cut);
            }
        }
        if let Some(p) = &mut self.policy {
            p.bound(limit);
        }
    }

    fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }
}

/// One verifier's run for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifierRun {
    /// `notation`, `cosign`, …
    pub verifier: String,
    /// `pass`, `fail` or `error`.
    pub result: String,
    /// Why, in one line.
    pub reason: String,
    /// The registry asked.
    pub registry: Option<String>,
    /// How artifacts were discovered: `referrers-api` or `tag-schema`.
    pub referrers: Option<String>,
    /// Every signature examined.
    pub signatures: Vec<SignatureReport>,
    /// The manifest whose signatures this run examined, when it is not the
    /// pulled digest itself (a platform manifest of a multi-platform index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// That manifest's platform (`linux/arm64/v8`), from the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// What an attached-artifact verifier (`sbom`, `vulnerability`) found: the
    /// document that decided, the findings (capped), attachments passed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<crate::attached::AttachedReport>,
}

/// One signature examined by a verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureReport {
    /// Digest of the signature manifest.
    pub manifest: String,
    /// Media type of the envelope.
    pub envelope_media_type: String,
    /// Subject of the signing certificate (or key id).
    pub signer: Option<String>,
    /// Trust policy applied.
    pub policy: Option<String>,
    /// Its verification level.
    pub level: Option<String>,
    /// Whether this signature verified.
    pub verified: bool,
    /// Every check and how it ended.
    pub checks: Vec<CheckReport>,
    /// What the verifier established about the signature (the Rego input's view of it).
    #[serde(default, skip_serializing_if = "SignatureFacts::is_empty")]
    pub facts: SignatureFacts,
    /// The trust set it verified under (`default` or a `[trust.NAME]`), when it verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_set: Option<String>,
}

/// What a verifier established about one signature: its format, who signed
/// and when. Policies (`input.verification[].signatures[]`) read these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureFacts {
    /// `notation`, `cosign` or `sigstore-bundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Notation's signing scheme (`notary.x509`, `notary.x509.signingAuthority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Subjects of the signing certificate chain, leaf first, as far as the verifier exposes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_subjects: Vec<String>,
    /// Key-based signing: the trusted key's name in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Key-based signing: SHA-256 of the key's SubjectPublicKeyInfo, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Keyless signing: the certificate's identity (email, URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Keyless signing: the OIDC issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When it was signed (RFC 3339), as proven by a transparency log entry's integrated time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_time: Option<String>,
    /// Verified RFC 3161 timestamps (RFC 3339).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timestamps: Vec<String>,
    /// The in-toto predicate type of a DSSE bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
}

impl SignatureFacts {
    /// True when nothing is known (junk, list notes).
    pub fn is_empty(&self) -> bool {
        *self == SignatureFacts::default()
    }

    /// Every text field, for bounding.
    fn texts(&mut self) -> impl Iterator<Item = &mut String> {
        let SignatureFacts {
            format,
            scheme,
            chain_subjects,
            key_name,
            key_id,
            identity,
            issuer,
            signing_time,
            timestamps,
            predicate_type,
        } = self;
        [format, scheme, key_name, key_id, identity, issuer, signing_time, predicate_type]
            .into_iter()
            .flatten()
            .chain(chain_subjects.iter_mut())
            .chain(timestamps.iter_mut())
    }
}

/// Unix seconds as RFC 3339 UTC (`None` for times before the epoch).
pub fn unix_rfc3339(secs: i64) -> Option<String> {
    let t = UNIX_EPOCH.checked_add(std::time::Duration::from_secs(u64::try_from(secs).ok()?))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// One check of one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Check name (`integrity`, `authenticity`, …).
    pub check: String,
    /// `passed`, `failed`, `logged`, `skipped`, `notevaluated` or `ignored`.
    pub status: String,
    /// Why.
    pub reason: String,
}

/// The client on the other end of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Effective uid.
    pub uid: u32,
    /// Process id, when the kernel reported one.
    pub pid: Option<i32>,
}

/// Makes report ids: milliseconds since the epoch and a per-process counter,
/// with the process id mixed in so two agents never collide.
pub struct IdGenerator {
    prefix: String,
    counter: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    /// A generator for this process.
    pub fn new() -> IdGenerator {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        IdGenerator { prefix: format!("{ms:x}{:04x}", std::process::id() & 0xffff), counter: AtomicU64::new(0) }
    }

    /// The next id, e.g. `d-19a8c2f01b2c1f3a-7`.
    pub fn next_id(&self) -> String {
        format!("d-{}-{}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// Why the decision log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Opening, writing or rotating failed.
    #[error("decision log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A report could not be encoded.
    #[error("encoding report {id}: {source}")]
    Encode {
        /// The report id.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Appends reports to `decisions.jsonl`, one `write` per report, rotating at a size limit.
pub struct DecisionLog {
    path: PathBuf,
    rotate_bytes: u64,
    file: Mutex<(File, u64)>,
}

impl DecisionLog {
    /// Opens (creating, mode 0640) the log in `state_dir`.
    pub fn open(state_dir: &Path, rotate_bytes: u64) -> Result<DecisionLog, LogError> {
        let path = state_dir.join(LOG_FILE);
        let file = open_append(&path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(DecisionLog { path, rotate_bytes, file: Mutex::new((file, len)) })
    }

    /// Appends one report. The write completes before this returns.
    pub fn append(&self, report: &Report) -> Result<(), LogError> {
        let mut line =
            serde_json::to_vec(report).map_err(|source| LogError::Encode { id: report.id.clone(), source })?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.1 + line.len() as u64 > self.rotate_bytes && guard.1 > 0 {
            let rotated = self.path.with_extension("jsonl.1");
            std::fs::rename(&self.path, &rotated).map_err(|source| LogError::Io { path: self.path.clone(), source })?;
            *guard = (open_append(&self.path)?, 0);
        }
        guard.0.write_all(&line).map_err(|source| LogError::Io { path: self.path.clone(), source })?;
        guard.1 += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| LogError::Io { path: path.to_path_buf(), source })
}

/// Finds the report with this id, or the newest report for this digest,
/// searching the current log and then the rotated one.
pub fn find(state_dir: &Path, id_or_digest: &str) -> Result<Option<Report>, LogError> {
    let by_digest = id_or_digest.contains(':');
    for name in [LOG_FILE.to_string(), format!("{LOG_FILE}.1")] {
        let path = state_dir.join(&name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LogError::Io { path, source }),
        };
        let mut newest = None;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut buf)
                .map_err(|source| LogError::Io { path: path.clone(), source })?;
            if n == 0 {
                break;
            }
            // A torn last line (crash mid-write) or a foreign line is skipped.
            let Ok(r) = serde_json::from_slice::<Report>(&buf) else { continue };
            if by_digest {
                if r.digest == id_or_digest {
                    newest = Some(r);
                }
            } else if r.id == id_or_digest {
                return Ok(Some(r));
            }
        }
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

use std::io::Read as _;

/// Human-readable rendering of a report for `explain`.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    s.push_str(&format!("decision   {}\n", r.id));
    s.push_str(&format!("time       {}\n", r.time));
    s.push_str(&format!("image      {}\n", r.reference));
    s.push_str(&format!("normalized {}\n", opt(&r.normalized)));
    s.push_str(&format!("digest     {} ({}, {} bytes)\n", r.digest, r.media_type, r.size));
    if let Some(p) = r.peer {
        s.push_str(&format!("peer       uid {} pid {}\n", p.uid, p.pid.map_or("-".into(), |p| p.to_string())));
    }
    s.push_str(&format!("generation {}\n", opt(&r.generation)));
    s.push_str(&format!("mode       {} (failure policy {})\n", opt(&r.mode), opt(&r.failure_policy)));
    s.push_str(&format!("rule       {}\n", opt(&r.rule)));
    s.push_str(&format!("outcome    {} (source {})\n", r.outcome, r.source.as_str()));
    s.push_str(&format!("verdict    {} — {}\n", r.verdict.past_tense(), r.reason));
    s.push_str("steps:\n");
    for st in &r.steps {
        s.push_str(&format!("  {:>8} µs  {:<15} {}\n", st.at_us, st.stage, st.result));
    }
    for v in &r.verification {
        s.push_str(&format!(
            "verifier {} [{}] registry {} via {}: {}\n",
            v.verifier,
            v.result,
            v.registry.as_deref().unwrap_or("-"),
            v.referrers.as_deref().unwrap_or("-"),
            v.reason
        ));
        if let Some(subject) = &v.subject {
            s.push_str(&format!("  on manifest {subject} ({})\n", v.platform.as_deref().unwrap_or("no platform")));
        }
        for sig in &v.signatures {
            s.push_str(&format!(
                "  signature {} ({}) signer {} policy {} level {}: {}\n",
                sig.manifest,
                if sig.envelope_media_type.is_empty() { "-" } else { &sig.envelope_media_type },
                sig.signer.as_deref().unwrap_or("-"),
                sig.policy.as_deref().unwrap_or("-"),
                sig.level.as_deref().unwrap_or("-"),
                match (sig.verified, &sig.trust_set) {
                    (true, Some(t)) => format!("verified under trust set {t}"),
                    (true, None) => "verified".to_string(),
                    (false, _) => "NOT verified".to_string(),
                }
            ));
            for c in &sig.checks {
                s.push_str(&format!("    {:<19} {:<13} {}\n", c.check, c.status, c.reason));
            }
        }
        if let Some(a) = &v.attached {
            s.push_str(&a.render());
        }
    }
    if let Some(p) = &r.policy {
        s.push_str(&render_policy(p));
    }
    s.push_str(&format!("took {} µs\n", r.duration_us));
    s
}

/// `explain`'s policy section: what decided, then the input the policy saw.
fn render_policy(p: &crate::policy::PolicyReport) -> String {
    let answer = match p.allow {
        Some(true) => "allow",
        Some(false) => "deny",
        None => "no answer",
    };
    let effect = if p.changed { "changed the typed outcome" } else { "typed outcome stands" };
    let mut s = format!(
        "policy {} ({}): {answer} — {}\n  decided by {} in {} µs; typed {}, {effect}\n  input:\n",
        p.file,
        p.mode.as_str(),
        p.reason,
        p.rule,
        p.eval_us,
        p.typed
    );
    let input = serde_json::to_string_pretty(&p.input).unwrap_or_default();
    for line in input.lines() {
        s.push_str(&format!("    {line}\n"));
    }
    s
}

/// RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, digest: &str) -> Report {
        Report {
            id: id.into(),
            time: now_rfc3339(),
            generation: Some("g".into()),
            reference: "a".into(),
            normalized: None,
            digest: digest.into(),
            media_type: "m".into(),
            size: 1,
            peer: None,
            mode: None,
            failure_policy: None,
            rule: None,
            source: Source::Policy,
            outcome: "deny".into(),
            verdict: pullgate_wire::Verdict::Deny,
            reason: "r".into(),
            steps: vec![],
            verification: vec![],
            policy: None,
            duration_us: 1,
        }
    }

    #[test]
    fn append_find_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let log = DecisionLog::open(dir.path(), 600).unwrap();
        for i in 0..10 {
            log.append(&report(&format!("id{i}"), if i % 2 == 0 { "sha256:even" } else { "sha256:odd" })).unwrap();
        }
        assert!(dir.path().join("decisions.jsonl.1").exists(), "rotated");
        assert_eq!(find(dir.path(), "id9").unwrap().unwrap().id, "id9");
        assert_eq!(find(dir.path(), "sha256:even").unwrap().unwrap().id, "id8");
        assert!(find(dir.path(), "nope").unwrap().is_none());
        // A torn line does not hide the others.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap()
            .write_all(b"{\"id\":")
            .unwrap();
        assert_eq!(find(dir.path(), "id9").unwrap().unwrap().id, "id9");
    }

    #[test]
    fn summaries_cut_each_signature_and_keep_the_others() {
        let huge = "\"p\u{0}é".repeat(30_000);
        let reason = format!("scope s: notation: no signature verified (#1: plugin {huge}; #2: short one; #3: {huge})");
        let s = summarize(&reason);
        assert!(s.len() <= 3 * MAX_SIGNATURE_SUMMARY_BYTES + 80, "{}", s.len());
        assert!(s.starts_with("scope s: notation: no signature verified (#1: plugin \"p"), "{s}");
        assert!(s.contains("…; #2: short one; #3: "), "{s}");
        assert!(s.ends_with("…)"), "{s}");
        assert_eq!(summarize("no scope matches"), "no scope matches");
        // Two verifiers' lists: the second one's label survives the first one's junk.
        let two = format!("none passed: notation: x (#1: {huge}); cosign: no cosign signature verified (#1: {huge})");
        let s = summarize(&two);
        assert!(s.contains("…); cosign: no cosign signature verified (#1: "), "{s}");
        assert!(s.ends_with("…)"), "{s}");
        // Text with no items is still capped.
        let plain = summarize(&"x".repeat(100_000));
        assert!(plain.len() <= MAX_DECISION_REASON_BYTES && plain.ends_with(pullgate_wire::TRUNCATED));
    }

    #[test]
    fn render_names_the_manifest_and_the_trust_set() {
        let mut r = report("r1", "sha256:i");
        let sig = SignatureReport {
            manifest: "sha256:sig".into(),
            envelope_media_type: String::new(),
            signer: Some("key k".into()),
            policy: None,
            level: None,
            verified: true,
            checks: vec![],
            facts: SignatureFacts::default(),
            trust_set: Some("team-a".into()),
        };
        r.verification.push(VerifierRun {
            verifier: "cosign".into(),
            result: "pass".into(),
            reason: "ok".into(),
            registry: None,
            referrers: None,
            signatures: vec![sig],
            subject: Some("sha256:arm".into()),
            platform: Some("linux/arm64".into()),
            attached: None,
        });
        let text = render(&r);
        assert!(text.contains("  on manifest sha256:arm (linux/arm64)\n"), "{text}");
        assert!(text.contains("verified under trust set team-a"), "{text}");
    }

    #[test]
    fn render_lists_the_attached_document_findings_and_ignored() {
        use crate::attached::{AttachedReport, FindingReport, IgnoredAttachment};
        let mut r = report("r2", "sha256:i");
        let finding = |n: usize| FindingReport {
            rule: "severity".into(),
            item: format!("CVE-2026-{n:04}"),
            detail: format!("severity critical ({n})"),
        };
        let attached = AttachedReport {
            document: Some("sha256:doc".into()),
            artifact_type: Some("application/sarif+json".into()),
            signed: Some("cosign: key k".into()),
            summary: "grype: 5 results".into(),
            findings: (0..5).map(finding).collect(),
            omitted: 2,
            ignored: vec![IgnoredAttachment { manifest: "sha256:junk".into(), reason: "unreadable report".into() }],
            believed: 2,
            not_examined: 3,
        };
        r.verification.push(VerifierRun {
            verifier: "vulnerability".into(),
            result: "fail".into(),
            reason: "denies".into(),
            registry: None,
            referrers: None,
            signatures: vec![],
            subject: None,
            platform: None,
            attached: Some(attached),
        });
        let text = render(&r);
        let doc = "  document sha256:doc (application/sarif+json) signed cosign: key k: grype: 5 results\n";
        assert!(text.contains(doc), "{text}");
        for n in 0..5 {
            let line = format!("  finding severity CVE-2026-{n:04}: severity critical ({n})\n");
            assert!(text.contains(&line), "{text}");
        }
        assert!(text.contains("  2 more findings not kept\n"), "{text}");
        assert!(text.contains("  ignored sha256:junk: unreadable report\n"), "{text}");
        assert!(text.contains("  2 attachments believed, all counted\n"), "{text}");
        assert!(text.contains("  3 more candidates listed, not examined"), "{text}");
    }

    #[test]
    fn reports_stay_within_the_log_line_limit() {
        let mut r = report("big", "sha256:x");
        let check =
            CheckReport { check: "verificationPlugin".into(), status: "failed".into(), reason: "é".repeat(60_000) };
        let sig = SignatureReport {
            manifest: "sha256:m".into(),
            envelope_media_type: "m".repeat(100_000),
            signer: None,
            policy: None,
            level: None,
            verified: false,
            checks: vec![check; 8],
            facts: SignatureFacts::default(),
            trust_set: None,
        };
        r.verification.push(VerifierRun {
            verifier: "notation".into(),
            result: "fail".into(),
            reason: "r".repeat(200_000),
            registry: None,
            referrers: None,
            signatures: vec![sig; 50],
            subject: None,
            platform: None,
            attached: None,
        });
        r.bound();
        let n = serde_json::to_vec(&r).unwrap().len();
        assert!(n <= MAX_REPORT_BYTES, "{n}");
        assert_eq!(r.verification[0].signatures.len(), 32, "2 KiB texts of 50 signatures are too much, 32 fit");
        assert!(r.verification[0].reason.starts_with("[18 more signatures not kept in the report] "));
        assert!(r.verification[0].signatures[0].checks[0].reason.ends_with(pullgate_wire::TRUNCATED));
    }

    #[test]
    fn ids_are_unique() {
        let g = IdGenerator::new();
        let a = g.next_id();
        assert_ne!(a, g.next_id());
        assert!(a.starts_with("d-"));
    }
}
