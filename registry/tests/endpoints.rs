//! hosts.toml endpoints and the shared TLS setup against real Debian
//! `docker-registry` instances: a TLS mirror trusted through hosts.toml
//! `ca`, fallback past failing and empty endpoints, a mirror serving other
//! bytes, the system trust store read at most once per process however
//! many clients and endpoints there are, and one registry's plain-HTTP
//! mirror never making that mirror's host plain HTTP (or credentialed over
//! plain HTTP) anywhere else.

use pullgate_registry::auth::{Credential, Keychain};
use pullgate_registry::hosts::HostsDirs;
use pullgate_registry::types::Descriptor;
use pullgate_registry::{Client, ClientOptions, HostOptions, Repository, tls};
use pullgate_testkit::{Registry, RegistryOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// What clients sent on each connection through a [`relay`].
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP relay on a free port in front of `to`, recording the bytes each
/// connection sends, so a test sees what crossed the wire in the clear.
/// Its tasks end with the test's runtime.
async fn relay(to: String) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (to, record) = (to.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&to).await else { return };
                let index = {
                    let mut all = record.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let (mut from_client, mut to_client) = client.split();
                let (mut from_server, mut to_server) = server.split();
                let up = async {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        record.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                };
                let _ = tokio::join!(up, tokio::io::copy(&mut from_server, &mut to_client));
            });
        }
    });
    (addr, seen)
}

fn sent_in_clear(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap().iter().map(|c| String::from_utf8_lossy(c).to_ascii_lowercase()).collect()
}

#[tokio::test]
async fn a_plain_http_mirror_of_one_registry_stays_https_and_uncredentialed_for_its_own_images() {
    const PASS: &str = "b-s3cret-pass";
    let b = Registry::start(RegistryOptions { htpasswd: Some(("puller".into(), PASS.into())), tls: false }).await;
    let a = Registry::start(RegistryOptions::default()).await;
    let (digest, _) = push_image(&a, "same").await;
    assert_eq!(push_image(&b, "same").await.0, digest);
    let (b_host, seen) = relay(b.host.clone()).await;
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs.d");
    // Registry A's hosts.toml lists B over plain HTTP; nothing marks B insecure.
    write_hosts(&certs, &a.host, &format!("[host.\"http://{b_host}\"]\n"));
    let mut keychain = Keychain::new();
    keychain.insert(&b_host, Credential::Basic { username: "puller".into(), password: PASS.into() });
    let c = client(&a, &certs);
    c.set_keychain(keychain.clone());
    let repo_a = Repository { host: a.host.clone(), path: "app".into() };
    let m = c.manifest_by_tag(&repo_a, "v1", deadline()).await.unwrap().expect("the tag");
    assert_eq!(m.digest, digest);
    let served = c.served_by(&repo_a);
    let clear = sent_in_clear(&seen);

    // B's own image, after A's mirror list named B over plain HTTP: HTTPS
    // (which B, serving plain HTTP, cannot answer), never plain HTTP.
    let before: Vec<usize> = seen.lock().unwrap().iter().map(Vec::len).collect();
    let repo_b = Repository { host: b_host.clone(), path: "app".into() };
    let own = c.manifest_by_tag(&repo_b, "v1", deadline()).await;
    assert!(own.is_err(), "B's own image was fetched over plain HTTP: {:?}", own.map(|m| m.map(|m| m.digest)));
    let after = seen.lock().unwrap().clone();
    let reused: Vec<usize> = after[..before.len()].iter().map(Vec::len).collect();
    assert_eq!(reused, before, "nothing more was sent on the plain-HTTP connections");
    let later = &after[before.len()..];
    assert!(!later.is_empty(), "B was asked");
    assert!(later.iter().all(|c| c.first() == Some(&0x16)), "only TLS handshakes reached B: {later:?}");

    // As A's mirror B was asked over plain HTTP, anonymously; refused, so A served.
    assert!(clear.iter().any(|r| r.starts_with("get /v2/app/")), "A's mirror B was asked over plain HTTP: {clear:?}");
    assert!(clear.iter().all(|r| !r.contains("authorization:")), "B's credentials crossed plain HTTP: {clear:?}");
    assert_eq!(served, None, "B refused the anonymous request; A itself served");

    // Marked insecure in the agent's own settings, B may be sent its credentials over plain HTTP.
    let mut opts = ClientOptions::default();
    opts.hosts.insert(a.host.clone(), HostOptions { insecure: true, ..Default::default() });
    opts.hosts.insert(b_host.clone(), HostOptions { insecure: true, ..Default::default() });
    opts.hosts_dirs = Some(Arc::new(HostsDirs::new(vec![certs.clone()], None)));
    let c = Client::new(opts);
    c.set_keychain(keychain);
    c.manifest_by_tag(&repo_a, "v1", deadline()).await.unwrap().expect("the tag");
    assert_eq!(
        c.served_by(&repo_a),
        Some(format!("http://{b_host}/v2")),
        "the insecure mirror served with credentials"
    );
}

#[tokio::test]
async fn a_referrers_list_names_the_mirror_that_served_it() {
    let upstream = Registry::start(RegistryOptions::default()).await;
    let mirror = Registry::start(RegistryOptions::default()).await;
    let (subject, _) = push_image(&upstream, "subject").await;
    let (referrer, _) = push_image(&mirror, "referrer").await;
    push_image(&mirror, "subject").await;
    // The referrers tag schema: an index under `sha256-<hex>` listing the referrer.
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MANIFEST, "digest": referrer, "size": 1, "artifactType": "application/x-test"}]
    });
    let tag = subject.replace(':', "-");
    mirror
        .push_manifest("app", &tag, "application/vnd.oci.image.index.v1+json", serde_json::to_vec(&index).unwrap())
        .await;
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs.d");
    write_hosts(&certs, &upstream.host, &format!("[host.\"http://{}\"]\n", mirror.host));
    let c = client(&upstream, &certs);
    let repo = Repository { host: upstream.host.clone(), path: "app".into() };
    let listed = c.referrers(&repo, &subject, None, deadline()).await.unwrap();
    assert_eq!(listed.descriptors.len(), 1);
    assert_eq!(listed.served_by, Some(format!("http://{}/v2", mirror.host)), "the list carries its endpoint");
    let other = c.referrers(&repo, &referrer, None, deadline()).await.unwrap();
    assert!(other.descriptors.is_empty());
    assert_eq!(other.served_by, None, "nothing listed anywhere: the registry itself answered last");
}
