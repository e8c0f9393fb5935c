//! Users, conversations and members through the REST API.

mod common;

use axum::http::StatusCode;
use common::TestNode;
use serde_json::json;

#[tokio::test]
async fn create_user_returns_id_and_href() {
    let node = TestNode::start();
    let reply = node
        .post(
            "/v0.1/users",
            &node.admin(),
            json!({ "name": "alice", "display_name": "Alice" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_str().expect("id");
    assert!(id.starts_with("USR-"));
    assert_eq!(reply.body["href"], format!("/v0.1/users/{id}"));

    let user = node.get(&format!("/v0.1/users/{id}"), &node.admin()).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.body["name"], "alice");
    assert_eq!(user.body["display_name"], "Alice");
    let list = node.get("/v0.1/users", &node.admin()).await;
    let users = list.body["_embedded"]["users"].as_array().expect("users");
    assert_eq!(users.len(), 1);
}

#[tokio::test]
async fn duplicate_user_name_is_409() {
    let node = TestNode::start();
    node.create_user("alice").await;
    let reply = node
        .post("/v0.1/users", &node.admin(), json!({ "name": "alice" }))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "user:error:duplicate-name");
}

#[tokio::test]
async fn empty_user_name_is_400() {
    let node = TestNode::start();
    let reply = node
        .post("/v0.1/users", &node.admin(), json!({ "name": " " }))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "request:error:invalid-parameters");
    assert_eq!(reply.body["invalid_parameters"][0]["name"], "name");
}

#[tokio::test]
async fn unknown_user_is_404() {
    let node = TestNode::start();
    let reply = node.get("/v0.1/users/USR-missing", &node.admin()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "user:error:not-found");
}

#[tokio::test]
async fn conversation_includes_members_and_sequence_number() {
    let node = TestNode::start();
    let created = node
        .post(
            "/v0.1/conversations",
            &node.admin(),
            json!({
                "name": "standup",
                "display_name": "Standup",
                "properties": { "video": true, "ttl": 60 },
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("CON-"));
    assert_eq!(created.body["href"], format!("/v0.1/conversations/{id}"));
    let alice = node.join(&id, "alice").await;

    let reply = node
        .get(&format!("/v0.1/conversations/{id}"), &node.admin())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["name"], "standup");
    assert_eq!(reply.body["display_name"], "Standup");
    assert_eq!(
        reply.body["properties"],
        json!({ "video": true, "ttl": 60 })
    );
    assert_eq!(reply.body["sequence_number"], 2);
    assert!(reply.body["timestamp"]["created"].is_string());
    let members = reply.body["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["id"], alice.as_str());
}

#[tokio::test]
async fn duplicate_conversation_name_is_409() {
    let node = TestNode::start();
    let body = json!({ "name": "standup" });
    let first = node
        .post("/v0.1/conversations", &node.admin(), body.clone())
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = node.post("/v0.1/conversations", &node.admin(), body).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.code(), "conversation:error:duplicate-name");
}

#[tokio::test]
async fn unknown_conversation_is_404() {
    let node = TestNode::start();
    for path in [
        "/v0.1/conversations/CON-missing",
        "/v0.1/conversations/CON-missing/members",
        "/v0.1/conversations/CON-missing/events",
        "/v0.1/conversations/CON-missing/rtc",
    ] {
        let reply = node.get(path, &node.admin()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.code(), "conversation:error:not-found", "{path}");
    }
}

#[tokio::test]
async fn join_returns_member() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let user = node.create_user("alice").await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.admin(),
            json!({ "user_id": user, "action": "join", "channel": { "type": "app" } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let member = &reply.body;
    assert!(member["id"].as_str().expect("id").starts_with("MEM-"));
    assert_eq!(member["user_id"], user.as_str());
    assert_eq!(member["name"], "alice");
    assert_eq!(member["state"], "JOINED");
    assert!(member["timestamp"]["joined"].is_string());
    assert!(member["timestamp"].get("invited").is_none());
    assert_eq!(member["channel"], json!({ "type": "app" }));

    let id = member["id"].as_str().expect("id");
    let shown = node
        .get(
            &format!("/v0.1/conversations/{conversation}/members/{id}"),
            &node.admin(),
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["state"], "JOINED");
}

#[tokio::test]
async fn invite_then_join_accepts_invitation() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let invited = node.add_member(&conversation, "bob", "invite").await;

    let joined = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("bob"),
            json!({ "user_name": "bob", "action": "join" }),
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    assert_eq!(joined.body["id"], invited.as_str());
    assert_eq!(joined.body["state"], "JOINED");
    assert!(joined.body["timestamp"]["invited"].is_string());
    assert!(joined.body["timestamp"]["joined"].is_string());
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:invited", "member:joined"]
    );
}

#[tokio::test]
async fn joined_user_invites_others() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    node.join(&conversation, "alice").await;
    node.create_user("bob").await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("alice"),
            json!({ "user_name": "bob", "action": "invite" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["state"], "INVITED");
    assert_eq!(reply.body["invited_by"], "alice");
}

#[tokio::test]
async fn outsider_cannot_invite() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    node.create_user("eve").await;
    node.create_user("bob").await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("eve"),
            json!({ "user_name": "bob", "action": "invite" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn joining_twice_returns_same_member() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let first = node.join(&conversation, "alice").await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.admin(),
            json!({ "user_name": "alice", "action": "join" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], first.as_str());
    assert_eq!(reply.body["state"], "JOINED");
}

#[tokio::test]
async fn member_needs_known_user() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let path = format!("/v0.1/conversations/{conversation}/members");

    let unknown = node
        .post(
            &path,
            &node.admin(),
            json!({ "user_name": "ghost", "action": "join" }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "user:error:not-found");

    let missing = node
        .post(&path, &node.admin(), json!({ "action": "join" }))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.code(), "request:error:invalid-parameters");

    let bad_action = node
        .post(
            &path,
            &node.admin(),
            json!({ "user_name": "ghost", "action": "dance" }),
        )
        .await;
    assert_eq!(bad_action.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_action.body["invalid_parameters"][0]["name"], "action");

    let bad_channel = node
        .post(
            &path,
            &node.admin(),
            json!({ "user_name": "ghost", "action": "join", "channel": { "type": "sip" } }),
        )
        .await;
    assert_eq!(bad_channel.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_channel.body["invalid_parameters"][0]["name"],
        "channel.type"
    );
}

#[tokio::test]
async fn unknown_member_is_404() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let path = format!("/v0.1/conversations/{conversation}/members/MEM-missing");

    let shown = node.get(&path, &node.admin()).await;
    assert_eq!(shown.status, StatusCode::NOT_FOUND);
    assert_eq!(shown.code(), "member:error:not-found");
    let removed = node.delete(&path, &node.admin()).await;
    assert_eq!(removed.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_member_closes_its_legs() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let bob_leg = node.publish(&conversation, &bob).await;
    let bob_from_alice = node.subscribe(&conversation, &bob, &alice_leg).await;
    let alice_from_bob = node.subscribe(&conversation, &alice, &bob_leg).await;
    assert_eq!(node.media_legs().await, 4);

    let reply = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/members/{alice}"),
            &node.user_token("alice"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "LEFT");
    assert!(reply.body["timestamp"]["left"].is_string());

    // Only bob's publisher leg remains, in the room and in the media worker.
    assert_eq!(node.media_legs().await, 1);
    let legs = node
        .get(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
        )
        .await;
    let publishers = legs.body["publishers"].as_array().expect("publishers");
    assert_eq!(publishers.len(), 1);
    assert_eq!(publishers[0]["rtc_id"], bob_leg.as_str());
    assert_eq!(publishers[0]["subscribers"], json!([]));

    let events = node.events(&conversation).await;
    let mut terminated: Vec<&str> = events
        .iter()
        .filter(|event| event["type"] == "rtc:terminate")
        .filter_map(|event| event["body"]["rtc_id"].as_str())
        .collect();
    terminated.sort_unstable();
    let mut expected = vec![
        alice_leg.as_str(),
        bob_from_alice.as_str(),
        alice_from_bob.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(terminated, expected);
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "member:left");
    assert_eq!(last["from"], alice.as_str());

    let again = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/members/{alice}"),
            &node.admin(),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "member:error:already-left");
}
