//! Delivery counters and the rate limit of drop warnings.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Minimum time between two warnings of one kind. Counters keep the exact totals.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Counters of webhook delivery since the start. Each event ends exactly once as delivered or as
/// one of the `dropped_*` outcomes, unless it is still queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events the receiver acknowledged with a 2xx status.
    pub delivered: u64,
    /// Failed attempts that were followed by another attempt.
    pub retried: u64,
    /// Events dropped by `enqueue` because `queue_capacity` events were waiting.
    pub dropped_queue_full: u64,
    /// Events dropped after their last attempt failed, or because they did not serialize.
    pub dropped_failed: u64,
    /// Events the receiver rejected with a 4xx status other than 408 and 429; never retried.
    pub dropped_rejected: u64,
    /// Events enqueued after shutdown began, or still undelivered at its deadline.
    pub dropped_shutdown: u64,
    /// Events accepted and not yet delivered or dropped, including those being sent.
    pub queued: u64,
}

impl WebhookStats {
    /// Returns the counters by outcome label, for a metric such as
    /// `switchboard_webhook_deliveries_total{outcome}`. `queued` is a gauge and is left out.
    pub fn outcomes(&self) -> [(&'static str, u64); 6] {
        [
            ("delivered", self.delivered),
            ("retried", self.retried),
            ("queue_full", self.dropped_queue_full),
            ("failed", self.dropped_failed),
            ("rejected", self.dropped_rejected),
            ("shutdown", self.dropped_shutdown),
        ]
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_failed: AtomicU64,
    pub(crate) dropped_rejected: AtomicU64,
    pub(crate) dropped_shutdown: AtomicU64,
    /// Accepted events not yet delivered or dropped. `queue_capacity` bounds it.
    pub(crate) queued: AtomicUsize,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_failed: self.dropped_failed.load(Ordering::Relaxed),
            dropped_rejected: self.dropped_rejected.load(Ordering::Relaxed),
            dropped_shutdown: self.dropped_shutdown.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed) as u64,
        }
    }

    /// Takes a queue slot, or returns false when `capacity` events are queued already.
    pub(crate) fn reserve(&self, capacity: usize) -> bool {
        let previous = self.queued.fetch_add(1, Ordering::AcqRel);
        if previous >= capacity {
            self.release(1);
            return false;
        }
        true
    }

    /// Frees the queue slots of `count` events that were delivered or dropped. It stops at 0,
    /// because shutdown may free the slot of an enqueue that is failing at the same moment.
    pub(crate) fn release(&self, count: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(count))
            });
    }
}

/// Lets one warning of a kind through per `WARN_INTERVAL`, without a lock, so a storm of drops
/// logs a line every few seconds instead of one per event.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    origin: Instant,
    /// Milliseconds after `origin` from which the next warning may be logged.
    next_allowed_ms: AtomicU64,
}

impl WarnLimiter {
    pub(crate) fn new() -> Self {
        WarnLimiter {
            origin: Instant::now(),
            next_allowed_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn allow(&self) -> bool {
        let now_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next_allowed_ms = self.next_allowed_ms.load(Ordering::Relaxed);
        if now_ms < next_allowed_ms {
            return false;
        }
        let next_ms = now_ms.saturating_add(WARN_INTERVAL.as_millis() as u64);
        // Of several threads that drop at once, only the one that moves the mark logs.
        self.next_allowed_ms
            .compare_exchange(
                next_allowed_ms,
                next_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_stops_at_capacity() {
        let counters = Counters::default();
        assert!(counters.reserve(2));
        assert!(counters.reserve(2));
        assert!(!counters.reserve(2));
        assert_eq!(counters.queued.load(Ordering::Relaxed), 2);

        counters.release(1);
        assert!(counters.reserve(2));
        counters.release(5);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn warn_limiter_allows_one_per_interval() {
        let limiter = WarnLimiter::new();
        assert!(limiter.allow());
        assert!(!limiter.allow());
        assert!(!limiter.allow());
    }

    #[test]
    fn outcomes_label_every_counter() {
        let stats = WebhookStats {
            delivered: 1,
            retried: 2,
            dropped_queue_full: 3,
            dropped_failed: 4,
            dropped_rejected: 5,
            dropped_shutdown: 6,
            queued: 7,
        };
        let values: Vec<u64> = stats.outcomes().iter().map(|(_, value)| *value).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
    }
}
