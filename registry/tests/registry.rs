//! The registry client against a real Debian `docker-registry` (which has no
//! referrers API, so the tag-schema fallback is exercised), with the real
//! Notation fixture layouts pushed into it.

use pullgate_registry::auth::{Credential, Keychain};
use pullgate_registry::types::ReferrersSource;
use pullgate_registry::{Client, ClientOptions, HostOptions, RegistryError, Repository};
use pullgate_testkit::{Registry, RegistryOptions};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const SIGNATURE_MANIFEST_PREFIX: &str = "sha256:90ceaff2";
const NOTARY: &str = "application/vnd.cncf.notary.signature";

fn layout(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation/oci-layouts")).join(name)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn client_for(reg: &Registry) -> Client {
    let mut opts = ClientOptions::default();
    let host =
        HostOptions { insecure: reg.ca_pem.is_none(), ca_pem: reg.ca_pem.clone(), max_concurrency: None, rate: None };
    opts.hosts.insert(reg.host.clone(), host);
    Client::new(opts)
}

fn repo(reg: &Registry, path: &str) -> Repository {
    Repository { host: reg.host.clone(), path: path.into() }
}

#[tokio::test]
async fn referrers_fallback_manifest_and_blob() {
    let reg = Registry::start(RegistryOptions::default()).await;
    reg.push_layout("e2e", &layout("e2e-valid-signature")).await;
    let c = client_for(&reg);
    let r = repo(&reg, "e2e");
    let subject = c.manifest_by_digest(&r, SUBJECT, deadline()).await.expect("subject manifest");
    assert_eq!(subject.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(subject.bytes.len(), 517);

    let refs = c.referrers(&r, SUBJECT, Some(NOTARY), deadline()).await.expect("referrers");
    assert_eq!(refs.source, ReferrersSource::TagSchema, "docker-registry 2.8 has no referrers API");
    assert_eq!(refs.descriptors.len(), 1, "{:?}", refs.descriptors);
    assert!(refs.descriptors[0].digest.starts_with(SIGNATURE_MANIFEST_PREFIX));
    let none = c.referrers(&r, SUBJECT, Some("application/vnd.example.other"), deadline()).await.unwrap();
    assert!(none.descriptors.is_empty(), "artifactType filtering applies to the fallback too");

    let sig = c.manifest_by_digest(&r, &refs.descriptors[0].digest, deadline()).await.expect("signature manifest");
    let m: pullgate_registry::types::ImageManifest = serde_json::from_slice(&sig.bytes).unwrap();
    assert_eq!(m.subject.as_ref().map(|s| s.digest.as_str()), Some(SUBJECT));
    let envelope = c.blob(&r, &m.layers[0], 64 * 1024, deadline()).await.expect("envelope blob");
    assert_eq!(envelope.len() as u64, m.layers[0].size);

    // An unsigned image: no referrers at all, not an error.
    reg.push_layout("unsigned", &layout("e2e-unsigned")).await;
    let refs = c.referrers(&repo(&reg, "unsigned"), SUBJECT, None, deadline()).await.unwrap();
    assert!(refs.descriptors.is_empty());

    // Size limits apply before download.
    let err = c.blob(&r, &m.layers[0], 16, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
    let counts = c.request_counts();
    assert!(counts.keys().any(|(h, s)| h == &reg.host && s == "200"), "{counts:?}");
}

#[tokio::test]
async fn tampered_bytes_are_rejected() {
    let reg = Registry::start(RegistryOptions::default()).await;
    reg.push_layout("e2e", &layout("e2e-valid-signature")).await;
    let c = client_for(&reg);
    let r = repo(&reg, "e2e");
    let refs = c.referrers(&r, SUBJECT, Some(NOTARY), deadline()).await.unwrap();
    let sig = c.manifest_by_digest(&r, &refs.descriptors[0].digest, deadline()).await.unwrap();
    let m: pullgate_registry::types::ImageManifest = serde_json::from_slice(&sig.bytes).unwrap();
    // Flip one byte of the stored envelope: same size, different content.
    let path = reg.blob_data_path(&m.layers[0].digest);
    let mut bytes = std::fs::read(&path).expect("stored blob");
    bytes[10] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let err = c.blob(&r, &m.layers[0], 64 * 1024, deadline()).await.unwrap_err();
    match &err {
        RegistryError::DigestMismatch { expected, .. } => assert_eq!(expected, &m.layers[0].digest),
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains("tampered"), "{err}");
    // The same for a manifest.
    let path = reg.blob_data_path(SUBJECT);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[0], b'{');
    bytes.insert(1, b' '); // still valid JSON, so the registry serves it
    std::fs::write(&path, bytes).unwrap();
    let err = c.manifest_by_digest(&r, SUBJECT, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn auth_tls_and_two_registries_with_different_credentials() {
    let a = Registry::start(RegistryOptions { htpasswd: Some(("alice".into(), "a-secret".into())), tls: true }).await;
    let b = Registry::start(RegistryOptions { htpasswd: Some(("bob".into(), "b-secret".into())), tls: true }).await;
    a.push_layout("team/e2e", &layout("e2e-valid-signature")).await;
    b.push_layout("e2e", &layout("e2e-valid-signature")).await;

    let mut opts = ClientOptions::default();
    for r in [&a, &b] {
        opts.hosts.insert(
            r.host.clone(),
            HostOptions { insecure: false, ca_pem: r.ca_pem.clone(), max_concurrency: Some(2), rate: None },
        );
    }
    let c = Client::new(opts.clone());

    // No credentials: a precise refusal.
    let err = c.manifest_by_digest(&repo(&a, "team/e2e"), SUBJECT, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("no credentials"), "{err}");

    // Wrong credentials for one registry must not break the other.
    let mut kc = Keychain::new();
    kc.insert(&a.host, Credential::Basic { username: "alice".into(), password: "wrong".into() });
    kc.insert(&format!("{}/e2e", b.host), Credential::Basic { username: "bob".into(), password: "b-secret".into() });
    c.set_keychain(kc);
    let err = c.manifest_by_digest(&repo(&a, "team/e2e"), SUBJECT, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("configured credentials"), "{err}");
    let ok = c.manifest_by_digest(&repo(&b, "e2e"), SUBJECT, deadline()).await.expect("registry b still works");
    assert_eq!(ok.digest, SUBJECT);

    // Right credentials for both.
    let mut kc = Keychain::new();
    kc.insert(&a.host, Credential::Basic { username: "alice".into(), password: "a-secret".into() });
    kc.insert(&b.host, Credential::Basic { username: "bob".into(), password: "b-secret".into() });
    c.set_keychain(kc);
    for (reg, path) in [(&a, "team/e2e"), (&b, "e2e")] {
        let refs = c.referrers(&repo(reg, path), SUBJECT, Some(NOTARY), deadline()).await.expect("referrers with auth");
        assert_eq!(refs.descriptors.len(), 1);
    }

    // Without the test CA, TLS verification fails: the registry is not trusted.
    let mut no_ca = opts.clone();
    no_ca.hosts.get_mut(&a.host).unwrap().ca_pem = None;
    let err = Client::new(no_ca).manifest_by_digest(&repo(&a, "team/e2e"), SUBJECT, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn unreachable_registry_and_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut opts = ClientOptions::default();
    let host = format!("127.0.0.1:{port}");
    opts.hosts.insert(host.clone(), HostOptions { insecure: true, ..Default::default() });
    let c = Client::new(opts);
    let r = Repository { host: host.clone(), path: "x".into() };
    let err = c.manifest_by_digest(&r, SUBJECT, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&host), "{err}");

    // A server that accepts and never answers: the deadline ends the wait.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut opts = ClientOptions::default();
    opts.hosts.insert(host.clone(), HostOptions { insecure: true, ..Default::default() });
    let c = Client::new(opts);
    let r = Repository { host, path: "x".into() };
    let started = std::time::Instant::now();
    let err = c.manifest_by_digest(&r, SUBJECT, Instant::now() + Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Deadline { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bearer_token_flow_against_token_auth() {
    use pullgate_testkit::token::TokenServer;
    let mut reg = Registry::start(RegistryOptions::default()).await;
    reg.push_layout("team/e2e", &layout("e2e-valid-signature")).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "carol", "c-secret", 300).await;
    reg.enable_token_auth(&tokens.realm, &tokens.cert_path).await;
    let r = repo(&reg, "team/e2e");

    // Anonymous: the token endpoint refuses, and the error says so.
    let c = client_for(&reg);
    let err = c.manifest_by_digest(&r, SUBJECT, deadline()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(tokens.refused() >= 1);

    // With credentials: one token for the repository's pull scope, reused
    // from the cache for every later request until it expires.
    let mut kc = Keychain::new();
    kc.insert(&reg.host, Credential::Basic { username: "carol".into(), password: "c-secret".into() });
    c.set_keychain(kc);
    let m = c.manifest_by_digest(&r, SUBJECT, deadline()).await.expect("manifest with a bearer token");
    assert_eq!(m.digest, SUBJECT);
    let refs = c.referrers(&r, SUBJECT, Some(NOTARY), deadline()).await.expect("referrers with a bearer token");
    assert_eq!(refs.descriptors.len(), 1);
    let sig = c.manifest_by_digest(&r, &refs.descriptors[0].digest, deadline()).await.unwrap();
    let parsed: pullgate_registry::types::ImageManifest = serde_json::from_slice(&sig.bytes).unwrap();
    c.blob(&r, &parsed.layers[0], 64 * 1024, deadline()).await.expect("blob with a bearer token");
    assert_eq!(tokens.issued(), 1, "the token is cached per scope");

    // Another repository is another scope: a second token (the repository
    // does not exist, which the lookup reports as no referrers).
    let other = repo(&reg, "team/other");
    let _ = c.referrers(&other, SUBJECT, None, deadline()).await.unwrap();
    assert_eq!(tokens.issued(), 2);

    // New credentials drop cached tokens.
    let mut kc = Keychain::new();
    kc.insert(&reg.host, Credential::Basic { username: "carol".into(), password: "wrong".into() });
    c.set_keychain(kc);
    let err = c.manifest_by_digest(&r, SUBJECT, deadline()).await.unwrap_err();
    assert!(err.to_string().contains("token endpoint answered HTTP 401"), "{err}");
}

#[derive(Default)]
struct MemoryContent(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);

impl pullgate_registry::ContentStore for MemoryContent {
    fn get(&self, digest: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(digest).cloned()
    }
    fn put(&self, digest: &str, bytes: &[u8]) {
        self.0.lock().unwrap().insert(digest.to_string(), bytes.to_vec());
    }
}

fn total_requests(c: &Client) -> u64 {
    c.request_counts().values().sum()
}

#[tokio::test]
async fn content_store_and_referrers_cache_save_requests_but_never_trust_bad_bytes() {
    let reg = Registry::start(RegistryOptions::default()).await;
    reg.push_layout("e2e", &layout("e2e-valid-signature")).await;
    let store = std::sync::Arc::new(MemoryContent::default());
    let mut opts = ClientOptions::default();
    opts.hosts.insert(reg.host.clone(), HostOptions { insecure: true, ..Default::default() });
    opts.content_store = Some(store.clone());
    let r = repo(&reg, "e2e");

    let c = Client::new(opts.clone());
    let refs = c.referrers(&r, SUBJECT, Some(NOTARY), deadline()).await.unwrap();
    let sig = c.manifest_by_digest(&r, &refs.descriptors[0].digest, deadline()).await.unwrap();
    let m: pullgate_registry::types::ImageManifest = serde_json::from_slice(&sig.bytes).unwrap();
    let envelope = c.blob(&r, &m.layers[0], 64 * 1024, deadline()).await.unwrap();
    assert!(store.0.lock().unwrap().is_empty(), "nothing is stored unless the caller keeps it");
    // What a verification used is kept by the caller.
    c.keep(&sig.digest, &sig.bytes);
    c.keep(&m.layers[0].digest, &envelope);
    c.keep(&m.layers[0].digest, b"bytes that do not hash to the digest are not kept");
    assert_eq!(store.0.lock().unwrap().get(&m.layers[0].digest), Some(&envelope));
    let first = total_requests(&c);

    // A second client (e.g. after a config change) with the same store: the
    // referrers list is fetched again, the manifest and envelope are not.
    let c2 = Client::new(opts.clone());
    let again = c2.referrers(&r, SUBJECT, Some(NOTARY), deadline()).await.unwrap();
    assert_eq!(again.descriptors, refs.descriptors);
    let sig2 = c2.manifest_by_digest(&r, &refs.descriptors[0].digest, deadline()).await.unwrap();
    assert_eq!(sig2.bytes, sig.bytes);
    assert_eq!(c2.blob(&r, &m.layers[0], 64 * 1024, deadline()).await.unwrap(), envelope);
    let after_referrers = total_requests(&c2);
    assert!(after_referrers < first, "stored manifest and blob are not fetched again: {after_referrers} vs {first}");
    // The same client asks for the same referrers within the TTL: no request.
    c2.referrers(&r, SUBJECT, Some(NOTARY), deadline()).await.unwrap();
    assert_eq!(total_requests(&c2), after_referrers);

    // A poisoned store entry is re-hashed, ignored and fetched from the registry.
    store.0.lock().unwrap().insert(m.layers[0].digest.clone(), b"evil bytes".to_vec());
    let fetched = c2.blob(&r, &m.layers[0], 64 * 1024, deadline()).await.unwrap();
    assert_eq!(fetched, envelope);
    assert_eq!(total_requests(&c2), after_referrers + 1, "the blob came from the registry");
}
