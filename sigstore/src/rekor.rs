//! Rekor transparency log entries, verified offline:
//!
//! * the **body binding**: the entry's canonicalized body (hashedrekord / rekord 0.0.1,
//!   hashedrekord 0.0.2, dsse 0.0.1 / 0.0.2) records this artifact digest (or DSSE payload),
//!   this signature and this certificate or key;
//! * the **signed entry timestamp** (SET, "inclusion promise"): the log's signature over the
//!   canonical JSON `{"body","integratedTime","logID","logIndex"}`;
//! * the **inclusion proof**: the RFC 9162 Merkle audit path from the entry's leaf hash to the
//!   stated root;
//! * the **checkpoint**: a signed note (`origin\nsize\nroot\n…\n\n— name sig`) signed by the
//!   log's key that commits to that root and tree size.
//!
//! Rekor v2 entries carry no integrated time and no SET; they are proven by the inclusion
//! proof and checkpoint, and their time must come from an RFC 3161 timestamp.

use serde::Deserialize;
use serde_json::Value;

use crate::encoding::{self, b64, hex, sha256, unhex};
use crate::outcome::{Failure, FailureClass, fail};
use crate::trust::{TransparencyLog, TrustedRoot};

/// Largest canonicalized body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest Merkle audit path accepted (a tree of 2^64 leaves needs 64).
const MAX_PROOF_HASHES: usize = 64;

/// An inclusion proof as carried by a bundle.
#[derive(Clone, Debug)]
pub(crate) struct InclusionProof {
    pub log_index: u64,
    pub root_hash: Vec<u8>,
    pub tree_size: u64,
    pub hashes: Vec<Vec<u8>>,
    pub checkpoint: Option<String>,
}

/// One transparency log entry, from a bundle or from cosign's bundle annotation.
#[derive(Clone, Debug)]
pub(crate) struct TlogEntry {
    pub log_index: u64,
    pub log_id: Vec<u8>,
    /// `kind` and `version` stated outside the body (bundles only).
    pub kind_version: Option<(String, String)>,
    pub integrated_time: Option<i64>,
    pub set: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
    pub body: Vec<u8>,
}

/// What a log entry must record.
pub(crate) enum Signed<'a> {
    /// A signature over an artifact: its SHA-256 and the signature bytes.
    Message { sha256: &'a [u8], signature: &'a [u8] },
    /// A DSSE envelope: SHA-256 of its payload, SHA-256 of its PAE (Rekor v2 hashedrekord
    /// over DSSE), and its signatures.
    Dsse { payload_sha256: &'a [u8], pae_sha256: &'a [u8], signatures: &'a [Vec<u8>] },
}

/// The verification material the entry must name.
#[derive(Clone, Copy)]
pub(crate) enum Verifier<'a> {
    /// DER of the signing certificate.
    Certificate(&'a [u8]),
    /// DER SubjectPublicKeyInfo of the signing key.
    Key(&'a [u8]),
}

impl Verifier<'_> {
    /// Compares with PEM text recorded in a v0.0.1 body (certificate or public key).
    fn matches_pem(&self, pem: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(pem) else { return false };
        let Ok(blocks) = encoding::pem_blocks(text) else { return false };
        let Some(first) = blocks.first() else { return false };
        match self {
            Verifier::Certificate(der) => first.label == "CERTIFICATE" && first.der == *der,
            Verifier::Key(spki) => first.label == "PUBLIC KEY" && first.der == *spki,
        }
    }

    /// Compares with a v0.0.2 `verifier` object (`x509Certificate.rawBytes` / `publicKey.rawBytes`).
    fn matches_v2(&self, v: &Value) -> bool {
        let raw = |field: &str| v.get(field).and_then(|o| o.get("rawBytes")).and_then(Value::as_str).and_then(b64);
        match self {
            Verifier::Certificate(der) => raw("x509Certificate").is_some_and(|d| d == *der),
            Verifier::Key(spki) => raw("publicKey").is_some_and(|d| d == *spki),
        }
    }
}

fn body_err(reason: impl Into<String>) -> Failure {
    fail(FailureClass::TlogBody, reason)
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Finds the entry's log in the trusted root; its key must be valid at the integrated time.
pub(crate) fn find_log<'r>(root: &'r TrustedRoot, entry: &TlogEntry) -> Result<(&'r TransparencyLog, String), Failure> {
    let log = root.find_log(&entry.log_id).ok_or_else(|| {
        fail(
            FailureClass::UnknownLog,
            format!(
                "log ID {} is not one of the {} transparency logs of the trusted root (entry from another log instance?)",
                hex(&entry.log_id),
                root.tlogs().len()
            ),
        )
    })?;
    if let Some(t) = entry.integrated_time
        && !log.valid_for.contains(t)
    {
        return Err(fail(
            FailureClass::UnknownLog,
            format!(
                "the key of log {} was not valid at the entry's integrated time {}",
                log.base_url,
                encoding::format_time(t)
            ),
        ));
    }
    Ok((log, format!("entry {} is in log {} ({})", entry.log_index, log.base_url, hex(&entry.log_id))))
}

/// Checks that the entry's body records `signed` and `verifier`.
pub(crate) fn check_body(entry: &TlogEntry, signed: &Signed<'_>, verifier: Verifier<'_>) -> Result<String, Failure> {
    if entry.body.len() > MAX_BODY_BYTES {
        return Err(body_err(format!("the entry body is {} bytes, more than {MAX_BODY_BYTES}", entry.body.len())));
    }
    let body: Value =
        serde_json::from_slice(&entry.body).map_err(|e| body_err(format!("the entry body is not JSON: {e}")))?;
    let kind = str_at(&body, &["kind"]).unwrap_or_default();
    let version = str_at(&body, &["apiVersion"]).unwrap_or_default();
    if let Some((k, v)) = &entry.kind_version
        && (k != kind || v != version)
    {
        return Err(body_err(format!("the entry says it is {k} {v} but its body is {kind} {version}")));
    }
    let spec = body.get("spec").ok_or_else(|| body_err(format!("the {kind} {version} body has no spec")))?;
    match (kind, version, signed) {
        ("hashedrekord" | "rekord", "0.0.1", Signed::Message { sha256, signature }) => {
            let alg = str_at(spec, &["data", "hash", "algorithm"]).unwrap_or_default();
            let value = str_at(spec, &["data", "hash", "value"]).and_then(unhex);
            if alg != "sha256" || value.as_deref() != Some(*sha256) {
                return Err(body_err(format!(
                    "the {kind} entry records artifact digest {alg}:{} but the artifact is sha256:{}",
                    str_at(spec, &["data", "hash", "value"]).unwrap_or("(none)"),
                    hex(sha256)
                )));
            }
            let sig = str_at(spec, &["signature", "content"]).and_then(b64);
            if sig.as_deref() != Some(*signature) {
                return Err(body_err(format!("the {kind} entry records a different signature")));
            }
            let pem = str_at(spec, &["signature", "publicKey", "content"]).and_then(b64).unwrap_or_default();
            if !verifier.matches_pem(&pem) {
                return Err(body_err(format!("the {kind} entry records a different certificate or public key")));
            }
            Ok(format!("{kind} {version} entry records this artifact digest, signature and signer"))
        }
        ("hashedrekord", "0.0.2", _) => {
            let spec = spec
                .get("hashedRekordV002")
                .ok_or_else(|| body_err("hashedrekord 0.0.2 body has no hashedRekordV002"))?;
            let (expected_digest, expected_sig, what) = match signed {
                Signed::Message { sha256, signature } => (*sha256, *signature, "artifact digest"),
                Signed::Dsse { pae_sha256, signatures, .. } => match &signatures[..] {
                    [one] => (*pae_sha256, one.as_slice(), "DSSE PAE digest"),
                    _ => return Err(body_err("a hashedrekord 0.0.2 entry can record exactly one DSSE signature")),
                },
            };
            let alg = str_at(spec, &["data", "algorithm"]).unwrap_or_default();
            let digest = str_at(spec, &["data", "digest"]).and_then(b64);
            if alg != "SHA2_256" || digest.as_deref() != Some(expected_digest) {
                return Err(body_err(format!("the hashedrekord 0.0.2 entry records another {what} ({alg})")));
            }
            if str_at(spec, &["signature", "content"]).and_then(b64).as_deref() != Some(expected_sig) {
                return Err(body_err("the hashedrekord 0.0.2 entry records a different signature"));
            }
            let v = spec.get("signature").and_then(|s| s.get("verifier")).unwrap_or(&Value::Null);
            if !verifier.matches_v2(v) {
                return Err(body_err("the hashedrekord 0.0.2 entry records a different certificate or public key"));
            }
            Ok(format!("hashedrekord 0.0.2 entry records this {what}, signature and signer"))
        }
        ("dsse", "0.0.1", Signed::Dsse { payload_sha256, signatures, .. }) => {
            let alg = str_at(spec, &["payloadHash", "algorithm"]).unwrap_or_default();
            let value = str_at(spec, &["payloadHash", "value"]).and_then(unhex);
            if alg != "sha256" || value.as_deref() != Some(*payload_sha256) {
                return Err(body_err("the dsse entry records the hash of a different DSSE payload"));
            }
            let recorded = spec.get("signatures").and_then(Value::as_array).cloned().unwrap_or_default();
            if recorded.len() != signatures.len() {
                return Err(body_err(format!(
                    "the dsse entry records {} signature(s), the envelope has {}",
                    recorded.len(),
                    signatures.len()
                )));
            }
            for s in signatures.iter() {
                let found = recorded.iter().any(|r| {
                    str_at(r, &["signature"]).and_then(b64).as_deref() == Some(s.as_slice())
                        && str_at(r, &["verifier"]).and_then(b64).is_some_and(|pem| verifier.matches_pem(&pem))
                });
                if !found {
                    return Err(body_err("the dsse entry does not record this envelope's signature and signer"));
                }
            }
            Ok("dsse 0.0.1 entry records this payload, signature and signer".to_string())
        }
        ("dsse", "0.0.2", Signed::Dsse { payload_sha256, signatures, .. }) => {
            let spec = spec.get("dsseV002").ok_or_else(|| body_err("dsse 0.0.2 body has no dsseV002"))?;
            let alg = str_at(spec, &["payloadHash", "algorithm"]).unwrap_or_default();
            let digest = str_at(spec, &["payloadHash", "digest"]).and_then(b64);
            if alg != "SHA2_256" || digest.as_deref() != Some(*payload_sha256) {
                return Err(body_err("the dsse 0.0.2 entry records the hash of a different DSSE payload"));
            }
            let recorded = spec.get("signatures").and_then(Value::as_array).cloned().unwrap_or_default();
            if recorded.len() != signatures.len() {
                return Err(body_err("the dsse 0.0.2 entry records a different number of signatures"));
            }
            for s in signatures.iter() {
                let found = recorded.iter().any(|r| {
                    str_at(r, &["content"]).and_then(b64).as_deref() == Some(s.as_slice())
                        && verifier.matches_v2(r.get("verifier").unwrap_or(&Value::Null))
                });
                if !found {
                    return Err(body_err("the dsse 0.0.2 entry does not record this envelope's signature and signer"));
                }
            }
            Ok("dsse 0.0.2 entry records this payload, signature and signer".to_string())
        }
        _ => Err(body_err(format!(
            "a {kind} {version} entry cannot record a {}",
            match signed {
                Signed::Message { .. } => "message signature",
                Signed::Dsse { .. } => "DSSE envelope",
            }
        ))),
    }
}

/// The canonical JSON a Rekor v1 SET signs.
fn set_payload(entry: &TlogEntry, integrated_time: i64) -> String {
    format!(
        r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        encoding::b64_encode(&entry.body),
        integrated_time,
        hex(&entry.log_id),
        entry.log_index
    )
}

/// Verifies the signed entry timestamp with the log's key; returns the integrated time.
pub(crate) fn check_set(entry: &TlogEntry, log: &TransparencyLog) -> Result<(i64, String), Failure> {
    let set =
        entry.set.as_deref().ok_or_else(|| fail(FailureClass::TlogSet, "the entry has no signed entry timestamp"))?;
    let t = entry
        .integrated_time
        .ok_or_else(|| fail(FailureClass::TlogSet, "the entry has a signed entry timestamp but no integrated time"))?;
    if !log.key.verify(set_payload(entry, t).as_bytes(), set) {
        return Err(fail(
            FailureClass::TlogSet,
            format!("the signed entry timestamp does not verify with the key of log {}", log.base_url),
        ));
    }
    Ok((
        t,
        format!(
            "signed entry timestamp verifies with the key of {}; integrated at {}",
            log.base_url,
            encoding::format_time(t)
        ),
    ))
}

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(65);
    buf.push(1);
    buf.extend_from_slice(left);
    buf.extend_from_slice(right);
    sha256(&buf)
}

/// RFC 9162 §2.1.3.2: the root an audit path leads to, or `None` if the path is malformed.
fn root_from_path(index: u64, size: u64, leaf: [u8; 32], path: &[Vec<u8>]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if p.len() != 32 || snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// Verifies the Merkle inclusion proof of the entry's body against the proof's root hash.
pub(crate) fn check_inclusion(entry: &TlogEntry, proof: &InclusionProof) -> Result<String, Failure> {
    if proof.hashes.len() > MAX_PROOF_HASHES {
        return Err(fail(FailureClass::InclusionProof, format!("the audit path has {} hashes", proof.hashes.len())));
    }
    let mut leaf_input = Vec::with_capacity(entry.body.len() + 1);
    leaf_input.push(0);
    leaf_input.extend_from_slice(&entry.body);
    let leaf = sha256(&leaf_input);
    match root_from_path(proof.log_index, proof.tree_size, leaf, &proof.hashes) {
        Some(root) if root.as_slice() == proof.root_hash.as_slice() => Ok(format!(
            "Merkle audit path of {} hashes leads from leaf {} to root {} of a tree of {}",
            proof.hashes.len(),
            proof.log_index,
            hex(&proof.root_hash),
            proof.tree_size
        )),
        Some(root) => Err(fail(
            FailureClass::InclusionProof,
            format!(
                "the inclusion proof leads to root {} but states root {} (tree size {}, index {})",
                hex(&root),
                hex(&proof.root_hash),
                proof.tree_size,
                proof.log_index
            ),
        )),
        None => Err(fail(
            FailureClass::InclusionProof,
            format!(
                "the inclusion proof is malformed for index {} in a tree of {} ({} hashes)",
                proof.log_index,
                proof.tree_size,
                proof.hashes.len()
            ),
        )),
    }
}

/// Verifies the signed checkpoint: signed by the log's key, for the proof's tree size and root.
pub(crate) fn check_checkpoint(proof: &InclusionProof, log: &TransparencyLog) -> Result<String, Failure> {
    let bad = |r: String| fail(FailureClass::Checkpoint, r);
    let envelope = proof.checkpoint.as_deref().ok_or_else(|| bad("the inclusion proof has no checkpoint".into()))?;
    let split = envelope.find("\n\n").ok_or_else(|| bad("the checkpoint is not a signed note".into()))?;
    let (text, sigs) = (&envelope[..split + 1], &envelope[split + 2..]);
    let mut lines = text.lines();
    let origin = lines.next().unwrap_or_default();
    let size: Option<u64> = lines.next().and_then(|l| l.parse().ok());
    let root = lines.next().and_then(b64);
    let (Some(size), Some(root)) = (size, root) else {
        return Err(bad("the checkpoint does not state a tree size and root hash".into()));
    };
    let hint = log.log_id.get(..4).unwrap_or_default();
    let mut tried = 0;
    let mut signed = false;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else { continue };
        let Some((_name, sig_b64)) = rest.rsplit_once(' ') else { continue };
        let Some(sig) = b64(sig_b64) else { continue };
        if sig.len() <= 4 || &sig[..4] != hint {
            continue;
        }
        tried += 1;
        if log.key.verify(text.as_bytes(), &sig[4..]) {
            signed = true;
            break;
        }
    }
    if !signed {
        return Err(bad(format!(
            "no checkpoint signature verifies with the key of log {} ({tried} signature(s) carry its key hint)",
            log.base_url
        )));
    }
    if size != proof.tree_size || root != proof.root_hash {
        return Err(bad(format!(
            "the checkpoint ({origin:?}) is for tree size {size} with root {}, not the inclusion proof's tree size {} with root {}",
            hex(&root),
            proof.tree_size,
            hex(&proof.root_hash)
        )));
    }
    Ok(format!("checkpoint {origin:?} is signed by {} and commits to tree size {size}", log.base_url))
}

/// cosign's `dev.sigstore.cosign/bundle` annotation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CosignBundleJson {
    signed_entry_timestamp: String,
    payload: CosignPayloadJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CosignPayloadJson {
    body: String,
    integrated_time: i64,
    log_index: u64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// Reads cosign's `dev.sigstore.cosign/bundle` annotation into an entry (SET only, no proof).
pub(crate) fn parse_cosign_bundle(json: &str) -> Result<TlogEntry, String> {
    if json.len() > 2 * MAX_BODY_BYTES {
        return Err(format!("the Rekor bundle annotation is {} bytes, too large", json.len()));
    }
    let b: CosignBundleJson =
        serde_json::from_str(json).map_err(|e| format!("the Rekor bundle annotation is not valid: {e}"))?;
    Ok(TlogEntry {
        log_index: b.payload.log_index,
        log_id: unhex(&b.payload.log_id).ok_or("the Rekor bundle's logID is not hex")?,
        kind_version: None,
        integrated_time: Some(b.payload.integrated_time),
        set: Some(b64(&b.signed_entry_timestamp).ok_or("the Rekor bundle's SignedEntryTimestamp is not base64")?),
        proof: None,
        body: b64(&b.payload.body).ok_or("the Rekor bundle's body is not base64")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> [u8; 32] {
        sha256(&[0, i])
    }

    /// Merkle tree hash of leaves[lo..hi] (RFC 9162 §2.1.1).
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                let k = if k == n { n / 2 } else { k };
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// Audit path for leaf m in leaves (RFC 9162 §2.1.3.1).
    fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let n = leaves.len();
        if n == 1 {
            return vec![];
        }
        let k = n.next_power_of_two() / 2;
        let k = if k == n { n / 2 } else { k };
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]).to_vec());
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]).to_vec());
            p
        }
    }

    #[test]
    fn audit_paths_verify_for_every_leaf_and_size() {
        for n in 1..=17usize {
            let leaves: Vec<_> = (0..n as u8).map(leaf).collect();
            let root = mth(&leaves);
            for m in 0..n {
                let p = path(m, &leaves);
                assert_eq!(root_from_path(m as u64, n as u64, leaves[m], &p), Some(root), "n={n} m={m}");
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(root_from_path(m as u64, n as u64, leaves[m], &bad), Some(root));
                    assert_ne!(first.len(), 0);
                }
                assert_eq!(root_from_path(n as u64, n as u64, leaves[m], &p), None);
            }
        }
    }
}
