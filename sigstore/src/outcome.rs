//! Verification results: [`Outcome`] with its [`Check`] list, the [`Signer`] that was
//! established, and the [`FailureClass`] of a rejection, so callers (and tests) act on the kind
//! of failure rather than on message text.

use std::fmt;

/// Why a signature or bundle was rejected, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The bundle, annotation, certificate encoding or other input could not be decoded, or its
    /// format version is not supported.
    Parse,
    /// The cosign layer is not a simple-signing payload (media type, JSON shape or
    /// `critical.type`).
    Payload,
    /// The verification material does not suit the policy: a key-signed bundle with no trusted
    /// keys configured, a certificate-signed one with no identities configured.
    Material,
    /// The signature does not verify (with the certificate's key, or with none of the trusted
    /// keys).
    Signature,
    /// The signed digest (simple-signing manifest digest, bundle message digest, in-toto
    /// subject) is not the digest of the artifact being verified.
    DigestMismatch,
    /// The signing certificate or its chain is malformed or does not lead to a trusted
    /// certificate authority at the verified time.
    Certificate,
    /// The certificate's identity (subject alternative name and OIDC issuer) matches none of
    /// the policy's identities.
    Identity,
    /// The transparency log entry names a log that is not in the trusted root, or the log's key
    /// was not valid at the entry's time.
    UnknownLog,
    /// The transparency log entry is about something else: its body does not record this
    /// artifact digest, signature, or key/certificate.
    TlogBody,
    /// The signed entry timestamp (inclusion promise) does not verify with the log's key, or
    /// is missing where the bundle version requires it.
    TlogSet,
    /// The Merkle inclusion proof is missing where required or does not lead to its root hash.
    InclusionProof,
    /// The signed checkpoint does not verify with the log's key or does not commit to the
    /// inclusion proof's tree.
    Checkpoint,
    /// The policy requires a transparency log entry and there is none.
    TlogMissing,
    /// An RFC 3161 timestamp is malformed, is not over this signature, or its signature does
    /// not verify.
    Timestamp,
    /// An RFC 3161 timestamp was not issued by a timestamp authority of the trusted root (or
    /// its chain or validity window does not cover the stamped time).
    UntrustedTsa,
    /// A verified time (log integration time or timestamp) lies outside the signing
    /// certificate's validity, or in the future.
    TimeNotInValidity,
    /// There is no verified time to judge the certificate at (no SET-backed integrated time
    /// and no trusted timestamp, e.g. a Rekor v2 entry without an RFC 3161 timestamp).
    NoVerifiedTime,
    /// The DSSE payload is not an in-toto Statement this verifier accepts.
    Statement,
    /// The SLSA provenance predicate does not meet the provenance policy.
    Provenance,
}

impl FailureClass {
    /// A short stable name, e.g. `inclusion-proof`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Parse => "parse",
            FailureClass::Payload => "payload",
            FailureClass::Material => "material",
            FailureClass::Signature => "signature",
            FailureClass::DigestMismatch => "digest-mismatch",
            FailureClass::Certificate => "certificate",
            FailureClass::Identity => "identity",
            FailureClass::UnknownLog => "unknown-log",
            FailureClass::TlogBody => "tlog-body",
            FailureClass::TlogSet => "tlog-set",
            FailureClass::InclusionProof => "inclusion-proof",
            FailureClass::Checkpoint => "checkpoint",
            FailureClass::TlogMissing => "tlog-missing",
            FailureClass::Timestamp => "timestamp",
            FailureClass::UntrustedTsa => "untrusted-tsa",
            FailureClass::TimeNotInValidity => "time-not-in-validity",
            FailureClass::NoVerifiedTime => "no-verified-time",
            FailureClass::Statement => "statement",
            FailureClass::Provenance => "provenance",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: its class and a human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The kind of failure.
    pub class: FailureClass,
    /// What was checked, on what, and what was found.
    pub reason: String,
}

impl Failure {
    pub(crate) fn new(class: FailureClass, reason: impl Into<String>) -> Self {
        Failure { class, reason: reason.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.reason)
    }
}

/// Shorthand for building a [`Failure`] inside the verifiers.
pub(crate) fn fail(class: FailureClass, reason: impl Into<String>) -> Failure {
    Failure::new(class, reason)
}

/// The state of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// The check ran and passed.
    Passed,
    /// The check ran and failed; verification stopped here.
    Failed,
    /// The check did not apply (for example the identity check of a key-signed signature) or
    /// was not required by the policy.
    Skipped,
}

/// One step of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Stable name of the check, e.g. `signature`, `tlog-set`, `certificate-chain`.
    pub name: &'static str,
    /// Whether it passed, failed or was skipped.
    pub status: CheckStatus,
    /// What was found (or why it was skipped).
    pub detail: String,
}

/// Who signed, as established by the verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A trusted public key (key-based signing).
    Key {
        /// The name the key was given in [`crate::PublicKeys`].
        name: String,
        /// SHA-256 of the key's DER SubjectPublicKeyInfo, lowercase hex.
        key_id: String,
    },
    /// A Fulcio (keyless) certificate.
    Certificate {
        /// The certificate's subject alternative name (email, URI or username).
        subject: String,
        /// The OIDC issuer from the Fulcio extensions.
        issuer: String,
    },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Key { name, key_id } => write!(f, "key {name} (sha256:{key_id})"),
            Signer::Certificate { subject, issuer } => write!(f, "{subject} (issuer {issuer})"),
        }
    }
}

/// The result of verifying one cosign signature layer or one Sigstore bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// True only if every required check passed.
    pub verified: bool,
    /// Why it was rejected; `None` when verified.
    pub failure: Option<Failure>,
    /// The signer, once the signature has been verified (also set on some later failures, for
    /// reports).
    pub signer: Option<Signer>,
    /// Log index of the first verified transparency log entry.
    pub log_index: Option<u64>,
    /// Integrated time (Unix seconds) of the first verified Rekor v1 entry.
    pub integrated_time: Option<i64>,
    /// Times (Unix seconds) of the verified RFC 3161 timestamps.
    pub timestamps: Vec<i64>,
    /// The in-toto predicate type, for DSSE bundles.
    pub predicate_type: Option<String>,
    /// Every check in the order it ran; the last one failed when `verified` is false.
    pub checks: Vec<Check>,
}

impl Outcome {
    /// The failure class, if rejected.
    pub fn failure_class(&self) -> Option<FailureClass> {
        self.failure.as_ref().map(|f| f.class)
    }
}

/// Collects checks while a verification runs and builds the [`Outcome`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub checks: Vec<Check>,
    pub signer: Option<Signer>,
    pub log_index: Option<u64>,
    pub integrated_time: Option<i64>,
    pub timestamps: Vec<i64>,
    pub predicate_type: Option<String>,
}

impl Recorder {
    /// Records a check that passed.
    pub fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, status: CheckStatus::Passed, detail: detail.into() });
    }

    /// Records a check that did not apply.
    pub fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, status: CheckStatus::Skipped, detail: detail.into() });
    }

    /// Records the result of a check: passed with the returned detail, or failed.
    pub fn run<T>(&mut self, name: &'static str, result: Result<(T, String), Failure>) -> Result<T, Failure> {
        match result {
            Ok((value, detail)) => {
                self.pass(name, detail);
                Ok(value)
            }
            Err(f) => {
                self.checks.push(Check { name, status: CheckStatus::Failed, detail: f.reason.clone() });
                Err(f)
            }
        }
    }

    /// Builds the outcome from the final result.
    pub fn finish(self, result: Result<(), Failure>) -> Outcome {
        Outcome {
            verified: result.is_ok(),
            failure: result.err(),
            signer: self.signer,
            log_index: self.log_index,
            integrated_time: self.integrated_time,
            timestamps: self.timestamps,
            predicate_type: self.predicate_type,
            checks: self.checks,
        }
    }
}
