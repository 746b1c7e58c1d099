//! `pullgate-rego-bench`: the cost of the Rego policy per decision
//! (`scripts/bench rego`), with a realistic policy — allowed registries, a
//! required signer per repository, deny `latest` — on a realistic input (a
//! verified cosign signature and a Notation run with two signatures).
//!
//! The policy is compiled once through the agent's own config loading (a
//! config directory with `pullgate.toml` and `policy/acme.rego`), as a
//! config generation does; each decision then goes through the engine's
//! hook, `policy::apply_to`: building the input document, the hop to the
//! blocking pool, the evaluation and folding the answer in. Prints the
//! median and p99 per decision (`rego_eval_us=`) and the median of the
//! evaluation alone (`rego_engine_us=`, `Module::decide` on the same
//! input); never judges them.
//!
//! Usage: `pullgate-rego-bench [--runs 5000] [--warmup 200]`

use pullgate_agent::cache::{Evaluation, Outcome};
use pullgate_agent::policy::{self, Pulled};
use pullgate_agent::report::{Source, VerifierRun};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Allowed registries, a required signer per repository, no `latest`.
const POLICY: &str = r#"package pullgate

allowed_registries := {"ghcr.io", "registry.acme.example"}

# Repository prefix → the signer (cosign key id or keyless identity) it requires.
required_signers := {
	"acme/payments/": {"key": "b0c2f9c2d5f6f3f0d7ae1a4f5ab5a1d86b7e3cb7d5ae20ce6f1c2de1f7a5e1c2"},
	"acme/web/": {"identity": "https://github.com/acme/web/.github/workflows/release.yml@refs/heads/main"},
	"acme/tools/": {"identity": "release@acme.example"},
}

default decision := {"allow": true, "reason": "policy checks passed", "rule": "default"}

decision := {"allow": false, "reason": msg, "rule": "allowed-registries"} if {
	not input.image.registry in allowed_registries
	msg := sprintf("registry %s is not allowed", [input.image.registry])
} else := {"allow": false, "reason": "tag latest is not allowed", "rule": "deny-latest"} if {
	input.image.tag == "latest"
} else := {"allow": false, "reason": msg, "rule": "required-signer"} if {
	some prefix, want in required_signers
	startswith(input.image.repository, prefix)
	not signed_by(want)
	msg := sprintf("%s needs a signature by %v", [input.image.repository, want])
}

signed_by(want) if {
	some run in input.verification
	some sig in run.signatures
	sig.verified
	matches(sig, want)
}

matches(sig, want) if sig.keyId == want.key

matches(sig, want) if sig.identity == want.identity
"#;

fn options() -> Result<(usize, usize), String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut number = |k: &str, default: usize| {
        raw.remove(k).map_or(Ok(default), |v| v.parse::<usize>().map_err(|e| format!("--{k} {v:?}: {e}")))
    };
    let runs = number("runs", 5000)?;
    let warmup = number("warmup", 200)?;
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    Ok((runs, warmup))
}

/// The verifier runs a realistic decision carries (built through serde, as the decision log stores them).
fn verifier_runs() -> Vec<VerifierRun> {
    let sig = |verified: bool, facts: serde_json::Value| {
        serde_json::json!({
            "manifest": format!("sha256:{}", if verified { "1".repeat(64) } else { "2".repeat(64) }),
            "envelopeMediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "signer": "key keys/payments.pub",
            "policy": null, "level": null, "verified": verified,
            "checks": [
                {"check": "digest", "status": "passed", "reason": "the payload names the pulled digest"},
                {"check": "signature", "status": if verified { "passed" } else { "failed" }, "reason": "ECDSA P-256"},
            ],
            "facts": facts,
        })
    };
    let key = "b0c2f9c2d5f6f3f0d7ae1a4f5ab5a1d86b7e3cb7d5ae20ce6f1c2de1f7a5e1c2";
    let cosign = serde_json::json!({
        "verifier": "cosign", "result": "pass", "reason": "cosign signature by key keys/payments.pub",
        "registry": "ghcr.io", "referrers": "cosign-tag+referrers-api",
        "signatures": [
            sig(false, serde_json::json!({"format": "cosign", "keyName": "keys/old.pub", "keyId": "f".repeat(64)})),
            sig(true, serde_json::json!({"format": "cosign", "keyName": "keys/payments.pub", "keyId": key,
                "signingTime": "2026-11-30T10:00:00Z"})),
        ],
    });
    let notation = serde_json::json!({
        "verifier": "notation", "result": "pass", "reason": "trust policy \"acme\": signature #1 of 1 examined: verified",
        "registry": "ghcr.io", "referrers": "referrers-api",
        "signatures": [sig(true, serde_json::json!({"format": "notation", "scheme": "notary.x509",
            "chainSubjects": ["CN=release,O=Acme,C=US"]}))],
    });
    vec![serde_json::from_value(cosign).expect("a cosign run"), serde_json::from_value(notation).expect("a run")]
}

fn typed(verification: &[VerifierRun]) -> Evaluation {
    let mut ev = Evaluation::error(String::new());
    ev.outcome = Outcome::Allow("scope payments: cosign: cosign signature by key keys/payments.pub".into());
    ev.rule = Some("scope payments".into());
    ev.source = Source::Verify;
    ev.verification = verification.to_vec();
    ev
}

fn config() -> Result<(tempfile::TempDir, pullgate_agent::config::Loaded), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let toml = r#"
defaultAction = "deny"
[[scopes]]
name = "payments"
images = ["ghcr.io/acme/**"]
action = "allow"
policy = "policy/acme.rego"
"#;
    std::fs::write(dir.path().join("pullgate.toml"), toml).map_err(|e| e.to_string())?;
    std::fs::create_dir(dir.path().join("policy")).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("policy/acme.rego"), POLICY).map_err(|e| e.to_string())?;
    let loaded = pullgate_agent::config::load_dir(dir.path()).map_err(|e| e.to_string())?;
    Ok((dir, loaded))
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_nanos() as f64 / 1000.0
}

fn main() -> ExitCode {
    let (runs, warmup) = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pullgate-rego-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match bench(runs, warmup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pullgate-rego-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(runs: usize, warmup: usize) -> Result<(), String> {
    let (_dir, loaded) = config()?;
    let reference =
        pullgate_reference::Reference::parse("ghcr.io/acme/payments/api:2.4.1").map_err(|e| e.to_string())?;
    let digest =
        pullgate_reference::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).map_err(|e| e.to_string())?;
    let pulled = Pulled {
        reference: &reference,
        digest: &digest,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        size: 1234,
    };
    let verification = verifier_runs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut per_decision = Vec::with_capacity(runs);
    let mut input = None;
    for i in 0..warmup + runs {
        let mut ev = typed(&verification);
        let started = Instant::now();
        rt.block_on(policy::apply_to(&loaded.config, pulled, &mut ev));
        let took = started.elapsed();
        let report = ev.policy.ok_or("the policy did not run")?;
        if report.allow != Some(true) {
            return Err(format!("the realistic input should be allowed; the policy said {report:?}"));
        }
        if i >= warmup {
            per_decision.push(took);
        }
        input.get_or_insert(report.input);
    }
    let input = serde_json::to_string(&input.ok_or("no input")?).map_err(|e| e.to_string())?;
    let module = &loaded.config.policies.scopes["payments"].module;
    let mut engine_only = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let started = Instant::now();
        let d = module.decide(&input).map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if !d.allow {
            return Err(format!("the engine alone said {d:?}"));
        }
        if i >= warmup {
            engine_only.push(took);
        }
    }
    per_decision.sort();
    engine_only.sort();
    println!("rego decisions timed: {runs} after {warmup} warm-up, input {} bytes", input.len());
    println!("rego_engine_us={:.1}", percentile(&engine_only, 50));
    println!("rego_eval_p99_us={:.1}", percentile(&per_decision, 99));
    println!("rego_eval_us={:.1}", percentile(&per_decision, 50));
    Ok(())
}
