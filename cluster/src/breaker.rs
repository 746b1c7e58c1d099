//! The circuit breaker in front of Redis: after a few consecutive failures
//! the tier is skipped (every lookup goes straight to the registry, costing
//! no timeout) until a cool-down has passed; then one probe decides whether
//! it closes again. Time is passed in, so the logic is tested without sleeps.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Redis is used; `failures` consecutive operations failed so far.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Redis is skipped until `until`.
    Open {
        /// End of the cool-down.
        until: Instant,
    },
    /// One probe operation is under way; everything else skips Redis.
    HalfOpen,
}

/// A change of state worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The breaker opened: Redis is skipped.
    Opened,
    /// A probe succeeded: Redis is used again.
    Closed,
}

/// A circuit breaker with a fixed failure threshold and cool-down.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    cooldown: Duration,
}

impl Breaker {
    /// A closed breaker that stays open for `cooldown` after opening.
    pub fn new(cooldown: Duration) -> Breaker {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }), cooldown }
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.lock()
    }

    /// True when the breaker is open or probing (Redis is being skipped).
    pub fn is_open(&self) -> bool {
        !matches!(self.state(), State::Closed { .. })
    }

    /// Whether an operation may use Redis at `now`. After the cool-down the
    /// first caller becomes the probe; the others keep skipping.
    pub fn allow(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// Records a successful operation.
    pub fn success(&self) -> Option<Transition> {
        let mut s = self.lock();
        let was_closed = matches!(*s, State::Closed { .. });
        *s = State::Closed { failures: 0 };
        (!was_closed).then_some(Transition::Closed)
    }

    /// Records a failed operation at `now`.
    pub fn failure(&self, now: Instant) -> Option<Transition> {
        let mut s = self.lock();
        match *s {
            State::Closed { failures } if failures + 1 < FAILURES_TO_OPEN => {
                *s = State::Closed { failures: failures + 1 };
                None
            }
            State::Closed { .. } | State::HalfOpen => {
                *s = State::Open { until: now + self.cooldown };
                Some(Transition::Opened)
            }
            // Operations started before the breaker opened finishing late.
            State::Open { .. } => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breaker::new(Duration::from_secs(5));
        let t = Instant::now();
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t), None);
        assert_eq!(b.success(), None, "closed stays closed");
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t), None);
        assert!(b.allow(t));
        assert_eq!(b.failure(t), Some(Transition::Opened));
        assert!(!b.allow(t), "open: skipped");
        assert!(!b.allow(t + Duration::from_millis(4999)));
        assert!(b.is_open());
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let b = Breaker::new(Duration::from_secs(5));
        let t = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            b.failure(t);
        }
        let later = t + Duration::from_secs(5);
        assert!(b.allow(later), "the first caller after the cool-down probes");
        assert_eq!(b.state(), State::HalfOpen);
        assert!(!b.allow(later), "others skip while the probe runs");
        // A failed probe opens it again for a full cool-down.
        assert_eq!(b.failure(later), Some(Transition::Opened));
        assert!(!b.allow(later + Duration::from_secs(4)));
        let again = later + Duration::from_secs(5);
        assert!(b.allow(again));
        assert_eq!(b.success(), Some(Transition::Closed));
        assert!(b.allow(again));
        assert!(!b.is_open());
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cooldown() {
        let b = Breaker::new(Duration::from_secs(5));
        let t = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            b.failure(t);
        }
        assert_eq!(b.failure(t + Duration::from_secs(4)), None);
        assert!(b.allow(t + Duration::from_secs(5)));
    }
}
