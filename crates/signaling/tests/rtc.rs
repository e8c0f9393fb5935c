//! Legs: SDP offers answered by the real media worker, and the rules around them.

mod common;

use axum::http::StatusCode;
use common::{PUBLISH_AV, PUBLISH_H264_ONLY, PUBLISH_H265_ONLY, RECVONLY, TestNode};
use serde_json::json;

/// Creates a conversation with two JOINED members, alice and bob.
async fn two_members(node: &TestNode) -> (String, String, String) {
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    (conversation, alice, bob)
}

async fn publishers(node: &TestNode, conversation: &str) -> Vec<serde_json::Value> {
    let reply = node
        .get(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["publishers"]
        .as_array()
        .expect("publishers")
        .clone()
}

#[tokio::test]
async fn publish_answer_is_ice_lite_on_loopback() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    let reply = node.offer(&conversation, &alice, PUBLISH_AV, None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let rtc_id = reply.body["rtc_id"].as_str().expect("rtc_id");
    assert!(rtc_id.starts_with("LEG-"), "{rtc_id}");
    assert_eq!(reply.body["body"]["answer"]["type"], "answer");

    let sdp = reply.body["body"]["answer"]["sdp"].as_str().expect("sdp");
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    let candidate = sdp
        .lines()
        .find(|line| line.starts_with("a=candidate:"))
        .expect("a candidate line");
    assert!(candidate.contains(" 127.0.0.1 "), "{candidate}");
    let port = node.media.local_addr().port().to_string();
    assert!(
        candidate.contains(&port),
        "{candidate} should name port {port}"
    );
}

#[tokio::test]
async fn publish_records_leg_and_media() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;
    let leg = node.publish(&conversation, &alice).await;

    let events = node.events(&conversation).await;
    let rtc_new = &events[3];
    assert_eq!(rtc_new["type"], "rtc:new");
    assert_eq!(rtc_new["from"], alice.as_str());
    assert_eq!(rtc_new["body"]["rtc_id"], leg.as_str());
    assert_eq!(rtc_new["body"]["tracks"], json!(["audio", "video"]));
    let media = &events[4];
    assert_eq!(media["type"], "member:media");
    assert_eq!(media["body"]["media"]["audio_settings"]["enabled"], true);
    assert_eq!(media["body"]["media"]["video_settings"]["enabled"], true);

    let publishers = publishers(&node, &conversation).await;
    assert_eq!(publishers.len(), 1);
    assert_eq!(publishers[0]["rtc_id"], leg.as_str());
    assert_eq!(publishers[0]["member_id"], alice.as_str());
    assert_eq!(node.media_legs().await, 1);
}

#[tokio::test]
async fn malformed_sdp_is_invalid_sdp() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    for sdp in ["", "not an sdp", "v=0\r\nm=audio\r\n"] {
        let reply = node.offer(&conversation, &alice, sdp, None).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{sdp:?}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "rtc:error:invalid-sdp", "{sdp:?}");
    }
    assert!(publishers(&node, &conversation).await.is_empty());
    assert_eq!(node.media_legs().await, 0);
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:joined", "member:joined"]
    );
}

#[tokio::test]
async fn unsupported_video_codec_is_rejected() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    let reply = node
        .offer(&conversation, &alice, PUBLISH_H265_ONLY, None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.code(), "rtc:error:no-supported-codec");
    assert!(publishers(&node, &conversation).await.is_empty());
    assert_eq!(node.media_legs().await, 0);
}

#[tokio::test]
async fn h264_only_offer_publishes_video() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    let reply = node
        .offer(&conversation, &alice, PUBLISH_H264_ONLY, None)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let publishers = publishers(&node, &conversation).await;
    assert_eq!(publishers[0]["tracks"], json!(["video"]));
}

#[tokio::test]
async fn receive_only_offer_has_nothing_to_publish() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    let reply = node.offer(&conversation, &alice, RECVONLY, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.code(), "rtc:error:nothing-to-publish");
    assert_eq!(node.media_legs().await, 0);
}

#[tokio::test]
async fn offer_type_must_be_offer() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
            json!({ "from": alice, "body": { "offer": { "type": "answer", "sdp": PUBLISH_AV } } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "request:error:invalid-parameters");
    assert_eq!(
        reply.body["invalid_parameters"][0]["name"],
        "body.offer.type"
    );
    assert_eq!(node.media_legs().await, 0);
}

#[tokio::test]
async fn offer_without_type_is_accepted() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;

    // The JavaScript SDK sends `offer: {sdp}` on video legs.
    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
            json!({ "from": alice, "body": { "offer": { "sdp": PUBLISH_AV } } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn subscribe_answers_with_publisher_tracks() {
    let node = TestNode::start();
    let (conversation, alice, bob) = two_members(&node).await;
    let alice_leg = node.publish(&conversation, &alice).await;

    let reply = node
        .offer(&conversation, &bob, RECVONLY, Some(&alice_leg))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let bob_leg = reply.body["rtc_id"].as_str().expect("rtc_id");
    let sdp = reply.body["body"]["answer"]["sdp"].as_str().expect("sdp");
    assert!(sdp.contains("a=ice-lite"));
    assert!(sdp.contains("m=audio"));
    assert!(sdp.contains("m=video"));

    let publishers = publishers(&node, &conversation).await;
    let subscribers = publishers[0]["subscribers"]
        .as_array()
        .expect("subscribers");
    assert_eq!(subscribers.len(), 1);
    assert_eq!(subscribers[0]["rtc_id"], bob_leg);
    assert_eq!(subscribers[0]["member_id"], bob.as_str());

    let events = node.events(&conversation).await;
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "rtc:new");
    assert_eq!(last["to"], alice.as_str());
    assert_eq!(last["body"]["subscribe"]["rtc_id"], alice_leg.as_str());
    assert_eq!(node.media_legs().await, 2);
}

#[tokio::test]
async fn subscribe_to_own_leg_is_rejected() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;
    let alice_leg = node.publish(&conversation, &alice).await;

    let reply = node
        .offer(&conversation, &alice, RECVONLY, Some(&alice_leg))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "rtc:error:own-leg");
    assert_eq!(node.media_legs().await, 1);
}

#[tokio::test]
async fn subscribe_to_subscriber_leg_is_rejected() {
    let node = TestNode::start();
    let (conversation, alice, bob) = two_members(&node).await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let bob_leg = node.subscribe(&conversation, &bob, &alice_leg).await;

    let reply = node
        .offer(&conversation, &alice, RECVONLY, Some(&bob_leg))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "rtc:error:not-a-publisher");
}

#[tokio::test]
async fn subscribe_to_unknown_leg_is_404() {
    let node = TestNode::start();
    let (conversation, _, bob) = two_members(&node).await;

    let reply = node
        .offer(&conversation, &bob, RECVONLY, Some("LEG-missing"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "rtc:error:not-found");
    assert_eq!(node.media_legs().await, 0);
}

#[tokio::test]
async fn subscribe_to_other_conversation_leg_is_404() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let other = node.create_conversation().await;
    let carol = node.join(&other, "carol").await;

    let reply = node.offer(&other, &carol, RECVONLY, Some(&alice_leg)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "rtc:error:not-found");
}

#[tokio::test]
async fn invited_member_cannot_publish_or_subscribe() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let carol = node.add_member(&conversation, "carol", "invite").await;

    let publish = node.offer(&conversation, &carol, PUBLISH_AV, None).await;
    assert_eq!(publish.status, StatusCode::CONFLICT);
    assert_eq!(publish.code(), "member:error:not-joined");

    let subscribe = node
        .offer(&conversation, &carol, RECVONLY, Some(&alice_leg))
        .await;
    assert_eq!(subscribe.status, StatusCode::CONFLICT);
    assert_eq!(subscribe.code(), "member:error:not-joined");
    assert_eq!(node.media_legs().await, 1);
}

#[tokio::test]
async fn left_member_cannot_publish() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;
    let leave = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/members/{alice}"),
            &node.admin(),
        )
        .await;
    assert_eq!(leave.status, StatusCode::OK);

    let reply = node.offer(&conversation, &alice, PUBLISH_AV, None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "member:error:not-joined");
}

#[tokio::test]
async fn unknown_conversation_or_member_is_404() {
    let node = TestNode::start();
    let (conversation, _, _) = two_members(&node).await;

    let unknown_conversation = node
        .offer("CON-missing", "MEM-missing", PUBLISH_AV, None)
        .await;
    assert_eq!(unknown_conversation.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_conversation.code(), "conversation:error:not-found");

    let unknown_member = node
        .offer(&conversation, "MEM-missing", PUBLISH_AV, None)
        .await;
    assert_eq!(unknown_member.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_member.code(), "member:error:not-found");
    assert_eq!(node.media_legs().await, 0);
}

#[tokio::test]
async fn ending_leg_appends_rtc_terminate() {
    let node = TestNode::start();
    let (conversation, alice, _) = two_members(&node).await;
    let leg = node.publish(&conversation, &alice).await;
    let path = format!("/v0.1/conversations/{conversation}/rtc/{leg}");

    let reply = node.delete(&path, &node.admin()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(node.media_legs().await, 0);
    assert!(publishers(&node, &conversation).await.is_empty());

    let events = node.events(&conversation).await;
    let terminate = events
        .iter()
        .find(|event| event["type"] == "rtc:terminate")
        .expect("an rtc:terminate event");
    assert_eq!(terminate["body"]["rtc_id"], leg.as_str());
    assert_eq!(terminate["body"]["reason"], "requested");
    assert_eq!(
        events
            .iter()
            .filter(|event| event["type"] == "rtc:terminate")
            .count(),
        1
    );
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "member:media");
    assert_eq!(last["body"]["media"]["audio_settings"]["enabled"], false);

    let again = node.delete(&path, &node.admin()).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "rtc:error:not-found");
}

#[tokio::test]
async fn ending_publisher_leg_ends_its_subscribers() {
    let node = TestNode::start();
    let (conversation, alice, bob) = two_members(&node).await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let bob_leg = node.subscribe(&conversation, &bob, &alice_leg).await;

    let reply = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/rtc/{alice_leg}"),
            &node.admin(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(node.media_legs().await, 0);

    let events = node.events(&conversation).await;
    let terminated: Vec<(&str, &str)> = events
        .iter()
        .filter(|event| event["type"] == "rtc:terminate")
        .map(|event| {
            (
                event["body"]["rtc_id"].as_str().unwrap_or_default(),
                event["body"]["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        terminated.contains(&(alice_leg.as_str(), "requested")),
        "{terminated:?}"
    );
    assert!(
        terminated.contains(&(bob_leg.as_str(), "publisher_closed")),
        "{terminated:?}"
    );
    assert_eq!(terminated.len(), 2);
}

#[tokio::test]
async fn second_subscription_to_same_leg_is_409() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let first = node.subscribe(&conversation, &bob, &alice_leg).await;

    let again = node
        .offer(&conversation, &bob, RECVONLY, Some(&alice_leg))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.code(), "rtc:error:already-subscribed");
    assert!(
        again.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&first),
        "the error names the existing leg: {}",
        again.body
    );
    assert_eq!(node.media.stats().await.expect("stats").legs, 2);
}

#[tokio::test]
async fn publisher_legs_per_member_are_capped() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    for _ in 0..room::MAX_PUBLISHER_LEGS_PER_MEMBER {
        node.publish(&conversation, &alice).await;
    }

    let one_more = node.offer(&conversation, &alice, PUBLISH_AV, None).await;
    assert_eq!(one_more.status, StatusCode::CONFLICT, "{}", one_more.body);
    assert_eq!(one_more.code(), "rtc:error:too-many-legs");
    assert_eq!(
        node.media.stats().await.expect("stats").legs,
        room::MAX_PUBLISHER_LEGS_PER_MEMBER
    );
}
