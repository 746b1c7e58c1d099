//! Bounded answers: whatever text the agent puts in a [`Response`] (reasons
//! built from registry content, config errors), the line it sends is one
//! line of at most [`MAX_RESPONSE_BYTES`].
//!
//! Every free-text field is flattened to one line (control characters and
//! Unicode line or paragraph separators become spaces) and cut at a
//! character boundary with a marker saying so. Because a flattened field
//! escapes to at most twice its length in JSON (`"` and `\` are the only
//! characters serde_json still escapes) and every field and the number of
//! counters are capped, the encoded line is bounded by construction;
//! [`Response::encode_line`] still checks, and falls back to an answer
//! with no free text that keeps the verdict.

use crate::{DecisionResponse, MAX_RESPONSE_BYTES, Response, StatusResponse};
use std::collections::BTreeMap;

/// Longest reason or error message an answer carries, in bytes, marker included.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest short field (report id, version, generation, mode, counter name).
pub const MAX_SHORT_BYTES: usize = 128;
/// Most counters a status answer carries.
pub const MAX_COUNTERS: usize = 64;
/// Appended to a field that was cut.
pub const TRUNCATED: &str = "… (truncated)";

/// `s` on one line: control characters (newlines, tabs, NUL, escape, DEL,
/// C1) and the Unicode line and paragraph separators become spaces.
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { ' ' } else { c }).collect()
}

/// `s` cut to at most `max` bytes at a character boundary; when cut, the
/// result ends with `marker` (itself cut if `max` is smaller than it).
pub fn truncate(s: &str, max: usize, marker: &str) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let marker = floor(marker, max);
    let keep = floor(s, max - marker.len());
    format!("{keep}{marker}")
}

/// The longest prefix of `s` of at most `max` bytes ending at a character boundary.
fn floor(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One free-text field, flattened and capped.
fn text(s: &str, max: usize, marker: &str) -> String {
    truncate(&one_line(s), max, marker)
}

impl Response {
    /// This answer as sent on the socket: one JSON object and `\n`, at most
    /// [`MAX_RESPONSE_BYTES`] long, whatever its text fields hold. A reason
    /// that had to be cut ends with `… (truncated, see report ID)`; the full
    /// text stays in the agent's report.
    pub fn encode_line(&self) -> Vec<u8> {
        let mut line = encode(&self.bounded());
        if line.len() > MAX_RESPONSE_BYTES {
            // Not reachable with the caps above; kept so the bound never
            // depends on that arithmetic. The verdict is never lost.
            line = encode(&self.without_text());
        }
        line
    }

    /// A copy with every text field flattened and capped.
    pub fn bounded(&self) -> Response {
        match self {
            Response::Decision(d) => {
                let report_id = text(&d.report_id, MAX_SHORT_BYTES, TRUNCATED);
                let marker = format!("… (truncated, see report {report_id})");
                Response::Decision(DecisionResponse {
                    verdict: d.verdict,
                    reason: text(&d.reason, MAX_REASON_BYTES, &marker),
                    report_id,
                })
            }
            Response::Error { message } => Response::Error { message: text(message, MAX_REASON_BYTES, TRUNCATED) },
            Response::Status(s) => {
                let short = |o: &Option<String>| o.as_deref().map(|v| text(v, MAX_SHORT_BYTES, TRUNCATED));
                let counters: BTreeMap<String, u64> = s
                    .counters
                    .iter()
                    .take(MAX_COUNTERS)
                    .map(|(k, v)| (text(k, MAX_SHORT_BYTES, TRUNCATED), *v))
                    .collect();
                Response::Status(StatusResponse {
                    agent_version: text(&s.agent_version, MAX_SHORT_BYTES, TRUNCATED),
                    uptime_secs: s.uptime_secs,
                    generation: short(&s.generation),
                    mode: short(&s.mode),
                    config_error: s.config_error.as_deref().map(|e| text(e, MAX_REASON_BYTES, TRUNCATED)),
                    counters,
                    coverage: s.coverage.as_deref().map(|c| text(c, MAX_REASON_BYTES, TRUNCATED)),
                })
            }
        }
    }

    /// The same kind of answer with no free text: the last resort of [`Response::encode_line`].
    fn without_text(&self) -> Response {
        match self {
            Response::Decision(d) => Response::Decision(DecisionResponse {
                verdict: d.verdict,
                reason: "the reason is too long to send; see the agent's decision log".into(),
                report_id: String::new(),
            }),
            Response::Error { .. } => {
                Response::Error { message: "the agent's error message is too long to send".into() }
            }
            Response::Status(s) => Response::Status(StatusResponse {
                agent_version: String::new(),
                uptime_secs: s.uptime_secs,
                generation: None,
                mode: None,
                config_error: Some("the status is too long to send".into()),
                counters: BTreeMap::new(),
                coverage: None,
            }),
        }
    }
}

fn encode(r: &Response) -> Vec<u8> {
    // Serialising these types cannot fail: plain strings, integers and a string-keyed map.
    let mut line =
        serde_json::to_vec(r).unwrap_or_else(|_| br#"{"type":"error","message":"encoding failed"}"#.to_vec());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;
    use proptest::prelude::*;

    /// Pieces an attacker can put in a signature header or a layer annotation.
    fn hostile() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\\u0000".to_string()),
            Just("\u{0}".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\u{1b}[31m".to_string()),
            Just("\u{7f}\u{85}".to_string()),
            Just("\u{2028}\u{2029}".to_string()),
            Just("é".to_string()),
            Just("😀".to_string()),
            Just("\u{10ffff}".to_string()),
            "\\PC{0,8}",
            any::<char>().prop_map(String::from),
        ];
        (prop::collection::vec(piece, 0..64), 1usize..3000).prop_map(|(v, times)| v.concat().repeat(times))
    }

    fn check_line(line: &[u8]) -> Response {
        assert!(line.len() <= MAX_RESPONSE_BYTES, "{} bytes", line.len());
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        assert!(line.iter().all(|b| *b >= 0x20 || *b == b'\n'), "no raw control bytes");
        serde_json::from_slice(line).expect("parses back")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn decision_lines_are_bounded_and_parse_back(reason in hostile(), id in hostile(), allow in any::<bool>()) {
            let verdict = if allow { Verdict::Allow } else { Verdict::Deny };
            let r = Response::Decision(DecisionResponse { verdict, reason: reason.clone(), report_id: id.clone() });
            let Response::Decision(back) = check_line(&r.encode_line()) else { panic!("not a decision") };
            prop_assert_eq!(back.verdict, verdict);
            prop_assert!(back.reason.len() <= MAX_REASON_BYTES);
            prop_assert!(back.report_id.len() <= MAX_SHORT_BYTES);
            prop_assert!(!back.reason.contains(['\n', '\r', '\0', '\u{2028}']), "one line");
            let flat = one_line(&reason);
            if flat.len() <= MAX_REASON_BYTES {
                prop_assert_eq!(back.reason, flat);
            } else {
                let marker = format!("… (truncated, see report {})", back.report_id);
                prop_assert!(back.reason.ends_with(&marker), "{}", back.reason);
                let kept = &back.reason[..back.reason.len() - marker.len()];
                prop_assert!(flat.starts_with(kept));
            }
        }

        #[test]
        fn error_and_status_lines_are_bounded(message in hostile(), key in hostile()) {
            let e = Response::Error { message: message.clone() };
            let Response::Error { message: back } = check_line(&e.encode_line()) else { panic!("not an error") };
            prop_assert!(back.len() <= MAX_REASON_BYTES);
            let counters = (0..200).map(|i| (format!("{key}{i}"), i)).collect();
            let s = Response::Status(StatusResponse {
                agent_version: message.clone(),
                uptime_secs: 1,
                generation: Some(message.clone()),
                mode: Some(key.clone()),
                config_error: Some(message.clone()),
                counters,
                coverage: Some(message),
            });
            let Response::Status(back) = check_line(&s.encode_line()) else { panic!("not a status") };
            prop_assert!(back.counters.len() <= MAX_COUNTERS);
        }
    }

    #[test]
    fn truncation_is_char_boundary_safe_and_marked() {
        assert_eq!(truncate("short", 10, TRUNCATED), "short");
        let t = truncate(&"é".repeat(1000), 101, "…");
        assert!(t.len() <= 101 && t.ends_with('…'), "{t}");
        assert!(t.trim_end_matches('…').chars().all(|c| c == 'é'));
        // A limit smaller than the marker still holds.
        assert!(truncate(&"x".repeat(10), 2, TRUNCATED).len() <= 2);
        assert_eq!(one_line("a\nb\tc\u{2028}d\u{0}"), "a b c d ");
    }

    #[test]
    fn a_100_kb_reason_keeps_its_report_id() {
        let r = Response::Decision(DecisionResponse {
            verdict: Verdict::Deny,
            reason: format!("plugin {:?}", "\"\\\u{0}".repeat(35_000)),
            report_id: "d-1-2".into(),
        });
        let line = r.encode_line();
        let Response::Decision(d) = check_line(&line) else { panic!() };
        assert!(d.reason.ends_with("… (truncated, see report d-1-2)"), "{}", d.reason);
        assert_eq!(d.report_id, "d-1-2");
        assert_eq!(d.verdict, Verdict::Deny);
    }
}
