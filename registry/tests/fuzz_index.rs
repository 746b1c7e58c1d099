//! Fuzzing the referrers list and the tag-schema index on stable Rust with
//! proptest, through the public API: `Client::referrers` against a small
//! in-process HTTP server that answers with mutated or random index bodies,
//! either from the OCI 1.1 referrers API or (the API answering 404) from the
//! `sha256-<hex>` referrers tag. The index and manifest types are fuzzed
//! directly too. The parser inside (`ReferrerList`) is crate-private, so the
//! client is the way in.
//!
//! Invariants: nothing panics; a list that comes back holds at most
//! `MAX_REFERRERS` entries, each with a valid digest, of the artifact type
//! asked for, and each one of the entries the server actually listed.
//! `PROPTEST_CASES` raises the number of cases (scripts/fuzz does).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use pullgate_registry::types::{Descriptor, ImageManifest, Index};
use pullgate_registry::{Client, ClientOptions, HostOptions, MAX_REFERRERS, Repository};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const NOTARY: &str = "application/vnd.cncf.notary.signature";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// What the server answers: the body, and whether the referrers API exists
/// (if not, it answers 404 and the body is served as the referrers tag).
#[derive(Clone, Default)]
struct Answer {
    body: Vec<u8>,
    api: bool,
}

struct Server {
    runtime: tokio::runtime::Runtime,
    host: String,
    answer: Arc<Mutex<Answer>>,
    /// Held for a whole exchange: the tests of this binary run in parallel and share the answer.
    busy: Mutex<()>,
}

/// One server for the whole test binary; each case swaps its answer.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let answer = Arc::new(Mutex::new(Answer::default()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let shared = answer.clone();
        runtime.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(respond(sock, shared.clone()));
            }
        });
        Server { runtime, host, answer, busy: Mutex::new(()) }
    })
}

/// Answers one request: the referrers API, the referrers tag, or 404.
async fn respond(mut sock: tokio::net::TcpStream, answer: Arc<Mutex<Answer>>) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or_default().to_string();
    let a = answer.lock().unwrap().clone();
    let tag = format!("/v2/team/app/manifests/{}", SUBJECT.replace(':', "-"));
    let ok = (a.api && target.starts_with("/v2/team/app/referrers/")) || (!a.api && target == tag);
    let (status, body) = if ok { (200, a.body) } else { (404, b"{\"errors\":[]}".to_vec()) };
    let mut resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {INDEX_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    let _ = sock.write_all(&resp).await;
}

/// Asks a fresh client (no cached list) for the referrers while the server answers `body`.
fn referrers(body: &[u8], api: bool, artifact_type: Option<&str>) -> Result<Vec<Descriptor>, String> {
    let s = server();
    let _turn = s.busy.lock().unwrap_or_else(|p| p.into_inner());
    *s.answer.lock().unwrap() = Answer { body: body.to_vec(), api };
    let mut opts = ClientOptions::default();
    opts.hosts.insert(s.host.clone(), HostOptions { insecure: true, ..Default::default() });
    let repo = Repository { host: s.host.clone(), path: "team/app".into() };
    s.runtime
        .block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            Client::new(opts).referrers(&repo, SUBJECT, artifact_type, deadline).await
        })
        .map(|r| r.descriptors)
        .map_err(|e| e.to_string())
}

/// The invariants of any list that came back for `body`.
fn check_list(body: &[u8], list: &[Descriptor], artifact_type: Option<&str>) -> Result<(), TestCaseError> {
    prop_assert!(list.len() <= MAX_REFERRERS, "{} entries", list.len());
    // Read as leniently as an index reader may: fields other than
    // `manifests` are skipped unread (serde_json does not check the UTF-8 of
    // what it skips), so a broken byte there does not hide the entries.
    #[derive(serde::Deserialize)]
    struct Listed {
        #[serde(default)]
        manifests: Vec<Value>,
    }
    let served = serde_json::from_slice::<Listed>(body).map(|l| l.manifests).unwrap_or_default();
    for d in list {
        prop_assert!(pullgate_reference::Digest::parse(&d.digest).is_ok(), "invalid digest {:?} kept", d.digest);
        if let Some(t) = artifact_type {
            prop_assert_eq!(d.artifact_type.as_deref(), Some(t), "{:?} kept despite the filter", d);
        }
        let listed = served.iter().any(|v| serde_json::from_value::<Descriptor>(v.clone()).ok().as_ref() == Some(d));
        prop_assert!(listed, "{:?} was not in what the server listed", d);
    }
    Ok(())
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation/oci-layouts"))
}

/// Real index documents: the fixture layouts' `index.json`, and a referrers
/// answer built from their signature manifests.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        for layout in ["e2e-valid-signature", "e2e-valid-multiple-signatures", "e2e-unsigned"] {
            out.push(std::fs::read(fixtures().join(layout).join("index.json")).unwrap());
        }
        let entries: Vec<Value> = (0u8..3)
            .map(|n| {
                let t = if n == 1 { "application/spdx+json" } else { NOTARY };
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)), "size": 700 + u64::from(n),
                       "artifactType": t, "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[\"ab\"]"}})
            })
            .collect();
        out.push(
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries})).unwrap(),
        );
        out
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => prop::collection::vec((any::<usize>(), 0u8..8), 1..5).prop_map(Mutation::Flip),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(original: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = original.to_vec();
    let len = original.len().max(1);
    match m {
        Mutation::Flip(flips) => flips.iter().for_each(|(i, bit)| b[i % len] ^= 1 << bit),
        Mutation::Truncate(n) => b.truncate(n % len),
        Mutation::Insert(i, bytes) => {
            let i = i % (b.len() + 1);
            b.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = i % len;
            b.drain(i..(i + n).min(b.len()));
        }
    }
    b
}

/// A descriptor-like JSON value: sometimes valid, often not.
fn entry() -> impl Strategy<Value = Value> {
    let digest = prop_oneof![
        "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
        "\\PC{0,70}",
    ];
    let artifact_type = prop_oneof![Just(Some(NOTARY.to_string())), Just(None), "\\PC{0,20}".prop_map(Some)];
    (digest, artifact_type, any::<u64>(), "\\PC{0,20}", any::<bool>()).prop_map(|(d, t, size, mt, broken)| {
        let mut v = json!({"mediaType": mt, "digest": d, "size": size});
        if let Some(t) = t {
            v["artifactType"] = Value::from(t);
        }
        if broken {
            v["size"] = Value::from("not a number");
        }
        v
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn mutated_indexes_keep_the_list_invariants(which in 0usize..4, m in mutation(), api in any::<bool>(), filter in any::<bool>()) {
        let body = apply(&seeds()[which], &m);
        let artifact_type = filter.then_some(NOTARY);
        if let Ok(list) = referrers(&body, api, artifact_type) {
            check_list(&body, &list, artifact_type)?;
        }
    }

    #[test]
    fn random_entries_keep_the_list_invariants(entries in prop::collection::vec(entry(), 0..24), api in any::<bool>(), filter in any::<bool>()) {
        let body = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries})).unwrap();
        let artifact_type = filter.then_some(NOTARY);
        if let Ok(list) = referrers(&body, api, artifact_type) {
            check_list(&body, &list, artifact_type)?;
        }
    }

    #[test]
    fn random_json_answers_never_panic(v in json_value(), api in any::<bool>()) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Ok(list) = referrers(&body, api, None) {
            check_list(&body, &list, None)?;
        }
    }
}

proptest! {
    #[test]
    fn index_and_manifest_types_roundtrip(which in 0usize..4, m in mutation(), v in json_value()) {
        let body = apply(&seeds()[which], &m);
        for bytes in [body, serde_json::to_vec(&v).unwrap()] {
            if let Ok(i) = serde_json::from_slice::<Index>(&bytes) {
                let again: Index = serde_json::from_slice(&serde_json::to_vec(&i).unwrap()).unwrap();
                prop_assert_eq!(again, i);
            }
            if let Ok(mf) = serde_json::from_slice::<ImageManifest>(&bytes) {
                let again: ImageManifest = serde_json::from_slice(&serde_json::to_vec(&mf).unwrap()).unwrap();
                prop_assert_eq!(again, mf);
            }
        }
    }
}

/// The seeds are real indexes that yield entries, so the properties above see
/// accepted lists and not only refusals.
#[test]
fn seeds_yield_lists() {
    let answer = &seeds()[3];
    for api in [true, false] {
        let all = referrers(answer, api, None).unwrap();
        assert_eq!(all.len(), 3, "api={api}");
        let notary = referrers(answer, api, Some(NOTARY)).unwrap();
        assert_eq!(notary.len(), 2, "api={api}: the SBOM entry is filtered out");
        check_list(answer, &notary, Some(NOTARY)).unwrap();
    }
    let layout = referrers(&seeds()[0], false, None).unwrap();
    assert!(!layout.is_empty(), "a fixture index.json served as the referrers tag yields its entries");
}
