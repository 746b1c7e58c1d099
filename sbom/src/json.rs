//! Bounded JSON helpers shared by the document parsers.
//!
//! Every array the parsers keep is read through [`capped`], which refuses
//! more than `N` elements while reading, so a document of tiny elements
//! (`[{},{},…]`) cannot expand into millions of structs. Nesting depth is
//! bounded by serde_json's recursion limit (128), and fields the parsers do
//! not name are skipped with `IgnoredAny`, which allocates nothing.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Reads an array of at most `N` elements; `null` or a missing field reads as empty.
pub(crate) fn capped<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Capped<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an array of at most {N} elements or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element()? {
                if out.len() == N {
                    return Err(de::Error::custom(format_args!("array has more than {N} elements")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Capped::<T, N>(PhantomData))
}

/// A number that tools write either as a JSON number or as a string (`"8.2"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score(pub(crate) Option<f64>);

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Score, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
            Nothing(()),
        }
        Ok(Score(
            match Raw::deserialize(d)? {
                Raw::Num(n) => Some(n),
                Raw::Text(s) => s.trim().parse::<f64>().ok(),
                Raw::Nothing(()) => None,
            }
            .filter(|n| n.is_finite() && (0.0..=10.0).contains(n)),
        ))
    }
}

/// `sha256:<64 lower-case hex>` if `s` is one (any case accepted, returned lower case).
pub(crate) fn sha256_digest(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:"))?;
    sha256_hex(hex)
}

/// `sha256:<hex>` from a bare 64-digit hex value.
pub(crate) fn sha256_hex(hex: &str) -> Option<String> {
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}
