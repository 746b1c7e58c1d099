//! Public keys: parsing PEM / DER SubjectPublicKeyInfo (ECDSA P-256/P-384/P-521, Ed25519, RSA
//! 2048–8192), the trusted key set of key-based verification ([`PublicKeys`]), and signature
//! checks over messages or pre-computed digests with aws-lc-rs.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm};
use thiserror::Error;
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::encoding::{self, PemError};

/// Largest PEM text accepted for a key file.
pub const MAX_KEY_PEM_BYTES: usize = 1024 * 1024;
/// Most keys held by one [`PublicKeys`] set.
pub const MAX_KEYS: usize = 1000;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a public key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The PEM text is larger than [`MAX_KEY_PEM_BYTES`].
    #[error("public key {name:?} is {len} bytes of PEM, more than the {MAX_KEY_PEM_BYTES}-byte limit")]
    TooLarge {
        /// The key's name.
        name: String,
        /// Its size.
        len: usize,
    },
    /// The PEM text is malformed.
    #[error("reading public key {name:?}: {source}; expected a PEM \"PUBLIC KEY\" (SubjectPublicKeyInfo) block")]
    Pem {
        /// The key's name.
        name: String,
        /// The PEM problem.
        #[source]
        source: PemError,
    },
    /// No `PUBLIC KEY` block was found.
    #[error("public key {name:?} holds no PEM \"PUBLIC KEY\" block (found {found:?})")]
    NoKey {
        /// The key's name.
        name: String,
        /// Labels of the blocks that were found.
        found: Vec<String>,
    },
    /// The DER is not a SubjectPublicKeyInfo.
    #[error("public key {name:?} is not a valid DER SubjectPublicKeyInfo: {source}")]
    Der {
        /// The key's name.
        name: String,
        /// The decoder's error.
        #[source]
        source: x509_cert::der::Error,
    },
    /// The algorithm or curve is not supported.
    #[error(
        "public key {name:?} uses {what}, which is not supported; use ECDSA P-256/P-384/P-521, Ed25519 or RSA 2048-8192"
    )]
    Unsupported {
        /// The key's name.
        name: String,
        /// What was found.
        what: String,
    },
    /// aws-lc-rs rejected the key material (for example an EC point not on the curve).
    #[error("public key {name:?} is not a usable {kind} key: {reason}")]
    Rejected {
        /// The key's name.
        name: String,
        /// The algorithm the key claims.
        kind: KeyKind,
        /// aws-lc-rs's reason.
        reason: String,
    },
    /// The set already holds [`MAX_KEYS`] keys.
    #[error("more than {MAX_KEYS} public keys")]
    TooMany,
}

/// The algorithm family of a [`PublicKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// ECDSA on NIST P-521.
    EcdsaP521,
    /// Ed25519.
    Ed25519,
    /// RSA (PKCS#1 v1.5 or PSS signatures).
    Rsa,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::EcdsaP384 => "ECDSA P-384",
            KeyKind::EcdsaP521 => "ECDSA P-521",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa => "RSA",
        })
    }
}

/// A hash function named by a signature or digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(crate) fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.algorithm(), data).as_ref().to_vec()
    }
}

/// A verified-loadable public key with a name for reports.
#[derive(Clone, Debug)]
pub struct PublicKey {
    name: String,
    spki: Vec<u8>,
    kind: KeyKind,
    raw: Vec<u8>,
    key_id: String,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo. The key is checked by aws-lc-rs now, so a damaged key
    /// fails here rather than at the first verification.
    pub fn from_spki_der(name: &str, der: &[u8]) -> Result<PublicKey, KeyError> {
        let spki = SubjectPublicKeyInfoOwned::from_der(der)
            .map_err(|source| KeyError::Der { name: name.to_string(), source })?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError::Unsupported { name: name.to_string(), what: "a key with unused bits".into() })?
            .to_vec();
        let alg = spki.algorithm.oid;
        let kind = if alg == OID_EC_PUBLIC_KEY {
            let curve: ObjectIdentifier =
                spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as().ok()).ok_or_else(|| {
                    KeyError::Unsupported { name: name.into(), what: "an EC key without a named curve".into() }
                })?;
            match curve {
                OID_P256 => KeyKind::EcdsaP256,
                OID_P384 => KeyKind::EcdsaP384,
                OID_P521 => KeyKind::EcdsaP521,
                other => return Err(KeyError::Unsupported { name: name.into(), what: format!("EC curve {other}") }),
            }
        } else if alg == OID_ED25519 {
            KeyKind::Ed25519
        } else if alg == OID_RSA {
            KeyKind::Rsa
        } else {
            return Err(KeyError::Unsupported { name: name.into(), what: format!("algorithm {alg}") });
        };
        let probe: &'static dyn VerificationAlgorithm = match kind {
            KeyKind::EcdsaP256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyKind::EcdsaP384 => &sig::ECDSA_P384_SHA384_ASN1,
            KeyKind::EcdsaP521 => &sig::ECDSA_P521_SHA512_ASN1,
            KeyKind::Ed25519 => &sig::ED25519,
            KeyKind::Rsa => &sig::RSA_PKCS1_2048_8192_SHA256,
        };
        ParsedPublicKey::new(probe, &raw).map_err(|e| KeyError::Rejected {
            name: name.into(),
            kind,
            reason: e.to_string(),
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key_id: encoding::hex(&encoding::sha256(der)),
            spki: der.to_vec(),
            kind,
            raw,
        })
    }

    /// Parses the single `PUBLIC KEY` PEM block of `pem` (other blocks are refused).
    pub fn from_pem(name: &str, pem: &str) -> Result<PublicKey, KeyError> {
        let mut keys = parse_pem_keys(name, pem)?;
        match keys.len() {
            1 => Ok(keys.remove(0)),
            n => Err(KeyError::Unsupported { name: name.into(), what: format!("{n} keys in one PEM text") }),
        }
    }

    /// The name given when the key was loaded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex (cosign's and Rekor's key id).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The algorithm family.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Algorithms tried for a signature over a message. ECDSA tries the curve's own hash and
    /// SHA-256 (Sigstore clients sign with SHA-256 whatever the curve); RSA tries PKCS#1 v1.5
    /// and PSS with SHA-256/384/512.
    fn algorithms(&self) -> Vec<&'static dyn VerificationAlgorithm> {
        match self.kind {
            KeyKind::EcdsaP256 => vec![&sig::ECDSA_P256_SHA256_ASN1],
            KeyKind::EcdsaP384 => vec![&sig::ECDSA_P384_SHA384_ASN1, &sig::ECDSA_P384_SHA256_ASN1],
            KeyKind::EcdsaP521 => vec![&sig::ECDSA_P521_SHA512_ASN1, &sig::ECDSA_P521_SHA256_ASN1],
            KeyKind::Ed25519 => vec![&sig::ED25519],
            KeyKind::Rsa => vec![
                &sig::RSA_PKCS1_2048_8192_SHA256,
                &sig::RSA_PSS_2048_8192_SHA256,
                &sig::RSA_PKCS1_2048_8192_SHA384,
                &sig::RSA_PSS_2048_8192_SHA384,
                &sig::RSA_PKCS1_2048_8192_SHA512,
                &sig::RSA_PSS_2048_8192_SHA512,
            ],
        }
    }

    /// True if `signature` is a valid signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.algorithms()
            .into_iter()
            .any(|alg| UnparsedPublicKey::new(alg, &self.raw).verify(message, signature).is_ok())
    }

    /// True if `signature` is a valid signature of `message` with the given hash (for CMS
    /// SignerInfos, which name their digest).
    pub(crate) fn verify_with_hash(&self, message: &[u8], signature: &[u8], hash: Hash) -> bool {
        let algs: Vec<&'static dyn VerificationAlgorithm> = match (self.kind, hash) {
            (KeyKind::EcdsaP256, Hash::Sha256) => vec![&sig::ECDSA_P256_SHA256_ASN1],
            (KeyKind::EcdsaP256, Hash::Sha384) => vec![&sig::ECDSA_P256_SHA384_ASN1],
            (KeyKind::EcdsaP256, Hash::Sha512) => vec![&sig::ECDSA_P256_SHA512_ASN1],
            (KeyKind::EcdsaP384, Hash::Sha256) => vec![&sig::ECDSA_P384_SHA256_ASN1],
            (KeyKind::EcdsaP384, Hash::Sha384) => vec![&sig::ECDSA_P384_SHA384_ASN1],
            (KeyKind::EcdsaP384, Hash::Sha512) => vec![&sig::ECDSA_P384_SHA512_ASN1],
            (KeyKind::EcdsaP521, Hash::Sha256) => vec![&sig::ECDSA_P521_SHA256_ASN1],
            (KeyKind::EcdsaP521, Hash::Sha384) => vec![&sig::ECDSA_P521_SHA384_ASN1],
            (KeyKind::EcdsaP521, Hash::Sha512) => vec![&sig::ECDSA_P521_SHA512_ASN1],
            (KeyKind::Rsa, Hash::Sha256) => vec![&sig::RSA_PKCS1_2048_8192_SHA256, &sig::RSA_PSS_2048_8192_SHA256],
            (KeyKind::Rsa, Hash::Sha384) => vec![&sig::RSA_PKCS1_2048_8192_SHA384, &sig::RSA_PSS_2048_8192_SHA384],
            (KeyKind::Rsa, Hash::Sha512) => vec![&sig::RSA_PKCS1_2048_8192_SHA512, &sig::RSA_PSS_2048_8192_SHA512],
            (KeyKind::Ed25519, _) => vec![&sig::ED25519],
        };
        algs.into_iter().any(|alg| UnparsedPublicKey::new(alg, &self.raw).verify(message, signature).is_ok())
    }

    /// Verifies a signature over a message known only by its digest. Ed25519 signs the message
    /// itself, so it cannot be checked this way (`Err` says so).
    pub(crate) fn verify_prehashed(&self, hash: Hash, message_digest: &[u8], signature: &[u8]) -> Result<bool, String> {
        let imported = digest::Digest::import_less_safe(message_digest, hash.algorithm())
            .map_err(|_| format!("a {hash:?} digest must be {} bytes", hash.algorithm().output_len()))?;
        let algs: Vec<&'static dyn VerificationAlgorithm> = match (self.kind, hash) {
            (KeyKind::Ed25519, _) => {
                return Err(
                    "an Ed25519 signature covers the artifact itself; verify with the artifact's bytes, not its digest"
                        .into(),
                );
            }
            (KeyKind::EcdsaP256, Hash::Sha256) => vec![&sig::ECDSA_P256_SHA256_ASN1],
            (KeyKind::EcdsaP256, Hash::Sha384) => vec![&sig::ECDSA_P256_SHA384_ASN1],
            (KeyKind::EcdsaP256, Hash::Sha512) => vec![&sig::ECDSA_P256_SHA512_ASN1],
            (KeyKind::EcdsaP384, Hash::Sha256) => vec![&sig::ECDSA_P384_SHA256_ASN1],
            (KeyKind::EcdsaP384, Hash::Sha384) => vec![&sig::ECDSA_P384_SHA384_ASN1],
            (KeyKind::EcdsaP384, Hash::Sha512) => vec![&sig::ECDSA_P384_SHA512_ASN1],
            (KeyKind::EcdsaP521, Hash::Sha256) => vec![&sig::ECDSA_P521_SHA256_ASN1],
            (KeyKind::EcdsaP521, Hash::Sha384) => vec![&sig::ECDSA_P521_SHA384_ASN1],
            (KeyKind::EcdsaP521, Hash::Sha512) => vec![&sig::ECDSA_P521_SHA512_ASN1],
            (KeyKind::Rsa, Hash::Sha256) => vec![&sig::RSA_PKCS1_2048_8192_SHA256, &sig::RSA_PSS_2048_8192_SHA256],
            (KeyKind::Rsa, Hash::Sha384) => vec![&sig::RSA_PKCS1_2048_8192_SHA384, &sig::RSA_PSS_2048_8192_SHA384],
            (KeyKind::Rsa, Hash::Sha512) => vec![&sig::RSA_PKCS1_2048_8192_SHA512, &sig::RSA_PSS_2048_8192_SHA512],
        };
        Ok(algs
            .into_iter()
            .any(|alg| UnparsedPublicKey::new(alg, &self.raw).verify_digest(&imported, signature).is_ok()))
    }
}

fn parse_pem_keys(name: &str, pem: &str) -> Result<Vec<PublicKey>, KeyError> {
    if pem.len() > MAX_KEY_PEM_BYTES {
        return Err(KeyError::TooLarge { name: name.into(), len: pem.len() });
    }
    let blocks = encoding::pem_blocks(pem).map_err(|source| KeyError::Pem { name: name.into(), source })?;
    let keys: Vec<_> = blocks.iter().filter(|b| b.label == "PUBLIC KEY").collect();
    if keys.is_empty() {
        return Err(KeyError::NoKey { name: name.into(), found: blocks.into_iter().map(|b| b.label).collect() });
    }
    let many = keys.len() > 1;
    keys.iter()
        .enumerate()
        .map(|(i, b)| {
            let label = if many { format!("{name}#{}", i + 1) } else { name.to_string() };
            PublicKey::from_spki_der(&label, &b.der)
        })
        .collect()
}

/// The trusted keys of key-based verification (cosign `--key`, managed-key bundles).
#[derive(Clone, Debug, Default)]
pub struct PublicKeys {
    keys: Vec<PublicKey>,
}

impl PublicKeys {
    /// An empty set (key-based verification then always fails).
    pub fn new() -> PublicKeys {
        PublicKeys::default()
    }

    /// Every `PUBLIC KEY` block of `pem`, named `name` (or `name#1`, `name#2`, … when there are
    /// several). Fails if any block is damaged or there is none.
    pub fn parse(name: &str, pem: &str) -> Result<PublicKeys, KeyError> {
        let mut set = PublicKeys::new();
        set.add_pem(name, pem)?;
        Ok(set)
    }

    /// Adds every `PUBLIC KEY` block of `pem`.
    pub fn add_pem(&mut self, name: &str, pem: &str) -> Result<(), KeyError> {
        for key in parse_pem_keys(name, pem)? {
            self.add(key)?;
        }
        Ok(())
    }

    /// Adds one key.
    pub fn add(&mut self, key: PublicKey) -> Result<(), KeyError> {
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyError::TooMany);
        }
        self.keys.push(key);
        Ok(())
    }

    /// The keys, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEFNLqFhf4fiN6o/glAuYnq2jYUeL0
vRuLu/z39pmbVwS9ff5AYnlwaP9sxREajdLY9ynM6G1sy6AAmb7Z63TsLg==
-----END PUBLIC KEY-----
";

    #[test]
    fn parses_p256_and_ed25519() {
        let k = PublicKey::from_pem("k", P256).unwrap();
        assert_eq!(k.kind(), KeyKind::EcdsaP256);
        assert_eq!(k.key_id().len(), 64);
        let ed = encoding::b64("MCowBQYDK2VwAyEAt8rlp1knGwjfbcXAYPYAkn0XiLz1x8O4t0YkEhie244=").unwrap();
        assert_eq!(PublicKey::from_spki_der("ed", &ed).unwrap().kind(), KeyKind::Ed25519);
    }

    #[test]
    fn refuses_damaged_keys() {
        // A point that is not on the curve: flip a byte of the X coordinate.
        let mut der = encoding::pem_blocks(P256).unwrap().remove(0).der;
        let n = der.len();
        der[n - 40] ^= 0x01;
        assert!(matches!(PublicKey::from_spki_der("bad", &der), Err(KeyError::Rejected { .. })));
        assert!(matches!(PublicKeys::parse("none", "hello"), Err(KeyError::NoKey { .. })));
        let cert_only = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        assert!(matches!(PublicKeys::parse("cert", cert_only), Err(KeyError::NoKey { .. })));
    }
}
