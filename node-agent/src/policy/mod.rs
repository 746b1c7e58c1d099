//! Rego policies (regorus) on top of the typed pipeline.
//!
//! A config generation compiles each policy file it names once
//! ([`Policies`], built by `config::policy`); a decision whose typed outcome
//! is known ([`apply`], called once by the engine inside the single flight,
//! before caching) gets the policy that applies to it — its scope's, else
//! the config's top-level one; allowlisted images get none — which sees the
//! [`input`] document and answers `data.pullgate.decision`. In
//! [`PolicyMode::Tighten`] (the default) a policy can only make a typed
//! allow (or error) into a deny; in [`PolicyMode::Override`] its answer
//! replaces the typed one. A policy that fails, times out or answers
//! malformed is an error: the failure policy decides (in tighten mode a
//! typed deny stands). What the policy saw and answered goes into the
//! report ([`PolicyReport`]).

pub mod input;
pub mod rego;
pub mod testing;

use crate::cache::{Evaluation, Outcome};
use crate::config::Config;
use crate::report::{Source, Step};
use crate::verify::Subject;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rego::{CompileError, Decision, ENTRYPOINT, EvalError, Module};

/// Outer deadline of one evaluation on the blocking pool, waiting for a slot included.
pub const EVAL_DEADLINE: Duration = Duration::from_millis(500);
/// Policy evaluations running at once; a runaway one holds a blocking thread
/// until regorus's timer stops it, so they are few.
pub const MAX_CONCURRENT_EVALS: usize = 4;
static EVALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_EVALS);

/// How a policy's answer combines with the typed outcome (`policyMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// A deny turns an allow (or error) into a deny; an allow changes nothing.
    #[default]
    Tighten,
    /// The policy's answer is the outcome, whatever the typed rules said.
    Override,
}

impl PolicyMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Tighten => "tighten",
            PolicyMode::Override => "override",
        }
    }
}

/// A compiled policy and how it applies.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The policy file, relative to the config directory.
    pub file: String,
    /// `tighten` or `override`.
    pub mode: PolicyMode,
    /// The compiled module (shared by every binding of the same file).
    pub module: Arc<Module>,
}

/// Every policy of one config generation.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// The top-level `policy`: scopes without their own and `defaultAction` decisions.
    pub global: Option<Bound>,
    /// `policy` of a scope, by scope name.
    pub scopes: BTreeMap<String, Bound>,
}

impl Policies {
    /// The policy for a decision in `scope` (`None`: defaultAction applied).
    pub fn for_scope(&self, scope: Option<&str>) -> Option<&Bound> {
        scope.and_then(|s| self.scopes.get(s)).or(self.global.as_ref())
    }
}

/// The policy's part of a decision, for the report and `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// The policy file.
    pub file: String,
    /// `tighten` or `override`.
    pub mode: PolicyMode,
    /// The typed outcome the policy saw: `allow`, `deny` or `error`.
    pub typed: String,
    /// The policy's `allow`, when it answered.
    pub allow: Option<bool>,
    /// Its `reason`, or why it gave no answer.
    pub reason: String,
    /// What decided: `data.pullgate.decision`, with the rule the policy named (`rule` field).
    pub rule: String,
    /// True when the policy changed the outcome.
    pub changed: bool,
    /// Time spent evaluating, in microseconds.
    pub eval_us: u64,
    /// The input document it saw (`policy test` replays it).
    pub input: serde_json::Value,
}

impl PolicyReport {
    /// Cuts every text in the report, the input's included, to `limit` bytes.
    pub fn bound(&mut self, limit: usize) {
        for s in [&mut self.reason, &mut self.rule, &mut self.file] {
            if s.len() > limit {
                *s = pullgate_wire::truncate(s, limit, pullgate_wire::TRUNCATED);
            }
        }
        cut_json(&mut self.input, limit);
    }
}

fn cut_json(v: &mut serde_json::Value, limit: usize) {
    match v {
        serde_json::Value::String(s) if s.len() > limit => {
            *s = pullgate_wire::truncate(s, limit, pullgate_wire::TRUNCATED);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| cut_json(x, limit)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| cut_json(x, limit)),
        _ => {}
    }
}

/// The pulled image, as the policy input needs it.
#[derive(Debug, Clone, Copy)]
pub struct Pulled<'a> {
    /// The parsed reference.
    pub reference: &'a pullgate_reference::Reference,
    /// The pulled digest.
    pub digest: &'a pullgate_reference::Digest,
    /// The descriptor's media type.
    pub media_type: &'a str,
    /// The descriptor's size.
    pub size: u64,
}

/// The engine's hook: runs the policy that applies to this decision, if
/// any, and folds its answer into `ev` (outcome, rule, source, a step and
/// the [`PolicyReport`]).
pub async fn apply(cfg: &Config, subject: &Subject, ev: &mut Evaluation) {
    let pulled = Pulled {
        reference: &subject.reference,
        digest: &subject.digest,
        media_type: &subject.media_type,
        size: subject.size,
    };
    apply_to(cfg, pulled, ev).await;
}

/// [`apply`] for an image described by its parts (benchmarks, tests).
pub async fn apply_to(cfg: &Config, pulled: Pulled<'_>, ev: &mut Evaluation) {
    if ev.source == Source::Allowlist {
        return;
    }
    let (reference, digest) = (pulled.reference, pulled.digest);
    let scope = cfg.scopes.iter().find(|s| s.images.iter().any(|p| p.matches(reference, digest)));
    let Some(bound) = cfg.policies.for_scope(scope.map(|s| s.name.as_str())) else { return };
    let digest = digest.to_string();
    let input = input::build(&input::Facts {
        reference,
        digest: &digest,
        media_type: pulled.media_type,
        size: pulled.size,
        scope: scope.map(|s| (s.name.as_str(), s.action.kind())),
        mode: cfg.mode.as_str(),
        outcome: &ev.outcome,
        rule: ev.rule.as_deref(),
        runs: &ev.verification,
        platform: &cfg.node_platform.clone().unwrap_or_else(crate::platform::Platform::node),
    });
    let started = Instant::now();
    let result = evaluate(bound.module.clone(), &input).await;
    let eval_us = started.elapsed().as_micros() as u64;
    let report = fold(bound, ev, result, input, eval_us);
    let at_us = ev.steps.last().map_or(0, |s| s.at_us) + eval_us;
    ev.steps.push(Step { stage: "policy".into(), result: step_text(&report), at_us });
    ev.policy = Some(report);
}

/// Runs the evaluation on the blocking pool within [`EVAL_DEADLINE`].
async fn evaluate(module: Arc<Module>, input: &input::Input) -> Result<Decision, EvalError> {
    let json = serde_json::to_string(input).map_err(|e| EvalError::Input(e.to_string()))?;
    if json.len() > input::MAX_INPUT_BYTES {
        return Err(EvalError::Input(format!("{} bytes, more than {}", json.len(), input::MAX_INPUT_BYTES)));
    }
    let run = async {
        let permit = EVALS.acquire().await.map_err(|e| EvalError::Failed(e.to_string()))?;
        let task = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            module.decide(&json)
        });
        task.await.map_err(|e| EvalError::Failed(format!("the evaluation panicked: {e}")))?
    };
    tokio::time::timeout(EVAL_DEADLINE, run).await.unwrap_or(Err(EvalError::TimedOut(EVAL_DEADLINE)))
}

/// Applies `result` to `ev` per the binding's mode and describes it.
fn fold(
    bound: &Bound,
    ev: &mut Evaluation,
    result: Result<Decision, EvalError>,
    input: input::Input,
    eval_us: u64,
) -> PolicyReport {
    let typed = input.typed.outcome.clone();
    let changed = combine(bound.mode, &ev.outcome, &result, &bound.file);
    let (allow, reason, rule) = match &result {
        Ok(d) => (Some(d.allow), d.reason.clone(), d.rule.as_ref().map(|r| format!("{ENTRYPOINT} (rule {r})"))),
        Err(e) => (None, e.to_string(), None),
    };
    let rule = rule.unwrap_or_else(|| ENTRYPOINT.to_string());
    if let Some(outcome) = changed.clone() {
        ev.outcome = outcome;
        let typed_rule = ev.rule.take().unwrap_or_else(|| "-".into());
        ev.rule = Some(format!("{typed_rule} + policy {}: {rule}", bound.file));
        ev.source = Source::Rego;
    }
    PolicyReport {
        file: bound.file.clone(),
        mode: bound.mode,
        typed,
        allow,
        reason,
        rule,
        changed: changed.is_some(),
        eval_us,
        input: serde_json::to_value(&input).unwrap_or_default(),
    }
}

fn step_text(r: &PolicyReport) -> String {
    let answer = match r.allow {
        Some(true) => "allow",
        Some(false) => "deny",
        None => "no answer",
    };
    let effect = if r.changed { "changed the outcome" } else { "outcome stands" };
    format!("{} ({}) said {answer}: {}; typed {}; {effect}", r.file, r.mode.as_str(), r.reason, r.typed)
}

/// The outcome after the policy, or `None` when the typed one stands.
///
/// Tighten: a deny makes an allow or an error a deny; an allow changes
/// nothing; no answer makes an allow an error (a typed deny stands).
/// Override: the policy's verdict is the outcome (a typed one with the same
/// verdict keeps its reason); no answer is an error.
pub fn combine(mode: PolicyMode, typed: &Outcome, result: &Result<Decision, EvalError>, file: &str) -> Option<Outcome> {
    match (result, typed, mode) {
        (Ok(d), Outcome::Allow(_), _) if d.allow => None,
        (Ok(d), _, PolicyMode::Override) if d.allow => {
            Some(Outcome::Allow(format!("policy {file} overrides and allows: {}", d.reason)))
        }
        (Ok(d), _, PolicyMode::Tighten) if d.allow => None,
        (Ok(_), Outcome::Deny(_), _) => None,
        (Ok(d), _, _) => Some(Outcome::Deny(format!("policy {file} denies: {}", d.reason))),
        (Err(_), Outcome::Deny(_), PolicyMode::Tighten) => None,
        (Err(e), _, _) => Some(Outcome::Error(format!("policy {file}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(allow: bool) -> Result<Decision, EvalError> {
        Ok(Decision { allow, reason: "because".into(), rule: None })
    }

    #[test]
    fn tighten_only_denies_override_decides() {
        let (allow, deny, error) = (Outcome::Allow("a".into()), Outcome::Deny("d".into()), Outcome::Error("e".into()));
        let failed = Err(EvalError::Undefined);
        let t = PolicyMode::Tighten;
        assert_eq!(combine(t, &allow, &said(true), "p"), None);
        assert!(matches!(combine(t, &allow, &said(false), "p"), Some(Outcome::Deny(r)) if r.contains("p denies")));
        assert_eq!(combine(t, &deny, &said(true), "p"), None, "tighten never allows a typed deny");
        assert_eq!(combine(t, &error, &said(true), "p"), None, "an error still goes to the failure policy");
        assert!(matches!(combine(t, &error, &said(false), "p"), Some(Outcome::Deny(_))));
        assert!(matches!(combine(t, &allow, &failed, "p"), Some(Outcome::Error(_))));
        assert_eq!(combine(t, &deny, &failed, "p"), None);
        let o = PolicyMode::Override;
        assert!(matches!(combine(o, &deny, &said(true), "p"), Some(Outcome::Allow(r)) if r.contains("overrides")));
        assert!(matches!(combine(o, &error, &said(true), "p"), Some(Outcome::Allow(_))));
        assert!(matches!(combine(o, &allow, &said(false), "p"), Some(Outcome::Deny(_))));
        assert_eq!(combine(o, &deny, &said(false), "p"), None);
        assert!(matches!(combine(o, &deny, &failed, "p"), Some(Outcome::Error(_))));
    }

    #[test]
    fn reports_are_bounded_inside_the_input_too() {
        let mut r = PolicyReport {
            file: "p.rego".into(),
            mode: PolicyMode::Tighten,
            typed: "allow".into(),
            allow: Some(true),
            reason: "r".repeat(5000),
            rule: ENTRYPOINT.into(),
            changed: false,
            eval_us: 1,
            input: serde_json::json!({"a": ["x".repeat(5000)], "b": {"c": "y".repeat(5000)}}),
        };
        r.bound(256);
        assert!(r.reason.len() <= 256);
        assert!(r.input["a"][0].as_str().unwrap().len() <= 256);
        assert!(r.input["b"]["c"].as_str().unwrap().len() <= 256);
    }
}
