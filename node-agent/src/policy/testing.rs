//! `pullgate-agent policy test DIR`: runs the `test_*` rules of the Rego
//! files in DIR, like `opa test`, against inputs recorded from real
//! decisions.
//!
//! Inputs: every `DIR/inputs/NAME.json` — a report written by
//! `pullgate-agent explain --json` (its `policy.input` is used) or a bare
//! input document — is `data.inputs.NAME` (characters other than letters,
//! digits and `_` in NAME become `_`), so a test says
//! `data.pullgate.decision.allow with input as data.inputs.nginx_latest`.
//! `--input FILE` (same formats) is also the global `input`. A test passes
//! when its rule is `true`; false, undefined or an error fails it.

use super::input;
use super::rego::{self, CompileError, EVAL_TIME_LIMIT};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Most `.rego` files or input files read from a test directory.
pub const MAX_TEST_FILES: usize = 256;

/// Why a test run could not start (bad files, not failing tests).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A directory or file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A policy file does not compile.
    #[error("{path}: {source}")]
    Compile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: CompileError,
    },
    /// A recorded input cannot be used.
    #[error("{path}: {why}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// There is nothing to run.
    #[error("{0}")]
    Empty(String),
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestResult {
    /// The file that defines it.
    pub file: String,
    /// `data.PACKAGE.test_NAME`.
    pub rule: String,
    /// `PASS`, `FAIL` or `ERROR`.
    pub status: &'static str,
    /// For FAIL and ERROR: what the rule gave.
    pub detail: Option<String>,
    /// Evaluation time in microseconds.
    pub took_us: u64,
}

/// Runs every test in `dir`; `global_input` is an input file for `input`.
pub fn run(dir: &Path, global_input: Option<&Path>) -> Result<Vec<TestResult>, TestError> {
    let sources = read_dir_files(dir, "rego")?;
    if sources.is_empty() {
        return Err(TestError::Empty(format!("{} has no .rego files", dir.display())));
    }
    let mut data = serde_json::Map::new();
    let inputs_dir = dir.join("inputs");
    if inputs_dir.is_dir() {
        for (name, bytes) in read_dir_files(&inputs_dir, "json")? {
            let v =
                input::from_recorded(&bytes).map_err(|why| TestError::Input { path: inputs_dir.join(&name), why })?;
            data.insert(data_key(&name), v);
        }
    }
    let global = match global_input {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|source| TestError::Read { path: p.into(), source })?;
            input::from_recorded(&bytes).map_err(|why| TestError::Input { path: p.into(), why })?
        }
        None => serde_json::json!({}),
    };
    let files: Vec<(&str, &[u8])> = sources.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let mut engine = rego::load(&files, EVAL_TIME_LIMIT)
        .map_err(|source| TestError::Compile { path: dir.display().to_string(), source })?;
    let data = regorus::Value::from(serde_json::json!({ "inputs": data }));
    engine.add_data(data).map_err(|e| TestError::Empty(format!("adding the inputs: {e}")))?;
    engine.set_input(regorus::Value::from(global));
    let tests: Vec<(String, String)> =
        sources.iter().flat_map(|(n, b)| test_rules(b).into_iter().map(move |r| (n.clone(), r))).collect();
    if tests.is_empty() {
        return Err(TestError::Empty(format!("no test_* rules in the .rego files of {}", dir.display())));
    }
    Ok(tests.into_iter().map(|(file, rule)| run_one(&mut engine, file, rule)).collect())
}

fn run_one(engine: &mut regorus::Engine, file: String, rule: String) -> TestResult {
    let started = Instant::now();
    let got = engine.eval_rule(rule.clone());
    let took_us = started.elapsed().as_micros() as u64;
    let (status, detail) = match got {
        Ok(regorus::Value::Bool(true)) => ("PASS", None),
        Ok(regorus::Value::Undefined) => ("FAIL", Some("undefined".to_string())),
        Ok(v) => ("FAIL", Some(v.to_json_str().unwrap_or_else(|_| "?".into()))),
        Err(e) => ("ERROR", Some(format!("{e:#}"))),
    };
    TestResult { file, rule, status, detail, took_us }
}

/// `opa test`-like text: results by file, then the counts.
pub fn render(results: &[TestResult]) -> String {
    let mut s = String::new();
    let mut file = "";
    for r in results {
        if r.file != file {
            file = &r.file;
            s.push_str(&format!("{file}:\n"));
        }
        s.push_str(&format!("{}: {} ({} µs)\n", r.rule, r.status, r.took_us));
        if let Some(d) = &r.detail {
            s.push_str(&format!("  {}\n", pullgate_wire::truncate(d, 2048, pullgate_wire::TRUNCATED)));
        }
    }
    s.push_str(&format!("{}\n", "-".repeat(80)));
    let n = results.len();
    for status in ["PASS", "FAIL", "ERROR"] {
        let k = results.iter().filter(|r| r.status == status).count();
        if k > 0 {
            s.push_str(&format!("{status}: {k}/{n}\n"));
        }
    }
    s
}

/// `data.PACKAGE.test_NAME` for every rule head starting a line with
/// `test_` (rules may be defined in several parts; each is listed once).
pub fn test_rules(source: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(source);
    let Some(package) = text.lines().find_map(|l| l.strip_prefix("package ")).map(str::trim) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let rule = format!("data.{package}.{name}");
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    out
}

/// `NAME.json` → `NAME` with anything but `[A-Za-z0-9_]` as `_`.
fn data_key(file: &str) -> String {
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// The regular files `*.EXT` directly in `dir`, sorted, each at most 1 MiB.
fn read_dir_files(dir: &Path, ext: &str) -> Result<Vec<(String, Vec<u8>)>, TestError> {
    let read_err = |source| TestError::Read { path: dir.into(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(&format!(".{ext}")) || !entry.file_type().map_err(read_err)?.is_file() {
            continue;
        }
        if out.len() == MAX_TEST_FILES {
            return Err(TestError::Empty(format!("more than {MAX_TEST_FILES} .{ext} files in {}", dir.display())));
        }
        let path = entry.path();
        let len = entry.metadata().map_err(read_err)?.len();
        if len > crate::config::MAX_FILE_BYTES {
            return Err(TestError::Input {
                path,
                why: format!("{len} bytes, more than {}", crate::config::MAX_FILE_BYTES),
            });
        }
        let bytes = std::fs::read(&path).map_err(|source| TestError::Read { path: path.clone(), source })?;
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"package pullgate

default decision := {"allow": true, "reason": "ok"}

decision := {"allow": false, "reason": "latest", "rule": "deny-latest"} if input.image.tag == "latest"
"#;
    const TESTS: &str = r#"package pullgate_test

test_latest_is_denied if {
	not data.pullgate.decision.allow with input as data.inputs.latest
}

test_global_input_allowed if data.pullgate.decision.allow

test_wrong if data.pullgate.decision.allow with input as data.inputs.latest
"#;

    #[test]
    fn runs_test_rules_against_recorded_inputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        std::fs::write(dir.path().join("policy_test.rego"), TESTS).unwrap();
        std::fs::create_dir(dir.path().join("inputs")).unwrap();
        let latest = serde_json::json!({"policy": {"input": {"apiVersion": input::INPUT_API_VERSION, "image": {"tag": "latest"}}}});
        std::fs::write(dir.path().join("inputs/latest.json"), latest.to_string()).unwrap();
        let v1 = serde_json::json!({"apiVersion": input::INPUT_API_VERSION, "image": {"tag": "v1"}});
        std::fs::write(dir.path().join("v1.json"), v1.to_string()).unwrap();
        let results = run(dir.path(), Some(&dir.path().join("v1.json"))).unwrap();
        let status: Vec<(&str, &str)> = results.iter().map(|r| (r.rule.as_str(), r.status)).collect();
        assert_eq!(
            status,
            [
                ("data.pullgate_test.test_latest_is_denied", "PASS"),
                ("data.pullgate_test.test_global_input_allowed", "PASS"),
                ("data.pullgate_test.test_wrong", "FAIL"),
            ]
        );
        let text = render(&results);
        assert!(text.contains("PASS: 2/3") && text.contains("FAIL: 1/3"), "{text}");
        // Without --input, `input` is empty: the default decision allows.
        let results = run(dir.path(), None).unwrap();
        assert_eq!(results[1].status, "PASS");
    }

    #[test]
    fn bad_directories_are_errors_not_results() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(run(dir.path(), None), Err(TestError::Empty(_))));
        std::fs::write(dir.path().join("p.rego"), "package pullgate\n\ndecision := {\n").unwrap();
        assert!(matches!(run(dir.path(), None), Err(TestError::Compile { .. })));
        std::fs::write(dir.path().join("p.rego"), POLICY).unwrap();
        assert!(matches!(run(dir.path(), None), Err(TestError::Empty(m)) if m.contains("no test_")));
        std::fs::create_dir(dir.path().join("inputs")).unwrap();
        std::fs::write(dir.path().join("inputs/x.json"), "{\"id\": 1}").unwrap();
        assert!(matches!(run(dir.path(), None), Err(TestError::Input { .. })));
    }

    #[test]
    fn test_rules_are_found_once() {
        let src = b"package a.b\n\ntest_x if true\ntest_x if false\n  test_indented if true\nnot_test if true\n";
        assert_eq!(test_rules(src), ["data.a.b.test_x"]);
        assert_eq!(data_key("nginx-latest.v1.json"), "nginx_latest_v1");
    }
}
