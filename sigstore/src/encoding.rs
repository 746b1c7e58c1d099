//! Encoding helpers shared by the verifiers: strict base64, lowercase hex, PEM blocks,
//! SHA-2 digests, RFC 3339 times and a minimal DER tag-length-value reader (for the few places
//! where exact bytes matter or the typed decoders are too strict, such as fractional seconds in
//! an RFC 3161 `genTime`).

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// Decodes standard base64 (as protobuf JSON and Rekor write it); URL-safe base64, which
/// protobuf JSON parsers also accept, is tried second. Whitespace around the value is ignored;
/// non-canonical trailing bits are refused.
pub(crate) fn b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

/// Encodes standard base64 with padding.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes hex (either case); `None` on odd length or a non-hex character.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?)).collect()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// One PEM block: its label (`CERTIFICATE`, `PUBLIC KEY`) and decoded contents.
#[derive(Debug, Clone)]
pub(crate) struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Why PEM text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// A BEGIN line without its END line, or an END line without BEGIN.
    Unterminated(String),
    /// The base64 between the lines is invalid.
    Base64(String),
    /// Encapsulated headers (`Proc-Type:`) are not supported.
    Headers(String),
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::Unterminated(l) => write!(f, "PEM block {l:?} is not terminated by its END line"),
            PemError::Base64(l) => write!(f, "PEM block {l:?} holds invalid base64"),
            PemError::Headers(l) => write!(f, "PEM block {l:?} has encapsulated headers, which are not supported"),
        }
    }
}

impl std::error::Error for PemError {}

/// Reads every PEM block of `text`, ignoring text between blocks.
pub(crate) fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            if let Some((open, _)) = current {
                return Err(PemError::Unterminated(open));
            }
            current = Some((label.to_string(), String::new()));
        } else if let Some(label) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
            match current.take() {
                Some((open, body)) if open == label => {
                    let der = STANDARD.decode(body.as_bytes()).map_err(|_| PemError::Base64(open.clone()))?;
                    out.push(PemBlock { label: open, der });
                }
                Some((open, _)) => return Err(PemError::Unterminated(open)),
                None => return Err(PemError::Unterminated(label.to_string())),
            }
        } else if let Some((label, body)) = current.as_mut() {
            if line.contains(':') {
                return Err(PemError::Headers(label.clone()));
            }
            body.push_str(line);
        }
    }
    match current {
        Some((open, _)) => Err(PemError::Unterminated(open)),
        None => Ok(out),
    }
}

// Time and DER helpers are shared with pullgate-notation.
pub(crate) use pullgate_der::time::{
    format_rfc3339 as format_time, from_civil, from_system_time as unix_seconds, parse_rfc3339,
};

/// Minimal DER reading: one element at a time, definite lengths, single-byte tags.
pub(crate) mod der {
    pub(crate) use pullgate_der::tlv::tag::{GENERALIZED_TIME, INTEGER, OCTET_STRING, OID, SEQUENCE, UTF8_STRING};
    pub(crate) use pullgate_der::tlv::{children, expect};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_variants() {
        assert_eq!(parse_rfc3339("2022-12-31T23:59:59.999Z"), Some(1_672_531_199));
        assert_eq!(parse_rfc3339("2021-01-12T11:53:27Z"), Some(1_610_452_407));
        assert_eq!(parse_rfc3339("2021-01-12T12:53:27+01:00"), Some(1_610_452_407));
        assert_eq!(parse_rfc3339("2021-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2021-01-12 11:53:27Z"), None);
        assert_eq!(format_time(1_674_247_893), "2023-01-20T20:51:33Z");
    }

    #[test]
    fn pem_reads_blocks_and_refuses_damage() {
        let text = "junk\n-----BEGIN X-----\nAAEC\n-----END X-----\n-----BEGIN Y-----\nAw==\n-----END Y-----\n";
        let blocks = pem_blocks(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].der, vec![0, 1, 2]);
        assert_eq!(blocks[1].label, "Y");
        assert!(matches!(pem_blocks("-----BEGIN X-----\nAAEC\n"), Err(PemError::Unterminated(_))));
        assert!(matches!(pem_blocks("-----BEGIN X-----\nA!EC\n-----END X-----"), Err(PemError::Base64(_))));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00AB10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
