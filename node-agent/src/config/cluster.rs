//! `[cluster]`: the optional cluster tier (Redis shared by the agents of a
//! cluster). Validated into [`pullgate_cluster::Settings`]; the password
//! comes from `passwordFile` (an absolute path, on a node a mounted Secret),
//! read at load time and never logged, never from the ConfigMap or the URL.
//! `ca` is relative to the config directory and only for `rediss://`.

use super::files::safe_relative;
use super::raw;
use super::{CONFIG_FILE, Issue, issue};
use pullgate_cluster::{Mode, Password, Settings};
use std::path::PathBuf;
use std::time::Duration;

/// Largest password file read.
pub const MAX_PASSWORD_BYTES: u64 = 4096;
/// Most URLs (sentinels or seed nodes).
pub const MAX_URLS: usize = 16;

/// `[cluster]` as validated; `settings.password` and `settings.ca_pem` are
/// filled in by [`resolve`] when the directory is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// What the tier is built from.
    pub settings: Settings,
    ca: Option<String>,
    password_file: Option<PathBuf>,
}

const FIELD: &str = "cluster";

fn at(f: &str) -> String {
    format!("{FIELD}.{f}")
}

/// Validates `[cluster]`; problems go to `issues`, advice to `warnings`.
pub(super) fn parse_cluster(
    raw: Option<raw::Cluster>,
    issues: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) -> Option<ClusterConfig> {
    let raw = raw?;
    let before = issues.len();
    let mut s = Settings::single(&raw.url);
    s.urls = std::iter::once(&raw.url).chain(&raw.nodes).cloned().collect();
    check_urls(&s.urls, issues);
    s.mode = parse_mode(&raw, issues);
    parse_durations(&raw, &mut s, issues);
    if let Some(u) = raw.username {
        if u.is_empty() || u.len() > 128 || !u.bytes().all(|b| b.is_ascii_graphic()) {
            issues.push(issue(&at("username"), "must be 1..=128 printable ASCII characters without spaces".into()));
        }
        s.username = Some(u);
    }
    let password_file = raw.password_file.and_then(|p| match p.starts_with('/') && !p.contains("/../") {
        true => Some(PathBuf::from(p)),
        false => {
            let why =
                format!("{p:?} must be an absolute path (on a node: where the Secret holding the password is mounted)");
            issues.push(issue(&at("passwordFile"), why));
            None
        }
    });
    let tls = s.tls();
    let ca = raw.ca.filter(|ca| match (safe_relative(ca), tls) {
        (Ok(()), true) => true,
        (Ok(()), false) => {
            issues.push(issue(&at("ca"), "a CA is only used with rediss:// URLs; use rediss:// or remove ca".into()));
            false
        }
        (Err(why), _) => {
            issues.push(issue(&at("ca"), why));
            false
        }
    });
    if let Some(p) = raw.key_prefix {
        if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            issues.push(issue(&at("keyPrefix"), format!("{p:?} must be 1..=64 of A-Z a-z 0-9 . _ -")));
        }
        s.key_prefix = p;
    }
    if !tls {
        warnings.push(issue(&at("url"), "redis:// is plain TCP: shared values are checked on every read, but anyone on the path can see which images are verified and drop or alter entries (a miss, never a verdict); prefer rediss://".into()));
    }
    if password_file.is_none() {
        warnings.push(issue(&at("passwordFile"), "no password: anyone who can reach the Redis can read and write the shared entries (a miss, never a verdict)".into()));
    }
    (issues.len() == before).then_some(ClusterConfig { settings: s, ca, password_file })
}

fn check_urls(urls: &[String], issues: &mut Vec<Issue>) {
    if urls.len() > MAX_URLS {
        issues.push(issue(&at("nodes"), format!("at most {} URLs in all", MAX_URLS)));
    }
    let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_string());
    let first = scheme(&urls[0]);
    for (i, u) in urls.iter().enumerate() {
        let field = if i == 0 { at("url") } else { format!("{FIELD}.nodes[{}]", i - 1) };
        let Some((sch, rest)) = u.split_once("://") else {
            issues.push(issue(&field, "must be redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB]".into()));
            continue;
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if !matches!(sch, "redis" | "rediss") {
            issues.push(issue(&field, format!("scheme {sch:?} is not redis or rediss")));
        } else if authority.contains('@') {
            issues.push(issue(&field, "carries credentials; remove them from the URL and put the password in a Secret mounted on the node, named by cluster.passwordFile (and cluster.username for an ACL user)".into()));
        } else if authority.is_empty() || rest.contains(['?', '#']) || u.len() > 512 {
            issues.push(issue(&field, "must be redis[s]://HOST[:PORT][/DB] with no query or fragment".into()));
        } else if scheme(u) != first {
            issues.push(issue(&field, "every URL must use the scheme of cluster.url".into()));
        } else if let Err(e) = pullgate_cluster::check_url(u) {
            issues.push(issue(&field, e.to_string()));
        }
    }
}

fn parse_mode(raw: &raw::Cluster, issues: &mut Vec<Issue>) -> Mode {
    let mode = match raw.mode.as_deref().unwrap_or("single") {
        "single" => Mode::Single,
        "cluster" => Mode::Cluster,
        "sentinel" => match &raw.master_name {
            Some(m) if !m.is_empty() && m.len() <= 128 => Mode::Sentinel { master: m.clone() },
            _ => {
                issues.push(issue(
                    &at("masterName"),
                    "sentinel mode needs the monitored primary's name (1..=128 characters)".into(),
                ));
                Mode::Single
            }
        },
        other => {
            issues.push(issue(&at("mode"), format!("{other:?} is not single, sentinel or cluster")));
            Mode::Single
        }
    };
    if raw.master_name.is_some() && !matches!(mode, Mode::Sentinel { .. }) && raw.mode.as_deref() != Some("sentinel") {
        issues.push(issue(&at("masterName"), "only used with mode = \"sentinel\"".into()));
    }
    if mode == Mode::Single && !raw.nodes.is_empty() {
        issues.push(issue(
            &at("nodes"),
            "single mode uses cluster.url only; list sentinels or seed nodes with mode = \"sentinel\" or \"cluster\""
                .into(),
        ));
    }
    mode
}

/// Bounds of each duration: (field, min, max).
const DURATIONS: [(&str, u64, u64); 6] = [
    ("contentTtl", 60_000, 7 * 24 * 3_600_000),
    ("listTtl", 1_000, 30_000),
    ("leaseTtl", 100, 10_000),
    ("waitBound", 10, 10_000),
    ("timeout", 10, 2_000),
    ("breakerCooldown", 1_000, 300_000),
];

fn parse_durations(raw: &raw::Cluster, s: &mut Settings, issues: &mut Vec<Issue>) {
    let values =
        [&raw.content_ttl, &raw.list_ttl, &raw.lease_ttl, &raw.wait_bound, &raw.timeout, &raw.breaker_cooldown];
    let slots = [
        &mut s.content_ttl,
        &mut s.list_ttl,
        &mut s.lease_ttl,
        &mut s.wait_bound,
        &mut s.timeout,
        &mut s.breaker_cooldown,
    ];
    for (((name, min, max), value), slot) in DURATIONS.iter().zip(values).zip(slots) {
        let Some(v) = value else { continue };
        let (lo, hi) = (Duration::from_millis(*min), Duration::from_millis(*max));
        match humantime::parse_duration(v) {
            Ok(d) if (lo..=hi).contains(&d) => *slot = d,
            Ok(_) => issues.push(issue(
                &at(name),
                format!("{v:?} is outside {}..={}", humantime::format_duration(lo), humantime::format_duration(hi)),
            )),
            Err(e) => issues.push(issue(&at(name), format!("{v:?} is not a duration like \"10s\" or \"250ms\": {e}"))),
        }
    }
    if s.wait_bound > s.lease_ttl {
        issues.push(issue(&at("waitBound"), "must not be longer than cluster.leaseTtl".into()));
    }
}

/// Reads the CA (from the config directory's files) and the password file,
/// then lets the Redis client check the result (TLS material, URLs).
pub(super) fn resolve(c: &mut ClusterConfig, files: &[(String, Vec<u8>)]) -> Result<(), Vec<Issue>> {
    let mut issues = Vec::new();
    if let Some(ca) = &c.ca {
        match files.iter().find(|(n, _)| n == ca) {
            Some((_, pem)) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                c.settings.ca_pem = Some(pem.clone())
            }
            Some(_) => issues.push(Issue {
                file: ca.clone(),
                field: String::new(),
                reason: "not a PEM certificate bundle (cluster.ca)".into(),
            }),
            None => issues.push(issue(&at("ca"), format!("{ca} does not exist in the config directory"))),
        }
    }
    if let Some(path) = &c.password_file {
        match read_password(path) {
            Ok(p) => c.settings.password = Some(p),
            Err(why) => issues.push(issue(&at("passwordFile"), why)),
        }
    }
    if issues.is_empty()
        && let Err(e) = pullgate_cluster::check(&c.settings)
    {
        issues.push(Issue { file: CONFIG_FILE.into(), field: FIELD.into(), reason: e.to_string() });
    }
    if issues.is_empty() { Ok(()) } else { Err(issues) }
}

/// The password in `path` (one trailing newline dropped). Errors never quote the file.
fn read_password(path: &std::path::Path) -> Result<Password, String> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{shown} cannot be read ({e}); mount the Secret holding the Redis password there"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PASSWORD_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown} cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_PASSWORD_BYTES {
        return Err(format!("{shown} is larger than {MAX_PASSWORD_BYTES} bytes; it must hold only the password"));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() || password.chars().any(char::is_control) {
        return Err(format!("{shown} must hold the password on one line (it is empty or has control characters)"));
    }
    Ok(Password::new(password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> (Option<ClusterConfig>, Vec<Issue>, Vec<Issue>) {
        let raw: raw::File = toml::from_str(toml).expect("toml");
        let (mut issues, mut warnings) = (Vec::new(), Vec::new());
        let c = parse_cluster(raw.cluster, &mut issues, &mut warnings);
        (c, issues, warnings)
    }

    fn fields(issues: &[Issue]) -> Vec<&str> {
        issues.iter().map(|i| i.field.as_str()).collect()
    }

    #[test]
    fn defaults_and_durations() {
        let (c, issues, warnings) =
            parse("[cluster]\nurl = \"redis://redis.pullgate:6379/2\"\nlistTtl = \"5s\"\ntimeout = \"100ms\"\n");
        assert!(issues.is_empty(), "{issues:?}");
        let s = c.expect("cluster").settings;
        assert_eq!(s.mode, Mode::Single);
        assert_eq!(s.list_ttl, Duration::from_secs(5));
        assert_eq!(s.timeout, Duration::from_millis(100));
        assert_eq!(s.key_prefix, "pullgate");
        assert_eq!(fields(&warnings), ["cluster.url", "cluster.passwordFile"]);
    }

    #[test]
    fn hostile_values_are_issues() {
        let cases = [
            ("url = \"redis://:hunter2@r:6379\"", "cluster.url"),
            ("url = \"http://r\"", "cluster.url"),
            ("url = \"unix:///run/redis.sock\"", "cluster.url"),
            ("url = \"redis://r?password=x\"", "cluster.url"),
            ("url = \"redis://r\"\nlistTtl = \"5m\"", "cluster.listTtl"),
            ("url = \"redis://r\"\nleaseTtl = \"1s\"\nwaitBound = \"2s\"", "cluster.waitBound"),
            ("url = \"redis://r\"\ntimeout = \"soon\"", "cluster.timeout"),
            ("url = \"redis://r\"\nca = \"ca.pem\"", "cluster.ca"),
            ("url = \"rediss://r\"\nca = \"../ca.pem\"", "cluster.ca"),
            ("url = \"redis://r\"\npasswordFile = \"secret/pw\"", "cluster.passwordFile"),
            ("url = \"redis://r\"\nmode = \"sentinel\"", "cluster.masterName"),
            ("url = \"redis://r\"\nmode = \"ring\"", "cluster.mode"),
            ("url = \"redis://r\"\nnodes = [\"redis://s\"]", "cluster.nodes"),
            ("url = \"redis://r\"\nmode = \"cluster\"\nnodes = [\"rediss://s\"]", "cluster.nodes[0]"),
            ("url = \"redis://r\"\nkeyPrefix = \"a b\"", "cluster.keyPrefix"),
        ];
        for (body, field) in cases {
            let (c, issues, _) = parse(&format!("[cluster]\n{body}\n"));
            assert!(c.is_none(), "{body}");
            assert!(fields(&issues).contains(&field), "{body}: {issues:?}");
            assert!(issues.iter().all(|i| !i.reason.contains("hunter2")), "{issues:?}");
        }
    }

    #[test]
    fn password_files_are_read_bounded_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("pw");
        std::fs::write(&good, "s3cret-value\n").unwrap();
        assert_eq!(read_password(&good).unwrap(), Password::new("s3cret-value".into()));
        let two = dir.path().join("two");
        std::fs::write(&two, "s3cret\nvalue\n").unwrap();
        let e = read_password(&two).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 5000]).unwrap();
        assert!(read_password(&big).unwrap_err().contains("larger"));
        assert!(read_password(&dir.path().join("missing")).unwrap_err().contains("Secret"));
    }

    #[test]
    fn resolve_reads_the_ca_and_reports_junk() {
        let (c, issues, _) = parse("[cluster]\nurl = \"rediss://r:6380\"\nca = \"redis-ca.pem\"\n");
        assert!(issues.is_empty(), "{issues:?}");
        let mut c = c.unwrap();
        let e = resolve(&mut c.clone(), &[("redis-ca.pem".into(), b"junk".to_vec())]).unwrap_err();
        assert_eq!(e[0].file, "redis-ca.pem");
        let e = resolve(&mut c.clone(), &[]).unwrap_err();
        assert_eq!(e[0].field, "cluster.ca");
        let pem = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n".to_vec();
        let e = resolve(&mut c, &[("redis-ca.pem".into(), pem)]).unwrap_err();
        assert_eq!(e[0].field, "cluster", "the Redis client refuses the bundle: {e:?}");
    }
}
