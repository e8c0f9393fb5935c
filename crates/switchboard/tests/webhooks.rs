//! A node with `webhooks.event_url` set, against a receiver on 127.0.0.1 that checks every
//! signature: every event of the log arrives, signed and in order per conversation, also when
//! the receiver fails for a while.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use switchboard::{Config, Node};
use tokio::net::TcpListener;
use webhooks::{
    ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSecret, WebhookStats,
    verify_signature,
};

mod common;

use common::{Api, PUBLISH_AV, event_log};

const SECRET: &str = "webhook-test-secret-0123456789abcdef";
const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(60);
/// Upper bound of the wait for deliveries, far above what they need.
const PATIENCE: Duration = Duration::from_secs(15);
const TOKEN_TTL: Duration = Duration::from_secs(600);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Request {
    delivery: String,
    attempt: u32,
    /// Whether the signature header matched the body and the secret.
    signed: bool,
    /// The status the receiver replied with.
    status: u16,
    conversation: String,
    event: Value,
}

#[derive(Default)]
struct Received {
    /// Number of requests that still get a 500 before the receiver recovers.
    failures_left: u32,
    requests: Vec<Request>,
}

#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Received>>,
    url: String,
}

impl Receiver {
    /// Starts a receiver that replies 500 to its first `failures` requests, then 200.
    async fn start(failures: u32) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Received {
            failures_left: failures,
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(received.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            received,
            url: format!("http://{address}/events"),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.received
            .lock()
            .expect("receiver lock")
            .requests
            .clone()
    }

    /// Returns the event ids acknowledged with a 2xx, per conversation, in arrival order.
    fn delivered_ids(&self) -> BTreeMap<String, Vec<u64>> {
        let mut delivered: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for request in self.requests() {
            if request.status == 200 {
                let id = request.event["id"].as_u64().expect("an event id");
                delivered.entry(request.conversation).or_default().push(id);
            }
        }
        delivered
    }

    /// Waits until every conversation of `expected` has delivered as many events as given.
    async fn wait_for(&self, expected: &BTreeMap<String, u64>) {
        let started = Instant::now();
        loop {
            let delivered = self.delivered_ids();
            let complete = expected.iter().all(|(conversation, count)| {
                delivered
                    .get(conversation)
                    .is_some_and(|ids| ids.len() as u64 >= *count)
            });
            if complete {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "deliveries incomplete after {PATIENCE:?}: expected {expected:?}, \
                 delivered {delivered:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
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
    let signed = verify_signature(
        SECRET.as_bytes(),
        &header(SIGNATURE_HEADER),
        &body,
        SystemTime::now(),
        SIGNATURE_TOLERANCE,
    )
    .is_ok();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let mut received = received.lock().expect("receiver lock");
    let status = if !signed {
        401
    } else if received.failures_left > 0 {
        received.failures_left -= 1;
        500
    } else {
        200
    };
    received.requests.push(Request {
        delivery: header(DELIVERY_HEADER),
        attempt: header(ATTEMPT_HEADER).parse().unwrap_or(0),
        signed,
        status,
        conversation: json["conversation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        event: json["event"].clone(),
    });
    StatusCode::from_u16(status).expect("a valid status")
}

/// Waits until the node has counted `total` delivered events. The receiver records a request
/// before it responds, so the node counts a delivery a little after the receiver has it.
async fn wait_for_delivered_count(node: &Node, total: u64) -> WebhookStats {
    let started = Instant::now();
    loop {
        let stats = node.webhook_stats().expect("webhooks are on");
        if stats.delivered >= total {
            return stats;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the node counted {} of {total} deliveries after {PATIENCE:?}",
            stats.delivered
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config_for(receiver: &Receiver) -> Config {
    let mut config = Config::ephemeral();
    config.webhooks.event_url = Some(receiver.url.clone());
    config.webhooks.secret = WebhookSecret::new(SECRET);
    config.webhooks.initial_backoff_ms = 10;
    config.webhooks.max_backoff_ms = 50;
    config.webhooks.max_attempts = 20;
    config
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// Ids of the conversations a session created.
struct Session {
    standup: String,
    retro: String,
}

/// Runs a REST session over two conversations: members join (one through an invitation),
/// post custom events, publish a leg, and one leaves.
async fn run_session(node: &Node) -> Session {
    let api = Api::new(node);
    let admin = node.admin_token(TOKEN_TTL).expect("admin token");
    for name in ["alice", "bob"] {
        api.post_ok(&admin, "/users", json!({ "name": name })).await;
    }
    let standup = id(&api
        .post_ok(&admin, "/conversations", json!({ "name": "standup" }))
        .await);
    let retro = id(&api
        .post_ok(&admin, "/conversations", json!({ "name": "retro" }))
        .await);

    let join = |name: &str| json!({ "user_name": name, "action": "join" });
    let standup_members = format!("/conversations/{standup}/members");
    let alice = id(&api.post_ok(&admin, &standup_members, join("alice")).await);
    api.post_ok(
        &admin,
        &standup_members,
        json!({ "user_name": "bob", "action": "invite" }),
    )
    .await;
    let bob = id(&api.post_ok(&admin, &standup_members, join("bob")).await);
    let retro_alice = id(&api
        .post_ok(
            &admin,
            &format!("/conversations/{retro}/members"),
            join("alice"),
        )
        .await);

    for (conversation, from, text) in [
        (&standup, &alice, "hello"),
        (&retro, &retro_alice, "went well"),
        (&standup, &bob, "hi"),
    ] {
        api.post_ok(
            &admin,
            &format!("/conversations/{conversation}/events"),
            json!({ "type": "custom:note", "from": from, "body": { "text": text } }),
        )
        .await;
    }
    api.post_ok(
        &admin,
        &format!("/conversations/{standup}/rtc"),
        json!({ "from": alice, "body": { "offer": { "type": "offer", "sdp": PUBLISH_AV } } }),
    )
    .await;
    let left = api
        .delete(&admin, &format!("{standup_members}/{bob}"))
        .await;
    assert_eq!(left.status, 200, "{}", left.text);

    Session { standup, retro }
}

/// Reads both conversations' logs over REST.
async fn logs(node: &Node, session: &Session) -> BTreeMap<String, Vec<Value>> {
    let api = Api::new(node);
    let admin = node.admin_token(TOKEN_TTL).expect("admin token");
    let mut logs = BTreeMap::new();
    for conversation in [&session.standup, &session.retro] {
        let log = event_log(&api, &admin, conversation).await;
        logs.insert(conversation.clone(), log);
    }
    logs
}

/// Checks that the receiver got each event of `logs` exactly once, as the REST API shows it,
/// in log order per conversation, and that every request was correctly signed.
fn assert_delivered_in_order(receiver: &Receiver, logs: &BTreeMap<String, Vec<Value>>) {
    let requests = receiver.requests();
    let unsigned: Vec<&Request> = requests.iter().filter(|request| !request.signed).collect();
    assert!(unsigned.is_empty(), "unsigned requests: {unsigned:?}");

    let delivered: Vec<&Request> = requests
        .iter()
        .filter(|request| request.status == 200)
        .collect();
    let deliveries: HashSet<&str> = delivered
        .iter()
        .map(|request| request.delivery.as_str())
        .collect();
    assert_eq!(
        deliveries.len(),
        delivered.len(),
        "a delivery id was acknowledged twice"
    );

    for (conversation, log) in logs {
        let events: Vec<&Value> = delivered
            .iter()
            .filter(|request| request.conversation == *conversation)
            .map(|request| &request.event)
            .collect();
        let ids: Vec<u64> = events
            .iter()
            .map(|event| event["id"].as_u64().expect("an event id"))
            .collect();
        let expected: Vec<u64> = (1..=log.len() as u64).collect();
        assert_eq!(
            ids, expected,
            "event ids of {conversation} in arrival order"
        );
        for (event, logged) in events.iter().zip(log) {
            assert_eq!(*event, logged, "event as the REST API shows it");
        }
    }
}

#[tokio::test]
async fn webhooks_deliver_every_event_in_order() {
    let receiver = Receiver::start(0).await;
    let node = Node::start(config_for(&receiver)).await.expect("start");
    let session = run_session(&node).await;
    let logs = logs(&node, &session).await;
    let expected: BTreeMap<String, u64> = logs
        .iter()
        .map(|(conversation, log)| (conversation.clone(), log.len() as u64))
        .collect();

    receiver.wait_for(&expected).await;
    assert_delivered_in_order(&receiver, &logs);
    let types: Vec<&str> = logs[&session.standup]
        .iter()
        .filter_map(|event| event["type"].as_str())
        .collect();
    for expected_type in [
        "conversation:created",
        "member:joined",
        "member:invited",
        "custom:note",
        "rtc:new",
        "member:left",
    ] {
        assert!(types.contains(&expected_type), "{types:?}");
    }

    let total: u64 = expected.values().sum();
    let stats = wait_for_delivered_count(&node, total).await;
    assert_eq!(stats.delivered, total);
    assert_eq!(stats.retried, 0);
    let metrics = Api::new(&node)
        .raw(reqwest::Method::GET, "/metrics", None, None)
        .await;
    let series = format!(r#"switchboard_webhook_deliveries_total{{outcome="delivered"}} {total}"#);
    assert!(metrics.text.contains(&series), "{}", metrics.text);

    // The leg alice published ends at shutdown, and its events are still delivered.
    let state = node.state().clone();
    node.shutdown().await.expect("shutdown");
    let standup = room::ConversationId::from(session.standup.as_str());
    let final_log = state
        .registry()
        .events(&standup, &room::EventQuery::default())
        .expect("the final log");
    let final_ids: Vec<u64> = final_log.iter().map(|event| event.id).collect();
    let terminate = final_log
        .iter()
        .find(|event| event.kind == room::EventType::RtcTerminate)
        .expect("rtc:terminate at shutdown");
    assert!(terminate.id > expected[&session.standup]);
    assert_eq!(
        receiver.delivered_ids()[&session.standup],
        final_ids,
        "the events of the shutdown were delivered before the node stopped"
    );
}

#[tokio::test]
async fn webhooks_recover_after_receiver_failures() {
    const FAILURES: u32 = 5;
    let receiver = Receiver::start(FAILURES).await;
    let node = Node::start(config_for(&receiver)).await.expect("start");
    let session = run_session(&node).await;
    let logs = logs(&node, &session).await;
    let expected: BTreeMap<String, u64> = logs
        .iter()
        .map(|(conversation, log)| (conversation.clone(), log.len() as u64))
        .collect();

    receiver.wait_for(&expected).await;
    assert_delivered_in_order(&receiver, &logs);

    let requests = receiver.requests();
    let failed = requests
        .iter()
        .filter(|request| request.status == 500)
        .count();
    assert_eq!(failed, FAILURES as usize);
    assert!(
        requests.iter().any(|request| request.attempt > 1),
        "no request was an attempt after the first"
    );
    let total: u64 = expected.values().sum();
    let stats = wait_for_delivered_count(&node, total).await;
    assert_eq!(stats.retried, u64::from(FAILURES));
    assert_eq!(stats.delivered, total);
    assert_eq!(stats.dropped_failed, 0);
    assert_eq!(stats.dropped_queue_full, 0);
    assert_eq!(stats.dropped_rejected, 0);

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn node_without_event_url_has_no_webhooks() {
    let node = Node::start(Config::ephemeral()).await.expect("start");
    run_session(&node).await;
    assert_eq!(node.webhook_stats(), None);
    // The realtime API's event queue is the only sink.
    assert_eq!(node.event_fanout().sink_count(), 1);
    let metrics = Api::new(&node)
        .raw(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert!(
        !metrics
            .text
            .contains("switchboard_webhook_deliveries_total{"),
        "{}",
        metrics.text
    );
    node.shutdown().await.expect("shutdown");
}
