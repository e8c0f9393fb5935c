//! Delivery of conversation events to an application's `event_url`.
//!
//! [`Webhooks::enqueue`] takes an event without blocking or awaiting, so the conversation model
//! may call it while it holds a conversation lock. Delivery tasks ("lanes") on the tokio runtime
//! POST each event as JSON to the `event_url`:
//!
//! ```text
//! POST <event_url>
//! Content-Type: application/json
//! X-Switchboard-Delivery: 4f1c…-uuid       (one per event, the same on every attempt)
//! X-Switchboard-Attempt: 1                 (1 for the first attempt, then 2, 3, …)
//! X-Switchboard-Signature: t=1700000000,v1=<64 hex digits>
//!
//! {"conversation_id":"CON-…","event":{…the event as the caller serialized it…}}
//! ```
//!
//! The signature is HMAC-SHA256, keyed with the configured secret, over the decimal timestamp,
//! a `.`, and the body bytes exactly as sent; [`verify_signature`] checks it. Each attempt is
//! signed with its own timestamp.
//!
//! Guarantees and limits:
//! - A conversation's events always go through the same lane, which sends one request at a time,
//!   so the receiver gets them in the order they were enqueued. Different lanes are independent,
//!   so one slow conversation holds up only the conversations that share its lane.
//! - Delivery is at least once: a receiver that processes a request but responds too late gets it
//!   again with the same delivery id, and should ignore ids it has seen.
//! - A failed attempt (connection error, timeout, 3xx, 408, 429, 5xx) is retried after a backoff
//!   that doubles from `initial_backoff_ms` up to `max_backoff_ms`, with jitter, and honours a
//!   `Retry-After` in seconds within that cap. After `max_attempts` the event is dropped and the
//!   lane goes on with the next one. Other 4xx statuses drop the event at once.
//! - At most `queue_capacity` events wait at any time; `enqueue` drops and counts the rest.
//! - The HTTP client follows no redirects and ignores the `HTTP_PROXY` family of variables. For
//!   https it uses rustls and trusts the Mozilla root certificates built in, plus `ca_file`.

mod config;
mod lane;
mod signature;
mod stats;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::redirect;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{
    MAX_ATTEMPTS, MAX_DURATION_MS, MAX_LANES, MIN_SECRET_BYTES, WebhookConfig, WebhookSecret,
};
pub use signature::{SignatureError, sign, verify_signature};
pub use stats::WebhookStats;

use lane::{Delivery, Job};
use stats::{Counters, WarnLimiter};

/// Header with the delivery id: a UUID, unique per event and repeated on every attempt.
pub const DELIVERY_HEADER: &str = "x-switchboard-delivery";

/// Header with the attempt number, 1 for the first attempt.
pub const ATTEMPT_HEADER: &str = "x-switchboard-attempt";

/// Header with the signature, `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";

/// Error that prevents webhook delivery from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A setting is invalid; `field` is its key in [`WebhookConfig`].
    #[error("invalid webhook setting {field}: {field} {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// [`Webhooks::start`] was called outside a tokio runtime.
    #[error("webhook delivery must start inside a tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built, for example without TLS support.
    #[error("failed to build the webhook HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Reason [`Webhooks::enqueue`] dropped an event. The drop is already counted in
/// [`WebhookStats`], so callers may ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// `queue_capacity` events are waiting already.
    #[error("webhook queue is full")]
    QueueFull,
    /// [`Webhooks::shutdown`] has begun.
    #[error("webhook delivery is shutting down")]
    ShuttingDown,
}

/// The webhook sender of a node. Dropping it lets the lanes send what is queued in the
/// background; [`Webhooks::shutdown`] bounds that time instead.
pub struct Webhooks {
    delivery: Arc<Delivery>,
    lanes: Box<[mpsc::UnboundedSender<Job>]>,
    lane_hasher: RandomState,
    shutting_down: AtomicBool,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Webhooks {
    /// Validates `config` and spawns the delivery lanes on the current tokio runtime. Fails if
    /// `event_url` is unset, so a node without one should not call it.
    pub fn start(config: WebhookConfig) -> Result<Webhooks, WebhookError> {
        let settings = config.settings()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        let mut client = reqwest::Client::builder();
        for certificate in &settings.root_certificates {
            client = client.add_root_certificate(certificate.clone());
        }
        let client = client
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Client)?;

        let lane_count = settings.lanes;
        tracing::info!(event_url = %origin(&settings.event_url), lanes = lane_count,
            queue_capacity = settings.queue_capacity, "webhook delivery started");
        let delivery = Arc::new(Delivery {
            settings,
            client,
            counters: Counters::default(),
            queue_full_warnings: WarnLimiter::new(),
            drop_warnings: WarnLimiter::new(),
        });

        let (stop, stopped) = watch::channel(false);
        let mut lanes = Vec::with_capacity(lane_count);
        let mut tasks = Vec::with_capacity(lane_count);
        for _ in 0..lane_count {
            let (sender, receiver) = mpsc::unbounded_channel();
            let task = lane::run(Arc::clone(&delivery), receiver, stopped.clone());
            lanes.push(sender);
            tasks.push(runtime.spawn(task));
        }

        Ok(Webhooks {
            delivery,
            lanes: lanes.into_boxed_slice(),
            lane_hasher: RandomState::new(),
            shutting_down: AtomicBool::new(false),
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// Queues `event` of `conversation_id` for delivery, without blocking or awaiting. The event
    /// is serialized later, on its lane, so the caller's lock is not held for that work. The
    /// cost here is a hash of the id, two small allocations (the id and the boxed event) and a
    /// lock-free channel send. When the queue is full or shutdown has begun, the event is
    /// dropped and counted, and the error gives the reason.
    pub fn enqueue<E>(&self, conversation_id: &str, event: E) -> Result<(), EnqueueError>
    where
        E: Serialize + Send + 'static,
    {
        let counters = &self.delivery.counters;
        if self.shutting_down.load(Ordering::Acquire) {
            counters.dropped_shutdown.fetch_add(1, Ordering::Relaxed);
            return Err(EnqueueError::ShuttingDown);
        }
        if !counters.reserve(self.delivery.settings.queue_capacity) {
            self.count_queue_full();
            return Err(EnqueueError::QueueFull);
        }

        let lane = self.lane_hasher.hash_one(conversation_id) as usize % self.lanes.len();
        let job = Job {
            conversation_id: conversation_id.into(),
            event: Box::new(event),
        };
        if self.lanes[lane].send(job).is_err() {
            // The lane closed its queue because shutdown began after the check above.
            counters.release(1);
            counters.dropped_shutdown.fetch_add(1, Ordering::Relaxed);
            return Err(EnqueueError::ShuttingDown);
        }
        Ok(())
    }

    /// Returns the delivery counters since the start.
    pub fn stats(&self) -> WebhookStats {
        self.delivery.counters.snapshot()
    }

    /// Stops accepting events, then lets the lanes send what is queued, retries included, until
    /// `deadline`. Lanes still busy then are cancelled. Returns the number of events left
    /// undelivered, which move from `queued` to `dropped_shutdown`. A second call does nothing
    /// and returns 0.
    pub async fn shutdown(&self, deadline: Instant) -> u64 {
        let counters = &self.delivery.counters;
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return 0;
        }
        self.stop.send_replace(true);

        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let all_done = tokio::time::timeout_at(deadline, async {
            for task in tasks.iter_mut() {
                let _ = task.await;
            }
        })
        .await
        .is_ok();
        if !all_done {
            for task in &tasks {
                task.abort();
            }
            // Waiting for the cancelled tasks makes the count below final.
            for task in tasks {
                let _ = task.await;
            }
        }

        let undelivered = counters.queued.load(Ordering::Acquire);
        counters.release(undelivered);
        let undelivered = undelivered as u64;
        counters
            .dropped_shutdown
            .fetch_add(undelivered, Ordering::Relaxed);
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "webhook delivery stopped with events undelivered"
            );
        } else {
            tracing::info!("webhook delivery stopped");
        }
        undelivered
    }

    fn count_queue_full(&self) {
        let counters = &self.delivery.counters;
        let total = counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed) + 1;
        if self.delivery.queue_full_warnings.allow() {
            tracing::warn!(
                dropped_queue_full_total = total,
                queue_capacity = self.delivery.settings.queue_capacity,
                "webhook queue is full, dropping events"
            );
        }
    }
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("event_url", &origin(&self.delivery.settings.event_url))
            .field("lanes", &self.lanes.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Returns the scheme, host and port of a URL, the only parts that logs show, because its path,
/// query or user info may carry the receiver's credentials.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}
