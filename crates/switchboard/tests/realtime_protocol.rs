//! The realtime API driven directly over socket.io v2, as the Nexmo JavaScript SDK 4.x speaks
//! it, without a browser: every request type, requests in the wrong order, malformed payloads
//! and unknown types, each answered with a precise reply that changes nothing.

use std::time::Duration;

use client::realtime::{RealtimeClient, ReceivedEvent};
use client::{Kind, Publisher, SendPlan, Subscriber};
use serde_json::{Value, json};
use switchboard::{Config, Node};

mod common;

use common::realtime::{QUIET, WAIT, connect, create_conversation, request, success};
use common::{Api, fast_config};

fn realtime_config() -> Config {
    let mut config = fast_config();
    config.realtime.login_timeout_ms = 1_500;
    config
}

/// Creates a user over REST and returns a logged-in socket for it with its user id.
async fn login(node: &Node, api: &Api, admin: &str, name: &str) -> (RealtimeClient, String) {
    api.post_ok(admin, "/users", json!({ "name": name })).await;
    let token = node
        .user_token(name, Duration::from_secs(600))
        .expect("user token");
    let socket = connect(node).await;
    let reply = socket
        .request(
            "session:login",
            json!({ "body": { "token": token, "SDK_version": "4.1.0", "OS_family": "js" } }),
            WAIT,
        )
        .await
        .expect("a login reply");
    assert_eq!(reply.name, "session:success", "{:?}", reply.payload);
    assert_eq!(reply.payload["body"]["name"], name);
    assert!(
        reply.payload["body"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("SES-")),
        "{:?}",
        reply.payload
    );
    let user_id = reply.payload["body"]["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned();
    (socket, user_id)
}

/// Asserts an error reply of type `expected` with a description and the request's `rid`.
#[track_caller]
fn error(reply: &ReceivedEvent, expected: &str) {
    assert_eq!(reply.name, expected, "{:?}", reply.payload);
    assert_eq!(reply.payload["type"], expected, "{:?}", reply.payload);
    let description = reply.payload["description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "{:?}", reply.payload);
}

async fn join(socket: &RealtimeClient, cid: &str, user_id: &str) -> String {
    let reply = request(
        socket,
        "conversation:join",
        json!({ "cid": cid, "body": { "user_id": user_id } }),
    )
    .await;
    let member = success(&reply, "conversation:join:success");
    assert_eq!(member["state"], "JOINED");
    member["member_id"].as_str().expect("member_id").to_owned()
}

async fn sequence_number(api: &Api, admin: &str, cid: &str) -> u64 {
    api.get_ok(admin, &format!("/conversations/{cid}")).await["sequence_number"]
        .as_u64()
        .expect("sequence_number")
}

#[tokio::test]
async fn login_errors_are_precise() {
    let node = Node::start(realtime_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    api.post_ok(&admin, "/users", json!({ "name": "alice" }))
        .await;
    let socket = connect(&node).await;

    let cases = [
        (json!({ "body": {} }), "session:error:invalid-parameters"),
        (
            json!({ "body": { "token": "not-a-jwt" } }),
            "session:error:invalid-token",
        ),
        (
            json!({ "body": { "token": admin } }),
            "session:error:invalid-token",
        ),
        (
            json!({ "body": { "token": node.user_token("nobody", Duration::from_secs(60)).expect("token") } }),
            "session:error:user-not-found",
        ),
    ];
    for (fields, expected) in cases {
        let reply = request(&socket, "session:login", fields).await;
        error(&reply, expected);
    }
    let expired = node
        .user_token("alice", Duration::ZERO)
        .expect("an expiring token");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = request(
        &socket,
        "session:login",
        json!({ "body": { "token": expired } }),
    )
    .await;
    // A token of zero lifetime is still inside the clock leeway, so it is accepted, or it
    // is expired: both outcomes are precise, and neither may be an unsupported type.
    assert!(
        reply.name == "session:success" || reply.name == "session:error:expired-token",
        "{reply:?}"
    );
}

#[tokio::test]
async fn requests_before_login_are_rejected() {
    let node = Node::start(realtime_config()).await.expect("node");
    let socket = connect(&node).await;
    for name in [
        "conversation:get",
        "rtc:new",
        "rtc:answer",
        "video:mute:on",
        "user:conversations",
        "session:logout",
    ] {
        let reply = request(&socket, name, json!({ "cid": "CON-1", "body": {} })).await;
        error(&reply, &format!("{name}:error:unauthenticated"));
    }
}

#[tokio::test]
async fn socket_without_login_is_closed() {
    let node = Node::start(realtime_config()).await.expect("node");
    let socket = connect(&node).await;
    let notice = socket
        .next_event("session:error:login-timeout", WAIT)
        .await
        .expect("a login timeout notice");
    assert!(notice.payload["description"].is_string());
    assert!(socket.wait_closed(WAIT).await, "the node closes the socket");
}

#[tokio::test]
async fn conversation_flow_over_the_socket() {
    let node = Node::start(realtime_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, bob_id) = login(&node, &api, &admin, "bob").await;

    let cid = create_conversation(&alice, "standup").await;
    let reply = request(
        &alice,
        "conversation:get",
        json!({ "cid": cid, "body": {} }),
    )
    .await;
    let conversation = success(&reply, "conversation:get:success");
    assert_eq!(conversation["id"], cid);
    assert_eq!(conversation["properties"]["video"], true);
    assert!(conversation["timestamp"]["created"].is_string());
    assert_eq!(conversation["members"], json!([]));

    let alice_member = join(&alice, &cid, &alice_id).await;
    let joined = alice
        .next_event("member:joined", WAIT)
        .await
        .expect("the joiner sees its own member:joined");
    assert_eq!(joined.payload["cid"], cid);
    assert_eq!(joined.payload["from"], alice_member);
    assert!(joined.payload["id"].is_u64());
    assert!(joined.payload["body"]["timestamp"]["joined"].is_string());
    assert_eq!(joined.payload["body"]["user"]["name"], "alice");

    // The invitee has not loaded the conversation: it learns of it from member:invited.
    let reply = request(
        &alice,
        "conversation:invite",
        json!({ "cid": cid, "body": { "user_name": "bob", "member_id_inviting": alice_member } }),
    )
    .await;
    let invited = success(&reply, "conversation:invite:success");
    assert_eq!(invited["state"], "INVITED");
    let notice = bob
        .next_event("member:invited", WAIT)
        .await
        .expect("the invitee is notified");
    assert_eq!(notice.payload["cid"], cid);
    assert_eq!(notice.payload["body"]["user"]["name"], "bob");
    assert_eq!(notice.payload["body"]["invited_by"], "alice");
    assert!(notice.payload["body"]["timestamp"]["invited"].is_string());

    let reply = request(&bob, "user:conversations", json!({ "body": {} })).await;
    let list = success(&reply, "user:conversations:success");
    assert_eq!(list[0]["id"], cid);
    assert_eq!(list[0]["state"], "INVITED");
    assert_eq!(list[0]["member_id"], invited["member_id"]);

    let bob_member = join(&bob, &cid, &bob_id).await;
    assert_eq!(
        bob_member, invited["member_id"],
        "the invitation is accepted"
    );
    let seen = alice
        .wait_for("bob's member:joined", WAIT, |event| {
            event.name == "member:joined" && event.payload["from"] == bob_member
        })
        .await
        .expect("alice sees bob join");
    assert_eq!(seen.payload["body"]["state"], "JOINED");

    let reply = request(
        &bob,
        "conversation:events",
        json!({ "cid": cid, "body": {} }),
    )
    .await;
    let events = success(&reply, "conversation:events:success");
    let types: Vec<&str> = events
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|event| event["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "conversation:created",
            "member:joined",
            "member:invited",
            "member:joined"
        ]
    );

    let reply = request(
        &bob,
        "conversation:member:delete",
        json!({ "cid": cid, "from": bob_member, "to": bob_member, "body": { "member_id": bob_member } }),
    )
    .await;
    let left = success(&reply, "conversation:member:delete:success");
    assert_eq!(left["state"], "LEFT");
    for socket in [&alice, &bob] {
        let event = socket
            .wait_for("member:left", WAIT, |event| {
                event.name == "member:left" && event.payload["from"] == bob_member
            })
            .await
            .expect("member:left reaches both");
        assert!(event.payload["body"]["timestamp"]["left"].is_string());
    }

    let metrics = api
        .raw(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text;
    assert!(
        metrics.contains(
            "switchboard_realtime_request_duration_seconds_count{type=\"conversation:join\"} 2"
        ),
        "both joins are in the realtime histogram"
    );

    let reply = request(&alice, "session:logout", json!({ "body": {} })).await;
    assert_eq!(reply.name, "session:logged-out");
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    error(&reply, "conversation:get:error:unauthenticated");
}

#[tokio::test]
async fn bad_requests_get_precise_errors_and_change_nothing() {
    let node = Node::start(realtime_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (carol, _) = login(&node, &api, &admin, "carol").await;
    let cid = create_conversation(&alice, "bad-input").await;
    let member = join(&alice, &cid, &alice_id).await;
    let before = sequence_number(&api, &admin, &cid).await;
    let _ = alice.drain().await;

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "conversation:get",
            json!({ "body": {} }),
            "conversation:get:error:invalid-parameters",
        ),
        (
            "conversation:get",
            json!({ "cid": 7 }),
            "conversation:get:error:invalid-parameters",
        ),
        (
            "conversation:get",
            json!({ "cid": "CON-missing" }),
            "conversation:get:error:not-found",
        ),
        (
            "conversation:join",
            json!({ "cid": cid, "body": "join" }),
            "conversation:join:error:invalid-parameters",
        ),
        (
            "conversation:invite",
            json!({ "cid": cid, "body": {} }),
            "conversation:invite:error:invalid-parameters",
        ),
        (
            "conversation:invite",
            json!({ "cid": cid, "body": { "user_name": "nobody" } }),
            "conversation:invite:error:not-found",
        ),
        (
            "rtc:new",
            json!({ "cid": cid, "from": member, "body": {} }),
            "rtc:new:error:audio-only-unsupported",
        ),
        (
            "rtc:new",
            json!({ "cid": cid, "from": member, "body": { "video": { "direction": "both" } } }),
            "rtc:new:error:invalid-parameters",
        ),
        (
            "rtc:new",
            json!({ "cid": cid, "from": member, "body": { "offer": { "sdp": "v=0 nonsense" }, "video": { "direction": "both" } } }),
            "rtc:new:error:invalid-sdp",
        ),
        (
            "rtc:new",
            json!({ "cid": cid, "from": member, "body": { "offer": { "sdp": "v=0" }, "video": { "direction": "receive_only" } } }),
            "rtc:new:error:unsupported-direction",
        ),
        (
            "rtc:new",
            json!({ "cid": cid, "from": member, "body": { "offer": { "sdp": "v=0" }, "video": { "direction": "send_only", "name": "screenshare" } } }),
            "rtc:new:error:screenshare-unsupported",
        ),
        (
            "rtc:answer",
            json!({ "cid": cid, "from": member, "rtc_id": "LEG-unknown", "body": { "answer": "v=0", "leg_id": "LEG-other" } }),
            "rtc:answer:error:unknown-leg",
        ),
        (
            "rtc:answer",
            json!({ "cid": cid, "from": member, "body": { "answer": "v=0" } }),
            "rtc:answer:error:invalid-parameters",
        ),
        (
            "rtc:terminate",
            json!({ "cid": cid, "from": member, "rtc_id": "LEG-unknown" }),
            "rtc:terminate:error:not-found",
        ),
        (
            "video:mute:on",
            json!({ "cid": cid, "body": { "rtc_id": "LEG-1" } }),
            "video:mute:on:error:invalid-parameters",
        ),
        (
            "text",
            json!({ "cid": cid, "body": { "text": "hi" } }),
            "text:error:unsupported",
        ),
        ("no:such:type", json!({}), "no:such:type:error:unsupported"),
        ("<script>", json!({}), "request:error:invalid-type"),
        (
            "session:login",
            json!({ "body": {} }),
            "session:error:already-logged-in",
        ),
    ];
    for (name, fields, expected) in cases {
        let reply = request(&alice, name, fields).await;
        error(&reply, expected);
    }
    // A member of someone else: carol is not a member of the conversation.
    let reply = request(&carol, "conversation:get", json!({ "cid": cid })).await;
    assert!(
        reply.name.starts_with("conversation:get:error:"),
        "{reply:?}"
    );

    // Payloads that are no request envelope: the reply has no rid to match, so it is read
    // by type.
    alice
        .emit("conversation:get", &json!("just a string"))
        .expect("send");
    let reply = alice
        .next_event("conversation:get:error:invalid-request", WAIT)
        .await
        .expect("a reply to a string payload");
    assert!(reply.payload["description"].is_string());
    alice
        .emit("conversation:get", &json!({ "cid": cid }))
        .expect("send");
    let reply = alice
        .next_event("conversation:get:error:invalid-parameters", WAIT)
        .await
        .expect("a reply to a request without tid");
    assert_eq!(reply.payload["invalid_parameters"][0]["name"], "tid");

    assert_eq!(
        sequence_number(&api, &admin, &cid).await,
        before,
        "no bad request appended an event"
    );
    let stray = carol.drain().await;
    assert!(
        stray.iter().all(|event| event.payload["cid"] != cid),
        "nothing reached a non-member: {stray:?}"
    );

    // The socket still works after all of it.
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    success(&reply, "conversation:get:success");
}

#[tokio::test]
async fn unparsable_frame_closes_only_its_socket() {
    let node = Node::start(realtime_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, _) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "frames").await;
    join(&alice, &cid, &alice_id).await;
    let _ = alice.drain().await;

    bob.send_frame("42[\"conversation:get\", {".to_owned())
        .expect("send");
    assert!(
        bob.wait_closed(WAIT).await,
        "a frame that is not socket.io closes that socket"
    );
    let reply = request(&alice, "conversation:get", json!({ "cid": cid })).await;
    success(&reply, "conversation:get:success");
    let stray = alice
        .wait_for("anything about bob", QUIET, |event| {
            event.name.starts_with("member:")
        })
        .await;
    assert!(stray.is_err(), "alice noticed nothing: {stray:?}");
}

/// A logged-in member that publishes a real WebRTC peer over `rtc:new`.
struct Publishing {
    socket: RealtimeClient,
    member: String,
    leg: String,
    publisher: Publisher,
}

async fn publish(socket: RealtimeClient, cid: &str, member: String, direction: &str) -> Publishing {
    let publisher = Publisher::new().await.expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let reply = request(
        &socket,
        "rtc:new",
        json!({
            "cid": cid, "from": member,
            "body": { "offer": { "sdp": offer }, "video": { "direction": direction, "name": "video" } }
        }),
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
    assert_eq!(answer.payload["cid"], cid);
    let sdp = answer.payload["body"]["answer"]
        .as_str()
        .expect("answer sdp");
    publisher
        .apply_answer(sdp.to_owned())
        .await
        .expect("the answer applies");
    publisher
        .wait_connected(WAIT)
        .await
        .expect("the publisher connects");
    publisher.start_media(SendPlan::default());
    Publishing {
        socket,
        member,
        leg,
        publisher,
    }
}

/// Waits for the node's `rtc:offer` of `from`'s leg to `to`, and returns its body.
async fn offer_of(to: &Publishing, from: &Publishing) -> Value {
    let offer = to
        .socket
        .wait_for("rtc:offer", WAIT, |event| {
            event.name == "rtc:offer" && event.payload["body"]["member_leg_id"] == from.leg
        })
        .await
        .expect("the node offers the publisher's leg");
    offer.payload["body"].clone()
}

/// Answers an offer with a real peer through `rtc:answer`.
async fn answer_offer(to: &Publishing, cid: &str, offer: &Value) -> Subscriber {
    let subscriber = Subscriber::answering().await.expect("subscriber");
    let sdp = offer["sdp"].as_str().expect("offer sdp");
    let answer = subscriber.answer(sdp.to_owned()).await.expect("an answer");
    let reply = request(
        &to.socket,
        "rtc:answer",
        json!({
            "cid": cid, "from": to.member, "rtc_id": to.leg,
            "body": { "answer": answer, "other_member_id": offer["member_id"], "leg_id": offer["member_leg_id"] }
        }),
    )
    .await;
    success(&reply, "rtc:answer:success");
    subscriber
        .wait_connected(WAIT)
        .await
        .expect("the subscriber connects");
    subscriber
}

/// Sends `rtc:terminate` for `leg` as `member` and returns the reply.
async fn terminate(member: &Publishing, cid: &str, leg: &str) -> ReceivedEvent {
    request(
        &member.socket,
        "rtc:terminate",
        json!({ "cid": cid, "from": member.member, "rtc_id": leg }),
    )
    .await
}

/// Returns how many packets of `kind` arrive within `window`.
async fn growth(subscriber: &Subscriber, kind: Kind, window: Duration) -> usize {
    let before = subscriber.count(kind);
    tokio::time::sleep(window).await;
    subscriber.count(kind) - before
}

#[tokio::test]
async fn media_flow_over_the_socket() {
    let node = Node::start(realtime_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, bob_id) = login(&node, &api, &admin, "bob").await;
    let (carol, carol_id) = login(&node, &api, &admin, "carol").await;
    let cid = create_conversation(&alice, "media").await;
    let alice_member = join(&alice, &cid, &alice_id).await;
    let bob_member = join(&bob, &cid, &bob_id).await;
    let carol_member = join(&carol, &cid, &carol_id).await;

    let alice = publish(alice, &cid, alice_member, "both").await;
    let bob = publish(bob, &cid, bob_member.clone(), "both").await;

    // Each receiving member is offered the other's leg, whoever published first.
    let to_bob = offer_of(&bob, &alice).await;
    assert_eq!(to_bob["leg_id"], bob.leg);
    assert_eq!(to_bob["member_id"], alice.member);
    assert_eq!(to_bob["media_settings"]["video"]["muted"], false);
    assert_eq!(to_bob["media_settings"]["audio"]["muted"], false);
    let to_alice = offer_of(&alice, &bob).await;
    assert_eq!(to_alice["leg_id"], alice.leg);

    // A broken answer is rejected and leaves the offer open for a correct one.
    let reply = request(
        &bob.socket,
        "rtc:answer",
        json!({
            "cid": cid, "from": bob.member, "rtc_id": bob.leg,
            "body": { "answer": "v=0 garbage", "leg_id": alice.leg }
        }),
    )
    .await;
    error(&reply, "rtc:answer:error:invalid-answer");
    let bob_receives = answer_offer(&bob, &cid, &to_bob).await;
    let alice_receives = answer_offer(&alice, &cid, &to_alice).await;
    let reply = request(
        &bob.socket,
        "rtc:answer",
        json!({
            "cid": cid, "from": bob.member, "rtc_id": bob.leg,
            "body": { "answer": "v=0", "leg_id": alice.leg }
        }),
    )
    .await;
    error(&reply, "rtc:answer:error:already-answered");
    assert!(
        client::wait_until(WAIT, || bob_receives.count(Kind::Video) > 10
            && alice_receives.count(Kind::Video) > 10)
        .await,
        "video flows both ways"
    );

    // A send-only publisher is offered to the others and offered nothing itself.
    let carol = publish(carol, &cid, carol_member, "send_only").await;
    offer_of(&alice, &carol).await;
    offer_of(&bob, &carol).await;
    let stray = carol
        .socket
        .wait_for("an offer to a send-only leg", QUIET, |event| {
            event.name == "rtc:offer"
        })
        .await;
    assert!(stray.is_err(), "{stray:?}");

    // Mute acts in the router: alice's video stops reaching bob while her audio goes on.
    let reply = request(
        &alice.socket,
        "video:mute:on",
        json!({ "cid": cid, "from": alice.member, "to": alice.member, "body": { "rtc_id": alice.leg } }),
    )
    .await;
    success(&reply, "video:mute:on:success");
    let muted = bob
        .socket
        .next_event("video:mute:on", WAIT)
        .await
        .expect("bob is told");
    assert_eq!(muted.payload["from"], alice.member);
    assert_eq!(muted.payload["body"]["rtc_id"], alice.leg);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        growth(&bob_receives, Kind::Video, Duration::from_millis(700)).await,
        0,
        "no video while muted"
    );
    assert!(growth(&bob_receives, Kind::Audio, Duration::from_millis(500)).await > 0);
    let reply = request(
        &alice.socket,
        "video:mute:off",
        json!({ "cid": cid, "from": alice.member, "to": alice.member, "body": { "rtc_id": alice.leg } }),
    )
    .await;
    success(&reply, "video:mute:off:success");
    assert!(
        client::wait_until(WAIT, || bob_receives.count(Kind::Video) > 0).await
            && growth(&bob_receives, Kind::Video, Duration::from_secs(1)).await > 0,
        "video resumes"
    );

    // Ending alice's leg tells bob which stream ended.
    let reply = terminate(&alice, &cid, &alice.leg).await;
    success(&reply, "rtc:terminate:success");
    // The SDK ends its legs again after leaving; ending an own leg twice succeeds.
    let reply = terminate(&alice, &cid, &alice.leg).await;
    success(&reply, "rtc:terminate:success");
    let reply = terminate(&alice, &cid, &bob.leg).await;
    assert!(
        reply.name.starts_with("rtc:terminate:error:"),
        "another session's leg is not alice's to end: {reply:?}"
    );
    let ended = bob
        .socket
        .wait_for("rtc:terminate of alice's leg", WAIT, |event| {
            event.name == "rtc:terminate" && event.payload["body"]["rtc_id"] == alice.leg
        })
        .await
        .expect("bob learns that alice's leg ended");
    assert_eq!(ended.payload["cid"], cid);

    // A socket that goes away takes its member and legs with it.
    bob.socket.close();
    let left = alice
        .socket
        .wait_for("member:left of bob", WAIT, |event| {
            event.name == "member:left" && event.payload["from"] == bob.member
        })
        .await
        .expect("alice sees bob leave");
    assert_eq!(left.payload["body"]["state"], "LEFT");
    alice
        .socket
        .wait_for("rtc:terminate of bob's leg", WAIT, |event| {
            event.name == "rtc:terminate" && event.payload["body"]["rtc_id"] == bob.leg
        })
        .await
        .expect("alice learns that bob's leg ended");
    let table = api
        .get_ok(&admin, &format!("/conversations/{cid}/rtc"))
        .await;
    let legs: Vec<&str> = table["publishers"]
        .as_array()
        .expect("publishers")
        .iter()
        .filter_map(|publisher| publisher["rtc_id"].as_str())
        .collect();
    assert_eq!(legs, [carol.leg.as_str()], "only carol's leg is left");
    alice.publisher.close().await;
    carol.publisher.close().await;
}

#[tokio::test]
async fn silent_socket_ends_its_session() {
    let mut config = realtime_config();
    config.realtime.ping_interval_ms = 300;
    config.realtime.ping_timeout_ms = 300;
    let node = Node::start(config).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, bob_id) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "heartbeat").await;
    join(&alice, &cid, &alice_id).await;
    let bob_member = join(&bob, &cid, &bob_id).await;

    bob.stop_heartbeat();
    let left = alice
        .wait_for("member:left of bob", WAIT, |event| {
            event.name == "member:left" && event.payload["from"] == bob_member
        })
        .await
        .expect("a socket without heartbeats ends its session");
    assert_eq!(left.payload["body"]["state"], "LEFT");
}

#[tokio::test]
async fn audio_mute_ice_and_token_update() {
    let node = Node::start(realtime_config()).await.expect("node");
    let api = Api::new(&node);
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let (alice, alice_id) = login(&node, &api, &admin, "alice").await;
    let (bob, bob_id) = login(&node, &api, &admin, "bob").await;
    let cid = create_conversation(&alice, "audio").await;
    let alice_member = join(&alice, &cid, &alice_id).await;
    join(&bob, &cid, &bob_id).await;
    let alice = publish(alice, &cid, alice_member, "both").await;

    let reply = request(
        &alice.socket,
        "rtc:ice",
        json!({
            "cid": cid, "from": alice.member, "rtc_id": alice.leg,
            "body": { "candidates": { "completed": true } }
        }),
    )
    .await;
    success(&reply, "rtc:ice:success");

    for (kind, muted) in [("audio:mute:on", true), ("audio:mute:off", false)] {
        let reply = request(
            &alice.socket,
            kind,
            json!({ "cid": cid, "from": alice.member, "to": alice.member, "body": { "rtc_id": alice.leg } }),
        )
        .await;
        success(&reply, &format!("{kind}:success"));
        let event = bob
            .next_event(kind, WAIT)
            .await
            .unwrap_or_else(|error| panic!("bob gets {kind}: {error}"));
        assert_eq!(event.payload["from"], alice.member);
        assert_eq!(event.payload["to"], alice.member);
        let media = bob
            .wait_for("member:media with the new audio state", WAIT, |event| {
                event.name == "member:media"
                    && event.payload["from"] == alice.member
                    && event.payload["body"]["media"]["audio_settings"]["muted"] == muted
            })
            .await;
        assert!(media.is_ok(), "{kind}: {media:?}");
    }

    // A user token may not mute another member without the moderator claim.
    let reply = request(
        &bob,
        "audio:mute:on",
        json!({ "cid": cid, "from": member_of_user(&api, &admin, &cid, &bob_id).await, "to": alice.member, "body": {} }),
    )
    .await;
    error(&reply, "audio:mute:on:error:moderator-required");

    let fresh = node
        .user_token("bob", Duration::from_secs(600))
        .expect("token");
    let reply = request(
        &bob,
        "session:update-token",
        json!({ "body": { "token": fresh } }),
    )
    .await;
    success(&reply, "session:update-token:success");
    let other = node
        .user_token("alice", Duration::from_secs(600))
        .expect("token");
    let reply = request(
        &bob,
        "session:update-token",
        json!({ "body": { "token": other } }),
    )
    .await;
    error(&reply, "session:update-token:error:invalid-token");
    alice.publisher.close().await;
}

async fn member_of_user(api: &Api, admin: &str, cid: &str, user_id: &str) -> String {
    let conversation = api.get_ok(admin, &format!("/conversations/{cid}")).await;
    conversation["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|member| member["user_id"] == user_id)
        .and_then(|member| member["id"].as_str())
        .expect("the user's member")
        .to_owned()
}
