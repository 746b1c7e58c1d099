//! Real cosign key-based signatures made in a test: an ECDSA P-256 key
//! generated with aws-lc-rs, simple-signing payloads naming a digest, and
//! their attachment as cosign does (`sha256-<hex>.sig`, one layer per
//! signature, the signature in the layer's annotation). For subjects the
//! fixture signatures do not cover (indexes and platform manifests built in
//! the test, several signers on one image).

use crate::{Registry, sha256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Media type of cosign simple-signing payloads.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// A cosign signing key made for one test.
pub struct CosignKey {
    pair: EcdsaKeyPair,
}

/// One signature as cosign stores it: the payload blob and its base64 signature.
#[derive(Clone)]
pub struct CosignSignature {
    /// The simple-signing payload.
    pub payload: Vec<u8>,
    /// Base64 of the ASN.1 ECDSA signature over `payload`.
    pub signature: String,
}

impl CosignKey {
    /// A fresh P-256 key.
    pub fn generate() -> CosignKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new()).expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("pkcs8");
        CosignKey { pair }
    }

    /// The public key as a PEM `PUBLIC KEY` (what `[sigstore] keys` reads).
    pub fn public_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    /// Signs a simple-signing payload for `digest` (`sha256:…`) as `reference`.
    pub fn sign(&self, reference: &str, digest: &str) -> CosignSignature {
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": null,
        }))
        .expect("payload");
        let sig = self.pair.sign(&SystemRandom::new(), &payload).expect("sign");
        CosignSignature { payload, signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()) }
    }
}

/// Attaches `signatures` to `subject` in `repo` as cosign does: one
/// manifest tagged `sha256-<hex>.sig`, one layer per signature.
pub async fn attach_cosign(reg: &Registry, repo: &str, subject: &str, signatures: &[CosignSignature]) {
    let config = b"{}".to_vec();
    let config_len = config.len();
    let config_digest = reg.push_blob(repo, config).await;
    let mut layers = Vec::new();
    for s in signatures {
        let size = s.payload.len();
        let digest = reg.push_blob(repo, s.payload.clone()).await;
        layers.push(serde_json::json!({
            "mediaType": SIMPLE_SIGNING,
            "digest": digest,
            "size": size,
            "annotations": {"dev.cosignproject.cosign/signature": s.signature},
        }));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": layers,
    }))
    .expect("manifest");
    let tag = format!("{}.sig", subject.replace(':', "-"));
    reg.push_manifest(repo, &tag, "application/vnd.oci.image.manifest.v1+json", manifest).await;
}

/// A pushed image manifest: its digest, size and media type.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// Pushes a minimal image manifest for `platform` (`linux/arm64/v8`) to
/// `repo` (its config names the platform, so each platform gets its own digest).
pub async fn push_platform_image(reg: &Registry, repo: &str, platform: &str) -> Pushed {
    let parts: Vec<&str> = platform.split('/').collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": parts[1], "os": parts[0], "variant": parts.get(2),
        "rootfs": {"type": "layers", "diff_ids": []}, "config": {},
    }))
    .expect("config");
    let config_len = config.len();
    let config_digest = reg.push_blob(repo, config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": [],
    }))
    .expect("manifest");
    let pushed = Pushed {
        digest: sha256(&manifest),
        size: manifest.len() as u64,
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
    };
    reg.push_manifest(repo, &pushed.digest, &pushed.media_type, manifest).await;
    pushed
}

/// Pushes an OCI index over `entries` (each with its platform string) to
/// `repo` under `tag`; returns it.
pub async fn push_index(reg: &Registry, repo: &str, tag: &str, entries: &[(&str, &Pushed)]) -> Pushed {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(platform, p)| {
            let parts: Vec<&str> = platform.split('/').collect();
            let mut plat = serde_json::json!({"os": parts[0], "architecture": parts[1]});
            if let Some(v) = parts.get(2) {
                plat["variant"] = serde_json::Value::String(v.to_string());
            }
            serde_json::json!({"mediaType": p.media_type, "digest": p.digest, "size": p.size, "platform": plat})
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("index");
    let pushed = Pushed {
        digest: sha256(&index),
        size: index.len() as u64,
        media_type: "application/vnd.oci.image.index.v1+json".into(),
    };
    reg.push_manifest(repo, tag, &pushed.media_type, index).await;
    pushed
}
