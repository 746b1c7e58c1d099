//! What crosses the verifier ↔ agent Unix socket, and the verifier's own config file.
//!
//! Framing: the client writes one JSON object followed by `\n`, the agent
//! answers with one JSON object followed by `\n` and closes the connection.
//! Both sides bound what they read ([`MAX_REQUEST_BYTES`], [`MAX_RESPONSE_BYTES`]).
//! This crate depends only on serde, serde_json and pullgate-reference (for
//! the bootstrap allowlist) so the verifier stays small.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod bounded;
mod verifier_config;
pub use bounded::{MAX_COUNTERS, MAX_REASON_BYTES, MAX_SHORT_BYTES, TRUNCATED, one_line, truncate};
pub use verifier_config::{
    CONFIG_PATH_ENV, ConfigError, DEFAULT_CONFIG_PATH, DEFAULT_DEADLINE_MS, DEFAULT_SOCKET_PATH, MAX_DEADLINE_MS,
    MIN_DEADLINE_MS, VerifierConfig,
};

/// Version of the request/response protocol. The agent rejects other versions.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest request line (JSON plus newline) the agent accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response line the verifier reads. The agent never sends more:
/// every answer goes through [`Response::encode_line`].
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The only stdin media type containerd uses for verifiers.
pub const OCI_DESCRIPTOR_MEDIA_TYPE: &str = "application/vnd.oci.descriptor.v1+json";

/// Allow or deny, the only two answers containerd understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Exit 0: containerd continues the pull.
    Allow,
    /// Exit 1: containerd blocks the pull.
    Deny,
}

impl Verdict {
    /// `"allowed"` or `"denied"`, as printed in the verifier's line.
    pub fn past_tense(self) -> &'static str {
        match self {
            Verdict::Allow => "allowed",
            Verdict::Deny => "denied",
        }
    }
}

/// What happens when a decision cannot be reached (agent down, registry
/// unreachable, verifier error, deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Allow the pull and say so.
    Open,
    /// Deny the pull (the default).
    #[default]
    Closed,
}

impl FailurePolicy {
    /// The verdict this policy gives when no decision could be reached.
    pub fn verdict(self) -> Verdict {
        match self {
            FailurePolicy::Open => Verdict::Allow,
            FailurePolicy::Closed => Verdict::Deny,
        }
    }

    /// `"open"` or `"closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Open => "open",
            FailurePolicy::Closed => "closed",
        }
    }
}

/// An OCI content descriptor as containerd writes it on the verifier's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the top-level target (manifest or index).
    pub media_type: String,
    /// Digest of the target.
    pub digest: String,
    /// Size in bytes of the target.
    pub size: u64,
}

/// One request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Decide on a pull.
    Verify(VerifyRequest),
    /// Report the agent's state (generation, mode, counters).
    Status {
        /// Protocol version of the client.
        version: u32,
    },
}

/// A pull to decide on, as containerd described it to the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    /// Protocol version of the client ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The reference exactly as containerd passed it in `-name`.
    pub reference: String,
    /// The resolved top-level digest containerd passed in `-digest`.
    pub digest: String,
    /// The descriptor containerd wrote on stdin.
    pub descriptor: Descriptor,
    /// Milliseconds the agent has to answer before the verifier gives up.
    pub deadline_ms: u64,
}

/// One response from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Response {
    /// The decision on a [`Request::Verify`].
    Decision(DecisionResponse),
    /// The answer to [`Request::Status`].
    Status(StatusResponse),
    /// The agent refused or could not parse the request; the verifier applies
    /// its failure policy.
    Error {
        /// What went wrong, for the verifier's output line.
        message: String,
    },
}

/// The agent's decision on one pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionResponse {
    /// Allow or deny.
    pub verdict: Verdict,
    /// One short line saying why.
    pub reason: String,
    /// Id of the full report (`pullgate-agent explain ID`).
    pub report_id: String,
}

/// The agent's state, for `pullgate-agent status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// Agent version.
    pub agent_version: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Id of the config generation in force, if one is loaded.
    pub generation: Option<String>,
    /// `enforce` or `audit`, if a config is loaded.
    pub mode: Option<String>,
    /// Why no config is loaded, or why the latest one was rejected.
    pub config_error: Option<String>,
    /// Decision counters by kind.
    pub counters: BTreeMap<String, u64>,
    /// Whether every pull on the node reaches pullgate, from the agent's last
    /// coverage check: `covered`, or `bypassed: CHECK: problem` (absent when not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_shape_is_stable() {
        let r = Request::Verify(VerifyRequest {
            version: 1,
            reference: "docker.io/library/alpine:3".into(),
            digest: "sha256:ab".into(),
            descriptor: Descriptor { media_type: "m".into(), digest: "sha256:ab".into(), size: 3 },
            deadline_ms: 100,
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"verify","version":1,"reference":"docker.io/library/alpine:3","digest":"sha256:ab","descriptor":{"mediaType":"m","digest":"sha256:ab","size":3},"deadlineMs":100}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }

    #[test]
    fn response_json_shape_is_stable() {
        let r =
            Response::Decision(DecisionResponse { verdict: Verdict::Deny, reason: "x".into(), report_id: "id".into() });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"type":"decision","verdict":"deny","reason":"x","reportId":"id"}"#);
        let e: Response = serde_json::from_str(r#"{"type":"error","message":"m"}"#).unwrap();
        assert_eq!(e, Response::Error { message: "m".into() });
    }
}
