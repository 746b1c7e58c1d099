//! SPDX 2.x JSON documents (as syft, trivy and others write them).
//!
//! Kept: packages (name, `versionInfo`, the `purl` external reference,
//! `licenseConcluded` or else `licenseDeclared`), the creator tool, the
//! creation time, and what the document DESCRIBES. A described package
//! that is the image (`primaryPackagePurpose` CONTAINER, a `SHA256`
//! checksum, a `pkg:oci/…@sha256:…` purl, or a digest `versionInfo`) gives
//! the image binding and is not counted as a package. Files, snippets and
//! every other field are skipped without being stored.

use serde::Deserialize;

use crate::json::{capped, sha256_digest, sha256_hex};
use crate::model::{ImageClaims, License, Package, Sbom, SbomFormat};
use crate::purl::Purl;
use crate::{MAX_PACKAGES, MAX_SMALL_LIST, ParseError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    spdx_version: String,
    #[serde(rename = "SPDXID")]
    spdx_id: Option<String>,
    creation_info: Option<CreationInfo>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_PACKAGES>")]
    packages: Vec<Pkg>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    document_describes: Vec<String>,
    #[serde(default, deserialize_with = "capped::<_, _, { 4 * MAX_PACKAGES }>")]
    relationships: Vec<Relationship>,
}

#[derive(Deserialize)]
struct CreationInfo {
    created: Option<String>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    creators: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pkg {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    version_info: Option<String>,
    license_concluded: Option<String>,
    license_declared: Option<String>,
    primary_package_purpose: Option<String>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    checksums: Vec<Checksum>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    external_refs: Vec<ExternalRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: String,
    checksum_value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_type: String,
    reference_locator: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    related_spdx_element: String,
    relationship_type: String,
}

impl Pkg {
    fn purl(&self) -> Option<Purl> {
        let r = self.external_refs.iter().find(|r| r.reference_type == "purl")?;
        Purl::parse(&r.reference_locator).ok()
    }

    /// The image digests this package claims, if it is an image.
    fn image_digests(&self, purl: Option<&Purl>) -> Vec<String> {
        let mut out: Vec<String> = self
            .checksums
            .iter()
            .filter(|c| c.algorithm.eq_ignore_ascii_case("SHA256"))
            .filter_map(|c| sha256_hex(&c.checksum_value))
            .collect();
        out.extend(purl.filter(|p| p.ty == "oci").and_then(|p| p.version.as_deref()).and_then(sha256_digest));
        out.extend(self.version_info.as_deref().and_then(sha256_digest));
        out
    }
}

/// Parses an SPDX 2.x JSON document.
pub fn parse(bytes: &[u8]) -> Result<Sbom, ParseError> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| ParseError::Json { format: "SPDX", source: e })?;
    if !doc.spdx_version.starts_with("SPDX-2.") {
        return Err(ParseError::Unsupported { format: "SPDX", version: doc.spdx_version });
    }
    let doc_id = doc.spdx_id.as_deref().unwrap_or("SPDXRef-DOCUMENT");
    let mut roots: Vec<&str> = doc.document_describes.iter().map(String::as_str).collect();
    for r in &doc.relationships {
        match r.relationship_type.as_str() {
            "DESCRIBES" if r.spdx_element_id == doc_id => roots.push(&r.related_spdx_element),
            "DESCRIBED_BY" if r.related_spdx_element == doc_id => roots.push(&r.spdx_element_id),
            _ => {}
        }
    }
    let mut describes = ImageClaims::default();
    let mut packages = Vec::with_capacity(doc.packages.len());
    for p in &doc.packages {
        let purl = p.purl();
        let is_root = roots.contains(&p.spdx_id.as_str());
        let digests = if is_root { p.image_digests(purl.as_ref()) } else { Vec::new() };
        let is_image = is_root && (!digests.is_empty() || p.primary_package_purpose.as_deref() == Some("CONTAINER"));
        if is_image {
            digests.into_iter().for_each(|d| describes.add(Some(d)));
            continue;
        }
        let license = match p.license_concluded.as_deref().map(str::trim) {
            None | Some("NOASSERTION") | Some("") => License::from_spdx_field(p.license_declared.as_deref()),
            concluded => License::from_spdx_field(concluded),
        };
        packages.push(Package { name: p.name.clone(), version: p.version_info.clone(), purl, license });
    }
    let info = doc.creation_info;
    let tool =
        info.as_ref().and_then(|i| i.creators.iter().find_map(|c| c.strip_prefix("Tool:"))).map(|t| t.trim().into());
    Ok(Sbom {
        format: SbomFormat::Spdx(doc.spdx_version),
        tool,
        created: info.and_then(|i| i.created),
        describes,
        packages,
    })
}
