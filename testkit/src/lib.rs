//! Real external parts for pullgate's tests: a Debian `docker-registry`
//! process on a free 127.0.0.1 port (optionally with htpasswd auth and TLS
//! from a throw-away test CA), and a pusher that uploads OCI image layouts
//! (such as the Notation fixtures) into it over the distribution API.
//!
//! Nothing here is used by production code.

pub mod containerd;
pub mod sign;
pub mod token;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The Debian package binary.
pub const REGISTRY_BIN: &str = "docker-registry";

/// Options for a registry instance.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `(user, password)` for htpasswd basic auth.
    pub htpasswd: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a fresh test CA.
    pub tls: bool,
}

/// A running `docker-registry`; killed on drop.
pub struct Registry {
    child: Child,
    dir: TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// PEM of the CA that signed the registry's certificate, when TLS is on.
    pub ca_pem: Option<Vec<u8>>,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Skips nothing: fails loudly when the registry binary is missing.
fn registry_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(REGISTRY_BIN);
        if p.exists() {
            return p;
        }
    }
    panic!("{REGISTRY_BIN} is not installed; run scripts/test (it installs Debian's docker-registry)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Registry {
    /// Starts a registry and waits until it answers.
    pub async fn start(opts: RegistryOptions) -> Registry {
        let bin = registry_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: pullgate-test\n",
            dir.path().join("storage").display()
        );
        let mut ca_pem = None;
        if opts.tls {
            let (ca, cert, key) = make_tls(dir.path());
            cfg.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            ca_pem = Some(std::fs::read(ca).expect("ca"));
        }
        if let Some((u, p)) = &opts.htpasswd {
            let file = dir.path().join("htpasswd");
            let out =
                Command::new("htpasswd").args(["-Bbn", u, p]).output().expect("htpasswd (apache2-utils) installed");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(&file, out.stdout).expect("write htpasswd");
            cfg.push_str(&format!("auth:\n  htpasswd:\n    realm: pullgate-test\n    path: {}\n", file.display()));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let access = std::fs::File::create(dir.path().join("access.log")).expect("access log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(access)
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(20));
        if let Some(pem) = &ca_pem {
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem).expect("ca pem"));
        }
        let reg = Registry { child, dir, host, ca_pem, http: builder.build().expect("client"), auth: opts.htpasswd };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reg.http.get(format!("{}/v2/", reg.base())).send().await
                && (r.status().is_success() || r.status().as_u16() == 401)
            {
                break;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start: {}", reg.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reg
    }

    /// Restarts the registry (same storage, port and logs) with bearer-token
    /// auth from a [`token::TokenServer`]: push content first, then call this.
    pub async fn enable_token_auth(&mut self, realm: &str, bundle: &Path) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let cfg_path = self.dir.path().join("config.yml");
        let mut cfg = std::fs::read_to_string(&cfg_path).expect("registry config");
        assert!(!cfg.contains("\nauth:"), "the registry already has an auth section");
        cfg.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            token::SERVICE,
            token::ISSUER,
            bundle.display()
        ));
        std::fs::write(&cfg_path, cfg).expect("write registry config");
        let append = |name: &str| {
            std::fs::OpenOptions::new().append(true).create(true).open(self.dir.path().join(name)).expect("log")
        };
        self.child = Command::new(registry_binary())
            .arg("serve")
            .arg(&cfg_path)
            .stdout(append("access.log"))
            .stderr(append("registry.log"))
            .spawn()
            .expect("restart docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/v2/", self.base())).send().await
                && r.status().as_u16() == 401
            {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry did not restart: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://host` or `https://host`.
    pub fn base(&self) -> String {
        format!("{}://{}", if self.ca_pem.is_some() { "https" } else { "http" }, self.host)
    }

    /// The registry's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Number of content reads (GET/HEAD under `/v2/<name>/…`) in the
    /// registry's access log; pushes and the `/v2/` probe are not counted.
    pub fn access_count(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter(|l| (l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/")) && !l.contains(" /v2/ HTTP"))
            .count()
    }

    /// Storage root on disk, e.g. to tamper with a stored blob.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("digest");
        self.dir.path().join(format!("storage/docker/registry/v2/blobs/{alg}/{}/{hex}/data", &hex[..2]))
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base()));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Uploads one blob (monolithic upload).
    pub async fn push_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = sha256(&bytes);
        let r =
            self.req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await.expect("start upload");
        assert_eq!(r.status().as_u16(), 202, "start upload: {}", r.text().await.unwrap_or_default());
        let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).expect("location").to_string();
        let url = if loc.starts_with("http") { loc } else { format!("{}{loc}", self.base()) };
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut put = self.http.put(format!("{url}{sep}digest={digest}")).body(bytes);
        if let Some((u, p)) = &self.auth {
            put = put.basic_auth(u, Some(p));
        }
        let r = put.header("content-type", "application/octet-stream").send().await.expect("upload");
        assert_eq!(r.status().as_u16(), 201, "upload {digest}: {}", r.text().await.unwrap_or_default());
        digest
    }

    /// Puts a manifest under `reference` (tag or digest).
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: Vec<u8>) {
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(bytes)
            .send()
            .await
            .expect("put manifest");
        assert_eq!(r.status().as_u16(), 201, "put manifest {repo}:{reference}: {}", r.text().await.unwrap_or_default());
    }

    /// Attaches a cosign fixture signature (a directory with `manifest.json`,
    /// `payload.json`, `mediatype.txt`, `signature.b64` and optionally
    /// `cert.pem`, `chain.pem`, `rekor-bundle.json`) the way cosign does: an
    /// OCI manifest tagged `sha256-<digest of manifest.json>.sig` whose one
    /// layer is the payload, the signature material in its annotations.
    /// Returns the signed image's digest.
    pub async fn attach_cosign_signature(&self, repo: &str, case: &Path) -> String {
        let read = |f: &str| std::fs::read_to_string(case.join(f)).ok().map(|s| s.trim().to_string());
        let subject = sha256(&std::fs::read(case.join("manifest.json")).expect("manifest.json"));
        let payload = std::fs::read(case.join("payload.json")).expect("payload.json");
        let payload_len = payload.len();
        let payload_digest = self.push_blob(repo, payload).await;
        let config = br#"{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let config_len = config.len();
        let config_digest = self.push_blob(repo, config).await;
        let mut annotations = serde_json::Map::new();
        for (file, key) in [
            ("signature.b64", "dev.cosignproject.cosign/signature"),
            ("cert.pem", "dev.sigstore.cosign/certificate"),
            ("chain.pem", "dev.sigstore.cosign/chain"),
            ("rekor-bundle.json", "dev.sigstore.cosign/bundle"),
        ] {
            if let Some(v) = read(file) {
                annotations.insert(key.into(), serde_json::Value::String(v));
            }
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
            "layers": [{
                "mediaType": read("mediatype.txt").expect("mediatype.txt"),
                "digest": payload_digest,
                "size": payload_len,
                "annotations": annotations,
            }],
        });
        let tag = format!("{}.sig", subject.replace(':', "-"));
        let bytes = serde_json::to_vec(&manifest).expect("manifest JSON");
        self.push_manifest(repo, &tag, "application/vnd.oci.image.manifest.v1+json", bytes).await;
        subject
    }

    /// Uploads an OCI image layout: every blob, then every manifest by digest
    /// (image manifests before indexes, as the registry checks children
    /// exist), then the tags named in `index.json`.
    pub async fn push_layout(&self, repo: &str, layout: &Path) {
        let blobs = layout.join("blobs/sha256");
        let mut manifests = Vec::new();
        let mut indexes = Vec::new();
        let mut entries: Vec<_> =
            std::fs::read_dir(&blobs).expect("layout blobs").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).expect("blob");
            let digest = self.push_blob(repo, bytes.clone()).await;
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                let mt = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or_default().to_string();
                if v.get("manifests").is_some() && v.get("schemaVersion").is_some() {
                    indexes.push((digest, mt_or(mt, "application/vnd.oci.image.index.v1+json"), bytes));
                } else if v.get("config").is_some() && v.get("layers").is_some() {
                    manifests.push((digest, mt_or(mt, "application/vnd.oci.image.manifest.v1+json"), bytes));
                }
            }
        }
        for (d, mt, b) in manifests.iter().chain(indexes.iter()) {
            self.push_manifest(repo, d, mt, b.clone()).await;
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("index json");
        for m in index["manifests"].as_array().cloned().unwrap_or_default() {
            let Some(tag) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() else { continue };
            let digest = m["digest"].as_str().expect("digest");
            let (_, mt, bytes) = manifests
                .iter()
                .chain(indexes.iter())
                .find(|(d, _, _)| d == digest)
                .unwrap_or_else(|| panic!("{digest} named in index.json is not a manifest blob"));
            self.push_manifest(repo, tag, mt, bytes.clone()).await;
        }
    }
}

fn mt_or(mt: String, default: &str) -> String {
    if mt.is_empty() { default.to_string() } else { mt }
}

/// `sha256:<hex>` of `bytes`, computed with the system's sha256sum-free path (Rust only).
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Creates a test CA and a server certificate for 127.0.0.1 with the openssl CLI.
/// Returns (ca.pem, server.pem, server.key).
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=pullgate test CA",
            ])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
        "openssl CA",
    );
    run(
        Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
        "openssl CSR",
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
        "openssl sign",
    );
    (ca, cert, key)
}

/// The shared third-party test vectors (`shared/fixtures`, beside the repository).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures"))
}

/// A `pullgate.toml` that verifies every image on `host` (plain HTTP) with
/// Notation in scope `signed`, denying everything else. `extra` goes at the
/// top level, before the tables (keys such as `allowedUids`, or whole tables).
pub fn notation_config(host: &str, extra: &str) -> String {
    format!(
        r#"defaultAction = "deny"
{extra}
[notation]
trustPolicy = "notation/trustpolicy.json"
trustStore = "notation/truststore"

[registries."{host}"]
insecure = true

[[scopes]]
name = "signed"
images = ["{host}/**"]
action = "verify"
verify = {{ require = ["notation"] }}
"#
    )
}

/// Installs Notation trust from the fixtures into `config_dir/notation`: the
/// fixture trust policy file `policy` and the fixture CA store `store`, under
/// the store name `e2e` that the fixture policies use.
pub fn install_notation_trust(config_dir: &Path, policy: &str, store: &str) {
    let n = fixtures_dir().join("notation");
    let dest = config_dir.join("notation/truststore/x509/ca/e2e");
    std::fs::create_dir_all(&dest).expect("creating the trust store directory");
    std::fs::copy(n.join("trustpolicy").join(policy), config_dir.join("notation/trustpolicy.json"))
        .unwrap_or_else(|e| panic!("copying trust policy {policy}: {e}"));
    for e in std::fs::read_dir(n.join("truststore/x509/ca").join(store)).expect("fixture trust store") {
        let e = e.expect("trust store entry");
        std::fs::copy(e.path(), dest.join(e.file_name())).expect("copying a certificate");
    }
}
