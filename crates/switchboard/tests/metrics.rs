//! `/metrics`, `/readyz` and `/healthz` of a real node during a real session: one publisher, one
//! subscriber, a mute and an unmute, then a shutdown.

use std::time::Duration;

use client::{Kind, Publisher, SendPlan, Subscriber, wait_until};
use serde_json::json;
use switchboard::Node;

mod common;

use common::{Api, CONNECT_TIMEOUT as TIMEOUT, fast_config};

/// Time between two scrapes that must see counters move: about 15 video and 25 audio packets
/// at the client's default rates.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(500);

/// One scrape of `/metrics`.
struct Scrape {
    text: String,
}

impl Scrape {
    async fn take(api: &Api) -> Scrape {
        let reply = api.raw(reqwest::Method::GET, "/metrics", None, None).await;
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.text);
        assert!(
            reply.content_type.starts_with("text/plain"),
            "content type {:?}",
            reply.content_type
        );
        Scrape { text: reply.text }
    }

    /// Returns the value of the sample whose name and labels are exactly `series`, 0 if it is absent.
    fn value(&self, series: &str) -> f64 {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series)
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .unwrap_or(0.0)
    }

    /// Checks whether a sample line starts with `prefix` and contains every one of `parts`.
    fn has_series(&self, prefix: &str, parts: &[&str]) -> bool {
        self.text
            .lines()
            .any(|line| line.starts_with(prefix) && parts.iter().all(|part| line.contains(part)))
    }
}

const RECEIVED: &str = "switchboard_packets_received_total";
const RECEIVED_BYTES: &str = "switchboard_bytes_received_total";
const FORWARDED: &str = "switchboard_packets_forwarded_total";
const FORWARDED_BYTES: &str = "switchboard_bytes_forwarded_total";
const MUTED_DROPS: &str = "switchboard_packets_dropped_total{reason=\"muted\"}";
const TRANSIT_COUNT: &str = "switchboard_packet_transit_seconds_count";

async fn post_event(api: &Api, token: &str, conversation: &str, member: &str, kind: &str) {
    api.post_ok(
        token,
        &format!("/conversations/{conversation}/events"),
        json!({ "type": kind, "from": member, "body": {} }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_session_and_readyz_drains() {
    let mut config = fast_config();
    config.shutdown.drain_delay_ms = 1_500;
    let node = Node::start(config).await.expect("start node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");

    let ready = api.raw(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let idle = Scrape::take(&api).await;
    assert_eq!(idle.value("switchboard_media_worker_up"), 1.0);
    assert_eq!(idle.value(FORWARDED), 0.0);

    // Alice publishes, Bob subscribes to her.
    let conversation = api
        .post_ok(&admin, "/conversations", json!({ "name": "metrics" }))
        .await["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let mut members = Vec::new();
    for name in ["alice", "bob"] {
        api.post_ok(&admin, "/users", json!({ "name": name })).await;
        let member = api
            .post_ok(
                &admin,
                &format!("/conversations/{conversation}/members"),
                json!({ "user_name": name, "action": "join" }),
            )
            .await["id"]
            .as_str()
            .expect("member id")
            .to_owned();
        members.push(member);
    }
    let (alice, bob) = (&members[0], &members[1]);

    let publisher = Publisher::new().await.expect("publisher");
    let reply = api
        .post_ok(
            &admin,
            &format!("/conversations/{conversation}/rtc"),
            json!({ "from": alice, "body": { "offer": { "type": "offer",
                "sdp": publisher.offer().await.expect("offer") } } }),
        )
        .await;
    let publisher_leg = reply["rtc_id"].as_str().expect("rtc_id").to_owned();
    let answer = reply["body"]["answer"]["sdp"].as_str().expect("answer");
    publisher
        .apply_answer(answer.to_owned())
        .await
        .expect("apply answer");
    publisher.wait_connected(TIMEOUT).await.expect("connects");
    publisher.start_media(SendPlan::default());

    let subscriber = Subscriber::new().await.expect("subscriber");
    let reply = api
        .post_ok(
            &admin,
            &format!("/conversations/{conversation}/rtc"),
            json!({ "from": bob, "body": {
                "offer": { "type": "offer", "sdp": subscriber.offer().await.expect("offer") },
                "subscribe": { "rtc_id": publisher_leg } } }),
        )
        .await;
    let answer = reply["body"]["answer"]["sdp"].as_str().expect("answer");
    subscriber
        .apply_answer(answer.to_owned())
        .await
        .expect("apply answer");
    subscriber.wait_connected(TIMEOUT).await.expect("connects");
    assert!(
        wait_until(TIMEOUT, || subscriber.count(Kind::Video) >= 10).await,
        "bob receives no video"
    );

    // Media flows: every packet counter grows between two scrapes.
    let first = Scrape::take(&api).await;
    tokio::time::sleep(SCRAPE_INTERVAL).await;
    let second = Scrape::take(&api).await;
    for counter in [RECEIVED, RECEIVED_BYTES, FORWARDED, FORWARDED_BYTES] {
        assert!(
            second.value(counter) > first.value(counter),
            "{counter} did not grow: {} then {}",
            first.value(counter),
            second.value(counter)
        );
    }
    assert!(second.value(FORWARDED) >= 20.0, "{}", second.text);
    assert!(second.value(TRANSIT_COUNT) > 0.0, "{}", second.text);

    // The gauges describe the session.
    let gauges = [
        ("switchboard_conversations", 1.0),
        ("switchboard_members{state=\"joined\"}", 2.0),
        ("switchboard_members{state=\"invited\"}", 0.0),
        ("switchboard_legs{direction=\"upstream\"}", 1.0),
        ("switchboard_legs{direction=\"downstream\"}", 1.0),
        ("switchboard_tracks", 2.0),
        ("switchboard_subscriptions", 2.0),
        ("switchboard_ice_outcomes_total{outcome=\"connected\"}", 2.0),
        (
            "switchboard_dtls_outcomes_total{outcome=\"connected\"}",
            2.0,
        ),
    ];
    for (series, expected) in gauges {
        assert_eq!(second.value(series), expected, "{series}");
    }
    assert!(
        second.has_series(
            "switchboard_http_request_duration_seconds_count{",
            &[
                "method=\"POST\"",
                "route=\"/v0.1/conversations/{conversation_id}/rtc\"",
                "status=\"201\"",
            ],
        ),
        "no latency series of the rtc route:\n{}",
        second.text
    );

    // While Alice's video is muted, its packets count as muted drops.
    post_event(&api, &admin, &conversation, alice, "video:mute:on").await;
    let muted_first = Scrape::take(&api).await;
    tokio::time::sleep(SCRAPE_INTERVAL).await;
    let muted_second = Scrape::take(&api).await;
    assert!(
        muted_second.value(MUTED_DROPS) > muted_first.value(MUTED_DROPS),
        "muted drops did not grow while muted: {} then {}",
        muted_first.value(MUTED_DROPS),
        muted_second.value(MUTED_DROPS)
    );

    // The unmute is applied in the worker before the request returns, so no drop follows it.
    post_event(&api, &admin, &conversation, alice, "video:mute:off").await;
    let unmuted_first = Scrape::take(&api).await;
    let video_at_unmute = subscriber.count(Kind::Video);
    assert!(
        wait_until(TIMEOUT, || subscriber.count(Kind::Video)
            > video_at_unmute + 5)
        .await,
        "video does not come back after unmute"
    );
    let unmuted_second = Scrape::take(&api).await;
    assert_eq!(
        unmuted_second.value(MUTED_DROPS),
        unmuted_first.value(MUTED_DROPS),
        "muted drops grew after unmute"
    );
    assert!(unmuted_second.value(FORWARDED) > unmuted_first.value(FORWARDED));
    assert!(
        unmuted_second.value("switchboard_keyframe_requests_total{direction=\"to_publisher\"}")
            > 0.0
    );

    // Shutdown: /readyz turns 503 at once, /healthz and /metrics respond until the listener
    // closes after the drain delay, and then the connection is refused.
    let address = node.http_address();
    let shutdown = tokio::spawn(node.shutdown());
    // The spawned shutdown marks the node draining as soon as it first runs.
    let mut ready = api.raw(reqwest::Method::GET, "/readyz", None, None).await;
    for _ in 0..20 {
        if ready.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = api.raw(reqwest::Method::GET, "/readyz", None, None).await;
    }
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["status"], "draining");
    let health = api.raw(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{}", health.text);
    let draining_scrape = Scrape::take(&api).await;
    assert_eq!(
        draining_scrape.value("switchboard_legs{direction=\"upstream\"}"),
        1.0,
        "legs stay open while the node drains"
    );

    shutdown.await.expect("join").expect("shutdown");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the listener is closed after shutdown"
    );
    publisher.close().await;
    subscriber.close().await;
}

#[tokio::test]
async fn stopped_media_worker_fails_readiness() {
    let node = Node::start(fast_config()).await.expect("start node");
    let api = Api::new(&node);
    let ready = api.raw(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);

    let media = node.media().clone();
    tokio::task::spawn_blocking(move || media.shutdown())
        .await
        .expect("stop the media worker");

    let ready = api.raw(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["status"], "media_stopped");
    let health = api.raw(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{}", health.text);
    let scrape = Scrape::take(&api).await;
    assert_eq!(scrape.value("switchboard_media_worker_up"), 0.0);
    assert_eq!(scrape.value("switchboard_conversations"), 0.0);
    assert!(
        !scrape.text.contains(FORWARDED),
        "media series of a stopped worker:\n{}",
        scrape.text
    );
    node.shutdown().await.expect("shutdown");
}
