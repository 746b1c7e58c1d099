//! containerd versions, as `containerd --version` prints them and as its
//! `Version` gRPC service answers (`v2.2.7`).

use std::fmt;

/// A containerd release version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

/// The first containerd release whose CRI plugin pulls through the transfer service
/// (and so runs image verifiers on Kubernetes pulls).
pub const MIN_CRI_VERIFIED: Version = Version { major: 2, minor: 1, patch: 0 };

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    /// Reads `v2.2.7`, `2.2.7`, `v2.1.0-rc.1` or the whole `containerd --version` line
    /// (`containerd github.com/containerd/containerd/v2 v2.2.7 7835c8dfefce`): the first
    /// word that looks like a version wins.
    pub fn find_in(text: &str) -> Option<Version> {
        text.split_whitespace().find_map(Version::parse_word)
    }

    fn parse_word(word: &str) -> Option<Version> {
        let w = word.strip_prefix('v').unwrap_or(word);
        let core = w.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().unwrap_or("0").parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Version { major, minor, patch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_containerd_prints() {
        let v = Version::find_in("containerd github.com/containerd/containerd/v2 v2.2.7 7835c8dfefce").unwrap();
        assert_eq!(v, Version { major: 2, minor: 2, patch: 7 });
        assert_eq!(Version::find_in("v2.1.0-rc.1").unwrap(), Version { major: 2, minor: 1, patch: 0 });
        assert_eq!(Version::find_in("containerd containerd.io 1.7.27 05044ec0a9a7").unwrap().major, 1);
        assert!(Version::find_in("containerd github.com/containerd/containerd/v2").is_none());
        assert!(Version::find_in("2.0.0").unwrap() < MIN_CRI_VERIFIED);
        assert!(Version::find_in("2.1.0").unwrap() >= MIN_CRI_VERIFIED);
    }
}
