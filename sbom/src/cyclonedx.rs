//! CycloneDX 1.4–1.6 JSON BOMs.
//!
//! Kept: components (nested ones flattened, up to [`MAX_PACKAGES`] in all;
//! `operating-system` components are not packages): name, version, purl and
//! licences; the tool; the timestamp; and
//! `metadata.component`, which binds the BOM to an image when it is a
//! container whose version is a digest or whose purl is `pkg:oci/…@sha256:…`.
//! Licences: a single `expression` is used as written; several entries
//! (`{license: {id}}`, `{license: {name}}`) all apply, so they are joined
//! with AND; a `name` (a licence outside the SPDX list, by CycloneDX's
//! definition) becomes `LicenseRef-<name>` (the form syft's SPDX output uses
//! for the same package).

use serde::Deserialize;

use crate::json::{capped, sha256_digest};
use crate::model::{ImageClaims, License, Package, Sbom, SbomFormat};
use crate::purl::Purl;
use crate::{MAX_PACKAGES, MAX_SMALL_LIST, ParseError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: String,
    spec_version: String,
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_PACKAGES>")]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Metadata {
    timestamp: Option<String>,
    tools: Option<Tools>,
    component: Option<Component>,
}

/// `tools` is an array of tools in 1.4 and `{components: [...]}` from 1.5 on.
#[derive(Deserialize)]
#[serde(untagged)]
enum Tools {
    Legacy(#[serde(deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")] Vec<Tool>),
    Current {
        #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
        components: Vec<Tool>,
    },
}

#[derive(Deserialize)]
struct Tool {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(rename = "type")]
    ty: Option<String>,
    name: String,
    version: Option<String>,
    purl: Option<String>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_SMALL_LIST>")]
    licenses: Vec<LicenseChoice>,
    #[serde(default, deserialize_with = "capped::<_, _, MAX_PACKAGES>")]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct LicenseChoice {
    license: Option<LicenseEntry>,
    expression: Option<String>,
}

#[derive(Deserialize)]
struct LicenseEntry {
    id: Option<String>,
    name: Option<String>,
}

fn license_ref(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(128)
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    format!("LicenseRef-{clean}")
}

fn licenses(choices: &[LicenseChoice]) -> License {
    let mut parts = Vec::new();
    for c in choices {
        if let Some(e) = &c.expression {
            parts.push(e.trim().to_owned());
        } else if let Some(l) = &c.license {
            match (&l.id, &l.name) {
                (Some(id), _) => parts.push(id.trim().to_owned()),
                (None, Some(name)) => parts.push(license_ref(name)),
                (None, None) => {}
            }
        }
    }
    match parts.len() {
        0 => License::Unknown,
        1 => License::from_spdx_field(Some(&parts[0])),
        _ => License::from_spdx_field(Some(&parts.iter().map(|p| format!("({p})")).collect::<Vec<_>>().join(" AND "))),
    }
}

fn flatten(list: Vec<Component>, out: &mut Vec<Package>) -> Result<(), ParseError> {
    for c in list {
        // The operating system is where packages live, not a package with a licence (syft's SPDX
        // output has no such package either).
        if c.ty.as_deref() == Some("operating-system") {
            flatten(c.components, out)?;
            continue;
        }
        if out.len() >= MAX_PACKAGES {
            return Err(ParseError::TooMany { what: "components", max: MAX_PACKAGES });
        }
        let purl = c.purl.as_deref().and_then(|p| Purl::parse(p).ok());
        out.push(Package { name: c.name, version: c.version, purl, license: licenses(&c.licenses) });
        flatten(c.components, out)?;
    }
    Ok(())
}

/// Parses a CycloneDX JSON BOM.
pub fn parse(bytes: &[u8]) -> Result<Sbom, ParseError> {
    let bom: Bom = serde_json::from_slice(bytes).map_err(|e| ParseError::Json { format: "CycloneDX", source: e })?;
    if bom.bom_format != "CycloneDX" || !matches!(bom.spec_version.as_str(), "1.4" | "1.5" | "1.6") {
        return Err(ParseError::Unsupported { format: "CycloneDX", version: bom.spec_version });
    }
    let mut describes = ImageClaims::default();
    let (mut tool, mut created) = (None, None);
    if let Some(m) = bom.metadata {
        created = m.timestamp;
        let tools = match m.tools {
            Some(Tools::Legacy(t)) | Some(Tools::Current { components: t }) => t,
            None => Vec::new(),
        };
        tool = tools.into_iter().find_map(|t| Some(format!("{}-{}", t.name?, t.version.unwrap_or_default())));
        if let Some(c) = m.component.filter(|c| c.ty.as_deref() == Some("container")) {
            describes.add(c.version.as_deref().and_then(sha256_digest));
            let purl = c.purl.as_deref().and_then(|p| Purl::parse(p).ok()).filter(|p| p.ty == "oci");
            describes.add(purl.and_then(|p| p.version).as_deref().and_then(sha256_digest));
        }
    }
    let mut packages = Vec::new();
    flatten(bom.components, &mut packages)?;
    Ok(Sbom { format: SbomFormat::CycloneDx(bom.spec_version), tool, created, describes, packages })
}
