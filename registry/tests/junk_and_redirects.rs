//! What anyone able to push can attach to an image, and what a registry (or
//! whatever it redirects to) can answer, against a small in-process HTTP
//! server shaped like a distribution-spec registry: junk in referrers lists
//! gives the usable entries plus a note, never an error; only blob
//! downloads follow redirects, and never with the registry's credentials
//! to another host; error bodies reach messages only as a short sanitised
//! reason.

use pullgate_registry::auth::{Credential, Keychain};
use pullgate_registry::types::{Descriptor, ReferrersSource};
use pullgate_registry::{Client, ClientOptions, HostOptions, MAX_REFERRERS, RegistryError, Repository};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const NOTARY: &str = "application/vnd.cncf.notary.signature";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One request as the server saw it: target and lower-cased header lines.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    headers: Vec<String>,
}

impl Seen {
    fn authorization(&self) -> Option<&str> {
        self.headers.iter().find_map(|h| h.strip_prefix("authorization: "))
    }
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);
type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// Serves `handler`'s answers on a free port; records every request.
async fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (handler, log) = (handler.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let mut lines = head.split("\r\n");
                let target = lines.next().unwrap_or_default().split_whitespace().nth(1).unwrap_or_default().to_string();
                let headers = lines.filter(|l| !l.is_empty()).map(lower_name).collect();
                let req = Seen { target, headers };
                log.lock().unwrap().push(req.clone());
                let (status, headers, body) = handler(&req);
                let mut resp =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    (host, seen)
}

fn lower_name(line: &str) -> String {
    match line.split_once(':') {
        Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
        None => line.to_string(),
    }
}

/// Canned answers by request target; 404 for anything else.
fn routes(map: BTreeMap<String, Answer>) -> Handler {
    Arc::new(move |r: &Seen| map.get(&r.target).cloned().unwrap_or((404, Vec::new(), b"{\"errors\":[]}".to_vec())))
}

fn entry(i: usize, artifact_type: &str) -> serde_json::Value {
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{i:064x}"),
        "size": 700,
        "artifactType": artifact_type,
    })
}

fn index(entries: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries})).unwrap()
}

fn ct(t: &str) -> Vec<(String, String)> {
    vec![("Content-Type".to_string(), t.to_string())]
}

fn client(hosts: &[&str], keychain: Keychain) -> Client {
    let mut opts = ClientOptions::default();
    for h in hosts {
        opts.hosts.insert(h.to_string(), HostOptions { insecure: true, ..Default::default() });
    }
    let c = Client::new(opts);
    c.set_keychain(keychain);
    c
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn repo(host: &str) -> Repository {
    Repository { host: host.to_string(), path: "team/app".into() }
}

fn api_path() -> String {
    format!("/v2/team/app/referrers/{SUBJECT}?artifactType=application%2Fvnd.cncf.notary.signature")
}

fn tag_path() -> String {
    format!("/v2/team/app/manifests/{}", SUBJECT.replace(':', "-"))
}

/// The referrers API is missing (404) and the tag-schema index is `body`.
fn tag_schema(body: Vec<u8>) -> Handler {
    let mut m = BTreeMap::new();
    m.insert(tag_path(), (200, ct(INDEX), body));
    routes(m)
}

#[tokio::test]
async fn tag_schema_entries_without_size_or_digest_are_skipped_with_a_note() {
    let no_size = serde_json::json!({"mediaType": "m", "digest": format!("sha256:{:064x}", 7), "artifactType": NOTARY});
    let bad_digest = serde_json::json!({"mediaType": "m", "digest": "sha256:zz", "size": 3, "artifactType": NOTARY});
    let (host, _) = serve(tag_schema(index(vec![no_size, entry(1, NOTARY), bad_digest, serde_json::json!(42)]))).await;
    let r = client(&[&host], Keychain::new()).referrers(&repo(&host), SUBJECT, Some(NOTARY), deadline()).await;
    let r = r.expect("junk entries must not fail the list");
    assert_eq!(r.source, ReferrersSource::TagSchema);
    assert_eq!(r.descriptors.len(), 1, "only the usable entry: {:?}", r.descriptors);
    assert!(r.notes.iter().any(|n| n.contains("3 referrer entries")), "{:?}", r.notes);
}

#[tokio::test]
async fn a_tag_schema_index_that_is_not_json_is_an_empty_list_with_a_note() {
    let (host, _) = serve(tag_schema(b"this is not an index".to_vec())).await;
    let r = client(&[&host], Keychain::new()).referrers(&repo(&host), SUBJECT, Some(NOTARY), deadline()).await;
    let r = r.expect("an unparseable index is junk, not an error");
    assert!(r.descriptors.is_empty());
    assert!(r.notes.iter().any(|n| n.contains("not an OCI index")), "{:?}", r.notes);
}

#[tokio::test]
async fn more_than_the_bound_keeps_preferred_entries_listed_last() {
    let mut entries: Vec<_> = (0..MAX_REFERRERS + 200).map(|i| entry(i, NOTARY)).collect();
    let wanted = format!("sha256:{:064x}", 999_999);
    entries.push(entry(999_999, NOTARY));
    let mut m = BTreeMap::new();
    m.insert(api_path(), (200, ct(INDEX), index(entries)));
    let (host, _) = serve(routes(m)).await;
    let c = client(&[&host], Keychain::new());
    let prefer = |d: &Descriptor| d.digest == wanted;
    let r = c.referrers_preferring(&repo(&host), SUBJECT, Some(NOTARY), &prefer, deadline()).await.unwrap();
    assert_eq!(r.source, ReferrersSource::Api);
    assert_eq!(r.descriptors.len(), MAX_REFERRERS);
    assert!(r.descriptors.iter().any(|d| d.digest == wanted), "the preferred entry survives the bound");
    assert!(r.notes.iter().any(|n| n.contains("more than 1024 referrers")), "{:?}", r.notes);
}

#[tokio::test]
async fn an_oversized_second_page_keeps_the_first_page_with_a_note() {
    let second = format!("/v2/team/app/referrers/{SUBJECT}?last=1");
    let mut m = BTreeMap::new();
    let link = ("Link".to_string(), format!("<{second}>; rel=\"next\""));
    m.insert(api_path(), (200, vec![link, ("Content-Type".into(), INDEX.into())], index(vec![entry(1, NOTARY)])));
    m.insert(second, (200, ct(INDEX), vec![b' '; 4 * 1024 * 1024 + 1]));
    let (host, _) = serve(routes(m)).await;
    let r = client(&[&host], Keychain::new()).referrers(&repo(&host), SUBJECT, Some(NOTARY), deadline()).await;
    let r = r.expect("an oversized page is junk, not an error");
    assert_eq!(r.descriptors.len(), 1);
    assert!(r.notes.iter().any(|n| n.contains("page 2") && n.contains("larger than")), "{:?}", r.notes);
}

#[tokio::test]
async fn an_oversized_tag_schema_index_is_an_empty_list_with_a_note() {
    let (host, _) = serve(tag_schema(vec![b' '; 4 * 1024 * 1024 + 10])).await;
    let r = client(&[&host], Keychain::new()).referrers(&repo(&host), SUBJECT, Some(NOTARY), deadline()).await;
    let r = r.expect("an oversized index is junk, not an error");
    assert!(r.descriptors.is_empty());
    assert!(r.notes.iter().any(|n| n.contains("larger than")), "{:?}", r.notes);
}

#[tokio::test]
async fn a_registry_failure_is_still_an_error() {
    let mut m = BTreeMap::new();
    m.insert(api_path(), (503, Vec::new(), b"<html>backend 10.0.0.7 down</html>".to_vec()));
    let (host, _) = serve(routes(m)).await;
    let err = client(&[&host], Keychain::new()).referrers(&repo(&host), SUBJECT, Some(NOTARY), deadline()).await;
    let err = err.expect_err("a 503 is the registry failing");
    let text = err.to_string();
    assert!(text.contains("HTTP 503"), "{text}");
    assert!(!text.contains("10.0.0.7") && !text.contains("html"), "a non-spec body never reaches a message: {text}");
}

/// A registry whose every answer is a redirect to `to`.
fn redirecting(to: String) -> Handler {
    Arc::new(move |r: &Seen| (302, vec![("Location".to_string(), format!("{to}{}", r.target))], Vec::new()))
}

#[tokio::test]
async fn a_redirect_is_not_followed_for_manifests_tags_or_referrers() {
    let (other, other_seen) =
        serve(Arc::new(|_: &Seen| (500, Vec::new(), b"{\"errors\":[{\"code\":\"SECRET\"}]}".to_vec()))).await;
    let (host, _) = serve(redirecting(format!("http://{other}"))).await;
    let c = client(&[&host], Keychain::new());
    let digest = format!("sha256:{:064x}", 1);
    let by_digest = c.manifest_by_digest(&repo(&host), &digest, deadline()).await.unwrap_err();
    let by_tag = c.manifest_by_tag(&repo(&host), "v1", deadline()).await.unwrap_err();
    let listing = c.referrers(&repo(&host), SUBJECT, Some(NOTARY), deadline()).await.unwrap_err();
    for e in [&by_digest, &by_tag, &listing] {
        assert!(matches!(e, RegistryError::Status { status: 302, .. }), "{e}");
        assert!(e.to_string().contains("followed only for blob downloads"), "{e}");
    }
    assert!(other_seen.lock().unwrap().is_empty(), "the other host was never asked");
}

/// A registry demanding basic auth that redirects blob downloads to `to`.
fn authed_redirecting(to: String) -> Handler {
    Arc::new(move |r: &Seen| {
        if r.authorization().is_none() {
            return (401, vec![("WWW-Authenticate".to_string(), "Basic realm=\"r\"".to_string())], Vec::new());
        }
        (307, vec![("Location".to_string(), format!("{to}/storage/blob?sig=abc"))], Vec::new())
    })
}

#[tokio::test]
async fn a_cross_host_blob_redirect_gets_no_credentials_and_no_challenge_flow() {
    let blob = b"envelope bytes".to_vec();
    let body = blob.clone();
    let (storage, storage_seen) = serve(Arc::new(move |_: &Seen| (200, Vec::new(), body.clone()))).await;
    let (host, seen) = serve(authed_redirecting(format!("http://{storage}"))).await;
    let mut kc = Keychain::new();
    kc.insert(&host, Credential::Basic { username: "u".into(), password: "secret".into() });
    let c = client(&[&host], kc);
    let d = Descriptor {
        media_type: "application/jose+json".into(),
        digest: pullgate_registry::sha256_digest(&blob),
        size: blob.len() as u64,
        artifact_type: None,
        annotations: Default::default(),
    };
    assert_eq!(c.blob(&repo(&host), &d, 1024, deadline()).await.expect("followed"), blob);
    assert!(seen.lock().unwrap().iter().any(|s| s.authorization().is_some()), "the registry got its credentials");
    let at_storage = storage_seen.lock().unwrap().clone();
    assert_eq!(at_storage.len(), 1, "{at_storage:?}");
    assert_eq!(at_storage[0].authorization(), None, "no Authorization to another host: {at_storage:?}");

    // The other host answers 401 with a challenge: reported by status, no token flow run.
    let (token_host, token_seen) = serve(Arc::new(|_: &Seen| (200, Vec::new(), b"{\"token\":\"t\"}".to_vec()))).await;
    let challenge = format!("Bearer realm=\"http://{token_host}/token\",service=\"x\"");
    let (evil, _) = serve(Arc::new(move |_: &Seen| {
        (401, vec![("WWW-Authenticate".to_string(), challenge.clone())], b"{\"errors\":[{\"code\":\"EVIL\"}]}".to_vec())
    }))
    .await;
    let (host2, _) = serve(authed_redirecting(format!("http://{evil}"))).await;
    let mut kc = Keychain::new();
    kc.insert(&host2, Credential::Basic { username: "u".into(), password: "secret".into() });
    let err = client(&[&host2], kc).blob(&repo(&host2), &d, 1024, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Status { status: 401, .. }), "{err}");
    assert!(!err.to_string().contains("EVIL"), "the other host's body is not quoted: {err}");
    assert!(token_seen.lock().unwrap().is_empty(), "no token challenge run for another host");
}

#[tokio::test]
async fn error_reasons_are_sanitised_and_short() {
    let digest = format!("sha256:{:064x}", 3);
    let path = format!("/v2/team/app/manifests/{digest}");
    let body = format!(
        "{{\"errors\":[{{\"code\":\"DENIED\",\"message\":\"no\\u001b]0;pwned\\u0007 {}\"}}]}}",
        "x".repeat(1000)
    );
    let mut m = BTreeMap::new();
    m.insert(path, (418, Vec::new(), body.into_bytes()));
    let (host, _) = serve(routes(m)).await;
    let err = client(&[&host], Keychain::new()).manifest_by_digest(&repo(&host), &digest, deadline()).await;
    let text = err.unwrap_err().to_string();
    assert!(text.contains("HTTP 418: DENIED: no ]0;pwned xxx"), "{text}");
    assert!(text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()), "{text:?}");
    assert!(text.matches('x').count() < 250, "the reason is capped: {} bytes", text.len());
}
