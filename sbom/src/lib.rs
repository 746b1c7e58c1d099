//! What is inside an image: SBOM and vulnerability-report parsing and rules.
//!
//! This crate owns the content side of pullgate's attached-artifact
//! verifiers (`sbom`, `vulnerability`). It does no I/O: the agent finds and
//! fetches the attachments (bounded by its own size cap) and hands the bytes
//! here.
//!
//! * [`parse_sbom`] reads SPDX 2.x JSON ([`spdx`]) and CycloneDX 1.4–1.6 JSON
//!   ([`cyclonedx`]) into one model ([`Sbom`]: packages with name, version,
//!   purl and licence; the image digests the document says it describes).
//! * [`parse_report`] reads SARIF 2.1.0 from Trivy and Grype ([`sarif`]).
//! * [`license`] parses and evaluates SPDX licence expressions; [`version`]
//!   orders semver, Debian and RPM versions and evaluates ranges; [`purl`]
//!   parses package URLs.
//! * [`rules`] evaluates typed [`SbomRules`] / [`VulnRules`] into a
//!   [`Decision`] listing the findings that decided, capped.
//!
//! Hostile input is bounded: documents larger than [`MAX_DOCUMENT_BYTES`] are
//! refused before parsing; every array kept is capped while it is read
//! ([`MAX_PACKAGES`], [`MAX_RESULTS`], [`MAX_SMALL_LIST`]); nesting is bounded
//! by serde_json's recursion limit; a known field given twice is an error
//! (so a second `packages` array cannot hide behind the first); unknown
//! fields are skipped without being stored.

pub mod cyclonedx;
mod json;
pub mod license;
mod model;
pub mod purl;
pub mod rules;
pub mod sarif;
pub mod spdx;
pub mod version;

pub use model::{Binding, ImageClaims, ImageIds, License, Package, Sbom, SbomFormat};
pub use rules::{Decision, Finding, FindingRule, SbomRules, VulnRules};
pub use sarif::{Severity, VulnReport, Vulnerability};

/// Largest document accepted by the parsers, whatever the caller's own cap.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// Most packages (SPDX packages, CycloneDX components) in one SBOM.
pub const MAX_PACKAGES: usize = 50_000;
/// Most results (and rules) in one SARIF log.
pub const MAX_RESULTS: usize = 50_000;
/// Most entries in the small lists (checksums, external refs, licences, runs).
pub const MAX_SMALL_LIST: usize = 1024;

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Larger than the cap.
    #[error("document is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not JSON of the expected shape (includes duplicate fields, too deep, too many elements).
    #[error("{format} document is malformed: {source}")]
    Json {
        /// Which format was being read.
        format: &'static str,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A format version this crate does not read.
    #[error("{format} version {version:?} is not supported")]
    Unsupported {
        /// Which format.
        format: &'static str,
        /// The version the document states.
        version: String,
    },
    /// More elements than the cap.
    #[error("document has more than {max} {what}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The cap.
        max: usize,
    },
    /// Well-formed JSON that breaks a rule of the format.
    #[error("{format} document is invalid: {reason}")]
    Invalid {
        /// Which format.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Neither SPDX nor CycloneDX.
    #[error("document is neither SPDX JSON nor CycloneDX JSON")]
    UnknownFormat,
}

/// The SBOM formats, by the artifact type an attachment declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomKind {
    /// `application/spdx+json`.
    Spdx,
    /// `application/vnd.cyclonedx+json`.
    CycloneDx,
}

impl SbomKind {
    /// The kind for an artifact or media type; `None` if it is neither (parameters after `;` ignored).
    pub fn from_media_type(mt: &str) -> Option<SbomKind> {
        match mt.split(';').next().unwrap_or("").trim() {
            "application/spdx+json" => Some(SbomKind::Spdx),
            "application/vnd.cyclonedx+json" => Some(SbomKind::CycloneDx),
            _ => None,
        }
    }
}

fn check_size(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    let max = max.min(MAX_DOCUMENT_BYTES);
    if bytes.len() > max {
        return Err(ParseError::TooLarge { len: bytes.len(), max });
    }
    Ok(())
}

/// Parses an SBOM of at most `max` bytes. With `kind` the format is fixed;
/// without, it is recognised from the document's own first fields.
pub fn parse_sbom(bytes: &[u8], kind: Option<SbomKind>, max: usize) -> Result<Sbom, ParseError> {
    check_size(bytes, max)?;
    let kind = match kind {
        Some(k) => k,
        None => sniff(bytes).ok_or(ParseError::UnknownFormat)?,
    };
    match kind {
        SbomKind::Spdx => spdx::parse(bytes),
        SbomKind::CycloneDx => cyclonedx::parse(bytes),
    }
}

/// Parses a SARIF 2.1.0 report of at most `max` bytes.
pub fn parse_report(bytes: &[u8], max: usize) -> Result<VulnReport, ParseError> {
    check_size(bytes, max)?;
    sarif::parse(bytes)
}

fn sniff(bytes: &[u8]) -> Option<SbomKind> {
    let head = &bytes[..bytes.len().min(4096)];
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if has(b"\"spdxVersion\"") {
        Some(SbomKind::Spdx)
    } else if has(b"\"bomFormat\"") {
        Some(SbomKind::CycloneDx)
    } else {
        None
    }
}
