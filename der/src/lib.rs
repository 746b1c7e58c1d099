//! pullgate-der: the small byte-level helpers both signature verifiers need.
//!
//! * [`tlv`] — a minimal DER tag-length-value reader, for the exact byte
//!   ranges signatures are computed over;
//! * [`time`] — whole Unix seconds: RFC 3339 parsing and rendering, the
//!   RFC 1123 rendering Notation uses in messages, calendar conversions.
//!
//! No dependencies; pure functions.

pub mod time;
pub mod tlv;
