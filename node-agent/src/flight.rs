//! Single flight: concurrent requests for the same decision key share one
//! evaluation. The first request spawns it on its own task (so it finishes
//! and fills the cache even if that request's client gives up); the others
//! wait for the same result, each within its own deadline.

use crate::cache::Evaluation;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Evaluations in progress, by decision key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Shared<BoxFuture<'static, Evaluation>>>>,
}

/// Removes a flight from the map when dropped.
struct Leave {
    flights: Arc<Flights>,
    key: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.flights.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl Flights {
    /// Joins the evaluation in progress for `key`, or starts one with `make`.
    /// Returns the shared result and whether this caller started it.
    pub fn join(
        self: &Arc<Self>,
        key: &str,
        make: impl FnOnce(String) -> BoxFuture<'static, Evaluation>,
    ) -> (Shared<BoxFuture<'static, Evaluation>>, bool) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(key) {
            return (f.clone(), false);
        }
        let work = make(key.to_string());
        let flights = self.clone();
        let owned_key = key.to_string();
        let task = tokio::spawn(async move {
            // Leaves the map when the work ends, however it ends (a panic
            // included): a failed flight is never joined again. The leader
            // caches the result inside `work`, so new requests find it.
            let _leave = Leave { flights, key: owned_key };
            work.await
        });
        let shared =
            async move { task.await.unwrap_or_else(|e| Evaluation::error(format!("verification task failed: {e}"))) }
                .boxed()
                .shared();
        map.insert(key.to_string(), shared.clone());
        (shared, true)
    }

    /// Evaluations in progress.
    pub fn in_progress(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Outcome;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_joins_run_once() {
        let flights = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let (f, _) = flights.join("k", |_| {
                let runs = runs.clone();
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Evaluation::error("done".into())
                })
            });
            waiters.push(tokio::spawn(f));
        }
        for w in waiters {
            assert_eq!(w.await.unwrap().outcome, Outcome::Error("done".into()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_progress(), 0, "finished flights are removed");
        let (_, leader) = flights.join("k", |_| Box::pin(async { Evaluation::error("again".into()) }));
        assert!(leader, "a later request starts a new flight");
    }

    #[tokio::test]
    async fn a_panicking_flight_is_not_joined_again() {
        let flights = Arc::new(Flights::default());
        let (f, _) = flights.join("k", |_| Box::pin(async { panic!("verifier bug") }));
        assert!(matches!(f.await.outcome, Outcome::Error(ref why) if why.contains("verification task failed")));
        assert_eq!(flights.in_progress(), 0);
        let (_, leader) = flights.join("k", |_| Box::pin(async { Evaluation::error("fresh".into()) }));
        assert!(leader, "the next request starts afresh");
    }

    #[tokio::test]
    async fn a_waiter_giving_up_does_not_cancel_the_work() {
        let flights = Arc::new(Flights::default());
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let (f, _) = flights.join("k", move |_| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Evaluation::error("x".into())
            })
        });
        assert!(tokio::time::timeout(Duration::from_millis(5), f).await.is_err());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
