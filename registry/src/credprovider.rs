//! Kubelet credential-provider plugins (`CredentialProviderConfig`,
//! `kubelet.config.k8s.io/v1`): the same plugins, configuration and
//! protocol kubelet uses, so the agent authenticates where kubelet does
//! (ECR, ACR, GCR, …) without docker config files.
//!
//! For an image whose name matches a provider's `matchImages` (kubelet's
//! globs: per host label, the port exactly, the path as a prefix), the
//! plugin `<binDir>/<name>` is exec'd with the configured `args` and `env`
//! (on top of the agent's environment) and a `CredentialProviderRequest` on
//! stdin. Its `CredentialProviderResponse` must have the configured
//! `apiVersion`; its `auth` map is keyed by globs too, and among the keys
//! matching the image the one kubelet's keyring tries first is used
//! (reverse lexical order, so the more specific `host/path` beats `host`).
//! Answers are cached per `cacheKeyType` (`Image`, `Registry`, `Global`)
//! for `cacheDuration` (the provider's `defaultCacheDuration` when absent,
//! not at all when zero) and looked up image, registry, global, as kubelet
//! does. Each exec is bounded in time ([`EXEC_TIMEOUT`] and the caller's
//! deadline) and output ([`MAX_RESPONSE_BYTES`]); nothing a plugin prints
//! reaches a message or a log, and credentials stay in memory. A failed
//! exec is remembered for at least [`FAILURE_TTL`] (bounded per provider):
//! the plugin is not run again for that image meanwhile, nor for any image
//! after it gave no answer in time, so a hanging plugin cannot hold every
//! pull through it in a queue.

use crate::auth::Credential;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The config API versions accepted (kubelet's current one).
pub const CONFIG_API_VERSION: &str = "kubelet.config.k8s.io/v1";
/// The plugin protocol versions a provider may declare.
pub const PLUGIN_API_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];
/// Longest time one plugin exec may take (kubelet allows a minute; a
/// verification cannot wait that long).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest plugin answer read; a larger one is an error.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Most cached answers kept per provider.
const MAX_CACHE_ENTRIES: usize = 1024;
/// Shortest time a failed exec is remembered: the plugin is not run again
/// for that image before then (at least as long as the failed exec took).
pub const FAILURE_TTL: Duration = Duration::from_secs(5);
/// Most failures remembered per provider.
const MAX_FAILURES: usize = 256;
/// The failure key meaning every image: a plugin that gave no answer in
/// time is not run for any image until the entry expires, so a hanging
/// plugin does not hold up each image's pulls in turn.
const EVERY_IMAGE: &str = "";
/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// kubelet's `CredentialProviderConfig` document, as parsed from its JSON
/// or YAML form (the agent parses YAML; this crate reads JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigFile {
    /// Must be [`CONFIG_API_VERSION`].
    pub api_version: String,
    /// Must be `CredentialProviderConfig`.
    pub kind: String,
    /// The providers, in order.
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
}

/// One `providers[]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// The plugin's file name in the plugin directory.
    pub name: String,
    /// Image globs the plugin is asked about.
    #[serde(default)]
    pub match_images: Vec<String>,
    /// Go duration (`12h`, `30m`) used when an answer has no `cacheDuration`.
    #[serde(default)]
    pub default_cache_duration: Option<String>,
    /// The protocol version the plugin speaks.
    #[serde(default)]
    pub api_version: String,
    /// Arguments passed to the plugin.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment added for the plugin.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Service-account token mode (needs a pod; not supported by the agent).
    #[serde(default)]
    pub token_attributes: Option<serde_json::Value>,
}

/// An `env` entry. Its `Debug` hides the value: plugins are commonly
/// given keys and tokens this way.
#[derive(Clone, Deserialize)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value.
    pub value: String,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvVar({}=<redacted>)", self.name)
    }
}

/// A problem in the credential-provider config, as check-config reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field, e.g. `providers[0].matchImages[1]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Why no credential came from a plugin.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The plugin could not be started or did not finish properly.
    #[error("credential provider {name} for {image}: {reason}")]
    Exec {
        /// Provider name.
        name: String,
        /// The image asked about.
        image: String,
        /// What went wrong (never the plugin's output).
        reason: String,
    },
    /// The plugin did not answer in time and was killed.
    #[error("credential provider {name} for {image}: no answer before the deadline; it was killed")]
    Hung {
        /// Provider name.
        name: String,
        /// The image asked about.
        image: String,
    },
    /// The plugin's answer is not a usable `CredentialProviderResponse`.
    #[error("credential provider {name} for {image}: its answer {reason}")]
    Response {
        /// Provider name.
        name: String,
        /// The image asked about.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The checked providers of one config.
#[derive(Debug)]
pub struct Providers {
    providers: Vec<Provider>,
}

/// `Debug` by hand: `env` values are shown as `<redacted>`.
struct Provider {
    name: String,
    binary: PathBuf,
    match_images: Vec<String>,
    default_cache: Duration,
    api_version: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Recent failed execs: image (or [`EVERY_IMAGE`]) → until when it is not run again.
    failed: Mutex<HashMap<String, Instant>>,
    /// One exec at a time, so a burst for one image execs once.
    exec: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(name, _)| format!("{name}=<redacted>")).collect();
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("binary", &self.binary)
            .field("match_images", &self.match_images)
            .field("default_cache", &self.default_cache)
            .field("api_version", &self.api_version)
            .field("args", &self.args)
            .field("env", &env)
            .finish_non_exhaustive()
    }
}

/// Registry patterns and their credentials, as one answer gave them.
type AuthEntries = Vec<(String, Credential)>;

/// Credentials keep their redacted `Debug`.
#[derive(Debug, Clone)]
struct Cached {
    auth: AuthEntries,
    expires: Instant,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    cache_key_type: String,
    #[serde(default)]
    cache_duration: Option<String>,
    #[serde(default)]
    auth: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

impl Providers {
    /// Checks a parsed config against the plugin directory `bin_dir`.
    /// Every problem is returned; nothing is half-used.
    pub fn from_config(file: ConfigFile, bin_dir: &Path) -> Result<Providers, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut p = |field: String, reason: String| problems.push(ConfigProblem { field, reason });
        if file.api_version != CONFIG_API_VERSION {
            p("apiVersion".into(), format!("{:?} is not {CONFIG_API_VERSION}", file.api_version));
        }
        if file.kind != "CredentialProviderConfig" {
            p("kind".into(), format!("{:?} is not CredentialProviderConfig", file.kind));
        }
        let mut providers = Vec::new();
        let mut names = Vec::new();
        for (i, spec) in file.providers.into_iter().enumerate() {
            let f = |name: &str| format!("providers[{i}].{name}");
            if spec.name.is_empty() || spec.name.contains('/') || spec.name == "." || spec.name == ".." {
                p(f("name"), format!("{:?} is not a plugin file name", spec.name));
                continue;
            }
            if names.contains(&spec.name) {
                p(f("name"), format!("{:?} is configured twice", spec.name));
            }
            names.push(spec.name.clone());
            if spec.match_images.is_empty() {
                p(f("matchImages"), "must list at least one image pattern".into());
            }
            for (j, m) in spec.match_images.iter().enumerate() {
                if let Err(r) = check_pattern(m) {
                    p(f(&format!("matchImages[{j}]")), r);
                }
            }
            let default_cache = match spec.default_cache_duration.as_deref().map(parse_go_duration) {
                Some(Some(d)) => d,
                Some(None) => {
                    p(f("defaultCacheDuration"), "is not a duration such as 12h or 30m".into());
                    Duration::ZERO
                }
                None => {
                    p(f("defaultCacheDuration"), "is required".into());
                    Duration::ZERO
                }
            };
            if !PLUGIN_API_VERSIONS.contains(&spec.api_version.as_str()) {
                p(f("apiVersion"), format!("{:?} is not one of {}", spec.api_version, PLUGIN_API_VERSIONS.join(", ")));
            }
            if spec.token_attributes.is_some() {
                p(f("tokenAttributes"), "service-account token mode needs a pod; the agent cannot use it".into());
            }
            let binary = bin_dir.join(&spec.name);
            if !binary.is_file() {
                p(f("name"), format!("no plugin {} in the plugin directory", binary.display()));
            }
            providers.push(Provider {
                name: spec.name,
                binary,
                match_images: spec.match_images,
                default_cache,
                api_version: spec.api_version,
                args: spec.args,
                env: spec.env.into_iter().map(|e| (e.name, e.value)).collect(),
                cache: Mutex::new(HashMap::new()),
                failed: Mutex::new(HashMap::new()),
                exec: tokio::sync::Mutex::new(()),
            });
        }
        if problems.is_empty() { Ok(Providers { providers }) } else { Err(problems) }
    }

    /// Number of providers.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The credential for `image` (`host/path`, optionally with tag or
    /// digest) from the matching providers, or `None` when none matches or
    /// none answers for it. A failing plugin is logged and skipped, as
    /// kubelet does; the next source (anonymous) is then used.
    pub async fn credential(&self, image: &str, deadline: tokio::time::Instant) -> Option<Credential> {
        let mut entries: Vec<(String, Credential)> = Vec::new();
        for p in self.providers.iter().filter(|p| p.match_images.iter().any(|m| urls_match(m, image))) {
            match p.provide(image, deadline).await {
                Ok(auth) => entries.extend(auth),
                Err(e) => tracing::warn!(provider = %p.name, error = %e, "credential provider failed"),
            }
        }
        // kubelet's keyring: keys in reverse lexical order, the first match is tried first.
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        entries.into_iter().find(|(k, _)| urls_match(k, image)).map(|(_, c)| c)
    }
}

impl Provider {
    async fn provide(&self, image: &str, deadline: tokio::time::Instant) -> Result<AuthEntries, ProviderError> {
        if let Some(hit) = self.cached(image) {
            return Ok(hit);
        }
        let _one = tokio::time::timeout_at(deadline, self.exec.lock()).await.map_err(|_| ProviderError::Exec {
            name: self.name.clone(),
            image: image.into(),
            reason: "the deadline passed while another exec was running".into(),
        })?;
        if let Some(hit) = self.cached(image) {
            return Ok(hit);
        }
        self.check_failed(image)?;
        let started = Instant::now();
        let answer = match self.exec(image, deadline).await {
            Ok(out) => self.parse(image, &out),
            Err(e) => Err(e),
        };
        let (auth, key, ttl) = answer.inspect_err(|e| self.remember_failure(image, e, started.elapsed()))?;
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, c| c.expires > Instant::now());
            if cache.len() < MAX_CACHE_ENTRIES {
                cache.insert(key, Cached { auth: auth.clone(), expires: Instant::now() + ttl });
            }
        }
        Ok(auth)
    }

    /// An error when the plugin failed for `image` (or hung) too recently to be run again.
    fn check_failed(&self, image: &str) -> Result<(), ProviderError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let until = [image, EVERY_IMAGE].iter().filter_map(|k| failed.get(*k)).copied().filter(|u| *u > now).max();
        match until {
            Some(u) => Err(ProviderError::Exec {
                name: self.name.clone(),
                image: image.into(),
                reason: format!("it failed recently; not run again for {} ms", (u - now).as_millis()),
            }),
            None => Ok(()),
        }
    }

    /// Remembers a failed exec that took `took`: for [`FAILURE_TTL`] or
    /// `took`, whichever is longer, so a broken plugin costs at most about
    /// half of the time; for every image when it gave no answer at all.
    fn remember_failure(&self, image: &str, error: &ProviderError, took: Duration) {
        let key = if matches!(error, ProviderError::Hung { .. }) { EVERY_IMAGE } else { image };
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.retain(|_, until| *until > now);
        if failed.len() < MAX_FAILURES || failed.contains_key(key) {
            failed.insert(key.to_string(), now + took.max(FAILURE_TTL));
        }
    }

    /// A cached answer for `image`: by image, then registry, then global.
    fn cached(&self, image: &str) -> Option<AuthEntries> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let registry = image.split('/').next().unwrap_or_default();
        [image, registry, ""]
            .iter()
            .filter_map(|k| cache.get(*k))
            .find(|c| c.expires > Instant::now())
            .map(|c| c.auth.clone())
    }

    async fn exec(&self, image: &str, deadline: tokio::time::Instant) -> Result<Vec<u8>, ProviderError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let err = |reason: String| ProviderError::Exec { name: self.name.clone(), image: image.into(), reason };
        let request = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": "CredentialProviderRequest",
            "image": image,
        });
        let mut child = tokio::process::Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot run {} ({e})", self.binary.display())))?;
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                let body = serde_json::to_vec(&request).unwrap_or_default();
                // A plugin that exits without reading stdin is judged by its answer.
                let _ = stdin.write_all(&body).await;
            }
            let mut out = Vec::new();
            if let Some(stdout) = child.stdout.take() {
                stdout
                    .take(MAX_RESPONSE_BYTES as u64 + 1)
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| err(format!("reading its output: {e}")))?;
            }
            if out.len() > MAX_RESPONSE_BYTES {
                return Err(err(format!("it printed more than {MAX_RESPONSE_BYTES} bytes")));
            }
            let status = child.wait().await.map_err(|e| err(format!("waiting for it: {e}")))?;
            if !status.success() {
                return Err(err(format!("it exited with {status}")));
            }
            Ok(out)
        };
        let limit = deadline.min(tokio::time::Instant::now() + EXEC_TIMEOUT);
        tokio::time::timeout_at(limit, run)
            .await
            .map_err(|_| ProviderError::Hung { name: self.name.clone(), image: image.into() })?
    }

    /// The answer's credentials, its cache key and how long to keep it.
    fn parse(&self, image: &str, out: &[u8]) -> Result<(AuthEntries, String, Duration), ProviderError> {
        let bad = |reason: String| ProviderError::Response { name: self.name.clone(), image: image.into(), reason };
        // Parse errors are not shown: they can quote the answer, which holds secrets.
        let meta: TypeMeta = serde_json::from_slice(out).map_err(|_| bad("is not JSON".into()))?;
        if meta.api_version != self.api_version {
            return Err(bad(format!("has apiVersion {:?}, expected {}", clip(&meta.api_version), self.api_version)));
        }
        if meta.kind != "CredentialProviderResponse" {
            return Err(bad(format!("has kind {:?}, expected CredentialProviderResponse", clip(&meta.kind))));
        }
        let resp: Response =
            serde_json::from_slice(out).map_err(|_| bad("is not a CredentialProviderResponse".into()))?;
        let key = match resp.cache_key_type.as_str() {
            "Image" => image.to_string(),
            "Registry" => image.split('/').next().unwrap_or_default().to_string(),
            "Global" => String::new(),
            other => return Err(bad(format!("has cacheKeyType {:?}, not Image, Registry or Global", clip(other)))),
        };
        let ttl = match resp.cache_duration.as_deref() {
            None => self.default_cache,
            Some(d) => parse_go_duration(d).ok_or_else(|| bad(format!("has cacheDuration {:?}", clip(d))))?,
        };
        let auth = resp
            .auth
            .into_iter()
            .filter(|(k, _)| check_pattern(k).is_ok())
            .map(|(k, a)| {
                let c = if a.username.is_empty() && a.password.is_empty() {
                    Credential::Anonymous
                } else {
                    Credential::Basic { username: a.username, password: a.password }
                };
                (k, c)
            })
            .collect();
        Ok((auth, key, ttl))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).filter(|c| !c.is_control()).collect()
}

/// Reads and checks a JSON config file (YAML is parsed by the caller into [`ConfigFile`]).
pub fn parse_json_config(bytes: &[u8]) -> Result<ConfigFile, ConfigProblem> {
    serde_json::from_slice(bytes)
        .map_err(|e| ConfigProblem { field: String::new(), reason: format!("not a JSON config: {e}") })
}

/// A Go `time.Duration` string (`1h30m`, `500ms`, `0`); `None` when malformed or negative.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// An image pattern kubelet can match: `host[:port][/path]`, globs only in host labels.
fn check_pattern(p: &str) -> Result<(), String> {
    let (host, _) = split_image(p);
    if host.is_empty() || p.len() > 512 || p.contains("://") || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{:?} is not an image pattern such as *.dkr.ecr.*.amazonaws.com", clip(p)));
    }
    let (name, _) = split_port(host);
    for label in name.split('.') {
        glob_match(label, "").map_err(|e| format!("{:?}: {e}", clip(p)))?;
    }
    Ok(())
}

fn split_image(s: &str) -> (&str, &str) {
    match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn split_port(host: &str) -> (&str, &str) {
    match host.rfind(':') {
        Some(i) if !host[i + 1..].contains(']') => (&host[..i], &host[i + 1..]),
        _ => (host, ""),
    }
}

/// kubelet's `URLsMatchStr`: same number of host labels, each matched as a
/// glob; ports equal; the pattern's path a prefix of the image's path.
pub fn urls_match(pattern: &str, image: &str) -> bool {
    let (ph, pp) = split_image(pattern);
    let (ih, ip) = split_image(image);
    let ((pname, pport), (iname, iport)) = (split_port(ph), split_port(ih));
    if pport != iport || !ip.starts_with(pp) {
        return false;
    }
    let (pl, il): (Vec<&str>, Vec<&str>) = (pname.split('.').collect(), iname.split('.').collect());
    pl.len() == il.len() && pl.iter().zip(&il).all(|(p, i)| glob_match(p, i) == Ok(true))
}

/// Go's `filepath.Match` for one label: `*`, `?`, `[...]` classes with
/// ranges and `^` negation, `\` escapes. `Err` for a malformed pattern.
fn glob_match(pattern: &str, name: &str) -> Result<bool, &'static str> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Validate the whole pattern first, as Go reports ErrBadPattern.
    let mut i = 0;
    while i < p.len() {
        i = match p[i] {
            '[' => class_end(&p, i)?,
            '\\' if i + 1 >= p.len() => return Err("a trailing backslash"),
            '\\' => i + 2,
            _ => i + 1,
        };
    }
    // Iterative match with one backtrack point per `*` (linear in practice).
    let (mut pi, mut ni, mut star): (usize, usize, Option<(usize, usize)>) = (0, 0, None);
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
            continue;
        }
        if pi < p.len()
            && let Some(next) = single(&p, pi, n[ni])?
        {
            pi = next;
            ni += 1;
            continue;
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return Ok(false),
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    Ok(pi == p.len())
}

/// Index after the class starting at `p[i] == '['`.
fn class_end(p: &[char], i: usize) -> Result<usize, &'static str> {
    let mut j = i + 1;
    if j < p.len() && p[j] == '^' {
        j += 1;
    }
    let start = j;
    while j < p.len() && (p[j] != ']' || j == start) {
        if p[j] == '\\' {
            j += 1;
        }
        j += 1;
    }
    if j >= p.len() { Err("an unclosed character class") } else { Ok(j + 1) }
}

/// Whether `c` matches the single-character pattern at `p[pi]`; the index after it.
fn single(p: &[char], pi: usize, c: char) -> Result<Option<usize>, &'static str> {
    match p[pi] {
        '?' => Ok(Some(pi + 1)),
        '\\' => Ok((p[pi + 1] == c).then_some(pi + 2)),
        '[' => {
            let end = class_end(p, pi)?;
            let mut j = pi + 1;
            let negate = p[j] == '^';
            if negate {
                j += 1;
            }
            let mut hit = false;
            while j < end - 1 {
                let lo = if p[j] == '\\' {
                    j += 1;
                    p[j]
                } else {
                    p[j]
                };
                let hi = if j + 2 < end - 1 && p[j + 1] == '-' {
                    j += 2;
                    if p[j] == '\\' {
                        j += 1;
                        p[j]
                    } else {
                        p[j]
                    }
                } else {
                    lo
                };
                hit |= lo <= c && c <= hi;
                j += 1;
            }
            Ok((hit != negate).then_some(end))
        }
        other => Ok((other == c).then_some(pi + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_match_rules() {
        assert!(urls_match("*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.eu-west-1.amazonaws.com/app"));
        assert!(!urls_match("*.dkr.ecr.*.amazonaws.com", "dkr.ecr.eu-west-1.amazonaws.com/app"));
        assert!(urls_match("*.azurecr.io", "x.azurecr.io"));
        assert!(!urls_match("*.azurecr.io", "x.azurecr.io.evil.example/app"));
        assert!(!urls_match("r.example", "r.example:5000/app"), "ports must match exactly");
        assert!(urls_match("r.example:5000", "r.example:5000/app"));
        assert!(urls_match("r.example/team", "r.example/team/app"));
        assert!(!urls_match("r.example/team", "r.example/other"));
        assert!(urls_match("r?.ex[a-c]mple", "r1.example"));
        assert!(!urls_match("r.ex[^a]mple", "r.example"));
        assert!(glob_match("a[", "a").is_err());
        assert!(check_pattern("a[.example").is_err());
        assert!(check_pattern("https://x").is_err());
    }

    #[test]
    fn globs_are_linear_enough_for_hostile_names() {
        let name = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(30));
        assert_eq!(glob_match(&pattern, &name), Ok(false));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "-1h", "1d", "h", "1e9h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_plugin_env_values() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("ecr"), "").unwrap();
        let file: ConfigFile = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
            "providers": [{"name": "ecr", "matchImages": ["*.example"], "defaultCacheDuration": "1m",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI-secret"}]}]
        }))
        .unwrap();
        let config = format!("{file:?}");
        let providers = format!("{:?}", Providers::from_config(file, t.path()).unwrap());
        for shown in [config, providers] {
            assert!(!shown.contains("wJalrXUtnFEMI-secret"), "{shown}");
            assert!(shown.contains("AWS_SECRET_ACCESS_KEY=<redacted>"), "{shown}");
        }
    }

    /// Providers for one shell-script plugin that logs each exec to `log` and then runs `body`.
    fn script_provider(dir: &Path, body: &str) -> (Providers, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let log = dir.join("execs.log");
        let plugin = dir.join("plugin");
        std::fs::write(&plugin, format!("#!/bin/sh\necho run >> \"$PG_LOG\"\n{body}\n")).unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file: ConfigFile = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
            "providers": [{"name": "plugin", "matchImages": ["*.example"], "defaultCacheDuration": "1m",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "env": [{"name": "PG_LOG", "value": log.to_str().unwrap()}]}]
        }))
        .unwrap();
        (Providers::from_config(file, dir).unwrap(), log)
    }

    fn execs(log: &Path) -> usize {
        std::fs::read_to_string(log).unwrap_or_default().lines().count()
    }

    #[tokio::test]
    async fn a_failed_exec_is_not_repeated_for_that_image_within_the_failure_ttl() {
        let t = tempfile::tempdir().unwrap();
        let (providers, log) = script_provider(t.path(), "exit 1");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        assert_eq!(providers.credential("r.example/app", deadline).await, None);
        assert_eq!(providers.credential("r.example/app", deadline).await, None);
        assert_eq!(execs(&log), 1, "the second lookup was answered by the remembered failure");
        assert_eq!(providers.credential("r.example/other", deadline).await, None);
        assert_eq!(execs(&log), 2, "another image is still asked");
    }

    #[tokio::test]
    async fn a_hung_plugin_is_not_run_for_any_image_within_the_failure_ttl() {
        let t = tempfile::tempdir().unwrap();
        let (providers, log) = script_provider(t.path(), "exec sleep 30");
        let short = tokio::time::Instant::now() + Duration::from_millis(300);
        let p = &providers.providers[0];
        assert!(matches!(p.provide("r.example/app", short).await, Err(ProviderError::Hung { .. })));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let second = p.provide("r.example/other", deadline).await.unwrap_err();
        assert!(second.to_string().contains("failed recently"), "{second}");
        assert_eq!(execs(&log), 1, "one exec for both images");
    }

    #[test]
    fn config_problems_are_all_reported() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("ok"), "").unwrap();
        let file: ConfigFile = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
            "providers": [
                {"name": "ok", "matchImages": ["*.example"], "defaultCacheDuration": "1m",
                 "apiVersion": "credentialprovider.kubelet.k8s.io/v1"},
                {"name": "../x", "matchImages": ["a"], "defaultCacheDuration": "1m", "apiVersion": "x"},
                {"name": "missing", "matchImages": [], "apiVersion": "credentialprovider.kubelet.k8s.io/v2"}
            ]
        }))
        .unwrap();
        let problems = Providers::from_config(file, t.path()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "providers[1].name",
                "providers[2].matchImages",
                "providers[2].defaultCacheDuration",
                "providers[2].apiVersion",
                "providers[2].name"
            ]
        );
    }
}
