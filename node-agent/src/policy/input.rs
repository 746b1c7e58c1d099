//! The policy input document (`input` in Rego), version
//! [`INPUT_API_VERSION`]: the image, the node's platform, the scope, the
//! mode, what the typed rules concluded and every verifier's result with
//! each signature's facts. docs/rego.md is its reference; a field is only
//! ever added within one version, never renamed or retyped.
//!
//! Everything in it that registry content can shape is bounded here: at
//! most [`MAX_SIGNATURES`] signatures per verifier (verified ones first),
//! every text cut to [`MAX_TEXT`] bytes, the whole at most
//! [`MAX_INPUT_BYTES`] encoded.

use crate::cache::Outcome;
use crate::report::{SignatureReport, VerifierRun};
use serde::{Deserialize, Serialize};

/// The `apiVersion` of the input document.
pub const INPUT_API_VERSION: &str = "pullgate.dev/policy-input/v1";
/// Signatures of one verifier handed to a policy.
pub const MAX_SIGNATURES: usize = 8;
/// Longest text field in the input.
pub const MAX_TEXT: usize = 512;
/// Largest encoded input; larger ones are not evaluated (an error).
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// The input document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// Always [`INPUT_API_VERSION`] for this layout.
    pub api_version: String,
    /// The pulled image.
    pub image: Image,
    /// The platform this node runs (`os`, `architecture`, `variant`).
    pub platform: Platform,
    /// The scope that matched, if one did (otherwise `defaultAction` applied).
    pub scope: Option<ScopeInfo>,
    /// `enforce` or `audit`.
    pub mode: String,
    /// What the typed rules (scope action and verifiers) concluded.
    pub typed: Typed,
    /// Every verifier run, in the order they ran.
    pub verification: Vec<Verifier>,
}

/// The pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The normalised reference (`docker.io/library/nginx:1.27`).
    pub reference: String,
    /// Registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/nginx`).
    pub repository: String,
    /// The tag, when the reference has one.
    pub tag: Option<String>,
    /// The digest being pulled (`sha256:…`).
    pub digest: String,
    /// Media type of the pulled descriptor (index or manifest).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8`, `v7`, … when the architecture has variants.
    pub variant: Option<String>,
}

impl Platform {
    /// The input's spelling of a platform: the node's (`nodePlatform`, or the
    /// agent's own), exactly as the `platforms` rules use it.
    pub fn of(p: &crate::platform::Platform) -> Platform {
        Platform {
            os: p.os().into(),
            architecture: p.architecture().into(),
            variant: Some(p.variant()).filter(|v| !v.is_empty()).map(Into::into),
        }
    }
}

/// The scope that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeInfo {
    /// Its name.
    pub name: String,
    /// `allow`, `deny` or `verify`.
    pub action: String,
}

/// The typed outcome before the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Typed {
    /// `allow`, `deny` or `error`.
    pub outcome: String,
    /// Its reason.
    pub reason: String,
    /// The rule that applied (`scope acme`, `defaultAction`).
    pub rule: Option<String>,
}

/// One verifier's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verifier {
    /// `notation`, `cosign`, `sigstore`.
    pub verifier: String,
    /// `pass`, `fail` or `error`.
    pub result: String,
    /// Why.
    pub reason: String,
    /// The registry asked.
    pub registry: Option<String>,
    /// The manifest this run examined when it is not the pulled digest (a
    /// platform manifest of an index, `platforms = "index-or-node"`/`"every"`).
    pub subject: Option<String>,
    /// That manifest's platform (`linux/arm64/v8`).
    pub platform: Option<String>,
    /// Signatures examined (at most [`MAX_SIGNATURES`], verified ones first).
    pub signatures: Vec<Signature>,
    /// How many signatures were left out of `signatures`.
    pub omitted: usize,
    /// The `sbom` / `vulnerability` verifiers' result: the deciding document,
    /// its findings (capped) and the attachments passed over. Absent for
    /// signature verifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<crate::attached::AttachedReport>,
}

/// One signature examined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    /// Digest of the signature manifest (or bundle manifest).
    pub manifest: String,
    /// The digest the signature is on: the pulled one, or the run's platform manifest.
    pub subject: String,
    /// Whether it verified.
    pub verified: bool,
    /// `notation`, `cosign` or `sigstore-bundle`.
    pub format: Option<String>,
    /// The signer as the verifier describes it.
    pub signer: Option<String>,
    /// Notation: the signing scheme.
    pub scheme: Option<String>,
    /// Certificate subjects of the signing chain, leaf first.
    pub chain_subjects: Vec<String>,
    /// Key-based: the key's name in the config.
    pub key_name: Option<String>,
    /// Key-based: SHA-256 of the key, hex.
    pub key_id: Option<String>,
    /// Keyless: the certificate identity (email, URI).
    pub identity: Option<String>,
    /// Keyless: the OIDC issuer.
    pub issuer: Option<String>,
    /// RFC 3339 signing time proven by a transparency log.
    pub signing_time: Option<String>,
    /// RFC 3339 times of verified RFC 3161 timestamps.
    pub timestamps: Vec<String>,
    /// in-toto predicate type (DSSE bundles, e.g. SLSA provenance).
    pub predicate_type: Option<String>,
    /// Notation: the trust policy applied.
    pub trust_policy: Option<String>,
    /// Notation: its verification level.
    pub level: Option<String>,
    /// Each check and its status (`integrity: passed`), without the reasons.
    pub checks: Vec<Check>,
}

/// A check's name and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `integrity`, `authenticity`, `tlog`, …
    pub check: String,
    /// `passed`, `failed`, `logged`, `skipped`, …
    pub status: String,
}

/// What [`build`] needs about the decision.
pub struct Facts<'a> {
    /// The parsed pulled reference.
    pub reference: &'a pullgate_reference::Reference,
    /// The pulled digest.
    pub digest: &'a str,
    /// Descriptor media type.
    pub media_type: &'a str,
    /// Descriptor size.
    pub size: u64,
    /// The matching scope and its action kind.
    pub scope: Option<(&'a str, &'a str)>,
    /// `enforce` / `audit`.
    pub mode: &'a str,
    /// The typed outcome.
    pub outcome: &'a Outcome,
    /// The typed rule.
    pub rule: Option<&'a str>,
    /// Verifier runs.
    pub runs: &'a [VerifierRun],
    /// The node's platform (`nodePlatform`, or the agent's own).
    pub platform: &'a crate::platform::Platform,
}

fn cut(s: &str) -> String {
    pullgate_wire::truncate(s, MAX_TEXT, pullgate_wire::TRUNCATED)
}

fn cut_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(cut)
}

/// Builds the input document for one decision.
pub fn build(f: &Facts<'_>) -> Input {
    let (outcome, reason) = match f.outcome {
        Outcome::Allow(r) => ("allow", r),
        Outcome::Deny(r) => ("deny", r),
        Outcome::Error(r) => ("error", r),
    };
    let r = f.reference;
    Input {
        api_version: INPUT_API_VERSION.into(),
        image: Image {
            reference: cut(&r.to_string()),
            registry: r.host().into(),
            repository: cut(r.path()),
            tag: r.tag().map(cut),
            digest: f.digest.into(),
            media_type: cut(f.media_type),
            size: f.size,
        },
        platform: Platform::of(f.platform),
        scope: f.scope.map(|(name, action)| ScopeInfo { name: name.into(), action: action.into() }),
        mode: f.mode.into(),
        typed: Typed { outcome: outcome.into(), reason: cut(reason), rule: f.rule.map(cut) },
        verification: f.runs.iter().map(|run| verifier(run, f.digest)).collect(),
    }
}

fn verifier(run: &VerifierRun, subject: &str) -> Verifier {
    // Junk and list notes carry no facts and did not verify: they are not signatures.
    let mut sigs: Vec<&SignatureReport> =
        run.signatures.iter().filter(|s| s.verified || !s.facts.is_empty() || s.signer.is_some()).collect();
    sigs.sort_by_key(|s| !s.verified);
    let omitted = sigs.len().saturating_sub(MAX_SIGNATURES);
    let on = run.subject.as_deref().map_or_else(|| subject.to_string(), cut);
    Verifier {
        verifier: run.verifier.clone(),
        result: run.result.clone(),
        reason: cut(&run.reason),
        registry: cut_opt(&run.registry),
        subject: cut_opt(&run.subject),
        platform: cut_opt(&run.platform),
        signatures: sigs.into_iter().take(MAX_SIGNATURES).map(|s| signature(s, &on)).collect(),
        omitted,
        attached: run.attached.clone(),
    }
}

fn signature(s: &SignatureReport, subject: &str) -> Signature {
    let f = &s.facts;
    Signature {
        manifest: cut(&s.manifest),
        subject: subject.into(),
        verified: s.verified,
        format: cut_opt(&f.format),
        signer: cut_opt(&s.signer),
        scheme: cut_opt(&f.scheme),
        chain_subjects: f.chain_subjects.iter().take(MAX_SIGNATURES).map(|c| cut(c)).collect(),
        key_name: cut_opt(&f.key_name),
        key_id: cut_opt(&f.key_id),
        identity: cut_opt(&f.identity),
        issuer: cut_opt(&f.issuer),
        signing_time: cut_opt(&f.signing_time),
        timestamps: f.timestamps.iter().take(MAX_SIGNATURES).map(|t| cut(t)).collect(),
        predicate_type: cut_opt(&f.predicate_type),
        trust_policy: cut_opt(&s.policy),
        level: cut_opt(&s.level),
        checks: s.checks.iter().take(32).map(|c| Check { check: cut(&c.check), status: cut(&c.status) }).collect(),
    }
}

/// Reads an input document from a file written by `explain --json` (the
/// report: its `policy.input`) or from a bare input document.
pub fn from_recorded(json: &[u8]) -> Result<serde_json::Value, String> {
    if json.len() > 4 * MAX_INPUT_BYTES {
        return Err(format!("{} bytes, more than {}", json.len(), 4 * MAX_INPUT_BYTES));
    }
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let input = if v.get("apiVersion").is_some() { v } else { v.pointer("/policy/input").cloned().unwrap_or_default() };
    match input.get("apiVersion").and_then(serde_json::Value::as_str) {
        Some(INPUT_API_VERSION) => Ok(input),
        Some(other) => Err(format!("input apiVersion {other:?}; this agent reads {INPUT_API_VERSION:?}")),
        None => Err("neither a policy input document (apiVersion) nor a report with policy.input (explain --json of a decision a policy saw)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built through serde, so fields other parts add (with defaults) need no edit here.
    fn sig(verified: bool, signer: &str) -> SignatureReport {
        serde_json::from_value(serde_json::json!({
            "manifest": "sha256:m",
            "envelopeMediaType": "",
            "signer": signer,
            "policy": null,
            "level": null,
            "verified": verified,
            "checks": [{"check": "integrity", "status": "passed", "reason": "x".repeat(9999)}],
            "facts": {"format": "cosign"},
        }))
        .unwrap()
    }

    #[test]
    fn the_input_is_versioned_and_bounded() {
        let reference = pullgate_reference::Reference::parse("ghcr.io/acme/app:v1").unwrap();
        let mut signatures: Vec<SignatureReport> =
            (0..40).map(|i| sig(false, &format!("s{i}{}", "é".repeat(900)))).collect();
        signatures.push(sig(true, "good"));
        let mut run: VerifierRun = serde_json::from_value(serde_json::json!({
            "verifier": "cosign", "result": "pass", "reason": "r".repeat(100_000),
            "registry": "ghcr.io", "referrers": null, "signatures": [],
        }))
        .unwrap();
        run.signatures = signatures;
        let outcome = Outcome::Allow("ok".into());
        let input = build(&Facts {
            reference: &reference,
            digest: "sha256:d",
            media_type: "application/vnd.oci.image.manifest.v1+json",
            size: 9,
            scope: Some(("acme", "verify")),
            mode: "enforce",
            outcome: &outcome,
            rule: Some("scope acme"),
            runs: std::slice::from_ref(&run),
            platform: &crate::platform::Platform::parse("linux/arm64").unwrap(),
        });
        assert_eq!(input.api_version, INPUT_API_VERSION);
        assert_eq!((input.image.registry.as_str(), input.image.repository.as_str()), ("ghcr.io", "acme/app"));
        assert_eq!(input.image.tag.as_deref(), Some("v1"));
        let v = &input.verification[0];
        assert_eq!(v.signatures.len(), MAX_SIGNATURES);
        assert_eq!(v.omitted, 41 - MAX_SIGNATURES);
        assert!(v.signatures[0].verified, "verified signatures come first");
        assert!(v.reason.len() <= MAX_TEXT + 20 && v.signatures[1].signer.as_ref().unwrap().len() <= MAX_TEXT + 20);
        let json = serde_json::to_vec(&input).unwrap();
        assert!(json.len() < MAX_INPUT_BYTES / 4, "{}", json.len());
        let back = from_recorded(&json).unwrap();
        assert_eq!(back["apiVersion"], INPUT_API_VERSION);
        assert_eq!(v.signatures[0].subject, "sha256:d", "a run on the pulled digest");
        // A run on a platform manifest of an index: its signatures are on that manifest.
        let mut on_platform = run.clone();
        on_platform.subject = Some("sha256:arm64".into());
        on_platform.platform = Some("linux/arm64/v8".into());
        let v = verifier(&on_platform, "sha256:d");
        assert_eq!((v.subject.as_deref(), v.platform.as_deref()), (Some("sha256:arm64"), Some("linux/arm64/v8")));
        assert!(v.signatures.iter().all(|s| s.subject == "sha256:arm64"));
        // The node platform is the configured one, not the build target's.
        assert_eq!((input.platform.os.as_str(), input.platform.architecture.as_str()), ("linux", "arm64"));
        // SBOM / vulnerability findings reach the policy as the report has them.
        assert!(input.verification[0].attached.is_none());
        let mut vuln = run.clone();
        vuln.verifier = "vulnerability".into();
        vuln.attached = Some(crate::attached::AttachedReport {
            document: Some("sha256:doc".into()),
            artifact_type: Some("application/sarif+json".into()),
            signed: None,
            summary: "grype: 2 results".into(),
            findings: vec![crate::attached::FindingReport {
                rule: "severity".into(),
                item: "CVE-1999-0002".into(),
                detail: "high 8.5".into(),
            }],
            omitted: 0,
            ignored: Vec::new(),
            believed: 1,
            not_examined: 0,
        });
        let json = serde_json::to_value(verifier(&vuln, "sha256:d")).unwrap();
        assert_eq!(json["attached"]["findings"][0]["item"], "CVE-1999-0002", "{json}");
    }

    #[test]
    fn recorded_inputs_are_found_in_reports_and_checked() {
        let report =
            format!(r#"{{"id": "d-1", "policy": {{"input": {{"apiVersion": "{INPUT_API_VERSION}", "mode": "x"}}}}}}"#);
        assert_eq!(from_recorded(report.as_bytes()).unwrap()["mode"], "x");
        assert!(from_recorded(br#"{"apiVersion": "pullgate.dev/policy-input/v9"}"#).unwrap_err().contains("v9"));
        assert!(from_recorded(br#"{"id": "d-1"}"#).unwrap_err().contains("explain --json"));
        assert!(from_recorded(b"junk").unwrap_err().contains("not JSON"));
    }
}
