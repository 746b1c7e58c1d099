//! `[registries]` and `[auth]`: how to reach each registry host and where
//! the node's registry credentials are.

use super::files::safe_relative;
use super::raw;
use super::{Issue, issue};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to reach one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Plain HTTP. Only for registries explicitly listed as insecure.
    pub insecure: bool,
    /// Extra CA certificates (PEM) for this registry's TLS, read from the config directory.
    pub ca_pem: Option<Vec<u8>>,
    /// Most concurrent requests to it.
    pub max_concurrency: Option<usize>,
}

/// Validates `[registries]`; CA paths to read later are pushed to `ca_refs` as `(host, path)`.
pub(super) fn parse_registries(
    raw_registries: BTreeMap<String, raw::Registry>,
    ca_refs: &mut Vec<(String, String)>,
    issues: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) -> BTreeMap<String, RegistrySettings> {
    let mut registries = BTreeMap::new();
    for (host, r) in raw_registries {
        let at = |f: &str| format!("registries.\"{host}\".{f}");
        let probe = format!("{host}/x");
        match pullgate_reference::Reference::parse(&probe) {
            Ok(parsed) if parsed.host() == host => {}
            Ok(parsed) => issues.push(issue(
                &format!("registries.\"{host}\""),
                format!(
                    "not a registry host[:port] in canonical form (lower case, no :443, Docker Hub as docker.io); write {:?}",
                    parsed.host()
                ),
            )),
            Err(e) => issues.push(issue(&format!("registries.\"{host}\""), format!("not a registry host[:port]: {e}"))),
        }
        if let Some(n) = r.max_concurrency
            && !(1..=256).contains(&n)
        {
            issues.push(issue(&at("maxConcurrency"), format!("{n} is outside 1..=256")));
        }
        if let Some(ca) = &r.ca {
            match safe_relative(ca) {
                Ok(()) => ca_refs.push((host.clone(), ca.clone())),
                Err(why) => issues.push(issue(&at("ca"), why)),
            }
        }
        if r.insecure == Some(true) {
            warnings.push(issue(
                &at("insecure"),
                "plain HTTP: signatures still verify, but requests and any credentials configured for it cross the network in clear text".into(),
            ));
        }
        registries.insert(
            host,
            RegistrySettings {
                insecure: r.insecure.unwrap_or(false),
                ca_pem: None,
                max_concurrency: r.max_concurrency,
            },
        );
    }
    registries
}

/// Validates `auth.dockerConfig`: an absolute path on the node.
pub(super) fn parse_docker_config(auth: Option<raw::Auth>, issues: &mut Vec<Issue>) -> Option<PathBuf> {
    match auth.and_then(|a| a.docker_config) {
        Some(p) if Path::new(&p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => {
            issues.push(issue("auth.dockerConfig", format!("{p:?} must be an absolute path on the node")));
            None
        }
        None => None,
    }
}
