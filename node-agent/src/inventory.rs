//! What is on the node: images in containerd's store that pullgate never allowed
//! (imported, pulled on the local path, baked into the node image), and images a
//! new config generation would deny (policy drift).
//!
//! On start (and after every reconnect) the agent subscribes to containerd's image
//! events, then lists every image in every namespace. An image whose target digest
//! has no allow decision on this node (a pull allowed, audit mode included; the
//! decision log is read at start) is reported as *unverified*. When a new generation
//! takes effect, every image's digest is decided again by the normal engine (bounded
//! concurrency; the cache and single flight make it one verification per digest) and
//! the ones it would deny are reported as *drift*; with `--drift-action untag` their
//! names are removed so the next container start must pull, and so verify, again.
//! Running containers are never touched.
//!
//! Reports go to `pullgate_unverified_images` / `pullgate_drift_images` (gauges),
//! `pullgate_inventory_reports{kind,source}` (counter), a WARN line, a Kubernetes Event
//! on the agent pod, and `<state-dir>/audit.json`, which `pullgate-agent audit` prints.

use crate::engine::Engine;
use crate::metrics::Metrics;
use pullgate_containerd::images::{Client, Image, ImageEvents};
use pullgate_wire::{Descriptor, PROTOCOL_VERSION, Response, Verdict, VerifyRequest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The file `pullgate-agent audit` reads.
pub const AUDIT_FILE: &str = "audit.json";
/// Most digests remembered as allowed.
const MAX_SEEN: usize = 200_000;
/// How many drift re-checks run at once.
const DRIFT_CONCURRENCY: usize = 4;

/// Digests this node allowed, and when (fed by every allow decision).
#[derive(Debug, Default)]
pub struct SeenDigests {
    inner: Mutex<HashMap<String, SystemTime>>,
}

impl SeenDigests {
    /// Notes an allow decision for `digest`.
    pub fn allowed(&self, digest: &str, at: SystemTime) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_SEEN && !m.contains_key(digest) {
            // Forget the oldest tenth: a forgotten digest can only be reported, never allowed.
            let mut times: Vec<SystemTime> = m.values().copied().collect();
            times.sort();
            let cut = times[times.len() / 10];
            m.retain(|_, t| *t > cut);
        }
        m.insert(digest.to_string(), at);
    }

    /// Forgets `digest` (a drift re-check that allowed it was not a pull).
    pub fn forget(&self, digest: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
    }

    /// Whether `digest` was allowed on this node after `t`.
    pub fn allowed_after(&self, digest: &str, t: SystemTime) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).get(digest).is_some_and(|at| *at > t)
    }

    /// Whether `digest` was allowed on this node.
    pub fn was_allowed(&self, digest: &str) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).contains_key(digest)
    }

    /// Reads the decision log (and its rotated predecessor) so a restarted agent
    /// remembers what it allowed. Returns how many allow decisions were read.
    pub fn seed_from_log(&self, state_dir: &Path) -> usize {
        use std::io::BufRead;
        let mut n = 0;
        for name in [format!("{}.1", crate::report::LOG_FILE), crate::report::LOG_FILE.to_string()] {
            let Ok(f) = std::fs::File::open(state_dir.join(name)) else { continue };
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                #[derive(Deserialize)]
                struct Min {
                    digest: String,
                    verdict: Verdict,
                }
                if let Ok(r) = serde_json::from_str::<Min>(&line)
                    && r.verdict == Verdict::Allow
                {
                    self.allowed(&r.digest, SystemTime::now());
                    n += 1;
                }
            }
        }
        n
    }
}

/// What to do with drifted images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriftAction {
    /// Report only (default).
    Report,
    /// Remove the image's names, so the next container start pulls and verifies it.
    Untag,
}

/// One reported image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `unverified` or `drift`.
    pub kind: String,
    /// containerd namespace.
    pub namespace: String,
    /// Target digest.
    pub digest: String,
    /// Every name pointing at it.
    pub names: Vec<String>,
    /// How it was found: `startup` (listed), `event`, or the generation that would deny it.
    pub source: String,
    /// Unix seconds when first reported.
    pub since: u64,
    /// Why.
    pub reason: String,
    /// What was done (`reported`, `untagged`).
    pub action: String,
}

/// The audit file's contents.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Audit {
    /// Every open finding.
    pub findings: Vec<Finding>,
}

/// The inventory task's settings.
#[derive(Clone)]
pub struct Options {
    /// containerd's socket, as seen from here.
    pub socket: PathBuf,
    /// The agent's state directory (audit.json).
    pub state_dir: PathBuf,
    /// How long after an image event a decision may still arrive.
    pub grace: Duration,
    /// Drift handling.
    pub drift_action: DriftAction,
    /// Kubernetes Events, when running there.
    pub events: Option<crate::coverage::EventTarget>,
}

type Key = (String, String, String);

struct State {
    findings: BTreeMap<Key, Finding>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct Inventory {
    opts: Options,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    client: Client,
    state: Mutex<State>,
    /// Image events being looked at (each opens a connection): bounded.
    lookups: Arc<tokio::sync::Semaphore>,
    /// Kubernetes Events posted in the current minute, and when it started.
    posted: Mutex<(u32, std::time::Instant)>,
}

/// Most image events looked at concurrently; more wait (the 2 s scan catches up anyway).
const MAX_LOOKUPS: usize = 16;
/// Most Kubernetes Events the inventory posts per minute (a node image with hundreds of
/// unverified images must not flood the API server); the rest are only logged and counted.
const MAX_EVENTS_PER_MINUTE: u32 = 10;

impl Inventory {
    fn publish(&self) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let unverified = st.findings.values().filter(|f| f.kind == "unverified").count();
        let drift = st.findings.values().filter(|f| f.kind == "drift").count();
        self.metrics.set_inventory(unverified as i64, drift as i64);
        let audit = Audit { findings: st.findings.values().cloned().collect() };
        let text = serde_json::to_vec_pretty(&audit).unwrap_or_default();
        let path = self.opts.state_dir.join(AUDIT_FILE);
        let tmp = self.opts.state_dir.join(format!(".{AUDIT_FILE}.tmp"));
        if std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)).is_err() {
            tracing::warn!(path = %path.display(), "cannot write the audit file");
        }
    }

    /// Records a finding; false when it was already known.
    fn report(&self, f: Finding) -> bool {
        let key = (f.kind.clone(), f.namespace.clone(), f.digest.clone());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = st.findings.get_mut(&key) {
            for n in f.names {
                if !old.names.contains(&n) {
                    old.names.push(n);
                }
            }
            return false;
        }
        tracing::warn!(kind = %f.kind, namespace = %f.namespace, digest = %f.digest, reference = %f.names.join(","), source = %f.source, "{}", f.reason);
        self.metrics.inventory_report(if f.kind == "drift" { "drift" } else { "unverified" }, &f.source);
        let may_post = {
            let mut p = self.posted.lock().unwrap_or_else(|p| p.into_inner());
            if p.1.elapsed() > Duration::from_secs(60) {
                *p = (0, std::time::Instant::now());
            }
            p.0 += 1;
            p.0 <= MAX_EVENTS_PER_MINUTE
        };
        if let Some(t) = self.opts.events.as_ref().filter(|_| may_post) {
            crate::coverage::post_event(
                t.clone(),
                if f.kind == "drift" { "PolicyDrift" } else { "UnverifiedImage" },
                format!(
                    "{} image {} ({}) in containerd namespace {}: {}",
                    f.kind,
                    f.names.join(", "),
                    f.digest,
                    f.namespace,
                    f.reason
                ),
            );
        }
        st.findings.insert(key, f);
        true
    }

    /// Re-checks one image name against what the agent allowed.
    fn check_unverified(&self, img: &Image, source: &str) -> bool {
        if img.digest.is_empty() || self.engine.seen().was_allowed(&img.digest) {
            return false;
        }
        self.report(Finding {
            kind: "unverified".into(),
            namespace: img.namespace.clone(),
            digest: img.digest.clone(),
            names: vec![img.name.clone()],
            source: source.into(),
            since: now_secs(),
            reason: "no pullgate decision allowed this digest on this node: it arrived without a verified pull (ctr image import, ctr pull --local, a CRI local pull, or the node image)".into(),
            action: "reported".into(),
        })
    }

    /// Drops findings whose images are gone, and unverified ones pullgate has since allowed.
    async fn reconcile(&self, images: &[Image]) {
        let present: std::collections::HashSet<(String, String)> =
            images.iter().map(|i| (i.namespace.clone(), i.digest.clone())).collect();
        let changed = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let before = st.findings.len();
            let seen = self.engine.seen();
            st.findings.retain(|(kind, ns, d), f| {
                let here = present.contains(&(ns.clone(), d.clone()));
                match kind.as_str() {
                    "unverified" => here && !seen.was_allowed(d),
                    // An untagged image is gone by design: keep the record until it is pulled
                    // (and allowed) again.
                    _ if f.action.starts_with("untagged") => {
                        !seen.allowed_after(d, SystemTime::UNIX_EPOCH + Duration::from_secs(f.since))
                    }
                    _ => here,
                }
            });
            before != st.findings.len()
        };
        if changed {
            self.publish();
        }
    }

    async fn all_images(&self) -> Result<Vec<Image>, pullgate_containerd::grpc::GrpcError> {
        let mut out = Vec::new();
        for ns in self.client.namespaces().await? {
            out.extend(self.client.list_images(&ns).await?);
        }
        Ok(out)
    }

    /// Decides every image's digest again under the generation in force.
    async fn drift_check(self: &Arc<Self>, generation: &str) {
        let images = match self.all_images().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "drift check: cannot list containerd's images");
                return;
            }
        };
        // One decision per (namespace, digest), under a name that parses as a reference.
        let mut by_digest: BTreeMap<(String, String), Vec<Image>> = BTreeMap::new();
        for img in images.into_iter().filter(|i| !i.digest.is_empty()) {
            by_digest.entry((img.namespace.clone(), img.digest.clone())).or_default().push(img);
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(DRIFT_CONCURRENCY));
        let mut tasks = Vec::new();
        for ((ns, digest), imgs) in by_digest {
            let Some(named) = imgs.iter().find(|i| pullgate_reference::Reference::parse(&i.name).is_ok()).cloned()
            else {
                continue;
            };
            let me = self.clone();
            let sem = sem.clone();
            let generation = generation.to_string();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await;
                let req = VerifyRequest {
                    version: PROTOCOL_VERSION,
                    reference: named.name.clone(),
                    digest: digest.clone(),
                    descriptor: Descriptor {
                        media_type: named.media_type.clone(),
                        digest: digest.clone(),
                        size: named.size,
                    },
                    deadline_ms: 30_000,
                };
                // The re-check is not a pull: it must not make the digest count as allowed.
                let allowed_before = me.engine.seen().was_allowed(&digest);
                let answer = me.engine.decide(&req, None).await;
                if !allowed_before {
                    me.engine.seen().forget(&digest);
                }
                let Response::Decision(d) = answer else { return };
                // What the policy concluded, not what mode and failure policy made of it:
                // audit mode allows what enforce would deny, and a registry outage is no verdict.
                let would_deny = d.verdict == Verdict::Deny || d.reason.starts_with("audit mode, enforce would deny");
                if !would_deny
                    || d.reason.ends_with("failure policy open")
                    || d.reason.ends_with("failure policy closed")
                {
                    return;
                }
                let mut action = "reported".to_string();
                if me.opts.drift_action == DriftAction::Untag {
                    let mut removed = 0;
                    for i in &imgs {
                        match me.client.delete_image(&ns, &i.name, &digest).await {
                            Ok(true) => removed += 1,
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(namespace = %ns, reference = %i.name, error = %e, "drift: cannot untag")
                            }
                        }
                    }
                    action = format!("untagged {removed} name(s)");
                }
                let _ = me.report(Finding {
                    kind: "drift".into(),
                    namespace: ns.clone(),
                    digest: digest.clone(),
                    names: imgs.iter().map(|i| i.name.clone()).collect(),
                    source: format!("generation {generation}"),
                    since: now_secs(),
                    reason: format!("the config in force would deny it: {}", d.reason),
                    action,
                });
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        self.publish();
    }
}

/// Watches containerd's images until `shutdown` turns true (or its sender is dropped).
pub async fn run(opts: Options, engine: Arc<Engine>, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let inv = Arc::new(Inventory {
        client: Client::new(&opts.socket),
        opts,
        engine,
        metrics,
        state: Mutex::new(State { findings: BTreeMap::new() }),
        lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
        posted: Mutex::new((0, std::time::Instant::now())),
    });
    // Findings survive a restart (drift ones in particular cannot be recomputed):
    // reload them; the first scan drops those whose images are gone.
    if let Ok(a) = read_audit(&inv.opts.state_dir) {
        let mut st = inv.state.lock().unwrap_or_else(|p| p.into_inner());
        for f in a.findings {
            st.findings.insert((f.kind.clone(), f.namespace.clone(), f.digest.clone()), f);
        }
    }
    inv.publish();
    let mut backoff = Duration::from_secs(1);
    let mut generation = inv.engine.status().generation;
    loop {
        let connected = tokio::select! {
            r = session(&inv, &mut generation) => r,
            _ = shutdown.changed() => return,
        };
        match connected {
            Ok(()) => {
                tracing::warn!(socket = %inv.opts.socket.display(), "containerd closed the image event stream; reconnecting");
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!(socket = %inv.opts.socket.display(), error = %e, retry_in = ?backoff, "image inventory: containerd unavailable")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// One connected session: subscribe, list, then follow events and generation changes.
async fn session(
    inv: &Arc<Inventory>,
    generation: &mut Option<String>,
) -> Result<(), pullgate_containerd::grpc::GrpcError> {
    // Subscribe first, so nothing created while listing is missed.
    let mut events: ImageEvents = inv.client.subscribe_images().await?;
    let images = inv.all_images().await?;
    for img in &images {
        inv.check_unverified(img, "startup");
    }
    inv.reconcile(&images).await;
    inv.publish();
    tracing::info!(socket = %inv.opts.socket.display(), images = images.len(), "image inventory: following containerd's image events");
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev? else { return Ok(()) };
                if ev.topic == "/images/delete" {
                    let images = inv.all_images().await?;
                    inv.reconcile(&images).await;
                    continue;
                }
                let me = inv.clone();
                let Ok(permit) = inv.lookups.clone().try_acquire_owned() else {
                    // Busy: the next scan sees this image.
                    continue;
                };
                tokio::spawn(async move {
                    let _permit = permit;
                    // The verifier decides before content arrives, but let a racing decision land.
                    tokio::time::sleep(me.opts.grace).await;
                    match me.client.get_image(&ev.namespace, &ev.name).await {
                        Ok(Some(img)) => {
                            if me.check_unverified(&img, "event") {
                                me.publish();
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(namespace = %ev.namespace, reference = %ev.name, error = %e, "image inventory: cannot read the new image"),
                    }
                });
            }
            _ = tick.tick() => {
                let now = inv.engine.status().generation;
                if now.is_some() && now != *generation {
                    let first = generation.is_none();
                    *generation = now.clone();
                    if !first {
                        let me = inv.clone();
                        let g = now.unwrap_or_default();
                        tokio::spawn(async move { me.drift_check(&g).await });
                    }
                }
                // A scan besides the events: nothing created while (re)subscribing is missed.
                let images = inv.all_images().await?;
                let mut new = false;
                for img in &images {
                    new |= inv.check_unverified(img, "scan");
                }
                if new {
                    inv.publish();
                }
                inv.reconcile(&images).await;
            }
        }
    }
}

/// `pullgate-agent audit`: the open findings from `<state-dir>/audit.json`.
pub fn read_audit(state_dir: &Path) -> Result<Audit, String> {
    let path = state_dir.join(AUDIT_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; is the agent running with its image inventory (--state-dir, containerd reachable)?",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is damaged: {e}", path.display()))
}

/// The audit table.
pub fn render_audit(a: &Audit) -> String {
    if a.findings.is_empty() {
        return "no unverified or drifted images on this node\n".into();
    }
    let mut s = format!("{:<11}{:<10}{:<22}{:<12}{}\n", "KIND", "NAMESPACE", "DIGEST", "ACTION", "NAMES / REASON");
    for f in &a.findings {
        let short: String = f.digest.chars().take(19).collect();
        s.push_str(&format!(
            "{:<11}{:<10}{:<22}{:<12}{}\n",
            f.kind,
            f.namespace,
            format!("{short}…"),
            f.action,
            f.names.join(", ")
        ));
        s.push_str(&format!("{:<55}{} ({})\n", "", f.reason, f.source));
    }
    s
}
