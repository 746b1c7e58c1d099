//! OCI content types the registry client returns: descriptors, image
//! manifests (including artifact manifests with `subject`) and indexes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest media type the client asks for.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type (referrers answers and artifact manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (also used for signature and attestation artifacts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when present.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Artifact type, when present.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// Config descriptor.
    pub config: Descriptor,
    /// Layers (for signatures: the envelope blobs).
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this artifact refers to.
    #[serde(default)]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index (also the referrers API answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when present.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A manifest fetched from a registry, with its bytes verified against its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Exact bytes as served.
    pub bytes: Vec<u8>,
    /// Media type from the `Content-Type` header (or the document).
    pub media_type: String,
    /// Digest of `bytes`.
    pub digest: String,
}

/// How the referrers list was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferrersSource {
    /// The OCI 1.1 referrers API.
    Api,
    /// The referrers tag schema (`sha256-<hex>` index) fallback.
    TagSchema,
}

/// The artifacts referring to a subject.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// Matching referrer descriptors.
    pub descriptors: Vec<Descriptor>,
    /// API or tag-schema fallback.
    pub source: ReferrersSource,
    /// What was left out of the list and why (unusable entries, too many
    /// entries, a page too large or not an index), for the report.
    pub notes: Vec<String>,
    /// The hosts.toml endpoint (a mirror, `scheme://host/path`) that served
    /// this list; `None` for the registry itself or a list from the cluster
    /// tier. Carried with the list, so concurrent lookups cannot mix it up.
    pub served_by: Option<String>,
}
