//! ECDSA (P-256, P-384, P-521) signatures in JWS and COSE envelopes. The fixtures only hold
//! RSASSA-PSS signatures, so these tests make a self-signed code-signing certificate and sign
//! real envelopes with aws-lc-rs, then verify them through the public API.

use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coset::cbor::value::Value;
use coset::{CoseSign1Builder, HeaderBuilder, RegisteredLabelWithPrivate, TaggedCborSerializable, iana};
use pullgate_notation::{
    Check, CheckStatus, MEDIA_TYPE_COSE, MEDIA_TYPE_JWS, SubjectDescriptor, TrustPolicyDocument, TrustStore, verify,
};

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn name(cn: &str) -> Vec<u8> {
    let rdn = |oid: &[u8], value: &str| tlv(0x31, &seq(&[&tlv(0x06, oid), &tlv(0x0c, value.as_bytes())]));
    seq(&[
        &rdn(&[0x55, 0x04, 0x06], "US"),
        &rdn(&[0x55, 0x04, 0x08], "WA"),
        &rdn(&[0x55, 0x04, 0x0a], "Example"),
        &rdn(&[0x55, 0x04, 0x03], cn),
    ])
}

struct Curve {
    jws: &'static str,
    cose: iana::Algorithm,
    curve_oid: &'static [u8],
    cert_sig_oid: &'static [u8],
    asn1: &'static EcdsaSigningAlgorithm,
    fixed: &'static EcdsaSigningAlgorithm,
}

const CURVES: [Curve; 3] = [
    Curve {
        jws: "ES256",
        cose: iana::Algorithm::ES256,
        curve_oid: &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        cert_sig_oid: &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        asn1: &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        fixed: &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
    },
    Curve {
        jws: "ES384",
        cose: iana::Algorithm::ES384,
        curve_oid: &[0x2b, 0x81, 0x04, 0x00, 0x22],
        cert_sig_oid: &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        asn1: &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        fixed: &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
    },
    Curve {
        jws: "ES512",
        cose: iana::Algorithm::ES512,
        curve_oid: &[0x2b, 0x81, 0x04, 0x00, 0x23],
        cert_sig_oid: &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        asn1: &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        fixed: &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
    },
];

struct Signer {
    cert: Vec<u8>,
    key: EcdsaKeyPair,
}

/// A self-signed code-signing certificate (keyUsage digitalSignature, critical; EKU codeSigning)
/// valid from 2025 to 2100, and the key to sign envelopes with it.
fn signer(curve: &Curve) -> Signer {
    let cert_key = EcdsaKeyPair::generate(curve.asn1).unwrap();
    let pkcs8 = cert_key.to_pkcs8v1().unwrap();
    let key = EcdsaKeyPair::from_pkcs8(curve.fixed, pkcs8.as_ref()).unwrap();
    let sig_alg = seq(&[&tlv(0x06, curve.cert_sig_oid)]);
    let spki = seq(&[
        &seq(&[&tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]), &tlv(0x06, curve.curve_oid)]),
        &tlv(0x03, &[&[0u8][..], cert_key.public_key().as_ref()].concat()),
    ]);
    let key_usage = seq(&[&tlv(0x06, &[0x55, 0x1d, 0x0f]), &tlv(0x01, &[0xff]), &tlv(0x04, &tlv(0x03, &[0x07, 0x80]))]);
    let code_signing = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
    let eku = seq(&[&tlv(0x06, &[0x55, 0x1d, 0x25]), &tlv(0x04, &seq(&[&tlv(0x06, &code_signing)]))]);
    let tbs = seq(&[
        &tlv(0xa0, &tlv(0x02, &[0x02])),
        &tlv(0x02, &[0x01, 0x23]),
        &sig_alg,
        &name("ecdsa test"),
        &seq(&[&tlv(0x17, b"250101000000Z"), &tlv(0x18, b"21000101000000Z")]),
        &name("ecdsa test"),
        &spki,
        &tlv(0xa3, &seq(&[&key_usage, &eku])),
    ]);
    let signature = cert_key.sign(&SystemRandom::new(), &tbs).unwrap();
    let cert = seq(&[&tbs, &sig_alg, &tlv(0x03, &[&[0u8][..], signature.as_ref()].concat())]);
    Signer { cert, key }
}

fn subject() -> SubjectDescriptor {
    SubjectDescriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9".into(),
        size: 517,
    }
}

fn payload() -> Vec<u8> {
    let s = subject();
    serde_json::to_vec(&serde_json::json!({
        "targetArtifact": { "mediaType": s.media_type, "digest": s.digest, "size": s.size }
    }))
    .unwrap()
}

fn jws(signer: &Signer, alg: &str) -> Vec<u8> {
    let protected = serde_json::json!({
        "alg": alg,
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "crit": ["io.cncf.notary.signingScheme"],
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": "2026-01-01T00:00:00Z",
    });
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap());
    let payload = URL_SAFE_NO_PAD.encode(payload());
    let signature = signer.key.sign(&SystemRandom::new(), format!("{protected}.{payload}").as_bytes()).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "payload": payload,
        "protected": protected,
        "header": { "x5c": [STANDARD.encode(&signer.cert)] },
        "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
    }))
    .unwrap()
}

fn cose(signer: &Signer, alg: iana::Algorithm) -> Vec<u8> {
    let scheme = "io.cncf.notary.signingScheme".to_string();
    let protected = HeaderBuilder::new()
        .algorithm(alg)
        .add_critical_label(RegisteredLabelWithPrivate::Text(scheme.clone()))
        .content_type("application/vnd.cncf.notary.payload.v1+json".into())
        .text_value(scheme, Value::Text("notary.x509".into()))
        .text_value("io.cncf.notary.signingTime".into(), Value::Tag(1, Box::new(Value::Integer(1_767_225_600.into()))))
        .build();
    let unprotected = HeaderBuilder::new().value(33, Value::Array(vec![Value::Bytes(signer.cert.clone())])).build();
    CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload())
        .create_signature(b"", |tbs| signer.key.sign(&SystemRandom::new(), tbs).unwrap().as_ref().to_vec())
        .build()
        .to_tagged_vec()
        .unwrap()
}

fn setup(signer: &Signer) -> (tempfile::TempDir, TrustStore, TrustPolicyDocument) {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("x509/ca/ec");
    std::fs::create_dir_all(&store_dir).unwrap();
    std::fs::write(store_dir.join("signer.cer"), &signer.cert).unwrap();
    let store = TrustStore::load(dir.path()).unwrap();
    let policy = TrustPolicyDocument::parse(
        br#"{"version":"1.0","trustPolicies":[{"name":"ec","registryScopes":["*"],
            "signatureVerification":{"level":"strict"},"trustStores":["ca:ec"],
            "trustedIdentities":["x509.subject: C=US, ST=WA, O=Example, CN=ecdsa test"]}]}"#,
    )
    .unwrap();
    (dir, store, policy)
}

#[test]
fn ecdsa_jws_and_cose_verify_on_every_curve() {
    for curve in &CURVES {
        let signer = signer(curve);
        let (_dir, store, policy) = setup(&signer);
        for (media_type, envelope) in
            [(MEDIA_TYPE_JWS, jws(&signer, curve.jws)), (MEDIA_TYPE_COSE, cose(&signer, curve.cose))]
        {
            let o = verify(&subject(), "localhost:5000/e2e", media_type, &envelope, &policy, &store, SystemTime::now());
            assert!(o.verified, "{} {media_type}: {o:#?}", curve.jws);
            for c in &o.checks {
                let expected = if c.check == Check::Revocation { CheckStatus::Skipped } else { CheckStatus::Passed };
                assert_eq!(c.status, expected, "{} {media_type}: {c:?}", curve.jws);
            }
            assert_eq!(o.signer_subject.as_deref(), Some("CN=ecdsa test,O=Example,ST=WA,C=US"));
        }
    }
}

#[test]
fn alg_must_match_the_signing_key() {
    // A P-256 key claiming ES384: algorithm substitution is an integrity failure.
    let signer = signer(&CURVES[0]);
    let (_dir, store, policy) = setup(&signer);
    let o = verify(
        &subject(),
        "localhost:5000/e2e",
        MEDIA_TYPE_JWS,
        &jws(&signer, "ES384"),
        &policy,
        &store,
        SystemTime::now(),
    );
    let failure = o.failure().expect("fails");
    assert_eq!(failure.check, Check::Integrity);
    assert!(failure.reason.contains("requires ES256"), "{}", failure.reason);
}

#[test]
fn another_key_of_the_same_curve_does_not_verify() {
    let signer_a = signer(&CURVES[1]);
    let signer_b = signer(&CURVES[1]);
    let (_dir, store, policy) = setup(&signer_a);
    // Envelope signed by B but carrying A's certificate.
    let forged = Signer { cert: signer_a.cert.clone(), key: signer_b.key };
    let o = verify(
        &subject(),
        "localhost:5000/e2e",
        MEDIA_TYPE_COSE,
        &cose(&forged, CURVES[1].cose),
        &policy,
        &store,
        SystemTime::now(),
    );
    let failure = o.failure().expect("fails");
    assert_eq!(failure.check, Check::Integrity);
    assert!(failure.reason.contains("does not verify"), "{}", failure.reason);
}
