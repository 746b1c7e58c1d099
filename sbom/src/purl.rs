//! Package URLs (`pkg:type/namespace/name@version?qualifiers#subpath`).
//!
//! Parsed per the purl specification: the scheme is `pkg` (the `//` form is
//! tolerated), the type is case-insensitive and stored lower case, segments
//! are percent-decoded, and per-type name rules are applied (lower case for
//! `deb`, `apk`, `npm`, `pypi`, `github`, `bitbucket`; `_` → `-` for pypi) so
//! a configured purl matches however a tool spelled it. Input is bounded by
//! [`MAX_PURL_LEN`].

use std::fmt;

/// Longest accepted purl, in bytes.
pub const MAX_PURL_LEN: usize = 2048;

/// Why a purl did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurlError {
    /// Longer than [`MAX_PURL_LEN`].
    #[error("purl is longer than {MAX_PURL_LEN} bytes")]
    TooLong,
    /// Does not start with `pkg:`.
    #[error("purl {0:?} does not start with \"pkg:\"")]
    Scheme(String),
    /// Type or name missing or invalid.
    #[error("purl {purl:?}: {reason}")]
    Invalid {
        /// The purl as written.
        purl: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A parsed package URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purl {
    /// Package type, lower case (`deb`, `pypi`, `oci`, …).
    pub ty: String,
    /// Namespace segments joined by `/`, decoded (`debian`), if any.
    pub namespace: Option<String>,
    /// Package name, decoded and normalised for its type.
    pub name: String,
    /// Version, decoded, if any.
    pub version: Option<String>,
    /// Qualifiers, keys lower case, sorted, decoded.
    pub qualifiers: Vec<(String, String)>,
}

fn decode(s: &str, purl: &str) -> Result<String, PurlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = byte else {
                return Err(PurlError::Invalid { purl: purl.into(), reason: "bad percent-encoding" });
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PurlError::Invalid { purl: purl.into(), reason: "not UTF-8 after decoding" })
}

impl Purl {
    /// Parses a purl.
    pub fn parse(s: &str) -> Result<Purl, PurlError> {
        if s.len() > MAX_PURL_LEN {
            return Err(PurlError::TooLong);
        }
        let invalid = |reason| PurlError::Invalid { purl: s.into(), reason };
        let rest = s.strip_prefix("pkg:").ok_or_else(|| PurlError::Scheme(s.into()))?;
        let rest = rest.trim_start_matches('/');
        let rest = rest.split_once('#').map_or(rest, |(r, _subpath)| r);
        let (rest, qualifiers) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (ty, rest) = rest.split_once('/').ok_or_else(|| invalid("no type"))?;
        if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) {
            return Err(invalid("bad type"));
        }
        let ty = ty.to_ascii_lowercase();
        let rest = rest.trim_end_matches('/');
        let (path, version) = match rest.rsplit_once('@') {
            Some((p, v)) if !p.is_empty() => (p, Some(decode(v, s)?)),
            _ => (rest, None),
        };
        let (namespace, name) = match path.rsplit_once('/') {
            Some((ns, n)) => {
                let segs: Result<Vec<_>, _> = ns.split('/').filter(|x| !x.is_empty()).map(|x| decode(x, s)).collect();
                (Some(segs?.join("/")).filter(|n| !n.is_empty()), decode(n, s)?)
            }
            None => (None, decode(path, s)?),
        };
        if name.is_empty() {
            return Err(invalid("no name"));
        }
        let mut quals = Vec::new();
        for kv in qualifiers.split('&').filter(|kv| !kv.is_empty()).take(64) {
            let (k, v) = kv.split_once('=').ok_or_else(|| invalid("qualifier without '='"))?;
            if !v.is_empty() {
                quals.push((k.to_ascii_lowercase(), decode(v, s)?));
            }
        }
        quals.sort();
        let (namespace, name) = normalise(&ty, namespace, name);
        Ok(Purl { ty, namespace, name, version: version.filter(|v| !v.is_empty()), qualifiers: quals })
    }

    /// Whether `other` names the same package as this one: same type,
    /// namespace and name; and if this purl has a version or qualifiers,
    /// the same version and those qualifiers.
    pub fn matches(&self, other: &Purl) -> bool {
        self.ty == other.ty
            && self.namespace == other.namespace
            && self.name == other.name
            && self.version.as_ref().is_none_or(|v| other.version.as_ref() == Some(v))
            && self.qualifiers.iter().all(|q| other.qualifiers.contains(q))
    }

    /// The qualifier `key`, if present.
    pub fn qualifier(&self, key: &str) -> Option<&str> {
        self.qualifiers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn normalise(ty: &str, namespace: Option<String>, name: String) -> (Option<String>, String) {
    match ty {
        "deb" | "apk" | "npm" | "github" | "bitbucket" | "alpm" => {
            (namespace.map(|n| n.to_ascii_lowercase()), name.to_ascii_lowercase())
        }
        "pypi" => (namespace, name.to_ascii_lowercase().replace('_', "-")),
        _ => (namespace, name),
    }
}

impl fmt::Display for Purl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkg:{}/", self.ty)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}", self.name)?;
        if let Some(v) = &self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_syft_writes() {
        let p = Purl::parse("pkg:deb/debian/libssl3@3.0.19-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl")
            .unwrap();
        assert_eq!((p.ty.as_str(), p.namespace.as_deref(), p.name.as_str()), ("deb", Some("debian"), "libssl3"));
        assert_eq!(p.version.as_deref(), Some("3.0.19-1~deb12u2"));
        assert_eq!(p.qualifier("upstream"), Some("openssl"));
        let b = Purl::parse("pkg:deb/debian/base-files@12.4%2Bdeb12u11?arch=amd64").unwrap();
        assert_eq!(b.version.as_deref(), Some("12.4+deb12u11"));
        let z = Purl::parse("pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64").unwrap();
        assert_eq!(z.version.as_deref(), Some("1:1.2.13.dfsg-1"));
        let o = Purl::parse("pkg:oci/fixture/debian-mini@sha256:155be390?arch=").unwrap();
        assert_eq!(o.version.as_deref(), Some("sha256:155be390"));
        assert!(o.qualifiers.is_empty());
        let n = Purl::parse("pkg:npm/%40angular/core@1.0.0").unwrap();
        assert_eq!(n.namespace.as_deref(), Some("@angular"));
    }

    #[test]
    fn matching_normalises_per_type() {
        let rule = Purl::parse("pkg:PyPI/Foo_Bar").unwrap();
        assert!(rule.matches(&Purl::parse("pkg:pypi/foo-bar@1.0").unwrap()));
        let rule = Purl::parse("pkg:deb/debian/openssl").unwrap();
        assert!(rule.matches(&Purl::parse("pkg:deb/debian/openssl@3.0.19-1~deb12u2?arch=amd64").unwrap()));
        assert!(!rule.matches(&Purl::parse("pkg:deb/debian/libssl3@3.0.19-1~deb12u2").unwrap()));
        assert!(!rule.matches(&Purl::parse("pkg:deb/ubuntu/openssl@3").unwrap()));
        assert!(!rule.matches(&Purl::parse("pkg:rpm/debian/openssl@3").unwrap()));
        let pinned = Purl::parse("pkg:deb/debian/openssl@3.0.19-1~deb12u2?arch=arm64").unwrap();
        assert!(!pinned.matches(&Purl::parse("pkg:deb/debian/openssl@3.0.19-1~deb12u2?arch=amd64").unwrap()));
        assert!(!pinned.matches(&Purl::parse("pkg:deb/debian/openssl@3.0.19-1?arch=arm64").unwrap()));
    }

    #[test]
    fn refuses_junk() {
        for bad in ["", "deb/debian/x", "pkg:", "pkg:deb", "pkg:deb/", "pkg:d b/x", "pkg:deb/x%zz", "pkg:deb/x?a"] {
            assert!(Purl::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Purl::parse(&format!("pkg:deb/{}", "a".repeat(MAX_PURL_LEN))), Err(PurlError::TooLong));
    }
}
