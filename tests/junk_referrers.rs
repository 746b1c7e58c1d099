//! Issue 11, "nothing pushed next to an image can change its verdict", end to
//! end: `pullgate-verifier` exec'd as containerd does → the agent → both
//! registry kinds: the real Debian `docker-registry` (no referrers API: the
//! `sha256-<hex>` tag schema) and an in-process server answering the OCI 1.1
//! referrers API the way the distribution spec says (`spec` below). For
//! each kind of junk anyone able to push can attach, under agent (and
//! verifier) failure policy `open` and `closed`, the verdict stays the safe
//! one: an unsigned image stays denied, a validly signed one stays allowed,
//! and neither verdict comes from the failure policy.
//!
//! Real signatures come from `shared/fixtures` unchanged: the Notation
//! layouts `e2e-valid-signature` / `e2e-unsigned` (trust store `e2e`) and
//! the cosign `key-valid` case (`cosign.pub`). Junk is generated here.
//!
//! Sizes are scaled for 2 shared cores: "50 junk manifests of ~4 MiB with ~4
//! MiB envelopes" is 12 junk manifests of 3.5 MiB (docker-registry refuses
//! manifests over 4 MiB) with 4 MiB envelopes per image — three times the
//! agent's 32 MiB byte budget, which is what the row exercises. Rows that
//! the real registry cannot hold (a `.sig` manifest or an index over 4 MiB,
//! a redirect) run against the in-process server only.

use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, sha256};
use pullgate_tests::{AgentFiles, MANIFEST_MEDIA_TYPE, containerd_args, descriptor_stdin, fixtures_dir, run_verifier};
use pullgate_wire::Descriptor;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const NOTARY: &str = "application/vnd.cncf.notary.signature";
const COSIGN_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const THUMBPRINT: &str = "io.cncf.notary.x509chain.thumbprint#S256";
/// SHA-256 of the fixture trust store certificate `ca/e2e/e2e.crt`: junk claims it.
const TRUSTED_THUMBPRINT: &str = "e38aea13f2b051f7183cca64a51ee676f4d4456f41d9fecf15eb367efc7343b9";
const MIB: usize = 1024 * 1024;

/// Where a test image lives: the real registry or the in-process spec server.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    TagSchema,
    ReferrersApi,
}

/// Pushes content the same way to either registry kind.
enum Target<'a> {
    Real(&'a Registry),
    Spec(&'a spec::Server),
}

impl Target<'_> {
    fn kind(&self) -> Kind {
        match self {
            Target::Real(_) => Kind::TagSchema,
            Target::Spec(_) => Kind::ReferrersApi,
        }
    }

    fn host(&self) -> String {
        match self {
            Target::Real(r) => r.host.clone(),
            Target::Spec(s) => s.host.clone(),
        }
    }

    async fn blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        match self {
            Target::Real(r) => r.push_blob(repo, bytes).await,
            Target::Spec(s) => s.put_blob(repo, bytes),
        }
    }

    async fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: Vec<u8>) {
        match self {
            Target::Real(r) => r.push_manifest(repo, reference, media_type, bytes).await,
            Target::Spec(s) => s.put_manifest(repo, reference, media_type, bytes),
        }
    }

    async fn layout(&self, repo: &str, name: &str) {
        let dir = fixtures_dir().join("notation/oci-layouts").join(name);
        match self {
            Target::Real(r) => r.push_layout(repo, &dir).await,
            Target::Spec(s) => s.put_layout(repo, &dir),
        }
    }
}

/// Bytes that are not a signature, distinct per `seed`.
fn junk_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

fn subject() -> Descriptor {
    Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: SUBJECT.into(), size: 517 }
}

fn subject_json() -> Value {
    json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": SUBJECT, "size": 517})
}

/// A junk Notation signature: a manifest padded to about `pad` bytes that
/// claims the trusted certificate, with a `envelope`-byte envelope that is
/// not a signature. Returns its referrers-list entry.
async fn notation_junk(t: &Target<'_>, repo: &str, seed: u64, pad: usize, envelope: usize) -> Value {
    let env = junk_bytes(seed, envelope);
    let env_len = env.len();
    let env_digest = t.blob(repo, env).await;
    let config = t.blob(repo, b"{}".to_vec()).await;
    let annotations = json!({THUMBPRINT: format!("[\"{TRUSTED_THUMBPRINT}\"]"), "junk": "x".repeat(pad)});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": NOTARY,
        "config": {"mediaType": NOTARY, "digest": config, "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": env_digest, "size": env_len}],
        "subject": subject_json(),
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&bytes);
    let size = bytes.len();
    t.manifest(repo, &digest, MANIFEST_MEDIA_TYPE, bytes).await;
    json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size, "artifactType": NOTARY,
           "annotations": {THUMBPRINT: format!("[\"{TRUSTED_THUMBPRINT}\"]")}})
}

/// A junk Notation signature manifest claiming the trusted certificate whose
/// layer is the already pushed blob `envelope` of `len` bytes; returns its list entry.
async fn small_junk_manifest(t: &Target<'_>, repo: &str, config: &str, envelope: &str, len: usize, n: u64) -> Value {
    let annotations = json!({THUMBPRINT: format!("[\"{TRUSTED_THUMBPRINT}\"]"), "n": n.to_string()});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": NOTARY,
        "config": {"mediaType": NOTARY, "digest": config, "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": envelope, "size": len}],
        "subject": subject_json(),
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let (digest, size) = (sha256(&bytes), bytes.len());
    t.manifest(repo, &digest, MANIFEST_MEDIA_TYPE, bytes).await;
    json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size, "artifactType": NOTARY,
           "annotations": {THUMBPRINT: format!("[\"{TRUSTED_THUMBPRINT}\"]")}})
}

/// The valid signature's referrers-list entry, as the fixture layout's tag-schema index has it.
fn valid_notation_entry() -> Value {
    let index = fixtures_dir().join("notation/oci-layouts/e2e-valid-signature/blobs/sha256");
    let tag_index = std::fs::read(index.join("13e107e0dd246f07ff18998a3d39e226965c41477a1bc1765f7617632ff3f283"))
        .expect("the fixture's tag-schema index");
    let v: Value = serde_json::from_slice(&tag_index).unwrap();
    v["manifests"][0].clone()
}

/// Writes the tag-schema index (`sha256-<hex>`) listing `entries` in order.
/// On the spec server it is what the referrers API falls back to only when
/// the API is off; with the API on, [`spec::Server::list_first`] puts raw
/// entries before the computed list instead.
async fn tag_index(t: &Target<'_>, repo: &str, entries: Vec<Value>) {
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    t.manifest(repo, &SUBJECT.replace(':', "-"), OCI_INDEX, serde_json::to_vec(&index).unwrap()).await;
}

/// What a scenario set up: the repository and the expected verdict.
struct Image {
    name: String,
    descriptor: Descriptor,
    signed: bool,
    row: &'static str,
    kind: Kind,
}

/// The cosign `key-valid` fixture case directory.
fn cosign_case() -> std::path::PathBuf {
    fixtures_dir().join("cosign/key-valid")
}

fn cosign_subject() -> Descriptor {
    let manifest = std::fs::read(cosign_case().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_slice(&manifest).unwrap();
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap().to_string(),
        digest: sha256(&manifest),
        size: manifest.len() as u64,
    }
}

/// The valid cosign layer (payload pushed), as `attach_cosign_signature` lays it out.
async fn cosign_valid_layer(t: &Target<'_>, repo: &str) -> Value {
    let read = |f: &str| std::fs::read_to_string(cosign_case().join(f)).unwrap().trim().to_string();
    let payload = std::fs::read(cosign_case().join("payload.json")).unwrap();
    let len = payload.len();
    let digest = t.blob(repo, payload).await;
    json!({"mediaType": read("mediatype.txt"), "digest": digest, "size": len,
           "annotations": {"dev.cosignproject.cosign/signature": read("signature.b64")}})
}

/// `n` junk cosign layers: simple-signing payloads smaller than the valid
/// one with a signature annotation that does not verify.
async fn cosign_junk_layers(t: &Target<'_>, repo: &str, n: u64, len: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        let digest = t.blob(repo, junk_bytes(1000 + i, len)).await;
        out.push(json!({"mediaType": SIMPLE_SIGNING, "digest": digest, "size": len,
                        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDjunkjunkjunk=="}}));
    }
    out
}

/// Puts a cosign signature manifest with `layers` under `tag` (or by digest when `None`); returns its digest.
async fn cosign_manifest(t: &Target<'_>, repo: &str, tag: Option<&str>, layers: Vec<Value>, subject: bool) -> Value {
    let config = br#"{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let config_len = config.len();
    let config_digest = t.blob(repo, config).await;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": layers,
    });
    if subject {
        let s = cosign_subject();
        manifest["artifactType"] = COSIGN_TYPE.into();
        manifest["subject"] = json!({"mediaType": s.media_type, "digest": s.digest, "size": s.size});
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&bytes);
    let size = bytes.len();
    t.manifest(repo, tag.unwrap_or(&digest), MANIFEST_MEDIA_TYPE, bytes).await;
    json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size, "artifactType": COSIGN_TYPE})
}

fn cosign_tag() -> String {
    format!("{}.sig", cosign_subject().digest.replace(':', "-"))
}

/// A registry that serves the OCI 1.1 referrers API as the distribution
/// spec describes it (an image index of the manifests whose `subject` is the
/// digest, `artifactType` filtering announced with `OCI-Filters-Applied`),
/// or — per repository — no API at all (404, so clients use the tag schema).
/// Tests can put raw entries first in a list, answer a path with a canned
/// response, and see every request.
mod spec {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A canned answer: status, headers, body.
    pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

    #[derive(Default)]
    struct State {
        blobs: HashMap<String, Vec<u8>>,
        /// (repo, digest) → (media type, bytes), in push order.
        manifests: Vec<(String, String, String, Vec<u8>)>,
        tags: HashMap<(String, String), String>,
        first: HashMap<String, Vec<Value>>,
        no_api: std::collections::HashSet<String>,
        canned: HashMap<String, Answer>,
        seen: Vec<String>,
        /// Requests that carried an `Authorization` header, by target.
        authorized: Vec<String>,
        /// Repositories that answer 401 with a Basic challenge without one.
        basic: std::collections::HashSet<String>,
    }

    /// The running server; it stops with the runtime.
    pub struct Server {
        pub host: String,
        state: Arc<Mutex<State>>,
    }

    impl Server {
        pub async fn start() -> Server {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let host = listener.local_addr().unwrap().to_string();
            let state = Arc::new(Mutex::new(State::default()));
            let s = state.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    tokio::spawn(serve(sock, s.clone()));
                }
            });
            Server { host, state }
        }

        pub fn put_blob(&self, _repo: &str, bytes: Vec<u8>) -> String {
            let d = sha256(&bytes);
            self.state.lock().unwrap().blobs.insert(d.clone(), bytes);
            d
        }

        pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: Vec<u8>) {
            let d = sha256(&bytes);
            let mut st = self.state.lock().unwrap();
            if !reference.starts_with("sha256:") {
                st.tags.insert((repo.to_string(), reference.to_string()), d.clone());
            }
            if !st.manifests.iter().any(|(r, dd, _, _)| r == repo && *dd == d) {
                st.manifests.push((repo.to_string(), d, media_type.to_string(), bytes));
            }
        }

        /// Pushes an OCI layout's manifests and tags (its blobs too).
        pub fn put_layout(&self, repo: &str, dir: &Path) {
            let mut entries: Vec<_> =
                std::fs::read_dir(dir.join("blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
            entries.sort();
            for path in entries {
                let bytes = std::fs::read(&path).unwrap();
                let d = self.put_blob(repo, bytes.clone());
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    let mt = v["mediaType"].as_str().unwrap_or(MANIFEST_MEDIA_TYPE).to_string();
                    if v.get("layers").is_some() || v.get("manifests").is_some() {
                        self.put_manifest(repo, &d, &mt, bytes);
                    }
                }
            }
            let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
            for m in index["manifests"].as_array().unwrap() {
                if let Some(tag) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
                    let d = m["digest"].as_str().unwrap().to_string();
                    self.state.lock().unwrap().tags.insert((repo.to_string(), tag.to_string()), d);
                }
            }
        }

        /// Lists `entries` (raw JSON, usable or not) before the computed referrers of `repo`.
        pub fn list_first(&self, repo: &str, entries: Vec<Value>) {
            self.state.lock().unwrap().first.entry(repo.to_string()).or_default().extend(entries);
        }

        /// `repo` has no referrers API: clients must use the tag schema.
        pub fn without_api(&self, repo: &str) {
            self.state.lock().unwrap().no_api.insert(repo.to_string());
        }

        /// Answers requests for `path` (path and query) with `answer`.
        pub fn canned(&self, path: &str, answer: Answer) {
            self.state.lock().unwrap().canned.insert(path.to_string(), answer);
        }

        /// What the server would answer for `target` now (recorded as a request).
        pub fn answer_now(&self, target: &str) -> Answer {
            answer(&self.state, target, false)
        }

        /// `repo` requires basic auth (any credentials): 401 with a Basic challenge without them.
        pub fn require_basic(&self, repo: &str) {
            self.state.lock().unwrap().basic.insert(repo.to_string());
        }

        /// Targets of the requests that carried an `Authorization` header.
        pub fn authorized(&self) -> Vec<String> {
            self.state.lock().unwrap().authorized.clone()
        }

        /// Every request target so far.
        pub fn seen(&self) -> Vec<String> {
            self.state.lock().unwrap().seen.clone()
        }
    }

    async fn serve(mut sock: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
        let mut buf = vec![0u8; 16384];
        let mut n = 0;
        while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return,
                Ok(k) => n += k,
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = head.split_whitespace().nth(1).unwrap_or_default().to_string();
        let authorized = head.to_ascii_lowercase().contains("\r\nauthorization:");
        let (status, headers, body) = answer(&state, &target, authorized);
        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.write_all(&body).await;
    }

    fn not_found() -> Answer {
        (404, vec![], br#"{"errors":[{"code":"NOT_FOUND","message":"not found"}]}"#.to_vec())
    }

    fn answer(state: &Mutex<State>, target: &str, authorized: bool) -> Answer {
        let mut st = state.lock().unwrap();
        st.seen.push(target.to_string());
        if authorized {
            st.authorized.push(target.to_string());
        }
        let needs_auth = st.basic.iter().any(|r| target.starts_with(&format!("/v2/{r}/")));
        if needs_auth && !authorized {
            return (401, vec![("WWW-Authenticate".into(), "Basic realm=\"spec\"".into())], Vec::new());
        }
        if let Some(a) = st.canned.get(target).or_else(|| st.canned.get("*")) {
            return a.clone();
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(rest) = path.strip_prefix("/v2/") else { return not_found() };
        if rest.is_empty() {
            return (200, vec![], b"{}".to_vec());
        }
        for (kind, sep) in [("manifests", "/manifests/"), ("blobs", "/blobs/"), ("referrers", "/referrers/")] {
            if let Some((repo, reference)) = rest.rsplit_once(sep) {
                return match kind {
                    "manifests" => manifest(&st, repo, reference),
                    "blobs" => st.blobs.get(reference).map_or_else(not_found, |b| (200, vec![], b.clone())),
                    _ => referrers(&st, repo, reference, query),
                };
            }
        }
        not_found()
    }

    fn manifest(st: &State, repo: &str, reference: &str) -> Answer {
        let digest = match st.tags.get(&(repo.to_string(), reference.to_string())) {
            Some(d) => d.clone(),
            None => reference.to_string(),
        };
        match st.manifests.iter().find(|(r, d, _, _)| r == repo && *d == digest) {
            Some((_, _, mt, bytes)) => (200, vec![("Content-Type".into(), mt.clone())], bytes.clone()),
            None => not_found(),
        }
    }

    fn referrers(st: &State, repo: &str, subject: &str, query: &str) -> Answer {
        if st.no_api.contains(repo) {
            return not_found();
        }
        let wanted = query.strip_prefix("artifactType=").map(|t| t.replace("%2F", "/").replace("%2B", "+"));
        let mut entries: Vec<Value> = st.first.get(repo).cloned().unwrap_or_default();
        for (r, d, mt, bytes) in &st.manifests {
            let Ok(v) = serde_json::from_slice::<Value>(bytes) else { continue };
            if r != repo || v["subject"]["digest"] != subject {
                continue;
            }
            let at = v["artifactType"].as_str().or(v["config"]["mediaType"].as_str()).unwrap_or_default();
            let mut e = json!({"mediaType": mt, "digest": d, "size": bytes.len(), "artifactType": at});
            if let Some(a) = v.get("annotations") {
                e["annotations"] = a.clone();
            }
            entries.push(e);
        }
        let mut headers = vec![("Content-Type".to_string(), OCI_INDEX.to_string())];
        if let Some(t) = &wanted {
            entries.retain(|e| e["artifactType"] == t.as_str() || e.get("artifactType").is_none());
            headers.push(("OCI-Filters-Applied".into(), "artifactType".into()));
        }
        // Spec servers strip nothing but big annotations are not listed here.
        for e in &mut entries {
            if let Some(a) = e.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                a.remove("junk");
            }
        }
        let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        (200, headers, serde_json::to_vec(&body).unwrap())
    }
}

/// Puts the notation images of one row: `n/<row>-signed` (fixture layout
/// with its valid signature) and `n/<row>-unsigned`, with `junk(target,
/// repo)` attached to both. `junk` returns the entries to list before the
/// valid one (tag schema: in the `sha256-<hex>` index; spec server: first in
/// the referrers answer).
async fn notation_row<F, Fut>(t: &Target<'_>, row: &'static str, junk: F) -> Vec<Image>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Vec<Value>>,
{
    let mut out = Vec::new();
    for signed in [true, false] {
        let repo = format!("n/{row}-{}", if signed { "signed" } else { "unsigned" });
        t.layout(&repo, if signed { "e2e-valid-signature" } else { "e2e-unsigned" }).await;
        let mut entries = junk(repo.clone()).await;
        match t {
            Target::Real(_) => {
                if signed {
                    entries.push(valid_notation_entry());
                }
                tag_index(t, &repo, entries).await;
            }
            Target::Spec(s) => s.list_first(&repo, entries),
        }
        out.push(Image { name: format!("{}/{repo}:v1", t.host()), descriptor: subject(), signed, row, kind: t.kind() });
    }
    out
}

/// Puts the cosign images of one row: `c/<row>-signed` and `c/<row>-unsigned`;
/// `setup(target, repo, signed)` attaches the signatures and the junk.
async fn cosign_row<F, Fut>(t: &Target<'_>, row: &'static str, setup: F) -> Vec<Image>
where
    F: Fn(String, bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::new();
    for signed in [true, false] {
        let repo = format!("c/{row}-{}", if signed { "signed" } else { "unsigned" });
        setup(repo.clone(), signed).await;
        out.push(Image {
            name: format!("{}/{repo}:v1", t.host()),
            descriptor: cosign_subject(),
            signed,
            row,
            kind: t.kind(),
        });
    }
    out
}

/// Every row of the issue's table that `t` can hold.
async fn scenarios(t: &Target<'_>, kind: Kind, other: &spec::Server, storage: &spec::Server) -> Vec<Image> {
    let mut images = Vec::new();
    // A list entry without a size (plus one with a malformed digest on the spec server).
    images.extend(
        notation_row(t, "no-size", |repo| async move {
            let mut e = notation_junk(t, &repo, 1, 10, 500).await;
            e.as_object_mut().unwrap().remove("size");
            let mut out = vec![e];
            if kind == Kind::ReferrersApi {
                out.push(json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": "sha256:../../etc", "size": 1, "artifactType": NOTARY}));
            }
            out
        })
        .await,
    );
    // More than 1024 signature entries listed before the valid one.
    images.extend(
        notation_row(t, "over-1024", |repo| async move {
            let env = t.blob(&repo, junk_bytes(7, 300)).await;
            let config = t.blob(&repo, b"{}".to_vec()).await;
            let mut out = Vec::new();
            let mut pushes = Vec::new();
            for i in 0..1030 {
                let m = json!({
                    "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": NOTARY,
                    "config": {"mediaType": NOTARY, "digest": config, "size": 2},
                    "layers": [{"mediaType": "application/jose+json", "digest": env, "size": 300}],
                    "subject": subject_json(), "annotations": {"n": i.to_string()},
                });
                let bytes = serde_json::to_vec(&m).unwrap();
                let (digest, size) = (sha256(&bytes), bytes.len());
                if kind == Kind::TagSchema {
                    out.push(json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size, "artifactType": NOTARY}));
                }
                pushes.push((digest, bytes));
            }
            // The real registry takes a few milliseconds per manifest: 32 at a time.
            for chunk in pushes.chunks(32) {
                let puts = chunk.iter().map(|(d, b)| t.manifest(&repo, d, MANIFEST_MEDIA_TYPE, b.clone()));
                futures::future::join_all(puts).await;
            }
            out
        })
        .await,
    );
    // Junk signature manifests of ~4 MiB with 4 MiB envelopes, claiming the
    // trusted certificate: skipped unfetched (a signature manifest is small).
    images.extend(
        notation_row(t, "big-junk", |repo| async move {
            let mut out = Vec::new();
            for i in 0..4 {
                out.push(notation_junk(t, &repo, 100 + i, 3 * MIB + MIB / 2, 4 * MIB).await);
            }
            out
        })
        .await,
    );
    // Small junk manifests claiming the trusted certificate, each with a 4 MiB
    // envelope (one blob shared by all): 40 MiB, more than the byte budget.
    images.extend(
        notation_row(t, "big-envelopes", |repo| async move {
            let env = junk_bytes(300, 4 * MIB);
            let env_digest = t.blob(&repo, env).await;
            let config = t.blob(&repo, b"{}".to_vec()).await;
            let mut out = Vec::new();
            for i in 0..10 {
                out.push(small_junk_manifest(t, &repo, &config, &env_digest, 4 * MIB, i).await);
            }
            out
        })
        .await,
    );
    // 50 small junk signatures (smaller envelopes than the valid one) listed first.
    images.extend(
        notation_row(t, "many-junk", |repo| async move {
            let mut out = Vec::new();
            for i in 0..50 {
                out.push(notation_junk(t, &repo, 200 + i, 10, 1000).await);
            }
            out
        })
        .await,
    );
    // Cosign: 50 junk layers before the valid one in the `.sig` manifest.
    images.extend(
        cosign_row(t, "many-junk", |repo, signed| async move {
            let mut layers = cosign_junk_layers(t, &repo, 50, 100).await;
            if signed {
                layers.push(cosign_valid_layer(t, &repo).await);
            }
            cosign_manifest(t, &repo, Some(&cosign_tag()), layers, false).await;
        })
        .await,
    );
    if let Target::Spec(s) = t {
        images.extend(spec_only_rows(s, t, other, storage).await);
    }
    images
}

/// Rows the real registry cannot hold: an oversized referrers page, an
/// oversized tag-schema index and `.sig` manifest, a redirected `.sig` tag.
async fn spec_only_rows(s: &spec::Server, t: &Target<'_>, other: &spec::Server, storage: &spec::Server) -> Vec<Image> {
    let mut images = Vec::new();
    let huge = (200, vec![("Content-Type".to_string(), OCI_INDEX.to_string())], vec![b' '; 4 * MIB + 1]);
    // A second referrers page over 4 MiB.
    images.extend(
        notation_row(t, "big-page", |repo| {
            let huge = huge.clone();
            async move {
                let first =
                    format!("/v2/{repo}/referrers/{SUBJECT}?artifactType=application%2Fvnd.cncf.notary.signature");
                let next = format!("/v2/{repo}/referrers/{SUBJECT}?page=2");
                let (code, mut headers, body) = s.answer_now(&first);
                headers.push(("Link".into(), format!("<{next}>; rel=\"next\"")));
                s.canned(&first, (code, headers, body));
                s.canned(&next, huge);
                Vec::new()
            }
        })
        .await,
    );
    // An unsigned image whose tag-schema index is over 4 MiB (no referrers API).
    s.put_layout("n/big-index-unsigned", &fixtures_dir().join("notation/oci-layouts/e2e-unsigned"));
    s.without_api("n/big-index-unsigned");
    s.canned(&format!("/v2/n/big-index-unsigned/manifests/{}", SUBJECT.replace(':', "-")), huge.clone());
    images.push(Image {
        name: format!("{}/n/big-index-unsigned:v1", s.host),
        descriptor: subject(),
        signed: false,
        row: "big-index",
        kind: Kind::ReferrersApi,
    });
    // A registry requiring credentials that redirects the valid envelope's
    // download to a storage host: followed, without the credentials.
    let envelope = "sha256:c9af07e038b2b1a463e648986ad7273157511ffeba0b689f33e5472bae471f50";
    let bytes = std::fs::read(
        fixtures_dir().join("notation/oci-layouts/e2e-valid-signature/blobs/sha256").join(&envelope[7..]),
    )
    .unwrap();
    storage.canned("/storage/envelope?sig=x", (200, vec![], bytes));
    let to = format!("http://{}/storage/envelope?sig=x", storage.host);
    images.extend(
        notation_row(t, "blob-redirect", |repo| {
            let to = to.clone();
            async move {
                s.require_basic(&repo);
                s.canned(&format!("/v2/{repo}/blobs/{envelope}"), (307, vec![("Location".into(), to)], Vec::new()));
                Vec::new()
            }
        })
        .await,
    );
    // Cosign: a `.sig` tag over 4 MiB, or redirected to another host; the
    // signed image also has its valid signature attached as a referrer.
    for row in ["big-sig", "redirect-sig"] {
        let other_host = other.host.clone();
        images.extend(
            cosign_row(t, row, |repo, signed| {
                let (other_host, huge) = (other_host.clone(), huge.clone());
                async move {
                    let tag = format!("/v2/{repo}/manifests/{}", cosign_tag());
                    if row == "big-sig" {
                        s.canned(&tag, huge);
                    } else {
                        let to = format!("http://{other_host}{tag}");
                        s.canned(&tag, (302, vec![("Location".into(), to)], b"moved".to_vec()));
                    }
                    if signed {
                        let layer = cosign_valid_layer(t, &repo).await;
                        cosign_manifest(t, &repo, None, vec![layer], true).await;
                    }
                }
            })
            .await,
        );
    }
    images
}

/// An agent verifying `n/**` with Notation (fixture trust store `e2e`) and
/// `c/**` with cosign (`cosign.pub`, no transparency log) on every host.
fn agent_files(hosts: &[String], failure_policy: &str, docker_config: &Path) -> AgentFiles {
    let mut toml = format!(
        "defaultAction = \"deny\"\nfailurePolicy = \"{failure_policy}\"\n\
         [auth]\ndockerConfig = {:?}\n\
         [notation]\ntrustPolicy = \"notation/trustpolicy.json\"\ntrustStore = \"notation/truststore\"\n\
         [sigstore]\nkeys = [\"keys/cosign.pub\"]\nrequireTlog = false\n",
        docker_config.display().to_string()
    );
    for h in hosts {
        toml.push_str(&format!("[registries.\"{h}\"]\ninsecure = true\n"));
    }
    let n: Vec<String> = hosts.iter().map(|h| format!("\"{h}/n/**\"")).collect();
    let c: Vec<String> = hosts.iter().map(|h| format!("\"{h}/c/**\"")).collect();
    toml.push_str(&format!(
        "[[scopes]]\nname = \"notation\"\nimages = [{}]\naction = \"verify\"\nverify = {{ require = [\"notation\"] }}\n\
         [[scopes]]\nname = \"cosign\"\nimages = [{}]\naction = \"verify\"\nverify = {{ require = [\"cosign\"] }}\n",
        n.join(", "),
        c.join(", ")
    ));
    let files = AgentFiles::new(&toml);
    install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
    std::fs::create_dir_all(files.config_dir.join("keys")).unwrap();
    std::fs::copy(fixtures_dir().join("cosign/keys/cosign.pub"), files.config_dir.join("keys/cosign.pub")).unwrap();
    files
}

/// Execs the verifier as containerd does, with `deadline_ms` and `failure_policy`.
fn verify(agent: &AgentFiles, image: &Image, failure_policy: &str, deadline_ms: u64) -> pullgate_tests::VerifierRun {
    run_verifier(
        &containerd_args(&image.name, &image.descriptor.digest),
        &descriptor_stdin(&image.descriptor),
        &agent.verifier_config(deadline_ms, failure_policy),
    )
}

/// The safe verdict for `image`, not reached through the failure policy.
fn check(agent: &AgentFiles, image: &Image, policy: &str, deadline_ms: u64) -> Result<(), String> {
    let kind = image.kind;
    let run = verify(agent, image, policy, deadline_ms);
    let line = run.stdout.trim_end().to_string();
    eprintln!("{kind:?} {policy} {:?}: {line}", run.elapsed);
    let want = if image.signed { Some(0) } else { Some(1) };
    let bad = run.code != want
        || line.contains("failure policy")
        || line.contains("SECRET")
        || (image.signed && !line.contains("verified"));
    if bad {
        return Err(format!(
            "{kind:?} row {} ({}) under failure policy {policy}, deadline {deadline_ms} ms: want exit {want:?}, got {:?}: {line}",
            image.row,
            if image.signed { "signed" } else { "unsigned" },
            run.code
        ));
    }
    Ok(())
}

/// The agent's peak resident set (`VmHWM`), for the log.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn total_size(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { total_size(&e.path()) } else { m.len() };
    }
    n
}

#[test]
fn junk_never_changes_a_verdict_on_either_registry_kind_or_failure_policy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let (real, spec_server, images) = rt.block_on(async {
        let real = Registry::start(RegistryOptions::default()).await;
        let spec_server = spec::Server::start().await;
        // Where the spec server redirects a `.sig` tag: it must never be asked.
        let other = spec::Server::start().await;
        other.canned("*", (500, vec![], b"{\"errors\":[{\"code\":\"SECRET-BODY\"}]}".to_vec()));
        // Where the spec server redirects blob downloads (a storage backend).
        let storage = spec::Server::start().await;
        let mut images = scenarios(&Target::Real(&real), Kind::TagSchema, &other, &storage).await;
        images.extend(scenarios(&Target::Spec(&spec_server), Kind::ReferrersApi, &other, &storage).await);
        // The valid envelope is the same blob everywhere and the agent keeps
        // what verified: the redirected download must be the first one.
        images.sort_by_key(|i| i.row != "blob-redirect");
        (real, spec_server, (images, other, storage))
    });
    let (images, other, storage) = images;
    eprintln!("set up {} images in {:?}", images.len(), started.elapsed());
    let hosts = vec![real.host.clone(), spec_server.host.clone()];
    let docker_config = tempfile::tempdir().unwrap();
    let credentials = docker_config.path().join("config.json");
    // Basic credentials (u:p) for the spec server, which asks for them on `n/blob-redirect-*`.
    let auths = json!({"auths": {spec_server.host.clone(): {"auth": "dTpw"}}});
    std::fs::write(&credentials, auths.to_string()).unwrap();
    let mut failures = Vec::new();
    // 8 s is the default deadline; 2.4 s is what pullgate-install derives for a 3 s
    // per_verifier_timeout: junk must end in a deny inside it too, not in fail-open.
    for (policy, deadline_ms) in [("open", 8_000), ("closed", 8_000), ("open", 2_400)] {
        let agent = agent_files(&hosts, policy, &credentials).start(&[]);
        let before = total_size(&agent.state_dir);
        for image in &images {
            if let Err(e) = check(&agent, image, policy, deadline_ms) {
                failures.push(e);
            }
        }
        let grown = total_size(&agent.state_dir).saturating_sub(before);
        let hwm = peak_rss_kib(agent.pid());
        eprintln!("failure policy {policy}: state dir grew {grown} bytes; agent VmHWM {hwm} KiB");
        // Junk that did not verify is not kept (the old content store grew by
        // every envelope fetched: hundreds of MiB here), and reports list a
        // bounded number of failed signatures (about 1 MiB for all rows).
        if grown > 4 * MIB as u64 {
            failures.push(format!("failure policy {policy}: the state dir grew by {grown} bytes"));
        }
        if !failures.is_empty() {
            eprintln!("agent stderr:\n{}", agent.stderr());
        }
    }
    assert!(other.seen().is_empty(), "the redirect target was asked: {:?}", other.seen());
    assert!(!storage.seen().is_empty(), "the blob redirect was followed");
    assert!(storage.authorized().is_empty(), "credentials went to the storage host: {:?}", storage.authorized());
    assert!(!spec_server.authorized().is_empty(), "the registry itself got the credentials");
    assert!(
        failures.is_empty(),
        "{} of {} verdicts are wrong:\n{}",
        failures.len(),
        images.len() * 3,
        failures.join("\n")
    );
}
