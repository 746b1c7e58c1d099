//! hosts.toml endpoints and the shared TLS setup against real Debian
//! `docker-registry` instances: a TLS mirror trusted through hosts.toml
//! `ca`, fallback past failing and empty endpoints, a mirror serving other
//! bytes, and the system trust store read at most once per process however
//! many clients and endpoints there are.

use pullgate_registry::hosts::HostsDirs;
use pullgate_registry::types::Descriptor;
use pullgate_registry::{Client, ClientOptions, HostOptions, Repository, tls};
use pullgate_testkit::{Registry, RegistryOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// A manifest with one config blob, pushed as `app:v1`; returns its digest and the blob.
async fn push_image(reg: &Registry, marker: &str) -> (String, Descriptor) {
    let blob = format!("{{\"marker\":\"{marker}\"}}").into_bytes();
    let size = blob.len() as u64;
    let digest = reg.push_blob("app", blob).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": size},
        "layers": []
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let mdigest = pullgate_registry::sha256_digest(&bytes);
    reg.push_manifest("app", "v1", MANIFEST, bytes).await;
    let media_type = "application/vnd.oci.image.config.v1+json".into();
    (mdigest, Descriptor { media_type, digest, size, artifact_type: None, annotations: Default::default() })
}

fn client(upstream: &Registry, certs: &std::path::Path) -> Client {
    let mut opts = ClientOptions::default();
    opts.hosts.insert(upstream.host.clone(), HostOptions { insecure: true, ..Default::default() });
    opts.hosts_dirs = Some(Arc::new(HostsDirs::new(vec![certs.to_path_buf()], None)));
    Client::new(opts)
}

fn write_hosts(certs: &std::path::Path, host: &str, text: &str) {
    std::fs::create_dir_all(certs.join(host)).unwrap();
    std::fs::write(certs.join(host).join("hosts.toml"), text).unwrap();
}

#[tokio::test]
async fn a_tls_mirror_trusted_by_hosts_toml_serves_first_and_roots_are_read_once() {
    let upstream = Registry::start(RegistryOptions::default()).await;
    let mirror = Registry::start(RegistryOptions { tls: true, ..Default::default() }).await;
    let (digest, config) = push_image(&mirror, "mirror").await;
    push_image(&upstream, "upstream").await;
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs.d");
    write_hosts(&certs, &upstream.host, &format!("[host.\"https://{}\"]\n  ca = \"mirror-ca.pem\"\n", mirror.host));
    std::fs::write(certs.join(&upstream.host).join("mirror-ca.pem"), mirror.ca_pem.clone().unwrap()).unwrap();
    let repo = Repository { host: upstream.host.clone(), path: "app".into() };
    for _ in 0..3 {
        // A new client each time, as config reloads and the one-shot verify build them.
        let c = client(&upstream, &certs);
        let m = c.manifest_by_tag(&repo, "v1", deadline()).await.unwrap().expect("the tag");
        assert_eq!(m.digest, digest, "the mirror's manifest, not the upstream's");
        c.blob(&repo, &config, 1024, deadline()).await.unwrap();
        assert_eq!(c.served_by(&repo).as_deref(), Some(format!("https://{}/v2", mirror.host).as_str()));
    }
    assert_eq!(tls::system_root_loads(), 1, "three clients, one system store read");
    assert_eq!(upstream.access_count(), 0, "the registry itself was not needed");
}

#[tokio::test]
async fn fallback_passes_failures_misses_and_wrong_bytes_and_ends_at_the_registry() {
    let upstream = Registry::start(RegistryOptions::default()).await;
    let empty = Registry::start(RegistryOptions::default()).await;
    let tampered = Registry::start(RegistryOptions::default()).await;
    let (digest, config) = push_image(&upstream, "same").await;
    let (tdigest, tconfig) = push_image(&tampered, "same").await;
    assert_eq!((&tdigest, &tconfig.digest), (&digest, &config.digest));
    let stored = tampered.blob_data_path(&config.digest);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[2] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs.d");
    write_hosts(
        &certs,
        &upstream.host,
        &format!("[host.\"http://{closed}\"]\n[host.\"http://{}\"]\n[host.\"http://{}\"]\n", empty.host, tampered.host),
    );
    let c = client(&upstream, &certs);
    let repo = Repository { host: upstream.host.clone(), path: "app".into() };
    let blob = c.blob(&repo, &config, 1024, deadline()).await.expect("the registry's intact blob");
    assert_eq!(pullgate_registry::sha256_digest(&blob), config.digest);
    assert!(empty.access_count() > 0 && tampered.access_count() > 0, "every endpoint was tried in order");
    assert_eq!(c.served_by(&repo), None, "the registry itself served it");

    // Without the registry behind them, wrong bytes are an error, never content.
    write_hosts(&certs, &upstream.host, &format!("server = \"http://{}\"\n", tampered.host));
    let c = client(&upstream, &certs);
    let err = c.blob(&repo, &config, 1024, deadline()).await.unwrap_err();
    assert!(err.to_string().contains("does not match its digest"), "{err}");
}
