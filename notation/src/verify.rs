//! The verification workflow of the Notary Project trust store and trust policy specification:
//! policy selection, then integrity, verification plugin, authenticity, trusted identity,
//! expiry, authentic timestamp, revocation and the target artifact match, each enforced, logged
//! or skipped as the applicable policy says, stopping at the first enforced failure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Serialize;

use crate::cert::{self, Cert, Curve, EKU_CODE_SIGNING, KeySpec, Purpose};
use crate::envelope::{self, Envelope, SignatureAlgorithm, SigningScheme};
use crate::policy::{
    Action, StoreType, TrustPolicy, TrustPolicyDocument, TrustStoreRef, TrustedIdentity, VerificationLevel,
    VerifyTimestamp, normalize_type,
};
use crate::time::{self, UnixSeconds, format_rfc1123z};
use crate::timestamp;
use crate::truststore::TrustStore;

/// Most signatures [`verify_artifact`] tries for one artifact (Notation's default is 50).
pub const MAX_SIGNATURES: usize = 50;

/// The artifact the signature must be for: the manifest descriptor being pulled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectDescriptor {
    /// Media type of the manifest.
    pub media_type: String,
    /// Its digest, `algorithm:hex`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The validations of the workflow, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    /// A trust policy applies to the repository.
    TrustPolicy,
    /// The envelope parses, its signature verifies with the signing certificate's key, the chain
    /// is well formed and the critical attributes are understood.
    Integrity,
    /// No verification plugin is required (this crate runs none).
    VerificationPlugin,
    /// The chain leads to a certificate in the policy's trust stores.
    Authenticity,
    /// The signing certificate's subject matches `trustedIdentities`.
    TrustedIdentity,
    /// The signer's `expiry` has not passed.
    Expiry,
    /// The chain was valid at an authentic time (timestamp, authentic signing time, or now).
    AuthenticTimestamp,
    /// Revocation status (never checked: offline).
    Revocation,
    /// The signed `targetArtifact` is the subject descriptor.
    TargetArtifact,
}

impl Check {
    const ORDER: [Check; 9] = [
        Check::TrustPolicy,
        Check::Integrity,
        Check::VerificationPlugin,
        Check::Authenticity,
        Check::TrustedIdentity,
        Check::Expiry,
        Check::AuthenticTimestamp,
        Check::Revocation,
        Check::TargetArtifact,
    ];

    /// The check's name as used in trust policies and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::TrustPolicy => "trustPolicy",
            Check::Integrity => "integrity",
            Check::VerificationPlugin => "verificationPlugin",
            Check::Authenticity => "authenticity",
            Check::TrustedIdentity => "trustedIdentity",
            Check::Expiry => "expiry",
            Check::AuthenticTimestamp => "authenticTimestamp",
            Check::Revocation => "revocation",
            Check::TargetArtifact => "targetArtifact",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckStatus {
    /// The check ran and succeeded.
    Passed,
    /// The check failed and the policy enforces it: the signature is not verified.
    Failed,
    /// The check failed and the policy only logs it: verification went on.
    Logged,
    /// The check was not performed (level `skip`, a `skip` override, or revocation offline).
    Skipped,
    /// The check was not reached because an earlier enforced check failed.
    NotEvaluated,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// How it ended.
    pub status: CheckStatus,
    /// Why, in words fit for a report.
    pub reason: String,
}

/// The verdict on one signature envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureOutcome {
    /// True when no enforced check failed.
    pub verified: bool,
    /// Name of the trust policy applied, if one applied.
    pub policy: Option<String>,
    /// Its verification level.
    pub level: Option<VerificationLevel>,
    /// The envelope's signing scheme, once parsed.
    pub signing_scheme: Option<&'static str>,
    /// Subject of the signing (leaf) certificate, RFC 4514, once parsed.
    pub signer_subject: Option<String>,
    /// Every check, in workflow order.
    pub checks: Vec<CheckResult>,
}

impl SignatureOutcome {
    /// The enforced failure that decided the verdict, if any.
    pub fn failure(&self) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.status == CheckStatus::Failed)
    }

    /// The result of one check.
    pub fn check(&self, check: Check) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == check)
    }

    /// Failures that were only logged.
    pub fn logged(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Logged)
    }

    /// One line: the verdict and, on failure, the check and its reason.
    pub fn summary(&self) -> String {
        match self.failure() {
            Some(f) => format!("not verified: {} failed: {}", f.check, f.reason),
            None => {
                let logged: Vec<&str> = self.logged().map(|c| c.check.as_str()).collect();
                if logged.is_empty() {
                    "verified".to_string()
                } else {
                    format!("verified with logged failures: {}", logged.join(", "))
                }
            }
        }
    }
}

struct Recorder {
    checks: Vec<CheckResult>,
    failed: bool,
}

impl Recorder {
    fn new() -> Self {
        Recorder { checks: Vec::new(), failed: false }
    }

    fn push(&mut self, check: Check, status: CheckStatus, reason: impl Into<String>) {
        self.checks.push(CheckResult { check, status, reason: reason.into() });
    }

    /// Records a check's result under `action`; returns false when verification must stop.
    fn record(&mut self, check: Check, action: Action, result: Result<String, String>) -> bool {
        match (result, action) {
            (Ok(reason), _) => self.push(check, CheckStatus::Passed, reason),
            (Err(reason), Action::Enforce) => {
                self.push(check, CheckStatus::Failed, reason);
                self.failed = true;
                return false;
            }
            (Err(reason), Action::Log) => self.push(check, CheckStatus::Logged, reason),
            (Err(reason), Action::Skip) => self.push(check, CheckStatus::Skipped, reason),
        }
        true
    }

    fn finish(mut self, outcome: Outcome) -> SignatureOutcome {
        let stopped_at = self.checks.iter().find(|c| c.status == CheckStatus::Failed).map(|c| c.check);
        for check in Check::ORDER {
            if !self.checks.iter().any(|c| c.check == check) {
                let reason = match stopped_at {
                    Some(f) => format!("not evaluated: the {f} check failed first"),
                    None => "not evaluated".to_string(),
                };
                self.push(check, CheckStatus::NotEvaluated, reason);
            }
        }
        self.checks.sort_by_key(|c| Check::ORDER.iter().position(|o| *o == c.check));
        SignatureOutcome {
            verified: !self.failed,
            policy: outcome.policy,
            level: outcome.level,
            signing_scheme: outcome.signing_scheme.map(SigningScheme::as_str),
            signer_subject: outcome.signer_subject,
            checks: self.checks,
        }
    }
}

#[derive(Default)]
struct Outcome {
    policy: Option<String>,
    level: Option<VerificationLevel>,
    signing_scheme: Option<SigningScheme>,
    signer_subject: Option<String>,
}

/// Verifies one signature envelope for `subject` pulled from `repository` (`host/repository`,
/// matched against `registryScopes`), at time `now`.
///
/// Never panics and never touches the network; every problem is a failed, logged or skipped
/// check in the outcome.
pub fn verify(
    subject: &SubjectDescriptor,
    repository: &str,
    envelope_media_type: &str,
    envelope: &[u8],
    policy_doc: &TrustPolicyDocument,
    store: &TrustStore,
    now: SystemTime,
) -> SignatureOutcome {
    let mut rec = Recorder::new();
    let mut out = Outcome::default();
    let policy = match policy_doc.applicable_policy(repository) {
        Ok(p) => p,
        Err(e) => {
            rec.record(Check::TrustPolicy, Action::Enforce, Err(e.to_string()));
            return rec.finish(out);
        }
    };
    out.policy = Some(policy.name().to_string());
    out.level = Some(policy.level());
    rec.push(
        Check::TrustPolicy,
        CheckStatus::Passed,
        format!("trust policy {:?} (level {}) applies to {repository}", policy.name(), policy.level()),
    );
    if policy.level() == VerificationLevel::Skip {
        for check in &Check::ORDER[1..] {
            rec.push(*check, CheckStatus::Skipped, format!("trust policy {:?} has level skip", policy.name()));
        }
        return rec.finish(out);
    }
    run_checks(&mut rec, &mut out, subject, envelope_media_type, envelope, policy, store, time::from_system_time(now));
    rec.finish(out)
}

#[allow(clippy::too_many_arguments)]
fn run_checks(
    rec: &mut Recorder,
    out: &mut Outcome,
    subject: &SubjectDescriptor,
    media_type: &str,
    bytes: &[u8],
    policy: &TrustPolicy,
    store: &TrustStore,
    now: UnixSeconds,
) {
    let actions = policy.actions();

    // Integrity.
    let (env, chain) = match integrity(media_type, bytes, out) {
        Ok((env, chain, reason)) => {
            rec.record(Check::Integrity, actions.integrity, Ok(reason));
            (env, chain)
        }
        Err(reason) => {
            rec.record(Check::Integrity, actions.integrity, Err(reason));
            return;
        }
    };
    let leaf = &chain[0];

    // Verification plugin: required ones cannot be run here, so they fail the signature.
    let plugin = match &env.verification_plugin {
        None => Ok("no verification plugin is required".to_string()),
        Some(name) => {
            let version = env
                .verification_plugin_min_version
                .as_deref()
                .map(|v| format!(" (minimum version {v})"))
                .unwrap_or_default();
            let extended = if env.extended_critical.is_empty() {
                String::new()
            } else {
                format!("; its critical attributes {:?} are left to the plugin", env.extended_critical)
            };
            Err(format!(
                "the signature requires verification plugin {name:?}{version}, which is not installed: \
                 pullgate runs no Notation plugins{extended}"
            ))
        }
    };
    if !rec.record(Check::VerificationPlugin, Action::Enforce, plugin) {
        return;
    }

    // Authenticity, then trusted identity under the same action (as Notation does).
    if !rec.record(Check::Authenticity, actions.authenticity, authenticity(&env, &chain, policy, store)) {
        return;
    }
    if !rec.record(Check::TrustedIdentity, actions.authenticity, trusted_identity(leaf, policy)) {
        return;
    }

    // Expiry.
    let expiry = match env.expiry {
        Some(expiry) if now >= expiry => Err(format!("digital signature has expired on {:?}", format_rfc1123z(expiry))),
        Some(expiry) => Ok(format!("the signature expires on {:?}", format_rfc1123z(expiry))),
        None => Ok("the signature has no expiry".to_string()),
    };
    if !rec.record(Check::Expiry, actions.expiry, expiry) {
        return;
    }

    // Authentic timestamp.
    if !rec.record(
        Check::AuthenticTimestamp,
        actions.authentic_timestamp,
        authentic_timestamp(&env, &chain, policy, store, now),
    ) {
        return;
    }

    // Revocation: an explicit offline default.
    let reason = match actions.revocation {
        Action::Skip => "revocation checking is skipped by the trust policy".to_string(),
        action => format!(
            "not checked: pullgate verifies offline and fetches no OCSP responses or CRLs \
             (the policy's revocation action {:?} is not applied)",
            action.as_str()
        ),
    };
    rec.push(Check::Revocation, CheckStatus::Skipped, reason);

    // Target artifact: always enforced, as in Notation.
    let target = envelope::parse_payload(&env.payload).and_then(|t| {
        if t.media_type == subject.media_type && t.digest == subject.digest && t.size == subject.size {
            Ok(format!("the signature is for {} ({}, {} bytes)", t.digest, t.media_type, t.size))
        } else {
            Err(format!(
                "the signature is for {} ({}, {} bytes), not for the artifact {} ({}, {} bytes)",
                t.digest, t.media_type, t.size, subject.digest, subject.media_type, subject.size
            ))
        }
    });
    rec.record(Check::TargetArtifact, Action::Enforce, target);
}

fn expected_algorithm(key: &KeySpec) -> Option<SignatureAlgorithm> {
    match key {
        KeySpec::Rsa { bits: 2048 } => Some(SignatureAlgorithm::Ps256),
        KeySpec::Rsa { bits: 3072 } => Some(SignatureAlgorithm::Ps384),
        KeySpec::Rsa { bits: 4096 } => Some(SignatureAlgorithm::Ps512),
        KeySpec::Ec(Curve::P256) => Some(SignatureAlgorithm::Es256),
        KeySpec::Ec(Curve::P384) => Some(SignatureAlgorithm::Es384),
        KeySpec::Ec(Curve::P521) => Some(SignatureAlgorithm::Es512),
        _ => None,
    }
}

fn aws_algorithm(alg: SignatureAlgorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        SignatureAlgorithm::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
        SignatureAlgorithm::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
        SignatureAlgorithm::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
        SignatureAlgorithm::Es256 => &sig::ECDSA_P256_SHA256_FIXED,
        SignatureAlgorithm::Es384 => &sig::ECDSA_P384_SHA384_FIXED,
        SignatureAlgorithm::Es512 => &sig::ECDSA_P521_SHA512_FIXED,
    }
}

fn integrity(media_type: &str, bytes: &[u8], out: &mut Outcome) -> Result<(Envelope, Vec<Cert>, String), String> {
    let env = envelope::parse(media_type, bytes).map_err(|e| format!("unable to parse the digital signature: {e}"))?;
    out.signing_scheme = Some(env.signing_scheme);
    let chain = env
        .cert_chain
        .iter()
        .enumerate()
        .map(|(i, der)| Cert::from_der(der, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate chain is invalid: {e}"))?;
    let leaf = &chain[0];
    out.signer_subject = Some(leaf.subject.clone());
    let expected = expected_algorithm(&leaf.key).ok_or_else(|| {
        format!("the signing certificate's {} key is not allowed for Notary Project signatures", leaf.key)
    })?;
    if expected != env.alg {
        return Err(format!(
            "the signature algorithm {} does not match the signing certificate's {} key, which requires {}",
            env.alg.jws_name(),
            leaf.key,
            expected.jws_name()
        ));
    }
    UnparsedPublicKey::new(aws_algorithm(env.alg), &leaf.public_key)
        .verify(&env.signed_bytes, &env.signature)
        .map_err(|_| {
            format!("the {} signature does not verify with the signing certificate's key", env.alg.jws_name())
        })?;
    cert::validate_chain(&chain, Purpose::CodeSigning).map_err(|e| format!("the certificate chain is invalid: {e}"))?;
    envelope::parse_payload(&env.payload)?;
    if env.verification_plugin.is_none() && !env.extended_critical.is_empty() {
        return Err(format!(
            "the signature marks attributes {:?} critical, which this verifier does not understand",
            env.extended_critical
        ));
    }
    let format = if media_type == envelope::MEDIA_TYPE_JWS { "JWS" } else { "COSE" };
    let reason = format!(
        "{format} {} signature verifies with the signing certificate's key; the chain of {} certificate(s) is well formed",
        env.alg.jws_name(),
        chain.len()
    );
    Ok((env, chain, reason))
}

/// Trust anchors and, for each, the store it came from and its subject.
struct Anchors {
    anchors: Vec<TrustAnchor<'static>>,
    labels: Vec<(TrustStoreRef, String)>,
}

/// Anchors of the named stores of one type, with the store each came from.
fn anchors_for(policy: &TrustPolicy, store: &TrustStore, store_type: StoreType) -> Result<Anchors, String> {
    let refs: Vec<&TrustStoreRef> = policy.stores_of(store_type).collect();
    let mut anchors = Vec::new();
    let mut labels = Vec::new();
    for r in refs {
        let certs = store
            .certificates(r)
            .ok_or_else(|| format!("trust store {r} named by trust policy {:?} does not exist", policy.name()))?;
        for c in certs {
            let der = CertificateDer::from(c.der());
            match webpki::anchor_from_trusted_cert(&der) {
                Ok(a) => {
                    anchors.push(a.to_owned());
                    labels.push((r.clone(), c.subject().to_string()));
                }
                Err(e) => {
                    tracing::warn!(store = %r, subject = c.subject(), error = %e, "trust store certificate unusable as an anchor")
                }
            }
        }
    }
    Ok(Anchors { anchors, labels })
}

fn unix_time(t: UnixSeconds) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.max(0) as u64))
}

fn authenticity(env: &Envelope, chain: &[Cert], policy: &TrustPolicy, store: &TrustStore) -> Result<String, String> {
    let store_type = match env.signing_scheme {
        SigningScheme::X509 => StoreType::Ca,
        SigningScheme::X509SigningAuthority => StoreType::SigningAuthority,
    };
    if policy.stores_of(store_type).next().is_none() {
        return Err(format!(
            "trust policy {:?} names no {store_type} trust store, which the {} signing scheme requires; \
             the signature's certificate chain does not contain any trusted certificate",
            policy.name(),
            env.signing_scheme.as_str()
        ));
    }
    let Anchors { anchors, labels } = anchors_for(policy, store, store_type)?;
    let names: Vec<String> = policy.stores_of(store_type).map(ToString::to_string).collect();
    if anchors.is_empty() {
        return Err(format!("trust stores {names:?} hold no usable certificates"));
    }
    let leaf_der = CertificateDer::from(chain[0].der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("the signing certificate cannot be processed: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> =
        chain[1..].iter().map(|c| CertificateDer::from(c.der.as_slice())).collect();
    // Validity is judged by the authentic timestamp check; here the chain is built at a time
    // when all of its certificates are valid (the latest notBefore), so only trust is decided.
    let probe = chain.iter().map(|c| c.not_before).max().unwrap_or(0);
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            unix_time(probe),
            webpki::KeyUsage::required_if_present(EKU_CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => format!(
                "the signature's certificate chain does not contain any trusted certificate: \
                 it leads to no certificate in {names:?}"
            ),
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => format!(
                "the certificates of the chain are never valid at the same time, so it cannot lead to {names:?}: {e}"
            ),
            other => format!("the certificate chain is not trusted by {names:?}: {other}"),
        })?;
    let anchor = path.anchor();
    let found = anchors
        .iter()
        .position(|a| a.subject == anchor.subject && a.subject_public_key_info == anchor.subject_public_key_info)
        .map(|i| &labels[i]);
    Ok(match found {
        Some((r, subject)) => format!("the certificate chain leads to {subject:?} in trust store {r}"),
        None => format!("the certificate chain leads to a certificate in {names:?}"),
    })
}

fn trusted_identity(leaf: &Cert, policy: &TrustPolicy) -> Result<String, String> {
    let identities = policy.trusted_identities();
    if identities.contains(&TrustedIdentity::Any) {
        return Ok("trust policy trusts any identity ('*')".to_string());
    }
    let mut subject = BTreeMap::new();
    for (ty, value) in leaf.subject_attributes() {
        let key = normalize_type(&ty).unwrap_or(ty);
        if subject.insert(key.clone(), value).is_some() {
            return Err(format!(
                "the signing certificate subject {:?} has attribute {key} more than once, so it cannot be matched \
                 against x509.subject identities",
                leaf.subject
            ));
        }
    }
    let dns: Vec<_> = identities
        .iter()
        .filter_map(|t| match t {
            TrustedIdentity::X509Subject(dn) => Some(dn),
            TrustedIdentity::Any => None,
        })
        .collect();
    match dns.iter().find(|dn| dn.is_subset_of(&subject)) {
        Some(dn) => {
            Ok(format!("the signing certificate subject {:?} matches trusted identity {:?}", leaf.subject, dn.as_str()))
        }
        None => Err(format!(
            "the signing certificate subject {:?} does not match the x509.subject trusted identities {:?} of trust policy {:?}",
            leaf.subject,
            dns.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            policy.name()
        )),
    }
}

/// Every certificate must be valid at the signing time the envelope states.
fn chain_valid_at_signing_time(env: &Envelope, chain: &[Cert]) -> Result<(), String> {
    let Some(t) = env.claimed_signing_time() else { return Ok(()) };
    for c in chain {
        if t < c.not_before || t > c.not_after {
            return Err(format!(
                "certificate {:?} was not valid when the digital signature was produced at {:?} \
                 (valid from {:?} to {:?})",
                c.subject,
                format_rfc1123z(t),
                format_rfc1123z(c.not_before),
                format_rfc1123z(c.not_after)
            ));
        }
    }
    Ok(())
}

fn authentic_timestamp(
    env: &Envelope,
    chain: &[Cert],
    policy: &TrustPolicy,
    store: &TrustStore,
    now: UnixSeconds,
) -> Result<String, String> {
    if env.signing_scheme == SigningScheme::X509SigningAuthority {
        chain_valid_at_signing_time(env, chain)?;
        return Ok(format!(
            "every certificate was valid at the authentic signing time {:?}",
            env.authentic_signing_time.map(format_rfc1123z).unwrap_or_default()
        ));
    }

    let mut skip_reason = None;
    if policy.stores_of(StoreType::Tsa).next().is_none() {
        skip_reason = Some("the trust policy names no tsa trust store");
    } else if policy.verify_timestamp() == VerifyTimestamp::AfterCertExpiry && !chain.iter().any(|c| now > c.not_after)
    {
        skip_reason = Some("verifyTimestamp is afterCertExpiry and no certificate of the chain has expired");
    }
    if let Some(why) = skip_reason {
        for c in chain {
            if now < c.not_before {
                return Err(format!(
                    "verification time is before certificate {:?} validity period, it will be valid from {:?}",
                    c.subject,
                    format_rfc1123z(c.not_before)
                ));
            }
            if now > c.not_after {
                return Err(format!(
                    "verification time is after certificate {:?} validity period, it was expired at {:?}",
                    c.subject,
                    format_rfc1123z(c.not_after)
                ));
            }
        }
        chain_valid_at_signing_time(env, chain)?;
        return Ok(format!("every certificate of the chain is valid now; no timestamp was verified ({why})"));
    }

    let token =
        env.timestamp_token.as_deref().ok_or("no timestamp countersignature was found in the signature envelope")?;
    let anchors = anchors_for(policy, store, StoreType::Tsa)?.anchors;
    let ts = timestamp::verify(token, &env.signature, &anchors).map_err(|e| {
        let names: Vec<String> = policy.stores_of(StoreType::Tsa).map(ToString::to_string).collect();
        format!("failed to verify the timestamp countersignature with trust stores {names:?}: {e}")
    })?;
    let stamped = time::format_rfc3339(ts.gen_time);
    if let Some(signing_time) = env.signing_time
        && ts.lower_ms < signing_time.saturating_mul(1000)
    {
        return Err(format!(
            "timestamp {stamped} is not bounded after the signing time {:?}",
            format_rfc1123z(signing_time)
        ));
    }
    for c in chain {
        if ts.lower_ms < c.not_before.saturating_mul(1000) {
            return Err(format!(
                "timestamp can be before certificate {:?} validity period, it will be valid from {:?}",
                c.subject,
                format_rfc1123z(c.not_before)
            ));
        }
        if ts.upper_ms > c.not_after.saturating_mul(1000) {
            return Err(format!(
                "timestamp can be after certificate {:?} validity period, it was expired at {:?}",
                c.subject,
                format_rfc1123z(c.not_after)
            ));
        }
    }
    chain_valid_at_signing_time(env, chain)?;
    Ok(format!(
        "timestamp {stamped} by {:?} is trusted and within the validity of every certificate \
         (TSA revocation not checked offline)",
        ts.tsa_subject
    ))
}

/// One signature attached to an artifact: its envelope media type (the signature manifest's
/// layer media type) and bytes.
#[derive(Clone, Copy, Debug)]
pub struct SignatureBlob<'a> {
    /// `application/jose+json` or `application/cose` (anything else fails integrity).
    pub media_type: &'a str,
    /// The envelope.
    pub bytes: &'a [u8],
}

/// The verdict on an artifact given all its signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactOutcome {
    /// True when the policy's level is `skip` or one signature verified.
    pub verified: bool,
    /// Name of the trust policy applied, if one applied.
    pub policy: Option<String>,
    /// Its verification level.
    pub level: Option<VerificationLevel>,
    /// The verdict in words.
    pub reason: String,
    /// The outcome of each signature tried, in order (verification stops at the first success).
    pub signatures: Vec<SignatureOutcome>,
}

/// Verifies an artifact with its attached signatures: it is verified when the applicable policy
/// is `skip` or when any one signature verifies (the Notary Project has no n-of-m rule). At
/// most [`MAX_SIGNATURES`] signatures are tried.
pub fn verify_artifact(
    subject: &SubjectDescriptor,
    repository: &str,
    signatures: &[SignatureBlob<'_>],
    policy_doc: &TrustPolicyDocument,
    store: &TrustStore,
    now: SystemTime,
) -> ArtifactOutcome {
    let policy = match policy_doc.applicable_policy(repository) {
        Ok(p) => p,
        Err(e) => {
            return ArtifactOutcome {
                verified: false,
                policy: None,
                level: None,
                reason: e.to_string(),
                signatures: Vec::new(),
            };
        }
    };
    let mut result = ArtifactOutcome {
        verified: false,
        policy: Some(policy.name().to_string()),
        level: Some(policy.level()),
        reason: String::new(),
        signatures: Vec::new(),
    };
    if policy.level() == VerificationLevel::Skip {
        result.verified = true;
        result.reason = format!("trust policy {:?} has level skip: signatures are not verified", policy.name());
        return result;
    }
    if signatures.is_empty() {
        result.reason = "no signature is associated with the artifact".to_string();
        return result;
    }
    for (i, blob) in signatures.iter().take(MAX_SIGNATURES).enumerate() {
        let outcome = verify(subject, repository, blob.media_type, blob.bytes, policy_doc, store, now);
        let verified = outcome.verified;
        let summary = outcome.summary();
        result.signatures.push(outcome);
        if verified {
            result.verified = true;
            result.reason = format!("signature #{} of {}: {summary}", i + 1, signatures.len());
            return result;
        }
    }
    let failures: Vec<String> =
        result.signatures.iter().enumerate().map(|(i, o)| format!("#{}: {}", i + 1, o.summary())).collect();
    result.reason = format!("no signature verified ({})", failures.join("; "));
    result
}
