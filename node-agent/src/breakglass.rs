//! Timed break-glass: `breakGlass = { until = "…", reason = "…" }` allows
//! every pull, loudly, until a time at most 24 hours after the config was
//! loaded.
//!
//! This module owns the validated [`BreakGlass`] value, the label every
//! decision it allows carries, its metrics (`pullgate_break_glass_active`
//! and `pullgate_break_glass_decisions_total`) and the task that warns once
//! a minute while it is active. Expiry needs no reload: every decision asks
//! [`BreakGlass::active_at`] with the current time.
//!
//! Break-glass is the last stage of a decision: the cache only ever holds
//! what the typed policy decided, never a break-glass allow, so nothing
//! decided during break-glass outlives it, and a verdict cached before it
//! is still labelled as a break-glass allow when break-glass turns it into one.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::{Duration, SystemTime};

/// Longest a break-glass may last, counted from when the config is loaded.
pub const MAX_BREAK_GLASS: Duration = Duration::from_secs(24 * 3600);
/// Longest break-glass reason.
pub const MAX_REASON_LEN: usize = 200;
/// How often the agent warns while break-glass is active.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// An accepted break-glass: allow everything until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    until: SystemTime,
    until_text: String,
    reason: String,
}

impl BreakGlass {
    /// Validates `until` (RFC 3339 UTC, `…Z`) and `reason` against `now`: the
    /// end must lie in the future and at most [`MAX_BREAK_GLASS`] ahead, the
    /// reason be one non-empty line. Errors name the field (`until`, `reason`).
    pub fn parse(until: &str, reason: &str, now: SystemTime) -> Result<BreakGlass, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let end = match humantime::parse_rfc3339(until) {
            Ok(t) if t <= now => {
                errors
                    .push(("until", format!("{until} is not in the future: break-glass has already ended; remove it")));
                None
            }
            Ok(t) if t.duration_since(now).unwrap_or_default() > MAX_BREAK_GLASS => {
                errors.push(("until", format!("{until} is more than 24 hours ahead; break-glass is for emergencies")));
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(("until", format!("{until:?} is not an RFC 3339 UTC time like 2026-12-01T18:00:00Z: {e}")));
                None
            }
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
            errors.push(("reason", format!("must be one non-empty line of at most {MAX_REASON_LEN} bytes")));
        }
        match end {
            Some(until) if errors.is_empty() => {
                let until_text = humantime::format_rfc3339_seconds(until).to_string();
                Ok(BreakGlass { until, until_text, reason: reason.to_string() })
            }
            _ => Err(errors),
        }
    }

    /// True while `now` is before the end.
    pub fn active_at(&self, now: SystemTime) -> bool {
        now < self.until
    }

    /// When it ends.
    pub fn until(&self) -> SystemTime {
        self.until
    }

    /// The operator's reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// `break-glass until T (reason)`: the prefix of every decision it allows.
    pub fn label(&self) -> String {
        format!("break-glass until {} ({})", self.until_text, self.reason)
    }
}

/// Validates `breakGlass` from `pullgate.toml` against the clock now; each
/// problem becomes an issue at `breakGlass.until` or `breakGlass.reason`.
///
/// A break-glass that has already ended is a warning, not an issue: it allows
/// nothing any more, and a node that restarts with the old config still in
/// place must get its typed policy back, not lose its config.
pub(crate) fn parse_config(
    until: &str,
    reason: &str,
    issues: &mut Vec<crate::config::Issue>,
    warnings: &mut Vec<crate::config::Issue>,
) -> Option<BreakGlass> {
    let now = SystemTime::now();
    if humantime::parse_rfc3339(until).is_ok_and(|t| t <= now) {
        warnings.push(crate::config::issue(
            "breakGlass.until",
            format!("{until} has passed: break-glass has ended and allows nothing; remove it"),
        ));
        return None;
    }
    match BreakGlass::parse(until, reason, now) {
        Ok(b) => Some(b),
        Err(errors) => {
            for (field, why) in errors {
                issues.push(crate::config::issue(&format!("breakGlass.{field}"), why));
            }
            None
        }
    }
}

/// The break-glass metrics, registered by [`crate::metrics::Metrics`].
#[derive(Debug, Clone, Default)]
pub struct BreakGlassMetrics {
    active: Gauge,
    decisions: Counter,
}

impl BreakGlassMetrics {
    /// Registers both metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pullgate_break_glass_active",
            "1 while a breakGlass in the config in force is active (every pull allowed), else 0",
            self.active.clone(),
        );
        registry.register(
            "pullgate_break_glass_decisions",
            "Decisions break-glass turned into an allow or allowed with its label",
            self.decisions.clone(),
        );
    }

    /// Sets the active gauge.
    pub fn set_active(&self, active: bool) {
        self.active.set(i64::from(active));
    }

    /// Counts one decision made under break-glass.
    pub fn decision(&self) {
        self.decisions.inc();
    }
}

/// What the warning task asks each minute: the break-glass in force, if any.
pub trait Current: Send + Sync {
    /// The break-glass of the config in force.
    fn break_glass(&self) -> Option<BreakGlass>;
}

/// Warns once a minute while the config in force has an active break-glass,
/// once when it ends, and keeps the gauge current; returns when `shutdown`
/// turns true or its sender is dropped.
pub async fn run(
    current: std::sync::Arc<dyn Current>,
    metrics: Option<BreakGlassMetrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WARN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_active = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        was_active = warn_once(current.break_glass(), SystemTime::now(), was_active, metrics.as_ref());
    }
}

/// One tick of [`run`]: the WARN (or the end notice) and the gauge; returns
/// whether break-glass is active now.
fn warn_once(bg: Option<BreakGlass>, now: SystemTime, was_active: bool, metrics: Option<&BreakGlassMetrics>) -> bool {
    let active = bg.as_ref().filter(|b| b.active_at(now));
    if let Some(m) = metrics {
        m.set_active(active.is_some());
    }
    match (active, was_active) {
        (Some(b), _) => {
            let left = b.until().duration_since(now).unwrap_or_default().as_secs();
            tracing::warn!(until = %b.until_text, reason = %b.reason, seconds_left = left,
                "BREAK-GLASS ACTIVE: every pull is allowed without verification");
            true
        }
        (None, true) => {
            tracing::warn!("break-glass ended: decisions follow the policy again");
            false
        }
        (None, false) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn until_must_be_future_and_within_a_day() {
        let now = at("2026-12-01T12:00:00Z");
        let ok = BreakGlass::parse("2026-12-01T18:00:00Z", "INC-42 registry down", now).unwrap();
        assert!(ok.active_at(now) && !ok.active_at(at("2026-12-01T18:00:00Z")), "expires by itself");
        assert_eq!(ok.label(), "break-glass until 2026-12-01T18:00:00Z (INC-42 registry down)");
        assert!(BreakGlass::parse("2026-12-02T12:00:00Z", "r", now).is_ok(), "exactly 24 h is allowed");
        let long = BreakGlass::parse("2026-12-02T12:00:01Z", "r", now).unwrap_err();
        assert!(long[0].0 == "until" && long[0].1.contains("24 hours"), "{long:?}");
        let past = BreakGlass::parse("2026-12-01T11:59:59Z", "r", now).unwrap_err();
        assert!(past[0].1.contains("not in the future"), "{past:?}");
        let junk = BreakGlass::parse("tomorrow", "", now).unwrap_err();
        assert_eq!(junk.iter().map(|e| e.0).collect::<Vec<_>>(), ["until", "reason"]);
        assert!(BreakGlass::parse("2026-12-01T13:00:00Z", "two\nlines", now).is_err());
        assert!(BreakGlass::parse("2026-12-01T13:00:00Z", &"x".repeat(201), now).is_err());
    }

    #[test]
    fn the_warning_tick_follows_expiry_and_sets_the_gauge() {
        let now = at("2026-12-01T12:00:00Z");
        let bg = BreakGlass::parse("2026-12-01T12:01:00Z", "r", now).unwrap();
        let m = BreakGlassMetrics::default();
        assert!(warn_once(Some(bg.clone()), now, false, Some(&m)));
        assert_eq!(m.active.get(), 1);
        assert!(!warn_once(Some(bg), at("2026-12-01T12:01:00Z"), true, Some(&m)), "ended without a reload");
        assert_eq!(m.active.get(), 0);
        assert!(!warn_once(None, now, false, Some(&m)));
    }

    #[tokio::test]
    async fn the_warning_task_stops_on_shutdown() {
        struct None_;
        impl Current for None_ {
            fn break_glass(&self) -> Option<BreakGlass> {
                None
            }
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(std::sync::Arc::new(None_), None, rx));
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stopped").unwrap();
    }
}
