//! The agent's side of the cluster tier: one [`ClusterTier`] per process
//! for the `[cluster]` settings in force (kept across reloads that leave
//! `[cluster]` unchanged, so its connection, breaker and counters survive;
//! replaced when they change), and its Prometheus metrics.
//!
//! The tier connects lazily: a Redis that is down when the agent starts
//! only means lookups fall back to the registries until it answers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use pullgate_cluster::{ClusterTier, Event, Observer, Settings};
use pullgate_registry::shared::{Outcome, SharedKind, SharedTier};
use std::sync::{Arc, Mutex, OnceLock};

static TIER: Mutex<Option<(Settings, Arc<ClusterTier>)>> = Mutex::new(None);
static METRICS: OnceLock<ClusterMetrics> = OnceLock::new();

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The cluster tier's metrics (process-wide: the tier outlives config generations).
#[derive(Default)]
struct ClusterMetrics {
    lookups: Family<LookupLabels, Counter>,
    published: Family<KindLabels, Counter>,
    fallbacks: Counter,
    breaker_open: Gauge,
}

fn metrics() -> &'static ClusterMetrics {
    METRICS.get_or_init(|| {
        let m = ClusterMetrics::default();
        for kind in [SharedKind::Content, SharedKind::Referrers, SharedKind::Tag] {
            for outcome in ["hit", "miss", "poisoned", "waited-out"] {
                m.lookups.get_or_create(&LookupLabels { kind: kind.as_str(), outcome }).inc_by(0);
            }
        }
        m
    })
}

/// Registers the cluster tier's metrics in `registry` (every agent exports
/// them; they stay at zero without `[cluster]`).
pub fn register(registry: &mut prometheus_client::registry::Registry) {
    let m = metrics();
    registry.register(
        "pullgate_cluster_lookups",
        "Cluster tier lookups by kind (content, referrers, tag) and outcome (hit, miss, poisoned: a value that failed its digest or parse check, waited-out)",
        m.lookups.clone(),
    );
    registry.register(
        "pullgate_cluster_published",
        "Values this agent published to the cluster tier",
        m.published.clone(),
    );
    registry.register(
        "pullgate_cluster_fallbacks",
        "Cluster tier operations that skipped or failed on Redis (the registry was used instead)",
        m.fallbacks.clone(),
    );
    registry.register(
        "pullgate_cluster_breaker_open",
        "1 while Redis is skipped after repeated failures (circuit breaker open), else 0",
        m.breaker_open.clone(),
    );
}

fn observer() -> Observer {
    Arc::new(|e: Event| {
        let m = metrics();
        match e {
            Event::Lookup { kind, outcome } => {
                let outcome = match outcome {
                    Outcome::Hit => "hit",
                    Outcome::Miss => "miss",
                    Outcome::Poisoned => "poisoned",
                    Outcome::WaitedOut => "waited-out",
                };
                m.lookups.get_or_create(&LookupLabels { kind: kind.as_str(), outcome }).inc();
            }
            Event::Published { kind } => {
                m.published.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
            }
            Event::Fallback => {
                m.fallbacks.inc();
            }
            Event::Breaker { open } => {
                m.breaker_open.set(i64::from(open));
            }
        }
    })
}

/// The tier for `cfg`'s `[cluster]` (none without one).
pub fn tier(cfg: &crate::config::Config) -> Option<Arc<dyn SharedTier>> {
    let settings = &cfg.cluster.as_ref()?.settings;
    let mut slot = TIER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((s, t)) = slot.as_ref()
        && s == settings
    {
        return Some(t.clone());
    }
    match ClusterTier::new(settings.clone(), Some(observer())) {
        Ok(t) => {
            let t = Arc::new(t);
            tracing::info!(
                mode = ?settings.mode,
                urls = ?settings.urls,
                key_prefix = %settings.key_prefix,
                "cluster tier: sharing fetched artifacts through Redis (checked on every read)"
            );
            *slot = Some((settings.clone(), t.clone()));
            Some(t)
        }
        Err(e) => {
            tracing::error!(error = %e, "cluster tier unusable; fetching from registries only");
            None
        }
    }
}

/// The tier in use, if any (for `status`).
pub fn current() -> Option<Arc<ClusterTier>> {
    TIER.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, t)| t.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_exposition() {
        let m = crate::metrics::Metrics::new();
        let observe = observer();
        observe(Event::Lookup { kind: SharedKind::Referrers, outcome: Outcome::Poisoned });
        observe(Event::Breaker { open: true });
        let text = m.encode();
        assert!(
            text.lines().any(|l| l.starts_with("pullgate_cluster_lookups_total{")
                && l.contains("kind=\"referrers\"")
                && l.contains("outcome=\"poisoned\"")
                && !l.ends_with(" 0")),
            "{text}"
        );
        assert!(text.contains("pullgate_cluster_breaker_open 1"), "{text}");
        observe(Event::Breaker { open: false });
        assert!(m.encode().contains("pullgate_cluster_breaker_open 0"));
    }
}
