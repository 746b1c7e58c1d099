//! Runs the verifiers a `verify` scope requires: discovers the artifacts
//! attached to the pulled digest in its registry, fetches them (bounded,
//! digest-checked) and hands the bytes to the pure verifier crates.
//!
//! Registry problems are errors (they go through the failure policy);
//! signatures that do not verify are failures (deny). Every signature
//! examined is recorded for the report.

use crate::config::{Combine, Config, NotationTrust, RegistrySettings, Requirements, SigstoreTrust, VerifierKind};
use crate::report::{CheckReport, SignatureReport, VerifierRun};
use pullgate_reference::{Digest, Reference};
use pullgate_registry::auth::Keychain;
use pullgate_registry::types::ImageManifest;
use pullgate_registry::{Client, ClientOptions, HostOptions, Repository, RequestObserver};
use std::time::SystemTime;
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

/// Builds the registry client a config asks for: per-host TLS and
/// concurrency settings, and a keychain of the node's docker config (when
/// configured) overlaid with `pull_secrets` (Kubernetes mode).
pub fn registry_client(
    cfg: &Config,
    pull_secrets: &Keychain,
    observer: Option<RequestObserver>,
    content_store: Option<std::sync::Arc<dyn pullgate_registry::ContentStore>>,
) -> Client {
    let mut opts = ClientOptions { observer, content_store, ..ClientOptions::default() };
    for (host, RegistrySettings { insecure, ca_pem, max_concurrency }) in &cfg.registries {
        opts.hosts.insert(
            host.clone(),
            HostOptions { insecure: *insecure, ca_pem: ca_pem.clone(), max_concurrency: *max_concurrency },
        );
    }
    let client = Client::new(opts);
    client.set_keychain(keychain(cfg, pull_secrets));
    client
}

/// The node's docker config keychain (when configured) overlaid with `pull_secrets`.
pub fn keychain(cfg: &Config, pull_secrets: &Keychain) -> Keychain {
    let mut kc = Keychain::new();
    if let Some(path) = &cfg.docker_config {
        match Keychain::from_docker_config_file(path) {
            Ok(file) => kc = file,
            Err(e) => {
                tracing::error!(error = %e, "registry credentials unavailable; pulls from private registries will fail")
            }
        }
    }
    kc.extend(pull_secrets);
    kc
}

/// Runs every required verifier and combines them; returns the combined
/// result, its reason and each run for the report.
pub async fn run_all(
    cfg: &Config,
    client: &Client,
    requirements: &Requirements,
    subject: &Subject,
    deadline: Instant,
) -> (RunResult, String, Vec<VerifierRun>) {
    let mut runs = Vec::new();
    for kind in requirements.verifiers() {
        let run = match kind {
            VerifierKind::Notation => match &cfg.notation {
                Some(trust) => notation(client, trust, subject, deadline).await,
                None => error_run(*kind, "no [notation] trust policy is configured".into()),
            },
            VerifierKind::Cosign => match &cfg.sigstore {
                Some(trust) => cosign(client, trust, subject, deadline).await,
                None => error_run(*kind, "no [sigstore] trust is configured".into()),
            },
            VerifierKind::Sigstore => match &cfg.sigstore {
                Some(trust) => bundles(client, trust, subject, deadline).await,
                None => error_run(*kind, "no [sigstore] trust is configured".into()),
            },
            other => error_run(*other, "this agent cannot run it yet".into()),
        };
        let result = match run.result.as_str() {
            "pass" => RunResult::Pass,
            "fail" => RunResult::Fail,
            _ => RunResult::Error,
        };
        runs.push((result, run));
        // With `any`, one pass is enough: skip the registry work of the rest.
        if requirements.combine() == Combine::Any && result == RunResult::Pass {
            break;
        }
    }
    let pick = |r: RunResult| runs.iter().find(|(res, _)| *res == r).map(|(_, run)| run);
    let describe = |run: &VerifierRun| format!("{}: {}", run.verifier, run.reason);
    let (result, reason) = match requirements.combine() {
        Combine::All => {
            if let Some(f) = pick(RunResult::Fail) {
                (RunResult::Fail, describe(f))
            } else if let Some(e) = pick(RunResult::Error) {
                (RunResult::Error, describe(e))
            } else {
                let all: Vec<String> = runs.iter().map(|(_, r)| describe(r)).collect();
                (RunResult::Pass, all.join("; "))
            }
        }
        Combine::Any => {
            if let Some(p) = pick(RunResult::Pass) {
                (RunResult::Pass, describe(p))
            } else if let Some(e) = pick(RunResult::Error) {
                (RunResult::Error, describe(e))
            } else {
                let all: Vec<String> = runs.iter().map(|(_, r)| describe(r)).collect();
                (RunResult::Fail, format!("none passed: {}", all.join("; ")))
            }
        }
    };
    (result, reason, runs.into_iter().map(|(_, r)| r).collect())
}

fn error_run(kind: VerifierKind, reason: String) -> VerifierRun {
    VerifierRun {
        verifier: kind.as_str().into(),
        result: RunResult::Error.as_str().into(),
        reason,
        registry: None,
        referrers: None,
        signatures: Vec::new(),
    }
}

/// Notation: referrers of artifact type `application/vnd.cncf.notary.signature`,
/// each signature manifest and its envelope, then the trust policy.
async fn notation(client: &Client, trust: &NotationTrust, subject: &Subject, deadline: Instant) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut run = VerifierRun {
        verifier: VerifierKind::Notation.as_str().into(),
        result: RunResult::Error.as_str().into(),
        reason: String::new(),
        registry: Some(repo.host.clone()),
        referrers: None,
        signatures: Vec::new(),
    };
    let referrers = match client.referrers(&repo, &digest, Some(NOTATION_ARTIFACT_TYPE), deadline).await {
        Ok(r) => r,
        Err(e) => {
            return registry_failure(run, "listing signatures".into(), &e);
        }
    };
    run.referrers = Some(match referrers.source {
        pullgate_registry::types::ReferrersSource::Api => "referrers-api".into(),
        pullgate_registry::types::ReferrersSource::TagSchema => "tag-schema".into(),
    });
    // Fetch every signature manifest and its envelope; keep the bytes for the verifier.
    let mut envelopes: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut ignored: Vec<SignatureReport> = Vec::new();
    for d in referrers.descriptors.iter().take(pullgate_notation::MAX_SIGNATURES) {
        let manifest = match client.manifest_by_digest(&repo, &d.digest, deadline).await {
            Ok(m) => m,
            Err(e) if skippable(&e) => {
                ignored.push(ignored_signature(&d.digest, format!("cannot be fetched: {e}")));
                continue;
            }
            Err(e) => {
                return registry_failure(run, format!("fetching signature manifest {}", d.digest), &e);
            }
        };
        let parsed: ImageManifest = match serde_json::from_slice(&manifest.bytes) {
            Ok(m) => m,
            Err(e) => {
                ignored.push(ignored_signature(&d.digest, format!("not an OCI image manifest: {e}")));
                continue;
            }
        };
        if parsed.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
            ignored.push(ignored_signature(&d.digest, format!("its subject is not {digest}")));
            continue;
        }
        let [layer] = parsed.layers.as_slice() else {
            ignored.push(ignored_signature(
                &d.digest,
                format!("{} layers, a signature has exactly one", parsed.layers.len()),
            ));
            continue;
        };
        let limit = pullgate_notation::MAX_ENVELOPE_BYTES as u64;
        let bytes = match client.blob(&repo, layer, limit, deadline).await {
            Ok(b) => b,
            Err(e) if skippable(&e) => {
                ignored.push(ignored_signature(&d.digest, format!("its envelope cannot be fetched: {e}")));
                continue;
            }
            Err(e) => {
                return registry_failure(run, format!("fetching signature envelope {}", layer.digest), &e);
            }
        };
        envelopes.push((d.digest.clone(), layer.media_type.clone(), bytes));
    }
    let blobs: Vec<pullgate_notation::SignatureBlob<'_>> =
        envelopes.iter().map(|(_, mt, b)| pullgate_notation::SignatureBlob { media_type: mt, bytes: b }).collect();
    let sd = pullgate_notation::SubjectDescriptor {
        media_type: subject.media_type.clone(),
        digest: digest.clone(),
        size: subject.size,
    };
    let outcome = pullgate_notation::verify_artifact(
        &sd,
        &repo.to_string(),
        &blobs,
        &trust.policy,
        &trust.store,
        SystemTime::now(),
    );
    for (i, sig) in outcome.signatures.iter().enumerate() {
        let (manifest, media_type, _) = &envelopes[i];
        run.signatures.push(SignatureReport {
            manifest: manifest.clone(),
            envelope_media_type: media_type.clone(),
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
        });
    }
    run.signatures.extend(ignored);
    run.result = if outcome.verified { RunResult::Pass } else { RunResult::Fail }.as_str().into();
    run.reason = match (&outcome.policy, outcome.verified) {
        (Some(p), true) => format!("trust policy {p:?}: {}", outcome.reason),
        (Some(p), false) => format!("trust policy {p:?}: {}", outcome.reason),
        (None, _) => outcome.reason.clone(),
    };
    if referrers.descriptors.is_empty() && !outcome.verified {
        run.reason = format!("no Notation signature found for {digest} in {repo}");
    }
    run
}

/// Artifact type of cosign signature manifests attached as OCI 1.1 referrers.
pub const COSIGN_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Prefix of Sigstore bundle artifact types (`…bundle.v0.3+json`, `…bundle+json;version=0.x`).
pub const BUNDLE_ARTIFACT_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// Most signature layers examined per image.
const MAX_SIGSTORE_LAYERS: usize = 32;

/// A run that has not reached a verdict yet.
fn new_run(kind: VerifierKind, repo: &Repository) -> VerifierRun {
    VerifierRun {
        verifier: kind.as_str().into(),
        result: RunResult::Error.as_str().into(),
        reason: String::new(),
        registry: Some(repo.host.clone()),
        referrers: None,
        signatures: Vec::new(),
    }
}

/// Turns a Sigstore outcome into the report's signature entry.
fn sigstore_report(manifest: &str, media_type: &str, o: &pullgate_sigstore::Outcome) -> SignatureReport {
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
/// as a bad request) that anyone able to push can cause: that artifact is
/// ignored and the others are still examined, so junk can neither turn a
/// deny into an error (allowed under fail-open) nor hide a valid signature.
/// Outages, auth failures and tampering are not skippable.
fn skippable(e: &pullgate_registry::RegistryError) -> bool {
    use pullgate_registry::RegistryError as E;
    match e {
        E::NotFound { .. } | E::TooLarge { .. } | E::Invalid { .. } => true,
        E::Status { status, .. } => (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429),
        _ => false,
    }
}

/// One-line verdict over the signatures a Sigstore verifier examined.
fn sigstore_verdict(run: &mut VerifierRun, kind: &str, found: usize, digest: &str, repo: &Repository) {
    if let Some(ok) = run.signatures.iter().find(|s| s.verified) {
        run.result = RunResult::Pass.as_str().into();
        run.reason = format!("{kind} by {} verified", ok.signer.as_deref().unwrap_or("a trusted signer"));
    } else if found == 0 {
        run.result = RunResult::Fail.as_str().into();
        run.reason = format!("no {kind} found for {digest} in {repo}");
    } else {
        run.result = RunResult::Fail.as_str().into();
        let why: Vec<String> = run
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let last = s.checks.iter().rev().find(|c| c.check == "verdict");
                format!(
                    "#{}: {}",
                    i + 1,
                    last.map_or("not verified".to_string(), |c| format!("{}: {}", c.status, c.reason))
                )
            })
            .collect();
        run.reason = format!("no {kind} verified ({})", why.join("; "));
    }
}

/// Cosign: the `sha256-<hex>.sig` tag (cosign's default scheme) and signature
/// manifests attached as referrers; every layer is a simple-signing payload
/// with its signature, certificate and Rekor bundle in annotations.
async fn cosign(client: &Client, trust: &SigstoreTrust, subject: &Subject, deadline: Instant) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut run = new_run(VerifierKind::Cosign, &repo);
    let mut manifests: Vec<(String, ImageManifest)> = Vec::new();
    let tag = format!("{}.sig", digest.replace(':', "-"));
    match client.manifest_by_tag(&repo, &tag, deadline).await {
        Ok(Some(m)) => match serde_json::from_slice::<ImageManifest>(&m.bytes) {
            Ok(parsed) => manifests.push((m.digest, parsed)),
            Err(e) => run.signatures.push(ignored_signature(&m.digest, format!("{tag} is not an image manifest: {e}"))),
        },
        Ok(None) => {}
        Err(e) => {
            return registry_failure(run, format!("looking up {tag}"), &e);
        }
    }
    run.referrers = Some("cosign-tag".into());
    match client.referrers(&repo, &digest, Some(COSIGN_ARTIFACT_TYPE), deadline).await {
        Ok(r) => {
            if !r.descriptors.is_empty() {
                run.referrers = Some(match r.source {
                    pullgate_registry::types::ReferrersSource::Api => "cosign-tag+referrers-api".into(),
                    pullgate_registry::types::ReferrersSource::TagSchema => "cosign-tag+tag-schema".into(),
                });
            }
            for d in r.descriptors.iter().take(MAX_SIGSTORE_LAYERS) {
                match client.manifest_by_digest(&repo, &d.digest, deadline).await {
                    Ok(m) => match serde_json::from_slice::<ImageManifest>(&m.bytes) {
                        Ok(parsed) => manifests.push((m.digest, parsed)),
                        Err(e) => {
                            run.signatures.push(ignored_signature(&d.digest, format!("not an image manifest: {e}")))
                        }
                    },
                    Err(e) if skippable(&e) => {
                        run.signatures.push(ignored_signature(&d.digest, format!("cannot be fetched: {e}")));
                    }
                    Err(e) => {
                        return registry_failure(run, format!("fetching cosign signature manifest {}", d.digest), &e);
                    }
                }
            }
        }
        Err(e) => {
            return registry_failure(run, "listing cosign referrers".into(), &e);
        }
    }
    let mut found = 0;
    for (manifest_digest, m) in &manifests {
        for layer in m.layers.iter().take(MAX_SIGSTORE_LAYERS) {
            found += 1;
            let payload = match client.blob(&repo, layer, pullgate_sigstore::MAX_PAYLOAD_BYTES as u64, deadline).await {
                Ok(b) => b,
                Err(e) if skippable(&e) => {
                    run.signatures
                        .push(ignored_signature(manifest_digest, format!("its payload cannot be fetched: {e}")));
                    continue;
                }
                Err(e) => {
                    return registry_failure(run, format!("fetching cosign payload {}", layer.digest), &e);
                }
            };
            let cl = pullgate_sigstore::CosignLayer {
                media_type: &layer.media_type,
                payload: &payload,
                annotations: &layer.annotations,
            };
            let outcome = pullgate_sigstore::verify_cosign_signature(&digest, &cl, &trust.cosign, SystemTime::now());
            run.signatures.push(sigstore_report(manifest_digest, &layer.media_type, &outcome));
            if outcome.verified {
                break;
            }
        }
    }
    sigstore_verdict(&mut run, "cosign signature", found, &digest, &repo);
    run
}

/// Sigstore bundles (cosign v3 signatures and attestations, GitHub artifact
/// attestations) attached as referrers; the bundle must bind the pulled digest.
async fn bundles(client: &Client, trust: &SigstoreTrust, subject: &Subject, deadline: Instant) -> VerifierRun {
    let repo = Repository::of(&subject.reference);
    let digest = subject.digest.to_string();
    let mut run = new_run(VerifierKind::Sigstore, &repo);
    let referrers = match client.referrers(&repo, &digest, None, deadline).await {
        Ok(r) => r,
        Err(e) => {
            return registry_failure(run, "listing bundles".into(), &e);
        }
    };
    run.referrers = Some(match referrers.source {
        pullgate_registry::types::ReferrersSource::Api => "referrers-api".into(),
        pullgate_registry::types::ReferrersSource::TagSchema => "tag-schema".into(),
    });
    let mut found = 0;
    let candidates = referrers
        .descriptors
        .iter()
        .filter(|d| d.artifact_type.as_deref().is_some_and(|t| t.starts_with(BUNDLE_ARTIFACT_PREFIX)))
        .take(MAX_SIGSTORE_LAYERS);
    for d in candidates {
        let m = match client.manifest_by_digest(&repo, &d.digest, deadline).await {
            Ok(m) => m,
            Err(e) if skippable(&e) => {
                run.signatures.push(ignored_signature(&d.digest, format!("cannot be fetched: {e}")));
                continue;
            }
            Err(e) => {
                return registry_failure(run, format!("fetching bundle manifest {}", d.digest), &e);
            }
        };
        let parsed: ImageManifest = match serde_json::from_slice(&m.bytes) {
            Ok(p) => p,
            Err(e) => {
                run.signatures.push(ignored_signature(&d.digest, format!("not an image manifest: {e}")));
                continue;
            }
        };
        let Some(layer) = parsed.layers.first() else {
            run.signatures.push(ignored_signature(&d.digest, "no layer holds the bundle".into()));
            continue;
        };
        found += 1;
        let bytes = match client.blob(&repo, layer, pullgate_sigstore::MAX_BUNDLE_BYTES as u64, deadline).await {
            Ok(b) => b,
            Err(e) if skippable(&e) => {
                run.signatures.push(ignored_signature(&d.digest, format!("its bundle cannot be fetched: {e}")));
                continue;
            }
            Err(e) => {
                return registry_failure(run, format!("fetching bundle {}", layer.digest), &e);
            }
        };
        let outcome = pullgate_sigstore::verify_bundle(
            &bytes,
            pullgate_sigstore::Artifact::Digest(&digest),
            &trust.bundle,
            SystemTime::now(),
        );
        run.signatures.push(sigstore_report(&d.digest, &layer.media_type, &outcome));
        if outcome.verified {
            break;
        }
    }
    sigstore_verdict(&mut run, "Sigstore bundle", found, &digest, &repo);
    run
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
    }
}
