//! Registry credentials: the keychain, docker `config.json`, credential helpers,
//! auth challenges and the in-memory token cache.
//!
//! The [`Keychain`] maps `host` or `host/repository-prefix` to a
//! [`Credential`]; lookups pick the longest prefix that ends at a path
//! component boundary, so `ghcr.io/acme` never lends its credentials to
//! `ghcr.io/acme-evil`. Credentials and tokens live only in memory and their
//! `Debug` output is redacted.

use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest docker config.json read.
const MAX_DOCKER_CONFIG_BYTES: u64 = 1024 * 1024;
/// Largest credential-helper output read.
const MAX_HELPER_OUTPUT: usize = 64 * 1024;
/// How long a credential helper may run.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// How to authenticate to one registry or repository prefix.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credentials: anonymous pulls (and anonymous bearer tokens).
    Anonymous,
    /// Username and password (or a registry token used as password).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
    /// A docker credential helper (`docker-credential-<name>`), exec'd on use.
    Helper(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::Helper(h) => write!(f, "Helper({h})"),
        }
    }
}

/// Why credentials could not be loaded or obtained.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The docker config file could not be read.
    #[error("reading docker config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The docker config is not valid.
    #[error("docker config {origin}: {reason}")]
    Invalid {
        /// Where the config came from (file path or Secret name).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} for {server}: {reason}")]
    Helper {
        /// The helper name.
        helper: String,
        /// The registry asked about.
        server: String,
        /// What went wrong.
        reason: String,
    },
}

/// Prefix → credential, matched by longest registry/repository prefix.
#[derive(Clone, Default)]
pub struct Keychain {
    entries: Vec<(String, Credential)>,
}

impl fmt::Debug for Keychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(p, c)| format!("{p} => {c:?}"))).finish()
    }
}

impl Keychain {
    /// An empty keychain: every registry is anonymous.
    pub fn new() -> Keychain {
        Keychain::default()
    }

    /// Adds (or replaces) the credential for `prefix` (`host` or `host/repo/prefix`).
    pub fn insert(&mut self, prefix: &str, credential: Credential) {
        let prefix = normalise_server(prefix);
        self.entries.retain(|(p, _)| *p != prefix);
        self.entries.push((prefix, credential));
    }

    /// Adds every entry of another keychain, replacing equal prefixes.
    pub fn extend(&mut self, other: &Keychain) {
        for (p, c) in &other.entries {
            self.insert(p, c.clone());
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential for `host/repository`: the longest prefix ending at a
    /// component boundary, or anonymous.
    pub fn lookup(&self, host: &str, repository: &str) -> Credential {
        let full = format!("{host}/{repository}");
        self.entries
            .iter()
            .filter(|(p, _)| p.is_empty() || full == *p || full.starts_with(&format!("{p}/")))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, c)| c.clone())
            .unwrap_or(Credential::Anonymous)
    }

    /// Parses a docker `config.json` (`auths`, `credHelpers`, `credsStore`).
    /// `origin` names the source in errors (a path or a Secret).
    pub fn from_docker_config(origin: &str, bytes: &[u8]) -> Result<Keychain, AuthError> {
        let invalid = |reason: String| AuthError::Invalid { origin: origin.to_string(), reason };
        let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let obj = doc.as_object().ok_or_else(|| invalid("not a JSON object".into()))?;
        let mut kc = Keychain::new();
        if let Some(store) = obj.get("credsStore") {
            let name = store.as_str().ok_or_else(|| invalid("credsStore is not a string".into()))?;
            check_helper_name(name).map_err(&invalid)?;
            // A creds store applies to every registry not otherwise listed: the
            // shortest possible prefix is the empty host, handled in lookup via "".
            kc.entries.push((String::new(), Credential::Helper(name.to_string())));
        }
        if let Some(auths) = obj.get("auths") {
            let auths = auths.as_object().ok_or_else(|| invalid("auths is not an object".into()))?;
            for (server, entry) in auths {
                let cred = parse_auth_entry(entry).map_err(|r| invalid(format!("auths[{server:?}]: {r}")))?;
                if let Some(c) = cred {
                    kc.insert(server, c);
                }
            }
        }
        if let Some(helpers) = obj.get("credHelpers") {
            let helpers = helpers.as_object().ok_or_else(|| invalid("credHelpers is not an object".into()))?;
            for (server, name) in helpers {
                let name = name.as_str().ok_or_else(|| invalid(format!("credHelpers[{server:?}] is not a string")))?;
                check_helper_name(name).map_err(&invalid)?;
                kc.insert(server, Credential::Helper(name.to_string()));
            }
        }
        Ok(kc)
    }

    /// Reads a docker `config.json` file. A missing file is an empty keychain.
    pub fn from_docker_config_file(path: &Path) -> Result<Keychain, AuthError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keychain::new()),
            Err(source) => return Err(AuthError::Read { path: shown, source }),
        };
        let mut bytes = Vec::new();
        file.take(MAX_DOCKER_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| AuthError::Read { path: shown.clone(), source })?;
        if bytes.len() as u64 > MAX_DOCKER_CONFIG_BYTES {
            return Err(AuthError::Invalid {
                origin: shown,
                reason: format!("larger than {MAX_DOCKER_CONFIG_BYTES} bytes"),
            });
        }
        Keychain::from_docker_config(&shown, &bytes)
    }
}

fn check_helper_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("credential helper name {name:?} is not a plain name"));
    }
    Ok(())
}

fn parse_auth_entry(entry: &serde_json::Value) -> Result<Option<Credential>, String> {
    let o = entry.as_object().ok_or("not an object")?;
    let s = |k: &str| o.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    if let Some(token) = s("identitytoken") {
        // An OAuth refresh token; registries accept it as the password of the
        // special user "<token>" at the token endpoint.
        return Ok(Some(Credential::Basic { username: "<token>".into(), password: token.to_string() }));
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok(Some(Credential::Basic { username: u.to_string(), password: p.to_string() }));
    }
    if let Some(a) = s("auth") {
        let raw = base64::engine::general_purpose::STANDARD.decode(a.trim()).map_err(|_| "auth is not base64")?;
        let text = String::from_utf8(raw).map_err(|_| "auth is not UTF-8")?;
        let (u, p) = text.split_once(':').ok_or("auth is not base64(username:password)")?;
        return Ok(Some(Credential::Basic { username: u.to_string(), password: p.to_string() }));
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/x/` → `host:5000/x`.
pub fn normalise_server(s: &str) -> String {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let s = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        s
    };
    let s = s.trim_end_matches('/');
    let s = s.strip_suffix("/v1").or_else(|| s.strip_suffix("/v2")).unwrap_or(s);
    let (host, rest) = match s.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    let host = host.to_ascii_lowercase();
    // The same spelling rules as image references: the default HTTPS port is dropped
    // (pulls of `ghcr.io:443/x` normalise to `ghcr.io`), Docker Hub's aliases are one host.
    let host = host.strip_suffix(":443").filter(|h| h.contains('.') || *h == "localhost").unwrap_or(&host).to_string();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => host,
    };
    match rest {
        Some(r) if !r.is_empty() => format!("{host}/{r}"),
        _ => host,
    }
}

/// Asks `docker-credential-<helper> get` for the credentials of `server`.
pub async fn run_helper(helper: &str, server: &str) -> Result<Credential, AuthError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let err = |reason: String| AuthError::Helper { helper: helper.into(), server: server.into(), reason };
    let mut child = tokio::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(format!("cannot run it ({e}); install it on the node's PATH or remove it from the config")))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(server.as_bytes()).await.map_err(|e| err(format!("writing its stdin: {e}")))?;
        }
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(MAX_HELPER_OUTPUT as u64 + 1)
                .read_to_end(&mut out)
                .await
                .map_err(|e| err(format!("reading its output: {e}")))?;
        }
        let status = child.wait().await.map_err(|e| err(format!("waiting for it: {e}")))?;
        Ok::<_, AuthError>((status, out))
    };
    let (status, out) = tokio::time::timeout(HELPER_TIMEOUT, run)
        .await
        .map_err(|_| err(format!("no answer within {HELPER_TIMEOUT:?}")))??;
    if !status.success() {
        // Helpers print "credentials not found in native keychain" and exit 1.
        return Ok(Credential::Anonymous);
    }
    if out.len() > MAX_HELPER_OUTPUT {
        return Err(err("output too large".into()));
    }
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|_| err("output is not JSON".into()))?;
    let user = v.get("Username").and_then(|x| x.as_str()).unwrap_or_default();
    let secret = v.get("Secret").and_then(|x| x.as_str()).unwrap_or_default();
    if secret.is_empty() {
        return Ok(Credential::Anonymous);
    }
    Ok(Credential::Basic { username: user.to_string(), password: secret.to_string() })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`
    Basic,
    /// `Bearer realm=…,service=…,scope=…`
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name, passed back to the token endpoint.
        service: Option<String>,
        /// Scope the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value. Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// Bearer tokens by (registry, scope), each with its expiry. Memory only.
#[derive(Default)]
pub struct TokenCache {
    tokens: std::sync::Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl TokenCache {
    /// A cached, unexpired token.
    pub fn get(&self, registry: &str, scope: &str) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(registry.to_string(), scope.to_string()))
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(t, _)| t.clone())
    }

    /// Stores a token valid for `lifetime` (minus a safety margin).
    pub fn insert(&self, registry: &str, scope: &str, token: String, lifetime: Duration) {
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        let expiry = Instant::now() + lifetime.saturating_sub(margin);
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, exp)| *exp > Instant::now());
        map.insert((registry.to_string(), scope.to_string()), (token, expiry));
    }

    /// Drops every token (after credentials change).
    pub fn clear(&self) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_at_component_boundary() {
        let mut kc = Keychain::new();
        let a = Credential::Basic { username: "a".into(), password: "1".into() };
        let b = Credential::Basic { username: "b".into(), password: "2".into() };
        kc.insert("ghcr.io", a.clone());
        kc.insert("ghcr.io/acme", b.clone());
        assert_eq!(kc.lookup("ghcr.io", "acme/app"), b);
        assert_eq!(kc.lookup("ghcr.io", "acme"), b);
        assert_eq!(kc.lookup("ghcr.io", "acme-evil/app"), a);
        assert_eq!(kc.lookup("ghcr.io.evil.com", "acme/app"), Credential::Anonymous);
        assert_eq!(kc.lookup("quay.io", "x"), Credential::Anonymous);
    }

    #[test]
    fn docker_config_forms() {
        let cfg = br#"{
            "auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                "localhost:5000": {"username": "u2", "password": "p2"},
                "reg.example/team": {"identitytoken": "tok"},
                "empty.example": {}
            },
            "credHelpers": {"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"},
            "credsStore": "desktop"
        }"#;
        let kc = Keychain::from_docker_config("test", cfg).unwrap();
        assert_eq!(
            kc.lookup("docker.io", "library/alpine"),
            Credential::Basic { username: "user".into(), password: "pass".into() }
        );
        assert_eq!(
            kc.lookup("localhost:5000", "x"),
            Credential::Basic { username: "u2".into(), password: "p2".into() }
        );
        assert!(
            matches!(kc.lookup("reg.example", "team/x"), Credential::Basic { username, .. } if username == "<token>")
        );
        assert_eq!(kc.lookup("123.dkr.ecr.us-east-1.amazonaws.com", "x"), Credential::Helper("ecr-login".into()));
        assert_eq!(kc.lookup("empty.example", "x"), Credential::Helper("desktop".into()), "credsStore covers the rest");
        let dbg = format!("{kc:?}");
        assert!(!dbg.contains("pass") && !dbg.contains("p2") && !dbg.contains("tok\""), "{dbg}");
        assert!(Keychain::from_docker_config("t", br#"{"auths": {"x": {"auth": "%%%"}}}"#).is_err());
        assert!(Keychain::from_docker_config("t", br#"{"credsStore": "../../bin/sh"}"#).is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"Registry Realm\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into())
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t, service=s"),
            Some(Challenge::Bearer { realm: "http://127.0.0.1:1/t".into(), service: Some("s".into()), scope: None })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None, "no realm");
    }

    #[test]
    fn token_cache_expires() {
        let c = TokenCache::default();
        c.insert("r", "s", "t".into(), Duration::from_secs(300));
        assert_eq!(c.get("r", "s").as_deref(), Some("t"));
        assert_eq!(c.get("r", "other"), None);
        c.insert("r", "s2", "t2".into(), Duration::from_millis(0));
        assert_eq!(c.get("r", "s2"), None);
        c.clear();
        assert_eq!(c.get("r", "s"), None);
    }

    #[test]
    fn server_names() {
        assert_eq!(normalise_server("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_server("ghcr.io:443"), "ghcr.io");
        assert_eq!(normalise_server("https://registry.hub.docker.com:443/v2/"), "docker.io");
        assert_eq!(normalise_server("myreg:443"), "myreg:443", "a dotless host keeps the port that makes it a host");
        assert_eq!(normalise_server("HTTPS://Ghcr.io/Acme/"), "ghcr.io/Acme");
        assert_eq!(normalise_server("localhost:5000"), "localhost:5000");
    }
}
