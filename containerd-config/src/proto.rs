//! The few protobuf messages pullgate exchanges with containerd, encoded and
//! decoded by hand (strings, bytes, bools, varints and nested messages are all
//! they use). Unknown fields are skipped, as protobuf requires.

/// One decoded field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2: strings, bytes, nested messages, packed arrays.
    Bytes(&'a [u8]),
    /// Wire types 1 and 5 (skipped content).
    Fixed,
}

/// A message that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf message: {0}")]
pub struct ProtoError(pub &'static str);

fn varint(b: &[u8]) -> Result<(u64, &[u8]), ProtoError> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, &b[i + 1..]));
        }
    }
    Err(ProtoError("bad varint"))
}

/// Every field of a message, in order.
pub fn fields(mut msg: &[u8]) -> Result<Vec<(u32, Value<'_>)>, ProtoError> {
    let mut out = Vec::new();
    while !msg.is_empty() {
        let (key, rest) = varint(msg)?;
        let field = u32::try_from(key >> 3).map_err(|_| ProtoError("field number too large"))?;
        msg = match key & 7 {
            0 => {
                let (v, rest) = varint(rest)?;
                out.push((field, Value::Varint(v)));
                rest
            }
            2 => {
                let (n, rest) = varint(rest)?;
                let n = usize::try_from(n).map_err(|_| ProtoError("length too large"))?;
                let v = rest.get(..n).ok_or(ProtoError("field longer than the message"))?;
                out.push((field, Value::Bytes(v)));
                &rest[n..]
            }
            1 => {
                out.push((field, Value::Fixed));
                rest.get(8..).ok_or(ProtoError("truncated fixed64"))?
            }
            5 => {
                out.push((field, Value::Fixed));
                rest.get(4..).ok_or(ProtoError("truncated fixed32"))?
            }
            _ => return Err(ProtoError("unknown wire type")),
        };
    }
    Ok(out)
}

/// The last string value of `field` (empty when absent).
pub fn string(fields: &[(u32, Value<'_>)], field: u32) -> String {
    fields
        .iter()
        .rev()
        .find_map(|(f, v)| match (f, v) {
            (f, Value::Bytes(b)) if *f == field => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Every bytes value of `field` (repeated or nested messages).
pub fn all_bytes<'a>(fields: &[(u32, Value<'a>)], field: u32) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter_map(|(f, v)| match v {
            Value::Bytes(b) if *f == field => Some(*b),
            _ => None,
        })
        .collect()
}

/// The last varint value of `field` (0 when absent).
pub fn uint(fields: &[(u32, Value<'_>)], field: u32) -> u64 {
    fields
        .iter()
        .rev()
        .find_map(|(f, v)| match v {
            Value::Varint(x) if *f == field => Some(*x),
            _ => None,
        })
        .unwrap_or(0)
}

/// Builds a message.
#[derive(Debug, Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    fn put_varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    /// A string or bytes field.
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Writer {
        self.put_varint(u64::from(field) << 3 | 2);
        self.put_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    /// A bool field.
    pub fn bool(mut self, field: u32, b: bool) -> Writer {
        self.put_varint(u64::from(field) << 3);
        self.put_varint(u64::from(b));
        self
    }

    /// The encoded message.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_unknown_fields() {
        let inner = Writer::default().bytes(2, b"sha256:ab").finish();
        let msg = Writer::default().bytes(1, b"name").bytes(3, &inner).bool(9, true).finish();
        let f = fields(&msg).unwrap();
        assert_eq!(string(&f, 1), "name");
        assert_eq!(uint(&f, 9), 1);
        let d = fields(all_bytes(&f, 3)[0]).unwrap();
        assert_eq!(string(&d, 2), "sha256:ab");
        assert_eq!(string(&f, 7), "");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = fields(&bytes);
        }
    }
}
