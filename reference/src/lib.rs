//! Image references, digests and image patterns.
//!
//! This crate owns the grammar pullgate applies to every image name it sees:
//! the `-name` and `-digest` containerd passes to the verifier, allowlist
//! entries, and scope patterns in the agent's config. It has no dependencies
//! so the verifier binary can use it without growing.
//!
//! * [`Reference`] parses `[host[:port]/]path[:tag][@digest]`, following the
//!   distribution reference grammar, and normalises Docker Hub short names
//!   (`alpine` → `docker.io/library/alpine:latest`, `index.docker.io` →
//!   `docker.io`) and every registry host to one canonical spelling
//!   (lower case, no `:443`, RFC 5952 IPv6; see the `host` module for the
//!   rules and what is refused).
//! * [`Digest`] accepts the OCI registered algorithms `sha256` (64 hex) and
//!   `sha512` (128 hex), lower-case only.
//! * [`Pattern`] matches references by whole path components. The host is
//!   always literal, `*` matches exactly one path component (or part of one
//!   when mixed with other characters), `**` as the last component matches one
//!   or more components. A pattern can pin a tag or a digest. Because matching
//!   is per component on parsed, validated references, `ghcr.io/acme/*` cannot
//!   match `ghcr.io/acme-evil/x`, `ghcr.io.evil.com/acme/x` or
//!   `ghcr.io/acme/../x` (the last is not a valid reference at all). Hosts
//!   compare in canonical form, so `GHCR.io:443/acme/x` is `ghcr.io/acme/x`,
//!   and the loopback spellings `localhost`, `127.0.0.0/8` and `[::1]` with
//!   the same port are one registry.

use std::fmt;

mod host;

/// Longest accepted repository name (`host/path`), as in the distribution grammar.
pub const MAX_NAME_LEN: usize = 255;
/// Longest accepted input string for a reference or pattern.
pub const MAX_INPUT_LEN: usize = 1024;
/// Longest accepted tag.
pub const MAX_TAG_LEN: usize = 128;

/// The registry Docker Hub short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a reference, digest or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// The input was empty.
    Empty,
    /// The input was longer than [`MAX_INPUT_LEN`].
    TooLong(usize),
    /// `host/path` is longer than [`MAX_NAME_LEN`].
    NameTooLong(usize),
    /// The registry host (or port) is not valid or has no canonical spelling.
    InvalidHost {
        /// The host as written.
        host: String,
        /// What is wrong with it and how to write it instead.
        reason: String,
    },
    /// A repository path component is not valid.
    InvalidPathComponent(String),
    /// The tag is not valid.
    InvalidTag(String),
    /// The digest is not `algorithm:hex`.
    InvalidDigest(String),
    /// The digest algorithm is not one pullgate accepts.
    UnsupportedAlgorithm(String),
    /// A pattern is not valid.
    InvalidPattern(String),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceError::Empty => write!(f, "empty image reference"),
            ReferenceError::TooLong(n) => {
                write!(f, "reference is {n} bytes, longer than the {MAX_INPUT_LEN}-byte limit")
            }
            ReferenceError::NameTooLong(n) => {
                write!(f, "repository name is {n} bytes, longer than the {MAX_NAME_LEN}-byte limit")
            }
            ReferenceError::InvalidHost { host, reason } => write!(f, "invalid registry host {host:?}: {reason}"),
            ReferenceError::InvalidPathComponent(c) => write!(
                f,
                "invalid repository path component {c:?} (lower-case letters, digits and single separators . _ __ - only)"
            ),
            ReferenceError::InvalidTag(t) => write!(
                f,
                "invalid tag {t:?} (letters, digits, _ . - only, at most {MAX_TAG_LEN} characters, not starting with . or -)"
            ),
            ReferenceError::InvalidDigest(d) => {
                write!(f, "invalid digest {d:?}: expected algorithm:hex, e.g. sha256:<64 lower-case hex>")
            }
            ReferenceError::UnsupportedAlgorithm(a) => {
                write!(f, "unsupported digest algorithm {a:?}: only sha256 and sha512 are accepted")
            }
            ReferenceError::InvalidPattern(why) => write!(f, "invalid image pattern: {why}"),
        }
    }
}

impl std::error::Error for ReferenceError {}

/// A content digest such as `sha256:0123…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    hex: String,
}

/// Digest algorithms registered by the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// SHA-256, 64 hex characters.
    Sha256,
    /// SHA-512, 128 hex characters.
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm's name as written in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// Parses `algorithm:hex`; the hex part must be lower case and of the
    /// algorithm's exact length.
    pub fn parse(s: &str) -> Result<Digest, ReferenceError> {
        if s.len() > MAX_INPUT_LEN {
            return Err(ReferenceError::TooLong(s.len()));
        }
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(ReferenceError::InvalidDigest(s.to_string()));
        };
        let algorithm = match alg {
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            other => {
                let well_formed = !other.is_empty()
                    && other.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
                return Err(if well_formed {
                    ReferenceError::UnsupportedAlgorithm(other.to_string())
                } else {
                    ReferenceError::InvalidDigest(s.to_string())
                });
            }
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ReferenceError::InvalidDigest(s.to_string()));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }

    /// The digest algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The lower-case hex encoding.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    host: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference as a container runtime would.
    ///
    /// A reference with neither tag nor digest gets the tag `latest`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let (host, path, tag, digest) = split_reference(s)?;
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(Reference { host, path, tag, digest })
    }

    /// Registry host in canonical form, with its port unless that is `443`
    /// (`docker.io`, `localhost:5000`, `[::1]:5000`). This is the spelling to
    /// connect to; loopback spellings stay distinct here and only match alike.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Repository path inside the registry (`library/alpine`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host/path`, the repository this reference names.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest the reference pins, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

type Parts = (String, String, Option<String>, Option<Digest>);

/// Splits and validates `[host/]path[:tag][@digest]` without filling in a default tag.
fn split_reference(s: &str) -> Result<Parts, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if s.len() > MAX_INPUT_LEN {
        return Err(ReferenceError::TooLong(s.len()));
    }
    let (name, tag, digest) = split_tag_digest(s)?;
    let (host, path) = split_name(name)?;
    Ok((host, path, tag, digest))
}

/// Splits `name[:tag][@digest]`, validating tag and digest. A tag is the
/// text after the last ':' that follows the last '/' (a port is not a tag).
fn split_tag_digest(s: &str) -> Result<(&str, Option<String>, Option<Digest>), ReferenceError> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(Digest::parse(d)?)),
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            let tag = &rest[at + 1..];
            if !valid_tag(tag) {
                return Err(ReferenceError::InvalidTag(tag.to_string()));
            }
            Ok((&rest[..at], Some(tag.to_string()), digest))
        }
        None => Ok((rest, None, digest)),
    }
}

/// Splits `[host/]path` into a normalised host and path, validating both.
fn split_name(name: &str) -> Result<(String, String), ReferenceError> {
    if name.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (host, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (host::normalise(first)?, rest.to_string()),
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if path.is_empty() {
        return Err(ReferenceError::InvalidPathComponent(String::new()));
    }
    for component in path.split('/') {
        if !valid_path_component(component) {
            return Err(ReferenceError::InvalidPathComponent(component.to_string()));
        }
    }
    let path = if host == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
    let full = host.len() + 1 + path.len();
    if full > MAX_NAME_LEN {
        return Err(ReferenceError::NameTooLong(full));
    }
    Ok((host, path))
}

/// The distribution rule: the first component is a host when it contains `.`
/// or `:`, is `localhost`, or has upper-case letters (paths cannot).
fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|c| *c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// One repository path component of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches this exact component.
    Literal(String),
    /// `*` mixed with literal text inside one component (`app-*`).
    Glob(String),
    /// `*`: exactly one component.
    One,
    /// `**`: one or more components (last position only).
    Many,
}

/// An image pattern used by allowlists and scopes.
///
/// Syntax: `host/path[:tag|@digest]` where path components may be `*` (one
/// component), `**` (one or more, last component only) or contain `*` as a
/// wildcard within the component. The host is always literal, and
/// normalised exactly as a reference's host is. Docker Hub
/// short names normalise as in [`Reference`] (`alpine` means
/// `docker.io/library/alpine`). Without tag or digest a pattern matches every
/// tag and digest of the repositories it names. A pattern with a tag but no
/// digest matches only references without a digest: `name:tag@digest` is
/// pulled by digest, and the tag written before it proves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    host: String,
    segments: Vec<Segment>,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Pattern {
    /// Parses a pattern, rejecting wildcards in the host and anywhere `**` is not last.
    pub fn parse(s: &str) -> Result<Pattern, ReferenceError> {
        let invalid = |why: String| ReferenceError::InvalidPattern(format!("{s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("empty pattern".into()));
        }
        if s.len() > MAX_INPUT_LEN {
            return Err(ReferenceError::TooLong(s.len()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters".into()));
        }
        let (name, tag, digest) = split_tag_digest(s)?;
        let (first, tail) = match name.split_once('/') {
            Some((f, t)) => (f, Some(t)),
            None => (name, None),
        };
        if first.contains('*') && (looks_like_host(first) || tail.is_some()) {
            return Err(invalid("the registry host cannot contain wildcards; name it exactly".into()));
        }
        let (host, path) = match tail {
            Some(t) if looks_like_host(first) => (host::normalise(first)?, t.to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let raw: Vec<&str> = path.split('/').collect();
        // `docker.io/alpine` and `docker.io/*` name official images
        // (`library/…`); `docker.io/**` means every Docker Hub repository.
        let raw = if host == DOCKER_HUB && raw.len() == 1 && raw[0] != "**" { vec!["library", raw[0]] } else { raw };
        let mut segments = Vec::with_capacity(raw.len());
        for (i, c) in raw.iter().enumerate() {
            let seg = match *c {
                "**" if i + 1 == raw.len() => Segment::Many,
                "**" => return Err(invalid("`**` is only allowed as the last path component".into())),
                "*" => Segment::One,
                c if c.contains("**") => {
                    return Err(invalid(format!("`**` must be a whole path component, found {c:?}")));
                }
                c if c.contains('*') => {
                    if !c.split('*').filter(|p| !p.is_empty()).all(valid_glob_piece) {
                        return Err(ReferenceError::InvalidPathComponent(c.to_string()));
                    }
                    Segment::Glob(c.to_string())
                }
                c => {
                    if !valid_path_component(c) {
                        return Err(ReferenceError::InvalidPathComponent(c.to_string()));
                    }
                    Segment::Literal(c.to_string())
                }
            };
            segments.push(seg);
        }
        if (tag.is_some() || digest.is_some()) && segments.iter().any(|s| !matches!(s, Segment::Literal(_))) {
            return Err(invalid("a pattern with wildcards cannot also pin a tag or digest".into()));
        }
        Ok(Pattern { source: s.to_string(), host, segments, tag, digest })
    }

    /// The text the pattern was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern pins a digest: the only kind of entry that does
    /// not trust whoever can push to the repository.
    pub fn is_digest_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// True when the pattern has wildcards.
    pub fn has_wildcards(&self) -> bool {
        self.segments.iter().any(|s| !matches!(s, Segment::Literal(_)))
    }

    /// Does `reference`, resolved by the runtime to `digest`, match?
    ///
    /// `digest` is the digest actually being pulled; a digest-pinned pattern
    /// compares against it, not against whatever the reference text says.
    pub fn matches(&self, reference: &Reference, digest: &Digest) -> bool {
        if host::match_key(&reference.host) != host::match_key(&self.host) {
            return false;
        }
        if let Some(t) = &self.tag {
            // `name:tag@digest` is pulled by digest: the tag in it proves
            // nothing, so a tag-only pattern must not vouch for it.
            if reference.tag.as_deref() != Some(t.as_str()) || (self.digest.is_none() && reference.digest.is_some()) {
                return false;
            }
        }
        if let Some(d) = &self.digest
            && d != digest
        {
            return false;
        }
        let comps: Vec<&str> = reference.path.split('/').collect();
        match_segments(&self.segments, &comps)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A glob piece is the literal text between `*`s; it must only use characters
/// a path component can hold.
fn valid_glob_piece(p: &str) -> bool {
    p.bytes().all(|b| is_alnum_lower(b) || b"._-".contains(&b))
}

fn match_segments(segs: &[Segment], comps: &[&str]) -> bool {
    match (segs.first(), comps.first()) {
        (None, None) => true,
        (Some(Segment::Many), _) => !comps.is_empty(),
        (Some(_), None) | (None, Some(_)) => false,
        (Some(seg), Some(c)) => {
            let ok = match seg {
                Segment::Literal(l) => l == c,
                Segment::One => true,
                Segment::Glob(g) => glob_match(g.as_bytes(), c.as_bytes()),
                Segment::Many => unreachable!("handled above"),
            };
            ok && match_segments(&segs[1..], &comps[1..])
        }
    }
}

/// Matches `*` (any run of characters) within a single component.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && pat[p] != b'*' && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn d() -> Digest {
        Digest::parse(D).unwrap()
    }

    #[test]
    fn normalises_docker_hub() {
        assert_eq!(r("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r("library/alpine:3.20").to_string(), "docker.io/library/alpine:3.20");
        assert_eq!(r("index.docker.io/bitnami/redis").to_string(), "docker.io/bitnami/redis:latest");
        assert_eq!(r("docker.io/alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r("acme/app").repository(), "docker.io/acme/app");
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let x = r(&format!("localhost:5000/team/app:v1@{D}"));
        assert_eq!(x.host(), "localhost:5000");
        assert_eq!(x.path(), "team/app");
        assert_eq!(x.tag(), Some("v1"));
        assert_eq!(x.digest(), Some(&d()));
        let y = r(&format!("127.0.0.1:5000/app@{D}"));
        assert_eq!(y.tag(), None);
        assert_eq!(r("GHCR.io/acme/app").host(), "ghcr.io");
        assert_eq!(r("[::1]:5000/app").host(), "[::1]:5000");
        assert_eq!(r("localhost/app").host(), "localhost");
        assert_eq!(r("[0:0::1]:5000/app").host(), "[::1]:5000");
        assert_eq!(r("registry-1.docker.io:443/alpine").to_string(), "docker.io/library/alpine:latest");
    }

    #[test]
    fn host_errors_name_the_host_and_the_fix() {
        let e = Reference::parse("localhost:05101/app").unwrap_err().to_string();
        assert!(e.contains("\"localhost:05101\"") && e.contains("write 5101"), "{e}");
        let e = Pattern::parse("[::ffff:127.0.0.1]:5000/app").unwrap_err().to_string();
        assert!(e.contains("write the IPv4 address itself"), "{e}");
    }

    #[test]
    fn loopback_spellings_are_one_registry() {
        let p = Pattern::parse("localhost:5000/**").unwrap();
        for same in ["127.0.0.1:5000/x", "[::1]:5000/x", "[0:0::1]:5000/x", "LOCALHOST:5000/x", "127.0.0.2:5000/x"] {
            assert!(p.matches(&r(same), &d()), "{same}");
        }
        for other in ["localhost:5001/x", "localhost/x", "localhost.evil:5000/x", "10.0.0.1:5000/x"] {
            assert!(!p.matches(&r(other), &d()), "{other}");
        }
        let v4 = Pattern::parse("127.0.0.1:5000/x").unwrap();
        assert!(v4.matches(&r("localhost:5000/x"), &d()));
        assert_eq!(r("127.0.0.1:5000/x").host(), "127.0.0.1:5000", "the connect spelling is kept");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "ghcr.io/acme/../x",
            "ghcr.io/acme/./x",
            "ghcr.io//x",
            "ghcr.io/Acme/x",
            "ghcr.io/acme/x:",
            "ghcr.io/acme/x:-bad",
            "ghcr.io/acme/x@sha256:abc",
            "ghcr.io/acme/x@md5:d41d8cd98f00b204e9800998ecf8427e",
            "ghcr.io:99999/x",
            "ghcr.io:080/x",
            "ghcr.io:80/x",
            "[::ffff:127.0.0.1]/x",
            "127.0.0.01/x",
            "Myreg/x",
            "-bad.io/x",
            "ghcr.io/acme/x y",
            "ghcr.io/acme/x\n",
            "ghcr.io/a..b",
            "ghcr.io/a___b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Reference::parse(&"a/".repeat(200)).is_err());
    }

    #[test]
    fn digest_grammar() {
        assert!(Digest::parse(D).is_ok());
        assert!(Digest::parse(&D.to_uppercase()).is_err());
        assert!(Digest::parse("sha256").is_err());
        assert!(Digest::parse(&format!("{D}0")).is_err());
        assert_eq!(
            Digest::parse("blake3:0000000000000000000000000000000000000000000000000000000000000000"),
            Err(ReferenceError::UnsupportedAlgorithm("blake3".into()))
        );
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(Digest::parse(&sha512).is_ok());
    }

    #[test]
    fn pattern_cannot_be_tricked() {
        let p = Pattern::parse("ghcr.io/acme/*").unwrap();
        assert!(p.matches(&r("ghcr.io/acme/x"), &d()));
        assert!(p.matches(&r("ghcr.io/acme/x:v1"), &d()));
        assert!(!p.matches(&r("ghcr.io/acme-evil/x"), &d()));
        assert!(!p.matches(&r("ghcr.io.evil.com/acme/x"), &d()));
        assert!(!p.matches(&r("evil.com/ghcr.io/acme/x"), &d()));
        assert!(!p.matches(&r("ghcr.io/acme/x/y"), &d()));
        assert!(!p.matches(&r("ghcr.io/acme"), &d()));
        assert!(p.matches(&r("GHCR.io:443/acme/x"), &d()), ":443 is the default port, the same registry");
        assert!(!p.matches(&r("ghcr.io:8443/acme/x"), &d()));
        assert!(!p.matches(&r("ghcr.io.evil.com:443/acme/x"), &d()));
        assert!(Reference::parse("ghcr.io/acme/../x").is_err());
    }

    #[test]
    fn pattern_double_star_and_globs() {
        let p = Pattern::parse("ghcr.io/acme/**").unwrap();
        assert!(p.matches(&r("ghcr.io/acme/x"), &d()));
        assert!(p.matches(&r("ghcr.io/acme/x/y/z"), &d()));
        assert!(!p.matches(&r("ghcr.io/acme"), &d()));
        assert!(!p.matches(&r("ghcr.io/acmex/y"), &d()));
        let g = Pattern::parse("ghcr.io/acme/app-*").unwrap();
        assert!(g.matches(&r("ghcr.io/acme/app-web"), &d()));
        assert!(!g.matches(&r("ghcr.io/acme/web"), &d()));
        assert!(!g.matches(&r("ghcr.io/acme/app-web/x"), &d()));
        assert!(Pattern::parse("*.io/acme/x").is_err());
        assert!(Pattern::parse("ghcr.*/acme/x").is_err());
        assert!(Pattern::parse("ghcr.io/**/x").is_err());
        assert!(Pattern::parse("ghcr.io/acme/**:v1").is_err());
        assert!(Pattern::parse("ghcr.io/ac**me").is_err());
    }

    #[test]
    fn pattern_tags_and_digests() {
        let t = Pattern::parse("registry.k8s.io/pause:3.10").unwrap();
        assert!(t.matches(&r("registry.k8s.io/pause:3.10"), &d()));
        assert!(
            !t.matches(&r(&format!("registry.k8s.io/pause:3.10@{D}")), &d()),
            "a tag pattern does not vouch for an arbitrary digest written after the tag"
        );
        assert!(!t.matches(&r("registry.k8s.io/pause:3.9"), &d()));
        assert!(!t.matches(&r(&format!("registry.k8s.io/pause@{D}")), &d()));
        assert!(!t.is_digest_pinned());
        let pinned = Pattern::parse(&format!("ghcr.io/acme/agent@{D}")).unwrap();
        assert!(pinned.is_digest_pinned());
        assert!(pinned.matches(&r("ghcr.io/acme/agent:v1"), &d()));
        let other = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert!(!pinned.matches(&r("ghcr.io/acme/agent:v1"), &other));
        let all_hub = Pattern::parse("docker.io/**").unwrap();
        assert!(all_hub.matches(&r("bitnami/redis"), &d()));
        assert!(all_hub.matches(&r("alpine"), &d()));
        assert!(!all_hub.matches(&r("quay.io/bitnami/redis"), &d()));
        let official = Pattern::parse("docker.io/*").unwrap();
        assert!(official.matches(&r("alpine"), &d()));
        assert!(!official.matches(&r("bitnami/redis"), &d()));
        let hub = Pattern::parse("alpine").unwrap();
        assert!(hub.matches(&r("docker.io/library/alpine:3"), &d()));
        assert!(!hub.matches(&r("docker.io/evil/alpine"), &d()));
    }
}
