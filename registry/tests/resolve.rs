//! `Client::resolve` against a real Debian `docker-registry` holding a
//! Notation fixture layout: a tag resolves to the digest, media type and size
//! of the manifest it names; a missing tag is `NotFound`.

use pullgate_registry::{Client, ClientOptions, HostOptions, RegistryError, Repository};
use pullgate_testkit::{Registry, RegistryOptions};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

fn layout(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation/oci-layouts")).join(name)
}

/// The `v1` entry of the layout's `index.json`: (digest, media type, size).
fn tagged(layout: &std::path::Path) -> (String, String, u64) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .expect("a v1 tag in index.json")
        .clone();
    (m["digest"].as_str().unwrap().into(), m["mediaType"].as_str().unwrap().into(), m["size"].as_u64().unwrap())
}

#[tokio::test]
async fn resolves_tags_to_descriptors() {
    let reg = Registry::start(RegistryOptions::default()).await;
    let path = layout("e2e-valid-signature");
    reg.push_layout("app", &path).await;
    let mut opts = ClientOptions::default();
    opts.hosts.insert(reg.host.clone(), HostOptions { insecure: true, ..HostOptions::default() });
    let client = Client::new(opts);
    let repo = Repository { host: reg.host.clone(), path: "app".into() };
    let deadline = Instant::now() + Duration::from_secs(20);

    let got = client.resolve(&repo, "v1", deadline).await.expect("v1 resolves");
    assert_eq!(got, tagged(&path));
    // The digest is the one the manifest's bytes hash to: fetching by it succeeds.
    let m = client.manifest_by_digest(&repo, &got.0, deadline).await.unwrap();
    assert_eq!(m.bytes.len() as u64, got.2);

    let err = client.resolve(&repo, "v2", deadline).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.is_not_found());
    assert!(err.to_string().contains(&format!("{}/app:v2", reg.host)), "{err}");
}
