//! Version ordering for three ecosystems, and version ranges.
//!
//! * [`Scheme::Semver`]: semantic versioning 2.0 precedence (pre-release
//!   lower than release, identifiers numeric-before-alphanumeric, build
//!   metadata ignored), read leniently: a leading `v`, one to eight numeric
//!   components (missing ones are 0), so `2.8`, `1.2.3.4` compare too.
//! * [`Scheme::Debian`]: dpkg's `[epoch:]upstream[-revision]` ordering,
//!   where `~` sorts before everything, even the end of the string.
//! * [`Scheme::Rpm`]: rpm's `[epoch:]version[-release]` with `rpmvercmp`,
//!   including `~` (before everything) and `^` (after the base version).
//!
//! A [`Range`] is `||`-separated alternatives of `,`-separated comparators
//! (`< 3.0.19-1~deb12u2`, `>= 1.0, < 2.0 || = 3.1`, `*`).

use std::cmp::Ordering;

/// Longest accepted version or range text, in bytes.
pub const MAX_VERSION_LEN: usize = 256;

/// Which ordering applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Semantic versioning (the default for every ecosystem but deb and rpm).
    Semver,
    /// Debian (dpkg) ordering.
    Debian,
    /// RPM ordering.
    Rpm,
}

impl Scheme {
    /// The ordering for a purl type: `deb` → Debian, `rpm` → RPM, else semver.
    pub fn for_purl_type(ty: &str) -> Scheme {
        match ty {
            "deb" => Scheme::Debian,
            "rpm" => Scheme::Rpm,
            _ => Scheme::Semver,
        }
    }

    /// Compares two versions; `None` if either is not a version of this scheme.
    pub fn compare(self, a: &str, b: &str) -> Option<Ordering> {
        match self {
            Scheme::Semver => Some(Semver::parse(a)?.cmp(&Semver::parse(b)?)),
            Scheme::Debian => Some(debian_cmp(a, b)?),
            Scheme::Rpm => Some(rpm_cmp(a, b)?),
        }
    }

    /// Whether `v` is a valid version of this scheme.
    pub fn is_valid(self, v: &str) -> bool {
        self.compare(v, v).is_some()
    }
}

/// Why a version range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Longer than [`MAX_VERSION_LEN`].
    #[error("version range is longer than {MAX_VERSION_LEN} bytes")]
    TooLong,
    /// An alternative or comparator is empty.
    #[error("empty comparator in version range {0:?}")]
    Empty(String),
    /// The version in a comparator is not valid for the scheme.
    #[error("{version:?} is not a valid {scheme:?} version")]
    BadVersion {
        /// The version text.
        version: String,
        /// The scheme that rejected it.
        scheme: Scheme,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A version range (see the module documentation for its syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    text: String,
    any: Vec<Vec<(Op, String)>>,
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Range {
    /// Parses a range; every version in it must be valid under `scheme`.
    pub fn parse(text: &str, scheme: Scheme) -> Result<Range, RangeError> {
        if text.len() > MAX_VERSION_LEN {
            return Err(RangeError::TooLong);
        }
        let mut any = Vec::new();
        for alt in text.split("||") {
            let mut all = Vec::new();
            for c in alt.split(',') {
                let c = c.trim();
                if c == "*" {
                    continue;
                }
                let (op, rest) = [
                    ("<=", Op::Le),
                    (">=", Op::Ge),
                    ("!=", Op::Ne),
                    ("==", Op::Eq),
                    ("<", Op::Lt),
                    (">", Op::Gt),
                    ("=", Op::Eq),
                ]
                .iter()
                .find_map(|(s, op)| c.strip_prefix(s).map(|r| (*op, r)))
                .unwrap_or((Op::Eq, c));
                let v = rest.trim();
                if v.is_empty() {
                    return Err(RangeError::Empty(text.to_owned()));
                }
                if !scheme.is_valid(v) {
                    return Err(RangeError::BadVersion { version: v.to_owned(), scheme });
                }
                all.push((op, v.to_owned()));
            }
            if all.is_empty() && alt.trim() != "*" {
                return Err(RangeError::Empty(text.to_owned()));
            }
            any.push(all);
        }
        Ok(Range { text: text.trim().to_owned(), any })
    }

    /// Whether `version` is in the range; `None` if it cannot be compared under `scheme`.
    pub fn contains(&self, scheme: Scheme, version: &str) -> Option<bool> {
        let mut result = false;
        for all in &self.any {
            let mut inside = true;
            for (op, bound) in all {
                let ord = scheme.compare(version, bound)?;
                inside &= match op {
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                    Op::Eq => ord == Ordering::Equal,
                    Op::Ne => ord != Ordering::Equal,
                };
            }
            result |= inside;
        }
        Some(result)
    }
}

#[derive(Debug)]
struct Semver<'a> {
    nums: [u64; 8],
    pre: Option<Vec<&'a str>>,
}

impl<'a> Semver<'a> {
    fn parse(s: &'a str) -> Option<Semver<'a>> {
        if s.len() > MAX_VERSION_LEN {
            return None;
        }
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let s = s.split_once('+').map_or(s, |(v, build)| if ident_ok(build) { v } else { "" });
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        let mut nums = [0u64; 8];
        for (n, part) in core.split('.').enumerate() {
            if n == 8 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            nums[n] = part.parse().ok()?;
        }
        let pre = match pre {
            Some(p) if ident_ok(p) => Some(p.split('.').collect()),
            Some(_) => return None,
            None => None,
        };
        Some(Semver { nums, pre })
    }
}

fn ident_ok(s: &str) -> bool {
    s.split('.').all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

impl Ord for Semver<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nums.cmp(&other.nums).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => {
                for (x, y) in a.iter().zip(b) {
                    let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                        (Ok(x), Ok(y)) => x.cmp(&y),
                        (Ok(_), Err(_)) => Ordering::Less,
                        (Err(_), Ok(_)) => Ordering::Greater,
                        _ => x.cmp(y),
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
        })
    }
}

impl PartialEq for Semver<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Semver<'_> {}

impl PartialOrd for Semver<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `(epoch, rest)` for `[epoch:]rest`; `None` for a non-numeric or oversize epoch.
fn split_epoch(v: &str) -> Option<(u64, &str)> {
    match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => Some((e.parse().ok()?, rest)),
        Some(_) => None,
        None => Some((0, v)),
    }
}

fn debian_parts(v: &str) -> Option<(u64, &str, &str)> {
    if v.is_empty() || v.len() > MAX_VERSION_LEN || v.bytes().any(|b| b.is_ascii_whitespace() || !b.is_ascii()) {
        return None;
    }
    let (epoch, rest) = split_epoch(v)?;
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (rest, ""),
    };
    let ok = |s: &str, extra: &[u8]| s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if upstream.is_empty()
        || !upstream.as_bytes()[0].is_ascii_digit()
        || !ok(upstream, b".+~-:")
        || !ok(revision, b".+~")
    {
        return None;
    }
    Some((epoch, upstream, revision))
}

/// dpkg's ordering of a character in the non-digit part: `~` first, then the
/// end of the part, then letters, then everything else.
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn dpkg_verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (dpkg_order(a.get(i).copied()), dpkg_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first = Ordering::Equal;
        while a.get(i).is_some_and(u8::is_ascii_digit) && b.get(j).is_some_and(u8::is_ascii_digit) {
            if first == Ordering::Equal {
                first = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if a.get(i).is_some_and(u8::is_ascii_digit) {
            return Ordering::Greater;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            return Ordering::Less;
        }
        if first != Ordering::Equal {
            return first;
        }
    }
    Ordering::Equal
}

fn debian_cmp(a: &str, b: &str) -> Option<Ordering> {
    let (ea, ua, ra) = debian_parts(a)?;
    let (eb, ub, rb) = debian_parts(b)?;
    Some(
        ea.cmp(&eb)
            .then_with(|| dpkg_verrevcmp(ua.as_bytes(), ub.as_bytes()))
            .then_with(|| dpkg_verrevcmp(ra.as_bytes(), rb.as_bytes())),
    )
}

/// rpm's `rpmvercmp` on one version or release string.
fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    let (mut i, mut j) = (0, 0);
    loop {
        while a.get(i).is_some_and(|&c| sep(c)) {
            i += 1;
        }
        while b.get(j).is_some_and(|&c| sep(c)) {
            j += 1;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x == Some(b'~') || y == Some(b'~') {
            if x != Some(b'~') {
                return Ordering::Greater;
            }
            if y != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if x == Some(b'^') || y == Some(b'^') {
            if x.is_none() {
                return Ordering::Less;
            }
            if y.is_none() {
                return Ordering::Greater;
            }
            if x != Some(b'^') {
                return Ordering::Greater;
            }
            if y != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(x), Some(_)) = (x, y) else { break };
        let numeric = x.is_ascii_digit();
        let class = |c: &u8| if numeric { c.is_ascii_digit() } else { c.is_ascii_alphabetic() };
        let (si, sj) = (i, j);
        while a.get(i).is_some_and(class) {
            i += 1;
        }
        while b.get(j).is_some_and(class) {
            j += 1;
        }
        if sj == j {
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let (mut sa, mut sb) = (&a[si..i], &b[sj..j]);
        if numeric {
            while sa.first() == Some(&b'0') {
                sa = &sa[1..];
            }
            while sb.first() == Some(&b'0') {
                sb = &sb[1..];
            }
            match sa.len().cmp(&sb.len()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match sa.cmp(sb) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn rpm_parts(v: &str) -> Option<(u64, &str, Option<&str>)> {
    if v.is_empty() || v.len() > MAX_VERSION_LEN || v.bytes().any(|b| b.is_ascii_whitespace() || !b.is_ascii()) {
        return None;
    }
    let (epoch, rest) = split_epoch(v)?;
    let (version, release) = match rest.rsplit_once('-') {
        Some((v, r)) => (v, Some(r)),
        None => (rest, None),
    };
    (!version.is_empty()).then_some((epoch, version, release))
}

fn rpm_cmp(a: &str, b: &str) -> Option<Ordering> {
    let (ea, va, ra) = rpm_parts(a)?;
    let (eb, vb, rb) = rpm_parts(b)?;
    Some(ea.cmp(&eb).then_with(|| rpmvercmp(va.as_bytes(), vb.as_bytes())).then_with(|| match (ra, rb) {
        (Some(x), Some(y)) => rpmvercmp(x.as_bytes(), y.as_bytes()),
        _ => Ordering::Equal,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    fn ordered(scheme: Scheme, list: &[&str]) {
        for w in list.windows(2) {
            assert_eq!(scheme.compare(w[0], w[1]), Some(Less), "{scheme:?}: {} < {}", w[0], w[1]);
            assert_eq!(scheme.compare(w[1], w[0]), Some(Greater), "{scheme:?}: {} > {}", w[1], w[0]);
        }
    }

    #[test]
    fn semver_precedence_from_the_spec() {
        ordered(
            Scheme::Semver,
            &[
                "1.0.0-alpha",
                "1.0.0-alpha.1",
                "1.0.0-alpha.beta",
                "1.0.0-beta",
                "1.0.0-beta.2",
                "1.0.0-beta.11",
                "1.0.0-rc.1",
                "1.0.0",
                "1.0.1",
                "1.1.0",
                "2.0.0",
                "2.8.0.1",
                "10.0.0",
            ],
        );
        assert_eq!(Scheme::Semver.compare("v2.8", "2.8.0"), Some(Equal));
        assert_eq!(Scheme::Semver.compare("1.0.0+build.1", "1.0.0"), Some(Equal));
        for bad in ["", "1..2", "a.b", "1.2.3-", "1.2.3-a..b", "1.2.3.4.5.6.7.8.9", "99999999999999999999"] {
            assert!(!Scheme::Semver.is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn debian_ordering_epoch_upstream_revision_tilde() {
        ordered(
            Scheme::Debian,
            &[
                "1.0~rc1",
                "1.0",
                "1.0-1",
                "1.0-1+b1",
                "1.0a",
                "1.0+dfsg",
                "1.1",
                "3.0.19-1~deb12u1",
                "3.0.19-1~deb12u2",
                "3.0.19-1",
                "3.0.19-1+deb12u1",
                "1:0.9",
                "2:0.1",
            ],
        );
        assert_eq!(Scheme::Debian.compare("1.2.13.dfsg-1", "1:1.2.13.dfsg-1"), Some(Less));
        assert_eq!(Scheme::Debian.compare("0:1.0-1", "1.0-1"), Some(Equal));
        assert_eq!(Scheme::Debian.compare("1.01", "1.1"), Some(Equal));
        for bad in ["", "a1.0", "1.0 2", "x:1.0", "1.0-"] {
            assert!(!Scheme::Debian.is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn rpm_ordering_tilde_and_caret() {
        // Cases from rpm's own rpmvercmp test list.
        ordered(Scheme::Rpm, &["1.0~rc1", "1.0", "1.0^", "1.0^git1", "1.0a", "1.0.1", "1.1"]);
        ordered(Scheme::Rpm, &["1.0~rc1~git123", "1.0~rc1", "1.0~rc2"]);
        assert_eq!(Scheme::Rpm.compare("1.0^git1", "1.0^git2"), Some(Less));
        assert_eq!(Scheme::Rpm.compare("1.0^git1", "1.01"), Some(Less));
        assert_eq!(Scheme::Rpm.compare("1.0~rc1^git1", "1.0~rc1"), Some(Greater));
        assert_eq!(Scheme::Rpm.compare("1.0a", "1.0.a"), Some(Equal));
        assert_eq!(Scheme::Rpm.compare("2.0.1-1.el8", "2.0.1-2.el8"), Some(Less));
        assert_eq!(Scheme::Rpm.compare("1:1.0-1", "2.0-1"), Some(Greater));
        assert_eq!(Scheme::Rpm.compare("1.0010", "1.9"), Some(Greater));
        assert_eq!(Scheme::Rpm.compare("xyz10", "xyz10.1"), Some(Less));
    }

    #[test]
    fn ranges() {
        let r = Range::parse("< 3.0.19-1~deb12u2", Scheme::Debian).unwrap();
        assert_eq!(r.contains(Scheme::Debian, "3.0.19-1~deb12u1"), Some(true));
        assert_eq!(r.contains(Scheme::Debian, "3.0.19-1~deb12u2"), Some(false));
        let r = Range::parse(">= 1.0, < 2.0 || = 3.1.0", Scheme::Semver).unwrap();
        for (v, inside) in [("1.0.0", true), ("1.9.9", true), ("2.0.0", false), ("3.1", true), ("0.9", false)] {
            assert_eq!(r.contains(Scheme::Semver, v), Some(inside), "{v}");
        }
        assert_eq!(r.contains(Scheme::Semver, "not-a-version"), None);
        assert_eq!(Range::parse("*", Scheme::Semver).unwrap().contains(Scheme::Semver, "9"), Some(true));
        assert!(Range::parse("<", Scheme::Semver).is_err());
        assert!(Range::parse(">= 1.0,", Scheme::Semver).is_err());
        assert!(Range::parse("< banana", Scheme::Semver).is_err());
        assert!(Range::parse(&"1".repeat(300), Scheme::Semver).is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn total_order(scheme: Scheme, a: &str, b: &str, c: &str) -> Result<(), TestCaseError> {
            if let (Some(ab), Some(bc), Some(ac), Some(ba)) =
                (scheme.compare(a, b), scheme.compare(b, c), scheme.compare(a, c), scheme.compare(b, a))
            {
                prop_assert_eq!(ab, ba.reverse());
                prop_assert_eq!(scheme.compare(a, a), Some(Ordering::Equal));
                if ab != Ordering::Greater && bc != Ordering::Greater {
                    prop_assert_ne!(ac, Ordering::Greater, "{} {} {}", a, b, c);
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn debian_is_a_total_order(a in "[0-2]:?[0-9][0-9a-z.~+]{0,5}(-[0-9a-z.~+]{1,4})?",
                                       b in "[0-2]:?[0-9][0-9a-z.~+]{0,5}(-[0-9a-z.~+]{1,4})?",
                                       c in "[0-2]:?[0-9][0-9a-z.~+]{0,5}(-[0-9a-z.~+]{1,4})?") {
                total_order(Scheme::Debian, &a, &b, &c)?;
            }

            #[test]
            fn rpm_is_antisymmetric(a in "[0-9a-z.~^]{1,8}(-[0-9a-z.~^]{1,4})?", b in "[0-9a-z.~^]{1,8}(-[0-9a-z.~^]{1,4})?") {
                if let (Some(x), Some(y)) = (Scheme::Rpm.compare(&a, &b), Scheme::Rpm.compare(&b, &a)) {
                    prop_assert_eq!(x, y.reverse());
                }
            }

            #[test]
            fn semver_is_a_total_order(a in "[0-3](\\.[0-3]){0,2}(-[a-c0-2](\\.[a-c0-2]){0,2})?",
                                       b in "[0-3](\\.[0-3]){0,2}(-[a-c0-2](\\.[a-c0-2]){0,2})?",
                                       c in "[0-3](\\.[0-3]){0,2}(-[a-c0-2](\\.[a-c0-2]){0,2})?") {
                total_order(Scheme::Semver, &a, &b, &c)?;
            }

            #[test]
            fn nothing_panics(a in ".{0,40}", b in ".{0,40}") {
                for s in [Scheme::Semver, Scheme::Debian, Scheme::Rpm] {
                    let _ = s.compare(&a, &b);
                    let _ = Range::parse(&a, s);
                }
            }
        }
    }
}
