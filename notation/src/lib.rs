//! Offline verification of Notary Project (Notation) signatures.
//!
//! This crate owns pullgate's Notation support: reading the Notation CLI trust store layout
//! ([`TrustStore::load`]) and `trustpolicy.json` ([`TrustPolicyDocument::parse`]), and verifying
//! signature envelopes against them ([`verify`] for one envelope, [`verify_artifact`] for all the
//! signatures of an artifact). Everything is a pure function over bytes and files already on
//! disk: no network, no registry access, no async runtime. Fetching signatures (referrers API
//! or the `sha256-<digest>` tag fallback) is the caller's job.
//!
//! # What is verified
//!
//! The workflow of the trust store and trust policy specification, in Notation's order, each
//! check enforced, logged or skipped per the policy's level (`strict`, `permissive`, `audit`,
//! `skip`) and `override`:
//!
//! * **integrity**: JWS JSON (`application/jose+json`) or COSE_Sign1 (`application/cose`)
//!   envelopes; RSASSA-PSS (SHA-256/384/512) and ECDSA (P-256/384/521) via aws-lc-rs; `alg` must
//!   match the signing key (RSA 2048/3072/4096 → PS256/384/512); `cty`, `crit` and the signed
//!   attributes per the envelope specifications; unknown critical attributes fail; the
//!   certificate chain must be ordered leaf to self-signed root and meet the certificate
//!   profile (key usage, basic constraints, EKU, key size).
//! * **verification plugin**: a signature that names `io.cncf.notary.verificationPlugin` fails,
//!   since no plugins are run.
//! * **authenticity**: rustls-webpki builds the chain to a certificate of the policy's `ca`
//!   stores (`notary.x509`) or `signingAuthority` stores (`notary.x509.signingAuthority`),
//!   with the code-signing EKU required if present; **trusted identity** then matches the leaf
//!   subject against `x509.subject` identities (attribute subset, order-insensitive).
//! * **expiry** of the `io.cncf.notary.expiry` signed attribute.
//! * **authentic timestamp**: the RFC 3161 countersignature checked against `tsa` stores and used
//!   as the authentic time (`verifyTimestamp` `always` or `afterCertExpiry`), or the authentic
//!   signing time of the signing-authority scheme, or the current time when there is no tsa
//!   store; the chain must also have been valid at the signing time the envelope states.
//! * **target artifact**: the signed descriptor's media type, digest and size equal the subject.
//!
//! # Revocation is not checked
//!
//! OCSP and CRL checking needs the network, which this verifier never uses. The revocation
//! check is always reported as [`CheckStatus::Skipped`] with a reason saying so, whatever the
//! policy's revocation action, and TSA chains are not checked for revocation either. Deploy
//! short-lived certificates or remove revoked roots from the trust store instead.
//!
//! # Other deviations from Notation
//!
//! * A `skip` policy with the global scope `*` is accepted (Notation accepts it, the
//!   specification forbids it).
//! * Trusted identities other than `x509.subject` are refused when the policy is parsed, since
//!   they could only be evaluated by a plugin.
//! * webpki applies RFC 5280 path processing, so chains with unknown critical extensions or
//!   violated name constraints fail authenticity where Notation would ignore them.
//! * COSE Hash Envelopes and blob (non-OCI) trust policies are not supported.

mod cert;
mod envelope;
mod policy;
mod timestamp;
mod truststore;
mod verify;

// Shared with pullgate-sigstore: DER reading and Unix-time helpers.
use pullgate_der::time;
use pullgate_der::tlv as der;

pub use envelope::{
    MAX_CHAIN_LEN, MAX_ENVELOPE_BYTES, MEDIA_TYPE_COSE, MEDIA_TYPE_JWS, PAYLOAD_CONTENT_TYPE, SigningScheme,
};
pub use policy::{
    Action, Actions, DistinguishedName, MAX_POLICIES, MAX_POLICY_BYTES, PolicyError, PolicySelectionError, StoreType,
    TrustPolicy, TrustPolicyDocument, TrustStoreRef, TrustedIdentity, VerificationLevel, VerifyTimestamp,
};
pub use truststore::{
    MAX_CERT_FILE_BYTES, MAX_CERTS_PER_STORE, MAX_STORES_PER_TYPE, TrustStore, TrustStoreError, TrustedCertificate,
};
pub use verify::{
    ArtifactOutcome, Check, CheckResult, CheckStatus, MAX_SIGNATURES, SignatureBlob, SignatureOutcome,
    SubjectDescriptor, verify, verify_artifact,
};
