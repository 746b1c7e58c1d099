//! Every Notation vector of `shared/fixtures/PROVENANCE.md` section 1 (1a: `notation sign` output
//! in OCI layouts; 1b: loose notation-go envelopes), verified with the real trust stores and
//! trust policies, asserting the verdict and which check decided it.
//!
//! "Now" is the real clock except where a row's expectation depends on a specific time.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pullgate_notation::{
    Check, CheckStatus, SignatureBlob, SignatureOutcome, SubjectDescriptor, TrustPolicyDocument, TrustStore, verify,
    verify_artifact,
};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
const E2E_DIGEST: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const REPO: &str = "localhost:5000/e2e";
const JWS: &str = "application/jose+json";
const COSE: &str = "application/cose";

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation"))
}

fn read(rel: &str) -> Vec<u8> {
    let path = fixtures().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(|| TrustStore::load(&fixtures().join("truststore")).expect("fixture trust store loads"))
}

fn policy_file(name: &str) -> TrustPolicyDocument {
    TrustPolicyDocument::parse(&read(&format!("trustpolicy/{name}"))).expect("fixture policy parses")
}

/// A fixture policy with its `ca:e2e` store renamed to another fixture store (the PROVENANCE
/// rows name the store by the certificate it holds).
fn policy_file_with_store(name: &str, store: &str) -> TrustPolicyDocument {
    let text = String::from_utf8(read(&format!("trustpolicy/{name}"))).unwrap();
    assert!(text.contains("\"ca:e2e\""));
    TrustPolicyDocument::parse(text.replace("\"ca:e2e\"", &format!("\"{store}\"")).as_bytes()).unwrap()
}

/// The policies upstream builds in Go for the notation-go vectors.
fn policy(level: &str, stores: &[&str], identities: &[&str], verify_timestamp: Option<&str>) -> TrustPolicyDocument {
    let mut sv = json!({ "level": level });
    if let Some(v) = verify_timestamp {
        sv["verifyTimestamp"] = json!(v);
    }
    let doc = json!({
        "version": "1.0",
        "trustPolicies": [{
            "name": "test",
            "registryScopes": ["*"],
            "signatureVerification": sv,
            "trustStores": stores,
            "trustedIdentities": identities,
        }]
    });
    TrustPolicyDocument::parse(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn at(rfc3339_utc: &str) -> SystemTime {
    // Only `YYYY-MM-DDTHH:MM:SSZ` is needed here.
    let b = rfc3339_utc.as_bytes();
    let num = |r: std::ops::Range<usize>| rfc3339_utc[r].parse::<i64>().unwrap();
    assert_eq!(b[19], b'Z');
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

// ---------------------------------------------------------------------------------------------
// OCI layouts (1a)

fn layout_blob(layout: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = read(&format!("oci-layouts/{layout}/blobs/sha256/{hex}"));
    assert_eq!(sha256_hex(&bytes), hex, "blob {digest} of {layout} is content-addressed");
    bytes
}

/// The image the layouts share, checked against its blob.
fn e2e_subject(layout: &str) -> SubjectDescriptor {
    let manifest = layout_blob(layout, E2E_DIGEST);
    assert_eq!(manifest.len(), 517);
    SubjectDescriptor { media_type: OCI_MANIFEST.into(), digest: E2E_DIGEST.into(), size: 517 }
}

/// Notary signature manifests in `index.json` whose subject is the e2e image, in index order:
/// (signature manifest digest, envelope media type, envelope bytes).
fn layout_signatures(layout: &str) -> Vec<(String, String, Vec<u8>)> {
    let index: Value = serde_json::from_slice(&read(&format!("oci-layouts/{layout}/index.json"))).unwrap();
    let mut out = Vec::new();
    for desc in index["manifests"].as_array().unwrap() {
        if desc["mediaType"] != OCI_MANIFEST {
            continue;
        }
        let digest = desc["digest"].as_str().unwrap();
        let manifest: Value = serde_json::from_slice(&layout_blob(layout, digest)).unwrap();
        let is_signature =
            manifest["config"]["mediaType"] == NOTARY_SIGNATURE || manifest["artifactType"] == NOTARY_SIGNATURE;
        if !is_signature || manifest["subject"]["digest"] != E2E_DIGEST {
            continue;
        }
        let layer = &manifest["layers"][0];
        let blob = layout_blob(layout, layer["digest"].as_str().unwrap());
        assert_eq!(blob.len() as u64, layer["size"].as_u64().unwrap());
        out.push((digest.to_string(), layer["mediaType"].as_str().unwrap().to_string(), blob));
    }
    out
}

fn only_signature(layout: &str) -> (String, Vec<u8>) {
    let mut sigs = layout_signatures(layout);
    assert_eq!(sigs.len(), 1, "{layout} has one signature");
    let (_, media_type, bytes) = sigs.remove(0);
    (media_type, bytes)
}

fn verify_layout(layout: &str, policy: &TrustPolicyDocument) -> SignatureOutcome {
    let (media_type, bytes) = only_signature(layout);
    verify(&e2e_subject(layout), REPO, &media_type, &bytes, policy, store(), now())
}

#[track_caller]
fn assert_verified(o: &SignatureOutcome) {
    assert!(o.verified, "expected verified: {o:#?}");
    assert!(o.failure().is_none());
    for check in [Check::Integrity, Check::TargetArtifact] {
        assert_eq!(o.check(check).unwrap().status, CheckStatus::Passed, "{o:#?}");
    }
    assert_eq!(o.check(Check::Revocation).unwrap().status, CheckStatus::Skipped);
}

#[track_caller]
fn assert_all_passed(o: &SignatureOutcome) {
    assert_verified(o);
    for c in &o.checks {
        let expected = if c.check == Check::Revocation { CheckStatus::Skipped } else { CheckStatus::Passed };
        assert_eq!(c.status, expected, "{c:?}");
    }
}

#[track_caller]
fn assert_failed(o: &SignatureOutcome, check: Check, reason_part: &str) {
    assert!(!o.verified, "expected a failure of {check}: {o:#?}");
    let f = o.failure().expect("a failed check");
    assert_eq!(f.check, check, "{o:#?}");
    assert!(f.reason.contains(reason_part), "reason {:?} should contain {reason_part:?}", f.reason);
    // Checks after the enforced failure are not evaluated.
    let after = o.checks.iter().skip_while(|c| c.check != check).skip(1);
    for c in after {
        assert_eq!(c.status, CheckStatus::NotEvaluated, "{c:?}");
    }
}

#[track_caller]
fn assert_logged(o: &SignatureOutcome, check: Check, reason_part: &str) {
    let c = o.check(check).unwrap();
    assert_eq!(c.status, CheckStatus::Logged, "{o:#?}");
    assert!(c.reason.contains(reason_part), "reason {:?} should contain {reason_part:?}", c.reason);
}

#[test]
fn layouts_hold_the_documented_signatures() {
    let valid = layout_signatures("e2e-valid-signature");
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].0, "sha256:90ceaff260d657d797c408ac73564a9c7bb9d86055877c2a811f0e63b8c6524f");
    assert_eq!(sha256_hex(&valid[0].2), "c9af07e038b2b1a463e648986ad7273157511ffeba0b689f33e5472bae471f50");

    let multiple = layout_signatures("e2e-valid-multiple-signatures");
    let digests: Vec<&str> = multiple.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        digests,
        [
            "sha256:90ceaff260d657d797c408ac73564a9c7bb9d86055877c2a811f0e63b8c6524f",
            "sha256:c3ebe4a20b6832328fc5078a7795ddc1114b896e13fca2add38109c3866b5fbf"
        ]
    );
    // The referrers-tag fallback index lists only signature A.
    let fallback: Value = serde_json::from_slice(&layout_blob(
        "e2e-valid-multiple-signatures",
        "sha256:13e107e0dd246f07ff18998a3d39e226965c41477a1bc1765f7617632ff3f283",
    ))
    .unwrap();
    let listed: Vec<&str> =
        fallback["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(listed, [digests[0]]);

    assert!(layout_signatures("e2e-unsigned").is_empty());
    let (media_type, bytes) = only_signature("e2e-invalid-signature");
    assert_eq!(
        (media_type.as_str(), bytes.as_slice()),
        ("application/vnd.oci.image.layer.v1.tar", &b"invalid signature\n"[..])
    );
}

#[test]
fn e2e_unsigned_fails_without_a_signature() {
    let subject = e2e_subject("e2e-unsigned");
    let r = verify_artifact(&subject, REPO, &[], &policy_file("trustpolicy.json"), store(), now());
    assert!(!r.verified);
    assert_eq!(r.reason, "no signature is associated with the artifact");
    // Level skip does not look for signatures at all.
    let r = verify_artifact(&subject, REPO, &[], &policy_file("skip_trustpolicy.json"), store(), now());
    assert!(r.verified, "{r:?}");
}

#[test]
fn e2e_valid_signature() {
    let o = verify_layout("e2e-valid-signature", &policy_file("trustpolicy.json"));
    assert_all_passed(&o);
    assert_eq!(o.policy.as_deref(), Some("e2e"));
    assert_eq!(o.signing_scheme, Some("notary.x509"));
    assert_eq!(o.signer_subject.as_deref(), Some("CN=e2e,O=Notary,L=Seattle,ST=WA,C=US"));
    assert!(o.check(Check::Authenticity).unwrap().reason.contains("ca:e2e"));
    assert!(o.check(Check::Revocation).unwrap().reason.contains("offline"));

    // An unrelated certificate in the store: authenticity fails.
    let o = verify_layout("e2e-valid-signature", &policy_file_with_store("trustpolicy.json", "ca:e2e-other"));
    assert_failed(&o, Check::Authenticity, "does not contain any trusted certificate");

    let o = verify_layout("e2e-valid-signature", &policy_file("invalid_trusted_identity_trustpolicy.json"));
    assert_failed(&o, Check::TrustedIdentity, "does not match");
    assert_eq!(o.check(Check::Authenticity).unwrap().status, CheckStatus::Passed);

    let o = verify_layout("e2e-valid-signature", &policy_file("valid_trusted_identity_trustpolicy.json"));
    assert_all_passed(&o);
    assert!(o.check(Check::TrustedIdentity).unwrap().reason.contains("matches trusted identity"));
}

#[test]
fn e2e_valid_signature_under_other_fixture_policies() {
    // registry_scope_trustpolicy.json only covers localhost:5000/test-repo.
    let doc = policy_file("registry_scope_trustpolicy.json");
    let (media_type, bytes) = only_signature("e2e-valid-signature");
    let subject = e2e_subject("e2e-valid-signature");
    let o = verify(&subject, REPO, &media_type, &bytes, &doc, store(), now());
    assert_failed(&o, Check::TrustPolicy, "no trust policy applies");
    let o = verify(&subject, "localhost:5000/test-repo", &media_type, &bytes, &doc, store(), now());
    assert_all_passed(&o);

    // override_strict_trustpolicy.json logs authenticity: an untrusted signer is only logged.
    let o = verify_layout(
        "e2e-valid-signature",
        &policy_file_with_store("override_strict_trustpolicy.json", "ca:e2e-other"),
    );
    assert_verified(&o);
    assert_logged(&o, Check::Authenticity, "does not contain any trusted certificate");

    // The timestamp policies name tsa:e2e, which does not exist in the store: the e2e signature
    // has no timestamp, so "always" fails while "afterCertExpiry" (certificate valid) passes.
    let o = verify_layout("e2e-valid-signature", &policy_file("timestamp_trustpolicy.json"));
    assert_failed(&o, Check::AuthenticTimestamp, "no timestamp countersignature was found");
    let o = verify_layout("e2e-valid-signature", &policy_file("timestamp_after_cert_expiry_trustpolicy.json"));
    assert_all_passed(&o);
}

#[test]
fn e2e_valid_multiple_signatures() {
    let layout = "e2e-valid-multiple-signatures";
    let subject = e2e_subject(layout);
    let sigs = layout_signatures(layout);
    let (a, b) = (&sigs[0], &sigs[1]);
    let doc = policy_file("trustpolicy.json");

    // B first, so the artifact verdict really comes from "any signature verifies".
    let blobs = [SignatureBlob { media_type: &b.1, bytes: &b.2 }, SignatureBlob { media_type: &a.1, bytes: &a.2 }];
    let r = verify_artifact(&subject, REPO, &blobs, &doc, store(), now());
    assert!(r.verified, "{r:#?}");
    assert_eq!(r.signatures.len(), 2);
    assert!(r.reason.starts_with("signature #2 of 2"), "{}", r.reason);
    assert_failed(&r.signatures[0], Check::Authenticity, "does not contain any trusted certificate");
    assert_all_passed(&r.signatures[1]);

    // B alone: untrusted, and (seen at audit level, where checks go on) its certificate expired.
    let o = verify(&subject, REPO, &b.1, &b.2, &doc, store(), now());
    assert_failed(&o, Check::Authenticity, "does not contain any trusted certificate");
    assert_eq!(o.signer_subject.as_deref(), Some("CN=testcert11,O=Notary,L=Seattle,ST=WA,C=US"));
    let o = verify(&subject, REPO, &b.1, &b.2, &policy_file("audit_trustpolicy.json"), store(), now());
    assert_verified(&o);
    assert_logged(&o, Check::Authenticity, "does not contain any trusted certificate");
    assert_logged(&o, Check::AuthenticTimestamp, "it was expired at");
}

#[test]
fn e2e_expired_signature() {
    let layout = "e2e-expired-signature";
    let o = verify_layout(layout, &policy_file("trustpolicy.json"));
    assert_failed(&o, Check::Expiry, "digital signature has expired on \"Tue, 27 Jun 2023 05:21:21 +0000\"");
    for name in ["permissive_trustpolicy.json", "audit_trustpolicy.json"] {
        let o = verify_layout(layout, &policy_file(name));
        assert_verified(&o);
        assert_logged(&o, Check::Expiry, "digital signature has expired");
        assert_eq!(o.logged().count(), 1, "{name}: only expiry is logged");
    }
}

#[test]
fn e2e_with_expired_cert() {
    let layout = "e2e-with-expired-cert";
    let strict = policy_file_with_store("trustpolicy.json", "ca:e2e-expired");
    let o = verify_layout(layout, &strict);
    assert_failed(
        &o,
        Check::AuthenticTimestamp,
        "verification time is after certificate \"C=AU,ST=Some-State,O=Internet Widgits Pty Ltd\" validity period, \
         it was expired at \"Tue, 27 Jun 2023 06:10:00 +0000\"",
    );
    assert_eq!(o.check(Check::Authenticity).unwrap().status, CheckStatus::Passed);
    for name in ["permissive_trustpolicy.json", "audit_trustpolicy.json"] {
        let o = verify_layout(layout, &policy_file_with_store(name, "ca:e2e-expired"));
        assert_verified(&o);
        assert_logged(&o, Check::AuthenticTimestamp, "it was expired at \"Tue, 27 Jun 2023 06:10:00 +0000\"");
    }

    // The expectation depends on the clock: inside the certificate's validity the same
    // signature verifies at strict level.
    let (media_type, bytes) = only_signature(layout);
    let o = verify(&e2e_subject(layout), REPO, &media_type, &bytes, &strict, store(), at("2023-06-27T06:09:00Z"));
    assert_all_passed(&o);
}

#[test]
fn e2e_invalid_signature() {
    let layout = "e2e-invalid-signature";
    for name in ["trustpolicy.json", "permissive_trustpolicy.json", "audit_trustpolicy.json"] {
        let o = verify_layout(layout, &policy_file(name));
        assert_failed(&o, Check::Integrity, "application/vnd.oci.image.layer.v1.tar");
    }
    let o = verify_layout(layout, &policy_file("skip_trustpolicy.json"));
    assert!(o.verified);
    assert!(o.checks.iter().skip(1).all(|c| c.status == CheckStatus::Skipped), "{o:#?}");

    let (media_type, bytes) = only_signature(layout);
    let blobs = [SignatureBlob { media_type: &media_type, bytes: &bytes }];
    let subject = e2e_subject(layout);
    assert!(!verify_artifact(&subject, REPO, &blobs, &policy_file("audit_trustpolicy.json"), store(), now()).verified);
    assert!(verify_artifact(&subject, REPO, &blobs, &policy_file("skip_trustpolicy.json"), store(), now()).verified);
}

// ---------------------------------------------------------------------------------------------
// Loose envelopes (1b)

fn d1() -> SubjectDescriptor {
    SubjectDescriptor {
        media_type: DOCKER_MANIFEST.into(),
        digest: "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda".into(),
        size: 528,
    }
}

fn chain_subject() -> SubjectDescriptor {
    SubjectDescriptor {
        media_type: DOCKER_MANIFEST.into(),
        digest: "sha256:60043cf45eaebc4c0867fea485a039b598f52fd09fd5b07b0b2d2f88fad9d74e".into(),
        size: 528,
    }
}

/// The alpine manifest signed by the self-signed envelopes, described from its bytes.
fn alpine_subject() -> SubjectDescriptor {
    let name = "sha256-19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0.json";
    let bytes = read(&format!("subjects/{name}"));
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    SubjectDescriptor {
        media_type: manifest["mediaType"].as_str().unwrap().to_string(),
        digest: format!("sha256:{}", sha256_hex(&bytes)),
        size: bytes.len() as u64,
    }
}

fn envelope(file: &str, subject: &SubjectDescriptor, doc: &TrustPolicyDocument) -> SignatureOutcome {
    envelope_at(file, subject, doc, now())
}

fn envelope_at(file: &str, subject: &SubjectDescriptor, doc: &TrustPolicyDocument, t: SystemTime) -> SignatureOutcome {
    let media_type = if file.starts_with("cose") { COSE } else { JWS };
    verify(
        subject,
        "registry.acme-rockets.io/software/net-monitor",
        media_type,
        &read(&format!("envelopes/{file}")),
        doc,
        store(),
        t,
    )
}

#[test]
fn selfsigned_alpine_jws_and_cose() {
    let subject = alpine_subject();
    assert_eq!(subject.digest, "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0");
    assert_eq!((subject.media_type.as_str(), subject.size), (OCI_MANIFEST, 481));
    for file in ["jws-selfsigned-alpine.sig", "cose-selfsigned-alpine.sig"] {
        let o = envelope(file, &subject, &policy("strict", &["ca:extracted-alpine-2123"], &["*"], None));
        assert_all_passed(&o);
        assert_eq!(o.signer_subject.as_deref(), Some("CN=alpine,O=Notary,L=Seattle,ST=WA,C=US"));
        let format = if file.starts_with("cose") { "COSE PS256" } else { "JWS PS256" };
        assert!(o.check(Check::Integrity).unwrap().reason.starts_with(format), "{o:#?}");

        let with_tsa = policy("strict", &["ca:extracted-alpine-2123", "tsa:globalsign-r6"], &["*"], Some("always"));
        assert_failed(&envelope(file, &subject, &with_tsa), Check::AuthenticTimestamp, "no timestamp countersignature");

        // Signed for the alpine manifest, so not valid for another artifact.
        let o = envelope(file, &d1(), &policy("strict", &["ca:extracted-alpine-2123"], &["*"], None));
        assert_failed(&o, Check::TargetArtifact, "sha256:19dbd2e4");
    }
}

#[test]
fn timestamped_jws_and_cose() {
    for (file, stamped) in
        [("jws-timestamped.sig", "2024-06-18T06:29:37Z"), ("cose-timestamped.sig", "2024-06-18T06:27:16Z")]
    {
        let trusted = policy("strict", &["ca:alpine-2033", "tsa:globalsign-r6"], &["*"], Some("always"));
        let o = envelope(file, &d1(), &trusted);
        assert_all_passed(&o);
        let ts = &o.check(Check::AuthenticTimestamp).unwrap().reason;
        assert!(ts.contains(stamped) && ts.contains("Globalsign TSA for Advanced - G4 - 202311"), "{ts}");

        let mismatch = policy("strict", &["ca:alpine-2033", "tsa:digicert-g4"], &["*"], Some("always"));
        assert_failed(
            &envelope(file, &d1(), &mismatch),
            Check::AuthenticTimestamp,
            "certificate signed by unknown authority",
        );
    }
}

#[test]
fn expired_cert_valid_through_the_timestamp() {
    for file in ["jws-expired-cert-timestamped.sig", "cose-expired-cert-timestamped.sig"] {
        for option in ["always", "afterCertExpiry"] {
            let doc = policy("strict", &["ca:extracted-testtsa-2024", "tsa:globalsign-r6"], &["*"], Some(option));
            let o = envelope(file, &d1(), &doc);
            assert_all_passed(&o);
            assert!(
                o.check(Check::AuthenticTimestamp).unwrap().reason.contains("timestamp 2024-06-18T07:21"),
                "{o:#?}"
            );
        }
        let no_tsa = policy("strict", &["ca:extracted-testtsa-2024"], &["*"], None);
        assert_failed(
            &envelope(file, &d1(), &no_tsa),
            Check::AuthenticTimestamp,
            "validity period, it was expired at \"Tue, 18 Jun 2024 07:30:31 +0000\"",
        );
    }
}

#[test]
fn timestamp_before_cert_not_before() {
    let file = "jws-timestamp-before-cert-notbefore.sig";
    let doc = policy("strict", &["ca:testtsa-notyetvalid", "tsa:globalsign-r6"], &["*"], Some("always"));
    assert_failed(
        &envelope(file, &d1(), &doc),
        Check::AuthenticTimestamp,
        "timestamp can be before certificate \"CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US\" validity period, \
         it will be valid from \"Fri, 18 Sep 2099 11:54:34 +0000\"",
    );
    let no_tsa = policy("strict", &["ca:testtsa-notyetvalid"], &["*"], None);
    assert_failed(
        &envelope(file, &d1(), &no_tsa),
        Check::AuthenticTimestamp,
        "verification time is before certificate",
    );
}

#[test]
fn timestamp_after_cert_not_after() {
    let doc = policy("strict", &["ca:extracted-testtsa-2001", "tsa:globalsign-r6"], &["*"], Some("always"));
    assert_failed(
        &envelope("cose-timestamp-after-cert-notafter.sig", &d1(), &doc),
        Check::AuthenticTimestamp,
        "timestamp can be after certificate \"CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US\" validity period, \
         it was expired at \"Tue, 18 Sep 2001 11:54:34 +0000\"",
    );
}

#[test]
fn no_timestamp() {
    let file = "jws-no-timestamp.sig";
    assert_all_passed(&envelope(file, &d1(), &policy("strict", &["ca:alpine-2033"], &["*"], None)));
    let after_expiry = policy("strict", &["ca:alpine-2033", "tsa:globalsign-r6"], &["*"], Some("afterCertExpiry"));
    assert_all_passed(&envelope(file, &d1(), &after_expiry));
    let always = policy("strict", &["ca:alpine-2033", "tsa:globalsign-r6"], &["*"], Some("always"));
    assert_failed(
        &envelope(file, &d1(), &always),
        Check::AuthenticTimestamp,
        "no timestamp countersignature was found in the signature envelope",
    );
    // afterCertExpiry depends on the clock: once the certificate (to 2033-05-10) has expired,
    // a timestamp is required and there is none.
    assert_failed(
        &envelope_at(file, &d1(), &after_expiry, at("2034-01-01T00:00:00Z")),
        Check::AuthenticTimestamp,
        "no timestamp countersignature was found",
    );
}

const ROOT_IDENTITY: &str = "x509.subject:CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US";

#[test]
fn chain_x509_valid() {
    let file = "jws-chain-x509-valid.json";
    for identity in [ROOT_IDENTITY, "*"] {
        let o = envelope(file, &chain_subject(), &policy("strict", &["ca:notation-test-root"], &[identity], None));
        assert_all_passed(&o);
        assert!(o.check(Check::Integrity).unwrap().reason.contains("PS384"));
        assert!(o.check(Check::Integrity).unwrap().reason.contains("2 certificate(s)"));
    }
    let unrelated = policy("strict", &["ca:e2e"], &["*"], None);
    assert_failed(&envelope(file, &chain_subject(), &unrelated), Check::Authenticity, "does not contain any trusted");
    let wrong_identity =
        policy("strict", &["ca:notation-test-root"], &["x509.subject:CN=LOL,O=DummyOrg,L=Hyderabad,ST=TG,C=IN"], None);
    assert_failed(&envelope(file, &chain_subject(), &wrong_identity), Check::TrustedIdentity, "does not match");
}

#[test]
fn padded_payloads_fail_integrity_at_every_level() {
    for (file, store) in [
        ("jws-chain-x509-padded-payload.json", "ca:notation-test-root"),
        ("jws-chain-signingauthority-padded-payload.json", "signingAuthority:notation-test-root"),
    ] {
        for level in ["strict", "permissive", "audit"] {
            let o = envelope(file, &chain_subject(), &policy(level, &[store], &["*"], None));
            assert_failed(&o, Check::Integrity, "payload");
        }
    }
}

#[test]
fn chain_x509_expired() {
    let file = "jws-chain-x509-expired.json";
    let o = envelope(file, &chain_subject(), &policy("strict", &["ca:notation-test-root"], &["*"], None));
    assert_failed(&o, Check::Expiry, "digital signature has expired on \"Fri, 29 Jul 2022 23:59:00 +0000\"");
    for level in ["permissive", "audit"] {
        let o = envelope(file, &chain_subject(), &policy(level, &["ca:notation-test-root"], &["*"], None));
        assert_verified(&o);
        assert_logged(&o, Check::Expiry, "Fri, 29 Jul 2022 23:59:00 +0000");
    }
}

#[test]
fn chain_signing_authority() {
    let sa = policy("strict", &["signingAuthority:notation-test-root"], &[ROOT_IDENTITY], None);
    let o = envelope("jws-chain-signingauthority-valid.json", &chain_subject(), &sa);
    assert_all_passed(&o);
    assert_eq!(o.signing_scheme, Some("notary.x509.signingAuthority"));
    assert!(o.check(Check::Authenticity).unwrap().reason.contains("signingAuthority:notation-test-root"));
    assert!(o.check(Check::AuthenticTimestamp).unwrap().reason.contains("Mon, 09 Nov 2020 07:00:00 +0000"));

    // Under this scheme a ca store alone finds no trusted certificate.
    let ca_only = policy("strict", &["ca:notation-test-root"], &["*"], None);
    let o = envelope("jws-chain-signingauthority-valid.json", &chain_subject(), &ca_only);
    assert_failed(&o, Check::Authenticity, "names no signingAuthority trust store");

    let o = envelope("jws-chain-signingauthority-expired.json", &chain_subject(), &sa);
    assert_failed(&o, Check::Expiry, "digital signature has expired on \"Fri, 29 Jul 2022 23:59:00 +0000\"");
}

#[test]
fn unknown_critical_attribute_needs_a_plugin() {
    let o = envelope(
        "jws-chain-x509-unknown-crit-plugin.json",
        &chain_subject(),
        &policy("audit", &["ca:notation-test-root"], &["*"], None),
    );
    // Cryptographically valid, but the required plugin is not available, at any level.
    assert_eq!(o.check(Check::Integrity).unwrap().status, CheckStatus::Passed);
    assert_failed(&o, Check::VerificationPlugin, "verification plugin \"plugin-name\"");
    assert!(o.failure().unwrap().reason.contains("SomeKey"));
}

#[test]
fn malformed_envelope_fails_parsing() {
    for media_type in [JWS, COSE] {
        let o = verify(
            &d1(),
            REPO,
            media_type,
            &read("envelopes/malformed.jws.sig"),
            &policy_file("audit_trustpolicy.json"),
            store(),
            now(),
        );
        assert_failed(&o, Check::Integrity, "unable to parse the digital signature");
        assert_eq!(o.signer_subject, None);
    }
}

#[test]
fn tampered_envelopes_fail_integrity() {
    // Flip one byte of the signature of a valid COSE envelope.
    let mut cose = read("envelopes/cose-selfsigned-alpine.sig");
    let last = cose.len() - 1;
    cose[last] ^= 0x01;
    let doc = policy("strict", &["ca:extracted-alpine-2123"], &["*"], None);
    let o = verify(&alpine_subject(), REPO, COSE, &cose, &doc, store(), now());
    assert_failed(&o, Check::Integrity, "does not verify");

    // Swap in a different signing certificate: the signature no longer verifies with its key.
    let mut jws: Value = serde_json::from_slice(&read("envelopes/jws-selfsigned-alpine.sig")).unwrap();
    let other: Value = serde_json::from_slice(&read("envelopes/jws-no-timestamp.sig")).unwrap();
    jws["header"]["x5c"] = other["header"]["x5c"].clone();
    let o = verify(&alpine_subject(), REPO, JWS, &serde_json::to_vec(&jws).unwrap(), &doc, store(), now());
    assert_failed(&o, Check::Integrity, "does not verify");

    // Strip the timestamp's last byte: the countersignature cannot be parsed.
    let mut ts: Value = serde_json::from_slice(&read("envelopes/jws-timestamped.sig")).unwrap();
    let token = ts["header"]["io.cncf.notary.timestampSignature"].as_str().unwrap().to_string();
    ts["header"]["io.cncf.notary.timestampSignature"] = json!(format!("{}AAAA", &token[..token.len() - 4]));
    let trusted = policy("strict", &["ca:alpine-2033", "tsa:globalsign-r6"], &["*"], Some("always"));
    let o = verify(&d1(), REPO, JWS, &serde_json::to_vec(&ts).unwrap(), &trusted, store(), now());
    assert_failed(&o, Check::AuthenticTimestamp, "timestamp countersignature");
}

#[test]
fn a_timestamp_from_another_signature_does_not_count() {
    // Move the JWS timestamp token onto the no-timestamp envelope signed by the same key: the
    // message imprint is the hash of a different signature.
    let ts: Value = serde_json::from_slice(&read("envelopes/jws-timestamped.sig")).unwrap();
    let mut plain: Value = serde_json::from_slice(&read("envelopes/jws-no-timestamp.sig")).unwrap();
    plain["header"]["io.cncf.notary.timestampSignature"] = ts["header"]["io.cncf.notary.timestampSignature"].clone();
    let trusted = policy("strict", &["ca:alpine-2033", "tsa:globalsign-r6"], &["*"], Some("always"));
    let o = verify(&d1(), REPO, JWS, &serde_json::to_vec(&plain).unwrap(), &trusted, store(), now());
    assert_failed(&o, Check::AuthenticTimestamp, "message imprint is not the hash of the signature");
}

#[test]
fn trusted_identity_is_an_order_insensitive_subset() {
    let text = String::from_utf8(read("trustpolicy/valid_trusted_identity_trustpolicy.json")).unwrap();
    let with = |identity: &str| {
        let replaced = text.replace("x509.subject: CN=e2e,O=Notary,L=Seattle,ST=WA,C=US", identity);
        assert_ne!(replaced, text);
        TrustPolicyDocument::parse(replaced.as_bytes()).unwrap()
    };
    // Reordered, partial and with spaces: still the e2e certificate.
    for identity in [
        "x509.subject: C=US, ST=WA, O=Notary",
        "x509.subject:c=US,st=WA,o=Notary,cn=e2e",
        "x509.subject: ST=WA,C=US,L=Seattle,O=Notary",
    ] {
        let o = verify_layout("e2e-valid-signature", &with(identity));
        assert_all_passed(&o);
    }
    // Values are compared exactly; an attribute the certificate lacks never matches.
    for identity in ["x509.subject: C=US, ST=WA, O=notary", "x509.subject: C=US, ST=WA, O=Notary, OU=Dev"] {
        let o = verify_layout("e2e-valid-signature", &with(identity));
        assert_failed(&o, Check::TrustedIdentity, "does not match");
    }
}

/// Every single-byte change of a valid COSE envelope is rejected, except inside the unsigned,
/// informational `io.cncf.notary.signingAgent` entry of the unprotected header.
#[test]
fn byte_flips_of_a_cose_envelope_do_not_verify() {
    let original = read("envelopes/cose-selfsigned-alpine.sig");
    let agent_key = original.windows(27).position(|w| w == b"io.cncf.notary.signingAgent").unwrap();
    let agent_entry = (agent_key - 2)..(agent_key + 27 + 1 + "Notation/1.0.0".len());
    let doc = policy("strict", &["ca:extracted-alpine-2123"], &["*"], None);
    let subject = alpine_subject();
    let t = now();
    for i in 0..original.len() {
        let mut mutated = original.clone();
        mutated[i] ^= 0x01;
        let o = verify(&subject, REPO, COSE, &mutated, &doc, store(), t);
        if o.verified {
            assert!(agent_entry.contains(&i), "flipping byte {i} still verified: {o:#?}");
        } else {
            assert_eq!(o.failure().unwrap().check, Check::Integrity, "byte {i}: {o:#?}");
        }
    }
}

#[test]
fn truncated_envelopes_do_not_verify() {
    let doc = policy("strict", &["ca:alpine-2033", "tsa:globalsign-r6"], &["*"], Some("always"));
    for (file, media_type) in [("jws-timestamped.sig", JWS), ("cose-timestamped.sig", COSE)] {
        let bytes = read(&format!("envelopes/{file}"));
        assert!(verify(&d1(), REPO, media_type, &bytes, &doc, store(), now()).verified);
        for len in (0..bytes.len()).step_by(7) {
            let o = verify(&d1(), REPO, media_type, &bytes[..len], &doc, store(), now());
            assert!(!o.verified, "{file} truncated to {len} bytes verified");
        }
    }
}
