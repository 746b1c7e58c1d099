//! Keyless identity rules: a [`Matcher`] (exact string or anchored regular expression) for
//! the certificate's OIDC issuer and one for its subject alternative name, combined in an
//! [`Identity`].
//!
//! Regular expressions are always anchored at both ends (`^(?:…)$`), so `.*@acme\.com` cannot
//! match `x@acme.com.evil.io`, whatever the pattern's author forgot.

use std::fmt;

use thiserror::Error;

/// Longest regular expression source accepted.
pub const MAX_PATTERN_LEN: usize = 4096;
/// Compiled-program size limit handed to the regex engine.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a matcher could not be built.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The pattern is longer than [`MAX_PATTERN_LEN`].
    #[error("identity pattern is {0} bytes, more than the {MAX_PATTERN_LEN}-byte limit")]
    TooLong(usize),
    /// The pattern is not a valid regular expression (Rust `regex` syntax).
    #[error("identity pattern {pattern:?} is not a valid regular expression: {source}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's error.
        #[source]
        source: regex::Error,
    },
}

/// A regular expression compiled with `^(?:…)$` around it.
#[derive(Clone, Debug)]
pub struct AnchoredRegex {
    pattern: String,
    regex: regex::Regex,
}

impl AnchoredRegex {
    /// Compiles `pattern`, anchored at both ends.
    pub fn new(pattern: &str) -> Result<AnchoredRegex, IdentityError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(IdentityError::TooLong(pattern.len()));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|source| IdentityError::Regex { pattern: pattern.to_string(), source })?;
        Ok(AnchoredRegex { pattern: pattern.to_string(), regex })
    }

    /// The pattern as written (without the added anchors).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// True if the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// How one identity field is matched.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Byte-for-byte equality.
    Exact(String),
    /// An anchored regular expression.
    Regex(AnchoredRegex),
}

impl Matcher {
    /// An exact matcher.
    pub fn exact(value: impl Into<String>) -> Matcher {
        Matcher::Exact(value.into())
    }

    /// An anchored regular-expression matcher.
    pub fn regex(pattern: &str) -> Result<Matcher, IdentityError> {
        AnchoredRegex::new(pattern).map(Matcher::Regex)
    }

    /// True if `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s:?}"),
            Matcher::Regex(r) => write!(f, "/{}/", r.pattern()),
        }
    }
}

/// One accepted keyless signer: who issued the OIDC token and whom it was issued to.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Matches the OIDC issuer recorded by Fulcio.
    pub issuer: Matcher,
    /// Matches a subject alternative name of the certificate (email, URI or username).
    pub subject: Matcher,
}

impl Identity {
    /// An identity from two matchers.
    pub fn new(issuer: Matcher, subject: Matcher) -> Identity {
        Identity { issuer, subject }
    }

    /// An identity matching both fields exactly.
    pub fn exact(issuer: impl Into<String>, subject: impl Into<String>) -> Identity {
        Identity { issuer: Matcher::exact(issuer), subject: Matcher::exact(subject) }
    }

    /// True if the issuer matches and one of `subjects` matches.
    pub fn matches(&self, issuer: &str, subjects: &[String]) -> bool {
        self.issuer.matches(issuer) && subjects.iter().any(|s| self.subject.matches(s))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject {} from issuer {}", self.subject, self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_at_both_ends() {
        let m = Matcher::regex(r".*@acme\.com").unwrap();
        assert!(m.matches("x@acme.com"));
        assert!(!m.matches("x@acme.com.evil.io"));
        assert!(!m.matches("evil.io/x@acme.com\n"));
        // An alternation must not escape the anchors either.
        let m = Matcher::regex(r"a@acme\.com|b@acme\.com").unwrap();
        assert!(m.matches("b@acme.com"));
        assert!(!m.matches("b@acme.com.evil.io"));
        assert!(!m.matches("xa@acme.com"));
    }

    #[test]
    fn exact_is_exact() {
        let m = Matcher::exact("https://github.com/login/oauth");
        assert!(m.matches("https://github.com/login/oauth"));
        assert!(!m.matches("https://github.com/login/oauth/"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(matches!(Matcher::regex("("), Err(IdentityError::Regex { .. })));
        assert!(matches!(Matcher::regex(&"a".repeat(MAX_PATTERN_LEN + 1)), Err(IdentityError::TooLong(_))));
    }
}
