//! `pullgate-test-credprovider`: a kubelet credential-provider plugin for
//! the tests, speaking the real exec protocol: a `CredentialProviderRequest`
//! on stdin, a `CredentialProviderResponse` on stdout.
//!
//! Every invocation appends its request (one JSON line, with the plugin's
//! arguments) to the file named by `PG_CRED_LOG`, so tests can count execs
//! and assert cache behaviour. Its answer is set by the environment the
//! provider config gives it (kubelet's `env`):
//! * `PG_CRED_MODE`: `ok` (default), `hang` (never answers), `huge` (10 MB
//!   of output), `junk` (not JSON), `wrong-api` (another apiVersion), `fail` (exit 1).
//! * `PG_CRED_USER`, `PG_CRED_PASS`: the credentials returned.
//! * `PG_CRED_AUTH_KEY`: the `auth` key (default: the image's registry host).
//! * `PG_CRED_CACHE_KEY`: `cacheKeyType` (default `Registry`).
//! * `PG_CRED_CACHE_DURATION`: `cacheDuration` (omitted when unset).

use std::io::{Read, Write};
use std::process::ExitCode;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> ExitCode {
    let mut input = Vec::new();
    if std::io::stdin().take(1024 * 1024).read_to_end(&mut input).is_err() {
        return ExitCode::from(2);
    }
    let request: serde_json::Value = match serde_json::from_slice(&input) {
        Ok(v) => v,
        Err(_) => return ExitCode::from(3),
    };
    if let Some(log) = env("PG_CRED_LOG") {
        let line = serde_json::json!({"request": request, "args": std::env::args().skip(1).collect::<Vec<_>>()});
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(log).and_then(|mut f| writeln!(f, "{line}"));
        if appended.is_err() {
            return ExitCode::from(4);
        }
    }
    let image = request["image"].as_str().unwrap_or_default();
    let api_version = request["apiVersion"].as_str().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let written = match env("PG_CRED_MODE").as_deref().unwrap_or("ok") {
        "hang" => {
            std::thread::sleep(std::time::Duration::from_secs(600));
            Ok(())
        }
        "huge" => out.write_all(&vec![b' '; 10 * 1024 * 1024]),
        "junk" => out.write_all(b"{\"apiVersion\": \"credentialprovider.kubelet.k8s.io/v1\", \"kind\": "),
        "fail" => return ExitCode::from(1),
        mode => {
            let api = if mode == "wrong-api" { "credentialprovider.kubelet.k8s.io/v9" } else { api_version };
            let key = env("PG_CRED_AUTH_KEY").unwrap_or_else(|| image.split('/').next().unwrap_or_default().into());
            let mut answer = serde_json::json!({
                "apiVersion": api,
                "kind": "CredentialProviderResponse",
                "cacheKeyType": env("PG_CRED_CACHE_KEY").unwrap_or_else(|| "Registry".into()),
                "auth": { key: { "username": env("PG_CRED_USER").unwrap_or_default(), "password": env("PG_CRED_PASS").unwrap_or_default() } },
            });
            if let Some(d) = env("PG_CRED_CACHE_DURATION") {
                answer["cacheDuration"] = serde_json::Value::String(d);
            }
            out.write_all(answer.to_string().as_bytes())
        }
    };
    if written.is_err() { ExitCode::from(5) } else { ExitCode::SUCCESS }
}
