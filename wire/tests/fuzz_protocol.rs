//! Fuzzing the socket protocol on stable Rust with proptest: request and
//! response lines, mutated or arbitrary, never panic a parser, and whatever
//! parses keeps the protocol's invariants. `PROPTEST_CASES` raises the number
//! of cases (scripts/fuzz does).

use proptest::prelude::*;
use pullgate_wire::{
    DecisionResponse, Descriptor, MAX_RESPONSE_BYTES, Request, Response, StatusResponse, Verdict, VerifierConfig,
    VerifyRequest,
};
use std::path::Path;

/// A valid request line as the verifier sends it.
const REQUEST: &str = r#"{"op":"verify","version":1,"reference":"docker.io/library/alpine:3","digest":"sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9","descriptor":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9","size":517},"deadlineMs":7890}"#;
/// Valid response lines as the agent sends them.
const RESPONSES: [&str; 3] = [
    r#"{"type":"decision","verdict":"deny","reason":"no scope matches this image; defaultAction deny","reportId":"d-1a2034886de167e-4"}"#,
    r#"{"type":"error","message":"peer uid 65534 is not allowed to use this socket (allowedUids)"}"#,
    r#"{"type":"status","agentVersion":"0.1.0","uptimeSecs":5,"generation":"g-1","mode":"enforce","configError":null,"counters":{"allow":3}}"#,
];
const VERIFIER_JSON: &str = r#"{"socket":"/run/pullgate/agent.sock","deadlineMs":8000,"failurePolicy":"closed","bootstrapAllowlist":["registry.k8s.io/pause@sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9"]}"#;

/// One mutation of a byte string: bit flips, a truncation, an insertion or a deletion.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 0u8..8), 1..5).prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(original: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = original.to_vec();
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Flip(flips) => flips.iter().for_each(|(i, bit)| {
            let i = at(*i, b.len());
            b[i] ^= 1 << bit;
        }),
        Mutation::Truncate(n) => b.truncate(at(*n, original.len())),
        Mutation::Insert(i, bytes) => {
            let i = at(*i, b.len() + 1);
            b.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = at(*i, b.len());
            b.drain(i..(i + n).min(b.len()));
        }
    }
    b
}

/// Arbitrary JSON, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![Just("op".to_string()), Just("type".to_string()), "[a-zA-Z]{1,10}"],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that tries to break a line: newlines, separators, quotes, escapes, long runs.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,64}",
        "[\n\r\t\u{2028}\u{2029}\u{0}\u{1b}\u{7f}\"\\\\a-z]{0,64}",
        (".{1,8}", 0usize..8192).prop_map(|(s, n)| s.repeat(n / s.len().max(1)).chars().take(n).collect()),
    ]
}

/// Parsed requests re-encode to JSON that parses to the same request.
fn assert_request_roundtrips(r: &Request) -> Result<(), TestCaseError> {
    let again: Request = serde_json::from_slice(&serde_json::to_vec(r).unwrap()).unwrap();
    prop_assert_eq!(&again, r);
    Ok(())
}

/// An encoded response line: one line, at most [`MAX_RESPONSE_BYTES`], that parses back.
fn assert_line_contract(r: &Response) -> Result<Response, TestCaseError> {
    let line = r.encode_line();
    prop_assert!(line.len() <= MAX_RESPONSE_BYTES, "{} bytes", line.len());
    prop_assert_eq!(line.last(), Some(&b'\n'));
    prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "more than one line");
    let back: Response = serde_json::from_slice(&line).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    Ok(back)
}

proptest! {
    #[test]
    fn mutated_requests_never_panic_and_roundtrip(m in mutation()) {
        let bytes = apply(REQUEST.as_bytes(), &m);
        if let Ok(r) = serde_json::from_slice::<Request>(&bytes) {
            assert_request_roundtrips(&r)?;
        }
    }

    #[test]
    fn arbitrary_json_requests_and_responses_never_panic(v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(r) = serde_json::from_slice::<Request>(&bytes) {
            assert_request_roundtrips(&r)?;
        }
        if let Ok(r) = serde_json::from_slice::<Response>(&bytes) {
            assert_line_contract(&r)?;
        }
        let _ = VerifierConfig::from_json(Path::new("/fuzz/verifier.json"), &bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Request>(&bytes);
        let _ = serde_json::from_slice::<Response>(&bytes);
        let _ = VerifierConfig::from_json(Path::new("/fuzz/verifier.json"), &bytes);
    }

    #[test]
    fn mutated_responses_keep_the_line_contract(which in 0usize..3, m in mutation()) {
        let bytes = apply(RESPONSES[which].as_bytes(), &m);
        if let Ok(r) = serde_json::from_slice::<Response>(&bytes) {
            let back = assert_line_contract(&r)?;
            if let (Response::Decision(a), Response::Decision(b)) = (&r, &back) {
                prop_assert_eq!(a.verdict, b.verdict, "the verdict survives encoding");
            }
        }
    }

    #[test]
    fn any_response_encodes_to_one_bounded_line(
        deny in any::<bool>(),
        reason in hostile_text(),
        id in hostile_text(),
        counters in prop::collection::btree_map("[\n\t\u{2028}a-z]{1,200}", any::<u64>(), 0..80),
    ) {
        let verdict = if deny { Verdict::Deny } else { Verdict::Allow };
        let decision = Response::Decision(DecisionResponse { verdict, reason: reason.clone(), report_id: id.clone() });
        match assert_line_contract(&decision)? {
            Response::Decision(d) => prop_assert_eq!(d.verdict, verdict),
            other => prop_assert!(false, "a decision came back as {:?}", other),
        }
        assert_line_contract(&Response::Error { message: reason.clone() })?;
        let status = Response::Status(StatusResponse {
            agent_version: id.clone(),
            uptime_secs: 1,
            generation: Some(reason.clone()),
            mode: Some(id),
            config_error: Some(reason.clone()),
            counters,
            coverage: Some(reason),
        });
        prop_assert!(matches!(assert_line_contract(&status)?, Response::Status(_)));
    }

    #[test]
    fn generated_requests_roundtrip(reference in hostile_text(), digest in "\\PC{0,80}", media_type in "\\PC{0,40}", size in any::<u64>(), deadline_ms in any::<u64>(), version in any::<u32>()) {
        let r = Request::Verify(VerifyRequest {
            version,
            reference,
            digest: digest.clone(),
            descriptor: Descriptor { media_type, digest, size },
            deadline_ms,
        });
        assert_request_roundtrips(&r)?;
    }

    #[test]
    fn mutated_verifier_configs_never_panic_and_stay_in_bounds(m in mutation()) {
        let bytes = apply(VERIFIER_JSON.as_bytes(), &m);
        if let Ok(c) = VerifierConfig::from_json(Path::new("/fuzz/verifier.json"), &bytes) {
            prop_assert!((pullgate_wire::MIN_DEADLINE_MS..=pullgate_wire::MAX_DEADLINE_MS).contains(&c.deadline_ms), "{:?}", c);
            prop_assert!(c.socket.is_absolute(), "{:?}", c);
        }
    }
}

/// The fixtures the mutations start from are themselves valid, so the
/// properties above exercise accepting as well as refusing.
#[test]
fn seeds_are_valid() {
    let r: Request = serde_json::from_str(REQUEST).unwrap();
    assert!(matches!(r, Request::Verify(_)));
    for line in RESPONSES {
        serde_json::from_str::<Response>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    VerifierConfig::from_json(Path::new("/fuzz/verifier.json"), VERIFIER_JSON.as_bytes()).unwrap();
}
