//! `[containerd]`, `[credentialProviders]` and `[registryRate]`: where the
//! node's registry endpoints (containerd's `hosts.toml` tree) and kubelet's
//! credential-provider plugins are, and how fast the agent may ask a
//! registry. The files named here live on the node, not in the config
//! directory: they are read when the registry client is built, and
//! [`check_node_files`] reports their problems for check-config and doctor.

use super::{Issue, issue};
use pullgate_registry::credprovider::{self, ConfigFile, Providers};
use pullgate_registry::hosts::HostsDirs;
use pullgate_registry::polite::Rate;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[containerd]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawContainerd {
    /// containerd's `config_path`: one directory or several joined by `:`.
    pub hosts_dir: Option<String>,
    /// Where the node's `/` is mounted (absolute paths in hosts.toml are node paths).
    pub host_root: Option<String>,
}

/// `[credentialProviders]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCredentialProviders {
    /// kubelet's `--image-credential-provider-config` file (YAML or JSON).
    pub config: String,
    /// kubelet's `--image-credential-provider-bin-dir`.
    pub bin_dir: String,
}

/// `[registryRate]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRate {
    /// Sustained requests per second to one registry endpoint (0: unlimited).
    pub per_second: Option<f64>,
    /// Requests allowed at once after a quiet period.
    pub burst: Option<u32>,
}

/// Where the agent finds the node's registry endpoints and plugins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoints {
    /// containerd's `config_path` roots, in order (empty: no hosts.toml).
    pub hosts_dirs: Vec<PathBuf>,
    /// The node's `/` as the agent sees it, if not `/`.
    pub host_root: Option<PathBuf>,
    /// kubelet's credential-provider config file and plugin directory.
    pub credential_providers: Option<(PathBuf, PathBuf)>,
    /// Token bucket per registry endpoint.
    pub rate: Rate,
}

/// Validates the three tables.
pub(super) fn parse(
    containerd: Option<RawContainerd>,
    providers: Option<RawCredentialProviders>,
    rate: Option<RawRate>,
    issues: &mut Vec<Issue>,
) -> Endpoints {
    let mut out = Endpoints::default();
    let absolute = |field: &str, p: &str, issues: &mut Vec<Issue>| -> Option<PathBuf> {
        if Path::new(p).is_absolute() && !p.split('/').any(|c| c == "..") {
            Some(PathBuf::from(p))
        } else {
            issues.push(issue(field, format!("{p:?} must be an absolute path on the node without `..`")));
            None
        }
    };
    if let Some(c) = containerd {
        for dir in c.hosts_dir.as_deref().unwrap_or_default().split(':').filter(|d| !d.is_empty()) {
            if let Some(p) = absolute("containerd.hostsDir", dir, issues) {
                out.hosts_dirs.push(p);
            }
        }
        out.host_root = c.host_root.and_then(|r| absolute("containerd.hostRoot", &r, issues));
    }
    if let Some(p) = providers {
        let config = absolute("credentialProviders.config", &p.config, issues);
        let bin = absolute("credentialProviders.binDir", &p.bin_dir, issues);
        out.credential_providers = config.zip(bin);
    }
    if let Some(r) = rate {
        let per_second = r.per_second.unwrap_or(out.rate.per_second);
        if !(0.0..=10_000.0).contains(&per_second) {
            issues.push(issue("registryRate.perSecond", format!("{per_second} is outside 0..=10000")));
        }
        let burst = r.burst.unwrap_or(out.rate.burst);
        if !(1..=10_000).contains(&burst) {
            issues.push(issue("registryRate.burst", format!("{burst} is outside 1..=10000")));
        }
        out.rate = Rate { per_second, burst };
    }
    out
}

impl Endpoints {
    /// The hosts.toml reader, when a hosts directory is configured.
    pub fn hosts(&self) -> Option<HostsDirs> {
        (!self.hosts_dirs.is_empty()).then(|| HostsDirs::new(self.hosts_dirs.clone(), self.host_root.clone()))
    }

    /// The checked credential providers, when configured and usable.
    pub fn providers(&self) -> Result<Option<Providers>, Vec<Issue>> {
        let Some((config, bin_dir)) = &self.credential_providers else { return Ok(None) };
        let file = config.display().to_string();
        let node_issue = |field: String, reason: String| Issue { file: file.clone(), field, reason };
        let bytes = match pullgate_registry::hosts::read_file(config, credprovider::MAX_CONFIG_BYTES) {
            Ok(b) => b,
            Err(reason) => return Err(vec![node_issue(String::new(), reason)]),
        };
        let parsed = parse_provider_config(&bytes).map_err(|r| vec![node_issue(String::new(), r)])?;
        Providers::from_config(parsed, bin_dir)
            .map(Some)
            .map_err(|ps| ps.into_iter().map(|p| node_issue(p.field, p.reason)).collect())
    }
}

/// kubelet's config in JSON or YAML (kubelet reads both).
fn parse_provider_config(bytes: &[u8]) -> Result<ConfigFile, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if text.trim_start().starts_with('{') {
        return credprovider::parse_json_config(bytes).map_err(|p| p.reason);
    }
    serde_saphyr::from_str(text).map_err(|e| format!("not a CredentialProviderConfig: {}", one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// Problems in the node files the config names (hosts.toml tree,
/// credential-provider config and plugins), for check-config and doctor.
pub fn check_node_files(e: &Endpoints) -> Vec<Issue> {
    let mut out = Vec::new();
    if let Some(dirs) = e.hosts() {
        for p in dirs.check() {
            out.push(Issue { file: p.file.display().to_string(), field: p.field, reason: p.reason });
        }
    }
    if let Err(issues) = e.providers() {
        out.extend(issues);
    }
    out
}

/// hosts.toml problems under the `config_path` of the node's containerd
/// config (CRI images plugin and transfer service), for doctor.
pub fn node_hosts_problems(host_root: &Path, containerd_config: &Path) -> Vec<Issue> {
    let root = pullgate_containerd::HostRoot::new(host_root);
    let Ok(loaded) = pullgate_containerd::load::load(&root, containerd_config) else { return Vec::new() };
    let lookup = |keys: &[&str]| -> Option<String> {
        let mut t = &loaded.merged;
        for k in &keys[..keys.len() - 1] {
            t = t.get(*k)?.as_table()?;
        }
        t.get(keys[keys.len() - 1])?.as_str().map(str::to_string)
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for keys in [
        &["plugins", "io.containerd.cri.v1.images", "registry", "config_path"][..],
        &["plugins", "io.containerd.transfer.v1.local", "config_path"][..],
    ] {
        for d in lookup(keys).unwrap_or_default().split(':').filter(|d| !d.is_empty()) {
            let p = root.resolve(Path::new(d));
            if !dirs.contains(&p) {
                dirs.push(p);
            }
        }
    }
    let node_root = (host_root != Path::new("/")).then(|| host_root.to_path_buf());
    HostsDirs::new(dirs, node_root)
        .check()
        .into_iter()
        .map(|p| Issue { file: p.file.display().to_string(), field: p.field, reason: p.reason })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let mut issues = Vec::new();
        let e = parse(
            Some(RawContainerd { hosts_dir: Some("/a:relative:/b/../c".into()), host_root: Some("/host".into()) }),
            Some(RawCredentialProviders { config: "/etc/k/c.yaml".into(), bin_dir: "bin".into() }),
            Some(RawRate { per_second: Some(-1.0), burst: Some(0) }),
            &mut issues,
        );
        assert_eq!(e.hosts_dirs, [PathBuf::from("/a")]);
        assert_eq!(e.credential_providers, None);
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "containerd.hostsDir",
                "containerd.hostsDir",
                "credentialProviders.binDir",
                "registryRate.perSecond",
                "registryRate.burst"
            ]
        );
    }

    #[test]
    fn yaml_and_json_provider_configs() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("ecr"), "").unwrap();
        let yaml = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: ecr\n    matchImages: [\"*.dkr.ecr.*.amazonaws.com\"]\n    defaultCacheDuration: 12h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n    args: [get-credentials]\n    env:\n      - name: AWS_PROFILE\n        value: node\n";
        std::fs::write(t.path().join("c.yaml"), yaml).unwrap();
        std::fs::write(t.path().join("bad.yaml"), "providers: [{name: 3").unwrap();
        let e = |f: &str| Endpoints {
            credential_providers: Some((t.path().join(f), t.path().to_path_buf())),
            ..Endpoints::default()
        };
        assert_eq!(e("c.yaml").providers().unwrap().map(|p| p.len()), Some(1));
        let bad = check_node_files(&e("bad.yaml"));
        assert_eq!(bad.len(), 1, "{bad:?}");
        let missing = check_node_files(&e("none.yaml"));
        assert!(missing[0].reason.contains("does not exist"), "{missing:?}");
    }
}
