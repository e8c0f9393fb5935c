//! The realtime API under input and timing that the SDK never produces. The tests send bursts
//! of requests and floods past the request queue, close sockets with requests in flight, run
//! several sessions of one user, and remove members and conversations while offers are open.
//! They also send frames that are no request, and stop the node with sessions open. Each test
//! checks a promise of the README's "The Nexmo JavaScript SDK" section: one reply per request,
//! requests in order, events only to members and in log order, no leg or member left behind,
//! and the REST API's access rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::realtime::{RealtimeClient, ReceivedEvent};
use client::{Publisher, SendPlan, Subscriber};
use serde_json::{Value, json};
use signaling::auth::TokenGrant;
use switchboard::{Config, Node};

mod common;

use common::realtime::{QUIET, WAIT, connect, create_conversation, request, success};
use common::{Api, PUBLISH_AV, fast_config};

/// Settings of a node whose legs outlive the tests unless something closes them: the media
/// worker's default ICE timeouts are longer than any test here, so a leg left behind stays
/// visible instead of failing on its own.
fn lasting_legs_config() -> Config {
    let mut config = Config::ephemeral();
    config.realtime.login_timeout_ms = 5_000;
    config
}

/// Logs in a new socket as `name`, who must exist, and returns it with the user's id.
async fn login_as(node: &Node, name: &str) -> (RealtimeClient, String) {
    let token = node
        .user_token(name, Duration::from_secs(600))
        .expect("user token");
    login_with(node, &token).await
}

async fn login_with(node: &Node, token: &str) -> (RealtimeClient, String) {
    let socket = connect(node).await;
    let reply = request(
        &socket,
        "session:login",
        json!({ "body": { "token": token } }),
    )
    .await;
    let body = success(&reply, "session:success");
    let user_id = body["user_id"].as_str().expect("user_id").to_owned();
    (socket, user_id)
}

/// Creates the user over REST and logs in a socket for it.
async fn login(node: &Node, api: &Api, admin: &str, name: &str) -> (RealtimeClient, String) {
    api.post_ok(admin, "/users", json!({ "name": name })).await;
    login_as(node, name).await
}

/// Asserts an error reply of `<type>:error:<reason>` for the request type `kind`.
#[track_caller]
fn rejected(reply: &ReceivedEvent, kind: &str) {
    assert!(
        reply.name.starts_with(&format!("{kind}:error:")),
        "expected an error reply to {kind}: {reply:?}"
    );
    assert_eq!(reply.payload["type"], reply.name, "{reply:?}");
}

async fn join(socket: &RealtimeClient, cid: &str) -> String {
    let reply = request(
        socket,
        "conversation:join",
        json!({ "cid": cid, "body": {} }),
    )
    .await;
    success(&reply, "conversation:join:success")["member_id"]
        .as_str()
        .expect("member_id")
        .to_owned()
}

/// Returns a `rtc:new` request body that publishes `sdp` with `direction`.
fn publish_body(sdp: &str, direction: &str) -> Value {
    json!({ "offer": { "sdp": sdp }, "video": { "direction": direction, "name": "video" } })
}

/// Opens a leg from a fixture offer that never connects, and returns its `rtc_id`.
async fn publish_fixture(socket: &RealtimeClient, cid: &str, member: &str) -> String {
    let reply = request(
        socket,
        "rtc:new",
        json!({ "cid": cid, "from": member, "body": publish_body(PUBLISH_AV, "send_only") }),
    )
    .await;
    success(&reply, "rtc:new:success")["rtc_id"]
        .as_str()
        .expect("rtc_id")
        .to_owned()
}

/// A member that publishes a real WebRTC peer over `rtc:new`.
struct Publishing {
    leg: String,
    publisher: Publisher,
}

async fn publish(socket: &RealtimeClient, cid: &str, member: &str, direction: &str) -> Publishing {
    let publisher = Publisher::new().await.expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let reply = request(
        socket,
        "rtc:new",
        json!({ "cid": cid, "from": member, "body": publish_body(&offer, direction) }),
    )
    .await;
    let leg = success(&reply, "rtc:new:success")["rtc_id"]
        .as_str()
        .expect("rtc_id")
        .to_owned();
    let answer = socket
        .wait_for("rtc:answer", WAIT, |event| {
            event.name == "rtc:answer" && event.payload["body"]["rtc_id"] == leg
        })
        .await
        .expect("the answer is pushed");
    let sdp = answer.payload["body"]["answer"].as_str().expect("sdp");
    publisher
        .apply_answer(sdp.to_owned())
        .await
        .expect("the answer applies");
    publisher
        .wait_connected(WAIT)
        .await
        .expect("the publisher connects");
    publisher.start_media(SendPlan::default());
    Publishing { leg, publisher }
}

/// Waits for the node's `rtc:offer` of `publisher_leg` on `socket`, and returns its body.
async fn offer_of(socket: &RealtimeClient, publisher_leg: &str) -> Value {
    socket
        .wait_for("rtc:offer", WAIT, |event| {
            event.name == "rtc:offer" && event.payload["body"]["member_leg_id"] == publisher_leg
        })
        .await
        .expect("the node offers the publisher's leg")
        .payload["body"]
        .clone()
}

/// Reads one series of `/metrics`, 0 when absent.
async fn metric(api: &Api, series: &str) -> f64 {
    let text = api
        .raw(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text;
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

const UPSTREAM_LEGS: &str = "switchboard_legs{direction=\"upstream\"}";
const DOWNSTREAM_LEGS: &str = "switchboard_legs{direction=\"downstream\"}";

/// Waits until the media worker has `upstream` and `downstream` legs open, and returns
/// whether it did.
async fn legs_settle(api: &Api, upstream: f64, downstream: f64) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if metric(api, UPSTREAM_LEGS).await == upstream
            && metric(api, DOWNSTREAM_LEGS).await == downstream
        {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the `rtc_id`s of the conversation's publisher legs.
async fn publisher_legs(api: &Api, admin: &str, cid: &str) -> Vec<String> {
    let table = api
        .get_ok(admin, &format!("/conversations/{cid}/rtc"))
        .await;
    table["publishers"]
        .as_array()
        .expect("publishers")
        .iter()
        .filter_map(|publisher| publisher["rtc_id"].as_str().map(str::to_owned))
        .collect()
}

/// Returns the state of the user's member in the conversation, `None` without one.
async fn member_state(api: &Api, admin: &str, cid: &str, user_id: &str) -> Option<String> {
    let conversation = api.get_ok(admin, &format!("/conversations/{cid}")).await;
    conversation["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|member| member["user_id"] == user_id)
        .and_then(|member| member["state"].as_str().map(str::to_owned))
}

/// Waits until the user has no JOINED member in the conversation.
async fn not_joined(api: &Api, admin: &str, cid: &str, user_id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if member_state(api, admin, cid, user_id).await.as_deref() != Some("JOINED") {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects the replies to `tids` until each has one, or `WAIT` passes, and returns them by
/// `rid` together with the number of replies that repeated a `rid`.
async fn replies_to(socket: &RealtimeClient, tids: &[String]) -> (HashMap<String, String>, usize) {
    let mut replies = HashMap::new();
    let mut repeated = 0;
    while replies.len() < tids.len() {
        let reply = socket
            .wait_for("a reply", WAIT, |event| event.payload["rid"].is_string())
            .await
            .unwrap_or_else(|error| {
                panic!("{} of {} replies came: {error}", replies.len(), tids.len())
            });
        let rid = reply.payload["rid"].as_str().unwrap_or_default().to_owned();
        if replies.insert(rid, reply.name).is_some() {
            repeated += 1;
        }
    }
    // A second reply to any request would have come by now.
    tokio::time::sleep(QUIET).await;
    for event in socket.drain().await {
        if let Some(rid) = event.payload["rid"].as_str()
            && replies.contains_key(rid)
        {
            repeated += 1;
        }
    }
    (replies, repeated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_requests_is_handled_in_arrival_order() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let cid = create_conversation(&alice, "order").await;
    let member = invite(&api, &admin, &cid, "alice").await;

    // The SDK sends a join and then an offer without waiting between them, so the second
    // fails unless the node handles them in order.
    let publishing = Publisher::new().await.expect("publisher");
    let offer = publishing.offer().await.expect("offer");
    alice
        .emit_all(&[
            (
                "conversation:join",
                json!({ "tid": "join", "cid": cid, "body": {} }),
            ),
            (
                "rtc:new",
                json!({ "tid": "publish", "cid": cid, "from": member, "body": publish_body(&offer, "send_only") }),
            ),
        ])
        .expect("send");
    let joined = alice
        .wait_for("the join reply", WAIT, |event| {
            event.payload["rid"] == "join"
        })
        .await
        .expect("a join reply");
    success(&joined, "conversation:join:success");
    let published = alice
        .wait_for("the rtc:new reply", WAIT, |event| {
            event.payload["rid"] == "publish"
        })
        .await
        .expect("an rtc:new reply");
    success(&published, "rtc:new:success");

    // Replies go out as requests finish, so their order is the order of handling.
    let count = 50;
    let tids: Vec<String> = (0..count).map(|index| format!("burst-{index}")).collect();
    let events: Vec<(&str, Value)> = tids
        .iter()
        .map(|tid| ("conversation:get", json!({ "tid": tid, "cid": cid })))
        .collect();
    alice.emit_all(&events).expect("send");
    let mut order = Vec::new();
    while order.len() < count {
        let reply = alice
            .wait_for("a burst reply", WAIT, |event| {
                event.payload["rid"]
                    .as_str()
                    .is_some_and(|rid| rid.starts_with("burst-"))
            })
            .await
            .expect("every request of the burst gets a reply");
        assert_eq!(reply.name, "conversation:get:success", "{reply:?}");
        order.push(reply.payload["rid"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(order, tids, "replies in the order of the requests");
    publishing.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_gets_exactly_one_reply_per_request() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let cid = create_conversation(&alice, "flood").await;

    let tids: Vec<String> = (0..300).map(|index| format!("flood-{index}")).collect();
    let events: Vec<(&str, Value)> = tids
        .iter()
        .map(|tid| ("conversation:get", json!({ "tid": tid, "cid": cid })))
        .collect();
    alice.emit_all(&events).expect("send");
    let (replies, repeated) = replies_to(&alice, &tids).await;
    assert_eq!(repeated, 0, "no request got two replies");
    for name in replies.values() {
        assert!(
            name == "conversation:get:success"
                || name == "conversation:get:error:too-many-requests",
            "{name}"
        );
    }
    assert!(
        replies
            .values()
            .any(|name| name == "conversation:get:error:too-many-requests"),
        "300 requests at once overflow the queue of 64"
    );

    // A flood of logins on a new socket: one logs in, and every failure is a session error,
    // the type the SDK reads for a failed login.
    let token = node
        .user_token("alice", Duration::from_secs(600))
        .expect("token");
    let socket = connect(&node).await;
    let tids: Vec<String> = (0..200).map(|index| format!("login-{index}")).collect();
    let events: Vec<(&str, Value)> = tids
        .iter()
        .map(|tid| {
            (
                "session:login",
                json!({ "tid": tid, "body": { "token": token } }),
            )
        })
        .collect();
    socket.emit_all(&events).expect("send");
    let (replies, repeated) = replies_to(&socket, &tids).await;
    assert_eq!(repeated, 0, "no login got two replies");
    let logged_in = replies
        .values()
        .filter(|name| *name == "session:success")
        .count();
    assert_eq!(logged_in, 1, "exactly one login succeeds");
    for name in replies.values() {
        assert!(
            name == "session:success"
                || name == "session:error:already-logged-in"
                || name == "session:error:too-many-requests",
            "{name}"
        );
    }

    // A flood too large for the send buffer: no reply is lost silently, because the node
    // closes the socket of a client that cannot keep up.
    let (carol, _) = login(&node, &api, &admin, "carol").await;
    let tids: Vec<String> = (0..5_000).map(|index| format!("huge-{index}")).collect();
    let events: Vec<(&str, Value)> = tids
        .iter()
        .map(|tid| ("user:conversations", json!({ "tid": tid })))
        .collect();
    carol.emit_all(&events).expect("send");
    let mut answered = std::collections::HashSet::new();
    loop {
        match carol
            .wait_for("a reply", WAIT, |event| event.payload["rid"].is_string())
            .await
        {
            Ok(reply) => {
                let rid = reply.payload["rid"].as_str().unwrap_or_default().to_owned();
                assert!(answered.insert(rid), "one reply per request: {reply:?}");
                if answered.len() == tids.len() {
                    break;
                }
            }
            Err(error) => {
                assert!(
                    carol.is_closed(),
                    "{} of {} replies came, and the socket is open: {error}",
                    answered.len(),
                    tids.len()
                );
                break;
            }
        }
    }

    // The first socket still works once its queue has drained.
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    success(&reply, "conversation:get:success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_closed_with_requests_in_flight_leaves_nothing() {
    let node = Node::start(lasting_legs_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let cid = create_conversation(&alice, "vanishing").await;
    join(&alice, &cid).await;

    for round in 0..4 {
        let name = format!("bob-{round}");
        let (bob, bob_id) = login(&node, &api, &admin, &name).await;
        let member = invite(&api, &admin, &cid, &name).await;
        // The client goes away right behind its join and its offer, as a tab closed at once.
        bob.emit_all(&[
            (
                "conversation:join",
                json!({ "tid": "join", "cid": cid, "body": {} }),
            ),
            (
                "rtc:new",
                json!({ "tid": "publish", "cid": cid, "from": member, "body": publish_body(PUBLISH_AV, "send_only") }),
            ),
        ])
        .expect("send");
        bob.close();
        assert!(
            not_joined(&api, &admin, &cid, &bob_id).await,
            "round {round}: the member of a closed socket does not stay JOINED"
        );
        assert!(
            legs_settle(&api, 0.0, 0.0).await,
            "round {round}: no leg of a closed socket stays open: {} upstream, {} downstream",
            metric(&api, UPSTREAM_LEGS).await,
            metric(&api, DOWNSTREAM_LEGS).await
        );
        assert_eq!(
            publisher_legs(&api, &admin, &cid).await,
            Vec::<String>::new()
        );
    }
    assert_eq!(
        member_state(&api, &admin, &cid, &alice_id).await.as_deref(),
        Some("JOINED"),
        "the other member stays"
    );
}

/// Invites the user named `name` over REST, and returns the member id its join accepts.
async fn invite(api: &Api, admin: &str, cid: &str, name: &str) -> String {
    let member = api
        .post_ok(
            admin,
            &format!("/conversations/{cid}/members"),
            json!({ "user_name": name, "action": "invite" }),
        )
        .await;
    member["id"].as_str().expect("member id").to_owned()
}

#[tokio::test]
async fn member_leaves_when_the_users_last_session_ends() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (first, alice_id) = login(&node, &api, &admin, "alice").await;
    let (second, _) = login_as(&node, "alice").await;
    let cid = create_conversation(&first, "two-tabs").await;
    join(&first, &cid).await;

    // The session that joined goes away while another session of the user lives on.
    first.close();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        member_state(&api, &admin, &cid, &alice_id).await.as_deref(),
        Some("JOINED"),
        "the member stays while the user has a live session"
    );
    let reply = request(&second, "conversation:get", json!({ "cid": cid })).await;
    success(&reply, "conversation:get:success");

    second.close();
    assert!(
        not_joined(&api, &admin, &cid, &alice_id).await,
        "the member leaves with the user's last session"
    );
}

#[tokio::test]
async fn second_session_joining_again_takes_over_the_member() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (first, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&first, "rejoin").await;
    let alice_member = join(&first, &cid).await;
    let bob_member = join(&bob, &cid).await;
    let receiving = publish(&bob, &cid, &bob_member, "both").await;
    let old = publish(&first, &cid, &alice_member, "both").await;
    offer_of(&bob, &old.leg).await;
    offer_of(&first, &receiving.leg).await;

    // Another tab of alice joins again: the member is the same, its old legs end.
    let (second, _) = login_as(&node, "alice").await;
    assert_eq!(join(&second, &cid).await, alice_member);
    for (who, socket) in [("alice's first session", &first), ("bob", &bob)] {
        socket
            .wait_for("rtc:terminate of the old leg", WAIT, |event| {
                event.name == "rtc:terminate" && event.payload["body"]["rtc_id"] == old.leg
            })
            .await
            .unwrap_or_else(|error| panic!("{who} learns that the old leg ended: {error}"));
    }
    old.publisher.close().await;
    assert_eq!(
        publisher_legs(&api, &admin, &cid).await,
        [receiving.leg.as_str()]
    );

    let new = publish(&second, &cid, &alice_member, "both").await;
    offer_of(&bob, &new.leg).await;
    offer_of(&second, &receiving.leg).await;
    tokio::time::sleep(QUIET).await;
    let mut offered: HashMap<String, usize> = HashMap::new();
    for event in bob.drain().await {
        if event.name == "rtc:offer" {
            let leg = event.payload["body"]["member_leg_id"]
                .as_str()
                .unwrap_or_default();
            *offered.entry(leg.to_owned()).or_default() += 1;
        }
    }
    assert!(
        offered.is_empty(),
        "no publisher leg is offered twice: {offered:?}"
    );
    let stray = first
        .wait_for("an offer to the replaced session", QUIET, |event| {
            event.name == "rtc:offer"
        })
        .await;
    assert!(stray.is_err(), "{stray:?}");

    // Everything closes: no leg and no JOINED member of alice stays.
    first.close();
    second.close();
    new.publisher.close().await;
    assert!(not_joined(&api, &admin, &cid, &alice_id).await);
    bob.close();
    receiving.publisher.close().await;
    assert!(
        legs_settle(&api, 0.0, 0.0).await,
        "no leg stays open: {} upstream, {} downstream",
        metric(&api, UPSTREAM_LEGS).await,
        metric(&api, DOWNSTREAM_LEGS).await
    );
}

#[tokio::test]
async fn unanswered_offers_close_when_their_publisher_leaves() {
    let node = Node::start(lasting_legs_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "leaving").await;
    let alice_member = join(&alice, &cid).await;
    let bob_member = join(&bob, &cid).await;
    let bob_leg = publish(&bob, &cid, &bob_member, "both").await;
    let alice_leg = publish_fixture(&alice, &cid, &alice_member).await;
    let offer = offer_of(&bob, &alice_leg).await;
    assert!(
        legs_settle(&api, 2.0, 1.0).await,
        "bob is offered alice's leg"
    );

    // Alice leaves before bob answers.
    let reply = request(
        &alice,
        "conversation:member:delete",
        json!({ "cid": cid, "from": alice_member, "to": alice_member, "body": { "member_id": alice_member } }),
    )
    .await;
    success(&reply, "conversation:member:delete:success");
    bob.wait_for("rtc:terminate of alice's leg", WAIT, |event| {
        event.name == "rtc:terminate" && event.payload["body"]["rtc_id"] == alice_leg
    })
    .await
    .expect("bob learns that alice's leg ended");
    assert!(
        legs_settle(&api, 1.0, 0.0).await,
        "only bob's own leg stays: {} upstream, {} downstream",
        metric(&api, UPSTREAM_LEGS).await,
        metric(&api, DOWNSTREAM_LEGS).await
    );

    // The offer is gone, so its answer is rejected.
    let subscriber = Subscriber::answering().await.expect("subscriber");
    let sdp = offer["sdp"].as_str().expect("offer sdp");
    let answer = subscriber.answer(sdp.to_owned()).await.expect("answer");
    let reply = request(
        &bob,
        "rtc:answer",
        json!({ "cid": cid, "from": bob_member, "rtc_id": bob_leg.leg, "body": { "answer": answer, "leg_id": alice_leg } }),
    )
    .await;
    rejected(&reply, "rtc:answer");
    bob_leg.publisher.close().await;
}

#[tokio::test]
async fn conversation_deleted_under_its_sessions() {
    let node = Node::start(lasting_legs_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "deleted").await;
    let alice_member = join(&alice, &cid).await;
    let bob_member = join(&bob, &cid).await;
    let bob_leg = publish(&bob, &cid, &bob_member, "both").await;
    let alice_leg = publish_fixture(&alice, &cid, &alice_member).await;
    offer_of(&bob, &alice_leg).await;

    let reply = api.delete(&admin, &format!("/conversations/{cid}")).await;
    assert!((200..300).contains(&reply.status), "{}", reply.text);
    assert!(
        legs_settle(&api, 0.0, 0.0).await,
        "the conversation's legs close with it: {} upstream, {} downstream",
        metric(&api, UPSTREAM_LEGS).await,
        metric(&api, DOWNSTREAM_LEGS).await
    );

    // The sessions go on, and what they send about the conversation is rejected.
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    rejected(&reply, "conversation:get");
    let reply = request(
        &bob,
        "rtc:new",
        json!({ "cid": cid, "from": bob_member, "body": publish_body(PUBLISH_AV, "send_only") }),
    )
    .await;
    rejected(&reply, "rtc:new");
    let reply = request(
        &alice,
        "rtc:terminate",
        json!({ "cid": cid, "from": alice_member, "rtc_id": alice_leg }),
    )
    .await;
    rejected(&reply, "rtc:terminate");
    let other = create_conversation(&alice, "after").await;
    join(&alice, &other).await;

    alice.close();
    bob.close();
    bob_leg.publisher.close().await;
    assert!(legs_settle(&api, 0.0, 0.0).await);
}

/// Starts a webhook receiver on 127.0.0.1 that records each event it gets, and returns its URL
/// and the events. It checks no signature: the webhook tests do.
async fn start_event_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let events = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::clone(&events);
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |axum::Json(delivery): axum::Json<Value>| {
            let received = Arc::clone(&received);
            async move {
                received
                    .lock()
                    .expect("receiver lock")
                    .push(delivery["event"].clone());
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/events"), events)
}

#[tokio::test]
async fn shutdown_closes_the_sessions_sockets() {
    let (url, delivered) = start_event_receiver().await;
    let mut config = fast_config();
    config.shutdown.timeout_ms = 3_000;
    config.webhooks.event_url = Some(url);
    config.webhooks.secret = webhooks::WebhookSecret::new("realtime-test-secret-0123456789ab");
    let node = Node::start(config).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let cid = create_conversation(&alice, "shutdown").await;
    let alice_member = join(&alice, &cid).await;
    let idle = connect(&node).await;

    tokio::time::timeout(WAIT, node.shutdown())
        .await
        .expect("the shutdown ends")
        .expect("the shutdown succeeds");
    assert!(
        alice.wait_closed(WAIT).await,
        "a logged-in socket is closed by the shutdown"
    );
    assert!(
        idle.wait_closed(WAIT).await,
        "a socket that did not log in is closed by the shutdown"
    );
    // The shutdown sends the queued webhooks last, so the session's end is among them.
    let events = delivered.lock().expect("receiver lock").clone();
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "member:left" && event["from"] == alice_member),
        "the session ended with the shutdown and its member left: {events:?}"
    );
}

#[tokio::test]
async fn sessions_cannot_act_for_other_members() {
    let node = Node::start(lasting_legs_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, bob_id) = login(&node, &api, &admin, "bob").await;
    let (carol, _) = login(&node, &api, &admin, "carol").await;
    let cid = create_conversation(&alice, "rules").await;
    let alice_member = join(&alice, &cid).await;
    let bob_member = join(&bob, &cid).await;
    let alice_leg = publish_fixture(&alice, &cid, &alice_member).await;
    let before =
        api.get_ok(&admin, &format!("/conversations/{cid}")).await["sequence_number"].clone();
    let _ = alice.drain().await;

    let cases: Vec<(&RealtimeClient, &str, Value)> = vec![
        // Bob acts as alice's member.
        (
            &bob,
            "rtc:new",
            json!({ "cid": cid, "from": alice_member, "body": publish_body(PUBLISH_AV, "send_only") }),
        ),
        (
            &bob,
            "rtc:answer",
            json!({ "cid": cid, "from": alice_member, "rtc_id": alice_leg, "body": { "answer": "v=0", "leg_id": alice_leg } }),
        ),
        (
            &bob,
            "rtc:terminate",
            json!({ "cid": cid, "from": bob_member, "rtc_id": alice_leg }),
        ),
        (
            &bob,
            "conversation:member:delete",
            json!({ "cid": cid, "from": bob_member, "body": { "member_id": alice_member } }),
        ),
        (
            &bob,
            "video:mute:on",
            json!({ "cid": cid, "from": alice_member, "to": alice_member, "body": {} }),
        ),
        (
            &bob,
            "audio:mute:on",
            json!({ "cid": cid, "from": bob_member, "to": alice_member, "body": {} }),
        ),
        (
            &bob,
            "conversation:join",
            json!({ "cid": cid, "body": { "user_id": alice_id } }),
        ),
        // Carol is in no conversation of theirs.
        (&carol, "conversation:get", json!({ "cid": cid })),
        (&carol, "conversation:events", json!({ "cid": cid })),
        (
            &carol,
            "conversation:invite",
            json!({ "cid": cid, "body": { "user_name": "carol" } }),
        ),
        (
            &carol,
            "rtc:new",
            json!({ "cid": cid, "from": bob_member, "body": publish_body(PUBLISH_AV, "send_only") }),
        ),
    ];
    for (socket, kind, fields) in cases {
        let reply = request(socket, kind, fields.clone()).await;
        rejected(&reply, kind);
        assert!(
            reply.payload["rid"].is_string(),
            "{kind} {fields}: the error reply names its request: {reply:?}"
        );
    }

    assert_eq!(
        api.get_ok(&admin, &format!("/conversations/{cid}")).await["sequence_number"],
        before,
        "no rejected request appended an event"
    );
    assert_eq!(
        publisher_legs(&api, &admin, &cid).await,
        [alice_leg.as_str()]
    );
    assert_eq!(
        member_state(&api, &admin, &cid, &alice_id).await.as_deref(),
        Some("JOINED")
    );
    assert_eq!(
        member_state(&api, &admin, &cid, &bob_id).await.as_deref(),
        Some("JOINED")
    );
    let noticed = alice.drain().await;
    assert!(noticed.is_empty(), "alice noticed nothing: {noticed:?}");
    let leaked = carol.drain().await;
    assert!(
        leaked.iter().all(|event| event.payload["cid"] != cid),
        "nothing of the conversation reached carol: {leaked:?}"
    );

    // The moderator claim lets a session mute others, as it lets a REST caller.
    api.post_ok(&admin, "/users", json!({ "name": "dora" }))
        .await;
    let issuer = node
        .config()
        .auth
        .issuer_if_any(None)
        .expect("auth settings")
        .expect("an issuer");
    let grant = TokenGrant::user("dora", Duration::from_secs(600)).moderator();
    let token = issuer.mint_grant(&grant).expect("a moderator token");
    let (dora, _) = login_with(&node, &token).await;
    let dora_member = join(&dora, &cid).await;
    let reply = request(
        &dora,
        "video:mute:on",
        json!({ "cid": cid, "from": dora_member, "to": alice_member, "body": {} }),
    )
    .await;
    success(&reply, "video:mute:on:success");
    let muted = alice
        .next_event("video:mute:on", WAIT)
        .await
        .expect("alice is told she was muted");
    assert_eq!(muted.payload["from"], dora_member);
    assert_eq!(muted.payload["to"], alice_member);
}

#[tokio::test]
async fn events_reach_only_members_in_order() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let (carol, _) = login(&node, &api, &admin, "carol").await;
    let (dave, _) = login(&node, &api, &admin, "dave").await;
    let cid = create_conversation(&alice, "order").await;
    let alice_member = join(&alice, &cid).await;
    join(&bob, &cid).await;
    invite(&api, &admin, &cid, "dave").await;

    // Concurrent posts: the log decides their order, and every session must follow it.
    let token = node
        .user_token("alice", Duration::from_secs(600))
        .expect("token");
    let count = 40;
    let mut posts = tokio::task::JoinSet::new();
    for index in 0..count {
        let api = api.clone();
        let token = token.clone();
        let path = format!("/conversations/{cid}/events");
        let body =
            json!({ "type": "custom:tick", "from": alice_member, "body": { "index": index } });
        posts.spawn(async move { api.post_ok(&token, &path, body).await });
    }
    while let Some(posted) = posts.join_next().await {
        posted.expect("the post task");
    }

    for (who, socket) in [("alice", &alice), ("bob", &bob), ("invited dave", &dave)] {
        let mut ids = Vec::new();
        while ids.len() < count {
            let event = socket
                .next_event("custom:tick", WAIT)
                .await
                .unwrap_or_else(|error| panic!("{who} got {} ticks: {error}", ids.len()));
            ids.push(event.payload["id"].as_u64().expect("event id"));
        }
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "{who} gets the events in log order: {ids:?}"
        );
    }
    let leaked = carol
        .wait_for("an event of the conversation", QUIET, |event| {
            event.payload["cid"] == cid
        })
        .await;
    assert!(leaked.is_err(), "a non-member got {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_keeps_the_socket() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "logout").await;
    let alice_member = join(&alice, &cid).await;
    let bob_member = join(&bob, &cid).await;
    alice
        .wait_for("bob's member:joined", WAIT, |event| {
            event.name == "member:joined" && event.payload["from"] == bob_member
        })
        .await
        .expect("alice sees bob join");
    let _ = alice.drain().await;

    // The logout and the requests behind it go out together.
    let token = node
        .user_token("alice", Duration::from_secs(600))
        .expect("token");
    alice
        .emit_all(&[
            ("session:logout", json!({ "tid": "logout", "body": {} })),
            ("conversation:get", json!({ "tid": "get", "cid": cid })),
            (
                "session:login",
                json!({ "tid": "login", "body": { "token": token } }),
            ),
        ])
        .expect("send");
    let mut names = HashMap::new();
    for tid in ["logout", "get", "login"] {
        let reply = alice
            .wait_for(tid, WAIT, |event| event.payload["rid"] == tid)
            .await
            .unwrap_or_else(|error| panic!("a reply to {tid}: {error}"));
        names.insert(tid, reply.name);
    }
    assert_eq!(names["logout"], "session:logged-out");
    assert_eq!(names["get"], "conversation:get:error:unauthenticated");
    assert_eq!(names["login"], "session:error:logged-out");
    bob.wait_for("alice's member:left", WAIT, |event| {
        event.name == "member:left" && event.payload["from"] == alice_member
    })
    .await
    .expect("bob sees alice leave");
    assert!(not_joined(&api, &admin, &cid, &alice_id).await);
    assert!(!alice.is_closed(), "the socket stays open after a logout");

    // Events of the conversation no longer reach the socket.
    let bob_token = node
        .user_token("bob", Duration::from_secs(600))
        .expect("token");
    api.post_ok(
        &bob_token,
        &format!("/conversations/{cid}/events"),
        json!({ "type": "custom:after", "from": bob_member, "body": {} }),
    )
    .await;
    bob.next_event("custom:after", WAIT)
        .await
        .expect("bob gets his event");
    let stray = alice
        .wait_for("an event after the logout", QUIET, |event| {
            event.payload["cid"] == cid && event.payload["rid"].is_null()
        })
        .await;
    assert!(stray.is_err(), "{stray:?}");
}

#[tokio::test]
async fn odd_frames_get_one_reply_with_their_rid() {
    let node = Node::start(fast_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let cid = create_conversation(&alice, "frames").await;
    join(&alice, &cid).await;

    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let cases: Vec<(&str, String, Option<Vec<u8>>, &str)> = vec![
        (
            "arguments",
            format!(
                "42[\"conversation:get\",{{\"tid\":\"arguments\",\"cid\":\"{cid}\"}}{}]",
                ",1".repeat(1_000)
            ),
            None,
            "conversation:get:success",
        ),
        (
            "deep",
            format!(
                "42[\"conversation:get\",{{\"tid\":\"deep\",\"cid\":\"{cid}\",\"body\":{deep}}}]"
            ),
            None,
            "conversation:get:error:invalid-request",
        ),
        (
            "binary",
            "451-[\"conversation:get\",{\"tid\":\"binary\",\"cid\":{\"_placeholder\":true,\"num\":0}}]"
                .to_owned(),
            // Engine.io 3 puts the message type 4 before a binary attachment.
            Some(vec![4, 1, 2, 3]),
            "conversation:get:error:invalid-request",
        ),
        (
            "acknowledged",
            format!("4217[\"conversation:get\",{{\"tid\":\"acknowledged\",\"cid\":\"{cid}\"}}]"),
            None,
            "conversation:get:success",
        ),
        (
            "nameless",
            "42[\"\",{\"tid\":\"nameless\"}]".to_owned(),
            None,
            "request:error:invalid-type",
        ),
    ];
    for (tid, frame, attachment, expected) in cases {
        alice.send_frame(frame).expect("send");
        if let Some(bytes) = attachment {
            alice.send_binary(bytes).expect("send");
        }
        let reply = alice
            .wait_for(tid, WAIT, |event| event.payload["rid"] == tid)
            .await
            .unwrap_or_else(|error| panic!("a reply to {tid}: {error}"));
        assert_eq!(reply.name, expected, "{tid}: {reply:?}");
        let again = alice
            .wait_for("a second reply", QUIET, |event| event.payload["rid"] == tid)
            .await;
        assert!(again.is_err(), "{tid}: one reply only: {again:?}");
    }

    // Another namespace is not the realtime API: nothing answers there, and the socket goes on.
    alice
        .send_frames(vec![
            "40/other".to_owned(),
            format!("42/other,[\"conversation:get\",{{\"tid\":\"other\",\"cid\":\"{cid}\"}}]"),
        ])
        .expect("send");
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    success(&reply, "conversation:get:success");
    let stray = alice
        .wait_for("a reply in another namespace", QUIET, |event| {
            event.payload["rid"] == "other"
        })
        .await;
    assert!(stray.is_err(), "{stray:?}");

    // A frame over max_message_bytes closes its socket, whose session ends, and no other.
    let (bob, bob_id) = login(&node, &api, &admin, "bob").await;
    join(&bob, &cid).await;
    bob.send_frame(format!(
        "42[\"conversation:get\",{{\"tid\":\"huge\",\"cid\":\"{}\"}}]",
        "x".repeat(300 * 1024)
    ))
    .expect("send");
    assert!(
        bob.wait_closed(WAIT).await,
        "an oversized frame closes its socket"
    );
    assert!(not_joined(&api, &admin, &cid, &bob_id).await);
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    success(&reply, "conversation:get:success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_and_terminate_sent_together_leave_no_leg() {
    let node = Node::start(lasting_legs_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, _) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "race").await;
    let alice_member = join(&alice, &cid).await;
    let bob_member = join(&bob, &cid).await;
    let alice_leg = publish_fixture(&alice, &cid, &alice_member).await;
    let receiving = publish(&bob, &cid, &bob_member, "both").await;
    let offer = offer_of(&bob, &alice_leg).await;

    // A second leg of bob's with direction both is not offered alice's leg again: bob's member
    // receives it already.
    let second = publish(&bob, &cid, &bob_member, "both").await;
    let again = bob
        .wait_for("a second offer of alice's leg", QUIET, |event| {
            event.name == "rtc:offer" && event.payload["body"]["member_leg_id"] == alice_leg
        })
        .await;
    assert!(
        again.is_err(),
        "one offer per publisher leg and member: {again:?}"
    );

    let subscriber = Subscriber::answering().await.expect("subscriber");
    let sdp = offer["sdp"].as_str().expect("sdp");
    let answer = subscriber.answer(sdp.to_owned()).await.expect("answer");

    // Another session of bob's cannot answer an offer made to this session's leg.
    let (other_tab, _) = login_as(&node, "bob").await;
    let reply = request(
        &other_tab,
        "rtc:answer",
        json!({ "cid": cid, "from": bob_member, "rtc_id": receiving.leg, "body": { "answer": answer, "leg_id": alice_leg } }),
    )
    .await;
    assert_eq!(reply.name, "rtc:answer:error:unknown-leg", "{reply:?}");

    bob.emit_all(&[
        (
            "rtc:answer",
            json!({ "tid": "answer", "cid": cid, "from": bob_member, "rtc_id": receiving.leg, "body": { "answer": answer, "leg_id": alice_leg } }),
        ),
        (
            "rtc:terminate",
            json!({ "tid": "terminate", "cid": cid, "from": bob_member, "rtc_id": receiving.leg }),
        ),
        (
            "rtc:terminate",
            json!({ "tid": "terminate-second", "cid": cid, "from": bob_member, "rtc_id": second.leg }),
        ),
    ])
    .expect("send");
    for (tid, expected) in [
        ("answer", "rtc:answer:success"),
        ("terminate", "rtc:terminate:success"),
        ("terminate-second", "rtc:terminate:success"),
    ] {
        let reply = bob
            .wait_for(tid, WAIT, |event| event.payload["rid"] == tid)
            .await
            .unwrap_or_else(|error| panic!("a reply to {tid}: {error}"));
        assert_eq!(reply.name, expected, "{reply:?}");
    }
    assert!(
        legs_settle(&api, 1.0, 0.0).await,
        "only alice's leg stays: {} upstream, {} downstream",
        metric(&api, UPSTREAM_LEGS).await,
        metric(&api, DOWNSTREAM_LEGS).await
    );
    receiving.publisher.close().await;
    second.publisher.close().await;
    subscriber.close().await;
}
