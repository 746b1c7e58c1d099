//! Serde mirror of `pullgate.toml`, before validation. Nothing here is
//! trusted: [`super::parse_main`] validates every field into typed values.
#![allow(missing_docs)]
use super::types::{DefaultAction, Mode, Platforms, VerifierKind};
use pullgate_wire::FailurePolicy;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    pub mode: Option<Mode>,
    pub sbom: Option<super::attachments::RawSbom>,
    pub vulnerability: Option<super::attachments::RawVulnerability>,
    pub failure_policy: Option<FailurePolicy>,
    pub policy: Option<String>,
    pub policy_mode: Option<crate::policy::PolicyMode>,
    pub default_action: Option<DefaultAction>,
    pub allowed_uids: Option<Vec<u32>>,
    #[serde(default)]
    pub allowlist: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, Registry>,
    pub auth: Option<Auth>,
    pub containerd: Option<super::endpoints::RawContainerd>,
    pub credential_providers: Option<super::endpoints::RawCredentialProviders>,
    pub registry_rate: Option<super::endpoints::RawRate>,
    pub notation: Option<Notation>,
    pub cache: Option<Cache>,
    pub cluster: Option<Cluster>,
    pub sigstore: Option<Sigstore>,
    #[serde(default)]
    pub trust: std::collections::BTreeMap<String, TrustSet>,
    pub break_glass: Option<BreakGlass>,
    pub node_platform: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustSet {
    pub notation: Option<Notation>,
    pub sigstore: Option<Sigstore>,
    pub policy: Option<String>,
    pub policy_mode: Option<crate::policy::PolicyMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakGlass {
    pub until: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sigstore {
    #[serde(default)]
    pub keys: Vec<String>,
    pub trusted_root: Option<String>,
    #[serde(default)]
    pub fulcio_roots: Vec<String>,
    #[serde(default)]
    pub rekor_keys: Vec<String>,
    pub require_tlog: Option<bool>,
    #[serde(default)]
    pub identities: Vec<Identity>,
    pub provenance: Option<Provenance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    pub issuer: Option<String>,
    pub issuer_regex: Option<String>,
    pub subject: Option<String>,
    pub subject_regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provenance {
    pub builder_id: Option<String>,
    pub source_repository: Option<String>,
    pub build_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    pub url: String,
    pub mode: Option<String>,
    pub master_name: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub ca: Option<String>,
    pub key_prefix: Option<String>,
    pub content_ttl: Option<String>,
    pub list_ttl: Option<String>,
    pub lease_ttl: Option<String>,
    pub wait_bound: Option<String>,
    pub timeout: Option<String>,
    pub breaker_cooldown: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cache {
    pub allow_ttl: Option<String>,
    pub deny_ttl: Option<String>,
    pub error_ttl: Option<String>,
    pub max_entries: Option<usize>,
    pub content_max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registry {
    pub insecure: Option<bool>,
    pub ca: Option<String>,
    pub max_concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    pub docker_config: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notation {
    pub trust_policy: String,
    pub trust_store: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scope {
    pub name: String,
    pub images: Vec<String>,
    pub action: ActionKind,
    pub reason: Option<String>,
    pub policy: Option<String>,
    pub policy_mode: Option<crate::policy::PolicyMode>,
    pub verify: Option<Verify>,
    pub failure_policy: Option<FailurePolicy>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Allow,
    Deny,
    Verify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    pub require: Vec<VerifierKind>,
    #[serde(rename = "match")]
    pub combine: Option<Match>,
    pub trust: Option<Vec<String>>,
    pub min_signatures: Option<i64>,
    pub platforms: Option<Platforms>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Match {
    Word(MatchWord),
    AtLeast(AtLeast),
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchWord {
    All,
    Any,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AtLeast {
    pub at_least: i64,
}
