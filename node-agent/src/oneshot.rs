//! One-shot verification (`pullgate-agent verify REF`): the daemon's engine
//! and config, used once in a process of its own, with no socket and nothing
//! shared with a running agent (its own in-memory cache, its own decision log).
//!
//! Without a digest the reference's tag is resolved through the registry,
//! the way a per-pull CLI has to; with a digest but no descriptor the
//! manifest is fetched once for its media type and size; with a full
//! descriptor (as containerd gives the verifier) nothing is fetched before
//! the engine runs.

use crate::config::Loaded;
use crate::engine::Engine;
use crate::report::{self, DecisionLog, Report};
use pullgate_reference::{Digest, Reference};
use pullgate_registry::{RegistryError, Repository};
use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Response, VerifyRequest};
use std::path::Path;
use std::time::Duration;

/// What to verify.
#[derive(Debug, Clone)]
pub struct Target {
    /// The image reference as given (`registry/repo:tag`, `…@sha256:…`).
    pub reference: String,
    /// The digest to verify; `None` resolves the reference's tag (or uses the digest it pins).
    pub digest: Option<String>,
    /// Media type and size of the digest's manifest, when known (skips fetching it).
    pub descriptor: Option<(String, u64)>,
    /// Time allowed for resolving and deciding together.
    pub timeout: Duration,
}

/// The decision and what it was made on.
#[derive(Debug, Clone)]
pub struct OneShot {
    /// The request handed to the engine.
    pub request: VerifyRequest,
    /// The engine's answer.
    pub response: Response,
    /// The full report, read back from the decision log.
    pub report: Option<Report>,
}

impl OneShot {
    /// `REF@DIGEST`, as pullgate-verifier labels a pull (the reference alone when it pins the digest).
    pub fn label(&self) -> String {
        if self.request.reference.contains('@') {
            self.request.reference.clone()
        } else {
            format!("{}@{}", self.request.reference, self.request.digest)
        }
    }
}

/// Why no decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// The reference does not parse.
    #[error("image reference {reference:?} is not valid: {source}")]
    Reference {
        /// The reference given.
        reference: String,
        /// The grammar error.
        #[source]
        source: pullgate_reference::ReferenceError,
    },
    /// The `--digest` value does not parse.
    #[error("--digest {digest:?} is not a digest (sha256:<64 hex> or sha512:<128 hex>): {source}")]
    Digest {
        /// The digest given.
        digest: String,
        /// The grammar error.
        #[source]
        source: pullgate_reference::ReferenceError,
    },
    /// The reference pins one digest and `--digest` names another.
    #[error("{reference} pins {pinned} but --digest is {digest}; give one of them")]
    DigestConflict {
        /// The reference given.
        reference: String,
        /// The digest it pins.
        pinned: String,
        /// The `--digest` value.
        digest: String,
    },
    /// The tag could not be resolved, or the manifest not fetched.
    #[error("looking up {reference} in its registry: {source}")]
    Registry {
        /// The reference given.
        reference: String,
        /// The registry error.
        #[source]
        source: RegistryError,
    },
    /// Resolving took the whole timeout.
    #[error("looking up {reference} did not finish within {timeout:?}; raise --timeout or check the registry")]
    Timeout {
        /// The reference given.
        reference: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The decision log could not be opened or read.
    #[error("decision log: {source}")]
    Log {
        /// The log error.
        #[source]
        source: report::LogError,
    },
}

/// Decides once on `target` with `loaded`'s config, writing the decision log
/// in `state_dir`.
pub async fn verify(loaded: Loaded, state_dir: &Path, target: &Target) -> Result<OneShot, OneShotError> {
    let started = tokio::time::Instant::now();
    let deadline = started + target.timeout;
    let reference = Reference::parse(&target.reference)
        .map_err(|source| OneShotError::Reference { reference: target.reference.clone(), source })?;
    let given = match &target.digest {
        Some(d) => Some(Digest::parse(d).map_err(|source| OneShotError::Digest { digest: d.clone(), source })?),
        None => None,
    };
    if let (Some(pinned), Some(given)) = (reference.digest(), &given)
        && pinned != given
    {
        return Err(OneShotError::DigestConflict {
            reference: target.reference.clone(),
            pinned: pinned.to_string(),
            digest: given.to_string(),
        });
    }
    let digest = given.or_else(|| reference.digest().cloned());
    let registry_error = |source| OneShotError::Registry { reference: target.reference.clone(), source };
    let descriptor = match (digest, &target.descriptor) {
        (Some(d), Some((media_type, size))) => {
            Descriptor { media_type: media_type.clone(), digest: d.to_string(), size: *size }
        }
        (digest, _) => {
            // Credentials and TLS settings as the engine's own client has them.
            let client =
                crate::client::registry_client(&loaded.config, &pullgate_registry::auth::Keychain::new(), None, None);
            let repo = Repository::of(&reference);
            let lookup = async {
                match (digest, reference.tag()) {
                    (Some(d), _) => {
                        let m = client.manifest_by_digest(&repo, &d.to_string(), deadline).await?;
                        let size = m.bytes.len() as u64;
                        Ok(Descriptor { media_type: m.media_type, digest: m.digest, size })
                    }
                    (None, tag) => {
                        // Reference::parse fills in `latest` when there is neither tag nor digest.
                        let (digest, media_type, size) =
                            client.resolve(&repo, tag.unwrap_or("latest"), deadline).await?;
                        Ok(Descriptor { media_type, digest, size })
                    }
                }
            };
            match tokio::time::timeout_at(deadline, lookup).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => return Err(registry_error(e)),
                Err(_) => {
                    return Err(OneShotError::Timeout { reference: target.reference.clone(), timeout: target.timeout });
                }
            }
        }
    };
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let request = VerifyRequest {
        version: PROTOCOL_VERSION,
        reference: target.reference.clone(),
        digest: descriptor.digest.clone(),
        descriptor,
        deadline_ms: remaining.as_millis().max(1) as u64,
    };
    let log =
        DecisionLog::open(state_dir, report::DEFAULT_ROTATE_BYTES).map_err(|source| OneShotError::Log { source })?;
    let engine = Engine::new(loaded.dir.clone(), Ok(loaded), log);
    let response = engine.decide(&request, None).await;
    let report = match &response {
        Response::Decision(d) => {
            report::find(state_dir, &d.report_id).map_err(|source| OneShotError::Log { source })?
        }
        _ => None,
    };
    Ok(OneShot { request, response, report })
}
