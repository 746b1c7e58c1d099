//! Registry credentials from Kubernetes pull Secrets, held in memory only.
//!
//! The Kubernetes sync fills a [`RegistryCredentials`] store from Secrets of
//! type `kubernetes.io/dockerconfigjson` carrying the auth label; the registry
//! keychain reads it. Nothing here is ever written to disk, and no type here
//! prints a secret: [`Sensitive`] redacts itself in `Debug` and has no
//! `Display`, and parse errors never quote the input.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// The Secret type that carries a docker config.json.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The Secret key holding the docker config.json.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// Largest `.dockerconfigjson` accepted (Kubernetes caps a Secret at 1 MiB).
pub const MAX_DOCKER_CONFIG_BYTES: usize = 1024 * 1024;
/// Most registries one Secret may list.
pub const MAX_AUTH_ENTRIES: usize = 1024;

/// A secret value. `Debug` prints `<redacted>`; there is no `Display` and no
/// `Serialize`, so it cannot end up in a log line or a file by accident.
/// Read it with [`Sensitive::expose`] at the point of use only.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Sensitive<T> {
        Sensitive(value)
    }

    /// The secret value itself.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One way of authenticating to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (from `auth`, or `username` + `password`).
    Basic {
        /// The user name (not secret, may be logged).
        username: String,
        /// The password or access token.
        password: Sensitive<String>,
    },
    /// An OAuth2 refresh token to exchange at the registry's token endpoint
    /// (`identitytoken`).
    IdentityToken(Sensitive<String>),
    /// A bearer token to send as is (`registrytoken`).
    RegistryToken(Sensitive<String>),
}

/// Credentials for one registry entry of a docker config.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The key of the `auths` entry exactly as written (`ghcr.io`,
    /// `registry.example:5000/team`, `https://index.docker.io/v1/`); the
    /// keychain normalises and matches it.
    pub registry: String,
    /// How to authenticate.
    pub credential: Credential,
}

/// One pull Secret: its name, raw bytes and parsed entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecret {
    /// The Secret's name (in the agent's namespace).
    pub name: String,
    /// The Secret's `.dockerconfigjson` reduced to its `auths` object
    /// (`{"auths":{…}}`): whatever else the Secret held never reaches the
    /// registry keychain.
    pub raw: Sensitive<Vec<u8>>,
    /// Parsed `auths` entries, in key order.
    pub auths: Vec<RegistryAuth>,
}

/// Every pull Secret known at one moment, sorted by Secret name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSnapshot {
    /// The Secrets.
    pub secrets: Vec<PullSecret>,
}

impl CredentialSnapshot {
    /// Every registry entry of every Secret, Secrets in name order.
    pub fn auths(&self) -> impl Iterator<Item = &RegistryAuth> {
        self.secrets.iter().flat_map(|s| s.auths.iter())
    }
}

/// The shared, in-memory store of registry credentials.
///
/// Contract: the Kubernetes sync is the writer and [`replace`](Self::replace)s
/// the whole snapshot whenever a labelled `kubernetes.io/dockerconfigjson`
/// Secret is added, changed or deleted (only after its first complete list,
/// so a reader never sees a half-listed set). Readers (the registry
/// keychain) call [`snapshot`](Self::snapshot) per use — a cheap `Arc`
/// clone of an immutable value — or [`subscribe`](Self::subscribe) to be
/// woken on change, e.g. to drop cached tokens. Values are never written to
/// disk and never logged. Clones share one store.
#[derive(Clone)]
pub struct RegistryCredentials {
    tx: Arc<watch::Sender<Arc<CredentialSnapshot>>>,
}

impl Default for RegistryCredentials {
    fn default() -> Self {
        RegistryCredentials::new()
    }
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("RegistryCredentials")
            .field("secrets", &s.secrets.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl RegistryCredentials {
    /// An empty store.
    pub fn new() -> RegistryCredentials {
        RegistryCredentials { tx: Arc::new(watch::Sender::new(Arc::new(CredentialSnapshot::default()))) }
    }

    /// The credentials in force now.
    pub fn snapshot(&self) -> Arc<CredentialSnapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that is marked changed on every replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CredentialSnapshot>> {
        self.tx.subscribe()
    }

    /// Replaces the whole set; readers are woken only when it differs.
    /// Returns whether it changed.
    pub fn replace(&self, snapshot: CredentialSnapshot) -> bool {
        self.tx.send_if_modified(|cur| {
            if **cur == snapshot {
                false
            } else {
                *cur = Arc::new(snapshot);
                true
            }
        })
    }
}

/// Why a `.dockerconfigjson` could not be used. Never quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Larger than [`MAX_DOCKER_CONFIG_BYTES`].
    #[error("Secret {secret}: .dockerconfigjson is {len} bytes, more than {MAX_DOCKER_CONFIG_BYTES}")]
    TooLarge {
        /// The Secret's name.
        secret: String,
        /// Its size.
        len: usize,
    },
    /// Not a JSON docker config (the position is given, the content never).
    #[error(
        "Secret {secret}: .dockerconfigjson is not a docker config ({what} at line {line}, column {column}); recreate it with `kubectl create secret docker-registry`"
    )]
    Malformed {
        /// The Secret's name.
        secret: String,
        /// The kind of problem (syntax, data, …).
        what: &'static str,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
    /// An `auths` entry that cannot be used.
    #[error("Secret {secret}: auths entry {registry:?}: {why}")]
    BadEntry {
        /// The Secret's name.
        secret: String,
        /// The entry's key.
        registry: String,
        /// What is wrong (never the value).
        why: &'static str,
    },
    /// The Secret names a credential helper or store. A pull Secret may carry
    /// only `auths`: a helper is a program the agent would run, and only the
    /// node's own docker config may choose one.
    #[error(
        "Secret {secret}: .dockerconfigjson sets {key}, which names a program for the agent to run; pull Secrets may carry only `auths` (configure credential helpers in the node's docker config, [auth] dockerConfig)"
    )]
    HelperNotAllowed {
        /// The Secret's name.
        secret: String,
        /// `credsStore` or `credHelpers`.
        key: &'static str,
    },
    /// The Secret has no `.dockerconfigjson` key.
    #[error("Secret {secret} of type {DOCKER_CONFIG_JSON_TYPE} has no {DOCKER_CONFIG_JSON_KEY} key")]
    MissingKey {
        /// The Secret's name.
        secret: String,
    },
}

/// Top-level keys of a docker config that make the agent run a program.
const HELPER_KEYS: [&str; 2] = ["credsStore", "credHelpers"];

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

/// Parses the `.dockerconfigjson` of Secret `secret`.
pub fn parse_docker_config(secret: &str, raw: Vec<u8>) -> Result<PullSecret, CredentialError> {
    let secret_s = || secret.to_string();
    if raw.len() > MAX_DOCKER_CONFIG_BYTES {
        return Err(CredentialError::TooLarge { secret: secret_s(), len: raw.len() });
    }
    let malformed = |e: serde_json::Error| CredentialError::Malformed {
        secret: secret_s(),
        what: match e.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected value",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: e.line(),
        column: e.column(),
    };
    let mut top: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw).map_err(malformed)?;
    if let Some(key) = HELPER_KEYS.into_iter().find(|k| top.contains_key(*k)) {
        return Err(CredentialError::HelperNotAllowed { secret: secret_s(), key });
    }
    let auths = top.remove("auths").unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let only_auths = serde_json::Value::Object(serde_json::Map::from_iter([("auths".to_string(), auths)]));
    let reduced = serde_json::to_vec(&only_auths).map_err(malformed)?;
    let parsed: RawConfig = serde_json::from_value(only_auths).map_err(malformed)?;
    if parsed.auths.len() > MAX_AUTH_ENTRIES {
        return Err(CredentialError::BadEntry {
            secret: secret_s(),
            registry: String::new(),
            why: "more registries than the agent accepts (1024)",
        });
    }
    let mut auths = Vec::with_capacity(parsed.auths.len());
    for (registry, e) in parsed.auths {
        let bad = |why| CredentialError::BadEntry { secret: secret_s(), registry: registry.clone(), why };
        if registry.is_empty() || registry.len() > 255 || registry.chars().any(char::is_control) {
            return Err(bad("the registry key must be 1-255 printable characters"));
        }
        let credential = if let Some(token) = e.registrytoken.filter(|t| !t.is_empty()) {
            Credential::RegistryToken(Sensitive(token))
        } else if let Some(token) = e.identitytoken.filter(|t| !t.is_empty()) {
            Credential::IdentityToken(Sensitive(token))
        } else if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("`auth` is not valid base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("`auth` does not decode to UTF-8"))?;
            let Some((user, pass)) = text.split_once(':') else {
                return Err(bad("`auth` does not decode to username:password"));
            };
            Credential::Basic { username: user.to_string(), password: Sensitive(pass.to_string()) }
        } else {
            match (e.username, e.password) {
                (Some(u), Some(p)) if !u.is_empty() => Credential::Basic { username: u, password: Sensitive(p) },
                _ => return Err(bad("no auth, username/password, identitytoken or registrytoken")),
            }
        };
        auths.push(RegistryAuth { registry, credential });
    }
    Ok(PullSecret { name: secret_s(), raw: Sensitive(reduced), auths })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "hunter2-do-not-print";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_every_entry_form() {
        let json = format!(
            r#"{{"auths": {{
                "ghcr.io": {{"auth": "{}"}},
                "registry.example:5000/team": {{"username": "bot", "password": "{PASSWORD}", "email": "x@y"}},
                "acr.example.io": {{"identitytoken": "refresh-tok"}},
                "tok.example": {{"registrytoken": "bearer-tok", "auth": "ignored"}}
            }}}}"#,
            b64(&format!("ci:{PASSWORD}:with-colon"))
        );
        let s = parse_docker_config("pull", json.clone().into_bytes()).unwrap();
        let kept: serde_json::Value = serde_json::from_slice(s.raw.expose()).unwrap();
        let given: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(kept, serde_json::json!({"auths": given["auths"]}), "only auths is kept");
        let by: BTreeMap<&str, &Credential> = s.auths.iter().map(|a| (a.registry.as_str(), &a.credential)).collect();
        assert_eq!(
            by["ghcr.io"],
            &Credential::Basic { username: "ci".into(), password: Sensitive(format!("{PASSWORD}:with-colon")) }
        );
        assert_eq!(
            by["registry.example:5000/team"],
            &Credential::Basic { username: "bot".into(), password: Sensitive(PASSWORD.into()) }
        );
        assert_eq!(by["acr.example.io"], &Credential::IdentityToken(Sensitive("refresh-tok".into())));
        assert_eq!(by["tok.example"], &Credential::RegistryToken(Sensitive("bearer-tok".into())));
        let debug = format!("{s:?}");
        assert!(!debug.contains(PASSWORD) && !debug.contains("refresh-tok"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn errors_never_quote_the_secret() {
        let cases = [
            format!(r#"{{"auths": {{"ghcr.io": {{"auth": "{PASSWORD}"}}}}}}"#),
            format!(r#"{{"auths": {{"ghcr.io": {{"auth": "{}"}}}}}}"#, b64(PASSWORD)),
            format!(r#"{{"auths": {{"ghcr.io": {{"password": "{PASSWORD}"}}}}}}"#),
            format!(r#"{{"auths": {{"ghcr.io": {{"auth": 12, "password": "{PASSWORD}"}}}}}}"#),
            format!(r#"{{"auths": {{"ghcr.io": {{"username": ["{PASSWORD}"]}}}}}}"#),
            format!(r#"{{"auths": "{PASSWORD}"}}"#),
            format!(r#"{{"auths": {{"ghcr.io": {{"auth": "{PASSWORD}"#),
        ];
        for c in cases {
            let e = parse_docker_config("pull", c.clone().into_bytes()).expect_err(&c);
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(PASSWORD) && !shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("Secret pull"), "{shown}");
        }
        let big = vec![b' '; MAX_DOCKER_CONFIG_BYTES + 1];
        assert!(matches!(parse_docker_config("pull", big), Err(CredentialError::TooLarge { .. })));
    }

    #[test]
    fn helpers_and_stores_in_a_secret_are_refused() {
        let auth = format!(r#""auths":{{"ghcr.io":{{"auth":"{}"}}}}"#, b64("a:b"));
        for (json, key) in [
            (format!(r#"{{{auth},"credHelpers":{{"ghcr.io":"evil"}}}}"#), "credHelpers"),
            (format!(r#"{{"credsStore":"evil",{auth}}}"#), "credsStore"),
            (r#"{"credsStore":""}"#.to_string(), "credsStore"),
        ] {
            let e = parse_docker_config("pull", json.into_bytes()).expect_err(key);
            assert_eq!(e, CredentialError::HelperNotAllowed { secret: "pull".into(), key });
            assert!(e.to_string().contains("may carry only `auths`"), "{e}");
        }
        // Other keys are dropped, not passed on.
        let s = parse_docker_config("pull", format!(r#"{{{auth},"HttpHeaders":{{"X":"y"}}}}"#).into_bytes()).unwrap();
        assert!(!String::from_utf8_lossy(s.raw.expose()).contains("HttpHeaders"));
        assert_eq!(s.auths.len(), 1);
    }

    #[tokio::test]
    async fn store_replaces_and_wakes_readers_only_on_change() {
        let store = RegistryCredentials::new();
        assert!(store.snapshot().secrets.is_empty());
        let mut rx = store.subscribe();
        let s = parse_docker_config("pull", format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#, b64("a:b")).into())
            .unwrap();
        assert!(store.replace(CredentialSnapshot { secrets: vec![s.clone()] }));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(!store.replace(CredentialSnapshot { secrets: vec![s] }), "same content is no change");
        assert!(!rx.has_changed().unwrap());
        let other = store.clone();
        assert_eq!(other.snapshot().auths().count(), 1, "clones share the store");
        assert!(!format!("{store:?}").contains("a:b"));
    }
}
