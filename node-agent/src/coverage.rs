//! Node coverage: does every pull on this node reach pullgate?
//!
//! The same checks as `pullgate-agent doctor` (see `pullgate_containerd::probe`), run by
//! the daemon at start, every `interval`, and soon after containerd's config, its
//! `bin_dir` or verifier.json change. The verdict goes to the gauge
//! `pullgate_node_coverage`, to `status`, to a WARN line when coverage is lost (INFO
//! when it comes back) and, in Kubernetes mode, to an Event on the agent's pod.

use crate::engine::Engine;
use crate::metrics::Metrics;
use notify::{RecursiveMode, Watcher};
use pullgate_containerd::checks::{Finding, Severity};
use pullgate_containerd::probe::{Inputs, Observation, observe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often coverage is re-checked without a change.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Longest one coverage check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long changes are gathered before re-checking.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Where the Event about lost coverage goes (Kubernetes mode).
#[derive(Clone)]
pub struct EventTarget {
    /// A client for the API server.
    pub client: kube::Client,
    /// The agent pod's namespace.
    pub namespace: String,
    /// The agent pod's name.
    pub pod: String,
    /// The node (reported as the Event's source host).
    pub node: String,
}

/// The coverage task's settings.
#[derive(Clone)]
pub struct Options {
    /// What to look at.
    pub inputs: Inputs,
    /// Re-check period.
    pub interval: Duration,
    /// Kubernetes Events, when running there.
    pub events: Option<EventTarget>,
}

/// The one-line verdict: `covered`, or `bypassed: CHECK: problem`.
pub fn verdict(obs: &Observation) -> (bool, &'static str, String) {
    match obs.findings.iter().find(|f| f.severity == Severity::Error) {
        None => (true, "ok", "covered".to_string()),
        Some(f) => {
            let n = obs.findings.iter().filter(|f| f.severity == Severity::Error).count();
            let more = if n > 1 { format!(" (and {} more; run pullgate-agent doctor)", n - 1) } else { String::new() };
            (false, f.check, format!("bypassed: {}: {}{more}", f.check, describe(f)))
        }
    }
}

fn describe(f: &Finding) -> String {
    match &f.key {
        Some(k) => format!("{k}: {}", f.problem),
        None => f.problem.clone(),
    }
}

/// Runs one check and publishes it; returns the verdict line.
pub async fn check_once(opts: &Options, engine: &Engine, metrics: &Metrics, last: &mut Option<String>) -> String {
    // The probe runs processes and reads files: on a blocking thread, bounded, so it can
    // never hold up the runtime that serves the socket.
    let inputs = opts.inputs.clone();
    let handle = tokio::runtime::Handle::current();
    let probe = tokio::task::spawn_blocking(move || handle.block_on(observe(&inputs)));
    let obs = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(obs)) => obs,
        _ => {
            let line = format!("bypassed: coverage-check: the node checks did not finish within {CHECK_TIMEOUT:?}");
            metrics.set_coverage(false, "coverage-check");
            engine.set_coverage(line.clone());
            if last.as_deref() != Some(line.as_str()) {
                tracing::warn!("node coverage unknown: {line}");
                *last = Some(line.clone());
            }
            return line;
        }
    };
    let (covered, reason, line) = verdict(&obs);
    metrics.set_coverage(covered, reason);
    engine.set_coverage(line.clone());
    if last.as_deref() != Some(line.as_str()) {
        if covered {
            tracing::info!(config = %opts.inputs.containerd_config.display(), "node coverage: every pull reaches pullgate");
        } else {
            tracing::warn!(reason, config = %opts.inputs.containerd_config.display(), "node coverage lost: {line}");
            if let Some(t) = &opts.events {
                post_event(t.clone(), "NodeNotCovered", line.clone());
            }
        }
        *last = Some(line.clone());
    }
    line
}

/// Checks until `shutdown` turns true (or its sender is dropped).
pub async fn run(opts: Options, engine: Arc<Engine>, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let _watcher = watch_paths(&opts, tx);
    let mut last = None;
    loop {
        check_once(&opts, &engine, &metrics, &mut last).await;
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            Some(()) = rx.recv() => {
                // Let a burst of writes (an editor, the installer) settle.
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Watches containerd's config directory, bin_dir and verifier.json's directory
/// (those that exist); `None` when nothing can be watched (the timer still runs).
fn watch_paths(opts: &Options, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let root = &opts.inputs.host_root;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in [&opts.inputs.containerd_config, &opts.inputs.verifier_config] {
        if let Some(d) = root.resolve(p).parent() {
            dirs.push(d.to_path_buf());
        }
    }
    // bin_dir too: removing the verifier (break-glass) is seen at once.
    if let Ok(l) = pullgate_containerd::load::load(root, &opts.inputs.containerd_config) {
        dirs.push(root.resolve(&pullgate_containerd::model::Effective::from_merged(&l.merged).bindir.bin_dir));
    }
    let handler = move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.try_send(());
        }
    };
    let mut w = notify::recommended_watcher(handler).ok()?;
    let mut watching = 0;
    for d in dirs.iter().filter(|d| d.is_dir()) {
        if w.watch(d, RecursiveMode::Recursive).is_ok() {
            watching += 1;
        }
    }
    (watching > 0).then_some(w)
}

/// Posts a Warning Event on the agent's pod, in the background, within 10 s.
pub(crate) fn post_event(t: EventTarget, reason: &'static str, message: String) {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    tokio::spawn(async move {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let message: String = message.chars().take(1024).collect();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{}.{suffix:x}", t.pod, reason.to_ascii_lowercase())),
                namespace: Some(t.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(t.pod.clone()),
                namespace: Some(t.namespace.clone()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some("Warning".into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource { component: Some("pullgate-agent".into()), host: Some(t.node.clone()) }),
            reporting_component: Some("pullgate-agent".into()),
            reporting_instance: Some(t.node.clone()),
            action: Some("Check".into()),
            ..Event::default()
        };
        let api: kube::Api<Event> = kube::Api::namespaced(t.client, &t.namespace);
        match tokio::time::timeout(Duration::from_secs(10), api.create(&kube::api::PostParams::default(), &event)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(pod = %t.pod, error = %e, "cannot post the coverage Event"),
            Err(_) => tracing::warn!(pod = %t.pod, "posting the coverage Event timed out"),
        }
    });
}

/// Doctor's text output: the facts seen, then one block per finding.
pub fn render(obs: &Observation, agent: &[(String, String)], findings: &[Finding]) -> String {
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let mut s = if errors == 0 {
        "pullgate doctor: COVERED: every pull on this node reaches pullgate\n".to_string()
    } else {
        format!("pullgate doctor: NOT COVERED: {errors} problem(s) let pulls bypass pullgate\n")
    };
    let mut facts = vec![
        ("containerd".to_string(), obs.containerd_version.clone().unwrap_or_else(|| "unknown".into())),
        ("config".to_string(), obs.config_source.clone()),
        (
            "bin_dir".to_string(),
            format!(
                "{} (max_verifiers {}, per_verifier_timeout {})",
                obs.bin_dir.display(),
                obs.max_verifiers,
                obs.per_verifier_timeout
            ),
        ),
        (
            "verifier".to_string(),
            format!("{}: {}", obs.verifier_name, obs.verifier_version.as_deref().unwrap_or("not found")),
        ),
        (
            "verifier.json".to_string(),
            match (obs.verifier_deadline_ms, &obs.verifier_failure_policy) {
                (Some(d), Some(p)) => format!("deadline {d} ms, failure policy {p}"),
                _ => "unusable".into(),
            },
        ),
    ];
    facts.extend(agent.iter().cloned());
    for (k, v) in facts {
        s.push_str(&format!("{k:<14}{v}\n"));
    }
    for f in findings {
        let sev = match f.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
        };
        s.push_str(&format!("{sev} {}", f.check));
        if let Some(k) = &f.key {
            s.push_str(&format!("  {k}"));
        }
        if let Some(file) = &f.file {
            s.push_str(&format!("  ({})", file.display()));
        }
        s.push_str(&format!("\n    {}\n    fix: {}\n", f.problem, f.fix));
    }
    s
}
