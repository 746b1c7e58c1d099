//! Registry politeness under load: per-registry concurrency, a token bucket
//! per registry, a pause for everyone when a registry answers 429/503 with
//! `Retry-After`, and per-registry statistics (requests, 429s, latency).
//!
//! A registry is keyed by the host requests are sent to (a mirror and the
//! registry behind it are limited separately). Waiting for a permit or a
//! token is bounded by the request's deadline: a request that cannot start
//! in time fails with a deadline error instead of queueing forever.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Latency bucket bounds in seconds (the agent's histogram uses the same).
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Most registries tracked; requests to further ones share one entry.
const MAX_REGISTRIES: usize = 1024;

/// Rate settings for one registry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (0: unlimited).
    pub per_second: f64,
    /// Requests that may be sent at once after a quiet period.
    pub burst: u32,
}

/// The default bounds a runaway storm at one endpoint without slowing a
/// verification that examines many attached artifacts (the examination
/// budget, not the bucket, bounds those).
impl Default for Rate {
    fn default() -> Self {
        Rate { per_second: 1000.0, burst: 1000 }
    }
}

/// What was sent to one registry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryStats {
    /// Requests answered (any status) or failed in transport.
    pub requests: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Sum of request latencies in seconds.
    pub latency_sum: f64,
    /// Requests per latency bucket (cumulative counts are computed by the reader).
    pub latency_buckets: Vec<u64>,
}

/// Per-registry gates and statistics for one client.
#[derive(Debug, Default)]
pub struct Polite {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    stats: Mutex<BTreeMap<String, RegistryStats>>,
}

#[derive(Debug)]
struct Gate {
    permits: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
    /// No request starts before this (a `Retry-After` from the registry).
    paused_until: Option<Instant>,
}

impl Bucket {
    /// Takes a token now, or says how long to wait for one.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Some(until - now);
            }
            self.paused_until = None;
        }
        if self.rate.per_second <= 0.0 {
            return None;
        }
        let burst = f64::from(self.rate.burst.max(1));
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate.per_second).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate.per_second))
        }
    }
}

/// Held while a request to a registry is in flight.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

impl Polite {
    /// Waits (until `deadline` at most) for a concurrency permit and a
    /// token of `registry`; `None` when the deadline comes first.
    pub async fn acquire(&self, registry: &str, concurrency: usize, rate: Rate, deadline: Instant) -> Option<Permit> {
        let gate = self.gate(registry, concurrency, rate);
        let permit = tokio::time::timeout_at(deadline, gate.permits.clone().acquire_owned()).await.ok()?.ok()?;
        loop {
            let wait = gate.bucket.lock().unwrap_or_else(|p| p.into_inner()).take(Instant::now());
            match wait {
                None => return Some(Permit { _permit: permit }),
                Some(w) if Instant::now() + w >= deadline => return None,
                Some(w) => tokio::time::sleep(w).await,
            }
        }
    }

    /// Holds every request to `registry` back for `wait` (a `Retry-After`).
    pub fn pause(&self, registry: &str, wait: Duration) {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = gates.get(registry) {
            let mut b = g.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let until = Instant::now() + wait;
            b.paused_until = Some(b.paused_until.map_or(until, |u| u.max(until)));
        }
    }

    /// Records one request: its status (`None` for a transport failure) and latency.
    pub fn record(&self, registry: &str, status: Option<u16>, latency: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let key = if stats.len() >= MAX_REGISTRIES && !stats.contains_key(registry) { "other" } else { registry };
        let s = stats.entry(key.to_string()).or_default();
        if s.latency_buckets.is_empty() {
            s.latency_buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        s.requests += 1;
        if status == Some(429) {
            s.throttled += 1;
        }
        let secs = latency.as_secs_f64();
        s.latency_sum += secs;
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        s.latency_buckets[i] += 1;
    }

    /// Statistics by registry.
    pub fn stats(&self) -> BTreeMap<String, RegistryStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn gate(&self, registry: &str, concurrency: usize, rate: Rate) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = gates.get(registry) {
            return g.clone();
        }
        let g = Arc::new(Gate {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            bucket: Mutex::new(Bucket {
                rate,
                tokens: f64::from(rate.burst.max(1)),
                last: Instant::now(),
                paused_until: None,
            }),
        });
        if gates.len() < MAX_REGISTRIES {
            gates.insert(registry.to_string(), g.clone());
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_spaces_requests_after_the_burst() {
        let p = Polite::default();
        let rate = Rate { per_second: 10.0, burst: 2 };
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        for _ in 0..4 {
            drop(p.acquire("r", 8, rate, far).await.expect("permit"));
        }
        // Two from the burst, then one every 100 ms.
        assert_eq!(Instant::now() - start, Duration::from_millis(200));
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(p.acquire("r", 8, rate, soon).await.is_none(), "a token 100 ms away is past a 50 ms deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_everyone_back_and_concurrency_is_bounded() {
        let p = Polite::default();
        let rate = Rate { per_second: 0.0, burst: 1 };
        let far = Instant::now() + Duration::from_secs(60);
        drop(p.acquire("r", 1, rate, far).await);
        p.pause("r", Duration::from_secs(3));
        let start = Instant::now();
        let held = p.acquire("r", 1, rate, far).await.expect("permit");
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(p.acquire("r", 1, rate, soon).await.is_none(), "the only permit is held");
        drop(held);
        assert!(p.acquire("r", 1, rate, soon).await.is_some());
    }

    #[test]
    fn stats_count_requests_throttles_and_latency() {
        let p = Polite::default();
        p.record("r", Some(200), Duration::from_millis(3));
        p.record("r", Some(429), Duration::from_millis(700));
        p.record("r", None, Duration::from_secs(30));
        let s = &p.stats()["r"];
        assert_eq!((s.requests, s.throttled), (3, 1));
        assert_eq!(s.latency_buckets[0], 1);
        assert_eq!(s.latency_buckets[7], 1);
        assert_eq!(s.latency_buckets[LATENCY_BUCKETS.len()], 1);
    }
}
