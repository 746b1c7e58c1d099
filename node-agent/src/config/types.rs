//! The config's value types that need no validation beyond their own
//! grammar: modes, verifier kinds, scope actions and requirements.

use pullgate_reference::Pattern;
use serde::{Deserialize, Serialize};

/// Enforce or only record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny what policy denies.
    #[default]
    Enforce,
    /// Allow everything, record what enforce would have denied.
    Audit,
}

impl Mode {
    /// `"enforce"` or `"audit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// Verifiers a `verify` scope can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifierKind {
    /// Notary Project signatures.
    Notation,
    /// Cosign signatures (key or keyless).
    Cosign,
    /// Sigstore bundles and in-toto attestations.
    Sigstore,
    /// SBOM license and package rules.
    Sbom,
    /// Vulnerability report rules.
    Vulnerability,
}

impl VerifierKind {
    /// The name used in config files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifierKind::Notation => "notation",
            VerifierKind::Cosign => "cosign",
            VerifierKind::Sigstore => "sigstore",
            VerifierKind::Sbom => "sbom",
            VerifierKind::Vulnerability => "vulnerability",
        }
    }
}

/// How the required verifiers of a scope combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Every required verifier must pass.
    #[default]
    All,
    /// One passing verifier is enough.
    Any,
}

/// What verification a `verify` scope requires. Holds at least one verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub(super) verifiers: Vec<VerifierKind>,
    pub(super) combine: Combine,
}

impl Requirements {
    /// The required verifiers, never empty, without duplicates.
    pub fn verifiers(&self) -> &[VerifierKind] {
        &self.verifiers
    }

    /// How they combine.
    pub fn combine(&self) -> Combine {
        self.combine
    }
}

/// What a scope does with the images it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Allow without verification.
    Allow,
    /// Deny, with an optional operator-written reason.
    Deny {
        /// Shown to the user in the verifier's line.
        reason: Option<String>,
    },
    /// Verify with these requirements.
    Verify(Requirements),
}

impl Action {
    /// `"allow"`, `"deny"` or `"verify"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny { .. } => "deny",
            Action::Verify(_) => "verify",
        }
    }
}

/// A named rule: images it covers and what to do with them.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Unique name, shown in reports.
    pub name: String,
    /// Patterns; never empty.
    pub images: Vec<Pattern>,
    /// What to do.
    pub action: Action,
}

/// The action for images no scope matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Allow unmatched images.
    Allow,
    /// Deny unmatched images (the default).
    #[default]
    Deny,
}
