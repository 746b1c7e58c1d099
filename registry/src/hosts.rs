//! containerd's registry host configuration (`config_path`, `hosts.toml`)
//! read the way containerd reads it, so signature and referrer lookups go to
//! the endpoints containerd pulls from, in the same order.
//!
//! For a registry `host[:port]`, the first existing directory among
//! `<root>/host_port_`, `<root>/host:port` and `<root>/_default` (roots in
//! order) is used. Its `hosts.toml` lists `[host."…"]` endpoints in file
//! order, then the `server` (the registry itself when not set) last. A
//! directory without `hosts.toml` contributes Docker-style certificate files
//! (`*.crt` CAs, `*.cert`/`*.key` client pairs) to the registry itself. A
//! `hosts.toml` that does not parse is ignored the same way containerd
//! ignores it (falling back to those certificate files), and is reported as
//! a [`Problem`] for check-config and doctor.
//!
//! Files are bounded ([`MAX_HOSTS_FILE_BYTES`], [`MAX_ENDPOINTS`]); only
//! regular files are read; with a host root (the agent in a pod sees the
//! node under `/host`) absolute paths in a file are node paths and are
//! re-rooted, and no path may leave that root.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Largest `hosts.toml` read.
pub const MAX_HOSTS_FILE_BYTES: u64 = 256 * 1024;
/// Most endpoints one registry may have.
pub const MAX_ENDPOINTS: usize = 16;
/// Most headers one endpoint may send.
pub const MAX_HEADERS: usize = 32;

/// What an endpoint may be used for (containerd's `capabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch content by digest.
    pub pull: bool,
    /// Resolve tags to digests.
    pub resolve: bool,
    /// Push (never used by pullgate).
    pub push: bool,
}

impl Capabilities {
    /// containerd's default when `capabilities` is not set: all three.
    pub const ALL: Capabilities = Capabilities { pull: true, resolve: true, push: true };
}

/// One place containerd would send a registry request to. Its `Debug`
/// shows header names only: a header value can be a credential
/// (`Authorization`), and endpoints reach logs through the client's options.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`; `None` for the registry itself without a `server`
    /// line, whose scheme comes from the agent's registry settings.
    pub scheme: Option<String>,
    /// `host[:port]` to connect to.
    pub host: String,
    /// API root (`/v2`, or the path as given with `override_path`).
    pub path: String,
    /// What the endpoint may be used for.
    pub capabilities: Capabilities,
    /// CA files trusted for this endpoint (paths as the agent sees them).
    pub ca: Vec<PathBuf>,
    /// Client certificate and key files (`None`: the key is in the certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// `skip_verify` as configured.
    pub skip_verify: Option<bool>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// True for the last entry when it is the registry itself (no `server` line).
    pub upstream: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self.headers.iter().map(|(name, _)| format!("{name}: <redacted>")).collect();
        f.debug_struct("Endpoint")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("capabilities", &self.capabilities)
            .field("ca", &self.ca)
            .field("client", &self.client)
            .field("skip_verify", &self.skip_verify)
            .field("headers", &headers)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl Endpoint {
    /// `scheme://host/path` for reports (`https://` assumed for the upstream).
    pub fn display(&self) -> String {
        format!("{}://{}{}", self.scheme.as_deref().unwrap_or("https"), self.host, self.path)
    }
}

/// A problem in a hosts directory, as check-config reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or directory).
    pub file: PathBuf,
    /// The field, e.g. `host."https://m".capabilities`.
    pub field: String,
    /// What is wrong and what containerd does about it.
    pub reason: String,
}

/// The endpoints of one registry.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The directory used, if any.
    pub dir: Option<PathBuf>,
    /// Endpoints in the order containerd tries them.
    pub endpoints: Vec<Endpoint>,
    /// What was wrong with the files read.
    pub problems: Vec<Problem>,
}

/// containerd's `config_path` roots.
#[derive(Debug, Clone, Default)]
pub struct HostsDirs {
    roots: Vec<PathBuf>,
    host_root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct FileHost {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    override_path: bool,
}

#[derive(Debug, Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(flatten)]
    root: FileHost,
    #[serde(default)]
    host: BTreeMap<String, FileHost>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl HostsDirs {
    /// The roots of `config_path` (in order) as the agent sees them;
    /// `host_root` is where the node's `/` is mounted, if not at `/`.
    pub fn new(roots: Vec<PathBuf>, host_root: Option<PathBuf>) -> HostsDirs {
        HostsDirs { roots, host_root }
    }

    /// True when no root is configured.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The endpoints for registry `host` (`host[:port]`, as in references).
    /// `docker.io` is served by `registry-1.docker.io`, as containerd does.
    pub fn resolve(&self, host: &str) -> Resolved {
        let mut out = Resolved::default();
        if host_name_is_safe(host) {
            out.dir = self.directory_for(host);
        }
        let mut endpoints = match &out.dir {
            Some(dir) => self.load_dir(dir, &mut out.problems),
            None => Vec::new(),
        };
        if endpoints.last().is_none_or(|e| e.host.is_empty()) {
            if endpoints.is_empty() {
                endpoints.push(empty_endpoint());
            }
            let last = endpoints.last_mut().expect("one endpoint");
            last.host = if host == "docker.io" { "registry-1.docker.io".into() } else { host.to_string() };
            if host == "docker.io" {
                last.scheme = Some("https".into());
            }
            last.path = "/v2".into();
            last.capabilities = Capabilities::ALL;
            last.upstream = true;
        }
        out.endpoints = endpoints;
        out
    }

    /// Every problem in every host directory under the roots (check-config, doctor).
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for root in &self.roots {
            let Ok(entries) = std::fs::read_dir(root) else { continue };
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
            dirs.sort();
            for dir in dirs.into_iter().take(1024) {
                self.load_dir(&dir, &mut problems);
            }
        }
        problems
    }

    fn directory_for(&self, host: &str) -> Option<PathBuf> {
        for root in &self.roots {
            let mut names = Vec::new();
            if let Some(i) = host.rfind(':').filter(|i| *i > 0) {
                names.push(format!("{}_{}_", &host[..i], &host[i + 1..]));
            }
            names.push(host.to_string());
            names.push("_default".into());
            if let Some(d) = names.into_iter().map(|n| root.join(n)).find(|p| p.is_dir()) {
                return Some(d);
            }
        }
        None
    }

    /// The endpoints one directory defines (the last may still lack a host).
    fn load_dir(&self, dir: &Path, problems: &mut Vec<Problem>) -> Vec<Endpoint> {
        let file = dir.join("hosts.toml");
        let text = match read_bounded(&file, MAX_HOSTS_FILE_BYTES) {
            Ok(Some(b)) if !b.is_empty() => b,
            Ok(_) => return vec![self.cert_files(dir)],
            Err(reason) => {
                problems.push(Problem { file: file.clone(), field: String::new(), reason });
                return vec![self.cert_files(dir)];
            }
        };
        match self.parse(dir, &file, &text) {
            Ok(eps) => eps,
            Err(p) => {
                problems.push(p);
                vec![self.cert_files(dir)]
            }
        }
    }

    fn parse(&self, dir: &Path, file: &Path, bytes: &[u8]) -> Result<Vec<Endpoint>, Problem> {
        let problem = |field: &str, reason: String| Problem {
            file: file.to_path_buf(),
            field: field.into(),
            reason: format!("{reason}; containerd ignores this hosts.toml and pulls from the registry itself"),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| problem("", "not UTF-8".into()))?;
        let mut parsed: HostsFile = toml::from_str(text).map_err(|e| problem("", one_line(&e.to_string())))?;
        let order = host_table_order(text);
        if order.len() + 1 > MAX_ENDPOINTS {
            return Err(problem("host", format!("more than {MAX_ENDPOINTS} endpoints")));
        }
        let mut endpoints = Vec::new();
        for name in &order {
            let Some(cfg) = parsed.host.remove(name) else { continue };
            let field = format!("host.{name:?}");
            endpoints.push(self.endpoint(dir, name, cfg).map_err(|(f, r)| problem(&format!("{field}.{f}"), r))?);
        }
        let server = parsed.server.clone().unwrap_or_default();
        endpoints.push(self.endpoint(dir, &server, parsed.root).map_err(|(f, r)| problem(&f, r))?);
        Ok(endpoints)
    }

    /// One endpoint: `server` is a URL (or `host[:port]`, meaning HTTPS), or
    /// empty for the registry itself.
    fn endpoint(&self, dir: &Path, server: &str, cfg: FileHost) -> Result<Endpoint, (String, String)> {
        let mut ep = empty_endpoint();
        if !server.is_empty() {
            let url = if server.starts_with("http") { server.to_string() } else { format!("https://{server}") };
            let u =
                reqwest::Url::parse(&url).map_err(|e| ("server".into(), format!("{server:?} is not a URL: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(("server".into(), format!("{server:?} is not an http(s) URL with a host")));
            }
            ep.scheme = Some(u.scheme().into());
            ep.host = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().into(),
            };
            ep.path = api_path(u.path(), cfg.override_path);
        }
        if let Some(caps) = &cfg.capabilities {
            ep.capabilities = Capabilities { pull: false, resolve: false, push: false };
            for c in caps {
                match c.to_ascii_lowercase().as_str() {
                    "pull" => ep.capabilities.pull = true,
                    "resolve" => ep.capabilities.resolve = true,
                    "push" => ep.capabilities.push = true,
                    _ => return Err(("capabilities".into(), format!("unknown capability {c:?}"))),
                }
            }
        }
        for ca in cfg.ca.map(OneOrMany::into_vec).unwrap_or_default() {
            ep.ca.push(self.file_path(dir, &ca).map_err(|r| ("ca".to_string(), r))?);
        }
        ep.client = self.client_pairs(dir, cfg.client).map_err(|r| ("client".to_string(), r))?;
        ep.skip_verify = cfg.skip_verify;
        for (name, values) in cfg.header.unwrap_or_default() {
            if !valid_header(&name, &values) {
                return Err(("header".into(), format!("header {name:?} is not a valid HTTP header")));
            }
            for v in values.into_vec() {
                ep.headers.push((name.clone(), v));
            }
        }
        if ep.headers.len() > MAX_HEADERS {
            return Err(("header".into(), format!("more than {MAX_HEADERS} header values")));
        }
        Ok(ep)
    }

    fn client_pairs(&self, dir: &Path, client: Option<toml::Value>) -> Result<Vec<(PathBuf, Option<PathBuf>)>, String> {
        use toml::Value;
        let bad = || "expected a file, a list of files, or a list of [certificate, key] pairs".to_string();
        let one = |v: &Value| -> Result<(PathBuf, Option<PathBuf>), String> {
            match v {
                Value::String(s) => Ok((self.file_path(dir, s)?, None)),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(c), Value::String(k)] => {
                        Ok((self.file_path(dir, c)?, Some(self.file_path(dir, k)?)))
                    }
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            }
        };
        match client {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![(self.file_path(dir, &s)?, None)]),
            Some(Value::Array(items)) => items.iter().take(MAX_ENDPOINTS).map(one).collect(),
            Some(_) => Err(bad()),
        }
    }

    /// A path from a hosts file as the agent sees it: relative to the
    /// directory, absolute ones under the host root; never outside that root.
    fn file_path(&self, dir: &Path, p: &str) -> Result<PathBuf, String> {
        if p.is_empty() || p.contains('\0') {
            return Err("an empty path".into());
        }
        let given = Path::new(p);
        let joined = match (&self.host_root, given.is_absolute()) {
            (_, false) => dir.join(given),
            (Some(root), true) => root.join(given.strip_prefix("/").unwrap_or(given)),
            (None, true) => given.to_path_buf(),
        };
        let normal = normalise(&joined).ok_or_else(|| format!("{p:?} climbs above the file system root"))?;
        if let Some(root) = &self.host_root
            && !normal.starts_with(normalise(root).unwrap_or_else(|| root.clone()))
        {
            return Err(format!("{p:?} points outside the node's file system ({})", root.display()));
        }
        Ok(normal)
    }

    /// Docker's certificate layout in a directory without hosts.toml.
    fn cert_files(&self, dir: &Path) -> Endpoint {
        let mut ep = empty_endpoint();
        let Ok(entries) = std::fs::read_dir(dir) else { return ep };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names.into_iter().take(64) {
            if name.ends_with(".crt") {
                ep.ca.push(dir.join(&name));
            } else if let Some(stem) = name.strip_suffix(".cert") {
                let key = dir.join(format!("{stem}.key"));
                ep.client.push((dir.join(&name), key.is_file().then_some(key)));
            }
        }
        ep
    }
}

fn empty_endpoint() -> Endpoint {
    Endpoint {
        scheme: None,
        host: String::new(),
        path: String::new(),
        capabilities: Capabilities::ALL,
        ca: Vec::new(),
        client: Vec::new(),
        skip_verify: None,
        headers: Vec::new(),
        upstream: false,
    }
}

/// containerd's API root: the cleaned path, `/v2` appended unless it ends so
/// or `override_path` is set.
fn api_path(path: &str, override_path: bool) -> String {
    let cleaned: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let mut p = if cleaned.is_empty() { String::new() } else { format!("/{}", cleaned.join("/")) };
    if !override_path && !p.ends_with("/v2") {
        p.push_str("/v2");
    }
    p
}

/// Lexically resolved `.` and `..`; `None` when `..` climbs above `/`.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Reads a regular file of at most `limit` bytes (a node file the agent's
/// config names); the error says which file and why.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    match read_bounded(path, limit) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(format!("{} does not exist", path.display())),
        Err(r) => Err(format!("{} {r}", path.display())),
    }
}

/// Reads a regular file of at most `limit` bytes; `Ok(None)` when it does not exist.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    let meta = f.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > limit {
        return Err(format!("is larger than {limit} bytes"));
    }
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(|e| format!("cannot be read: {e}"))?;
    if buf.len() as u64 > limit {
        return Err(format!("is larger than {limit} bytes"));
    }
    Ok(Some(buf))
}

/// Registry names come from image references: only plain host[:port] names
/// are looked up as directories.
fn host_name_is_safe(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && !host.starts_with('.')
        && !host.contains("..")
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

fn valid_header(name: &str, values: &OneOrMany) -> bool {
    let vals: Vec<&String> = match values {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v.iter().collect(),
    };
    reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && vals.iter().all(|v| reqwest::header::HeaderValue::from_str(v).is_ok())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// The `[host."…"]` table names in file order, as containerd orders them
/// (sub-tables such as `[host."…".header]` do not add an entry).
fn host_table_order(text: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        if !l.starts_with('[') || l.starts_with("[[") {
            continue;
        }
        let Some(parts) = header_keys(&l[1..]) else { continue };
        if parts.len() >= 2 && parts[0] == "host" && order.last() != Some(&parts[1]) && !order.contains(&parts[1]) {
            order.push(parts[1].clone());
        }
    }
    order
}

/// The dotted key parts of a table header (after its `[`), up to `]`.
fn header_keys(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let part = match chars.peek()? {
            '"' => {
                chars.next();
                let mut p = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => p.push('\n'),
                            't' => p.push('\t'),
                            c => p.push(c),
                        },
                        c => p.push(c),
                    }
                }
                p
            }
            '\'' => {
                chars.next();
                let mut p = String::new();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => p.push(c),
                    }
                }
                p
            }
            _ => {
                let mut p = String::new();
                while chars.peek().is_some_and(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_') {
                    p.push(chars.next()?);
                }
                if p.is_empty() {
                    return None;
                }
                p
            }
        };
        parts.push(part);
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.next()? {
            '.' => continue,
            ']' => return Some(parts),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn endpoints_in_file_order_then_server() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "r.example:5000",
            r#"server = "https://upstream.example"
[host."http://b.mirror:5000"]
  capabilities = ["pull"]
  [host."http://b.mirror:5000".header]
    x-a = ["1", "2"]
[host.'https://a.mirror/sub']
  ca = "ca.pem"
  override_path = true
"#,
        );
        let dirs = HostsDirs::new(vec![t.path().into()], None);
        let r = dirs.resolve("r.example:5000");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let shown: Vec<String> = r.endpoints.iter().map(Endpoint::display).collect();
        assert_eq!(shown, ["http://b.mirror:5000/v2", "https://a.mirror/sub", "https://upstream.example/v2"]);
        assert!(!r.endpoints[0].capabilities.resolve && r.endpoints[0].capabilities.pull);
        assert_eq!(r.endpoints[0].headers.len(), 2);
        assert_eq!(r.endpoints[1].ca, [t.path().join("r.example:5000/ca.pem")]);
        assert!(!r.endpoints[2].upstream);
    }

    #[test]
    fn directory_lookup_order_and_default_upstream() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "_default", "[host.\"https://catch.all\"]\n");
        write(t.path(), "r_5000_", "[host.\"https://port.dir\"]\n");
        let dirs = HostsDirs::new(vec![t.path().into()], None);
        let r = dirs.resolve("r:5000");
        assert_eq!(r.endpoints[0].host, "port.dir");
        assert!(r.endpoints[1].upstream && r.endpoints[1].host == "r:5000" && r.endpoints[1].scheme.is_none());
        let d = dirs.resolve("docker.io");
        assert_eq!(d.endpoints[0].host, "catch.all");
        assert_eq!(d.endpoints[1].display(), "https://registry-1.docker.io/v2");
        let none = HostsDirs::default().resolve("x.example");
        assert_eq!(none.endpoints.len(), 1);
        assert!(none.endpoints[0].upstream);
    }

    #[test]
    fn malformed_files_fall_back_to_the_registry_and_are_reported() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "bad", "[host.\"https://m\"\ncapabilities = 3");
        write(t.path(), "caps", "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n");
        std::fs::create_dir_all(t.path().join("huge")).unwrap();
        std::fs::write(t.path().join("huge/hosts.toml"), vec![b'#'; MAX_HOSTS_FILE_BYTES as usize + 1]).unwrap();
        let dirs = HostsDirs::new(vec![t.path().into()], None);
        for host in ["bad", "caps", "huge"] {
            let r = dirs.resolve(host);
            assert_eq!(r.endpoints.len(), 1, "{host}");
            assert!(r.endpoints[0].upstream, "{host}");
            assert_eq!(r.problems.len(), 1, "{host}: {:?}", r.problems);
        }
        assert_eq!(dirs.check().len(), 3);
        assert!(dirs.resolve("caps").problems[0].field.ends_with("capabilities"));
    }

    #[test]
    fn paths_stay_on_the_node() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("host");
        let certs = root.join("etc/containerd/certs.d");
        write(&certs, "a", "[host.\"https://m\"]\nca = \"/etc/pki/ca.pem\"\n");
        write(&certs, "b", "[host.\"https://m\"]\nca = \"../../../../../../../etc/shadow\"\n");
        write(&certs, "c", "[host.\"https://m\"]\nclient = [[\"/c.pem\", \"/../../k.pem\"]]\n");
        let dirs = HostsDirs::new(vec![certs.clone()], Some(root.clone()));
        assert_eq!(dirs.resolve("a").endpoints[0].ca, [root.join("etc/pki/ca.pem")]);
        for h in ["b", "c"] {
            let r = dirs.resolve(h);
            assert_eq!(r.problems.len(), 1, "{h}");
            assert!(r.problems[0].reason.contains("outside") || r.problems[0].reason.contains("climbs"), "{:?}", r);
        }
    }

    #[test]
    fn hostile_host_names_are_not_directories() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "_default", "[host.\"https://d\"]\n");
        let dirs = HostsDirs::new(vec![t.path().join("sub")], None);
        std::fs::create_dir_all(t.path().join("sub")).unwrap();
        assert!(dirs.resolve("../_default").endpoints[0].upstream);
        assert!(dirs.resolve("a/b").endpoints[0].upstream);
    }

    #[test]
    fn debug_output_names_headers_but_never_shows_their_values() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "r.example",
            "[host.\"https://m.example\".header]\n  authorization = \"Basic c2VjcmV0LXZhbHVl\"\n  x-token = [\"tok-1\", \"tok-2\"]\n",
        );
        let r = HostsDirs::new(vec![t.path().into()], None).resolve("r.example");
        assert_eq!(r.endpoints[0].headers.len(), 3, "{:?}", r.problems);
        let shown = format!("{:?} {r:?}", r.endpoints[0]);
        for secret in ["c2VjcmV0LXZhbHVl", "tok-1", "tok-2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("authorization: <redacted>") && shown.contains("m.example"), "{shown}");
    }

    #[test]
    fn api_paths_and_headers() {
        assert_eq!(api_path("", false), "/v2");
        assert_eq!(api_path("", true), "");
        assert_eq!(api_path("/a/./b/", false), "/a/b/v2");
        assert_eq!(api_path("/x/v2", false), "/x/v2");
        assert_eq!(header_keys(" host . \"a.b\" . header ]"), Some(vec!["host".into(), "a.b".into(), "header".into()]));
        assert_eq!(header_keys("host.'x'] # c"), Some(vec!["host".into(), "x".into()]));
        assert_eq!(header_keys("host.\"x"), None);
    }
}
