//! A running node: the HTTP API, the media worker, storage, webhook delivery and the tasks
//! between them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use media::MediaHandle;
use metrics::Metrics;
use room::Registry;
use signaling::auth::TokenIssuer;
use signaling::realtime::RealtimeHandle;
use signaling::{AppState, EventFanout, SignalingConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use webhooks::{WebhookStats, Webhooks};

use crate::config::Config;
use crate::{demo, expiry, storage, webhook_delivery};

/// Maximum wait for the media event task after the worker stopped. The worker drops its
/// event sender when its thread ends, so the task normally ends at once.
const EVENT_TASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A node started by [`Node::start`]. Call [`Node::shutdown`] to stop it gracefully. Dropping
/// it stops it without waiting for in-flight requests.
pub struct Node {
    config: Config,
    http_address: SocketAddr,
    media: MediaHandle,
    state: AppState,
    registry: Arc<Registry>,
    data_dir: PathBuf,
    /// Every appended event goes through it to the sinks, such as webhook delivery.
    event_fanout: Arc<EventFanout>,
    webhooks: Option<Arc<Webhooks>>,
    /// Closes the sockets of the realtime API, which the HTTP server's graceful shutdown does
    /// not track once upgraded to WebSocket.
    realtime: RealtimeHandle,
    /// Signs the tokens of [`Node::admin_token`] and [`Node::user_token`], if a key is set.
    issuer: Option<TokenIssuer>,
    stop_http: Option<oneshot::Sender<()>>,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    events_task: Option<JoinHandle<()>>,
    expiry_task: Option<JoinHandle<()>>,
}

impl Node {
    /// Opens storage, starts webhook delivery if `webhooks.event_url` is set, binds the HTTP
    /// listener and the media socket and starts serving. Either address may use port 0, and
    /// [`Node::http_address`] and [`Node::media_address`] return the bound ones.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        config.validate()?;
        let verifier = config.auth.verifier()?;
        let issuer = config.auth.issuer_if_any(None)?;

        let (registry, data_dir) = storage::open_registry(&config.storage)?;
        let registry = Arc::new(registry);
        let event_fanout = Arc::new(EventFanout::new());
        registry.set_event_listener(event_fanout.clone());
        let metrics = Arc::new(Metrics::new().context("failed to define the metrics")?);
        let webhooks = webhook_delivery::start(&config.webhooks, &event_fanout, &metrics)?;

        let listener = TcpListener::bind(config.http.address)
            .await
            .with_context(|| {
                format!(
                    "failed to bind the HTTP listener on {}",
                    config.http.address
                )
            })?;
        let http_address = listener
            .local_addr()
            .context("failed to read the HTTP listener's address")?;
        let mut media_config = config.media.to_media_config();
        media_config.packet_transit = Some(metrics.packet_transit());
        let (media, media_events) =
            MediaHandle::start(media_config).context("failed to start the media worker")?;

        let signaling_config = SignalingConfig {
            body_limit: config.http.body_limit,
        };
        let state = AppState::with_metrics(
            registry.clone(),
            media.clone(),
            verifier,
            signaling_config,
            metrics,
        );

        let task_registry = registry.clone();
        let events_task = tokio::spawn(async move {
            signaling::process_media_events(&task_registry, media_events).await;
        });
        let expiry_task = expiry::spawn(registry.clone(), media.clone());
        let (stop_http, stopped) = oneshot::channel::<()>();
        let mut app = signaling::router(state.clone());
        if let Some(demo) = demo::router(&config, &state)? {
            app = app.merge(demo);
        }
        let (app, realtime) = signaling::realtime::attach(
            app,
            state.clone(),
            &event_fanout,
            config.realtime.to_realtime_config(),
        );
        let http_task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender stops the server as well.
                    let _ = stopped.await;
                })
                .await
        });

        info!(
            http = %http_address,
            media = %media.local_addr(),
            announced = %media.announced_address(),
            application_id = %config.auth.application_id,
            webhooks = webhooks.is_some(),
            "node started"
        );
        Ok(Node {
            config,
            http_address,
            media,
            state,
            registry,
            data_dir,
            event_fanout,
            webhooks,
            realtime,
            issuer,
            stop_http: Some(stop_http),
            http_task: Some(http_task),
            events_task: Some(events_task),
            expiry_task: Some(expiry_task),
        })
    }

    /// Address the HTTP API listens on.
    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// Address the media UDP socket is bound to.
    pub fn media_address(&self) -> SocketAddr {
        self.media.local_addr()
    }

    /// Base URL of the HTTP API, such as `http://127.0.0.1:7880`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_address)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Directory of the node's database: `storage.data_dir`, or the temporary directory of a
    /// node started with [`Config::ephemeral`].
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Returns the fan-out that hands every appended event to the node's event sinks.
    pub fn event_fanout(&self) -> &Arc<EventFanout> {
        &self.event_fanout
    }

    /// Returns the webhook delivery counters, or `None` when `webhooks.event_url` is unset.
    pub fn webhook_stats(&self) -> Option<WebhookStats> {
        self.webhooks.as_ref().map(|webhooks| webhooks.stats())
    }

    /// Mints an admin token for this node, valid for `ttl`.
    pub fn admin_token(&self, ttl: Duration) -> anyhow::Result<String> {
        self.issuer()?
            .mint(None, ttl)
            .context("failed to mint a token")
    }

    /// Mints a token acting as the user named `user`, valid for `ttl`.
    pub fn user_token(&self, user: &str, ttl: Duration) -> anyhow::Result<String> {
        self.issuer()?
            .mint(Some(user), ttl)
            .context("failed to mint a token")
    }

    fn issuer(&self) -> anyhow::Result<&TokenIssuer> {
        self.issuer
            .as_ref()
            .context("the node has no key to sign tokens with: set auth.secret or auth.private_key")
    }

    /// Stops the node in this order:
    ///
    /// 1. Draining: `/readyz` returns 503 and new POST requests are rejected, while `/healthz`,
    ///    `/metrics` and reads still respond, for the configured drain delay.
    /// 2. The HTTP listener closes, and in-flight requests finish (up to the shutdown timeout).
    /// 3. The realtime API's sockets close, and their sessions end: their legs close and the
    ///    members they joined leave (up to the shutdown timeout).
    /// 4. The media worker closes every leg, sends their DTLS close alerts and stops.
    /// 5. The room records the legs' ends, and the media event task ends.
    /// 6. Webhook delivery sends what is queued, the events of steps 3 and 5 included, for up
    ///    to the shutdown timeout, and drops the rest.
    ///
    /// The check for expired conversations stops first.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(expiry_task) = self.expiry_task.take() {
            expiry_task.abort();
        }
        info!(
            drain_delay_ms = self.config.shutdown.drain_delay_ms,
            "node draining"
        );
        self.state.start_draining();
        tokio::time::sleep(Duration::from_millis(self.config.shutdown.drain_delay_ms)).await;

        if let Some(stop_http) = self.stop_http.take() {
            let _ = stop_http.send(());
        }
        if let Some(http_task) = self.http_task.take() {
            let timeout = Duration::from_millis(self.config.shutdown.timeout_ms);
            match tokio::time::timeout(timeout, http_task).await {
                Ok(joined) => joined
                    .context("the HTTP server task failed")?
                    .context("the HTTP server failed")?,
                Err(_) => warn!(
                    timeout_ms = self.config.shutdown.timeout_ms,
                    "in-flight requests did not finish before the shutdown timeout"
                ),
            }
        }

        let timeout = Duration::from_millis(self.config.shutdown.timeout_ms);
        let ending = self.realtime.close(timeout).await;
        if ending > 0 {
            warn!(
                sockets = ending,
                timeout_ms = self.config.shutdown.timeout_ms,
                "realtime sessions did not end before the shutdown timeout"
            );
        }

        info!("HTTP listener and realtime sockets closed; closing every leg");
        let media = self.media.clone();
        tokio::task::spawn_blocking(move || media.shutdown())
            .await
            .context("the media shutdown task failed")?;
        if let Some(events_task) = self.events_task.take()
            && tokio::time::timeout(EVENT_TASK_TIMEOUT, events_task)
                .await
                .is_err()
        {
            warn!("the media event task did not end after the media worker stopped");
        }
        if let Some(webhooks) = &self.webhooks {
            self.stop_webhooks(webhooks).await;
        }
        info!("node stopped");
        Ok(())
    }

    async fn stop_webhooks(&self, webhooks: &Webhooks) {
        let timeout = Duration::from_millis(self.config.shutdown.timeout_ms);
        info!(
            queued = webhooks.stats().queued,
            timeout_ms = self.config.shutdown.timeout_ms,
            "sending the queued webhook events"
        );
        let undelivered = webhooks
            .shutdown(tokio::time::Instant::now() + timeout)
            .await;
        let stats = webhooks.stats();
        info!(
            undelivered,
            delivered_total = stats.delivered,
            dropped_failed_total = stats.dropped_failed,
            dropped_rejected_total = stats.dropped_rejected,
            dropped_queue_full_total = stats.dropped_queue_full,
            "webhook delivery finished"
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // After `shutdown` every field below is already taken and the worker stopped.
        if let Some(stop_http) = self.stop_http.take() {
            let _ = stop_http.send(());
        }
        if let Some(http_task) = self.http_task.take() {
            http_task.abort();
            self.media.shutdown();
        }
        if let Some(events_task) = self.events_task.take() {
            events_task.abort();
        }
        if let Some(expiry_task) = self.expiry_task.take() {
            expiry_task.abort();
        }
    }
}

/// Runs a node until `shutdown_signal` completes, then shuts it down gracefully.
pub async fn run(config: Config, shutdown_signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let node = Node::start(config).await?;
    shutdown_signal.await;
    node.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::Node;
    use crate::config::Config;

    const PUBLISH_AV: &str = include_str!("../../signaling/tests/fixtures/chrome-publish-av.sdp");

    /// Sends one HTTP/1.1 request on a new connection and returns the status and JSON body.
    async fn request(
        address: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("send head");
        stream.write_all(body.as_bytes()).await.expect("send body");

        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status code");
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).expect("a JSON body")
        };
        (status, body)
    }

    #[tokio::test]
    async fn ephemeral_node_serves_http_on_bound_port() {
        let node = Node::start(Config::ephemeral()).await.expect("start");
        assert_ne!(node.http_address().port(), 0);
        assert_ne!(node.media_address().port(), 0);
        assert!(node.http_address().ip().is_loopback());

        let (status, body) = request(node.http_address(), "GET", "/healthz", None, None).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ok");
        let token = node.admin_token(Duration::from_secs(60)).expect("token");
        let (status, _) = request(
            node.http_address(),
            "GET",
            "/v0.1/users",
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, 200);

        node.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn shutdown_drains_then_closes_legs() {
        let mut config = Config::ephemeral();
        config.shutdown.drain_delay_ms = 500;
        let node = Node::start(config).await.expect("start");
        let address = node.http_address();
        let token = node.admin_token(Duration::from_secs(60)).expect("token");

        let (_, conversation) = request(
            address,
            "POST",
            "/v0.1/conversations",
            Some(&token),
            Some(json!({})),
        )
        .await;
        let conversation = conversation["id"]
            .as_str()
            .expect("conversation id")
            .to_owned();
        let (status, _) = request(
            address,
            "POST",
            "/v0.1/users",
            Some(&token),
            Some(json!({ "name": "alice" })),
        )
        .await;
        assert_eq!(status, 201);
        let (_, member) = request(
            address,
            "POST",
            &format!("/v0.1/conversations/{conversation}/members"),
            Some(&token),
            Some(json!({ "user_name": "alice", "action": "join" })),
        )
        .await;
        let member = member["id"].as_str().expect("member id").to_owned();
        let (status, leg) = request(
            address,
            "POST",
            &format!("/v0.1/conversations/{conversation}/rtc"),
            Some(&token),
            Some(json!({
                "from": member,
                "body": { "offer": { "type": "offer", "sdp": PUBLISH_AV } },
            })),
        )
        .await;
        assert_eq!(status, 201, "{leg}");
        let leg = leg["rtc_id"].as_str().expect("rtc_id").to_owned();

        let state = node.state().clone();
        let registry_conversation = room::ConversationId::from(conversation.as_str());
        let shutdown = tokio::spawn(node.shutdown());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(state.is_draining());
        let (status, body) = request(address, "GET", "/readyz", None, None).await;
        assert_eq!(status, 503);
        assert_eq!(body["status"], "draining");

        shutdown.await.expect("join").expect("shutdown");
        assert!(
            TcpStream::connect(address).await.is_err(),
            "the listener is closed"
        );
        let events = state
            .registry()
            .events(&registry_conversation, &room::EventQuery::default())
            .expect("events");
        let terminate = events
            .iter()
            .find(|event| event.kind == room::EventType::RtcTerminate)
            .expect("an rtc:terminate event");
        assert_eq!(terminate.body["rtc_id"], leg.as_str());
        assert_eq!(terminate.body["reason"], "shutdown");
    }
}
