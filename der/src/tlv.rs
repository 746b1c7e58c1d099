//! A minimal DER tag-length-value reader.
//!
//! Typed ASN.1 structures come from `x509-cert`, `cms` and `x509-tsp`; this module only finds
//! the exact byte ranges that signatures are computed over (a certificate's `tbsCertificate`, an
//! algorithm identifier, a public key's bits) so they are verified as received, never re-encoded.
//! Only the single-byte tag forms used by X.509 and CMS are accepted.

/// One DER element: its tag byte, its value bytes and the whole element (header and value).
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    /// The identifier octet.
    pub tag: u8,
    /// The contents octets.
    pub value: &'a [u8],
    /// Identifier, length and contents octets together.
    pub full: &'a [u8],
}

/// DER tags used by the verifiers.
pub mod tag {
    /// INTEGER.
    pub const INTEGER: u8 = 0x02;
    /// OCTET STRING.
    pub const OCTET_STRING: u8 = 0x04;
    /// OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// UTF8String.
    pub const UTF8_STRING: u8 = 0x0c;
    /// GeneralizedTime.
    pub const GENERALIZED_TIME: u8 = 0x18;
    /// SEQUENCE.
    pub const SEQUENCE: u8 = 0x30;
    /// `[0]`, constructed, context-specific.
    pub const CONTEXT_0: u8 = 0xa0;
}

/// Reads one element from the start of `input`; returns it and the bytes after it.
/// `None` if the input is not a well-formed definite-length element.
pub fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        // High tag numbers never appear in the structures this crate walks.
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
        let mut len = 0usize;
        for &b in &rest[..count] {
            len = (len << 8) | usize::from(b);
        }
        if len < 0x80 || (count > 1 && rest[0] == 0) {
            // Not the minimal DER encoding of the length.
            return None;
        }
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header_len = input.len() - rest.len();
    let full = &input[..header_len + len];
    Some((Tlv { tag, value: &rest[..len], full }, &rest[len..]))
}

/// Reads an element that must carry `expected` as its tag.
pub fn expect(input: &[u8], expected: u8) -> Option<(Tlv<'_>, &[u8])> {
    let (tlv, rest) = read(input)?;
    (tlv.tag == expected).then_some((tlv, rest))
}

/// Splits the contents of a constructed element into its direct children.
pub fn children(mut value: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (tlv, rest) = read(value)?;
        out.push(tlv);
        value = rest;
    }
    Some(out)
}

/// Encodes a length in DER form.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Bit length of a DER INTEGER's magnitude (for RSA moduli).
pub fn unsigned_integer_bits(value: &[u8]) -> usize {
    let trimmed: &[u8] = {
        let skip = value.iter().take_while(|&&b| b == 0).count();
        &value[skip..]
    };
    match trimmed.first() {
        None => 0,
        Some(&first) => trimmed.len() * 8 - first.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let (tlv, rest) = read(&[0x04, 0x02, 0xaa, 0xbb, 0x05]).unwrap();
        assert_eq!((tlv.tag, tlv.value, rest), (0x04, &[0xaa, 0xbb][..], &[0x05][..]));

        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (tlv, rest) = read(&long).unwrap();
        assert_eq!(tlv.value.len(), 0x80);
        assert_eq!(tlv.full.len(), 0x83);
        assert!(rest.is_empty());
    }

    #[test]
    fn rejects_truncated_and_non_minimal() {
        assert!(read(&[0x04, 0x03, 0x00]).is_none());
        assert!(read(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).is_none(), "0x81 for a length below 128");
        assert!(read(&[0x04, 0x80]).is_none(), "indefinite length");
        assert!(read(&[0x1f, 0x01, 0x00]).is_none(), "high tag number");
    }

    #[test]
    fn integer_bits() {
        assert_eq!(unsigned_integer_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(unsigned_integer_bits(&[0x01, 0xff]), 9);
        assert_eq!(unsigned_integer_bits(&[]), 0);
    }

    #[test]
    fn length_encoding_round_trips() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 70_000] {
            let mut buf = vec![0x04];
            encode_len(len, &mut buf);
            buf.extend(std::iter::repeat_n(0u8, len));
            let (tlv, rest) = read(&buf).unwrap();
            assert_eq!(tlv.value.len(), len);
            assert!(rest.is_empty());
        }
    }
}
