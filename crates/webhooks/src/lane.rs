//! A delivery lane: one task that sends its events one after another, each retried until it is
//! delivered or dropped, so that a conversation's events reach the receiver in order.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::Settings;
use crate::signature::{sign, unix_seconds};
use crate::stats::{Counters, WarnLimiter};
use crate::{ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER};

/// Maximum number of response body bytes read, so the connection can be reused. A longer body
/// is left unread and its connection closed.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// An event waiting for its lane.
pub(crate) struct Job {
    pub(crate) conversation_id: Box<str>,
    pub(crate) event: Box<dyn Payload>,
}

/// An event not yet serialized. Serializing on the lane keeps that work out of `enqueue`, which
/// runs while the caller holds a conversation lock.
pub(crate) trait Payload: Send {
    fn to_body(&self, conversation_id: &str) -> serde_json::Result<Vec<u8>>;
}

impl<E: Serialize + Send> Payload for E {
    fn to_body(&self, conversation_id: &str) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&Body {
            conversation_id,
            event: self,
        })
    }
}

/// The JSON body of a webhook request.
#[derive(Serialize)]
struct Body<'a, E> {
    conversation_id: &'a str,
    event: &'a E,
}

/// State the lanes share with `Webhooks`.
pub(crate) struct Delivery {
    pub(crate) settings: Settings,
    pub(crate) client: Client,
    pub(crate) counters: Counters,
    pub(crate) queue_full_warnings: WarnLimiter,
    pub(crate) drop_warnings: WarnLimiter,
}

/// Outcome of one attempt.
enum Attempt {
    Delivered,
    /// A 4xx status other than 408 and 429: the receiver will not accept this request.
    Rejected(StatusCode),
    Failed {
        reason: Failure,
        retry_after: Option<Duration>,
    },
}

enum Failure {
    Status(StatusCode),
    Request(reqwest::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "receiver answered {status}"),
            Failure::Request(error) if error.is_timeout() => f.write_str("request timed out"),
            Failure::Request(error) => {
                // The URL may carry credentials, so it stays out of the message.
                let mut source: Option<&dyn std::error::Error> = Some(error);
                let mut first = true;
                while let Some(error) = source {
                    if !first {
                        f.write_str(": ")?;
                    }
                    first = false;
                    match error.downcast_ref::<reqwest::Error>() {
                        Some(request_error) => write!(f, "{}", WithoutUrl(request_error))?,
                        None => write!(f, "{error}")?,
                    }
                    source = error.source();
                }
                Ok(())
            }
        }
    }
}

/// Shows a reqwest error's own message, which reqwest would otherwise suffix with the URL.
struct WithoutUrl<'a>(&'a reqwest::Error);

impl fmt::Display for WithoutUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        let kind = if error.is_connect() {
            "connection failed"
        } else if error.is_body() {
            "sending the body failed"
        } else if error.is_decode() {
            "reading the response failed"
        } else {
            "request failed"
        };
        f.write_str(kind)
    }
}

/// Runs one lane until shutdown: then it stops taking new events, sends those already queued,
/// and ends. It also ends when the `Webhooks` that feeds it is dropped.
pub(crate) async fn run(
    delivery: Arc<Delivery>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let job = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            job = queue.recv() => job,
        };
        let Some(job) = job else { return };
        delivery.deliver(job).await;
    }

    // A closed channel keeps the events it contains but fails every later send, so an enqueue that
    // races with shutdown is either sent here or counted as dropped by the sender.
    queue.close();
    while let Some(job) = queue.recv().await {
        delivery.deliver(job).await;
    }
}

impl Delivery {
    /// Sends one event until it is delivered, rejected or out of attempts, then frees its
    /// queue slot. If the task is cancelled meanwhile, the slot stays taken, so shutdown counts
    /// the event as undelivered.
    async fn deliver(&self, job: Job) {
        let delivery_id = Uuid::new_v4();
        let conversation = &*job.conversation_id;
        match job.event.to_body(conversation) {
            Ok(body) => {
                self.send(conversation, delivery_id, Bytes::from(body))
                    .await
            }
            Err(error) => {
                self.counters.dropped_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conversation, delivery = %delivery_id, %error,
                    "webhook event does not serialize to JSON, dropping it");
            }
        }
        self.counters.release(1);
    }

    async fn send(&self, conversation: &str, delivery_id: Uuid, body: Bytes) {
        let max_attempts = self.settings.max_attempts;
        for attempt in 1..=max_attempts {
            let (reason, retry_after) = match self.attempt(delivery_id, attempt, &body).await {
                Attempt::Delivered => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Attempt::Rejected(status) => {
                    let total = self
                        .counters
                        .dropped_rejected
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    if self.drop_warnings.allow() {
                        tracing::warn!(conversation, delivery = %delivery_id, %status,
                            dropped_rejected_total = total,
                            "webhook receiver rejected an event, dropping it without retry");
                    }
                    return;
                }
                Attempt::Failed {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };

            if attempt == max_attempts {
                break;
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            let delay = backoff(&self.settings, attempt, retry_after);
            tracing::debug!(conversation, delivery = %delivery_id, attempt, error = %reason,
                delay_ms = delay.as_millis() as u64, "webhook attempt failed, retrying");
            tokio::time::sleep(delay).await;
        }

        let total = self.counters.dropped_failed.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_warnings.allow() {
            tracing::warn!(conversation, delivery = %delivery_id, attempts = max_attempts,
                dropped_failed_total = total, "webhook delivery failed, dropping the event");
        }
    }

    async fn attempt(&self, delivery_id: Uuid, attempt: u32, body: &Bytes) -> Attempt {
        let timestamp = unix_seconds(SystemTime::now());
        let signature = sign(self.settings.secret.expose().as_bytes(), timestamp, body);
        let request = self
            .client
            .post(self.settings.event_url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(DELIVERY_HEADER, delivery_id.to_string())
            .header(ATTEMPT_HEADER, attempt)
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone());

        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Failed {
                    reason: Failure::Request(error),
                    retry_after: None,
                };
            }
        };
        classify(response).await
    }
}

/// Delay after failed attempt number `attempt`: `initial_backoff * 2^(attempt - 1)`, of which
/// the upper half is random so that lanes retrying together spread out, then raised to the
/// receiver's `Retry-After`, all capped at `max_backoff`.
fn backoff(settings: &Settings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let ceiling = settings
        .initial_backoff
        .saturating_mul(1 << doublings)
        .min(settings.max_backoff);
    let half = ceiling / 2;
    let jitter_nanos = rand::rng().random_range(0..=half.as_nanos() as u64);
    let delay = half + Duration::from_nanos(jitter_nanos);
    delay
        .max(retry_after.unwrap_or_default())
        .min(settings.max_backoff)
}

/// Sorts a response into delivered, rejected for good, or worth another attempt. 408 (request
/// timeout) and 429 (too many requests) ask the sender to try again later. Any other 4xx means
/// the request itself is unwelcome, so repeating the same bytes would only hold up the lane.
/// A 3xx is retried and not followed, because a redirected POST may turn into a GET.
async fn classify(mut response: Response) -> Attempt {
    let status = response.status();
    if status.is_success() {
        drain(&mut response).await;
        return Attempt::Delivered;
    }
    let retryable_client_error =
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if status.is_client_error() && !retryable_client_error {
        return Attempt::Rejected(status);
    }
    let retry_after = retry_after(&response);
    Attempt::Failed {
        reason: Failure::Status(status),
        retry_after,
    }
}

/// Reads a short response body to its end, so its connection goes back to the pool.
async fn drain(response: &mut Response) {
    let mut read = 0;
    while read <= MAX_DRAINED_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Reads the `Retry-After` header in its delta-seconds form. The HTTP-date form is ignored.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    let seconds = value.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WebhookSecret;

    fn settings(initial_ms: u64, max_ms: u64) -> Settings {
        Settings {
            event_url: "http://127.0.0.1:9/events".parse().expect("a URL"),
            secret: WebhookSecret::new("0123456789abcdef0123456789abcdef"),
            queue_capacity: 10,
            lanes: 1,
            max_attempts: 10,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            request_timeout: Duration::from_millis(100),
            root_certificates: Vec::new(),
        }
    }

    #[test]
    fn backoff_doubles_within_jitter() {
        let settings = settings(100, 10_000);
        for (attempt, ceiling_ms) in [(1, 100), (2, 200), (3, 400), (4, 800)] {
            for _ in 0..50 {
                let delay = backoff(&settings, attempt, None);
                let ceiling = Duration::from_millis(ceiling_ms);
                assert!(delay >= ceiling / 2, "attempt {attempt}: {delay:?}");
                assert!(delay <= ceiling, "attempt {attempt}: {delay:?}");
            }
        }
    }

    #[test]
    fn backoff_is_capped() {
        let settings = settings(100, 1000);
        for attempt in [5, 20, 64, u32::MAX] {
            let delay = backoff(&settings, attempt, None);
            assert!(
                delay >= Duration::from_millis(500),
                "attempt {attempt}: {delay:?}"
            );
            assert!(
                delay <= Duration::from_millis(1000),
                "attempt {attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn backoff_honours_retry_after_up_to_cap() {
        let settings = settings(100, 5000);
        let delay = backoff(&settings, 1, Some(Duration::from_secs(2)));
        assert_eq!(delay, Duration::from_secs(2));
        let delay = backoff(&settings, 1, Some(Duration::from_secs(3600)));
        assert_eq!(delay, Duration::from_secs(5));
    }

    #[tokio::test]
    async fn request_failure_message_hides_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let client = Client::builder().no_proxy().build().expect("client");
        let url = format!("http://user:hunter2@{address}/path-token");

        let error = client
            .post(url)
            .send()
            .await
            .expect_err("connection refused");
        let message = Failure::Request(error).to_string();

        assert!(message.starts_with("connection failed"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("path-token"), "{message}");
    }
}
