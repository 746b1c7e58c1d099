//! Kubernetes mode end to end: the real kube client and kube-runtime
//! watchers against an in-process API server double (`apiserver`) that
//! speaks list/watch over HTTP, the real generation writer on a temporary
//! state directory, and the real engine deciding on requests.

mod apiserver;

use apiserver::{ApiServer, Kind, NS, configmap, secret};
use base64::Engine as _;
use pullgate_agent::config;
use pullgate_agent::engine::Engine;
use pullgate_agent::report::DecisionLog;
use pullgate_agent::sync::RegistryCredentials;
use pullgate_agent::sync::credentials::Credential;
use pullgate_agent::sync::generation::Generations;
use pullgate_agent::sync::kube::{KubeOptions, run};
use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Response, Verdict, VerifyRequest};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const CONFIG_LABEL: (&str, &str) = ("pullgate.io/config", "true");
const AUTH_LABEL: (&str, &str) = ("pullgate.io/registry-auth", "true");
const PATH: &str = "pullgate.io/path";
const DIGEST: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const DENY_ALL: &str = "defaultAction = \"deny\"\n";
const ALLOW_ALL: &str = "defaultAction = \"allow\"\n";

/// Everything every test logs (debug level, all crates), to prove secrets never appear.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || W(b.clone()))
            .try_init();
        buf
    })
}

fn main_cm(toml: &str) -> Value {
    configmap("pullgate-main", &[CONFIG_LABEL], &[], &[("pullgate.toml", toml)])
}

fn request(reference: &str) -> VerifyRequest {
    VerifyRequest {
        version: PROTOCOL_VERSION,
        reference: reference.into(),
        digest: DIGEST.into(),
        descriptor: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: DIGEST.into(),
            size: 517,
        },
        deadline_ms: 2000,
    }
}

/// The verdict for `reference`, or `None` when the engine answers with an error.
async fn verdict(engine: &Engine, reference: &str) -> Option<Verdict> {
    match engine.decide(&request(reference), None).await {
        Response::Decision(d) => Some(d.verdict),
        Response::Error { .. } => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Polls `f` until it holds; generous bound, the tests measure tighter bounds themselves.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Agent {
    engine: Arc<Engine>,
    creds: RegistryCredentials,
    gens: Generations,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Starts an engine on `state`'s `current` generation (if any) and the sync.
    fn start(client: kube::Client, state: &Path) -> Agent {
        logs();
        let gens = Generations::new(state);
        let current = gens.current_link();
        let log = DecisionLog::open(state, 1 << 20).unwrap();
        let engine = Arc::new(Engine::new(current.clone(), config::load_dir(&current), log));
        let creds = RegistryCredentials::new();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let opts = KubeOptions::new(NS.into(), state.to_path_buf(), "test-node".into());
        let task = tokio::spawn(run(client, opts, engine.clone(), creds.clone(), rx));
        Agent { engine, creds, gens, stop, task }
    }

    fn generation(&self) -> Option<String> {
        self.engine.status().generation
    }

    fn error(&self) -> String {
        self.engine.status().config_error.unwrap_or_default()
    }

    fn counter(&self, name: &str) -> u64 {
        self.engine.status().counters[name]
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("the sync stops on shutdown").unwrap();
    }
}

fn events_with(api: &ApiServer, reason: &str, object: &str) -> Vec<Value> {
    api.events().into_iter().filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == object).collect()
}

/// Every regular file under `dir`, with its contents.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_change_is_applied_within_two_seconds() {
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    // Not selected: would clash with pullgate-main if the selector were ignored.
    api.apply(Kind::ConfigMap, configmap("unlabelled", &[], &[], &[("pullgate.toml", "garbage = [")]));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    eventually("the first generation", async || agent.generation().is_some()).await;
    let first = agent.generation().unwrap();
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Deny));
    assert_eq!(agent.gens.current_id().unwrap().as_deref(), Some(first.as_str()));
    assert_eq!(agent.error(), "");

    let changed = Instant::now();
    api.apply(Kind::ConfigMap, main_cm(ALLOW_ALL));
    eventually("the changed verdict", async || {
        verdict(&agent.engine, "quay.io/acme/app:1").await == Some(Verdict::Allow)
    })
    .await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(2), "the change took {took:?}");
    let second = agent.generation().unwrap();
    assert_ne!(first, second);
    assert_eq!(agent.gens.current_id().unwrap().as_deref(), Some(second.as_str()));
    assert_eq!(std::fs::read_to_string(agent.gens.current_link().join("pullgate.toml")).unwrap(), ALLOW_ALL);
    assert_eq!(agent.counter("syncErrors"), 0);
    assert_eq!(agent.counter("reloadFailures"), 0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_keeps_last_known_good_and_posts_an_event() {
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    eventually("the first generation", async || agent.generation().is_some()).await;
    let good = agent.generation().unwrap();

    api.apply(Kind::ConfigMap, main_cm("defaultAction = \"sometimes\"\n"));
    eventually("the rejection", async || agent.error().contains("sometimes")).await;
    assert_eq!(agent.generation().as_deref(), Some(good.as_str()), "last known good stays");
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Deny));
    assert_eq!(agent.gens.current_id().unwrap().as_deref(), Some(good.as_str()), "current is not switched");
    let on_disk: Vec<String> = std::fs::read_dir(agent.gens.root().join("generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, std::slice::from_ref(&good), "the rejected generation is not left on disk");
    assert_eq!(agent.counter("reloadFailures"), 1);

    eventually("the Event", async || !events_with(&api, "InvalidConfig", "pullgate-main").is_empty()).await;
    let ev = &events_with(&api, "InvalidConfig", "pullgate-main")[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(ev["involvedObject"]["namespace"], NS);
    assert!(ev["involvedObject"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(ev["message"].as_str().unwrap().contains("sometimes"), "{ev}");
    assert_eq!(ev["reportingInstance"], "test-node");

    // Fixing it applies the fix and clears the error.
    api.apply(Kind::ConfigMap, main_cm(ALLOW_ALL));
    eventually("the fix", async || agent.error().is_empty() && agent.generation().as_deref() != Some(&good)).await;
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Allow));
    assert_eq!(events_with(&api, "InvalidConfig", "pullgate-main").len(), 1, "one Event per rejection");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_configmaps_removes_their_files_but_never_the_last_policy() {
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    api.apply(
        Kind::ConfigMap,
        configmap("trust-acme", &[CONFIG_LABEL], &[(PATH, "truststore/x509/ca/acme")], &[("root.pem", "PEM")]),
    );
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    let pem = agent.gens.current_link().join("truststore/x509/ca/acme/root.pem");
    // The file shows on disk when `current` switches, the generation once the engine has reloaded.
    eventually("the trust store file", async || pem.is_file() && agent.generation().is_some()).await;
    let with_trust = agent.generation().unwrap();

    assert!(api.delete(Kind::ConfigMap, "trust-acme"));
    eventually("the trust store file to go", async || {
        !pem.exists() && agent.generation().is_some_and(|g| g != with_trust)
    })
    .await;
    let without = agent.generation().unwrap();
    assert!(agent.gens.current_link().join("pullgate.toml").is_file());

    assert!(api.delete(Kind::ConfigMap, "pullgate-main"));
    eventually("the rejection", async || agent.error().contains("holds pullgate.toml")).await;
    assert_eq!(agent.generation().as_deref(), Some(without.as_str()), "the last policy stays in force");
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Deny));
    assert!(agent.gens.current_link().join("pullgate.toml").is_file());

    api.apply(Kind::ConfigMap, main_cm(ALLOW_ALL));
    eventually("the new config", async || agent.error().is_empty()).await;
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Allow));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_keys_and_paths_are_rejected() {
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    eventually("the first generation", async || agent.generation().is_some()).await;
    let good = agent.generation().unwrap();

    let evil = [
        configmap("evil-key", &[CONFIG_LABEL], &[], &[("../../../escape", "x")]),
        configmap("evil-hidden", &[CONFIG_LABEL], &[], &[(".profile", "x")]),
        configmap("evil-path", &[CONFIG_LABEL], &[(PATH, "trust/../../../../escape-dir")], &[("f", "x")]),
        configmap("evil-abs", &[CONFIG_LABEL], &[(PATH, "/tmp/escape-abs")], &[("f", "x")]),
        configmap("evil-dot", &[CONFIG_LABEL], &[(PATH, "./trust")], &[("f", "x")]),
    ];
    for cm in evil {
        api.apply(Kind::ConfigMap, cm);
    }
    let names = ["evil-key", "evil-hidden", "evil-path", "evil-abs", "evil-dot"];
    eventually("every bad ConfigMap reported", async || names.iter().all(|n| agent.error().contains(n))).await;
    eventually("an Event on each", async || names.iter().all(|n| !events_with(&api, "InvalidConfig", n).is_empty()))
        .await;
    assert!(events_with(&api, "InvalidConfig", "pullgate-main").is_empty(), "the good ConfigMap is not blamed");
    assert_eq!(agent.generation().as_deref(), Some(good.as_str()));
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Deny));
    // Nothing was written anywhere near or outside the state directory.
    for (path, _) in all_files(state.path()) {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(!name.contains("escape") && name != ".profile" && name != "f", "{}", path.display());
    }
    let parent = state.path().parent().unwrap();
    for stray in ["escape", "escape-dir", "escape-abs"] {
        assert!(!parent.join(stray).exists() && !Path::new("/tmp").join(stray).exists(), "{stray}");
    }

    for n in names {
        api.delete(Kind::ConfigMap, n);
    }
    eventually("the error to clear", async || agent.error().is_empty()).await;
    assert_eq!(agent.generation().as_deref(), Some(good.as_str()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_paths_are_reported_on_both_configmaps() {
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    eventually("the first generation", async || agent.generation().is_some()).await;
    let good = agent.generation().unwrap();

    let at = [(PATH, "truststore/x509/ca/acme")];
    api.apply(Kind::ConfigMap, configmap("trust-a", &[CONFIG_LABEL], &at, &[("root.pem", "A")]));
    api.apply(Kind::ConfigMap, configmap("trust-b", &[CONFIG_LABEL], &at, &[("root.pem", "B")]));
    eventually("the conflict", async || agent.error().contains("ConfigMaps trust-a, trust-b all write into")).await;
    assert!(agent.error().contains("directory \"truststore/x509/ca/acme\""), "{}", agent.error());
    eventually("Events on both", async || {
        !events_with(&api, "InvalidConfig", "trust-a").is_empty()
            && !events_with(&api, "InvalidConfig", "trust-b").is_empty()
    })
    .await;
    assert_eq!(agent.generation().as_deref(), Some(good.as_str()));
    assert!(!agent.gens.current_link().join("truststore").exists(), "neither one silently wins");

    api.delete(Kind::ConfigMap, "trust-b");
    let pem = agent.gens.current_link().join("truststore/x509/ca/acme/root.pem");
    eventually("the remaining one applied", async || pem.is_file() && agent.generation().as_deref() != Some(&good))
        .await;
    assert_eq!(std::fs::read_to_string(&pem).unwrap(), "A");
    assert_eq!(agent.error(), "");
    agent.stop().await;
}

/// The attack: a second labelled ConfigMap names another one's trust-store
/// directory to add its own CA. Whatever its name sorts as, it is refused,
/// its file never reaches the disk, and both ConfigMaps get an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_configmap_cannot_add_a_ca_to_another_trust_store() {
    let api = ApiServer::start().await;
    let store = "notation/truststore/x509/ca/acme";
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    api.apply(Kind::ConfigMap, configmap("trust-acme", &[CONFIG_LABEL], &[(PATH, store)], &[("root.pem", "OWNER")]));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    let owned = agent.gens.current_link().join(store).join("root.pem");
    eventually("the owner's trust store", async || owned.is_file() && agent.generation().is_some()).await;
    let good = agent.generation().unwrap();

    for (attacker, path) in [("aaa-evil", store.to_string()), ("zzz-evil", format!("{store}/"))] {
        let evil = configmap(attacker, &[CONFIG_LABEL], &[(PATH, &path)], &[("evil-ca.pem", "ATTACKER")]);
        api.apply(Kind::ConfigMap, evil);
        eventually("the refusal", async || agent.error().contains(attacker)).await;
        let error = agent.error();
        assert!(error.contains("trust-acme") && error.contains("belongs to exactly one ConfigMap"), "{error}");
        eventually("Events on both", async || {
            !events_with(&api, "InvalidConfig", attacker).is_empty()
                && !events_with(&api, "InvalidConfig", "trust-acme").is_empty()
        })
        .await;
        let ev = &events_with(&api, "InvalidConfig", attacker)[0];
        assert!(ev["message"].as_str().unwrap().contains(store), "{ev}");
        assert!(events_with(&api, "InvalidConfig", "pullgate-main").is_empty(), "the main ConfigMap is not blamed");
        assert_eq!(agent.generation().as_deref(), Some(good.as_str()), "the last good config stays");
        for (file, bytes) in all_files(state.path()) {
            assert!(!file.ends_with("evil-ca.pem") && !contains(&bytes, "ATTACKER"), "{}", file.display());
        }
        assert_eq!(std::fs::read_to_string(&owned).unwrap(), "OWNER");
        assert!(api.delete(Kind::ConfigMap, attacker));
        eventually("the error to clear", async || agent.error().is_empty()).await;
        assert_eq!(agent.generation().as_deref(), Some(good.as_str()));
    }
    agent.stop().await;
}

/// A pull Secret naming a credential helper is refused with a reason, and
/// its content never reaches the credential store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_secret_naming_a_credential_helper_is_refused() {
    let ty = "kubernetes.io/dockerconfigjson";
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    let good = r#"{"auths":{"ghcr.io":{"username":"u","password":"p"}}}"#;
    api.apply(Kind::Secret, secret("good", &[AUTH_LABEL], ty, &[(".dockerconfigjson", good.as_bytes())]));
    for (name, body) in [
        ("helper", r#"{"auths":{},"credHelpers":{"ghcr.io":"evil"}}"#),
        ("store", r#"{"auths":{"quay.io":{"username":"u","password":"p"}},"credsStore":"evil"}"#),
    ] {
        api.apply(Kind::Secret, secret(name, &[AUTH_LABEL], ty, &[(".dockerconfigjson", body.as_bytes())]));
    }
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    eventually("the credentials", async || !agent.creds.snapshot().secrets.is_empty()).await;
    for (name, key) in [("helper", "credHelpers"), ("store", "credsStore")] {
        eventually("an Event", async || !events_with(&api, "InvalidRegistryAuth", name).is_empty()).await;
        let ev = &events_with(&api, "InvalidRegistryAuth", name)[0];
        let msg = ev["message"].as_str().unwrap();
        assert!(msg.contains(key) && msg.contains("may carry only `auths`"), "{msg}");
    }
    let snap = agent.creds.snapshot();
    assert_eq!(snap.secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["good"]);
    assert!(snap.auths().all(|a| a.registry == "ghcr.io"), "nothing of the refused Secrets is used");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_stay_in_memory_and_out_of_logs() {
    let unique = format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos());
    let password = format!("pw-{unique}-first");
    let password2 = format!("pw-{unique}-second");
    let broken_marker = format!("broken-{unique}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ci:{password}"));
    let docker = format!(
        r#"{{"auths":{{"ghcr.io":{{"auth":"{basic}"}},"registry.example:5000":{{"username":"bot","password":"{password2}"}}}}}}"#
    );
    let ty = "kubernetes.io/dockerconfigjson";
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    api.apply(Kind::Secret, secret("regcred", &[AUTH_LABEL], ty, &[(".dockerconfigjson", docker.as_bytes())]));
    api.apply(Kind::Secret, secret("not-selected", &[], ty, &[(".dockerconfigjson", docker.as_bytes())]));
    api.apply(Kind::Secret, secret("opaque", &[AUTH_LABEL], "Opaque", &[("token", password.as_bytes())]));
    let bad = format!(r#"{{"auths": "{broken_marker}"}}"#);
    api.apply(Kind::Secret, secret("broken", &[AUTH_LABEL], ty, &[(".dockerconfigjson", bad.as_bytes())]));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());

    eventually("the credentials", async || !agent.creds.snapshot().secrets.is_empty()).await;
    eventually("the first generation", async || agent.generation().is_some()).await;
    let snap = agent.creds.snapshot();
    assert_eq!(snap.secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["regcred"]);
    assert_eq!(json(snap.secrets[0].raw.expose()), json(docker.as_bytes()), "the auths, nothing else");
    let auths: Vec<_> = snap.auths().collect();
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0].registry, "ghcr.io");
    assert!(
        matches!(&auths[0].credential, Credential::Basic { username, password: p } if username == "ci" && *p.expose() == password)
    );
    assert!(
        matches!(&auths[1].credential, Credential::Basic { username, password: p } if username == "bot" && *p.expose() == password2)
    );
    eventually("an Event for the broken Secret", async || {
        !events_with(&api, "InvalidRegistryAuth", "broken").is_empty()
    })
    .await;
    let ev = &events_with(&api, "InvalidRegistryAuth", "broken")[0];
    assert_eq!(ev["involvedObject"]["kind"], "Secret");
    assert!(!ev.to_string().contains(&broken_marker), "the Event quotes the Secret: {ev}");
    assert!(agent.counter("syncErrors") >= 1);

    // Rotation and deletion reach the store.
    let rotated = docker.replace(&password2, &format!("{password2}-rotated"));
    api.apply(Kind::Secret, secret("regcred", &[AUTH_LABEL], ty, &[(".dockerconfigjson", rotated.as_bytes())]));
    eventually("the rotation", async || {
        json(agent.creds.snapshot().secrets[0].raw.expose()) == json(rotated.as_bytes())
    })
    .await;
    api.delete(Kind::Secret, "regcred");
    eventually("the deletion", async || agent.creds.snapshot().secrets.is_empty()).await;

    // Nothing secret reached the disk or the logs.
    let needles = [password.as_str(), password2.as_str(), basic.as_str(), broken_marker.as_str(), "ci:pw-"];
    for (path, bytes) in all_files(state.path()) {
        for n in needles {
            assert!(!contains(&bytes, n), "{} holds a secret ({n})", path.display());
        }
    }
    let logged = logs().lock().unwrap().clone();
    assert!(contains(&logged, "registry credentials updated"), "the log capture works");
    for n in needles {
        assert!(!contains(&logged, n), "a secret ({n}) was logged");
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_current_generation() {
    let state = tempfile::tempdir().unwrap();
    let first = {
        let api = ApiServer::start().await;
        api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
        let agent = Agent::start(api.client(), state.path());
        eventually("the first generation", async || agent.generation().is_some()).await;
        let g = agent.generation().unwrap();
        agent.stop().await;
        g
    };

    // The API server is gone: the restarted agent serves the generation on disk.
    let dead = {
        let api = ApiServer::start().await;
        api.client()
    };
    let agent = Agent::start(dead, state.path());
    assert_eq!(agent.generation().as_deref(), Some(first.as_str()), "loaded before any sync");
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Deny));
    eventually("the sync error to be counted", async || agent.counter("syncErrors") >= 1).await;
    assert_eq!(agent.generation().as_deref(), Some(first.as_str()));
    agent.stop().await;

    // Back with an API server holding a newer config: it is applied, the old one kept as previous.
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(ALLOW_ALL));
    let agent = Agent::start(api.client(), state.path());
    eventually("the newer generation", async || agent.generation().is_some_and(|g| g != first)).await;
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Allow));
    assert!(agent.gens.dir_of(&first).is_dir(), "the previous generation is kept");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_after_410_and_survives_dropped_connections() {
    let api = ApiServer::start().await;
    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    eventually("the first generation", async || agent.generation().is_some()).await;
    eventually("the watch", async || api.watches(Kind::ConfigMap) >= 1).await;
    let lists = api.lists(Kind::ConfigMap);

    // 410 Gone on the open watch: the watcher relists.
    api.expire_watches();
    eventually("a relist after 410", async || api.lists(Kind::ConfigMap) > lists).await;
    api.apply(Kind::ConfigMap, main_cm(ALLOW_ALL));
    eventually("the change after the relist", async || {
        verdict(&agent.engine, "quay.io/acme/app:1").await == Some(Verdict::Allow)
    })
    .await;

    // The connection is cut while the object changes and history is compacted:
    // resuming from the old version gets 410, the relist brings the change.
    let lists = api.lists(Kind::ConfigMap);
    api.drop_watches_and_apply(Kind::ConfigMap, main_cm(&format!("mode = \"audit\"\n{DENY_ALL}")));
    eventually("the change after reconnecting", async || agent.engine.status().mode.as_deref() == Some("audit")).await;
    assert!(api.lists(Kind::ConfigMap) > lists, "the too-old resume forced a relist");
    assert!(api.gone_sent() >= 2, "one 410 on the open watch, one on the too-old resume");

    // A plain cut: the watcher resumes and keeps receiving changes.
    let watches = api.watches(Kind::ConfigMap);
    api.drop_watches();
    eventually("a new watch", async || api.watches(Kind::ConfigMap) > watches).await;
    api.apply(Kind::ConfigMap, main_cm(ALLOW_ALL));
    eventually("the change after the cut", async || agent.engine.status().mode.as_deref() == Some("enforce")).await;
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Allow));
    assert_eq!(agent.error(), "");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_at_start_answers_with_errors_until_one_is_synced() {
    let api = ApiServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(api.client(), state.path());
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, None, "an error, so the failure policy applies");
    eventually("the reason", async || agent.error().contains("holds pullgate.toml")).await;
    assert!(agent.error().contains(NS) && agent.error().contains("pullgate.io/config=true"), "{}", agent.error());
    assert_eq!(agent.generation(), None);
    assert!(api.events().is_empty(), "no ConfigMap to blame");

    api.apply(Kind::ConfigMap, main_cm(DENY_ALL));
    eventually("the config", async || verdict(&agent.engine, "quay.io/acme/app:1").await.is_some()).await;
    assert_eq!(verdict(&agent.engine, "quay.io/acme/app:1").await, Some(Verdict::Deny));
    assert_eq!(agent.error(), "");
    agent.stop().await;
}

/// The binary: `run --kubernetes` with KUBECONFIG pointing at the double,
/// `status` explaining the missing config, then serving once it is synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_binary_in_kubernetes_mode() {
    use std::io::{BufRead, BufReader, Read};
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("agent.sock");
    let bin = env!("CARGO_BIN_EXE_pullgate-agent");
    let mut child = std::process::Command::new(bin)
        .args(["run", "--kubernetes", "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("NODE_NAME", "node-7")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            l.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let status = || std::process::Command::new(bin).arg("status").arg("--socket").arg(&socket).output().unwrap();
    let ask = |reference: &str| -> Response {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let mut line = serde_json::to_vec(&pullgate_wire::Request::Verify(request(reference))).unwrap();
        line.push(b'\n');
        s.write_all(&line).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        serde_json::from_str(&out).unwrap()
    };
    let allowed = |r: Response| matches!(r, Response::Decision(d) if d.verdict == Verdict::Allow);
    eventually("the socket", async || socket.exists()).await;
    let root = nix::unistd::getuid().is_root();
    if root {
        eventually("status to explain the missing config", async || {
            let out = String::from_utf8_lossy(&status().stdout).into_owned();
            out.contains("NONE") && out.contains("holds pullgate.toml") && out.contains(NS)
        })
        .await;
        assert!(matches!(ask("quay.io/acme/app:1"), Response::Error { .. }), "no config: an error answer");
    }

    let uid = nix::unistd::getuid().as_raw();
    api.apply(Kind::ConfigMap, main_cm(&format!("allowedUids = [0, {uid}]\n{ALLOW_ALL}")));
    eventually("an allow decision", async || allowed(ask("quay.io/acme/app:1"))).await;
    let out = String::from_utf8_lossy(&status().stdout).into_owned();
    assert!(out.contains("syncErrors") && !out.contains("NONE"), "{out}");
    assert!(state.join("config/current/pullgate.toml").is_file());

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(c) = child.try_wait().unwrap() {
            break c;
        }
        assert!(Instant::now() < end, "the agent did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "exit {code:?}; log:\n{}", log.lock().unwrap());
    assert!(!socket.exists(), "the socket is removed");
    let log = log.lock().unwrap();
    assert!(log.contains("watching ConfigMaps and pull Secrets") && log.contains("config generation applied"), "{log}");
}

/// A registry double that challenges every request for Basic credentials,
/// so the agent looks credentials up (and would run a helper) for it.
fn challenging_registry() -> u16 {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// The binary, with a credential helper on its PATH that leaves a marker
/// file when run: a labelled pull Secret naming it never makes the agent run
/// it, while the node's own docker config naming it does (the control that
/// shows the marker would appear).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_secret_never_makes_the_agent_run_a_helper() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let marker = dir.path().join("helper-ran");
    let helper = bin_dir.join("docker-credential-pgmarker");
    let script = format!(
        "#!/bin/sh\ntouch '{}'\ncat >/dev/null\necho '{{\"ServerURL\":\"x\",\"Username\":\"u\",\"Secret\":\"p\"}}'\n",
        marker.display()
    );
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = challenging_registry();
    let host = format!("127.0.0.1:{port}");

    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let socket = dir.path().join("agent.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pullgate-agent"))
        .args(["run", "--kubernetes", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("NODE_NAME", "node-7")
        .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let key =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/cosign/keys/cosign.pub"))
            .unwrap();
    let policy = |auth: &str| {
        format!(
            "allowedUids = [0, {uid}]\n{auth}\n[[scopes]]\nname = \"signed\"\nimages = [\"{host}/**\"]\naction = \"verify\"\nverify = {{ require = [\"cosign\"] }}\n[registries.\"{host}\"]\ninsecure = true\n[sigstore]\nkeys = [\"cosign.pub\"]\nrequireTlog = false\n"
        )
    };
    let main = |toml: String| {
        configmap("pullgate-main", &[CONFIG_LABEL], &[], &[("pullgate.toml", &toml), ("cosign.pub", &key)])
    };
    api.apply(Kind::ConfigMap, main(policy("")));
    let evil = format!(r#"{{"auths":{{}},"credHelpers":{{"{host}":"pgmarker"}},"credsStore":"pgmarker"}}"#);
    let ty = "kubernetes.io/dockerconfigjson";
    api.apply(Kind::Secret, secret("evil", &[AUTH_LABEL], ty, &[(".dockerconfigjson", evil.as_bytes())]));

    let ask = |reference: &str| -> Option<Response> {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).ok()?;
        let mut line = serde_json::to_vec(&pullgate_wire::Request::Verify(request(reference))).unwrap();
        line.push(b'\n');
        s.write_all(&line).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        serde_json::from_str(&out).ok()
    };
    let image = format!("{host}/acme/app:1");
    let decided = || matches!(ask(&image), Some(Response::Decision(_)));
    eventually("the Secret refused", async || !events_with(&api, "InvalidRegistryAuth", "evil").is_empty()).await;
    eventually("a decision", async || decided()).await;
    // The decision was reached through the registry's challenge, so a
    // credential was looked up: the Secret's helper would have run by now.
    let Some(Response::Decision(d)) = ask(&image) else { panic!("no decision") };
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert!(!marker.exists(), "a pull Secret made the agent run a credential helper");

    // Control: the node's own docker config may name the helper, and it runs.
    let docker_config = dir.path().join("docker-config.json");
    std::fs::write(&docker_config, format!(r#"{{"credHelpers":{{"{host}":"pgmarker"}}}}"#)).unwrap();
    api.apply(Kind::ConfigMap, main(policy(&format!("[auth]\ndockerConfig = \"{}\"", docker_config.display()))));
    eventually("the node's helper to run", async || {
        let _ = ask(&image);
        marker.exists()
    })
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = child.wait();
}
