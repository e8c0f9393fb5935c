//! The event log: mute events that act, custom events, and reading the log back.

mod common;

use axum::http::StatusCode;
use common::{PUBLISH_H264_ONLY, TestNode};
use serde_json::{Value, json};

async fn post_event(node: &TestNode, conversation: &str, event: Value) -> common::Reply {
    node.post(
        &format!("/v0.1/conversations/{conversation}/events"),
        &node.admin(),
        event,
    )
    .await
}

#[tokio::test]
async fn mute_events_are_appended_and_readable() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let leg = node.publish(&conversation, &alice).await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/events"),
            &node.user_token("alice"),
            json!({
                "type": "audio:mute:on",
                "from": alice,
                "to": alice,
                "body": { "rtc_id": leg },
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_u64().expect("id");
    assert!(reply.body["timestamp"].is_string());
    assert_eq!(
        reply.body["href"],
        format!("/v0.1/conversations/{conversation}/events/{id}")
    );

    let events = node.events(&conversation).await;
    let mute = events
        .iter()
        .find(|event| event["id"] == id)
        .expect("the mute event in the log");
    assert_eq!(mute["type"], "audio:mute:on");
    assert_eq!(mute["from"], alice.as_str());
    assert_eq!(mute["to"], alice.as_str());
    assert_eq!(mute["body"]["rtc_id"], leg.as_str());
    let media = events.last().expect("an event");
    assert_eq!(media["type"], "member:media");
    assert_eq!(
        media["body"]["media"]["audio_settings"],
        json!({ "enabled": true, "muted": true })
    );

    let legs = node
        .get(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
        )
        .await;
    assert_eq!(
        legs.body["publishers"][0]["muted"],
        json!({ "audio": true, "video": false })
    );

    let unmute = post_event(
        &node,
        &conversation,
        json!({ "type": "audio:mute:off", "from": alice, "body": {} }),
    )
    .await;
    assert_eq!(unmute.status, StatusCode::CREATED);
    let member = node
        .get(
            &format!("/v0.1/conversations/{conversation}/members/{alice}"),
            &node.admin(),
        )
        .await;
    assert_eq!(member.body["media"]["audio_settings"]["muted"], false);
}

#[tokio::test]
async fn mute_of_kind_not_published_is_accepted() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let video_only = node
        .offer(&conversation, &alice, PUBLISH_H264_ONLY, None)
        .await;
    assert_eq!(video_only.status, StatusCode::CREATED);

    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "audio:mute:on", "from": alice }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let member = node
        .registry
        .member(&conversation.as_str().into(), &alice.as_str().into());
    assert!(member.expect("member").media.audio_settings.muted);
}

#[tokio::test]
async fn mute_before_publish_applies_to_new_leg() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "video:mute:on", "from": alice, "body": {} }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);

    node.publish(&conversation, &alice).await;
    let legs = node
        .get(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
        )
        .await;
    assert_eq!(
        legs.body["publishers"][0]["muted"],
        json!({ "audio": false, "video": true })
    );
}

#[tokio::test]
async fn mute_of_other_member_is_recorded_with_target() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;

    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "video:mute:on", "from": alice, "to": bob, "body": {} }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let events = node.events(&conversation).await;
    let mute = events
        .iter()
        .find(|event| event["type"] == "video:mute:on")
        .expect("the mute event");
    assert_eq!(mute["from"], alice.as_str());
    assert_eq!(mute["to"], bob.as_str());
    let media = events.last().expect("an event");
    assert_eq!(media["type"], "member:media");
    assert_eq!(media["from"], bob.as_str());
}

#[tokio::test]
async fn custom_event_is_appended() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;

    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "custom:raise-hand", "from": alice, "body": { "raised": true } }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["id"], 3);
    let events = node.events(&conversation).await;
    assert_eq!(events[2]["type"], "custom:raise-hand");
    assert_eq!(events[2]["body"], json!({ "raised": true }));
}

#[tokio::test]
async fn oversized_custom_event_is_rejected() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;

    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "custom:note", "from": alice, "body": { "text": "x".repeat(4096) } }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "event:error:body-too-large");
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:joined"]
    );
}

#[tokio::test]
async fn other_event_types_are_400() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;

    for (kind, code) in [
        ("text", "event:error:invalid-type"),
        ("custom:", "event:error:invalid-type"),
        ("member:joined", "event:error:not-postable"),
        ("rtc:terminate", "event:error:not-postable"),
    ] {
        let reply = post_event(
            &node,
            &conversation,
            json!({ "type": kind, "from": alice, "body": {} }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{kind}");
        assert_eq!(reply.code(), code, "{kind}");
    }
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:joined"]
    );
}

#[tokio::test]
async fn invited_member_cannot_post() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let bob = node.add_member(&conversation, "bob", "invite").await;

    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "custom:hello", "from": bob, "body": {} }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "member:error:not-joined");
}

#[tokio::test]
async fn event_listing_windows() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    for index in 0..5 {
        let reply = post_event(
            &node,
            &conversation,
            json!({ "type": "custom:tick", "from": alice, "body": { "index": index } }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let ids = |reply: &common::Reply| -> Vec<u64> {
        reply.body["_embedded"]["events"]
            .as_array()
            .expect("an event array")
            .iter()
            .filter_map(|event| event["id"].as_u64())
            .collect()
    };
    let base = format!("/v0.1/conversations/{conversation}/events");

    let all = node.get(&base, &node.admin()).await;
    assert_eq!(ids(&all), [1, 2, 3, 4, 5, 6, 7]);
    let window = node
        .get(&format!("{base}?start_id=2&end_id=5"), &node.admin())
        .await;
    assert_eq!(ids(&window), [2, 3, 4, 5]);
    let page = node
        .get(&format!("{base}?start_id=2&page_size=2"), &node.admin())
        .await;
    assert_eq!(ids(&page), [2, 3]);
    let newest = node
        .get(&format!("{base}?order=desc&page_size=2"), &node.admin())
        .await;
    assert_eq!(ids(&newest), [7, 6]);
}

#[tokio::test]
async fn invalid_event_query_is_400() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let base = format!("/v0.1/conversations/{conversation}/events");

    for (query, parameter) in [
        ("page_size=0", "page_size"),
        ("page_size=1000", "page_size"),
        ("page_size=ten", "page_size"),
        ("start_id=-1", "start_id"),
        ("order=sideways", "order"),
    ] {
        let reply = node.get(&format!("{base}?{query}"), &node.admin()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.code(), "request:error:invalid-parameters", "{query}");
        assert_eq!(
            reply.body["invalid_parameters"][0]["name"], parameter,
            "{query}"
        );
    }
}

#[tokio::test]
async fn event_href_resolves_to_the_event() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let reply = post_event(
        &node,
        &conversation,
        json!({ "type": "custom:hello", "from": alice, "body": { "text": "hi" } }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let href = reply.body["href"].as_str().expect("href").to_owned();

    let event = node.get(&href, &node.admin()).await;
    assert_eq!(event.status, StatusCode::OK, "{}", event.body);
    assert_eq!(event.body["type"], "custom:hello");
    assert_eq!(event.body["body"]["text"], "hi");
    assert_eq!(event.body["id"], reply.body["id"]);

    let missing = node
        .get(
            &format!("/v0.1/conversations/{conversation}/events/999"),
            &node.admin(),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert_eq!(missing.code(), "event:error:not-found");

    let not_a_number = node
        .get(
            &format!("/v0.1/conversations/{conversation}/events/first"),
            &node.admin(),
        )
        .await;
    assert_eq!(
        not_a_number.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_a_number.body
    );
}
