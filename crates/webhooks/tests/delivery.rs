//! Delivery to real HTTP receivers on 127.0.0.1: order, signatures, retries, drops, shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::serve::Listener;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;
use webhooks::{
    ATTEMPT_HEADER, DELIVERY_HEADER, EnqueueError, SIGNATURE_HEADER, WebhookConfig, WebhookSecret,
    WebhookStats, Webhooks, verify_signature,
};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
const TOLERANCE: Duration = Duration::from_secs(60);
/// Upper bound of every wait in these tests, far above what the steps need.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the receiver does with one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Never responds, so the sender's request timeout fires.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    delivery: String,
    attempt: u32,
    signature: String,
    content_type: String,
    body: Bytes,
    reply: Reply,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn conversation(&self) -> String {
        self.json()["conversation_id"]
            .as_str()
            .expect("conversation_id is a string")
            .to_owned()
    }

    fn sequence(&self) -> u64 {
        self.json()["event"]["sequence"]
            .as_u64()
            .expect("the event has its sequence")
    }

    fn delivered(&self) -> bool {
        matches!(self.reply, Reply::Status(status) if (200..300).contains(&status))
    }
}

struct ReceiverState {
    /// Replies to the first requests, in order; later requests get `otherwise`.
    script: Mutex<VecDeque<Reply>>,
    otherwise: Reply,
    received: Mutex<Vec<Received>>,
}

struct Receiver {
    state: Arc<ReceiverState>,
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::delivered)
            .collect()
    }
}

/// Serves a receiver on `listener` that replies to the first requests from `script` and to the
/// others with `otherwise`.
fn serve<L>(listener: L, script: &[Reply], otherwise: Reply) -> Receiver
where
    L: Listener<Addr = SocketAddr>,
{
    let state = Arc::new(ReceiverState {
        script: Mutex::new(script.iter().copied().collect()),
        otherwise,
        received: Mutex::default(),
    });
    let app = Router::new()
        .route("/events", post(receive))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { state }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let reply = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(state.otherwise);
    state.received.lock().expect("lock").push(Received {
        delivery: header(DELIVERY_HEADER),
        attempt: header(ATTEMPT_HEADER).parse().unwrap_or(0),
        signature: header(SIGNATURE_HEADER),
        content_type: header("content-type"),
        body,
        reply,
    });
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status).expect("a valid status"),
        Reply::Hang => std::future::pending().await,
    }
}

async fn loopback_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

fn config(address: SocketAddr) -> WebhookConfig {
    WebhookConfig {
        event_url: Some(format!("http://{address}/events")),
        secret: WebhookSecret::new(SECRET),
        queue_capacity: 1000,
        lanes: 3,
        max_attempts: 10,
        initial_backoff_ms: 5,
        max_backoff_ms: 20,
        request_timeout_ms: 2000,
        ca_file: None,
    }
}

/// Enqueues events numbered 0 to `per_conversation - 1` for each conversation, interleaved.
fn enqueue_all(webhooks: &Webhooks, conversations: &[&str], per_conversation: u64) {
    for sequence in 0..per_conversation {
        for conversation in conversations {
            let event = json!({"type": "custom:test", "sequence": sequence});
            webhooks.enqueue(conversation, event).expect("queued");
        }
    }
}

/// Polls `condition` every 5 ms until it is true or `PATIENCE` has passed.
async fn wait_until(webhooks: &Webhooks, condition: impl Fn(&WebhookStats) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition(&webhooks.stats()) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting, stats: {:?}",
            webhooks.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks that each conversation's delivered events are 0, 1, 2, … with nothing missing or twice,
/// and that every delivery id arrived once.
fn assert_in_order_once(delivered: &[Received], conversations: &[&str], per_conversation: u64) {
    let mut sequences: HashMap<String, Vec<u64>> = HashMap::new();
    for request in delivered {
        sequences
            .entry(request.conversation())
            .or_default()
            .push(request.sequence());
    }
    let expected: Vec<u64> = (0..per_conversation).collect();
    for conversation in conversations {
        assert_eq!(
            sequences.get(*conversation),
            Some(&expected),
            "events of {conversation}"
        );
    }

    let ids: HashSet<&str> = delivered.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids.len(), delivered.len(), "a delivery id arrived twice");
}

/// Checks that every failed attempt the sender counted shows in the attempt number of the
/// request that finally succeeded.
fn assert_retries_match_attempts(stats: &WebhookStats, delivered: &[Received]) {
    let failed_attempts: u64 = delivered.iter().map(|r| u64::from(r.attempt) - 1).sum();
    assert_eq!(stats.retried, failed_attempts);
}

#[tokio::test]
async fn events_arrive_signed_in_order_once() {
    let (listener, address) = loopback_listener().await;
    let receiver = serve(listener, &[], Reply::Status(204));
    let webhooks = Webhooks::start(config(address)).expect("start");
    let conversations = ["CON-a", "CON-b", "CON-c", "CON-d", "CON-e"];

    enqueue_all(&webhooks, &conversations, 20);
    wait_until(&webhooks, |stats| stats.delivered == 100).await;

    let received = receiver.received();
    assert_eq!(received.len(), 100);
    for request in &received {
        let verified = verify_signature(
            SECRET.as_bytes(),
            &request.signature,
            &request.body,
            SystemTime::now(),
            TOLERANCE,
        );
        assert_eq!(verified, Ok(()), "{request:?}");
        assert_eq!(request.content_type, "application/json");
        assert_eq!(request.attempt, 1);
        assert!(uuid_like(&request.delivery), "{:?}", request.delivery);
    }
    assert_in_order_once(&received, &conversations, 20);

    let body = received[0].json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["conversation_id", "event"]);
    assert_eq!(body["event"]["type"], "custom:test");

    let stats = webhooks.stats();
    let expected = WebhookStats {
        delivered: 100,
        ..WebhookStats::default()
    };
    assert_eq!(stats, expected);
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[tokio::test]
async fn failing_receiver_gets_everything_after_recovery() {
    let (listener, address) = loopback_listener().await;
    let failures = [
        Reply::Status(500),
        Reply::Status(503),
        Reply::Hang,
        Reply::Status(429),
        Reply::Status(408),
        Reply::Status(502),
        Reply::Hang,
    ];
    let receiver = serve(listener, &failures, Reply::Status(200));
    // Long enough that a prompt reply never times out on a busy machine, so that every
    // counted retry comes from the script.
    let mut config = config(address);
    config.request_timeout_ms = 500;
    let webhooks = Webhooks::start(config).expect("start");
    let conversations = ["CON-a", "CON-b", "CON-c"];

    enqueue_all(&webhooks, &conversations, 10);
    wait_until(&webhooks, |stats| stats.delivered == 30).await;

    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 30);
    assert_in_order_once(&delivered, &conversations, 10);
    assert_eq!(receiver.received().len(), 30 + failures.len());

    let stats = webhooks.stats();
    assert_eq!(stats.retried, failures.len() as u64);
    assert_retries_match_attempts(&stats, &delivered);
    assert_eq!(stats.dropped_failed, 0);
    assert_eq!(stats.queued, 0);
}

#[tokio::test]
async fn refused_connections_are_retried_until_receiver_starts() {
    // The port is free once its listener is dropped, so connections to it are refused until the
    // receiver binds it again.
    let (listener, address) = loopback_listener().await;
    drop(listener);
    let mut config = config(address);
    config.max_attempts = 100;
    let webhooks = Webhooks::start(config).expect("start");
    let conversations = ["CON-a", "CON-b"];

    enqueue_all(&webhooks, &conversations, 5);
    wait_until(&webhooks, |stats| stats.retried >= 4).await;
    assert_eq!(webhooks.stats().delivered, 0);

    let listener = TcpListener::bind(address)
        .await
        .expect("bind the same port again");
    let receiver = serve(listener, &[], Reply::Status(200));
    wait_until(&webhooks, |stats| stats.delivered == 10).await;

    let delivered = receiver.delivered();
    assert_in_order_once(&delivered, &conversations, 5);
    assert!(delivered.iter().any(|request| request.attempt > 1));
    assert_retries_match_attempts(&webhooks.stats(), &delivered);
}

#[tokio::test]
async fn event_is_dropped_after_last_attempt() {
    let (listener, address) = loopback_listener().await;
    let failures = [Reply::Status(500); 3];
    let receiver = serve(listener, &failures, Reply::Status(200));
    let mut config = config(address);
    config.lanes = 1;
    config.max_attempts = 3;
    let webhooks = Webhooks::start(config).expect("start");

    enqueue_all(&webhooks, &["CON-a"], 4);
    wait_until(&webhooks, |stats| stats.queued == 0).await;

    let stats = webhooks.stats();
    assert_eq!(stats.dropped_failed, 1);
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.delivered, 3);
    let attempts: Vec<(u64, u32)> = receiver
        .received()
        .iter()
        .map(|request| (request.sequence(), request.attempt))
        .collect();
    assert_eq!(attempts, [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1), (3, 1)]);
}

#[tokio::test]
async fn client_error_is_not_retried() {
    let (listener, address) = loopback_listener().await;
    let receiver = serve(listener, &[Reply::Status(400)], Reply::Status(200));
    let mut config = config(address);
    config.lanes = 1;
    let webhooks = Webhooks::start(config).expect("start");

    enqueue_all(&webhooks, &["CON-a"], 3);
    wait_until(&webhooks, |stats| stats.queued == 0).await;

    let stats = webhooks.stats();
    assert_eq!(stats.dropped_rejected, 1);
    assert_eq!(stats.retried, 0);
    assert_eq!(stats.delivered, 2);
    let sequences: Vec<u64> = receiver.received().iter().map(Received::sequence).collect();
    assert_eq!(sequences, [0, 1, 2]);
}

#[tokio::test]
async fn silent_receiver_fills_queue_without_blocking() {
    let (listener, address) = loopback_listener().await;
    let receiver = serve(listener, &[], Reply::Hang);
    let mut config = config(address);
    config.lanes = 2;
    config.queue_capacity = 8;
    config.max_attempts = 1;
    config.request_timeout_ms = 60_000;
    let webhooks = Webhooks::start(config).expect("start");

    // This test runs on a single-threaded runtime, so the lanes cannot run during the loop:
    // every call has to return on its own.
    let mut accepted = 0;
    let mut queue_full = 0;
    for sequence in 0..100 {
        let conversation = format!("CON-{}", sequence % 5);
        match webhooks.enqueue(&conversation, json!({"sequence": sequence})) {
            Ok(()) => accepted += 1,
            Err(EnqueueError::QueueFull) => queue_full += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(accepted, 8);
    assert_eq!(queue_full, 92);
    assert_eq!(webhooks.stats().dropped_queue_full, 92);

    // The lanes send their first events and wait for responses that never come.
    let deadline = Instant::now() + PATIENCE;
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "the lanes sent nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        webhooks.enqueue("CON-0", json!({})),
        Err(EnqueueError::QueueFull)
    );

    let shutdown_deadline = Instant::now() + Duration::from_millis(200);
    let undelivered = tokio::time::timeout(PATIENCE, webhooks.shutdown(shutdown_deadline))
        .await
        .expect("shutdown returns after its deadline");
    assert_eq!(undelivered, 8);

    let stats = webhooks.stats();
    assert_eq!(stats.dropped_shutdown, 8);
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.delivered, 0);
    assert_eq!(
        webhooks.enqueue("CON-0", json!({})),
        Err(EnqueueError::ShuttingDown)
    );
    assert_eq!(webhooks.stats().dropped_shutdown, 9);
    assert_eq!(webhooks.shutdown(Instant::now()).await, 0);
    assert_eq!(webhooks.stats().dropped_shutdown, 9);
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued() {
    let (listener, address) = loopback_listener().await;
    let receiver = serve(listener, &[Reply::Status(500)], Reply::Status(200));
    let webhooks = Webhooks::start(config(address)).expect("start");
    let conversations = ["CON-a", "CON-b"];

    enqueue_all(&webhooks, &conversations, 10);
    let undelivered = webhooks.shutdown(Instant::now() + PATIENCE).await;

    assert_eq!(undelivered, 0);
    let stats = webhooks.stats();
    assert_eq!(stats.delivered, 20);
    assert_eq!(stats.retried, 1);
    assert_eq!(stats.dropped_shutdown, 0);
    assert_in_order_once(&receiver.delivered(), &conversations, 10);
}

#[tokio::test]
async fn start_rejects_missing_event_url() {
    let result = Webhooks::start(WebhookConfig::default());
    let message = result.expect_err("no event_url").to_string();
    assert!(message.contains("event_url"), "{message}");
}

#[test]
fn start_outside_runtime_fails() {
    let config = config(SocketAddr::from(([127, 0, 0, 1], 9)));
    let result = Webhooks::start(config);
    assert!(
        matches!(result, Err(webhooks::WebhookError::NoRuntime)),
        "{result:?}"
    );
}

/// A TLS listener for axum: accepts TCP connections and completes each handshake before
/// handing the stream over. A failed handshake only drops that connection.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Starts an https receiver on 127.0.0.1 with a self-signed certificate for that address, and
/// writes the certificate as PEM to `certificate_file`.
async fn serve_https(certificate_file: &std::path::Path) -> (Receiver, SocketAddr) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("a self-signed certificate");
    std::fs::write(certificate_file, certified.cert.pem()).expect("write the certificate");

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let tls = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("a server certificate");

    let (tcp, address) = loopback_listener().await;
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
    };
    (serve(listener, &[], Reply::Status(200)), address)
}

#[tokio::test]
async fn https_receiver_trusted_through_ca_file() {
    let directory = std::env::temp_dir().join(format!("webhooks-https-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temporary directory");
    let certificate_file = directory.join("receiver.pem");
    let (receiver, address) = serve_https(&certificate_file).await;

    // Without the certificate the handshake fails, so TLS verification is on.
    let mut untrusting = config(address);
    untrusting.event_url = Some(format!("https://{address}/events"));
    untrusting.max_attempts = 1;
    let webhooks = Webhooks::start(untrusting.clone()).expect("start");
    webhooks
        .enqueue("CON-a", json!({"sequence": 0}))
        .expect("queued");
    wait_until(&webhooks, |stats| stats.queued == 0).await;
    assert_eq!(webhooks.stats().dropped_failed, 1);
    assert!(receiver.received().is_empty());

    let trusting = WebhookConfig {
        ca_file: Some(certificate_file),
        ..untrusting
    };
    let webhooks = Webhooks::start(trusting).expect("start");
    enqueue_all(&webhooks, &["CON-a"], 5);
    wait_until(&webhooks, |stats| stats.delivered == 5).await;

    let delivered = receiver.delivered();
    assert_in_order_once(&delivered, &["CON-a"], 5);
    for request in &delivered {
        let verified = verify_signature(
            SECRET.as_bytes(),
            &request.signature,
            &request.body,
            SystemTime::now(),
            TOLERANCE,
        );
        assert_eq!(verified, Ok(()), "{request:?}");
    }
    std::fs::remove_dir_all(&directory).expect("remove the temporary directory");
}

#[tokio::test]
async fn dropped_sender_still_delivers_queue() {
    let (listener, address) = loopback_listener().await;
    let receiver = serve(listener, &[], Reply::Status(200));
    let webhooks = Webhooks::start(config(address)).expect("start");

    enqueue_all(&webhooks, &["CON-a"], 5);
    drop(webhooks);

    let deadline = Instant::now() + PATIENCE;
    while receiver.delivered().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "the lanes stopped after the drop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_in_order_once(&receiver.delivered(), &["CON-a"], 5);
}

#[test]
fn webhooks_is_shareable_between_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Webhooks>();
}
