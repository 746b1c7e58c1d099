//! The common model the SPDX and CycloneDX parsers produce, and how a
//! document binds to an image.

use crate::license::{self, Expression};
use crate::purl::Purl;

/// Which SBOM format a document was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbomFormat {
    /// SPDX 2.x JSON; carries the `spdxVersion` value (`SPDX-2.3`).
    Spdx(String),
    /// CycloneDX JSON; carries the `specVersion` value (`1.6`).
    CycloneDx(String),
}

impl std::fmt::Display for SbomFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SbomFormat::Spdx(v) => write!(f, "{v}"),
            SbomFormat::CycloneDx(v) => write!(f, "CycloneDX-{v}"),
        }
    }
}

/// What a package's licence field says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum License {
    /// No licence information (`NOASSERTION`, or the field is absent).
    Unknown,
    /// The document states there is no licence (`NONE`).
    NoneDeclared,
    /// A parsed SPDX licence expression.
    Expr(Expression),
    /// Text that is not a valid SPDX licence expression.
    Invalid {
        /// The text as written (truncated to [`license::MAX_EXPRESSION_LEN`]).
        text: String,
        /// Why it did not parse.
        error: String,
    },
}

impl License {
    /// Reads an SPDX licence field value (`NOASSERTION`, `NONE` or an expression).
    pub fn from_spdx_field(text: Option<&str>) -> License {
        match text.map(str::trim) {
            None | Some("") | Some("NOASSERTION") => License::Unknown,
            Some("NONE") => License::NoneDeclared,
            Some(t) => match license::parse(t) {
                Ok(e) => License::Expr(e),
                Err(e) => License::Invalid {
                    text: t.chars().take(license::MAX_EXPRESSION_LEN).collect(),
                    error: e.to_string(),
                },
            },
        }
    }

    /// The licence as one line for reports.
    pub fn describe(&self) -> String {
        match self {
            License::Unknown => "NOASSERTION".into(),
            License::NoneDeclared => "NONE".into(),
            License::Expr(e) => e.to_string(),
            License::Invalid { text, .. } => format!("invalid expression {text:?}"),
        }
    }
}

/// One package an SBOM lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its name.
    pub name: String,
    /// Its version as written, if any.
    pub version: Option<String>,
    /// Its package URL, if the document gives a valid one.
    pub purl: Option<Purl>,
    /// Its licence.
    pub license: License,
}

impl Package {
    /// `name@version` (or the purl) for reports.
    pub fn label(&self) -> String {
        match (&self.purl, &self.version) {
            (Some(p), _) => p.to_string(),
            (None, Some(v)) => format!("{}@{v}", self.name),
            (None, None) => self.name.clone(),
        }
    }
}

/// The image digests a document says it describes (`sha256:<hex>`, lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageClaims {
    /// Every digest claimed, deduplicated.
    pub digests: Vec<String>,
}

impl ImageClaims {
    pub(crate) fn add(&mut self, digest: Option<String>) {
        if let Some(d) = digest
            && !self.digests.contains(&d)
            && self.digests.len() < 16
        {
            self.digests.push(d);
        }
    }
}

/// The image being verified, by the digests a document may name.
#[derive(Debug, Clone, Copy)]
pub struct ImageIds<'a> {
    /// The manifest digest (what containerd pulls, and the referrers subject).
    pub manifest: &'a str,
    /// The config digest (Trivy's `imageID`), if known.
    pub config: Option<&'a str>,
}

/// How a document relates to the image being verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Every digest the document claims is this image's.
    Bound,
    /// The document names no image digest at all.
    Unclaimed,
    /// The document names a digest that is not this image's.
    Other(String),
}

impl ImageClaims {
    /// Whether the claims name this image. A document naming this image and
    /// another one is treated as describing the other one.
    pub fn binding(&self, image: ImageIds<'_>) -> Binding {
        let ours = |d: &String| d == image.manifest || Some(d.as_str()) == image.config;
        match self.digests.iter().find(|d| !ours(d)) {
            Some(other) => Binding::Other(other.clone()),
            None if self.digests.is_empty() => Binding::Unclaimed,
            None => Binding::Bound,
        }
    }
}

/// A parsed SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sbom {
    /// The format and version it was read from.
    pub format: SbomFormat,
    /// The tool that wrote it, if stated (`syft-1.18.1`).
    pub tool: Option<String>,
    /// Its creation time as written (RFC 3339), if any.
    pub created: Option<String>,
    /// The image digests it says it describes.
    pub describes: ImageClaims,
    /// The packages it lists (not counting the described image itself).
    pub packages: Vec<Package>,
}
