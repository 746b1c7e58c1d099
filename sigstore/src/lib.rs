//! Offline Cosign and Sigstore verification for pullgate.
//!
//! Pure functions over bytes: no network, no registry access, no async runtime. Fetching
//! signature manifests, layers and bundles is the caller's job; this crate decides whether
//! what was fetched proves that a trusted signer signed the digest being pulled.
//!
//! * [`verify_cosign_signature`]: one layer of a cosign `.sig` manifest (simple-signing
//!   payload and annotations), key-based or keyless, with the Rekor SET of
//!   `dev.sigstore.cosign/bundle`.
//! * [`verify_bundle`]: a Sigstore bundle v0.1–v0.3 (message signature or DSSE with an
//!   in-toto statement), with Rekor v1/v2 entries (SET, Merkle inclusion proof, signed
//!   checkpoint), RFC 3161 timestamps and an optional [`ProvenancePolicy`].
//! * Trust: [`TrustedRoot`] (Sigstore `trusted_root.json`, or PEM files), [`PublicKeys`],
//!   [`Identity`] with [`Matcher`]s (exact, or regular expressions that are always anchored).
//! * Results: an [`Outcome`] with every [`Check`], the [`Signer`], the log index and times, and
//!   on rejection a [`Failure`] whose [`FailureClass`] says what kind of check failed.
//!
//! # Time
//!
//! Fulcio certificates live ten minutes. As Sigstore does, a certificate is judged at the
//! *verified* times of the signature (the integrated time of a log entry whose SET verified,
//! or an RFC 3161 timestamp from a trusted timestamp authority), never at the current time; a
//! signature with a certificate and no verified time is rejected. The `now` argument only
//! refuses log and timestamp times in the future.
//!
//! # Why not the `sigstore` crate
//!
//! The verifier is written on aws-lc-rs, x509-cert, cms, rustls-webpki, serde_json and regex
//! (all already in the workspace for `pullgate-notation`) instead of the `sigstore` crate
//! (0.15):
//!
//! * its bundle verifier does not check signed entry timestamps, inclusion proofs or
//!   checkpoints (sigstore-rs#285), which the conformance suite requires;
//! * its cosign verification path fetches through its own embedded OCI client, and the type
//!   that would let us hand it layers we fetched (`SignatureLayer::new`) is crate-private;
//! * it is "experimental" and changes its API every release, and it would add a large
//!   dependency tree (OCI client, HTTP stack, crypto duplicates) to a 2-core build for logic
//!   that fits in a few modules here.
//!
//! # Not verified
//!
//! * Signed certificate timestamps (SCTs) embedded in Fulcio certificates: the CT logs of the
//!   trusted root are read past. The Rekor entry (required by default) is the transparency
//!   evidence relied on instead.
//! * Revocation of any certificate (offline by design).
//! * The `envelopeHash` of Rekor dsse 0.0.1 entries (its serialisation is not canonical); the
//!   payload hash, signatures and signer are checked.
//! * Cosign attestation layers in the legacy (non-bundle) `.att` form.

mod bundle;
mod certs;
mod cosign;
mod encoding;
mod identity;
mod keys;
mod outcome;
mod rekor;
mod statement;
mod timestamp;
mod trust;

pub use bundle::{Artifact, BundlePolicy, MAX_BUNDLE_BYTES, MAX_TIMESTAMPS, MAX_TLOG_ENTRIES, verify_bundle};
pub use cosign::{
    ANNOTATION_BUNDLE, ANNOTATION_CERTIFICATE, ANNOTATION_CHAIN, ANNOTATION_RFC3161, ANNOTATION_SIGNATURE, CosignLayer,
    CosignPolicy, MAX_ANNOTATION_BYTES, MAX_PAYLOAD_BYTES, SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_TYPE,
    verify_cosign_signature,
};
pub use encoding::PemError;
pub use identity::{AnchoredRegex, Identity, IdentityError, MAX_PATTERN_LEN, Matcher};
pub use keys::{KeyError, KeyKind, MAX_KEY_PEM_BYTES, MAX_KEYS, PublicKey, PublicKeys};
pub use outcome::{Check, CheckStatus, Failure, FailureClass, Outcome, Signer};
pub use statement::{
    IN_TOTO_PAYLOAD_TYPE, ProvenancePolicy, SLSA_PROVENANCE_V1, SLSA_PROVENANCE_V02, STATEMENT_V01, STATEMENT_V1,
};
pub use trust::{
    CertificateAuthority, MAX_ROOT_ENTRIES, MAX_TRUSTED_ROOT_BYTES, TransparencyLog, TrustRootError, TrustedRoot,
    ValidityWindow,
};
