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

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| acc.checked_mul(10)?.checked_add(u32::from(b - b'0')))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Unix seconds of a UTC calendar time; `None` if a field is out of range.
pub(crate) fn from_civil(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
}

/// Parses an RFC 3339 time (`2022-12-31T23:59:59.999Z`, `2021-01-12T11:53:27+00:00`) to Unix
/// seconds, dropping fractional seconds (rounding toward the past).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, min, sec) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let frac = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        rest = &rest[1 + frac..];
    }
    let offset: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (i64::from(digits(&[*h1, *h2])?), i64::from(digits(&[*m1, *m2])?));
            if oh > 23 || om > 59 {
                return None;
            }
            if *sign == b'+' { oh * 3600 + om * 60 } else { -(oh * 3600 + om * 60) }
        }
        _ => return None,
    };
    Some(from_civil(year, month, day, hour, min, sec)? - offset)
}

/// Renders Unix seconds as RFC 3339 UTC (`2023-01-20T20:51:33Z`), for messages.
pub(crate) fn format_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Unix seconds of a [`std::time::SystemTime`] (rounded toward the past).
pub(crate) fn unix_seconds(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX) - 1,
    }
}

/// Minimal DER reading: one element at a time, definite lengths, single-byte tags.
pub(crate) mod der {
    /// One element: tag byte, contents, and the whole encoding.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Tlv<'a> {
        pub tag: u8,
        pub value: &'a [u8],
        pub full: &'a [u8],
    }

    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTF8_STRING: u8 = 0x0c;
    pub(crate) const GENERALIZED_TIME: u8 = 0x18;
    pub(crate) const SEQUENCE: u8 = 0x30;

    /// Reads one element from the start of `input`; returns it and what follows.
    pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let header = input.len() - rest.len();
        Some((Tlv { tag, value: &rest[..len], full: &input[..header + len] }, &rest[len..]))
    }

    /// Reads an element that must have tag `expected`.
    pub(crate) fn expect(input: &[u8], expected: u8) -> Option<(Tlv<'_>, &[u8])> {
        let (tlv, rest) = read(input)?;
        (tlv.tag == expected).then_some((tlv, rest))
    }

    /// The direct children of a constructed element's contents.
    pub(crate) fn children(mut value: &[u8]) -> Option<Vec<Tlv<'_>>> {
        let mut out = Vec::new();
        while !value.is_empty() {
            let (tlv, rest) = read(value)?;
            out.push(tlv);
            value = rest;
        }
        Some(out)
    }
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
