//! The decision pipeline: allowlist → scope → verification → failure policy → mode.
//!
//! [`Engine`] holds the config in force (swapped atomically on reload, the
//! last good one kept when a new one is invalid), decides on one
//! [`VerifyRequest`] at a time within the request's deadline, writes the
//! report to the decision log and keeps counters for `status`.

use crate::cache::{self, DecisionCache, Evaluation, Outcome};
use crate::config::{self, Action, DefaultAction, Loaded, Mode, VerifierKind};
use crate::flight::Flights;
use crate::report::{DecisionLog, IdGenerator, Peer, Report, Source, Step};
use crate::verify;
use pullgate_reference::{Digest, Reference};
use pullgate_registry::auth::Keychain;
use pullgate_wire::{
    DecisionResponse, FailurePolicy, MAX_REASON_BYTES, PROTOCOL_VERSION, Response, StatusResponse, Verdict,
    VerifyRequest,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Longest time the agent spends on one request, whatever the client asks for.
pub const MAX_REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// Budget of one shared verification (registry requests and verifiers). It
/// goes on after a requester gives up, so the next pull finds the result cached.
pub const VERIFY_BUDGET: Duration = Duration::from_secs(30);

/// Why verification could not produce an allow or deny.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// Verification did not finish within the request's deadline.
    #[error("verification did not finish within {0} ms")]
    Deadline(u64),
}

/// The config in force and where it came from.
struct Current {
    loaded: Option<Arc<Loaded>>,
    /// Registry client built for the loaded config (TLS, limits, credentials).
    registry: Option<pullgate_registry::Client>,
    /// Why there is no config, or why the newest one was rejected.
    error: Option<String>,
}

/// Decision counters reported by `status`.
#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    failure_policy: AtomicU64,
    audit_would_deny: AtomicU64,
    invalid_requests: AtomicU64,
    refused_peers: AtomicU64,
    log_errors: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    sync_errors: AtomicU64,
    break_glass: AtomicU64,
}

/// Decides on pulls. Cheap to share behind an `Arc`.
pub struct Engine {
    config_dir: PathBuf,
    current: RwLock<Current>,
    log: DecisionLog,
    ids: IdGenerator,
    counters: Counters,
    started: Instant,
    cache: Arc<DecisionCache>,
    flights: Arc<Flights>,
    pull_secrets: RwLock<Keychain>,
    observer: Option<pullgate_registry::RequestObserver>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    content: Option<Arc<dyn pullgate_registry::ContentStore>>,
    /// The last coverage verdict (see `coverage`), shown by `status`.
    coverage: RwLock<Option<String>>,
    /// Digests this node allowed (see `inventory`).
    seen: crate::inventory::SeenDigests,
}

impl Engine {
    /// An engine reading its config from `config_dir` and logging through `log`.
    /// It starts with `initial` (which may be absent if loading failed).
    pub fn new(config_dir: PathBuf, initial: Result<Loaded, config::ConfigError>, log: DecisionLog) -> Engine {
        let current = match initial {
            Ok(l) => {
                let registry = crate::client::registry_client(&l.config, &Keychain::new(), None, None);
                Current { registry: Some(registry), loaded: Some(Arc::new(l)), error: None }
            }
            Err(e) => Current { loaded: None, registry: None, error: Some(e.to_string()) },
        };
        Engine {
            config_dir,
            current: RwLock::new(current),
            log,
            ids: IdGenerator::new(),
            counters: Counters::default(),
            started: Instant::now(),
            cache: Arc::new(DecisionCache::in_memory()),
            flights: Arc::new(Flights::default()),
            pull_secrets: RwLock::new(Keychain::new()),
            observer: None,
            metrics: None,
            content: None,
            coverage: RwLock::new(None),
            seen: crate::inventory::SeenDigests::default(),
        }
    }

    /// Keeps fetched manifests and blobs in `store` (content-addressed,
    /// re-hashed on read), across config generations and restarts.
    pub fn with_content_store(mut self, store: Arc<dyn pullgate_registry::ContentStore>) -> Engine {
        self.content = Some(store);
        self.rebuild_registry();
        self
    }

    /// Records decisions, cache lookups, registry requests, the config
    /// generation, reloads and sync errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Engine {
        if let Some(l) = self.loaded() {
            metrics.set_generation(&l.generation);
        }
        self.observer = Some(metrics.registry_observer());
        self.metrics = Some(metrics);
        self.rebuild_registry();
        self
    }

    /// Reports every registry request to `observer` (metrics).
    pub fn with_registry_observer(mut self, observer: pullgate_registry::RequestObserver) -> Engine {
        self.observer = Some(observer);
        self.rebuild_registry();
        self
    }

    /// Replaces the credentials from pull Secrets (Kubernetes mode). They are
    /// overlaid on the docker config's and take effect for the next request;
    /// cached tokens are dropped.
    pub fn set_pull_secrets(&self, keychain: Keychain) {
        *self.pull_secrets.write().unwrap_or_else(|p| p.into_inner()) = keychain;
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        if let (Some(l), Some(client)) = (&cur.loaded, &cur.registry) {
            let secrets = self.pull_secrets.read().unwrap_or_else(|p| p.into_inner());
            client.set_keychain(crate::client::keychain(&l.config, &secrets));
        }
    }

    fn new_registry(&self, cfg: &config::Config) -> pullgate_registry::Client {
        let secrets = self.pull_secrets.read().unwrap_or_else(|p| p.into_inner());
        crate::client::registry_client(cfg, &secrets, self.observer.clone(), self.content.clone())
    }

    fn rebuild_registry(&self) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = cur.loaded.clone() {
            cur.registry = Some(self.new_registry(&l.config));
        }
    }

    /// Makes the cache durable; called once the server has drained.
    pub fn flush(&self) {
        self.cache.flush();
    }

    /// Uses `cache` (e.g. the on-disk one) instead of the in-memory default.
    pub fn with_cache(mut self, cache: DecisionCache) -> Engine {
        self.cache = Arc::new(cache);
        self
    }

    fn loaded(&self) -> Option<Arc<Loaded>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).loaded.clone()
    }

    /// The loaded config and its registry client, taken together.
    fn active(&self) -> Option<(Arc<Loaded>, pullgate_registry::Client)> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some((cur.loaded.clone()?, cur.registry.clone()?))
    }

    /// Peer uids allowed on the socket: the config's list, or root only while
    /// no config is loaded.
    pub fn peer_allowed(&self, uid: u32) -> bool {
        match self.loaded() {
            Some(l) => l.config.allowed_uids.contains(&uid),
            None => uid == 0,
        }
    }

    /// Counts a peer refused by the uid check.
    pub fn count_refused_peer(&self) {
        self.counters.refused_peers.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a config sync error (API server unreachable, a Secret that
    /// cannot be parsed, a generation that cannot be written).
    pub fn count_sync_error(&self) {
        self.counters.sync_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.sync_error();
        }
    }

    /// Records a newer config that was rejected before it reached the config
    /// directory (Kubernetes mode validates each generation before switching
    /// to it): the config in force stays, `status` shows `why`, and it counts
    /// as a reload failure.
    pub fn reject(&self, why: String) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        cur.error = Some(why);
        self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.reload(false);
        }
    }

    /// Re-reads the config directory. An invalid config is not applied: the
    /// last good one stays in force and the error is kept for `status`.
    /// Returns the new generation when it changed.
    pub fn reload(&self) -> Result<Option<String>, config::ConfigError> {
        match config::load_dir(&self.config_dir) {
            Ok(new) => {
                let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
                cur.error = None;
                let changed = cur.loaded.as_ref().map(|l| l.generation != new.generation).unwrap_or(true);
                let generation = new.generation.clone();
                if changed || cur.registry.is_none() {
                    cur.registry = Some(self.new_registry(&new.config));
                } else if let Some(client) = &cur.registry {
                    // Same config: keep the client (and its tokens) but re-read
                    // the docker config, which lives outside the config directory.
                    let secrets = self.pull_secrets.read().unwrap_or_else(|p| p.into_inner());
                    client.set_keychain(crate::client::keychain(&new.config, &secrets));
                }
                cur.loaded = Some(Arc::new(new));
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.reload(true);
                    m.set_generation(&generation);
                    let bg = cur.loaded.as_ref().and_then(|l| l.config.break_glass.as_ref());
                    m.break_glass().set_active(bg.is_some_and(|b| b.active_at(SystemTime::now())));
                }
                Ok(changed.then_some(generation))
            }
            Err(e) => {
                let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
                cur.error = Some(e.to_string());
                self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.reload(false);
                }
                Err(e)
            }
        }
    }

    /// The answer to a status request.
    pub fn status(&self) -> StatusResponse {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        let c = &self.counters;
        let counters = BTreeMap::from([
            ("allowed".to_string(), c.allowed.load(Ordering::Relaxed)),
            ("denied".to_string(), c.denied.load(Ordering::Relaxed)),
            ("failurePolicy".to_string(), c.failure_policy.load(Ordering::Relaxed)),
            ("auditWouldDeny".to_string(), c.audit_would_deny.load(Ordering::Relaxed)),
            ("invalidRequests".to_string(), c.invalid_requests.load(Ordering::Relaxed)),
            ("refusedPeers".to_string(), c.refused_peers.load(Ordering::Relaxed)),
            ("logErrors".to_string(), c.log_errors.load(Ordering::Relaxed)),
            ("reloads".to_string(), c.reloads.load(Ordering::Relaxed)),
            ("reloadFailures".to_string(), c.reload_failures.load(Ordering::Relaxed)),
            ("cacheHits".to_string(), c.cache_hits.load(Ordering::Relaxed)),
            ("cacheMisses".to_string(), c.cache_misses.load(Ordering::Relaxed)),
            ("cacheEntries".to_string(), self.cache.len() as u64),
            ("syncErrors".to_string(), c.sync_errors.load(Ordering::Relaxed)),
            ("breakGlass".to_string(), c.break_glass.load(Ordering::Relaxed)),
        ]);
        StatusResponse {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            generation: cur.loaded.as_ref().map(|l| l.generation.clone()),
            mode: cur.loaded.as_ref().map(|l| l.config.mode.as_str().to_string()),
            config_error: cur.error.clone(),
            counters,
            coverage: self.coverage.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// The digests this node allowed.
    pub fn seen(&self) -> &crate::inventory::SeenDigests {
        &self.seen
    }

    /// Records the node's coverage verdict for `status`.
    pub fn set_coverage(&self, verdict: String) {
        *self.coverage.write().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
    }

    /// Decides on one pull and records the report. Never fails: problems
    /// become a deny (bad input), a failure-policy verdict, or an error
    /// response when no config is loaded at all.
    pub async fn decide(&self, req: &VerifyRequest, peer: Option<Peer>) -> Response {
        let received = Instant::now();
        let mut trace = Trace { received, steps: Vec::new() };
        let active = self.active();
        let loaded = active.as_ref().map(|(l, _)| l.clone());
        let mut report = Report {
            id: self.ids.next_id(),
            time: crate::report::now_rfc3339(),
            generation: loaded.as_ref().map(|l| l.generation.clone()),
            reference: req.reference.clone(),
            normalized: None,
            digest: req.digest.clone(),
            media_type: req.descriptor.media_type.clone(),
            size: req.descriptor.size,
            peer,
            mode: loaded.as_ref().map(|l| l.config.mode.as_str().to_string()),
            failure_policy: loaded.as_ref().map(|l| l.config.failure_policy.as_str().to_string()),
            rule: None,
            source: Source::Input,
            outcome: String::new(),
            verdict: Verdict::Deny,
            reason: String::new(),
            steps: Vec::new(),
            verification: Vec::new(),
            policy: None,
            duration_us: 0,
        };

        // Stage 1: the request itself.
        let parsed = match check_request(req) {
            Ok(p) => {
                trace.step("request", "valid");
                p
            }
            Err(why) => {
                trace.step("request", &why);
                self.counters.invalid_requests.fetch_add(1, Ordering::Relaxed);
                report.outcome = "deny".into();
                return self.finish(report, trace, Verdict::Deny, format!("invalid request: {why}"));
            }
        };
        report.normalized = Some(parsed.0.to_string());
        let (reference, digest) = parsed;

        let Some((loaded, registry)) = active else {
            let why = self
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .error
                .clone()
                .unwrap_or_else(|| "no config loaded".into());
            trace.step("config", &why);
            report.source = Source::FailurePolicy;
            report.outcome = "error".into();
            report.verdict = Verdict::Deny;
            let why = pullgate_wire::truncate(&why, MAX_REASON_BYTES / 2, pullgate_wire::TRUNCATED);
            report.reason = format!("agent has no valid config: {why}");
            report.steps = trace.steps;
            self.record(&mut report);
            return Response::Error { message: format!("{} (report {})", report.reason, report.id) };
        };
        let cfg = &loaded.config;
        let failure_policy = cfg.failure_policy_for(&reference, &digest);
        let (evaluation, from_cache) =
            self.evaluation(&loaded, registry, req, reference, digest, &report.id, &mut trace).await;
        report.rule = evaluation.rule.clone();
        report.source = if from_cache { Source::Cache } else { evaluation.source };
        report.verification = evaluation.verification.clone();
        report.policy = evaluation.policy.clone();
        if !from_cache {
            trace.steps.extend(evaluation.steps.iter().cloned());
        }
        let (verdict, reason) = self.failure_policy(failure_policy, evaluation.outcome, &mut report, &mut trace);
        let (verdict, reason) = self.mode(cfg.mode, verdict, reason, &mut trace);
        let (verdict, reason) = self.break_glass(cfg, verdict, reason, &mut report, &mut trace);
        self.finish(report, trace, verdict, reason)
    }

    /// Stages 2-4: allowlist, scope, verification. Answered from the cache
    /// when this generation already decided on this image; concurrent
    /// requests for the same key share one evaluation (single flight).
    /// Returns the evaluation and whether it came from the cache.
    #[allow(clippy::too_many_arguments)]
    async fn evaluation(
        &self,
        loaded: &Arc<Loaded>,
        registry: pullgate_registry::Client,
        req: &VerifyRequest,
        reference: Reference,
        digest: Digest,
        report_id: &str,
        trace: &mut Trace,
    ) -> (Evaluation, bool) {
        let received = trace.received;
        let budget = Duration::from_millis(req.deadline_ms).min(MAX_REQUEST_DEADLINE);
        let normalized = reference.to_string();
        let key = cache::key(&loaded.generation, &normalized, &req.digest);
        if let Some(hit) = self.cache_lookup(&key, trace) {
            return (hit, true);
        }
        // Junk must end in a deny while the requester still waits: examine for at
        // most 60 % of its remaining time (never under 500 ms), and never past EXAMINE_TIME.
        let left = budget.saturating_sub(received.elapsed());
        let examine_time = (left * 3 / 5).max(Duration::from_millis(500)).min(verify::EXAMINE_TIME);
        let subject = verify::Subject {
            reference,
            digest,
            media_type: req.descriptor.media_type.clone(),
            size: req.descriptor.size,
            examine_time,
            attachments: loaded.attachments.clone(),
        };
        let (loaded2, cache, id) = (loaded.clone(), self.cache.clone(), report_id.to_string());
        // The shared verification has the agent's own budget, not the
        // first requester's: a client with little time left neither cuts
        // it short for the others nor leaves a deadline error cached.
        let flight_deadline = tokio::time::Instant::now() + VERIFY_BUDGET;
        let (flight, leader) = self.flights.join(&key, move |key| {
            Box::pin(async move {
                let work = evaluate(&loaded2, &registry, &subject, flight_deadline, received);
                let mut e = match tokio::time::timeout_at(flight_deadline, work).await {
                    Ok(e) => e,
                    Err(_) => Evaluation::error(VerifyError::Deadline(VERIFY_BUDGET.as_millis() as u64).to_string()),
                };
                e.origin = Some(id);
                let (stored, policy) = (e.clone(), loaded2.config.cache);
                // sled writes (and the rare eviction scan) stay off the async workers.
                let _ = tokio::task::spawn_blocking(move || cache.put(&key, &stored, &policy)).await;
                e
            })
        });
        if !leader {
            trace.step("single-flight", "joined a verification already in progress");
        }
        match tokio::time::timeout(budget, flight).await {
            Ok(e) => (e, false),
            Err(_) => {
                trace.step("verify", "deadline reached");
                let why = VerifyError::Deadline(budget.as_millis() as u64).to_string();
                (Evaluation::error(why), false)
            }
        }
    }

    /// The cached evaluation under `key`, counted as a hit or a miss.
    fn cache_lookup(&self, key: &str, trace: &mut Trace) -> Option<Evaluation> {
        let hit = self.cache.get(key);
        match &hit {
            Some(h) => {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                let origin = h.origin.clone().unwrap_or_else(|| "-".into());
                trace.step("cache", &format!("hit: first decided in report {origin}"));
            }
            None => {
                self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
                trace.step("cache", "miss");
            }
        }
        if let Some(m) = &self.metrics {
            if hit.is_some() { m.cache_hit() } else { m.cache_miss() }
        }
        hit
    }

    /// Stage 5: the failure policy in force for the image's scope answers errors.
    fn failure_policy(
        &self,
        policy: FailurePolicy,
        outcome: Outcome,
        report: &mut Report,
        trace: &mut Trace,
    ) -> (Verdict, String) {
        match outcome {
            Outcome::Allow(r) => {
                report.outcome = "allow".into();
                (Verdict::Allow, r)
            }
            Outcome::Deny(r) => {
                report.outcome = "deny".into();
                (Verdict::Deny, r)
            }
            Outcome::Error(e) => {
                report.outcome = "error".into();
                report.source = Source::FailurePolicy;
                report.failure_policy = Some(policy.as_str().to_string());
                self.counters.failure_policy.fetch_add(1, Ordering::Relaxed);
                let v = policy.verdict();
                trace.step("failure-policy", &format!("{} ({})", v.past_tense(), policy.as_str()));
                (v, format!("{e}; failure policy {}", policy.as_str()))
            }
        }
    }

    /// Stage 6: audit mode allows what enforce would deny.
    fn mode(&self, mode: Mode, verdict: Verdict, reason: String, trace: &mut Trace) -> (Verdict, String) {
        match (mode, verdict) {
            (Mode::Audit, Verdict::Deny) => {
                self.counters.audit_would_deny.fetch_add(1, Ordering::Relaxed);
                trace.step("mode", "audit: allowed what enforce would deny");
                (Verdict::Allow, format!("audit mode, enforce would deny: {reason}"))
            }
            (m, v) => {
                trace.step("mode", m.as_str());
                (v, reason)
            }
        }
    }

    /// Stage 7: an active break-glass allows everything, labelled. It comes
    /// after the cache, so no cached value is ever a break-glass allow.
    fn break_glass(
        &self,
        cfg: &config::Config,
        verdict: Verdict,
        reason: String,
        report: &mut Report,
        trace: &mut Trace,
    ) -> (Verdict, String) {
        let Some(bg) = cfg.break_glass.as_ref().filter(|b| b.active_at(SystemTime::now())) else {
            // Ended (or none): the gauge drops on the first decision after `until`, not at the next tick.
            if let (Some(m), Some(_)) = (&self.metrics, &cfg.break_glass) {
                m.break_glass().set_active(false);
            }
            return (verdict, reason);
        };
        self.counters.break_glass.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.break_glass().decision();
            m.break_glass().set_active(true);
        }
        report.source = Source::BreakGlass;
        let policy = match verdict {
            Verdict::Allow => "policy allows",
            Verdict::Deny => "policy would deny",
        };
        trace.step("break-glass", &format!("allowed ({policy})"));
        (Verdict::Allow, format!("{}: {policy}: {reason}", bg.label()))
    }

    fn finish(&self, mut report: Report, trace: Trace, verdict: Verdict, reason: String) -> Response {
        match verdict {
            Verdict::Allow => self.counters.allowed.fetch_add(1, Ordering::Relaxed),
            Verdict::Deny => self.counters.denied.fetch_add(1, Ordering::Relaxed),
        };
        report.verdict = verdict;
        if verdict == Verdict::Allow {
            self.seen.allowed(&report.digest, std::time::SystemTime::now());
        }
        // The report keeps the reason as decided (already bounded by
        // `report::summarize`); the answer and the log line get at most
        // MAX_REASON_BYTES, pointing at the report for the rest.
        let marker = format!("… (truncated, see report {})", report.id);
        let sent = pullgate_wire::truncate(&pullgate_wire::one_line(&reason), MAX_REASON_BYTES, &marker);
        report.reason = reason;
        let elapsed = trace.received.elapsed();
        report.duration_us = elapsed.as_micros() as u64;
        if let Some(m) = &self.metrics {
            let verdict = match verdict {
                Verdict::Allow => "allow",
                Verdict::Deny => "deny",
            };
            m.record_decision(verdict, report.mode.as_deref().unwrap_or("none"), report.source.as_str(), elapsed);
        }
        report.steps = trace.steps;
        self.record(&mut report);
        tracing::info!(
            id = %report.id,
            reference = %report.reference,
            digest = %report.digest,
            verdict = verdict.past_tense(),
            rule = report.rule.as_deref().unwrap_or("-"),
            generation = report.generation.as_deref().unwrap_or("-"),
            duration_us = report.duration_us,
            "{sent}"
        );
        Response::Decision(DecisionResponse { verdict, reason: sent, report_id: report.id })
    }

    /// Appends the report to the decision log, bounded in size first.
    fn record(&self, report: &mut Report) {
        report.bound();
        if let Err(e) = self.log.append(report) {
            self.counters.log_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id = %report.id, error = %e, "cannot write the decision log; the decision stands");
        }
    }
}

/// Stages 2-4 for one image: allowlist, scope, and verification when the
/// scope requires it. Owns its inputs so a single flight can run it on its own task.
async fn evaluate(
    loaded: &Loaded,
    registry: &pullgate_registry::Client,
    subject: &verify::Subject,
    deadline: tokio::time::Instant,
    received: Instant,
) -> Evaluation {
    let mut typed = typed_rules(loaded, registry, subject, deadline, received).await;
    // Rego sees the typed outcome and may tighten (or override) it.
    crate::policy::apply(&loaded.config, subject, &mut typed).await;
    typed
}

/// What the typed rules decide: allowlist, first matching scope, its action.
async fn typed_rules(
    loaded: &Loaded,
    registry: &pullgate_registry::Client,
    subject: &verify::Subject,
    deadline: tokio::time::Instant,
    received: Instant,
) -> Evaluation {
    let cfg = &loaded.config;
    let mut trace = Trace { received, steps: Vec::new() };
    let (reference, digest) = (&subject.reference, &subject.digest);
    if let Some((i, p)) = cfg.allowlist.iter().enumerate().find(|(_, p)| p.matches(reference, digest)) {
        trace.step("allowlist", &format!("matched allowlist[{i}] {p}"));
        let rule = format!("allowlist[{i}] {p}");
        return evaluated(Outcome::Allow(format!("allowlist entry {p}")), rule, Source::Allowlist, trace);
    }
    trace.step("allowlist", "no match");
    let Some(scope) = cfg.scope_for(reference, digest) else {
        trace.step("scope", "no scope matches; defaultAction applies");
        let outcome = match cfg.default_action {
            DefaultAction::Allow => Outcome::Allow("no scope matches; defaultAction allow".into()),
            DefaultAction::Deny => Outcome::Deny("no scope matches this image; defaultAction deny".into()),
        };
        return evaluated(outcome, "defaultAction".into(), Source::Policy, trace);
    };
    let rule = format!("scope {}", scope.name);
    trace.step("scope", &format!("matched scope {} ({})", scope.name, scope.action.kind()));
    match &scope.action {
        Action::Allow => {
            evaluated(Outcome::Allow(format!("scope {} allows it", scope.name)), rule, Source::Policy, trace)
        }
        Action::Deny { reason } => {
            let why = match reason {
                Some(r) => format!("scope {}: {r}", scope.name),
                None => format!("scope {} denies it", scope.name),
            };
            evaluated(Outcome::Deny(why), rule, Source::Policy, trace)
        }
        Action::Verify(req) => verify_scope(cfg, registry, scope, req, subject, deadline, trace).await,
    }
}

/// An evaluation decided by `rule` without verification.
fn evaluated(outcome: Outcome, rule: String, source: Source, trace: Trace) -> Evaluation {
    Evaluation {
        outcome,
        rule: Some(rule),
        source,
        verification: Vec::new(),
        origin: None,
        steps: trace.steps,
        policy: None,
    }
}

/// A `verify` scope: its verifiers under its trust sets, on the manifests its
/// `platforms` names.
async fn verify_scope(
    cfg: &config::Config,
    registry: &pullgate_registry::Client,
    scope: &config::Scope,
    req: &config::Requirements,
    subject: &verify::Subject,
    deadline: tokio::time::Instant,
    mut trace: Trace,
) -> Evaluation {
    let combine = req.combine().describe();
    trace.step("verify", &format!("scope {} requires {combine} [{}]", scope.name, kinds(req.verifiers())));
    let trust = cfg.trust_for(req);
    let node = cfg.node_platform.clone().unwrap_or_else(crate::platform::Platform::node);
    let (result, reason, runs) = crate::platform::verify(&trust, registry, req, subject, &node, deadline).await;
    for run in &runs {
        trace.step(&format!("verify:{}", run.verifier), &format!("{}: {}", run.result, run.reason));
    }
    // Registry content shapes these reasons: each signature's summary
    // and the whole are capped here, the full detail stays in `runs`.
    let reason = crate::report::summarize(&format!("scope {}: {reason}", scope.name));
    let outcome = match result {
        verify::RunResult::Pass => Outcome::Allow(reason),
        verify::RunResult::Fail => Outcome::Deny(reason),
        verify::RunResult::Error => Outcome::Error(reason),
    };
    let mut ev = evaluated(outcome, format!("scope {}", scope.name), Source::Verify, trace);
    ev.verification = runs;
    ev
}

fn kinds(k: &[VerifierKind]) -> String {
    k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

impl crate::breakglass::Current for Engine {
    fn break_glass(&self) -> Option<crate::breakglass::BreakGlass> {
        self.loaded()?.config.break_glass.clone()
    }
}

/// Stage timings for a report.
struct Trace {
    received: Instant,
    steps: Vec<Step>,
}

impl Trace {
    fn step(&mut self, stage: &str, result: &str) {
        self.steps.push(Step {
            stage: stage.into(),
            result: result.into(),
            at_us: self.received.elapsed().as_micros() as u64,
        });
    }
}

/// Validates a request as the verifier should have: protocol version,
/// reference and digest grammar, and the descriptor agreeing with `-digest`.
fn check_request(req: &VerifyRequest) -> Result<(Reference, Digest), String> {
    if req.version != PROTOCOL_VERSION {
        return Err(format!("protocol version {} is not {PROTOCOL_VERSION}; upgrade pullgate-verifier", req.version));
    }
    let reference = Reference::parse(&req.reference).map_err(|e| format!("reference {:?}: {e}", req.reference))?;
    let digest = Digest::parse(&req.digest).map_err(|e| format!("digest: {e}"))?;
    if req.descriptor.digest != req.digest {
        return Err(format!("descriptor digest {:?} differs from digest {}", req.descriptor.digest, req.digest));
    }
    if let Some(pinned) = reference.digest()
        && *pinned != digest
    {
        return Err(format!("reference pins {pinned} but the pulled digest is {digest}"));
    }
    Ok((reference, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pullgate_wire::Descriptor;

    const D: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

    fn engine(toml: &str) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pullgate.toml"), toml).unwrap();
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/cosign/keys/cosign.pub");
        std::fs::copy(key, dir.path().join("cosign.pub")).unwrap();
        let loaded = config::load_dir(dir.path());
        let log = DecisionLog::open(dir.path(), 1 << 20).unwrap();
        (Engine::new(dir.path().to_path_buf(), loaded, log), dir)
    }

    fn req(reference: &str) -> VerifyRequest {
        VerifyRequest {
            version: PROTOCOL_VERSION,
            reference: reference.into(),
            digest: D.into(),
            descriptor: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: D.into(),
                size: 517,
            },
            deadline_ms: 1000,
        }
    }

    async fn decide(e: &Engine, r: &str) -> DecisionResponse {
        match e.decide(&req(r), None).await {
            Response::Decision(d) => d,
            other => panic!("{other:?}"),
        }
    }

    const POLICY: &str = r#"
        allowlist = ["registry.k8s.io/pause:3.10"]
        [[scopes]]
        name = "acme"
        images = ["127.0.0.1:9/acme/**"]
        action = "verify"
        verify = { require = ["cosign"] }
        [[scopes]]
        name = "internal"
        images = ["registry.internal:5000/**"]
        action = "allow"
        [[scopes]]
        name = "hub"
        images = ["docker.io/**"]
        action = "deny"
        reason = "use the mirror"
        [registries."127.0.0.1:9"]
        insecure = true
        [sigstore]
        keys = ["cosign.pub"]
        requireTlog = false
    "#;

    #[tokio::test]
    async fn pipeline_stages() {
        let (e, dir) = engine(POLICY);
        let d = decide(&e, "registry.k8s.io/pause:3.10").await;
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.reason.contains("allowlist"), "{}", d.reason);
        let d = decide(&e, "registry.internal:5000/x/y:1").await;
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.reason.contains("scope internal"));
        let d = decide(&e, "alpine").await;
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.reason.contains("use the mirror"));
        let d = decide(&e, "quay.io/other/x").await;
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.reason.contains("defaultAction"));
        let d = decide(&e, "127.0.0.1:9/acme/app:v1").await;
        assert_eq!(d.verdict, Verdict::Deny, "verify without verifiers fails closed");
        assert!(d.reason.contains("cosign: ") && d.reason.contains("unreachable"), "{}", d.reason);
        assert!(d.reason.contains("failure policy closed"));
        let r = crate::report::find(dir.path(), &d.report_id).unwrap().unwrap();
        assert_eq!(r.rule.as_deref(), Some("scope acme"));
        assert_eq!(r.outcome, "error");
        assert_eq!(r.source, Source::FailurePolicy);
        assert!(r.steps.iter().any(|s| s.stage == "verify"));
    }

    #[tokio::test]
    async fn failure_policy_open_and_audit_mode() {
        let (e, _d) = engine(&format!("failurePolicy = \"open\"\n{POLICY}"));
        let d = decide(&e, "127.0.0.1:9/acme/app:v1").await;
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.reason.contains("failure policy open"));
        let (e, dir) = engine(&format!("mode = \"audit\"\n{POLICY}"));
        let d = decide(&e, "alpine").await;
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.reason.starts_with("audit mode, enforce would deny: scope hub"), "{}", d.reason);
        let r = crate::report::find(dir.path(), &d.report_id).unwrap().unwrap();
        assert_eq!(r.outcome, "deny", "the report keeps what enforce would have done");
        assert_eq!(e.status().counters["auditWouldDeny"], 1);
    }

    #[tokio::test]
    async fn long_reasons_are_cut_in_the_answer_and_kept_in_the_report() {
        let (e, dir) = engine(POLICY);
        // A verifier reason shaped by registry content: a huge plugin name
        // with JSON-escape-heavy and control characters, for two signatures.
        let junk = "\"\\\u{0}\né".repeat(20_000);
        let items: Vec<String> = (1..=6).map(|i| format!("#{i}: plugin {junk}")).collect();
        let reason =
            crate::report::summarize(&format!("scope acme: notation: no signature verified ({})", items.join("; ")));
        let report = Report {
            id: "d-test-1".into(),
            time: crate::report::now_rfc3339(),
            generation: None,
            reference: "r".into(),
            normalized: None,
            digest: D.into(),
            media_type: "m".into(),
            size: 1,
            peer: None,
            mode: None,
            failure_policy: None,
            rule: None,
            source: Source::Verify,
            outcome: "deny".into(),
            verdict: Verdict::Deny,
            reason: String::new(),
            steps: Vec::new(),
            verification: Vec::new(),
            policy: None,
            duration_us: 0,
        };
        let trace = Trace { received: Instant::now(), steps: vec![] };
        let Response::Decision(d) = e.finish(report, trace, Verdict::Deny, reason) else { panic!("not a decision") };
        assert!(d.reason.len() <= MAX_REASON_BYTES, "{}", d.reason.len());
        assert!(d.reason.contains("#2: plugin"), "one signature does not crowd out the next: {}", d.reason);
        assert!(d.reason.ends_with("… (truncated, see report d-test-1)"), "{}", d.reason);
        assert!(!d.reason.contains(['\n', '\0']), "one line");
        let line = Response::Decision(d.clone()).encode_line();
        assert!(line.len() <= 3 * MAX_REASON_BYTES, "{}", line.len());
        let r = crate::report::find(dir.path(), "d-test-1").unwrap().unwrap();
        assert!(r.reason.len() > d.reason.len(), "the report keeps more than the answer");
    }

    #[tokio::test]
    async fn invalid_requests_are_denied() {
        let (e, _d) = engine(POLICY);
        let mut r = req("registry.k8s.io/pause:3.10");
        r.descriptor.digest = format!("sha256:{}", "0".repeat(64));
        match e.decide(&r, None).await {
            Response::Decision(d) => {
                assert_eq!(d.verdict, Verdict::Deny);
                assert!(d.reason.contains("descriptor digest"));
            }
            other => panic!("{other:?}"),
        }
        let mut r = req("ghcr.io/acme/../x");
        r.version = PROTOCOL_VERSION;
        let d = match e.decide(&r, None).await {
            Response::Decision(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(d.verdict, Verdict::Deny);
    }

    #[tokio::test]
    async fn no_config_is_an_error_and_reload_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let log = DecisionLog::open(dir.path(), 1 << 20).unwrap();
        let e = Engine::new(dir.path().to_path_buf(), config::load_dir(dir.path()), log);
        assert!(matches!(e.decide(&req("alpine"), None).await, Response::Error { .. }));
        assert!(e.status().config_error.unwrap().contains("pullgate.toml"));
        std::fs::write(dir.path().join("pullgate.toml"), "defaultAction = \"allow\"").unwrap();
        let g = e.reload().unwrap().expect("generation changed");
        assert_eq!(decide(&e, "alpine").await.verdict, Verdict::Allow);
        std::fs::write(dir.path().join("pullgate.toml"), "defaultAction = \"sometimes\"").unwrap();
        assert!(e.reload().is_err());
        assert_eq!(decide(&e, "alpine").await.verdict, Verdict::Allow, "last known good stays");
        let s = e.status();
        assert_eq!(s.generation.as_deref(), Some(g.as_str()));
        assert!(s.config_error.unwrap().contains("sometimes"));
    }
}
