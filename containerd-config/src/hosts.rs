//! `hosts.toml` files (containerd's `config_path` tree) for what legacy CRI
//! `registry.mirrors` and `registry.configs.<host>.tls` said, so `--fix` can move
//! a node to the registry-host configuration the transfer service reads.

use std::collections::BTreeMap;

/// TLS settings of one legacy `registry.configs.<host>.tls` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `ca_file`.
    pub ca_file: Option<String>,
    /// `cert_file`.
    pub cert_file: Option<String>,
    /// `key_file`.
    pub key_file: Option<String>,
    /// `insecure_skip_verify`.
    pub insecure_skip_verify: bool,
}

impl Tls {
    fn lines(&self, indent: &str) -> String {
        let mut s = String::new();
        if let Some(ca) = &self.ca_file {
            s.push_str(&format!("{indent}ca = {}\n", quote(ca)));
        }
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            s.push_str(&format!("{indent}client = [[{}, {}]]\n", quote(c), quote(k)));
        } else if let Some(c) = &self.cert_file {
            s.push_str(&format!("{indent}client = {}\n", quote(c)));
        }
        if self.insecure_skip_verify {
            s.push_str(&format!("{indent}skip_verify = true\n"));
        }
        s
    }
}

/// A TOML basic string (usable as a key too): quotes, backslashes and control characters escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The upstream server for a registry host as CRI named it.
pub fn upstream(host: &str) -> String {
    if host == "docker.io" { "https://registry-1.docker.io".into() } else { format!("https://{host}") }
}

/// The host part of an endpoint URL (`https://m.example:5000/x` → `m.example:5000`).
pub fn endpoint_host(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// Builds one `hosts.toml` per registry host from legacy mirrors (host → endpoints,
/// tried in order before the upstream) and TLS configs (endpoint host → settings).
pub fn hosts_files(mirrors: &BTreeMap<String, Vec<String>>, tls: &BTreeMap<String, Tls>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (host, endpoints) in mirrors {
        let server = upstream(host);
        let mut text =
            format!("# Written by pullgate-install from CRI registry.mirrors.{host:?}.\nserver = {}\n", quote(&server));
        if let Some(t) = tls.get(endpoint_host(&server)).or_else(|| tls.get(host.as_str())) {
            text.push_str(&t.lines(""));
        }
        let mut seen: Vec<&str> = Vec::new();
        for ep in endpoints.iter().filter(|e| e.trim_end_matches('/') != server) {
            if seen.contains(&ep.as_str()) {
                continue;
            }
            seen.push(ep);
            text.push_str(&format!("\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n", quote(ep)));
            // CRI used an endpoint's path as given; hosts.toml appends /v2 unless told not to.
            let path = ep.split_once("://").map(|(_, r)| r).unwrap_or(ep).split_once('/').map(|(_, p)| p).unwrap_or("");
            if !path.trim_matches('/').is_empty() {
                text.push_str("  override_path = true\n");
            }
            if let Some(t) = tls.get(endpoint_host(ep)) {
                text.push_str(&t.lines("  "));
            }
        }
        out.insert(host.clone(), text);
    }
    for (host, t) in tls {
        // A host that is also a mirror endpoint still gets its own file: pulls that name
        // it directly need its TLS settings too.
        if out.contains_key(host) {
            continue;
        }
        let text = format!(
            "# Written by pullgate-install from CRI registry.configs.{host:?}.tls.\nserver = {}\n{}",
            quote(&upstream(host)),
            t.lines("")
        );
        out.insert(host.clone(), text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_and_tls_become_hosts_files() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec!["https://mirror.example.com".to_string(), "https://registry-1.docker.io".into()],
        );
        let mut tls = BTreeMap::new();
        tls.insert("mirror.example.com".to_string(), Tls { ca_file: Some("/etc/ca.pem".into()), ..Tls::default() });
        tls.insert("reg.internal:5000".to_string(), Tls { insecure_skip_verify: true, ..Tls::default() });
        let files = hosts_files(&mirrors, &tls);
        let d: toml::Table = files["docker.io"].parse().unwrap();
        assert_eq!(d["server"].as_str(), Some("https://registry-1.docker.io"));
        let hosts = d["host"].as_table().unwrap();
        assert_eq!(hosts.len(), 1, "the upstream is the server, not a mirror host");
        assert_eq!(hosts["https://mirror.example.com"]["ca"].as_str(), Some("/etc/ca.pem"));
        let r: toml::Table = files["reg.internal:5000"].parse().unwrap();
        assert_eq!(r["skip_verify"].as_bool(), Some(true));
        assert_eq!(r["server"].as_str(), Some("https://reg.internal:5000"));
    }

    #[test]
    fn paths_duplicates_and_tls_hosts() {
        let mut mirrors = BTreeMap::new();
        mirrors
            .insert("r.io".to_string(), vec!["https://harbor/proxy".to_string(), "https://harbor/proxy".to_string()]);
        let mut tls = BTreeMap::new();
        tls.insert("harbor".to_string(), Tls { insecure_skip_verify: true, ..Tls::default() });
        let files = hosts_files(&mirrors, &tls);
        let d: toml::Table = files["r.io"].parse().expect("no duplicate tables");
        assert_eq!(d["host"]["https://harbor/proxy"]["override_path"].as_bool(), Some(true));
        assert!(files.contains_key("harbor"), "the mirror host keeps its own TLS file");
    }

    #[test]
    fn hostile_names_stay_quoted() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert("r.io".to_string(), vec!["https://m\"\n[evil]".to_string()]);
        let files = hosts_files(&mirrors, &BTreeMap::new());
        let d: toml::Table = files["r.io"].parse().unwrap();
        assert!(d.get("evil").is_none());
    }
}
