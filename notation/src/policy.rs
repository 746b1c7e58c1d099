//! The Notation CLI trust policy document (`trustpolicy.json`, version `1.0`): parsing,
//! validation per the Notary Project trust policy specification, the verification levels and
//! their per-check actions, `x509.subject` trusted identities, and the choice of the policy that
//! applies to a repository.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use thiserror::Error;

/// Largest trust policy document accepted.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Most policy statements accepted in one document.
pub const MAX_POLICIES: usize = 1024;

/// Why a trust policy document was refused.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The document is larger than [`MAX_POLICY_BYTES`].
    #[error("trust policy document is {len} bytes, more than the {MAX_POLICY_BYTES}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Not JSON, a wrong JSON type, or a field the format does not have (often a typo).
    #[error("trust policy document is not a valid trustpolicy.json (check field names and types): {source}")]
    Json {
        /// The JSON decoder's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A field breaks a rule of the trust policy specification.
    #[error("trust policy field {field}: {reason}")]
    Field {
        /// Where, e.g. `trustPolicies[0] ("e2e").trustStores[1]`.
        field: String,
        /// Which rule and what to change.
        reason: String,
    },
}

/// A verification level preset (`signatureVerification.level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VerificationLevel {
    /// Every check enforced.
    Strict,
    /// Integrity and authenticity enforced; authentic timestamp, expiry, revocation logged.
    Permissive,
    /// Only integrity enforced; everything else logged.
    Audit,
    /// No signature is read or verified.
    Skip,
}

impl VerificationLevel {
    /// The name used in `trustpolicy.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationLevel::Strict => "strict",
            VerificationLevel::Permissive => "permissive",
            VerificationLevel::Audit => "audit",
            VerificationLevel::Skip => "skip",
        }
    }

    /// The spec's action table for this level.
    pub fn actions(self) -> Actions {
        use Action::{Enforce as E, Log as L, Skip as S};
        let (integrity, authenticity, authentic_timestamp, expiry, revocation) = match self {
            VerificationLevel::Strict => (E, E, E, E, E),
            VerificationLevel::Permissive => (E, E, L, L, L),
            VerificationLevel::Audit => (E, L, L, L, L),
            VerificationLevel::Skip => (S, S, S, S, S),
        };
        Actions { integrity, authenticity, authentic_timestamp, expiry, revocation }
    }
}

impl fmt::Display for VerificationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A failure fails the verification.
    Enforce,
    /// A failure is recorded and verification continues.
    Log,
    /// The check is not performed.
    Skip,
}

impl Action {
    /// The name used in `override`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enforce => "enforce",
            Action::Log => "log",
            Action::Skip => "skip",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "enforce" => Some(Action::Enforce),
            "log" => Some(Action::Log),
            "skip" => Some(Action::Skip),
            _ => None,
        }
    }
}

/// The action for each validation of a policy (its level with `override` applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Actions {
    /// Always [`Action::Enforce`] except at level `skip`.
    pub integrity: Action,
    /// Also governs the trusted-identity check, as in Notation.
    pub authenticity: Action,
    /// Certificate validity at the authentic (or current) time.
    pub authentic_timestamp: Action,
    /// The signer's `expiry` signed attribute.
    pub expiry: Action,
    /// Revocation (never checked by this crate: see the crate docs).
    pub revocation: Action,
}

/// `signatureVerification.verifyTimestamp`: when an RFC 3161 countersignature is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyTimestamp {
    /// Whenever the policy names a `tsa` trust store (the default).
    Always,
    /// Only once a certificate of the signing chain has expired.
    AfterCertExpiry,
}

/// The three kinds of named trust stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreType {
    /// `x509/ca`: roots for the `notary.x509` signing scheme.
    Ca,
    /// `x509/signingAuthority`: roots for `notary.x509.signingAuthority`.
    SigningAuthority,
    /// `x509/tsa`: roots of time-stamping authorities.
    Tsa,
}

impl StoreType {
    /// Every store type, in directory order.
    pub const ALL: [StoreType; 3] = [StoreType::Ca, StoreType::SigningAuthority, StoreType::Tsa];

    /// The name used in policies and as the directory under `x509/`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreType::Ca => "ca",
            StoreType::SigningAuthority => "signingAuthority",
            StoreType::Tsa => "tsa",
        }
    }

    fn parse(s: &str) -> Option<StoreType> {
        StoreType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for StoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `type:name` reference to a named trust store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustStoreRef {
    /// The kind of store.
    pub store_type: StoreType,
    /// The named store (a directory name, `[a-zA-Z0-9_.-]+`).
    pub name: String,
}

impl fmt::Display for TrustStoreRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.store_type, self.name)
    }
}

/// True for a valid named store: `[a-zA-Z0-9_.-]+`.
pub(crate) fn is_valid_store_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A parsed `x509.subject` distinguished name.
///
/// Attribute types are matched case-insensitively (RFC 4514 type names are case-insensitive;
/// dotted OIDs of the common types are mapped to their short names); values are compared
/// exactly, as Notation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistinguishedName {
    raw: String,
    attributes: BTreeMap<String, String>,
}

impl DistinguishedName {
    /// Parses an RFC 4514 distinguished name under the trust policy rules: single-valued RDNs,
    /// no attribute type twice, and at least `C`, `ST` and `O`.
    pub(crate) fn parse(input: &str) -> Result<DistinguishedName, String> {
        let mut attributes = BTreeMap::new();
        for (ty, value) in split_dn(input)? {
            let key = normalize_type(&ty).ok_or_else(|| format!("{ty:?} is not a valid attribute type"))?;
            if attributes.insert(key.clone(), value).is_some() {
                return Err(format!("attribute {key} appears more than once; each attribute type may appear once"));
            }
        }
        for mandatory in ["C", "ST", "O"] {
            if attributes.get(mandatory).is_none_or(|v: &String| v.is_empty()) {
                return Err(format!(
                    "distinguished name {input:?} has no {mandatory} attribute; C, ST and O are required at a minimum"
                ));
            }
        }
        Ok(DistinguishedName { raw: input.trim().to_string(), attributes })
    }

    /// The name as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Normalized attributes (upper-case type → value).
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// True when every attribute of `self` is in `other` with the same value.
    pub fn is_subset_of(&self, other: &BTreeMap<String, String>) -> bool {
        self.attributes.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The short name Go and RFC 4514 use for a common attribute type OID
/// (`2.5.4.3` → `CN`), used both when reading certificates and policies.
pub(crate) fn short_attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.17" => "POSTALCODE",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// Normalizes an attribute type for matching: upper case, common OIDs to short names.
pub(crate) fn normalize_type(ty: &str) -> Option<String> {
    let ty = ty.trim();
    let first = ty.chars().next()?;
    if first.is_ascii_digit() {
        if !ty.split('.').all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let short = short_attribute_name(ty).unwrap_or(ty);
        return Some(short.to_string());
    }
    (first.is_ascii_alphabetic() && ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then(|| ty.to_ascii_uppercase())
}

/// Splits an RFC 4514 string into (type, unescaped value) pairs.
fn split_dn(input: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        // Attribute type, up to '='.
        let mut ty = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c @ (',' | '+' | ';' | '\\' | '"')) => {
                    return Err(format!("unexpected {c:?} in an attribute type of {input:?}"));
                }
                Some(c) => ty.push(c),
                None if ty.trim().is_empty() && out.is_empty() => {
                    return Err(format!("distinguished name {input:?} is empty"));
                }
                None => return Err(format!("attribute {:?} in {input:?} has no '=' and value", ty.trim())),
            }
        }
        while chars.peek().is_some_and(|c| *c == ' ') {
            chars.next();
        }
        if chars.peek() == Some(&'#') {
            return Err(format!("hex-encoded values ('#...') are not supported in {input:?}"));
        }
        // Value, up to an unescaped separator. Bytes so `\xx` escapes can form UTF-8.
        let mut value: Vec<u8> = Vec::new();
        let mut trailing_unescaped_spaces = 0usize;
        let mut end = None;
        while let Some(c) = chars.next() {
            match c {
                ',' | ';' => {
                    end = Some(c);
                    break;
                }
                '+' => return Err(format!("multi-valued RDNs ('+') are not supported in {input:?}")),
                '\\' => {
                    trailing_unescaped_spaces = 0;
                    match chars.next() {
                        Some(e @ (',' | ';' | '+' | '"' | '\\' | '<' | '>' | '=' | '#' | ' ')) => {
                            let mut buf = [0u8; 4];
                            value.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
                        }
                        Some(h1) if h1.is_ascii_hexdigit() => match chars.next() {
                            Some(h2) if h2.is_ascii_hexdigit() => {
                                let hex = [h1 as u8, h2 as u8];
                                let byte = u8::from_str_radix(std::str::from_utf8(&hex).unwrap_or("zz"), 16)
                                    .map_err(|_| format!("bad hex escape in {input:?}"))?;
                                value.push(byte);
                            }
                            _ => return Err(format!("incomplete hex escape after '\\{h1}' in {input:?}")),
                        },
                        Some(other) => return Err(format!("'\\{other}' is not a valid escape in {input:?}")),
                        None => return Err(format!("{input:?} ends with a lone '\\'")),
                    }
                }
                '"' => return Err(format!("quoted values are not supported in {input:?}")),
                c => {
                    trailing_unescaped_spaces = if c == ' ' { trailing_unescaped_spaces + 1 } else { 0 };
                    let mut buf = [0u8; 4];
                    value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        value.truncate(value.len() - trailing_unescaped_spaces);
        let value = String::from_utf8(value).map_err(|_| format!("an escaped value in {input:?} is not UTF-8"))?;
        out.push((ty.trim().to_string(), value));
        if end.is_none() {
            return Ok(out);
        }
        while chars.peek().is_some_and(|c| *c == ' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Err(format!("{input:?} ends with a separator"));
        }
    }
}

/// One `trustedIdentities` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustedIdentity {
    /// `*`: any signing certificate that chains to the policy's trust stores.
    Any,
    /// `x509.subject: <DN>`: the signing certificate's subject must contain all these attributes.
    X509Subject(DistinguishedName),
}

/// One statement of `trustPolicies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    name: String,
    registry_scopes: Vec<String>,
    level: VerificationLevel,
    actions: Actions,
    verify_timestamp: VerifyTimestamp,
    trust_stores: Vec<TrustStoreRef>,
    trusted_identities: Vec<TrustedIdentity>,
}

impl TrustPolicy {
    /// The policy's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `*` (alone) or fully qualified `host/repository` scopes.
    pub fn registry_scopes(&self) -> &[String] {
        &self.registry_scopes
    }
    /// True for the global (`*`) policy.
    pub fn is_global(&self) -> bool {
        self.registry_scopes.iter().any(|s| s == "*")
    }
    /// The verification level preset.
    pub fn level(&self) -> VerificationLevel {
        self.level
    }
    /// The level's actions with `override` applied.
    pub fn actions(&self) -> Actions {
        self.actions
    }
    /// When timestamps are verified.
    pub fn verify_timestamp(&self) -> VerifyTimestamp {
        self.verify_timestamp
    }
    /// Named trust stores (empty at level `skip`).
    pub fn trust_stores(&self) -> &[TrustStoreRef] {
        &self.trust_stores
    }
    /// Trusted identities (empty at level `skip`).
    pub fn trusted_identities(&self) -> &[TrustedIdentity] {
        &self.trusted_identities
    }
    /// Stores of one type named by this policy.
    pub fn stores_of(&self, store_type: StoreType) -> impl Iterator<Item = &TrustStoreRef> {
        self.trust_stores.iter().filter(move |s| s.store_type == store_type)
    }
}

/// Why no policy applies to a repository.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PolicySelectionError {
    /// The repository is not a fully qualified `host/repository` name.
    #[error("repository {repository:?} is not a fully qualified host/repository name: {reason}")]
    InvalidRepository {
        /// The repository given.
        repository: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No scope matches and there is no global policy.
    #[error(
        "no trust policy applies to repository {repository:?}: no registryScopes entry names it and there is no '*' policy"
    )]
    NoMatch {
        /// The repository given.
        repository: String,
    },
}

/// A validated `trustpolicy.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicyDocument {
    policies: Vec<TrustPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDocument {
    version: Option<String>,
    trust_policies: Option<Vec<RawPolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    name: Option<String>,
    registry_scopes: Option<Vec<String>>,
    signature_verification: Option<RawSignatureVerification>,
    trust_stores: Option<Vec<String>>,
    trusted_identities: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSignatureVerification {
    level: Option<String>,
    #[serde(rename = "override")]
    overrides: Option<BTreeMap<String, String>>,
    verify_timestamp: Option<String>,
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Field { field: field.into(), reason: reason.into() }
}

impl TrustPolicyDocument {
    /// Parses and validates a `trustpolicy.json` document.
    pub fn parse(bytes: &[u8]) -> Result<TrustPolicyDocument, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge { len: bytes.len() });
        }
        let raw: RawDocument = serde_json::from_slice(bytes).map_err(|source| PolicyError::Json { source })?;
        match raw.version.as_deref() {
            None | Some("") => return Err(field_err("version", "is missing; the supported version is \"1.0\"")),
            Some("1.0") => {}
            Some(other) => {
                return Err(field_err(
                    "version",
                    format!("{other:?} is not supported; the supported version is \"1.0\""),
                ));
            }
        }
        let raw_policies = raw.trust_policies.unwrap_or_default();
        if raw_policies.is_empty() {
            return Err(field_err("trustPolicies", "must contain at least one trust policy statement"));
        }
        if raw_policies.len() > MAX_POLICIES {
            return Err(field_err("trustPolicies", format!("has more than {MAX_POLICIES} statements")));
        }
        let mut policies = Vec::with_capacity(raw_policies.len());
        let mut names = BTreeSet::new();
        let mut scopes: BTreeMap<String, String> = BTreeMap::new();
        for (i, rp) in raw_policies.into_iter().enumerate() {
            let policy = parse_policy(i, rp)?;
            let at = format!("trustPolicies[{i}] ({:?})", policy.name);
            if !names.insert(policy.name.clone()) {
                return Err(field_err(
                    format!("{at}.name"),
                    "is used by more than one statement; statement names must be unique",
                ));
            }
            for scope in &policy.registry_scopes {
                if let Some(other) = scopes.insert(scope.clone(), policy.name.clone()) {
                    let what = if scope == "*" { "the global scope '*'" } else { "this scope" };
                    return Err(field_err(
                        format!("{at}.registryScopes"),
                        format!(
                            "{what} ({scope:?}) is also used by statement {other:?}; a scope may belong to one statement only"
                        ),
                    ));
                }
            }
            policies.push(policy);
        }
        Ok(TrustPolicyDocument { policies })
    }

    /// Every statement, in document order.
    pub fn policies(&self) -> &[TrustPolicy] {
        &self.policies
    }

    /// The policy for `repository` (`host/repository`, no tag or digest): a statement whose
    /// `registryScopes` names it exactly wins over the global `*` statement.
    pub fn applicable_policy(&self, repository: &str) -> Result<&TrustPolicy, PolicySelectionError> {
        validate_scope_format(repository)
            .map_err(|reason| PolicySelectionError::InvalidRepository { repository: repository.to_string(), reason })?;
        self.policies
            .iter()
            .find(|p| p.registry_scopes.iter().any(|s| s == repository))
            .or_else(|| self.policies.iter().find(|p| p.is_global()))
            .ok_or_else(|| PolicySelectionError::NoMatch { repository: repository.to_string() })
    }
}

fn parse_policy(i: usize, rp: RawPolicy) -> Result<TrustPolicy, PolicyError> {
    let name = match rp.name {
        Some(n) if !n.trim().is_empty() => n,
        _ => return Err(field_err(format!("trustPolicies[{i}].name"), "is missing; every statement needs a name")),
    };
    let at = format!("trustPolicies[{i}] ({name:?})");

    let registry_scopes = rp.registry_scopes.unwrap_or_default();
    if registry_scopes.is_empty() {
        return Err(field_err(
            format!("{at}.registryScopes"),
            "must contain at least one scope ('*' or host/repository)",
        ));
    }
    if registry_scopes.len() > 1 && registry_scopes.iter().any(|s| s == "*") {
        return Err(field_err(
            format!("{at}.registryScopes"),
            "the global scope '*' cannot be combined with other scopes in one statement",
        ));
    }
    for (j, scope) in registry_scopes.iter().enumerate() {
        if scope != "*" {
            validate_scope_format(scope).map_err(|reason| field_err(format!("{at}.registryScopes[{j}]"), reason))?;
        }
    }

    let Some(sv) = rp.signature_verification else {
        return Err(field_err(format!("{at}.signatureVerification"), "is missing; it must at least set \"level\""));
    };
    let level = match sv.level.as_deref() {
        Some("strict") => VerificationLevel::Strict,
        Some("permissive") => VerificationLevel::Permissive,
        Some("audit") => VerificationLevel::Audit,
        Some("skip") => VerificationLevel::Skip,
        Some(other) => {
            return Err(field_err(
                format!("{at}.signatureVerification.level"),
                format!("{other:?} is not a level; use strict, permissive, audit or skip"),
            ));
        }
        None => return Err(field_err(format!("{at}.signatureVerification.level"), "is missing")),
    };
    let mut actions = level.actions();
    let overrides = sv.overrides.unwrap_or_default();
    if level == VerificationLevel::Skip && !overrides.is_empty() {
        return Err(field_err(
            format!("{at}.signatureVerification.override"),
            "level \"skip\" cannot be customized; remove the override",
        ));
    }
    for (check, value) in &overrides {
        let field = format!("{at}.signatureVerification.override.{check}");
        let action = Action::parse(value)
            .ok_or_else(|| field_err(&field, format!("{value:?} is not an action; use enforce, log or skip")))?;
        let slot = match check.as_str() {
            "integrity" => return Err(field_err(&field, "integrity cannot be overridden")),
            "authenticity" => &mut actions.authenticity,
            "authenticTimestamp" => &mut actions.authentic_timestamp,
            "expiry" => &mut actions.expiry,
            "revocation" => &mut actions.revocation,
            _ => {
                return Err(field_err(
                    &field,
                    "is not a validation; use authenticity, authenticTimestamp, expiry or revocation",
                ));
            }
        };
        if action == Action::Skip && check != "revocation" {
            return Err(field_err(&field, "only revocation can be skipped; use enforce or log"));
        }
        *slot = action;
    }
    let verify_timestamp = match sv.verify_timestamp.as_deref() {
        None | Some("always") => VerifyTimestamp::Always,
        Some("afterCertExpiry") => VerifyTimestamp::AfterCertExpiry,
        Some(other) => {
            return Err(field_err(
                format!("{at}.signatureVerification.verifyTimestamp"),
                format!("{other:?} is not supported; use \"always\" or \"afterCertExpiry\""),
            ));
        }
    };

    let raw_stores = rp.trust_stores.unwrap_or_default();
    let raw_identities = rp.trusted_identities.unwrap_or_default();
    if level == VerificationLevel::Skip {
        if !raw_stores.is_empty() || !raw_identities.is_empty() {
            return Err(field_err(
                &at,
                "level \"skip\" verifies nothing, so trustStores and trustedIdentities must be absent; remove them",
            ));
        }
        return Ok(TrustPolicy {
            name,
            registry_scopes,
            level,
            actions,
            verify_timestamp,
            trust_stores: Vec::new(),
            trusted_identities: Vec::new(),
        });
    }
    if raw_stores.is_empty() {
        return Err(field_err(
            format!("{at}.trustStores"),
            "is missing or empty; name at least one store, e.g. \"ca:name\"",
        ));
    }
    if raw_identities.is_empty() {
        return Err(field_err(
            format!("{at}.trustedIdentities"),
            "is missing or empty; use [\"*\"] or x509.subject identities",
        ));
    }

    let mut trust_stores = Vec::with_capacity(raw_stores.len());
    for (j, s) in raw_stores.iter().enumerate() {
        let field = format!("{at}.trustStores[{j}]");
        let Some((ty, store)) = s.split_once(':') else {
            return Err(field_err(field, format!("{s:?} must have the form <type>:<name>, e.g. \"ca:acme-rockets\"")));
        };
        let store_type = StoreType::parse(ty).ok_or_else(|| {
            field_err(&field, format!("{ty:?} is not a trust store type; use ca, signingAuthority or tsa"))
        })?;
        if !is_valid_store_name(store) {
            return Err(field_err(field, format!("store name {store:?} must match [a-zA-Z0-9_.-]+")));
        }
        let r = TrustStoreRef { store_type, name: store.to_string() };
        if !trust_stores.contains(&r) {
            trust_stores.push(r);
        }
    }
    if trust_stores.iter().all(|s| s.store_type == StoreType::Tsa) {
        return Err(field_err(
            format!("{at}.trustStores"),
            "names only tsa stores; add a ca or signingAuthority store for the signing certificates",
        ));
    }

    let mut trusted_identities = Vec::with_capacity(raw_identities.len());
    for (j, ident) in raw_identities.iter().enumerate() {
        let field = format!("{at}.trustedIdentities[{j}]");
        if ident == "*" {
            if raw_identities.len() > 1 {
                return Err(field_err(field, "the wildcard '*' cannot be combined with other identities"));
            }
            trusted_identities.push(TrustedIdentity::Any);
            continue;
        }
        let Some((prefix, value)) = ident.split_once(':') else {
            return Err(field_err(field, format!("{ident:?} must be '*' or \"x509.subject: <distinguished name>\"")));
        };
        if prefix.trim() != "x509.subject" {
            return Err(field_err(
                field,
                format!(
                    "identity type {prefix:?} is not supported (only x509.subject; verification plugins are not run)"
                ),
            ));
        }
        if value.trim().is_empty() {
            return Err(field_err(field, "x509.subject has no distinguished name"));
        }
        let dn = DistinguishedName::parse(value).map_err(|reason| field_err(&field, reason))?;
        trusted_identities.push(TrustedIdentity::X509Subject(dn));
    }
    let dns: Vec<&DistinguishedName> = trusted_identities
        .iter()
        .filter_map(|t| match t {
            TrustedIdentity::X509Subject(dn) => Some(dn),
            TrustedIdentity::Any => None,
        })
        .collect();
    for (a, dn_a) in dns.iter().enumerate() {
        for (b, dn_b) in dns.iter().enumerate() {
            if a != b && dn_a.is_subset_of(dn_b.attributes()) {
                return Err(field_err(
                    format!("{at}.trustedIdentities"),
                    format!("{:?} overlaps with {:?}: a certificate matching one would match both", dn_a.raw, dn_b.raw),
                ));
            }
        }
    }

    Ok(TrustPolicy { name, registry_scopes, level, actions, verify_timestamp, trust_stores, trusted_identities })
}

/// `host[:port]/repository`, per the distribution reference grammar Notation applies to scopes.
fn validate_scope_format(scope: &str) -> Result<(), String> {
    let hint = "use a fully qualified repository without scheme, tag or digest, e.g. registry.example/team/app";
    if scope.contains('*') {
        return Err(format!("{scope:?} contains a wildcard; only the single value '*' is allowed; {hint}"));
    }
    let Some((domain, repository)) = scope.split_once('/') else {
        return Err(format!("{scope:?} has no repository path; {hint}"));
    };
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(format!("{scope:?} has an invalid registry host {domain:?}; {hint}"));
    }
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{scope:?} has an invalid port in {domain:?}; {hint}"));
    }
    if !repository.split('/').all(is_path_component) {
        return Err(format!("{scope:?} has an invalid repository path {repository:?}; {hint}"));
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(policies: &str) -> Result<TrustPolicyDocument, PolicyError> {
        TrustPolicyDocument::parse(format!(r#"{{"version":"1.0","trustPolicies":[{policies}]}}"#).as_bytes())
    }

    fn policy(name: &str, scopes: &str, sv: &str, rest: &str) -> String {
        format!(r#"{{"name":"{name}","registryScopes":{scopes},"signatureVerification":{sv}{rest}}}"#)
    }

    const STRICT: &str = r#"{"level":"strict"}"#;
    const STORES: &str = r#","trustStores":["ca:e2e"],"trustedIdentities":["*"]"#;

    fn field_error(r: Result<TrustPolicyDocument, PolicyError>) -> (String, String) {
        match r {
            Err(PolicyError::Field { field, reason }) => (field, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_policy() {
        let d = doc(&policy(
            "p",
            r#"["registry.acme-rockets.io/software/net-monitor"]"#,
            r#"{"level":"permissive","override":{"expiry":"enforce","revocation":"skip"},"verifyTimestamp":"afterCertExpiry"}"#,
            r#","trustStores":["ca:acme","tsa:ts"],"trustedIdentities":["x509.subject: C=US, ST=WA, O=acme-rockets.io, OU=Finance, CN=SecureBuilder"]"#,
        ))
        .unwrap();
        let p = &d.policies()[0];
        assert_eq!(p.level(), VerificationLevel::Permissive);
        assert_eq!(
            p.actions(),
            Actions {
                integrity: Action::Enforce,
                authenticity: Action::Enforce,
                authentic_timestamp: Action::Log,
                expiry: Action::Enforce,
                revocation: Action::Skip,
            }
        );
        assert_eq!(p.verify_timestamp(), VerifyTimestamp::AfterCertExpiry);
        assert_eq!(p.stores_of(StoreType::Tsa).map(|s| s.name.as_str()).collect::<Vec<_>>(), ["ts"]);
        let TrustedIdentity::X509Subject(dn) = &p.trusted_identities()[0] else { panic!() };
        assert_eq!(dn.attributes().get("OU").map(String::as_str), Some("Finance"));
        assert_eq!(dn.attributes().len(), 5);
    }

    #[test]
    fn exact_scope_beats_global() {
        let d = doc(&format!(
            "{},{}",
            policy("global", r#"["*"]"#, STRICT, STORES),
            policy("exact", r#"["localhost:5000/test-repo"]"#, STRICT, STORES)
        ))
        .unwrap();
        assert_eq!(d.applicable_policy("localhost:5000/test-repo").unwrap().name(), "exact");
        assert_eq!(d.applicable_policy("localhost:5000/e2e").unwrap().name(), "global");
        assert!(matches!(
            d.applicable_policy("localhost:5000/Upper"),
            Err(PolicySelectionError::InvalidRepository { .. })
        ));

        let only_exact = doc(&policy("exact", r#"["localhost:5000/test-repo"]"#, STRICT, STORES)).unwrap();
        assert_eq!(
            only_exact.applicable_policy("localhost:5000/e2e"),
            Err(PolicySelectionError::NoMatch { repository: "localhost:5000/e2e".into() })
        );
    }

    #[test]
    fn rejects_spec_violations_with_field_and_reason() {
        let cases: Vec<(String, &str, &str)> = vec![
            (policy("p", r#"["*","a.io/b"]"#, STRICT, STORES), "registryScopes", "cannot be combined"),
            (policy("p", r#"[]"#, STRICT, STORES), "registryScopes", "at least one"),
            (policy("p", r#"["a.io/b:tag"]"#, STRICT, STORES), "registryScopes[0]", "invalid repository path"),
            (policy("p", r#"["a.io/b*"]"#, STRICT, STORES), "registryScopes[0]", "wildcard"),
            (policy("p", r#"["*"]"#, r#"{"level":"lenient"}"#, STORES), "level", "not a level"),
            (
                policy("p", r#"["*"]"#, r#"{"level":"strict","override":{"integrity":"log"}}"#, STORES),
                "override.integrity",
                "cannot be overridden",
            ),
            (
                policy("p", r#"["*"]"#, r#"{"level":"strict","override":{"expiry":"skip"}}"#, STORES),
                "override.expiry",
                "only revocation",
            ),
            (
                policy("p", r#"["*"]"#, r#"{"level":"skip","override":{"expiry":"log"}}"#, ""),
                "override",
                "cannot be customized",
            ),
            (
                policy("p", r#"["*"]"#, r#"{"level":"strict","verifyTimestamp":"never"}"#, STORES),
                "verifyTimestamp",
                "not supported",
            ),
            (policy("p", r#"["*"]"#, r#"{"level":"skip"}"#, STORES), "(\"p\")", "must be absent"),
            (policy("p", r#"["*"]"#, STRICT, r#","trustStores":["ca:e2e"]"#), "trustedIdentities", "missing or empty"),
            (
                policy("p", r#"["*"]"#, STRICT, r#","trustStores":["e2e"],"trustedIdentities":["*"]"#),
                "trustStores[0]",
                "<type>:<name>",
            ),
            (
                policy("p", r#"["*"]"#, STRICT, r#","trustStores":["x509:e2e"],"trustedIdentities":["*"]"#),
                "trustStores[0]",
                "not a trust store type",
            ),
            (
                policy("p", r#"["*"]"#, STRICT, r#","trustStores":["ca:a/b"],"trustedIdentities":["*"]"#),
                "trustStores[0]",
                "[a-zA-Z0-9_.-]+",
            ),
            (
                policy("p", r#"["*"]"#, STRICT, r#","trustStores":["tsa:t"],"trustedIdentities":["*"]"#),
                "trustStores",
                "only tsa",
            ),
            (
                policy(
                    "p",
                    r#"["*"]"#,
                    STRICT,
                    r#","trustStores":["ca:e2e"],"trustedIdentities":["*","x509.subject: C=US,ST=WA,O=x"]"#,
                ),
                "trustedIdentities[0]",
                "wildcard",
            ),
            (
                policy(
                    "p",
                    r#"["*"]"#,
                    STRICT,
                    r#","trustStores":["ca:e2e"],"trustedIdentities":["x509.subject: CN=e2e,O=Notary"]"#,
                ),
                "trustedIdentities[0]",
                "C, ST and O are required",
            ),
            (
                policy(
                    "p",
                    r#"["*"]"#,
                    STRICT,
                    r#","trustStores":["ca:e2e"],"trustedIdentities":["x509.subject: C=US,ST=WA,O=x+OU=y"]"#,
                ),
                "trustedIdentities[0]",
                "multi-valued",
            ),
            (
                policy(
                    "p",
                    r#"["*"]"#,
                    STRICT,
                    r#","trustStores":["ca:e2e"],"trustedIdentities":["x509.subject: C=US,ST=WA,O=x,O=y"]"#,
                ),
                "trustedIdentities[0]",
                "more than once",
            ),
            (
                policy(
                    "p",
                    r#"["*"]"#,
                    STRICT,
                    r#","trustStores":["ca:e2e"],"trustedIdentities":["x509.subject: C=US,ST=WA,O=x,OU=y","x509.subject: C=US, ST=WA, O=x"]"#,
                ),
                "trustedIdentities",
                "overlaps",
            ),
            (
                policy("p", r#"["*"]"#, STRICT, r#","trustStores":["ca:e2e"],"trustedIdentities":["email: a@b.c"]"#),
                "trustedIdentities[0]",
                "not supported",
            ),
        ];
        for (p, field_part, reason_part) in cases {
            let (field, reason) = field_error(doc(&p));
            assert!(field.contains(field_part), "field {field:?} should contain {field_part:?} for {p}");
            assert!(reason.contains(reason_part), "reason {reason:?} should contain {reason_part:?} for {p}");
        }
    }

    #[test]
    fn rejects_document_level_problems() {
        assert!(
            matches!(TrustPolicyDocument::parse(b"{}"), Err(PolicyError::Field { field, .. }) if field == "version")
        );
        assert!(matches!(
            TrustPolicyDocument::parse(br#"{"version":"2.0","trustPolicies":[]}"#),
            Err(PolicyError::Field { field, .. }) if field == "version"
        ));
        assert!(matches!(
            TrustPolicyDocument::parse(br#"{"version":"1.0","trustPolicies":[]}"#),
            Err(PolicyError::Field { field, .. }) if field == "trustPolicies"
        ));
        // A typo is an error, not a silently ignored field.
        let typo = TrustPolicyDocument::parse(br#"{"version":"1.0","trustPolicy":[]}"#).unwrap_err();
        assert!(matches!(typo, PolicyError::Json { .. }) && typo.to_string().contains("trustPolicy"), "{typo}");
        let dup_name = doc(&format!(
            "{},{}",
            policy("p", r#"["a.io/x"]"#, STRICT, STORES),
            policy("p", r#"["a.io/y"]"#, STRICT, STORES)
        ));
        assert!(field_error(dup_name).1.contains("unique"));
        let dup_scope = doc(&format!(
            "{},{}",
            policy("p", r#"["a.io/x"]"#, STRICT, STORES),
            policy("q", r#"["a.io/x"]"#, STRICT, STORES)
        ));
        assert!(field_error(dup_scope).1.contains("also used by statement \"p\""));
        let two_globals =
            doc(&format!("{},{}", policy("p", r#"["*"]"#, STRICT, STORES), policy("q", r#"["*"]"#, STRICT, STORES)));
        assert!(field_error(two_globals).1.contains("global scope"));
        let huge = vec![b' '; MAX_POLICY_BYTES + 1];
        assert!(matches!(TrustPolicyDocument::parse(&huge), Err(PolicyError::TooLarge { .. })));
    }

    #[test]
    fn dn_parsing_escapes_and_normalization() {
        let dn = DistinguishedName::parse(r" C=US, st=WA , O=Acme\, Inc.,CN=\ padded\20 ,2.5.4.11=Dev\\Ops").unwrap();
        let a = dn.attributes();
        assert_eq!(a["O"], "Acme, Inc.");
        assert_eq!(a["ST"], "WA");
        assert_eq!(a["CN"], " padded ");
        assert_eq!(a["OU"], r"Dev\Ops");
        assert!(DistinguishedName::parse("C=US,ST=WA,O=x,").is_err());
        assert!(DistinguishedName::parse("C=US,ST=WA,O=#0403").is_err());
        assert!(DistinguishedName::parse(r"C=US,ST=WA,O=x\q").is_err());
        assert!(DistinguishedName::parse("").is_err());
    }

    #[test]
    fn scope_grammar() {
        for ok in
            ["localhost:5000/e2e", "a.io/b/c", "registry.acme-rockets.io/software/net-monitor", "h/a__b", "h/a--b"]
        {
            assert!(validate_scope_format(ok).is_ok(), "{ok}");
        }
        for bad in ["e2e", "/e2e", "h/", "h/A", "h/a/", "h/.a", "h/a@sha256:00", "-h/a", "h:x/a", "h/a___b", "h/a-_b"] {
            assert!(validate_scope_format(bad).is_err(), "{bad}");
        }
    }
}
