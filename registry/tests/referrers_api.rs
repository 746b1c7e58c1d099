//! The OCI 1.1 referrers API path. Debian's `docker-registry` 2.8 has no
//! referrers API and no registry that has one can be installed here, so this
//! suite uses a small in-process HTTP server that answers the way the
//! distribution spec says a 1.1 registry does: an image index, `Link`
//! pagination, optional `OCI-Filters-Applied`; and, for registries without
//! the API, 404 / 400 / 405 with the referrers tag schema behind them.

use pullgate_registry::types::ReferrersSource;
use pullgate_registry::{Client, ClientOptions, HostOptions, Repository};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const NOTARY: &str = "application/vnd.cncf.notary.signature";
const SBOM: &str = "application/spdx+json";

fn entry(n: u8, artifact_type: &str) -> serde_json::Value {
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)),
        "size": 100 + u64::from(n),
        "artifactType": artifact_type,
    })
}

fn index(entries: Vec<serde_json::Value>) -> String {
    serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})
        .to_string()
}

/// A canned answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, String);

/// Serves the canned answers by request target; records every request target.
async fn serve(routes: HashMap<String, Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (routes, log) = (Arc::new(routes), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (routes, log) = (routes.clone(), log.clone());
            tokio::spawn(async move {
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
                log.lock().unwrap().push(target.clone());
                let (status, headers, body) =
                    routes.get(&target).cloned().unwrap_or((404, Vec::new(), "{\"errors\":[]}".to_string()));
                let mut resp =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (host, seen)
}

fn client(host: &str) -> Client {
    let mut opts = ClientOptions::default();
    opts.hosts.insert(host.to_string(), HostOptions { insecure: true, ..Default::default() });
    Client::new(opts)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn ct(t: &str) -> (String, String) {
    ("Content-Type".to_string(), t.to_string())
}

#[tokio::test]
async fn native_api_with_pagination_and_client_side_filtering() {
    let first = format!("/v2/team/app/referrers/{SUBJECT}?artifactType=application%2Fvnd.cncf.notary.signature");
    let second = format!("/v2/team/app/referrers/{SUBJECT}?last=page1");
    let mut routes = HashMap::new();
    routes.insert(
        first.clone(),
        (
            200,
            vec![ct("application/vnd.oci.image.index.v1+json"), ("Link".into(), format!("<{second}>; rel=\"next\""))],
            index(vec![entry(1, NOTARY), entry(2, SBOM)]),
        ),
    );
    routes.insert(
        second.clone(),
        (200, vec![ct("application/vnd.oci.image.index.v1+json")], index(vec![entry(3, NOTARY)])),
    );
    let (host, seen) = serve(routes).await;
    let repo = Repository { host: host.clone(), path: "team/app".into() };
    let r = client(&host).referrers(&repo, SUBJECT, Some(NOTARY), deadline()).await.expect("referrers");
    assert_eq!(r.source, ReferrersSource::Api);
    let digests: Vec<&str> = r.descriptors.iter().map(|d| d.digest.as_str()).collect();
    assert_eq!(digests.len(), 2, "both pages, and the SBOM filtered out client-side: {digests:?}");
    assert!(r.descriptors.iter().all(|d| d.artifact_type.as_deref() == Some(NOTARY)));
    assert_eq!(*seen.lock().unwrap(), vec![first, second], "followed the Link header once");
}

#[tokio::test]
async fn server_side_filtering_is_trusted_when_announced() {
    let first = format!("/v2/team/app/referrers/{SUBJECT}?artifactType=application%2Fvnd.cncf.notary.signature");
    let mut routes = HashMap::new();
    // A registry that says it filtered: the client keeps what it was given.
    routes.insert(
        first,
        (
            200,
            vec![ct("application/vnd.oci.image.index.v1+json"), ("OCI-Filters-Applied".into(), "artifactType".into())],
            index(vec![entry(1, NOTARY)]),
        ),
    );
    let (host, _) = serve(routes).await;
    let repo = Repository { host: host.clone(), path: "team/app".into() };
    let r = client(&host).referrers(&repo, SUBJECT, Some(NOTARY), deadline()).await.unwrap();
    assert_eq!(r.descriptors.len(), 1);
}

#[tokio::test]
async fn no_referrers_api_falls_back_to_the_tag_schema_on_404_400_and_405() {
    for status in [404u16, 400, 405] {
        let api = format!("/v2/team/app/referrers/{SUBJECT}");
        let tag = format!("/v2/team/app/manifests/{}", SUBJECT.replace(':', "-"));
        let mut routes = HashMap::new();
        routes.insert(api.clone(), (status, Vec::new(), "{}".into()));
        routes.insert(
            tag.clone(),
            (200, vec![ct("application/vnd.oci.image.index.v1+json")], index(vec![entry(7, NOTARY), entry(8, SBOM)])),
        );
        let (host, seen) = serve(routes).await;
        let repo = Repository { host: host.clone(), path: "team/app".into() };
        let r = client(&host).referrers(&repo, SUBJECT, None, deadline()).await.expect("fallback");
        assert_eq!(r.source, ReferrersSource::TagSchema, "status {status}");
        assert_eq!(r.descriptors.len(), 2, "status {status}");
        assert_eq!(*seen.lock().unwrap(), vec![api, tag], "status {status}");
    }
}

#[tokio::test]
async fn other_errors_are_not_mistaken_for_a_missing_api() {
    let api = format!("/v2/team/app/referrers/{SUBJECT}");
    let mut routes = HashMap::new();
    routes.insert(api, (500, Vec::new(), "{\"errors\":[{\"code\":\"UNKNOWN\"}]}".into()));
    let (host, seen) = serve(routes).await;
    let repo = Repository { host: host.clone(), path: "team/app".into() };
    let err = client(&host).referrers(&repo, SUBJECT, None, deadline()).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1, "no fallback after a server error");
}
