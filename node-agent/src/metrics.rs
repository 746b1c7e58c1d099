//! The agent's Prometheus metrics and the small HTTP endpoint that serves them.
//!
//! [`Metrics`] owns one `prometheus-client` registry with every metric the
//! agent exports; the engine, the registry client (through
//! [`Metrics::registry_observer`]) and the config sync feed it. Label values
//! are bounded: the engine's label values come from fixed sets (anything else
//! is recorded as `other`), and at most [`MAX_REGISTRY_LABELS`] registry hosts
//! get their own series, so a stream of pulls from invented hosts cannot grow
//! the exposition without bound.
//!
//! [`serve`] answers `GET /metrics` with the Prometheus text format 0.0.4
//! on a plain TCP listener (loopback by default): one request per
//! connection, a bounded request head read under a timeout, a bounded number
//! of connections at once, and a shutdown path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Default listen address of the metrics endpoint (the OpenTelemetry
/// Prometheus exporter's port, on loopback only).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Largest HTTP request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Longest time a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time writing one response may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; further ones are closed unanswered.
pub const MAX_CONNECTIONS: usize = 16;
/// Most registry hosts with their own `pullgate_registry_requests_total`
/// series; requests to further hosts are counted under `registry="other"`.
pub const MAX_REGISTRY_LABELS: usize = 64;
/// Longest generation id kept as a label value (longer ones are cut).
const MAX_GENERATION_LABEL: usize = 64;

/// Upper bounds (seconds) of `pullgate_decision_duration_seconds`: 10 µs (a
/// cache hit) to 30 s (a slow registry within containerd's timeout).
pub const DURATION_BUCKETS: [f64; 20] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const RESULTS: &[&str] = &["allow", "deny"];
const MODES: &[&str] = &["enforce", "audit"];
const SOURCES: &[&str] = &["cache", "verify", "allowlist", "policy", "failure-policy", "input"];
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    result: &'static str,
    mode: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    registry: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InventoryLabels {
    kind: &'static str,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenerationLabels {
    generation: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    registry: String,
}

/// `pullgate_registry_request_duration_seconds` by registry endpoint host:
/// one per process (the registry client's latency observer is not tied to
/// one [`Metrics`]), registered by every [`Metrics::new`], hosts bounded
/// like the request counters.
struct RegistryLatency {
    family: Family<HostLabels, Histogram, fn() -> Histogram>,
    hosts: Mutex<HashSet<String>>,
}

fn registry_latency() -> &'static RegistryLatency {
    static LATENCY: std::sync::OnceLock<RegistryLatency> = std::sync::OnceLock::new();
    LATENCY.get_or_init(|| RegistryLatency {
        family: Family::new_with_constructor(duration_histogram),
        hosts: Mutex::new(HashSet::new()),
    })
}

/// A registry-client latency observer (`ClientOptions::latency_observer`)
/// feeding `pullgate_registry_request_duration_seconds`.
pub fn registry_latency_observer() -> pullgate_registry::LatencyObserver {
    Arc::new(|registry: &str, took: Duration| {
        let l = registry_latency();
        let registry = {
            let mut hosts = l.hosts.lock().unwrap_or_else(|p| p.into_inner());
            if hosts.contains(registry) || (hosts.len() < MAX_REGISTRY_LABELS && is_host_like(registry)) {
                hosts.insert(registry.to_string());
                registry.to_string()
            } else {
                OTHER.to_string()
            }
        };
        l.family.get_or_create(&HostLabels { registry }).observe(took.as_secs_f64());
    })
}

/// Registry-request counters and the hosts that have a series of their own.
struct RegistryRequests {
    family: Family<RegistryLabels, Counter>,
    hosts: Mutex<HashSet<String>>,
}

impl RegistryRequests {
    fn observe(&self, registry: &str, status: &str) {
        let registry = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            if hosts.contains(registry) {
                registry.to_string()
            } else if hosts.len() < MAX_REGISTRY_LABELS && is_host_like(registry) {
                hosts.insert(registry.to_string());
                registry.to_string()
            } else {
                OTHER.to_string()
            }
        };
        let status = if is_status_class(status) { status.to_string() } else { OTHER.to_string() };
        self.family.get_or_create(&RegistryLabels { registry, status }).inc();
    }
}

/// Every metric the agent exports. Cheap to share behind an `Arc`; every
/// method takes `&self` and may be called from any task.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_duration: Family<SourceLabels, Histogram, fn() -> Histogram>,
    registry_requests: Arc<RegistryRequests>,
    cache_requests: Family<ResultLabels, Counter>,
    config_info: Family<GenerationLabels, Gauge>,
    generation: Mutex<Option<String>>,
    reloads: Family<ResultLabels, Counter>,
    sync_errors: Counter,
    coverage: Family<ReasonLabels, Gauge>,
    coverage_reason: Mutex<Option<String>>,
    unverified_images: Gauge,
    drift_images: Gauge,
    inventory_reports: Family<InventoryLabels, Counter>,
    break_glass: crate::breakglass::BreakGlassMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        crate::cluster::register(&mut registry);
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "pullgate_decisions",
            "Decisions on pulls by verdict, mode and where the verdict came from",
            decisions.clone(),
        );
        let decision_duration =
            Family::<SourceLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "pullgate_decision_duration_seconds",
            "Time from receiving a request to its decision, by where the verdict came from",
            decision_duration.clone(),
        );
        let registry_requests =
            Arc::new(RegistryRequests { family: Family::default(), hosts: Mutex::new(HashSet::new()) });
        registry.register(
            "pullgate_registry_requests",
            "HTTP requests sent to registries by registry host and status (HTTP code, token-CODE, timeout or error)",
            registry_requests.family.clone(),
        );
        registry.register(
            "pullgate_registry_request_duration_seconds",
            "Time from sending a registry request to its answer, by registry endpoint host (429s are pullgate_registry_requests_total{status=\"429\"})",
            registry_latency().family.clone(),
        );
        let cache_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pullgate_cache_requests",
            "Decision cache lookups by result (hit or miss)",
            cache_requests.clone(),
        );
        let config_info = Family::<GenerationLabels, Gauge>::default();
        registry.register(
            "pullgate_config_info",
            "The config generation in force (value 1 on its generation label)",
            config_info.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pullgate_config_reloads",
            "Config reloads by result (ok or rejected, the last good config staying in force)",
            reloads.clone(),
        );
        let sync_errors = Counter::default();
        registry.register(
            "pullgate_sync_errors",
            "Config sync errors (API server unreachable, unparsable Secret, generation not written)",
            sync_errors.clone(),
        );
        let coverage = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "pullgate_node_coverage",
            "1 when every pull on this node reaches pullgate, 0 when some are bypassed; reason names the first failed check (\"ok\" when covered)",
            coverage.clone(),
        );
        let unverified_images = Gauge::default();
        registry.register(
            "pullgate_unverified_images",
            "Images in containerd's store whose digest pullgate never allowed on this node (see pullgate-agent audit)",
            unverified_images.clone(),
        );
        let drift_images = Gauge::default();
        registry.register(
            "pullgate_drift_images",
            "Images in containerd's store that the config in force would deny (see pullgate-agent audit)",
            drift_images.clone(),
        );
        let inventory_reports = Family::<InventoryLabels, Counter>::default();
        registry.register(
            "pullgate_inventory_reports",
            "Images reported by the inventory, by kind (unverified, drift) and source (startup, event, generation)",
            inventory_reports.clone(),
        );
        let break_glass = crate::breakglass::BreakGlassMetrics::default();
        break_glass.register(&mut registry);
        // Series that exist from the start, so ratios and increases are defined at zero.
        for result in ["hit", "miss"] {
            cache_requests.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        for result in ["ok", "rejected"] {
            reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        Metrics {
            registry,
            decisions,
            decision_duration,
            registry_requests,
            cache_requests,
            config_info,
            generation: Mutex::new(None),
            reloads,
            sync_errors,
            coverage,
            coverage_reason: Mutex::new(None),
            unverified_images,
            drift_images,
            inventory_reports,
            break_glass,
        }
    }

    /// The break-glass gauge and counter.
    pub fn break_glass(&self) -> &crate::breakglass::BreakGlassMetrics {
        &self.break_glass
    }

    /// Sets the inventory gauges.
    pub fn set_inventory(&self, unverified: i64, drift: i64) {
        self.unverified_images.set(unverified);
        self.drift_images.set(drift);
    }

    /// Counts one inventory report; `source` is `startup`, `event` or `generation …` (kept as `generation`).
    pub fn inventory_report(&self, kind: &'static str, source: &str) {
        let source = if source.starts_with("generation") { "generation" } else { source };
        let source = if matches!(source, "startup" | "event" | "scan" | "generation") { source } else { OTHER };
        self.inventory_reports.get_or_create(&InventoryLabels { kind, source: source.to_string() }).inc();
    }

    /// Sets `pullgate_node_coverage`: 1 with reason `ok` when covered, else 0 with the
    /// failed check's name. Only the newest reason has a series.
    pub fn set_coverage(&self, covered: bool, reason: &str) {
        let reason: String = reason.chars().take(MAX_GENERATION_LABEL).collect();
        let mut current = self.coverage_reason.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.as_ref().filter(|old| **old != reason) {
            self.coverage.remove(&ReasonLabels { reason: old.clone() });
        }
        self.coverage.get_or_create(&ReasonLabels { reason: reason.clone() }).set(i64::from(covered));
        *current = Some(reason);
    }

    /// Records one decision: `verdict` is `allow` or `deny`, `mode` is
    /// `enforce` or `audit`, `source` one of `cache`, `verify`, `allowlist`,
    /// `policy`, `failure-policy`, `input` (other values count as `other`);
    /// `duration` is the time from receiving the request to the decision.
    pub fn record_decision(&self, verdict: &str, mode: &str, source: &str, duration: Duration) {
        let labels = DecisionLabels {
            result: known(RESULTS, verdict),
            mode: known(MODES, mode),
            source: known(SOURCES, source),
        };
        self.decisions.get_or_create(&labels).inc();
        self.decision_duration.get_or_create(&SourceLabels { source: labels.source }).observe(duration.as_secs_f64());
    }

    /// A registry-client observer counting every HTTP request by registry
    /// host and status class; pass it as `ClientOptions::observer`.
    pub fn registry_observer(&self) -> pullgate_registry::RequestObserver {
        let requests = self.registry_requests.clone();
        Arc::new(move |registry: &str, status: &str| requests.observe(registry, status))
    }

    /// Counts a decision-cache hit.
    pub fn cache_hit(&self) {
        self.cache_requests.get_or_create(&ResultLabels { result: "hit" }).inc();
    }

    /// Counts a decision-cache miss.
    pub fn cache_miss(&self) {
        self.cache_requests.get_or_create(&ResultLabels { result: "miss" }).inc();
    }

    /// Makes `id` the config generation in force: `pullgate_config_info`
    /// shows 1 on its label and no longer shows the previous one.
    pub fn set_generation(&self, id: &str) {
        let id: String = id.chars().take(MAX_GENERATION_LABEL).collect();
        let mut current = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.as_ref().filter(|old| **old != id) {
            self.config_info.remove(&GenerationLabels { generation: old.clone() });
        }
        self.config_info.get_or_create(&GenerationLabels { generation: id.clone() }).set(1);
        *current = Some(id);
    }

    /// Counts a config reload: `ok` when the new config was applied, false
    /// when it was rejected (the last good one stays in force).
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a config sync error.
    pub fn sync_error(&self) {
        self.sync_errors.inc();
    }

    /// The metrics in the Prometheus text exposition format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut open_metrics, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        to_text_format(&open_metrics)
    }
}

/// Rewrites the OpenMetrics text `prometheus-client` produces into the
/// Prometheus 0.0.4 text format: a counter's `HELP` and `TYPE` lines name
/// its `_total` sample (OpenMetrics names the family without the suffix),
/// and there is no `# EOF` line. Every other line is the same in both.
fn to_text_format(open_metrics: &str) -> String {
    let counters: HashSet<&str> =
        open_metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open_metrics.len() + 16 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `value` when it is one of `allowed`, else `other`.
fn known(allowed: &[&'static str], value: &str) -> &'static str {
    allowed.iter().find(|a| **a == value).copied().unwrap_or(OTHER)
}

/// A registry host as the client names it: `host[:port]`, no spaces or quotes.
fn is_host_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
}

/// The registry client's status classes: `NNN`, `token-NNN`, `timeout`, `error`.
fn is_status_class(s: &str) -> bool {
    let code = |c: &str| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit());
    code(s) || s.strip_prefix("token-").is_some_and(code) || s == "timeout" || s == "error"
}

/// Why the metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error(
        "binding the metrics endpoint to {addr}: {source}; pick another --metrics-addr or disable it with --metrics-addr off"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the metrics endpoint's listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Binds `addr` and serves `GET /metrics` until `shutdown` turns true (or its sender is dropped).
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    let listener = bind(addr).await?;
    serve(listener, metrics, shutdown).await;
    Ok(())
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true (or its
/// sender is dropped); connections still open then are closed.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) {
    serve_with(listener, metrics, shutdown, HEAD_TIMEOUT).await
}

async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    head_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "metrics endpoint listening on /metrics");
    }
    loop {
        if *shutdown.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(peer = %peer, "metrics endpoint busy; closing the connection");
                        continue;
                    };
                    let metrics = metrics.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = handle(stream, &metrics, head_timeout).await {
                            tracing::debug!(peer = %peer, error = %e, "metrics connection ended early");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tasks.shutdown().await;
    tracing::info!("metrics endpoint stopped");
}

/// Reads one request head, writes one response, closes.
async fn handle(mut stream: TcpStream, metrics: &Metrics, head_timeout: Duration) -> std::io::Result<()> {
    let head = match tokio::time::timeout(head_timeout, read_head(&mut stream)).await {
        Err(_) => {
            return respond(&mut stream, 408, "Request Timeout", "text/plain", b"request head too slow\n", &[]).await;
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Head::Closed)) => return Ok(()),
        Ok(Ok(Head::TooLarge)) => {
            return respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
                &[],
            )
            .await;
        }
        Ok(Ok(Head::Complete(h))) => h,
    };
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut stream, 400, "Bad Request", "text/plain", b"malformed request line\n", &[]).await;
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut stream, 400, "Bad Request", "text/plain", b"HTTP/1.x only\n", &[]).await;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return respond(&mut stream, 404, "Not Found", "text/plain", b"not found; metrics are at /metrics\n", &[])
            .await;
    }
    match method {
        "GET" => respond(&mut stream, 200, "OK", CONTENT_TYPE, metrics.encode().as_bytes(), &[]).await,
        "HEAD" => {
            let len = metrics.encode().len();
            let head = response_head(200, "OK", CONTENT_TYPE, len, &[]);
            write_all(&mut stream, head.as_bytes()).await
        }
        _ => {
            respond(&mut stream, 405, "Method Not Allowed", "text/plain", b"use GET\n", &[("Allow", "GET, HEAD")]).await
        }
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

/// Reads until the blank line ending the request head, at most [`MAX_HEAD_BYTES`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        // Look for the end of the head in what was just read (and the 3 bytes before it).
        let from = len.saturating_sub(3);
        len += n;
        let window = &buf[from..len];
        if window.windows(4).any(|w| w == b"\r\n\r\n") || window.windows(2).any(|w| w == b"\n\n") {
            buf.truncate(len);
            return Ok(Head::Complete(buf));
        }
    }
}

fn response_head(status: u16, reason: &str, content_type: &str, len: usize, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut out = response_head(status, reason, content_type, body.len(), extra).into_bytes();
    out.extend_from_slice(body);
    write_all(stream, &out).await
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "writing the response timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` (labels exactly as encoded), if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn decisions_and_durations() {
        let m = Metrics::new();
        m.record_decision("allow", "enforce", "verify", Duration::from_millis(120));
        m.record_decision("allow", "enforce", "verify", Duration::from_millis(80));
        m.record_decision("deny", "audit", "cache", Duration::from_micros(20));
        m.record_decision("maybe", "sometimes", "elsewhere", Duration::from_secs(100));
        let t = m.encode();
        assert_eq!(sample(&t, r#"pullgate_decisions_total{result="allow",mode="enforce",source="verify"}"#), Some(2.0));
        assert_eq!(sample(&t, r#"pullgate_decisions_total{result="deny",mode="audit",source="cache"}"#), Some(1.0));
        assert_eq!(
            sample(&t, r#"pullgate_decisions_total{result="other",mode="other",source="other"}"#),
            Some(1.0),
            "unknown values are bounded to `other`:\n{t}"
        );
        assert!(t.contains("# TYPE pullgate_decisions_total counter\n"), "{t}");
        assert!(t.contains("# HELP pullgate_decisions_total "), "{t}");
        // Histogram: per-source counts, cumulative buckets, sum in seconds.
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_count{source="verify"}"#), Some(2.0));
        let sum = sample(&t, r#"pullgate_decision_duration_seconds_sum{source="verify"}"#).unwrap();
        assert!((sum - 0.2).abs() < 1e-9, "{sum}");
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="0.05",source="verify"}"#), Some(0.0));
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="0.1",source="verify"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="0.25",source="verify"}"#), Some(2.0));
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="0.00001",source="cache"}"#), Some(0.0));
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="0.000025",source="cache"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="30.0",source="other"}"#), Some(0.0));
        assert_eq!(sample(&t, r#"pullgate_decision_duration_seconds_bucket{le="+Inf",source="other"}"#), Some(1.0));
        assert!(t.contains("# TYPE pullgate_decision_duration_seconds histogram\n"), "{t}");
    }

    #[test]
    fn registry_latency_is_a_histogram_per_host() {
        let m = Metrics::new();
        let observe = registry_latency_observer();
        observe("latency-test.example:5000", Duration::from_millis(30));
        observe("bad host\n", Duration::from_millis(1));
        let t = m.encode();
        let series =
            r#"pullgate_registry_request_duration_seconds_bucket{le="0.05",registry="latency-test.example:5000"}"#;
        assert_eq!(sample(&t, series), Some(1.0), "{t}");
        assert!(!t.contains("bad host"), "{t}");
    }

    #[test]
    fn registry_requests_are_bounded() {
        let m = Metrics::new();
        let observe = m.registry_observer();
        observe("ghcr.io", "200");
        observe("ghcr.io", "200");
        observe("ghcr.io", "token-200");
        observe("localhost:5000", "timeout");
        observe("ghcr.io", "weird status\n");
        observe("bad\"host", "404");
        for i in 0..MAX_REGISTRY_LABELS + 5 {
            observe(&format!("r{i}.example"), "404");
        }
        let t = m.encode();
        assert_eq!(sample(&t, r#"pullgate_registry_requests_total{registry="ghcr.io",status="200"}"#), Some(2.0));
        assert_eq!(sample(&t, r#"pullgate_registry_requests_total{registry="ghcr.io",status="token-200"}"#), Some(1.0));
        assert_eq!(
            sample(&t, r#"pullgate_registry_requests_total{registry="localhost:5000",status="timeout"}"#),
            Some(1.0)
        );
        assert_eq!(sample(&t, r#"pullgate_registry_requests_total{registry="ghcr.io",status="other"}"#), Some(1.0));
        // ghcr.io and localhost:5000 hold two of the host slots; the quoted
        // host and every r*.example host past the limit share `other`.
        let admitted = MAX_REGISTRY_LABELS - 2;
        let to_other = 1 + (MAX_REGISTRY_LABELS + 5 - admitted);
        assert_eq!(
            sample(&t, r#"pullgate_registry_requests_total{registry="other",status="404"}"#),
            Some(to_other as f64),
            "{t}"
        );
        assert!(t.contains(&format!("registry=\"r{}.example\"", admitted - 1)), "{t}");
        assert!(!t.contains(&format!("registry=\"r{admitted}.example\"")), "{t}");
        let series = t.lines().filter(|l| l.starts_with("pullgate_registry_requests_total{")).count();
        assert!(series <= MAX_REGISTRY_LABELS + 4, "{series} series");
        assert!(!t.contains("bad\""), "{t}");
    }

    #[test]
    fn cache_generation_reloads_sync_errors() {
        let m = Metrics::new();
        let t = m.encode();
        assert_eq!(sample(&t, r#"pullgate_cache_requests_total{result="hit"}"#), Some(0.0), "present from the start");
        assert_eq!(sample(&t, r#"pullgate_config_reloads_total{result="rejected"}"#), Some(0.0));
        assert_eq!(sample(&t, "pullgate_sync_errors_total"), Some(0.0));
        assert!(!t.contains("pullgate_config_info{"), "no generation yet:\n{t}");
        m.cache_hit();
        m.cache_hit();
        m.cache_miss();
        m.set_generation("0123456789abcdef");
        m.reload(true);
        m.reload(false);
        m.set_generation("fedcba9876543210");
        m.set_generation("fedcba9876543210");
        m.sync_error();
        let t = m.encode();
        assert_eq!(sample(&t, r#"pullgate_cache_requests_total{result="hit"}"#), Some(2.0));
        assert_eq!(sample(&t, r#"pullgate_cache_requests_total{result="miss"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"pullgate_config_info{generation="fedcba9876543210"}"#), Some(1.0));
        assert!(!t.contains("0123456789abcdef"), "the previous generation is gone:\n{t}");
        assert_eq!(t.matches("pullgate_config_info{").count(), 1);
        assert_eq!(sample(&t, r#"pullgate_config_reloads_total{result="ok"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"pullgate_config_reloads_total{result="rejected"}"#), Some(1.0));
        assert_eq!(sample(&t, "pullgate_sync_errors_total"), Some(1.0));
        assert!(t.contains("# TYPE pullgate_config_info gauge\n"), "{t}");
    }

    #[test]
    fn text_format_is_prometheus_0_0_4() {
        let m = Metrics::new();
        m.sync_error();
        m.record_decision("allow", "enforce", "allowlist", Duration::from_micros(300));
        m.registry_observer()("ghcr.io", "200");
        m.set_generation("g1");
        let t = m.encode();
        assert!(!t.contains("# EOF"), "{t}");
        assert!(t.ends_with('\n'));
        // Every sample belongs to a family declared by a TYPE line before it.
        let mut declared: Vec<(String, String)> = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                declared.push((name.to_string(), kind.to_string()));
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = declared.last().expect("a TYPE line first");
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}")),
                _ => name == family,
            };
            assert!(ok, "sample {name} under TYPE {family} {kind}:\n{t}");
        }
        for (name, kind) in [
            ("pullgate_decisions_total", "counter"),
            ("pullgate_decision_duration_seconds", "histogram"),
            ("pullgate_registry_requests_total", "counter"),
            ("pullgate_cache_requests_total", "counter"),
            ("pullgate_config_info", "gauge"),
            ("pullgate_config_reloads_total", "counter"),
            ("pullgate_sync_errors_total", "counter"),
        ] {
            assert!(declared.iter().any(|(n, k)| n == name && k == kind), "{name} declared as {kind}:\n{t}");
        }
    }

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("answer in time").unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn endpoint_serves_metrics_and_stops() {
        let m = Arc::new(Metrics::new());
        m.record_decision("deny", "enforce", "policy", Duration::from_millis(1));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, m.clone(), rx));

        let r = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
        assert_eq!(
            sample(body, r#"pullgate_decisions_total{result="deny",mode="enforce",source="policy"}"#),
            Some(1.0)
        );

        let r = get(addr, b"GET /metrics?x=1 HTTP/1.0\n\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        let r = get(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = get(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD"), "{r}");
        let r = get(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.ends_with("\r\n\r\n"), "{r}");
        let r = get(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        // A head that never ends within the limit is refused.
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HEAD_BYTES {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let r = get(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stops").unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
    }

    #[tokio::test]
    async fn slow_clients_time_out() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve_with(listener, Arc::new(Metrics::new()), rx, Duration::from_millis(200)));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        // The head never completes: the server answers 408 once its head timeout passes.
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("closed in time").unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 "), "{}", String::from_utf8_lossy(&out));
        drop(tx);
        server.await.unwrap();
    }
}
