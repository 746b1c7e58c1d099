//! Issue 15, kubelet credential providers end to end: `pullgate-verifier` →
//! the agent → the test plugin `pullgate-test-credprovider` (exec'd with a
//! real `CredentialProviderRequest`, answering a `CredentialProviderResponse`)
//! → an htpasswd-protected Debian `docker-registry` holding a Notation-signed
//! image. The plugin logs every invocation, so the cache key types and the
//! cache duration are asserted by counting execs; hostile plugins (hanging,
//! 10 MB of output, junk, another apiVersion) end in a deny, never an allow,
//! and a hanging one is remembered rather than exec'd again for the next pull.

use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, notation_config};
use pullgate_tests::{Agent, AgentFiles, MANIFEST_MEDIA_TYPE, agent_command, bin, fixtures_dir};
use pullgate_wire::Descriptor;
use std::path::{Path, PathBuf};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const USER: &str = "puller";
const PASS: &str = "s3cret-pass";
const PLUGIN: &str = "pg-test-provider";

fn subject() -> Descriptor {
    Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: SUBJECT.into(), size: 517 }
}

/// An htpasswd registry with the signed fixture in repositories `a` and `b`.
fn registry(rt: &tokio::runtime::Runtime) -> Registry {
    rt.block_on(async {
        let reg = Registry::start(RegistryOptions { htpasswd: Some((USER.into(), PASS.into())), tls: false }).await;
        let layout = fixtures_dir().join("notation/oci-layouts/e2e-valid-signature");
        reg.push_layout("a", &layout).await;
        reg.push_layout("b", &layout).await;
        reg
    })
}

/// What the provider config says about the plugin.
struct Plugin<'a> {
    match_images: &'a str,
    env: &'a [(&'a str, &'a str)],
    default_cache: &'a str,
}

/// An agent whose `[credentialProviders]` name a kubelet-style YAML config
/// and a plugin directory holding the test plugin; `extra` is more TOML.
fn start_agent(reg: &Registry, plugin: &Plugin, extra: &str) -> (Agent, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("node dir");
    let node = dir.path().to_path_buf();
    let bin_dir = node.join("plugins");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::copy(bin("pullgate-test-credprovider"), bin_dir.join(PLUGIN)).expect("installing the plugin");
    let log = node.join("invocations.jsonl");
    let mut env = format!(
        "      - name: PG_CRED_LOG\n        value: {}\n      - name: PG_CRED_USER\n        value: {USER}\n",
        log.display()
    );
    let has = |k: &str| plugin.env.iter().any(|(n, _)| *n == k);
    if !has("PG_CRED_PASS") {
        env.push_str(&format!("      - name: PG_CRED_PASS\n        value: {PASS}\n"));
    }
    for (k, v) in plugin.env {
        env.push_str(&format!("      - name: {k}\n        value: \"{v}\"\n"));
    }
    let yaml = format!(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: {PLUGIN}\n    matchImages:\n      - \"{}\"\n    defaultCacheDuration: \"{}\"\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n    args: [get-credentials]\n    env:\n{env}",
        plugin.match_images, plugin.default_cache
    );
    std::fs::write(node.join("credential-providers.yaml"), yaml).unwrap();
    let toml = format!(
        "[credentialProviders]\nconfig = \"{}\"\nbinDir = \"{}\"\n{extra}",
        node.join("credential-providers.yaml").display(),
        bin_dir.display()
    );
    let files = AgentFiles::new(&notation_config(&reg.host, &toml));
    install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
    (files.start(&[]), log, dir)
}

fn invocations(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a logged request"))
        .collect()
}

#[test]
fn plugin_credentials_open_an_htpasswd_registry_and_a_registry_cache_key_execs_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let plugin = Plugin { match_images: &reg.host, env: &[], default_cache: "1m" };
    let (agent, log, _node) = start_agent(&reg, &plugin, "");
    agent.verify(&format!("{}/a:v1", reg.host), &subject()).allowed();
    agent.verify(&format!("{}/b:v1", reg.host), &subject()).allowed();
    let calls = invocations(&log);
    assert_eq!(calls.len(), 1, "cacheKeyType Registry: one exec serves both repositories: {calls:?}");
    let req = &calls[0]["request"];
    assert_eq!(req["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(req["kind"], "CredentialProviderRequest");
    assert_eq!(req["image"], format!("{}/a", reg.host));
    assert_eq!(calls[0]["args"], serde_json::json!(["get-credentials"]));
    assert!(!agent.stderr().contains(PASS), "a credential reached the log");
}

#[test]
fn image_cache_keys_exec_once_per_image_and_a_zero_duration_is_not_cached() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let per_image = Plugin { match_images: &reg.host, env: &[("PG_CRED_CACHE_KEY", "Image")], default_cache: "1m" };
    let (agent, log, _node) = start_agent(&reg, &per_image, "");
    agent.verify(&format!("{}/a:v1", reg.host), &subject()).allowed();
    agent.verify(&format!("{}/b:v1", reg.host), &subject()).allowed();
    let images: Vec<String> = invocations(&log).iter().map(|c| c["request"]["image"].to_string()).collect();
    assert_eq!(images.len(), 2, "one exec per image: {images:?}");
    drop(agent);

    let uncached = Plugin {
        match_images: &reg.host,
        env: &[("PG_CRED_CACHE_KEY", "Image"), ("PG_CRED_CACHE_DURATION", "0s")],
        default_cache: "1m",
    };
    let (agent, log, _node) = start_agent(&reg, &uncached, "");
    agent.verify(&format!("{}/a:v1", reg.host), &subject()).allowed();
    agent.verify(&format!("{}/b:v1", reg.host), &subject()).allowed();
    let n = invocations(&log).len();
    assert!(n > 2, "cacheDuration 0s is never cached, so each credential lookup execs ({n} execs)");
}

#[test]
fn a_provider_that_does_not_match_the_image_is_not_asked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    // kubelet's rule: the port must match exactly.
    let host_only = reg.host.split(':').next().unwrap().to_string();
    let plugin = Plugin { match_images: &host_only, env: &[], default_cache: "1m" };
    let (agent, log, _node) = start_agent(&reg, &plugin, "");
    let line = agent.verify(&format!("{}/a:v1", reg.host), &subject()).denied().to_string();
    assert!(line.contains("refused access") || line.contains("credentials"), "{line}");
    assert!(invocations(&log).is_empty());
}

#[test]
fn the_keychain_comes_before_credential_providers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let node = tempfile::tempdir().unwrap();
    let docker = node.path().join("config.json");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:wrong"));
    std::fs::write(&docker, format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.host)).unwrap();
    let plugin = Plugin { match_images: &reg.host, env: &[], default_cache: "1m" };
    let extra = format!("[auth]\ndockerConfig = \"{}\"\n", docker.display());
    let (agent, log, _node) = start_agent(&reg, &plugin, &extra);
    agent.verify(&format!("{}/a:v1", reg.host), &subject()).denied();
    assert!(invocations(&log).is_empty(), "the docker config entry matched, so the plugin was not asked");
}

#[test]
fn hostile_plugins_end_in_a_deny_with_the_reason_logged() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    for (mode, logged) in [
        ("junk", "is not JSON"),
        ("wrong-api", "has apiVersion \"credentialprovider.kubelet.k8s.io/v9\""),
        ("huge", "printed more than"),
        ("fail", "exited with"),
        ("hang", "no answer before the deadline"),
    ] {
        let plugin = Plugin { match_images: &reg.host, env: &[("PG_CRED_MODE", mode)], default_cache: "1m" };
        let (agent, log, _node) = start_agent(&reg, &plugin, "");
        let run = agent.verify(&format!("{}/a:v1", reg.host), &subject());
        run.denied();
        assert!(!invocations(&log).is_empty(), "{mode}: the plugin ran");
        let stderr = agent.stderr();
        assert!(stderr.contains(logged), "{mode}: agent log lacks {logged:?}:\n{stderr}");
        assert!(!stderr.contains(PASS), "{mode}: a credential reached the log");
    }
}

#[test]
fn a_hanging_plugin_is_not_run_again_for_the_next_pull_within_the_failure_window() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt);
    let plugin = Plugin { match_images: &reg.host, env: &[("PG_CRED_MODE", "hang")], default_cache: "1m" };
    let (agent, log, _node) = start_agent(&reg, &plugin, "");
    agent.verify(&format!("{}/a:v1", reg.host), &subject()).denied();
    let first = invocations(&log).len();
    assert!(first >= 1, "the plugin ran for the first pull");
    // The next pull (another image, right after) does not wait for the plugin again.
    agent.verify(&format!("{}/b:v1", reg.host), &subject()).denied();
    assert_eq!(invocations(&log).len(), first, "a hung plugin is remembered, not exec'd again at once");
    let stderr = agent.stderr();
    assert!(stderr.contains("failed recently"), "the skipped exec is logged:\n{stderr}");
    assert!(!stderr.contains(PASS), "a credential reached the log");
}

#[test]
fn check_config_reports_an_unusable_provider_config() {
    let node = tempfile::tempdir().unwrap();
    std::fs::write(
        node.path().join("cp.yaml"),
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: ../escape\n    matchImages: [\"*.example\"]\n    defaultCacheDuration: 12h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n  - name: missing\n    matchImages: []\n    apiVersion: v0\n",
    )
    .unwrap();
    let toml = format!(
        "[credentialProviders]\nconfig = \"{}\"\nbinDir = \"{}\"\n",
        node.path().join("cp.yaml").display(),
        node.path().display()
    );
    let files = AgentFiles::new(&toml);
    let (code, out, _) = agent_command(&["check-config", files.config_dir.to_str().unwrap()]);
    assert_eq!(code, Some(pullgate_tests::EXIT_CONFIG), "{out}");
    for field in [
        "providers[0].name",
        "providers[1].matchImages",
        "providers[1].defaultCacheDuration",
        "providers[1].apiVersion",
    ] {
        assert!(out.contains(field), "check-config does not name {field}:\n{out}");
    }
}
