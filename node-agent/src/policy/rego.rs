//! The regorus wrapper: compiling one policy file into a reusable engine,
//! and evaluating `data.pullgate.decision` for one input within bounds.
//!
//! Bounds: regorus's cooperative execution timer ([`EVAL_TIME_LIMIT`],
//! checked every few interpreter work units) stops loops and expensive
//! comprehensions; regorus 0.14 has no instruction counter outside its RVM
//! (not built here), so time is the bound on work. The input is capped in
//! size before it gets here ([`super::input::MAX_INPUT_BYTES`]), and the
//! caller runs evaluations on the blocking pool with an outer deadline
//! ([`super::EVAL_DEADLINE`]), so a builtin that does not check the timer
//! cannot hold an async worker. Memory is not bounded by regorus without its
//! allocator feature (not enabled, see DEPENDENCIES.md): a policy author
//! can still make one evaluation allocate a lot (`numbers.range(0, 1e9)`).

use std::num::NonZeroU32;
use std::time::Duration;

/// The rule every policy must define: `{ "allow": bool, "reason": string }`.
pub const ENTRYPOINT: &str = "data.pullgate.decision";
/// Longest one evaluation may run (regorus's cooperative timer).
pub const EVAL_TIME_LIMIT: Duration = Duration::from_millis(100);
/// Largest policy file compiled.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Longest `reason` or `rule` kept from a decision.
pub const MAX_DECISION_TEXT: usize = 1024;

/// Why a policy file could not be compiled; the generation is invalid.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The file is larger than [`MAX_POLICY_BYTES`].
    #[error("{bytes} bytes, more than {MAX_POLICY_BYTES}; split the policy or trim it")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The file is not UTF-8.
    #[error("not UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// regorus rejected it (syntax, unknown builtin, unsafe variable, …).
    #[error("line {line}, column {column}: {message}")]
    Rego {
        /// 1-based line of the error (0 when regorus gave none).
        line: u32,
        /// 1-based column (0 when regorus gave none).
        column: u32,
        /// regorus's message, on one line.
        message: String,
    },
    /// It compiles, but `package pullgate` has no `decision` rule.
    #[error("no rule {ENTRYPOINT}: the policy must be `package pullgate` and define `decision`")]
    NoEntrypoint,
}

/// Why one evaluation produced no decision; the failure policy answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EvalError {
    /// The evaluation ran past its time limit.
    #[error("evaluation exceeded {} ms; simplify the policy", .0.as_millis())]
    TimedOut(Duration),
    /// The policy failed at run time (a builtin error, conflicting rule values, …).
    #[error("evaluation failed: {0}")]
    Failed(String),
    /// `decision` is undefined for this input.
    #[error("{ENTRYPOINT} is undefined for this input; give it a default (`default decision := …`)")]
    Undefined,
    /// `decision` is not `{ "allow": bool, "reason": string }`.
    #[error("{ENTRYPOINT} is not {{\"allow\": bool, \"reason\": string}}: {0}")]
    Malformed(String),
    /// The input could not be handed to regorus.
    #[error("input: {0}")]
    Input(String),
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the pull may go ahead.
    pub allow: bool,
    /// Why, in the policy's words (at most [`MAX_DECISION_TEXT`] bytes).
    pub reason: String,
    /// The rule the policy names as deciding (its optional `rule` field).
    pub rule: Option<String>,
}

/// Prepared engines kept per module for reuse; more concurrent evaluations clone the template.
const MAX_POOLED: usize = 8;

/// One compiled policy file, ready to evaluate many times.
///
/// Evaluations reuse prepared engines from a small pool (a clone of the
/// compiled template costs more than the evaluation itself); each one sets
/// its own input, and regorus clears its evaluation state on every call.
pub struct Module {
    template: regorus::Engine,
    pool: std::sync::Mutex<Vec<regorus::Engine>>,
    limit: Duration,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rego::Module")
    }
}

/// A fresh engine with the project's settings (Rego v1, strict builtins, time limit).
fn new_engine(limit: Duration) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_strict_builtin_errors(true);
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(8).expect("non-zero"),
    });
    engine
}

impl Module {
    /// Parses and prepares `source` (named `path` in messages) and checks
    /// that it defines [`ENTRYPOINT`].
    pub fn compile(path: &str, source: &[u8]) -> Result<Module, CompileError> {
        Module::compile_with_limit(path, source, EVAL_TIME_LIMIT)
    }

    /// [`Module::compile`] with another evaluation time limit (tests).
    pub fn compile_with_limit(path: &str, source: &[u8], limit: Duration) -> Result<Module, CompileError> {
        let mut engine = load(&[(path, source)], limit)?;
        let package = engine.get_packages().map_err(rego_error)?;
        let declared = package.iter().any(|p| p == "data.pullgate")
            && engine.has_declared_rule_rooted_at(path, "decision").map_err(rego_error)?;
        if !declared {
            return Err(CompileError::NoEntrypoint);
        }
        // Preparing (rule indexing, scheduling) happens once, here, not per decision.
        engine.compile_with_entrypoint(&ENTRYPOINT.into()).map_err(rego_error)?;
        Ok(Module { template: engine, pool: std::sync::Mutex::new(Vec::new()), limit })
    }

    /// Evaluates [`ENTRYPOINT`] with `input` (JSON text).
    pub fn decide(&self, input_json: &str) -> Result<Decision, EvalError> {
        let value = self.eval(ENTRYPOINT, input_json, None)?;
        parse_decision(value)
    }

    /// Evaluates `rule` with `input_json` as input and `data` added, on a clone.
    pub(super) fn eval(
        &self,
        rule: &str,
        input_json: &str,
        data: Option<regorus::Value>,
    ) -> Result<regorus::Value, EvalError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut engine = pooled.unwrap_or_else(|| self.template.clone());
        engine.set_input_json(input_json).map_err(|e| EvalError::Input(e.to_string()))?;
        // An engine given extra data is not the template any more: it is not pooled.
        let reusable = data.is_none();
        if let Some(d) = data {
            engine.add_data(d).map_err(|e| EvalError::Input(e.to_string()))?;
        }
        let result = engine.eval_rule(rule.to_string()).map_err(|e| eval_error(&e, self.limit));
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if reusable && pool.len() < MAX_POOLED {
            pool.push(engine);
        }
        result
    }
}

/// Loads several files into one engine (`policy test` compiles a directory).
pub(super) fn load(files: &[(&str, &[u8])], limit: Duration) -> Result<regorus::Engine, CompileError> {
    let mut engine = new_engine(limit);
    for (path, source) in files {
        if source.len() > MAX_POLICY_BYTES {
            return Err(CompileError::TooLarge { bytes: source.len() });
        }
        let text = std::str::from_utf8(source).map_err(CompileError::NotUtf8)?;
        engine.add_policy(path.to_string(), text.to_string()).map_err(rego_error)?;
    }
    Ok(engine)
}

/// regorus's error as line, column and its `error: …` text on one line.
///
/// regorus reports `--> FILE:LINE:COL`, the source line with a caret, then
/// `error: what`; the excerpt is left out (it is the user's own file).
fn rego_error(e: anyhow::Error) -> CompileError {
    let text = format!("{e:#}");
    let (line, column) = error_location(&text);
    let said: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("error: ")).collect();
    let message = if said.is_empty() { pullgate_wire::one_line(&text) } else { said.join("; ") };
    let message = pullgate_wire::truncate(&message, MAX_DECISION_TEXT, pullgate_wire::TRUNCATED);
    CompileError::Rego { line, column, message }
}

/// Line and column in a regorus error (`--> FILE:12:5`), or zeros.
pub fn error_location(message: &str) -> (u32, u32) {
    for line in message.lines() {
        let mut parts = line.rsplitn(3, ':');
        let (Some(c), Some(l), Some(_)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if let (Ok(l), Ok(c)) = (l.trim().parse::<u32>(), c.trim().parse::<u32>()) {
            return (l, c);
        }
    }
    (0, 0)
}

fn eval_error(e: &anyhow::Error, limit: Duration) -> EvalError {
    if e.chain().any(|c| c.downcast_ref::<regorus::LimitError>().is_some()) {
        return EvalError::TimedOut(limit);
    }
    let text = format!("{e:#}");
    if text.contains("execution exceeded time limit") || text.contains("time limit") {
        return EvalError::TimedOut(limit);
    }
    let (line, column) = error_location(&text);
    let said: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("error: ")).collect();
    let what = if said.is_empty() { pullgate_wire::one_line(&text) } else { said.join("; ") };
    let at = if line > 0 { format!("line {line}, column {column}: ") } else { String::new() };
    EvalError::Failed(pullgate_wire::truncate(&format!("{at}{what}"), MAX_DECISION_TEXT, pullgate_wire::TRUNCATED))
}

/// `{ "allow": bool, "reason": string, "rule"?: string }`; other keys are ignored.
fn parse_decision(value: regorus::Value) -> Result<Decision, EvalError> {
    if value == regorus::Value::Undefined {
        return Err(EvalError::Undefined);
    }
    let json = value.to_json_str().map_err(|e| EvalError::Malformed(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| EvalError::Malformed(e.to_string()))?;
    let shown = || pullgate_wire::truncate(&json, 200, pullgate_wire::TRUNCATED);
    let Some(obj) = v.as_object() else { return Err(EvalError::Malformed(format!("got {}", shown()))) };
    let Some(allow) = obj.get("allow").and_then(serde_json::Value::as_bool) else {
        return Err(EvalError::Malformed(format!("\"allow\" is not a boolean in {}", shown())));
    };
    let Some(reason) = obj.get("reason").and_then(serde_json::Value::as_str) else {
        return Err(EvalError::Malformed(format!("\"reason\" is not a string in {}", shown())));
    };
    let text =
        |s: &str| pullgate_wire::truncate(&pullgate_wire::one_line(s), MAX_DECISION_TEXT, pullgate_wire::TRUNCATED);
    let rule = obj.get("rule").and_then(serde_json::Value::as_str).map(text);
    Ok(Decision { allow, reason: text(reason), rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW_TAGGED: &str = r#"
package pullgate

default decision := {"allow": false, "reason": "no tag", "rule": "default"}

decision := {"allow": true, "reason": "tagged"} if input.image.tag != "latest"
"#;

    #[test]
    fn decides_and_reads_the_decision_shape() {
        let m = Module::compile("policy/a.rego", ALLOW_TAGGED.as_bytes()).unwrap();
        let d = m.decide(r#"{"image": {"tag": "v1"}}"#).unwrap();
        assert_eq!(d, Decision { allow: true, reason: "tagged".into(), rule: None });
        let d = m.decide(r#"{"image": {"tag": "latest"}}"#).unwrap();
        assert_eq!((d.allow, d.rule.as_deref()), (false, Some("default")));
    }

    #[test]
    fn pooled_engines_keep_nothing_from_the_last_input() {
        let m = Module::compile("policy/a.rego", ALLOW_TAGGED.as_bytes()).unwrap();
        for i in 0..50 {
            let (tag, allow) = if i % 3 == 0 { ("latest", false) } else { ("v1", true) };
            let d = m.decide(&format!(r#"{{"image": {{"tag": "{tag}"}}}}"#)).unwrap();
            assert_eq!(d.allow, allow, "round {i}");
            // A failed evaluation leaves no state behind either.
            assert!(m.decide("not json").is_err());
        }
    }

    #[test]
    fn compile_errors_name_the_line() {
        let bad = "package pullgate\n\ndecision := {\"allow\": true\n  reason oops\n";
        match Module::compile("policy/bad.rego", bad.as_bytes()) {
            Err(CompileError::Rego { line, column, message }) => {
                assert!((3..=4).contains(&line) && column > 0, "line {line}:{column}: {message}");
                assert!(!message.contains('\n') && message.contains("expecting"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let other = "package other\n\ndecision := {\"allow\": true, \"reason\": \"\"}\n";
        assert!(matches!(Module::compile("p.rego", other.as_bytes()), Err(CompileError::NoEntrypoint)));
        assert!(matches!(Module::compile("p.rego", &[0xff, 0xfe]), Err(CompileError::NotUtf8(_))));
        let huge = format!("package pullgate\n# {}\n", "x".repeat(MAX_POLICY_BYTES));
        assert!(matches!(Module::compile("p.rego", huge.as_bytes()), Err(CompileError::TooLarge { .. })));
    }

    #[test]
    fn malformed_and_undefined_decisions_are_errors() {
        let cases = [
            ("decision := true", "not {"),
            ("decision := {\"allow\": \"yes\", \"reason\": \"r\"}", "\"allow\" is not a boolean"),
            ("decision := {\"allow\": true}", "\"reason\" is not a string"),
            ("decision := {\"allow\": true, \"reason\": \"r\"} if input.never", "undefined"),
        ];
        for (rule, want) in cases {
            let m = Module::compile("p.rego", format!("package pullgate\n{rule}\n").as_bytes()).unwrap();
            let e = m.decide("{}").unwrap_err();
            assert!(e.to_string().contains(want), "{rule}: {e}");
        }
    }

    #[test]
    fn reasons_from_a_policy_are_bounded_and_one_line() {
        let src = "package pullgate\n\ndecision := {\"allow\": false, \"reason\": concat(\"\\n\", [sprintf(\"%d\", [x]) | some x in numbers.range(1, 2000)]), \"rule\": 7}\n";
        let m = Module::compile("p.rego", src.as_bytes()).unwrap();
        let d = m.decide("{}").unwrap();
        assert!(d.reason.len() <= MAX_DECISION_TEXT + 32 && !d.reason.contains('\n'), "{}", d.reason.len());
        assert_eq!(d.rule, None, "a rule that is not a string is ignored");
    }

    #[test]
    fn run_time_errors_are_one_located_line() {
        let src = "package pullgate\n\ndecision := {\"allow\": true, \"reason\": concat(\",\", [1, 2])}\n";
        let m = Module::compile("p.rego", src.as_bytes()).unwrap();
        match m.decide("{}") {
            Err(EvalError::Failed(why)) => assert!(why.starts_with("line 3, column ") && !why.contains('\n'), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expensive_policy_times_out() {
        let slow = r#"
package pullgate

n := count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); x == y])

decision := {"allow": n > 0, "reason": "counted"}
"#;
        let m = Module::compile_with_limit("slow.rego", slow.as_bytes(), Duration::from_millis(20)).unwrap();
        match m.decide("{}") {
            Err(EvalError::TimedOut(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    /// Every full module in docs/rego.md compiles and decides on the documented input;
    /// the deny-latest example denies `latest`.
    #[test]
    fn the_guide_examples_work() {
        let guide = include_str!("../../../docs/rego.md");
        let blocks = |lang: &str| -> Vec<String> {
            let fence = format!("```{lang}\n");
            guide.split(fence.as_str()).skip(1).map(|b| b.split("```").next().unwrap().to_string()).collect()
        };
        let input: serde_json::Value = serde_json::from_str(&blocks("json")[0]).unwrap();
        let mut latest = input.clone();
        latest["image"]["tag"] = "latest".into();
        let modules: Vec<String> = blocks("rego").into_iter().filter(|b| b.starts_with("package pullgate\n")).collect();
        assert!(modules.len() >= 5, "{}", modules.len());
        for m in &modules {
            let module = Module::compile("guide.rego", m.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{m}"));
            module.decide(&input.to_string()).unwrap_or_else(|e| panic!("{e}\n{m}"));
            if m.contains("\"deny-latest\"") {
                let d = module.decide(&latest.to_string()).unwrap();
                assert_eq!((d.allow, d.rule.as_deref()), (false, Some("deny-latest")));
            }
        }
    }

    #[test]
    fn error_locations_are_found() {
        assert_eq!(error_location("\n--> policy/x.rego:12:5\n  |\nerror: unexpected token"), (12, 5));
        assert_eq!(error_location("no location here"), (0, 0));
    }
}
