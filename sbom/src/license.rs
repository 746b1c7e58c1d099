//! SPDX licence expressions (SPDX 2.3 annex D): parsing and evaluation.
//!
//! Grammar: `OR` binds loosest, then `AND`, then `WITH`; parentheses group;
//! a licence id may end in `+` ("this version or later"); `LicenseRef-…` and
//! `DocumentRef-…:LicenseRef-…` name licences outside the SPDX list.
//! Operators are case-sensitive (upper case only, as the annex says); licence
//! ids compare case-insensitively. Inputs are bounded: at most
//! [`MAX_EXPRESSION_LEN`] bytes, [`MAX_DEPTH`] nested parentheses and
//! [`MAX_TERMS`] licences.
//!
//! Evaluation asks whether the expression can be satisfied using only
//! licences a predicate accepts: `A OR B` needs one side, `A AND B` both.
//! [`LicenseMatcher`] is how configured licence names match a term.

use std::fmt;

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest accepted parenthesis nesting.
pub const MAX_DEPTH: usize = 32;
/// Most licence terms in one expression.
pub const MAX_TERMS: usize = 256;

/// Why a licence expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// The expression is empty.
    #[error("empty licence expression")]
    Empty,
    /// Longer than [`MAX_EXPRESSION_LEN`].
    #[error("licence expression is {len} bytes, more than the {MAX_EXPRESSION_LEN} accepted")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`] or more than [`MAX_TERMS`] terms.
    #[error("licence expression nests deeper than {MAX_DEPTH} or has more than {MAX_TERMS} terms")]
    TooComplex,
    /// A character outside the SPDX idstring alphabet.
    #[error("character {0:?} is not allowed in a licence expression")]
    BadChar(char),
    /// A token where it cannot stand.
    #[error("unexpected {found} at token {at}; expected {expected}")]
    Unexpected {
        /// What was found.
        found: String,
        /// 0-based token position.
        at: usize,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// A term that is not a licence id (bad `+`, bad `LicenseRef-`).
    #[error("{0:?} is not a licence identifier")]
    BadId(String),
}

/// One licence term: `id[+] [WITH exception]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The licence id as written, without a trailing `+`.
    pub id: String,
    /// `+` was written ("or later").
    pub plus: bool,
    /// The exception after `WITH`, if any.
    pub exception: Option<String>,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.id, if self.plus { "+" } else { "" })?;
        match &self.exception {
            Some(e) => write!(f, " WITH {e}"),
            None => Ok(()),
        }
    }
}

/// A parsed licence expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// A single licence.
    Term(Term),
    /// All of these apply.
    And(Vec<Expression>),
    /// Any one of these may be chosen.
    Or(Vec<Expression>),
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Expression], op: &str| {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                match p {
                    Expression::Term(_) => write!(f, "{p}")?,
                    _ => write!(f, "({p})")?,
                }
            }
            Ok(())
        };
        match self {
            Expression::Term(t) => write!(f, "{t}"),
            Expression::And(p) => join(f, p, "AND"),
            Expression::Or(p) => join(f, p, "OR"),
        }
    }
}

impl Expression {
    /// `None` if the expression can be satisfied with terms `ok` accepts;
    /// otherwise the terms that stood in the way (deduplicated).
    pub fn blocking<'a>(&'a self, ok: &dyn Fn(&Term) -> bool) -> Option<Vec<&'a Term>> {
        match self {
            Expression::Term(t) => (!ok(t)).then(|| vec![t]),
            Expression::And(parts) => {
                let mut bad: Vec<&Term> = Vec::new();
                for p in parts {
                    for t in p.blocking(ok).unwrap_or_default() {
                        if !bad.contains(&t) {
                            bad.push(t);
                        }
                    }
                }
                (!bad.is_empty()).then_some(bad)
            }
            Expression::Or(parts) => {
                let mut bad: Vec<&Term> = Vec::new();
                for p in parts {
                    match p.blocking(ok) {
                        None => return None,
                        Some(ts) => ts.into_iter().for_each(|t| {
                            if !bad.contains(&t) {
                                bad.push(t)
                            }
                        }),
                    }
                }
                Some(bad)
            }
        }
    }

    /// Every term, left to right.
    pub fn terms(&self) -> Vec<&Term> {
        match self {
            Expression::Term(t) => vec![t],
            Expression::And(p) | Expression::Or(p) => p.iter().flat_map(Expression::terms).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Open,
    Close,
    And,
    Or,
    With,
    Word(&'a str),
}

fn tokenize(s: &str) -> Result<Vec<Tok<'_>>, LicenseError> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
        let Some(c) = rest.chars().next() else { return Ok(out) };
        if c == '(' || c == ')' {
            out.push(if c == '(' { Tok::Open } else { Tok::Close });
            rest = &rest[1..];
            continue;
        }
        let end = rest.find([' ', '\t', '\n', '\r', '(', ')']).unwrap_or(rest.len());
        let word = &rest[..end];
        if let Some(bad) = word.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'))) {
            return Err(LicenseError::BadChar(bad));
        }
        out.push(match word {
            "AND" => Tok::And,
            "OR" => Tok::Or,
            "WITH" => Tok::With,
            w => Tok::Word(w),
        });
        rest = &rest[end..];
    }
}

/// Parses an SPDX licence expression.
pub fn parse(s: &str) -> Result<Expression, LicenseError> {
    if s.len() > MAX_EXPRESSION_LEN {
        return Err(LicenseError::TooLong { len: s.len() });
    }
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err(LicenseError::Empty);
    }
    let mut p = Parser { toks, at: 0, terms: 0 };
    let e = p.or(0)?;
    match p.toks.get(p.at) {
        None => Ok(e),
        Some(t) => Err(p.unexpected(t, "end of expression")),
    }
}

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    at: usize,
    terms: usize,
}

impl<'a> Parser<'a> {
    fn unexpected(&self, t: &Tok<'_>, expected: &'static str) -> LicenseError {
        let found = match t {
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::With => "WITH".into(),
            Tok::Word(w) => format!("{w:?}"),
        };
        LicenseError::Unexpected { found, at: self.at, expected }
    }

    fn or(&mut self, depth: usize) -> Result<Expression, LicenseError> {
        let mut parts = vec![self.and(depth)?];
        while self.toks.get(self.at) == Some(&Tok::Or) {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expression::Or(parts) })
    }

    fn and(&mut self, depth: usize) -> Result<Expression, LicenseError> {
        let mut parts = vec![self.with(depth)?];
        while self.toks.get(self.at) == Some(&Tok::And) {
            self.at += 1;
            parts.push(self.with(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expression::And(parts) })
    }

    fn with(&mut self, depth: usize) -> Result<Expression, LicenseError> {
        match self.toks.get(self.at).cloned() {
            None => Err(LicenseError::Unexpected { found: "end".into(), at: self.at, expected: "a licence or '('" }),
            Some(Tok::Open) => {
                if depth >= MAX_DEPTH {
                    return Err(LicenseError::TooComplex);
                }
                self.at += 1;
                let e = self.or(depth + 1)?;
                match self.toks.get(self.at) {
                    Some(Tok::Close) => {
                        self.at += 1;
                        Ok(e)
                    }
                    Some(t) => Err(self.unexpected(t, "')'")),
                    None => Err(LicenseError::Unexpected { found: "end".into(), at: self.at, expected: "')'" }),
                }
            }
            Some(Tok::Word(w)) => {
                self.at += 1;
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return Err(LicenseError::TooComplex);
                }
                let mut term = term(w)?;
                if self.toks.get(self.at) == Some(&Tok::With) {
                    self.at += 1;
                    match self.toks.get(self.at).cloned() {
                        Some(Tok::Word(x)) if is_idstring(x) => term.exception = Some(x.to_owned()),
                        Some(t) => return Err(self.unexpected(&t, "an exception id")),
                        None => {
                            return Err(LicenseError::Unexpected {
                                found: "end".into(),
                                at: self.at,
                                expected: "an exception id",
                            });
                        }
                    }
                    self.at += 1;
                }
                Ok(Expression::Term(term))
            }
            Some(t) => Err(self.unexpected(&t, "a licence or '('")),
        }
    }
}

fn is_idstring(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

fn term(w: &str) -> Result<Term, LicenseError> {
    let (id, plus) = match w.strip_suffix('+') {
        Some(id) => (id, true),
        None => (w, false),
    };
    let valid = match id.split_once(':') {
        Some((doc, lic)) => {
            starts_ci(doc, "DocumentRef-")
                && is_idstring(doc)
                && starts_ci(lic, "LicenseRef-")
                && is_idstring(lic)
                && lic.len() > 11
        }
        None => is_idstring(id) && (!starts_ci(id, "LicenseRef-") || id.len() > 11),
    };
    if !valid || (plus && starts_ci(id, "LicenseRef-")) {
        return Err(LicenseError::BadId(w.to_owned()));
    }
    Ok(Term { id: id.to_owned(), plus, exception: None })
}

fn starts_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A configured licence name (`MIT`, `GPL-2.0-only`, `GPL-2.0-or-later`,
/// `GPL-2.0+`, `GPL-2.0-only WITH Classpath-exception-2.0`, `LicenseRef-GPL`).
///
/// Matching is case-insensitive. `GPL-2.0` and `GPL-2.0-only` are one
/// licence; `+` and `-or-later` are one. A name without `or later` also
/// matches the `or later` form of the same licence (the term may be used
/// under that version), not the other way round. A name without `WITH`
/// matches the licence with any exception; a name with one only that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseMatcher {
    written: String,
    base: String,
    or_later: bool,
    exception: Option<String>,
}

impl LicenseMatcher {
    /// Parses a configured licence name; it must be a single term.
    pub fn parse(s: &str) -> Result<LicenseMatcher, LicenseError> {
        match parse(s)? {
            Expression::Term(t) => {
                let (base, or_later) = canonical(&t);
                Ok(LicenseMatcher {
                    written: t.to_string(),
                    base,
                    or_later,
                    exception: t.exception.map(|e| e.to_ascii_lowercase()),
                })
            }
            _ => Err(LicenseError::Unexpected {
                found: "an expression".into(),
                at: 0,
                expected: "a single licence (no AND/OR)",
            }),
        }
    }

    /// Whether this name matches a term of an expression.
    pub fn matches(&self, t: &Term) -> bool {
        let (base, or_later) = canonical(t);
        base == self.base
            && (or_later == self.or_later || !self.or_later)
            && match &self.exception {
                None => true,
                Some(e) => t.exception.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(e)),
            }
    }
}

impl fmt::Display for LicenseMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Lower-case id without `-only` / `-or-later` / `+`, and whether "or later" was meant.
fn canonical(t: &Term) -> (String, bool) {
    let id = t.id.to_ascii_lowercase();
    if let Some(b) = id.strip_suffix("-or-later") {
        return (b.to_owned(), true);
    }
    let base = id.strip_suffix("-only").map(str::to_owned).unwrap_or(id);
    (base, t.plus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> LicenseMatcher {
        LicenseMatcher::parse(s).unwrap()
    }

    fn passes(expr: &str, allowed: &[&str]) -> bool {
        let e = parse(expr).unwrap();
        let allowed: Vec<_> = allowed.iter().map(|a| m(a)).collect();
        e.blocking(&|t| allowed.iter().any(|a| a.matches(t))).is_none()
    }

    #[test]
    fn or_needs_one_side_and_needs_both() {
        assert!(passes("MIT OR GPL-3.0-only", &["MIT"]));
        assert!(!passes("MIT AND GPL-3.0-only", &["MIT"]));
        assert!(passes("MIT AND GPL-3.0-only", &["MIT", "GPL-3.0-only"]));
        assert!(!passes("GPL-3.0-only", &["MIT"]));
    }

    #[test]
    fn precedence_is_with_then_and_then_or() {
        let e = parse("MIT OR Apache-2.0 AND BSD-3-Clause").unwrap();
        assert_eq!(e.to_string(), "MIT OR (Apache-2.0 AND BSD-3-Clause)");
        assert!(passes("MIT OR Apache-2.0 AND BSD-3-Clause", &["MIT"]));
        assert!(!passes("(MIT OR Apache-2.0) AND BSD-3-Clause", &["MIT"]));
        let w = parse("GPL-2.0-only WITH Classpath-exception-2.0 AND MIT").unwrap();
        assert_eq!(w.terms()[0].exception.as_deref(), Some("Classpath-exception-2.0"));
    }

    #[test]
    fn blocking_names_the_terms_that_decided() {
        let e = parse("Apache-2.0 AND LicenseRef-Artistic AND GPL-1.0-only").unwrap();
        let bad = e.blocking(&|t| t.id != "GPL-1.0-only").unwrap();
        assert_eq!(bad.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["GPL-1.0-only"]);
        let e = parse("MIT OR GPL-3.0-only").unwrap();
        assert_eq!(e.blocking(&|_| false).unwrap().len(), 2);
    }

    #[test]
    fn ids_are_case_insensitive_operators_are_not() {
        assert!(passes("mit", &["MIT"]));
        assert!(passes("licenseref-gpl", &["LicenseRef-GPL"]));
        assert!(parse("MIT or Apache-2.0").is_err());
        assert!(parse("MIT and Apache-2.0").is_err());
    }

    #[test]
    fn plus_only_and_or_later_forms() {
        assert!(passes("GPL-2.0+", &["GPL-2.0-or-later"]));
        assert!(passes("GPL-2.0-or-later", &["GPL-2.0+"]));
        assert!(passes("GPL-2.0", &["GPL-2.0-only"]));
        // A plain name matches the or-later form (usable under that version)...
        assert!(passes("GPL-2.0-or-later", &["GPL-2.0-only"]));
        // ...but an or-later name does not match the version-only form.
        assert!(!passes("GPL-2.0-only", &["GPL-2.0-or-later"]));
        assert!(!passes("GPL-2.0-only", &["GPL-3.0-only"]));
    }

    #[test]
    fn exceptions_match_as_configured() {
        assert!(passes("GPL-2.0-only WITH Classpath-exception-2.0", &["GPL-2.0-only"]));
        assert!(passes("GPL-2.0-only WITH Classpath-exception-2.0", &["GPL-2.0-only WITH classpath-exception-2.0"]));
        assert!(!passes("GPL-2.0-only", &["GPL-2.0-only WITH Classpath-exception-2.0"]));
        assert!(!passes("GPL-2.0-only WITH LLVM-exception", &["GPL-2.0-only WITH Classpath-exception-2.0"]));
    }

    #[test]
    fn license_refs() {
        assert!(parse("DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2").is_ok());
        assert!(parse("LicenseRef-").is_err());
        assert!(parse("LicenseRef-x+").is_err());
        assert!(parse("Foo:LicenseRef-x").is_err());
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in [
            "",
            "  ",
            "MIT AND",
            "AND MIT",
            "(MIT",
            "MIT)",
            "MIT Apache-2.0",
            "MIT WITH",
            "MIT WITH (X)",
            "MIT/Apache",
            "MIT OR OR GPL",
            "()",
            "GPL-2.0++",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(LicenseMatcher::parse("MIT OR Apache-2.0").is_err());
    }

    #[test]
    fn bounds_hold() {
        let deep = format!("{}MIT{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(&deep), Err(LicenseError::TooComplex));
        let ok = format!("{}MIT{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let many = vec!["MIT"; MAX_TERMS + 1].join(" OR ");
        assert_eq!(parse(&many), Err(LicenseError::TooComplex));
        let long = "A".repeat(MAX_EXPRESSION_LEN + 1);
        assert!(matches!(parse(&long), Err(LicenseError::TooLong { .. })));
    }

    #[test]
    fn display_round_trips() {
        for s in ["MIT", "MIT OR (Apache-2.0 AND BSD-3-Clause)", "GPL-2.0+ WITH Bison-exception-2.2 OR MIT"] {
            let e = parse(s).unwrap();
            assert_eq!(parse(&e.to_string()).unwrap(), e);
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn expr() -> impl Strategy<Value = String> {
            let leaf = prop::sample::select(vec!["MIT", "Apache-2.0", "GPL-2.0-only", "LicenseRef-X", "BSD-3-Clause"])
                .prop_map(str::to_owned);
            leaf.prop_recursive(4, 32, 3, |inner| {
                (inner.clone(), prop::sample::select(vec!["AND", "OR"]), inner)
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})"))
            })
        }

        proptest! {
            #[test]
            fn never_panics(s in ".{0,200}") {
                let _ = parse(&s);
            }

            #[test]
            fn generated_expressions_parse_and_round_trip(s in expr()) {
                let e = parse(&s).unwrap();
                prop_assert_eq!(parse(&e.to_string()).unwrap(), e);
            }

            // Allowing every licence satisfies anything; allowing none satisfies nothing.
            #[test]
            fn all_or_nothing(s in expr()) {
                let e = parse(&s).unwrap();
                prop_assert!(e.blocking(&|_| true).is_none());
                prop_assert!(e.blocking(&|_| false).is_some());
            }
        }
    }
}
