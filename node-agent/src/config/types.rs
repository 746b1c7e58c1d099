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

/// How the required verifiers of a scope combine (`match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Combine {
    /// Every required verifier must pass (`"all"`).
    #[default]
    All,
    /// One passing verifier is enough (`"any"`).
    Any,
    /// At least this many of the required verifiers must pass
    /// (`{ atLeast = N }`); validated to be 1..=the number required.
    AtLeast(usize),
}

impl Combine {
    /// How many passing verifiers out of `required` meet it.
    pub fn needed(self, required: usize) -> usize {
        match self {
            Combine::All => required,
            Combine::Any => 1,
            Combine::AtLeast(n) => n.min(required),
        }
    }

    /// `all of`, `any of`, `at least N of`, for traces and reasons.
    pub fn describe(self) -> String {
        match self {
            Combine::All => "all of".into(),
            Combine::Any => "any of".into(),
            Combine::AtLeast(n) => format!("at least {n} of"),
        }
    }
}

/// Which manifests of a multi-platform image a scope verifies (`platforms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platforms {
    /// The digest containerd passes, whatever it is (the default).
    #[default]
    Index,
    /// A signature on the index, or else on the platform manifest this node would run.
    IndexOrNode,
    /// A signature on the index, or else on every platform manifest of it.
    Every,
}

impl Platforms {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Platforms::Index => "index",
            Platforms::IndexOrNode => "index-or-node",
            Platforms::Every => "every",
        }
    }
}

/// Name of the trust set made of the top-level `[notation]` and `[sigstore]` tables.
pub const DEFAULT_TRUST: &str = "default";

/// What verification a `verify` scope requires. Holds at least one verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub(super) verifiers: Vec<VerifierKind>,
    pub(super) combine: Combine,
    pub(super) trust: Vec<String>,
    pub(super) min_signatures: usize,
    pub(super) platforms: Platforms,
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

    /// Names of the trust sets a signature may verify under (any one is
    /// enough); never empty, each checked at load time to exist.
    pub fn trust(&self) -> &[String] {
        &self.trust
    }

    /// Distinct signers each signature verifier must find (at least 1).
    pub fn min_signatures(&self) -> usize {
        self.min_signatures
    }

    /// Which manifests of a multi-platform image are verified.
    pub fn platforms(&self) -> Platforms {
        self.platforms
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
    /// Overrides the top-level `failurePolicy` for errors in this scope.
    pub failure_policy: Option<pullgate_wire::FailurePolicy>,
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
