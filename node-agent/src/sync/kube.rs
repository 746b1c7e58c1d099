//! Kubernetes mode: labelled ConfigMaps become config generations, labelled
//! pull Secrets become in-memory registry credentials.
//!
//! Two kube-runtime watchers (list, then watch from the list's resource
//! version, relist on `410 Gone`, exponential backoff on errors) feed
//! reflector stores in the agent's namespace. After the first complete list,
//! every change — debounced so one `kubectl apply` of several objects makes
//! one generation — turns the ConfigMaps into the desired file set:
//!
//! * a ConfigMap's keys (`data` and `binaryData`) become files in the
//!   directory its `pullgate.io/path` annotation names (the root by default);
//! * keys and paths must be safe names ([`super::files`]); two ConfigMaps
//!   claiming one path is an error, never an override;
//! * one owner per directory: two ConfigMaps naming the same directory are
//!   both refused (see [`desired_files`]);
//! * pull Secrets may carry only `auths`: a Secret naming `credsStore` or
//!   `credHelpers` is refused, so no Secret author chooses a program the
//!   agent runs (helpers come only from the node's own docker config).
//!
//! The set is written as a new generation ([`super::generation`]),
//! validated with the same loader the engine uses, and only then switched
//! to; the engine reloads from the `current` symlink. A set that is unsafe
//! or invalid is not applied: the last good generation stays in force, and
//! the failure is logged, counted, shown by `status`, and posted as a core/v1
//! Event (reason `InvalidConfig`) on the ConfigMaps at fault — or the one
//! carrying `pullgate.toml` when no file can be blamed. Deleting every
//! ConfigMap, or the one with `pullgate.toml`, is such an invalid set: the
//! node keeps its last policy rather than running without one.

use super::credentials::{
    self, CredentialSnapshot, DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, RegistryCredentials,
};
use super::files::{self, FileSet, FileSetError};
use super::generation::{GenerationError, Generations};
use crate::config::{self, CONFIG_FILE, ConfigError};
use crate::engine::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as tokio_watch;
use tokio::time::Instant;

/// Default label selector of config ConfigMaps.
pub const DEFAULT_CONFIG_SELECTOR: &str = "pullgate.io/config=true";
/// Default label selector of registry-auth Secrets.
pub const DEFAULT_AUTH_SELECTOR: &str = "pullgate.io/registry-auth=true";
/// Annotation naming the directory a ConfigMap's keys go to.
pub const PATH_ANNOTATION: &str = "pullgate.io/path";
/// Event reason for a rejected config.
pub const REASON_INVALID_CONFIG: &str = "InvalidConfig";
/// Event reason for an unusable pull Secret.
pub const REASON_INVALID_AUTH: &str = "InvalidRegistryAuth";
/// Component name in Events.
pub const COMPONENT: &str = "pullgate-agent";
/// How long changes are gathered before a generation is built.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);
/// Deadline of each request the sync makes itself (Events).
pub const API_DEADLINE: Duration = Duration::from_secs(10);
/// Longest Event message sent.
pub const MAX_EVENT_MESSAGE: usize = 1024;

/// Where and what to sync.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The agent's namespace.
    pub namespace: String,
    /// Label selector of config ConfigMaps.
    pub config_selector: String,
    /// Label selector of registry-auth Secrets.
    pub auth_selector: String,
    /// The state directory; generations go to `<state_dir>/config`.
    pub state_dir: PathBuf,
    /// Who reports Events (the node name, or the pod's host name).
    pub instance: String,
    /// How long changes are gathered before a generation is built.
    pub debounce: Duration,
}

impl KubeOptions {
    /// Options with the default selectors and debounce.
    pub fn new(namespace: String, state_dir: PathBuf, instance: String) -> KubeOptions {
        KubeOptions {
            namespace,
            config_selector: DEFAULT_CONFIG_SELECTOR.to_string(),
            auth_selector: DEFAULT_AUTH_SELECTOR.to_string(),
            state_dir,
            instance,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// One reason a set of ConfigMaps cannot become a generation, and the
/// ConfigMaps to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong and what to do.
    pub message: String,
    /// Names of the ConfigMaps at fault (empty when none can be named).
    pub configmaps: Vec<String>,
}

/// The file set the ConfigMaps describe, and which ConfigMap owns each file.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The files.
    pub files: FileSet,
    /// Relative path → name of the ConfigMap it came from.
    pub owners: BTreeMap<String, String>,
}

/// Turns ConfigMaps into the desired file set, or every problem found.
///
/// One owner per directory: every directory of the config tree (the root
/// included) receives files from at most one ConfigMap. When two or more
/// ConfigMaps with usable keys name the same directory, all of them are
/// refused and reported and none of their files is written, so a second
/// ConfigMap can never add a file (a CA certificate) to a directory another
/// one fills, and no name wins by sorting first.
pub fn desired_files(cms: &[Arc<ConfigMap>]) -> Result<Desired, Vec<Problem>> {
    let mut sorted: Vec<&ConfigMap> = cms.iter().map(|c| c.as_ref()).collect();
    sorted.sort_by_key(|c| c.name_any());
    let mut out = Desired { files: FileSet::new(), owners: BTreeMap::new() };
    let mut problems = Vec::new();
    let mut placed: Vec<(&ConfigMap, String)> = Vec::new();
    for cm in sorted {
        let name = cm.name_any();
        let dir = cm.annotations().get(PATH_ANNOTATION).map(String::as_str).unwrap_or("");
        let dir = dir.strip_suffix('/').unwrap_or(dir);
        match files::check_dir(dir) {
            Ok(()) => placed.push((cm, dir.to_string())),
            Err(e) => problems.push(Problem {
                message: format!("ConfigMap {name}: annotation {PATH_ANNOTATION}={dir:?}: {e}"),
                configmaps: vec![name],
            }),
        }
    }
    let refused = shared_directories(&placed, &mut problems);
    for (cm, dir) in placed {
        let name = cm.name_any();
        if refused.contains(&name) {
            continue;
        }
        let blame = |message: String| Problem { message, configmaps: vec![name.clone()] };
        let text = cm.data.iter().flatten().map(|(k, v)| (k, v.as_bytes()));
        let binary = cm.binary_data.iter().flatten().map(|(k, v)| (k, v.0.as_slice()));
        for (key, bytes) in text.chain(binary) {
            if let Err(e) = files::check_name(key) {
                problems.push(blame(format!("ConfigMap {name}: key {key:?}: {e}")));
                continue;
            }
            let path = files::join(&dir, key);
            match out.files.insert(&path, bytes.to_vec()) {
                Ok(()) => {
                    out.owners.insert(path, name.clone());
                }
                Err(FileSetError::Conflict { path, existing }) => {
                    let other = out.owners.get(&existing).cloned().unwrap_or_default();
                    problems.push(clash(&name, other, &path, &existing));
                }
                Err(e) => problems.push(blame(format!("ConfigMap {name}: {e}"))),
            }
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The ConfigMaps refused because another one with usable keys names the
/// same directory; one problem per shared directory, naming all of them.
fn shared_directories(placed: &[(&ConfigMap, String)], problems: &mut Vec<Problem>) -> BTreeSet<String> {
    let mut by_dir: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (cm, dir) in placed {
        let keys = cm.data.iter().flat_map(|d| d.keys()).chain(cm.binary_data.iter().flat_map(|d| d.keys()));
        // A ConfigMap with no usable key writes nothing and owns nothing
        // (its bad keys are reported on their own).
        if keys.into_iter().any(|k| files::check_name(k).is_ok()) {
            by_dir.entry(dir.as_str()).or_default().push(cm.name_any());
        }
    }
    let mut refused = BTreeSet::new();
    for (dir, names) in by_dir.into_iter().filter(|(_, n)| n.len() > 1) {
        let place = if dir.is_empty() { "the config root".to_string() } else { format!("directory {dir:?}") };
        problems.push(Problem {
            message: format!(
                "ConfigMaps {} all write into {place}; a directory belongs to exactly one ConfigMap, so none of them is applied: merge them into one ConfigMap or give each its own {PATH_ANNOTATION}",
                names.join(", ")
            ),
            configmaps: names.clone(),
        });
        refused.extend(names);
    }
    refused
}

/// Two ConfigMaps (or one, twice) claiming a path or a file/directory clash.
fn clash(name: &str, other: String, path: &str, existing: &str) -> Problem {
    let message = if other == name {
        format!("ConfigMap {name} claims {path:?} twice (in data and binaryData, or as file and directory)")
    } else {
        format!(
            "ConfigMaps {other} and {name} both claim {path:?} (clashing with {existing:?}); give one of them another {PATH_ANNOTATION}"
        )
    };
    let mut configmaps = vec![other, name.to_string()];
    configmaps.dedup();
    Problem { message, configmaps }
}

/// The ConfigMaps to blame for a config that failed validation: the owners
/// of the files its issues name, or else the one carrying `pullgate.toml`.
pub fn blame(err: &ConfigError, owners: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = BTreeSet::new();
    if let ConfigError::Invalid { issues, .. } = err {
        names.extend(issues.iter().filter_map(|i| owners.get(&i.file).cloned()));
    }
    if names.is_empty()
        && let Some(main) = owners.get(CONFIG_FILE)
    {
        names.insert(main.clone());
    }
    names.into_iter().collect()
}

/// Every usable pull Secret, and the problems of the others.
pub fn credentials_from(secrets: &[Arc<Secret>]) -> (CredentialSnapshot, Vec<(String, credentials::CredentialError)>) {
    let mut snapshot = CredentialSnapshot::default();
    let mut problems = Vec::new();
    let mut sorted: Vec<&Secret> = secrets.iter().map(|s| s.as_ref()).collect();
    sorted.sort_by_key(|s| s.name_any());
    for s in sorted {
        let name = s.name_any();
        if s.type_.as_deref() != Some(DOCKER_CONFIG_JSON_TYPE) {
            tracing::debug!(secret = %name, "labelled Secret is not of type {DOCKER_CONFIG_JSON_TYPE}; ignored");
            continue;
        }
        let Some(raw) = s.data.as_ref().and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY)) else {
            problems.push((name.clone(), credentials::CredentialError::MissingKey { secret: name }));
            continue;
        };
        match credentials::parse_docker_config(&name, raw.0.clone()) {
            Ok(p) => snapshot.secrets.push(p),
            Err(e) => problems.push((name, e)),
        }
    }
    (snapshot, problems)
}

/// A watcher error described without any object content (a Secret's data
/// could otherwise end up in a log line through a deserialisation message).
fn describe(e: &watcher::Error) -> String {
    fn client(e: &kube::Error) -> String {
        match e {
            kube::Error::Api(s) => format!("the API server answered {} {}: {}", s.code, s.reason, s.message),
            kube::Error::SerdeError(_) => "the API server's answer could not be decoded".to_string(),
            other => other.to_string(),
        }
    }
    match e {
        watcher::Error::InitialListFailed(c) => format!("listing failed: {}", client(c)),
        watcher::Error::WatchStartFailed(c) => format!("starting the watch failed: {}", client(c)),
        watcher::Error::WatchFailed(c) => format!("the watch failed: {}", client(c)),
        watcher::Error::WatchError(s) => format!("the watch ended with {} {}: {}", s.code, s.reason, s.message),
        watcher::Error::NoResourceVersion => "the API server sent no resourceVersion".to_string(),
    }
}

fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// What one attempt to apply the desired set did.
enum Applied {
    Unchanged(String),
    Switched { id: String, warnings: Vec<config::Issue> },
    Invalid { id: String, error: ConfigError },
    Failed(GenerationError),
}

/// Writes, validates and switches to `files` (blocking filesystem work).
fn apply_files(gens: &Generations, files: &FileSet, engine: &Engine) -> Applied {
    let id = files.generation_id();
    match gens.current_id() {
        Err(e) => return Applied::Failed(e),
        Ok(Some(cur)) if cur == id => {
            // Already on disk: make sure the engine is on it too (after a
            // restart with an unreadable generation, or once a rejected
            // newer config has been reverted).
            let st = engine.status();
            if st.generation.as_deref() != Some(id.as_str()) || st.config_error.is_some() {
                if let Err(e) = engine.reload() {
                    return Applied::Invalid { id, error: e };
                }
            }
            return Applied::Unchanged(id);
        }
        Ok(_) => {}
    }
    let staged = match gens.stage(files) {
        Ok(s) => s,
        Err(e) => return Applied::Failed(e),
    };
    let loaded = match config::load_dir(staged.path()) {
        Ok(l) => l,
        Err(error) => return Applied::Invalid { id, error },
    };
    if let Err(e) = gens.commit(staged) {
        return Applied::Failed(e);
    }
    match engine.reload() {
        Ok(_) => Applied::Switched { id, warnings: loaded.warnings },
        Err(error) => Applied::Invalid { id, error },
    }
}

/// The sync's state between events.
struct Sync {
    opts: KubeOptions,
    engine: Arc<Engine>,
    creds: RegistryCredentials,
    gens: Generations,
    events: Api<Event>,
    /// The last rejection reported, so a relist of the same bad set does not
    /// post the same Events again.
    last_rejection: Option<String>,
    /// (Secret name, resourceVersion) of the Secret problems already reported.
    reported_secrets: BTreeSet<(String, String)>,
}

impl Sync {
    async fn apply_configmaps(&mut self, store: &Store<ConfigMap>) {
        let cms = store.state();
        let refs: BTreeMap<String, ObjectReference> =
            cms.iter().map(|c| (c.name_any(), object_ref(c.as_ref()))).collect();
        let desired = match desired_files(&cms) {
            Ok(d) => d,
            Err(problems) => {
                let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
                let key = format!("problems:{message}");
                let mut per_cm: BTreeMap<String, Vec<&str>> = BTreeMap::new();
                for p in &problems {
                    for c in &p.configmaps {
                        per_cm.entry(c.clone()).or_default().push(&p.message);
                    }
                }
                let targets = per_cm.into_iter().map(|(c, m)| (c, m.join("; "))).collect();
                self.reject(key, format!("config from ConfigMaps rejected: {message}"), targets, &refs);
                return;
            }
        };
        if !desired.files.is_empty() && desired.files.get(CONFIG_FILE).is_none() {
            tracing::debug!("no selected ConfigMap carries {CONFIG_FILE}");
        }
        let (gens, engine, files) = (self.gens.clone(), self.engine.clone(), desired.files.clone());
        let applied = match tokio::task::spawn_blocking(move || apply_files(&gens, &files, &engine)).await {
            Ok(a) => a,
            Err(e) => {
                self.engine.count_sync_error();
                tracing::error!(error = %e, "writing the config generation panicked");
                return;
            }
        };
        match applied {
            Applied::Unchanged(id) => {
                self.last_rejection = None;
                tracing::debug!(generation = %id, "config unchanged");
            }
            Applied::Switched { id, warnings } => {
                self.last_rejection = None;
                for w in warnings {
                    tracing::warn!(generation = %id, "{w}");
                }
                tracing::info!(generation = %id, files = desired.files.len(), "config generation applied");
            }
            Applied::Invalid { id, error } => {
                let message = if desired.files.is_empty() {
                    format!(
                        "no ConfigMap labelled {} in namespace {} holds {CONFIG_FILE}; the last good config stays",
                        self.opts.config_selector, self.opts.namespace
                    )
                } else if desired.files.get(CONFIG_FILE).is_none() {
                    format!(
                        "no ConfigMap labelled {} in namespace {} holds {CONFIG_FILE} at its root (no {PATH_ANNOTATION} annotation); the last good config stays",
                        self.opts.config_selector, self.opts.namespace
                    )
                } else {
                    format!("config generation {id} rejected, the last good config stays: {error}")
                };
                let blamed = blame(&error, &desired.owners);
                let targets = blamed.into_iter().map(|c| (c, message.clone())).collect();
                self.reject(format!("generation:{id}"), message, targets, &refs);
            }
            Applied::Failed(e) => {
                self.engine.count_sync_error();
                tracing::error!(error = %e, "cannot write the config generation; the last good config stays");
            }
        }
    }

    fn reject(
        &mut self,
        key: String,
        message: String,
        targets: Vec<(String, String)>,
        refs: &BTreeMap<String, ObjectReference>,
    ) {
        if self.last_rejection.as_deref() == Some(key.as_str()) {
            tracing::debug!("the same rejected config was seen again");
            return;
        }
        self.last_rejection = Some(key);
        tracing::error!(configmaps = ?targets.iter().map(|t| &t.0).collect::<Vec<_>>(), "{message}");
        self.engine.reject(message);
        for (name, msg) in targets {
            if let Some(r) = refs.get(&name) {
                self.post_event(r.clone(), REASON_INVALID_CONFIG, msg);
            }
        }
    }

    fn apply_secrets(&mut self, store: &Store<Secret>) {
        let secrets = store.state();
        let versions: BTreeMap<String, (String, ObjectReference)> = secrets
            .iter()
            .map(|s| (s.name_any(), (s.resource_version().unwrap_or_default(), object_ref(s.as_ref()))))
            .collect();
        let (snapshot, problems) = credentials_from(&secrets);
        let mut reported = BTreeSet::new();
        for (name, err) in problems {
            let Some((rv, r)) = versions.get(&name) else { continue };
            let key = (name.clone(), rv.clone());
            if !self.reported_secrets.contains(&key) {
                self.engine.count_sync_error();
                tracing::error!(secret = %name, "pull Secret not used: {err}");
                self.post_event(r.clone(), REASON_INVALID_AUTH, err.to_string());
            }
            reported.insert(key);
        }
        self.reported_secrets = reported;
        let names: Vec<String> = snapshot.secrets.iter().map(|s| s.name.clone()).collect();
        let registries = snapshot.auths().count();
        if self.creds.replace(snapshot) {
            tracing::info!(secrets = ?names, registries, "registry credentials updated");
        }
    }

    /// Posts a Warning Event in the background, within [`API_DEADLINE`].
    fn post_event(&self, target: ObjectReference, reason: &'static str, message: String) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let base = truncate(target.name.as_deref().unwrap_or("pullgate"), 200);
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{suffix:x}")),
                namespace: Some(self.opts.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: target,
            reason: Some(reason.to_string()),
            message: Some(truncate(&message, MAX_EVENT_MESSAGE)),
            type_: Some("Warning".to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(COMPONENT.to_string()),
                host: Some(self.opts.instance.clone()),
            }),
            reporting_component: Some(COMPONENT.to_string()),
            reporting_instance: Some(self.opts.instance.clone()),
            action: Some("Sync".to_string()),
            ..Event::default()
        };
        let api = self.events.clone();
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let object = event.involved_object.name.clone().unwrap_or_default();
            match tokio::time::timeout(API_DEADLINE, api.create(&PostParams::default(), &event)).await {
                Ok(Ok(_)) => tracing::debug!(object = %object, reason, "event posted"),
                Ok(Err(e)) => {
                    engine.count_sync_error();
                    tracing::warn!(object = %object, reason, error = %e, "cannot post the Kubernetes Event");
                }
                Err(_) => {
                    engine.count_sync_error();
                    tracing::warn!(object = %object, reason, "posting the Kubernetes Event timed out");
                }
            }
        });
    }
}

/// Runs the Kubernetes sync until `shutdown` turns true (or its sender is
/// dropped). Never returns early on API errors: the watchers back off and
/// retry, and the engine keeps the config it has.
pub async fn run(
    client: Client,
    opts: KubeOptions,
    engine: Arc<Engine>,
    creds: RegistryCredentials,
    mut shutdown: tokio_watch::Receiver<bool>,
) {
    let ns = opts.namespace.clone();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (cm_store, cm_writer) = reflector::store();
    let (secret_store, secret_writer) = reflector::store();
    let cm_stream =
        reflector::reflector(cm_writer, watcher(cm_api, watcher::Config::default().labels(&opts.config_selector)))
            .default_backoff();
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(secret_api, watcher::Config::default().labels(&opts.auth_selector)),
    )
    .default_backoff();
    let mut cm_stream = std::pin::pin!(cm_stream);
    let mut secret_stream = std::pin::pin!(secret_stream);
    let debounce = opts.debounce;
    tracing::info!(
        namespace = %ns,
        config_selector = %opts.config_selector,
        auth_selector = %opts.auth_selector,
        "watching ConfigMaps and pull Secrets"
    );
    let mut sync = Sync {
        gens: Generations::new(&opts.state_dir),
        events: Api::namespaced(client, &ns),
        opts,
        engine,
        creds,
        last_rejection: None,
        reported_secrets: BTreeSet::new(),
    };
    let (mut cm_ready, mut secrets_ready) = (false, false);
    let mut cm_due: Option<Instant> = None;
    let mut secrets_due: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(3600);
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            ev = cm_stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => {
                    cm_ready = true;
                    cm_due.get_or_insert_with(|| Instant::now() + debounce);
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) if cm_ready => {
                    cm_due.get_or_insert_with(|| Instant::now() + debounce);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    sync.engine.count_sync_error();
                    tracing::warn!(kind = "ConfigMap", namespace = %ns, "{}; retrying with backoff", describe(&e));
                }
                None => break,
            },
            ev = secret_stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => {
                    secrets_ready = true;
                    secrets_due.get_or_insert_with(|| Instant::now() + debounce);
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) if secrets_ready => {
                    secrets_due.get_or_insert_with(|| Instant::now() + debounce);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    sync.engine.count_sync_error();
                    tracing::warn!(kind = "Secret", namespace = %ns, "{}; retrying with backoff", describe(&e));
                }
                None => break,
            },
            _ = tokio::time::sleep_until(cm_due.unwrap_or_else(far)), if cm_due.is_some() => {
                cm_due = None;
                sync.apply_configmaps(&cm_store).await;
            }
            _ = tokio::time::sleep_until(secrets_due.unwrap_or_else(far)), if secrets_due.is_some() => {
                secrets_due = None;
                sync.apply_secrets(&secret_store);
            }
        }
    }
    tracing::info!("Kubernetes sync stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn cm(name: &str, path: Option<&str>, data: &[(&str, &str)]) -> Arc<ConfigMap> {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        if let Some(p) = path {
            c.metadata.annotations = Some(BTreeMap::from([(PATH_ANNOTATION.to_string(), p.to_string())]));
        }
        c.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Arc::new(c)
    }

    #[test]
    fn configmaps_become_files_under_their_paths() {
        let mut bin = (*cm("trust", Some("truststore/x509/ca/acme"), &[("root.pem", "PEM")])).clone();
        bin.binary_data = Some(BTreeMap::from([("root.der".to_string(), ByteString(vec![0, 1, 2]))]));
        let d = desired_files(&[
            cm("main", None, &[("pullgate.toml", "mode = \"audit\"")]),
            Arc::new(bin),
            cm("rego", Some("policy/"), &[("a.rego", "package a")]),
        ])
        .unwrap();
        let paths: Vec<&str> = d.files.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            ["policy/a.rego", "pullgate.toml", "truststore/x509/ca/acme/root.der", "truststore/x509/ca/acme/root.pem"]
        );
        assert_eq!(d.files.get("truststore/x509/ca/acme/root.der"), Some(&[0u8, 1, 2][..]));
        assert_eq!(d.owners["truststore/x509/ca/acme/root.pem"], "trust");
        assert_eq!(d.owners["pullgate.toml"], "main");
    }

    #[test]
    fn unsafe_keys_and_paths_are_problems_naming_the_configmap() {
        let p = desired_files(&[
            cm("keys", None, &[("../escape", "x"), (".hidden", "x"), ("ok", "x"), ("a\0b", "x")]),
            cm("abs", Some("/etc"), &[("passwd", "x")]),
            cm("up", Some("truststore/../../etc"), &[("passwd", "x")]),
            cm("dot", Some("./x"), &[("f", "x")]),
            cm("empty", Some("a//b"), &[("f", "x")]),
        ])
        .unwrap_err();
        assert_eq!(p.len(), 7, "{p:#?}");
        for (needle, owner) in [
            ("\"../escape\"", "keys"),
            ("\".hidden\"", "keys"),
            ("a\\0b", "keys"),
            ("\"/etc\"", "abs"),
            ("truststore/../../etc", "up"),
            ("./x", "dot"),
            ("a//b", "empty"),
        ] {
            let hit = p.iter().find(|x| x.message.contains(needle)).unwrap_or_else(|| panic!("{needle}: {p:#?}"));
            assert_eq!(hit.configmaps, vec![owner.to_string()]);
        }
    }

    #[test]
    fn a_file_where_another_configmap_needs_a_directory_is_a_problem_for_both() {
        let p = desired_files(&[
            cm("main", None, &[("pullgate.toml", "x")]),
            cm("c-file", Some("trust"), &[("x509", "z")]),
            cm("d-dir", Some("trust/x509"), &[("ca.pem", "w")]),
        ])
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].configmaps, ["c-file", "d-dir"]);
        assert!(p[0].message.contains("clashing with \"trust/x509\""), "{}", p[0].message);
    }

    #[test]
    fn a_directory_belongs_to_one_configmap_whatever_the_names() {
        // A second ConfigMap adding a CA to another's trust store directory,
        // with a name sorting before and after the owner's.
        let store = "notation/truststore/x509/ca/acme";
        for attacker in ["aaa-evil", "zzz-evil"] {
            let p = desired_files(&[
                cm("main", None, &[("pullgate.toml", "x")]),
                cm("trust-acme", Some(store), &[("root.pem", "A")]),
                cm(attacker, Some(&format!("{store}/")), &[("evil.pem", "E")]),
            ])
            .unwrap_err();
            assert_eq!(p.len(), 1, "{p:#?}");
            let mut both = vec!["trust-acme".to_string(), attacker.to_string()];
            both.sort();
            assert_eq!(p[0].configmaps, both);
            assert!(p[0].message.contains(&format!("directory {store:?}")), "{}", p[0].message);
        }
        // The root is a directory like any other.
        let p = desired_files(&[cm("a-main", None, &[("pullgate.toml", "x")]), cm("b-extra", None, &[("x.pem", "y")])])
            .unwrap_err();
        assert_eq!(p[0].configmaps, ["a-main", "b-extra"]);
        assert!(p[0].message.contains("the config root"), "{}", p[0].message);
        // A ConfigMap whose keys are all unusable writes nothing and owns nothing.
        let p = desired_files(&[cm("main", None, &[("pullgate.toml", "x")]), cm("bad", None, &[("../x", "y")])])
            .unwrap_err();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].configmaps, ["bad"]);
        // A directory below another ConfigMap's directory is a directory of its own.
        let d = desired_files(&[
            cm("main", None, &[("pullgate.toml", "x")]),
            cm("policy", Some("notation"), &[("trustpolicy.json", "{}")]),
            cm("trust-acme", Some(store), &[("root.pem", "A")]),
        ])
        .unwrap();
        assert_eq!(d.owners[&format!("{store}/root.pem")], "trust-acme");
        assert_eq!(d.owners["notation/trustpolicy.json"], "policy");
    }

    #[test]
    fn blame_follows_issue_files_then_main() {
        let owners = BTreeMap::from([
            ("pullgate.toml".to_string(), "main".to_string()),
            ("truststore/ca.pem".to_string(), "trust".to_string()),
        ]);
        let invalid = ConfigError::Invalid {
            dir: "x".into(),
            issues: vec![config::Issue {
                file: "truststore/ca.pem".into(),
                field: String::new(),
                reason: "bad".into(),
            }],
        };
        assert_eq!(blame(&invalid, &owners), ["trust"]);
        let other = ConfigError::TooLarge { dir: "x".into(), why: "big".into() };
        assert_eq!(blame(&other, &owners), ["main"]);
        assert!(blame(&other, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn only_dockerconfigjson_secrets_become_credentials() {
        let secret = |name: &str, ty: &str, data: Option<&str>| {
            let mut s = Secret::default();
            s.metadata.name = Some(name.into());
            s.type_ = Some(ty.into());
            s.data = data.map(|d| BTreeMap::from([(DOCKER_CONFIG_JSON_KEY.to_string(), ByteString(d.into()))]));
            Arc::new(s)
        };
        let (snap, problems) = credentials_from(&[
            secret("good", DOCKER_CONFIG_JSON_TYPE, Some(r#"{"auths":{"ghcr.io":{"username":"u","password":"p"}}}"#)),
            secret("opaque", "Opaque", Some("whatever")),
            secret("empty", DOCKER_CONFIG_JSON_TYPE, None),
            secret("broken", DOCKER_CONFIG_JSON_TYPE, Some("{")),
        ]);
        assert_eq!(snap.secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["good"]);
        let names: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["broken", "empty"]);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate(&"é".repeat(600), MAX_EVENT_MESSAGE);
        assert!(t.len() <= MAX_EVENT_MESSAGE && t.ends_with("..."));
    }
}
