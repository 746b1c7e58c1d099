//! A bearer-token server for `docker-registry`'s token auth, so the
//! distribution token flow (401 → `WWW-Authenticate: Bearer realm=…` → token
//! endpoint with Basic credentials → JWT) runs against the real registry.
//!
//! Tokens are ES256 JWTs whose `x5c` header carries a self-signed certificate
//! that the registry trusts through `auth.token.rootcertbundle`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Service name the registry and the token server agree on.
pub const SERVICE: &str = "pullgate-test-registry";
/// Issuer of the tokens.
pub const ISSUER: &str = "pullgate-test-token-issuer";

/// A running token server; stops with the runtime.
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The certificate bundle the registry must trust.
    pub cert_path: PathBuf,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl TokenServer {
    /// Starts a token server accepting `user:password` (Basic), writing its
    /// certificate under `dir`. Tokens live `lifetime_secs`.
    pub async fn start(dir: &Path, user: &str, password: &str, lifetime_secs: u64) -> TokenServer {
        let key_pem = dir.join("token.key");
        let cert_path = dir.join("token.crt");
        let key_der = dir.join("token.pk8");
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=pullgate test token issuer"])
            .arg("-keyout")
            .arg(&key_pem)
            .arg("-out")
            .arg(&cert_path)
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok, "openssl could not make the token certificate");
        let ok = Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key_pem)
            .arg("-out")
            .arg(&key_der)
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok, "openssl could not convert the token key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &std::fs::read(&key_der).unwrap())
            .expect("token key");
        let cert_der = pem_to_der(&std::fs::read_to_string(&cert_path).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind token server");
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let (issued, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let state = Arc::new((key, cert_der, expected, lifetime_secs, issued.clone(), refused.clone()));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while n < buf.len() {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let (key, cert, expected, lifetime, issued, refused) = &*state;
                    let authorized = head
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected);
                    let scope = query_param(&head, "scope").unwrap_or_default();
                    let response = if authorized {
                        issued.fetch_add(1, Ordering::SeqCst);
                        let token = jwt(key, cert, &scope, *lifetime);
                        let body = format!("{{\"token\":\"{token}\",\"expires_in\":{lifetime}}}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = sock.write_all(response.as_bytes()).await;
                });
            }
        });
        TokenServer { realm, cert_path, issued, refused }
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Requests refused for bad or missing credentials.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("certificate PEM")
}

fn query_param(head: &str, name: &str) -> Option<String> {
    let target = head.split_whitespace().nth(1)?;
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An ES256 JWT granting the actions of `scope` (`repository:NAME:pull`).
fn jwt(key: &EcdsaKeyPair, cert_der: &[u8], scope: &str, lifetime: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let access: Vec<serde_json::Value> = scope
        .split(' ')
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(cert_der);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [std_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "pullgate", "aud": SERVICE,
        "exp": now + lifetime, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand_suffix()), "access": access,
    });
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = key.sign(&SystemRandom::new(), signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", b64(sig.as_ref()))
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}
