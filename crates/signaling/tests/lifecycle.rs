//! The full lifecycle of users, conversations and members through the REST API, and the event
//! log those changes write. Every reply is checked against the served OpenAPI document by
//! `TestNode::send`, so these tests also validate the document.

mod common;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::TestNode;
use room::{ConversationId, Event, EventListener, UserId};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Collects every event the registry appends, including those of deleted conversations, which
/// the REST API no longer serves.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(ConversationId, Event)>>,
}

impl EventListener for Recorder {
    fn appended(&self, conversation_id: &ConversationId, event: &Event) {
        self.events
            .lock()
            .expect("recorder lock")
            .push((conversation_id.clone(), event.clone()));
    }
}

impl Recorder {
    fn types_of(&self, conversation: &str) -> Vec<String> {
        self.events
            .lock()
            .expect("recorder lock")
            .iter()
            .filter(|(id, _)| id.as_str() == conversation)
            .map(|(_, event)| event.kind.to_string())
            .collect()
    }
}

fn member_path(conversation: &str, member: &str) -> String {
    format!("/v0.1/conversations/{conversation}/members/{member}")
}

fn id_of(reply: &common::Reply) -> String {
    reply.body["id"].as_str().expect("an id").to_owned()
}

fn user_id(node: &TestNode, name: &str) -> String {
    node.registry
        .user_by_name(name)
        .expect("known user")
        .id
        .to_string()
}

fn timestamp(value: &Value) -> OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no string"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|error| panic!("{text}: {error}"))
}

/// Asserts that a log has ids 1, 2, 3… and timestamps that never go backwards.
fn assert_well_formed_log(events: &[Value]) {
    let mut previous: Option<OffsetDateTime> = None;
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["id"], index as u64 + 1, "event ids: {events:?}");
        let at = timestamp(&event["timestamp"]);
        if let Some(previous) = previous {
            assert!(previous <= at, "timestamps go backwards: {events:?}");
        }
        previous = Some(at);
    }
}

fn event_types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn user_lifecycle() {
    let node = TestNode::start();
    let admin = node.admin();
    let created = node
        .post(
            "/v0.1/users",
            &admin,
            json!({ "name": "alice", "display_name": "Alice" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = id_of(&created);
    let href = created.body["href"].as_str().expect("href").to_owned();

    let user = node.get(&href, &admin).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.body["id"], id.as_str());
    assert_eq!(user.body["name"], "alice");
    assert_eq!(user.body["display_name"], "Alice");
    assert_eq!(user.body["href"], href.as_str());
    timestamp(&user.body["timestamp"]["created"]);

    let renamed = node.put(&href, &admin, json!({ "name": "alicia" })).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "alicia");
    assert_eq!(renamed.body["display_name"], "Alice");
    assert_eq!(renamed.body["id"], id.as_str());
    assert_eq!(renamed.body["timestamp"], user.body["timestamp"]);

    let cleared = node
        .put(&href, &admin, json!({ "display_name": null }))
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    assert_eq!(cleared.body["name"], "alicia");
    assert!(
        cleared.body.get("display_name").is_none(),
        "{}",
        cleared.body
    );

    let unchanged = node.put(&href, &admin, json!({})).await;
    assert_eq!(unchanged.status, StatusCode::OK);
    assert_eq!(unchanged.body, cleared.body);
    let read = node.get(&href, &admin).await;
    assert_eq!(read.body, cleared.body);

    // The old name is free as soon as the user is renamed.
    let other = node
        .post("/v0.1/users", &admin, json!({ "name": "alice" }))
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    let list = node.get("/v0.1/users", &admin).await;
    let names: Vec<&str> = list.body["_embedded"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|user| user["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["alicia", "alice"]);

    let deleted = node.delete(&href, &admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert!(deleted.body.is_null());
    for reply in [
        node.get(&href, &admin).await,
        node.put(&href, &admin, json!({ "display_name": "x" }))
            .await,
        node.delete(&href, &admin).await,
        node.get(&format!("{href}/conversations"), &admin).await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
        assert_eq!(reply.code(), "user:error:not-found");
        let detail = reply.body["detail"].as_str().expect("detail");
        assert!(detail.contains(&id), "{detail}");
    }

    let list = node.get("/v0.1/users", &admin).await;
    let users = list.body["_embedded"]["users"].as_array().expect("users");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["name"], "alice");

    // A deleted user's name can be taken by a new user, who gets a new id.
    let again = node
        .post("/v0.1/users", &admin, json!({ "name": "alicia" }))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_ne!(id_of(&again), id);
}

#[tokio::test]
async fn deleted_user_leaves_with_its_legs() {
    let node = TestNode::start();
    let admin = node.admin();
    let standup = node.create_conversation().await;
    let review = node.create_conversation().await;
    let alice = node.join(&standup, "alice").await;
    let bob = node.join(&standup, "bob").await;
    let alice_invited = node.add_member(&review, "alice", "invite").await;
    let alice_leg = node.publish(&standup, &alice).await;
    let bob_leg = node.publish(&standup, &bob).await;
    node.subscribe(&standup, &bob, &alice_leg).await;
    node.subscribe(&standup, &alice, &bob_leg).await;
    assert_eq!(node.media_legs().await, 4);
    let alice_id = user_id(&node, "alice");

    let deleted = node
        .delete(&format!("/v0.1/users/{alice_id}"), &admin)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);

    // Alice's legs closed, and so did Bob's downstream leg that received her. Only Bob's
    // publisher leg remains, without subscribers.
    assert_eq!(node.media_legs().await, 1);
    let legs = node
        .get(&format!("/v0.1/conversations/{standup}/rtc"), &admin)
        .await;
    assert_eq!(legs.status, StatusCode::OK);
    let publishers = legs.body["publishers"].as_array().expect("publishers");
    assert_eq!(publishers.len(), 1);
    assert_eq!(publishers[0]["rtc_id"], bob_leg.as_str());
    assert_eq!(publishers[0]["subscribers"], json!([]));

    // Both members stay as history, LEFT, with the deleted user's id and name.
    for (conversation, member) in [(&standup, &alice), (&review, &alice_invited)] {
        let reply = node.get(&member_path(conversation, member), &admin).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["state"], "LEFT");
        assert_eq!(reply.body["user_id"], alice_id.as_str());
        assert_eq!(reply.body["name"], "alice");
        timestamp(&reply.body["timestamp"]["left"]);

        let events = node.events(conversation).await;
        assert_well_formed_log(&events);
        let last = events.last().expect("an event");
        assert_eq!(last["type"], "member:left");
        assert_eq!(last["from"], member.as_str());
    }
    let bob_member = node.get(&member_path(&standup, &bob), &admin).await;
    assert_eq!(bob_member.body["state"], "JOINED");

    // Each closed leg is in the log once, with the reason.
    let events = node.events(&standup).await;
    let terminated: Vec<(&str, &str)> = events
        .iter()
        .filter(|event| event["type"] == "rtc:terminate")
        .map(|event| {
            (
                event["from"].as_str().unwrap_or_default(),
                event["body"]["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(terminated.len(), 3, "{events:?}");
    assert!(terminated.contains(&(bob.as_str(), "publisher_closed")));
    assert_eq!(
        terminated
            .iter()
            .filter(|(from, reason)| *from == alice && *reason == "member_left")
            .count(),
        2,
        "{terminated:?}"
    );
}

#[tokio::test]
async fn user_conversations_follow_memberships() {
    let node = TestNode::start();
    let admin = node.admin();
    let left = node.create_conversation().await;
    let joined = node.create_conversation().await;
    let invited = node.create_conversation().await;
    let gone = node.create_conversation().await;
    let first_member = node.join(&left, "alice").await;
    let joined_member = node.join(&joined, "alice").await;
    let invited_member = node.add_member(&invited, "alice", "invite").await;
    node.join(&gone, "alice").await;
    let alice_id = user_id(&node, "alice");
    let path = format!("/v0.1/users/{alice_id}/conversations");

    let left_reply = node
        .delete(&member_path(&left, &first_member), &admin)
        .await;
    assert_eq!(left_reply.status, StatusCode::OK);
    let gone_reply = node
        .delete(&format!("/v0.1/conversations/{gone}"), &admin)
        .await;
    assert_eq!(gone_reply.status, StatusCode::NO_CONTENT);

    let list = node.get(&path, &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let entries = list.body["_embedded"]["conversations"]
        .as_array()
        .expect("conversations");
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry["id"].as_str().unwrap_or_default(),
                entry["member"]["id"].as_str().unwrap_or_default(),
                entry["member"]["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (left.as_str(), first_member.as_str(), "LEFT"),
            (joined.as_str(), joined_member.as_str(), "JOINED"),
            (invited.as_str(), invited_member.as_str(), "INVITED"),
        ]
    );
    for entry in entries {
        let member = node
            .get(entry["member"]["href"].as_str().expect("href"), &admin)
            .await;
        assert_eq!(member.status, StatusCode::OK);
        assert_eq!(member.body["id"], entry["member"]["id"]);
    }

    // A rejoin after LEFT is a new member, and the list shows it in place of the old one,
    // ordered by the new member's creation.
    let rejoined = node.join(&left, "alice").await;
    assert_ne!(rejoined, first_member);
    let list = node.get(&path, &admin).await;
    let entries = list.body["_embedded"]["conversations"]
        .as_array()
        .expect("conversations");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["id"], left.as_str());
    assert_eq!(entries[2]["member"]["id"], rejoined.as_str());
    assert_eq!(entries[2]["member"]["state"], "JOINED");

    // The user token reads the same list.
    let own = node.get(&path, &node.user_token("alice")).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["_embedded"], list.body["_embedded"]);
}

#[tokio::test]
async fn conversation_lifecycle() {
    let node = TestNode::start();
    let admin = node.admin();
    let created = node
        .post(
            "/v0.1/conversations",
            &admin,
            json!({
                "name": "standup",
                "display_name": "Standup",
                "properties": { "video": true, "ttl": 60 },
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = id_of(&created);
    let href = created.body["href"].as_str().expect("href").to_owned();

    let read = node.get(&href, &admin).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["id"], id.as_str());
    assert_eq!(read.body["name"], "standup");
    assert_eq!(read.body["display_name"], "Standup");
    assert_eq!(read.body["properties"], json!({ "video": true, "ttl": 60 }));
    assert_eq!(read.body["members"], json!([]));
    assert_eq!(read.body["sequence_number"], 1);
    assert_eq!(read.body["href"], href.as_str());
    timestamp(&read.body["timestamp"]["created"]);

    let list = node.get("/v0.1/conversations", &admin).await;
    let summaries = list.body["_embedded"]["conversations"]
        .as_array()
        .expect("conversations");
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0]["id"], id.as_str());
    assert_eq!(summaries[0]["properties"], read.body["properties"]);
    assert_eq!(summaries[0]["sequence_number"], 1);

    let updated = node
        .put(
            &href,
            &admin,
            json!({ "display_name": "Daily", "properties": { "ttl": null } }),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["name"], "standup");
    assert_eq!(updated.body["display_name"], "Daily");
    assert_eq!(updated.body["properties"], json!({ "video": true }));
    assert_eq!(updated.body["sequence_number"], 2);

    // The same values again change nothing, so nothing is logged.
    let same = node
        .put(&href, &admin, json!({ "display_name": "Daily" }))
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["sequence_number"], 2);

    let renamed = node
        .put(
            &href,
            &admin,
            json!({ "name": "daily", "display_name": null, "properties": { "video": false } }),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "daily");
    assert!(
        renamed.body.get("display_name").is_none(),
        "{}",
        renamed.body
    );
    assert_eq!(renamed.body["properties"], json!({ "video": false }));
    assert_eq!(renamed.body["sequence_number"], 3);

    let events = node.events(&id).await;
    assert_well_formed_log(&events);
    assert_eq!(
        event_types(&events),
        [
            "conversation:created",
            "conversation:updated",
            "conversation:updated"
        ]
    );
    assert_eq!(events[0]["body"]["name"], "standup");
    assert_eq!(events[1]["body"]["display_name"], "Daily");
    assert_eq!(events[2]["body"]["name"], "daily");
    assert!(events.iter().all(|event| event.get("from").is_none()));

    // The old name is free once the conversation is renamed.
    let reused = node
        .post("/v0.1/conversations", &admin, json!({ "name": "standup" }))
        .await;
    assert_eq!(reused.status, StatusCode::CREATED, "{}", reused.body);
    let reused_id = id_of(&reused);

    let deleted = node.delete(&href, &admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let list = node.get("/v0.1/conversations", &admin).await;
    let summaries = list.body["_embedded"]["conversations"]
        .as_array()
        .expect("conversations");
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0]["id"], reused_id.as_str());

    // The deleted conversation's name is free too.
    let again = node
        .post("/v0.1/conversations", &admin, json!({ "name": "daily" }))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_ne!(id_of(&again), id);
}

#[tokio::test]
async fn deleted_conversation_is_410_everywhere() {
    let node = TestNode::start();
    let admin = node.admin();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    node.create_user("bob").await;
    let leg = node.publish(&conversation, &alice).await;
    let deleted = node
        .delete(&format!("/v0.1/conversations/{conversation}"), &admin)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);

    let base = format!("/v0.1/conversations/{conversation}");
    let member = member_path(&conversation, &alice);
    let replies = [
        node.get(&base, &admin).await,
        node.put(&base, &admin, json!({ "display_name": "x" }))
            .await,
        node.delete(&base, &admin).await,
        node.get(&format!("{base}/members"), &admin).await,
        node.post(
            &format!("{base}/members"),
            &admin,
            json!({ "user_name": "bob", "action": "join" }),
        )
        .await,
        node.post(
            &format!("{base}/members"),
            &admin,
            json!({ "user_name": "bob", "action": "invite" }),
        )
        .await,
        node.get(&member, &admin).await,
        node.put(&member, &admin, json!({ "action": "join" })).await,
        node.delete(&member, &admin).await,
        node.get(&format!("{base}/events"), &admin).await,
        node.get(&format!("{base}/events/1"), &admin).await,
        node.post(
            &format!("{base}/events"),
            &admin,
            json!({ "type": "custom:x", "from": alice, "body": {} }),
        )
        .await,
        node.get(&format!("{base}/rtc"), &admin).await,
        node.offer(&conversation, &alice, common::PUBLISH_AV, None)
            .await,
        node.delete(&format!("{base}/rtc/{leg}"), &admin).await,
    ];
    for (index, reply) in replies.iter().enumerate() {
        assert_eq!(
            reply.status,
            StatusCode::GONE,
            "request {index}: {}",
            reply.body
        );
        assert_eq!(
            reply.code(),
            "conversation:error:deleted",
            "request {index}"
        );
        let detail = reply.body["detail"].as_str().expect("detail");
        assert!(detail.contains(&conversation), "request {index}: {detail}");
    }
}

#[tokio::test]
async fn deleting_conversation_closes_legs_and_logs_it() {
    let node = TestNode::start();
    let recorder = Arc::new(Recorder::default());
    node.registry.set_event_listener(recorder.clone());
    let admin = node.admin();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let leg = node.publish(&conversation, &alice).await;
    node.subscribe(&conversation, &bob, &leg).await;
    assert_eq!(node.media_legs().await, 2);

    let deleted = node
        .delete(&format!("/v0.1/conversations/{conversation}"), &admin)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(node.media_legs().await, 0);

    let types = recorder.types_of(&conversation);
    assert_eq!(
        types.last().map(String::as_str),
        Some("conversation:deleted")
    );
    let ids: Vec<u64> = recorder
        .events
        .lock()
        .expect("recorder lock")
        .iter()
        .filter(|(id, _)| id.as_str() == conversation)
        .map(|(_, event)| event.id)
        .collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected);

    // The users stay, and the conversation is gone from their lists.
    let alice_id = UserId::from(user_id(&node, "alice"));
    let list = node
        .get(&format!("/v0.1/users/{alice_id}/conversations"), &admin)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["_embedded"]["conversations"], json!([]));
}

#[tokio::test]
async fn invitation_accepted_with_put() {
    let node = TestNode::start();
    let admin = node.admin();
    let conversation = node.create_conversation().await;
    node.join(&conversation, "bob").await;
    let alice_id = node.create_user("alice").await;

    // A JOINED member invites with its own token, and is recorded as the inviter.
    let invited = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("bob"),
            json!({ "user_name": "alice", "action": "invite", "channel": { "type": "app" } }),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    let member = id_of(&invited);
    assert!(member.starts_with("MEM-"), "{member}");
    assert_eq!(invited.body["state"], "INVITED");
    assert_eq!(invited.body["user_id"], alice_id.as_str());
    assert_eq!(invited.body["name"], "alice");
    assert_eq!(invited.body["conversation_id"], conversation.as_str());
    assert_eq!(invited.body["channel"], json!({ "type": "app" }));
    assert_eq!(invited.body["invited_by"], "bob");
    assert_eq!(invited.body["href"], member_path(&conversation, &member));
    timestamp(&invited.body["timestamp"]["invited"]);
    assert!(invited.body["timestamp"].get("joined").is_none());

    let events = node.events(&conversation).await;
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "member:invited");
    assert_eq!(last["from"], member.as_str());
    assert_eq!(last["body"]["state"], "INVITED");
    assert_eq!(last["body"]["user"]["name"], "alice");
    assert_eq!(last["body"]["invited_by"], "bob");

    let accepted = node
        .put(
            &member_path(&conversation, &member),
            &node.user_token("alice"),
            json!({ "action": "join" }),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(accepted.body["id"], member.as_str());
    assert_eq!(accepted.body["state"], "JOINED");
    assert_eq!(
        accepted.body["timestamp"]["invited"],
        invited.body["timestamp"]["invited"]
    );
    timestamp(&accepted.body["timestamp"]["joined"]);

    let events = node.events(&conversation).await;
    assert_well_formed_log(&events);
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "member:joined");
    assert_eq!(last["from"], member.as_str());

    // Joining the JOINED member again returns it and logs nothing.
    let sequence = events.len();
    let again = node
        .put(
            &member_path(&conversation, &member),
            &admin,
            json!({ "action": "join" }),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], member.as_str());
    assert_eq!(node.events(&conversation).await.len(), sequence);

    // Inviting a user who is already a member is a conflict.
    let twice = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &admin,
            json!({ "user_name": "alice", "action": "invite" }),
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.code(), "member:error:already-member");
}

#[tokio::test]
async fn join_by_post_accepts_invitation() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let invited = node.add_member(&conversation, "alice", "invite").await;
    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.admin(),
            json!({ "user_id": user_id(&node, "alice"), "action": "join" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], invited.as_str());
    assert_eq!(reply.body["state"], "JOINED");
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:invited", "member:joined"]
    );
}

#[tokio::test]
async fn direct_join_is_joined() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice_id = node.create_user("alice").await;
    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("alice"),
            json!({ "user_id": alice_id, "user_name": "alice", "action": "join" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["state"], "JOINED");
    assert!(reply.body.get("invited_by").is_none());
    assert!(reply.body["timestamp"].get("invited").is_none());
    timestamp(&reply.body["timestamp"]["joined"]);

    let conversation_view = node
        .get(
            &format!("/v0.1/conversations/{conversation}"),
            &node.admin(),
        )
        .await;
    assert_eq!(conversation_view.body["sequence_number"], 2);
    assert_eq!(conversation_view.body["members"][0], reply.body);
}

#[tokio::test]
async fn joining_again_closes_old_legs() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let bob_leg = node.publish(&conversation, &bob).await;
    node.subscribe(&conversation, &bob, &alice_leg).await;
    let alice_receives = node.subscribe(&conversation, &alice, &bob_leg).await;
    assert_eq!(node.media_legs().await, 4);
    let before = node.events(&conversation).await.len();

    // Alice's client restarted and joins again: same member, and its old legs are gone,
    // with Bob's leg that received her.
    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("alice"),
            json!({ "user_name": "alice", "action": "join" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], alice.as_str());
    assert_eq!(reply.body["state"], "JOINED");
    assert_eq!(node.media_legs().await, 1);

    let members = node
        .get(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.admin(),
        )
        .await;
    let members = members.body["_embedded"]["members"]
        .as_array()
        .expect("members");
    assert_eq!(members.len(), 2, "no ghost member: {members:?}");

    let events = node.events(&conversation).await;
    assert_well_formed_log(&events);
    let new: Vec<(&str, &str)> = events[before..]
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap_or_default(),
                event["body"]["rtc_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        new.contains(&("rtc:terminate", alice_leg.as_str())),
        "{new:?}"
    );
    assert!(
        new.contains(&("rtc:terminate", alice_receives.as_str())),
        "{new:?}"
    );
    assert!(new.contains(&("member:media", "")), "{new:?}");
    assert!(!new.iter().any(|(kind, _)| *kind == "member:joined"));

    // The same through PUT: Alice publishes again and rejoins by her member id.
    node.publish(&conversation, &alice).await;
    assert_eq!(node.media_legs().await, 2);
    let reply = node
        .put(
            &member_path(&conversation, &alice),
            &node.user_token("alice"),
            json!({ "action": "join" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(node.media_legs().await, 1);
    let last = node.events(&conversation).await;
    let terminate = last
        .iter()
        .rev()
        .find(|event| event["type"] == "rtc:terminate")
        .expect("rtc:terminate");
    assert_eq!(terminate["body"]["reason"], "member_rejoined");
}

#[tokio::test]
async fn leaving_closes_legs_and_is_final() {
    let node = TestNode::start();
    let admin = node.admin();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let leg = node.publish(&conversation, &alice).await;
    node.subscribe(&conversation, &bob, &leg).await;
    let path = member_path(&conversation, &alice);

    let left = node.delete(&path, &node.user_token("alice")).await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.body);
    assert_eq!(left.body["id"], alice.as_str());
    assert_eq!(left.body["state"], "LEFT");
    timestamp(&left.body["timestamp"]["joined"]);
    timestamp(&left.body["timestamp"]["left"]);
    assert_eq!(node.media_legs().await, 0);
    let events = node.events(&conversation).await;
    assert_well_formed_log(&events);
    assert_eq!(events.last().expect("an event")["type"], "member:left");
    let sequence = events.len();

    // LEFT is final: leaving again and joining the old member are conflicts that log nothing.
    let twice = node.delete(&path, &admin).await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);
    assert_eq!(twice.code(), "member:error:already-left");
    assert!(
        twice.body["detail"]
            .as_str()
            .expect("detail")
            .contains(&alice)
    );
    let rejoin_old = node.put(&path, &admin, json!({ "action": "join" })).await;
    assert_eq!(rejoin_old.status, StatusCode::CONFLICT);
    assert_eq!(rejoin_old.code(), "member:error:already-left");
    assert_eq!(node.events(&conversation).await.len(), sequence);

    // The user comes back as a new member; the old one stays LEFT.
    let rejoined = node.join(&conversation, "alice").await;
    assert_ne!(rejoined, alice);
    let old = node.get(&path, &admin).await;
    assert_eq!(old.body["state"], "LEFT");
    let list = node
        .get(
            &format!("/v0.1/conversations/{conversation}/members"),
            &admin,
        )
        .await;
    let states: Vec<(&str, &str)> = list.body["_embedded"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| {
            (
                member["id"].as_str().unwrap_or_default(),
                member["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (alice.as_str(), "LEFT"),
            (bob.as_str(), "JOINED"),
            (rejoined.as_str(), "JOINED"),
        ]
    );
}

#[tokio::test]
async fn invited_member_declines_by_leaving() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.add_member(&conversation, "alice", "invite").await;
    let declined = node
        .delete(
            &member_path(&conversation, &alice),
            &node.user_token("alice"),
        )
        .await;
    assert_eq!(declined.status, StatusCode::OK, "{}", declined.body);
    assert_eq!(declined.body["state"], "LEFT");
    assert!(declined.body["timestamp"].get("joined").is_none());
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:invited", "member:left"]
    );

    let accept = node
        .put(
            &member_path(&conversation, &alice),
            &node.admin(),
            json!({ "action": "join" }),
        )
        .await;
    assert_eq!(accept.status, StatusCode::CONFLICT);
    assert_eq!(accept.code(), "member:error:already-left");
}

#[tokio::test]
async fn unknown_user_cannot_be_added() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let path = format!("/v0.1/conversations/{conversation}/members");
    let before = node.snapshot().await;
    for (body, named) in [
        (json!({ "user_name": "ghost", "action": "invite" }), "ghost"),
        (json!({ "user_name": "ghost", "action": "join" }), "ghost"),
        (
            json!({ "user_id": "USR-ghost", "action": "invite" }),
            "USR-ghost",
        ),
    ] {
        let reply = node.post(&path, &node.admin(), body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "user:error:not-found");
        let detail = reply.body["detail"].as_str().expect("detail");
        assert!(detail.contains(named), "{body}: {detail}");
    }
    assert_eq!(node.snapshot().await, before);
}

#[tokio::test]
async fn unknown_member_is_404() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let other = node.create_conversation().await;
    let alice = node.join(&other, "alice").await;
    // A member of another conversation is unknown in this one.
    for member in ["MEM-missing", alice.as_str()] {
        let path = member_path(&conversation, member);
        for reply in [
            node.get(&path, &node.admin()).await,
            node.put(&path, &node.admin(), json!({ "action": "join" }))
                .await,
            node.delete(&path, &node.admin()).await,
        ] {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
            assert_eq!(reply.code(), "member:error:not-found");
            let detail = reply.body["detail"].as_str().expect("detail");
            assert!(detail.contains(member), "{detail}");
        }
    }
}

#[tokio::test]
async fn event_log_records_every_change() {
    let node = TestNode::start();
    let recorder = Arc::new(Recorder::default());
    node.registry.set_event_listener(recorder.clone());
    let admin = node.admin();
    let conversation = node.create_conversation().await;
    let base = format!("/v0.1/conversations/{conversation}");

    let updated = node
        .put(&base, &admin, json!({ "display_name": "Standup" }))
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    let alice = node.join(&conversation, "alice").await;
    let bob = node.add_member(&conversation, "bob", "invite").await;
    let accepted = node
        .put(
            &member_path(&conversation, &bob),
            &admin,
            json!({ "action": "join" }),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK);
    let leg = node.publish(&conversation, &alice).await;
    let downstream = node.subscribe(&conversation, &bob, &leg).await;

    let mut posted = Vec::new();
    for (kind, to) in [
        ("audio:mute:on", None),
        ("video:mute:on", Some(&alice)),
        ("audio:mute:off", None),
        ("video:mute:off", None),
        ("custom:hand-raised", Some(&bob)),
    ] {
        let mut body = json!({ "type": kind, "from": alice, "body": { "n": posted.len() } });
        if let Some(to) = to {
            body["to"] = json!(to);
        }
        let reply = node.post(&format!("{base}/events"), &admin, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{kind}: {}", reply.body);
        assert_eq!(
            reply.body["href"],
            format!("{base}/events/{}", reply.body["id"])
        );
        posted.push(reply.body["id"].as_u64().expect("event id"));
    }

    let ended = node
        .delete(&format!("{base}/rtc/{downstream}"), &admin)
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    let left = node
        .delete(&member_path(&conversation, &alice), &admin)
        .await;
    assert_eq!(left.status, StatusCode::OK);

    let events = node.events(&conversation).await;
    assert_well_formed_log(&events);
    assert_eq!(
        event_types(&events),
        [
            "conversation:created",
            "conversation:updated",
            "member:joined",
            "member:invited",
            "member:joined",
            "rtc:new",
            "member:media",
            "rtc:new",
            "audio:mute:on",
            "member:media",
            "video:mute:on",
            "member:media",
            "audio:mute:off",
            "member:media",
            "video:mute:off",
            "member:media",
            "custom:hand-raised",
            "rtc:terminate",
            "rtc:terminate",
            "member:media",
            "member:left",
        ]
    );
    assert_eq!(posted, [9, 11, 13, 15, 17]);
    assert_eq!(events[16]["body"], json!({ "n": 4 }));
    assert_eq!(events[16]["from"], alice.as_str());
    assert_eq!(events[16]["to"], bob.as_str());
    assert_eq!(events[17]["body"]["rtc_id"], downstream.as_str());
    assert_eq!(events[18]["body"]["rtc_id"], leg.as_str());
    assert_eq!(events[9]["body"]["media"]["audio_settings"]["muted"], true);

    // Each event is readable on its own at its href, and the conversation's sequence number
    // is the newest id.
    for event in &events {
        let one = node
            .get(event["href"].as_str().expect("href"), &admin)
            .await;
        assert_eq!(one.status, StatusCode::OK);
        assert_eq!(&one.body, event);
    }
    let view = node.get(&base, &admin).await;
    assert_eq!(view.body["sequence_number"], events.len());

    // The listener saw the same log, then every active member leave, then the deletion.
    let active = view.body["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|member| member["state"] != "LEFT")
        .count();
    assert!(
        active > 0,
        "the deletion should end at least one membership"
    );
    let deleted = node.delete(&base, &admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let received = recorder.types_of(&conversation);
    let logged: Vec<String> = event_types(&events).iter().map(|t| t.to_string()).collect();
    assert_eq!(received[..logged.len()], logged[..]);
    let tail = &received[logged.len()..];
    assert_eq!(
        tail.last().map(String::as_str),
        Some("conversation:deleted")
    );
    let left = tail.iter().filter(|kind| *kind == "member:left").count();
    assert_eq!(left, active);
}

#[tokio::test]
async fn custom_event_body_limit_is_4_kib() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    let path = format!("/v0.1/conversations/{conversation}/events");
    // `{"pad":"…"}` is 10 bytes of compact JSON around the padding.
    let body_of = |size: usize| json!({ "pad": "x".repeat(size - 10) });
    assert_eq!(body_of(4096).to_string().len(), 4096);

    let fits = node
        .post(
            &path,
            &node.admin(),
            json!({ "type": "custom:big", "from": alice, "body": body_of(4096) }),
        )
        .await;
    assert_eq!(fits.status, StatusCode::CREATED, "{}", fits.body);
    let stored = node
        .get(fits.body["href"].as_str().expect("href"), &node.admin())
        .await;
    assert_eq!(stored.body["body"], body_of(4096));

    let before = node.snapshot().await;
    let over = node
        .post(
            &path,
            &node.admin(),
            json!({ "type": "custom:big", "from": alice, "body": body_of(4097) }),
        )
        .await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", over.body);
    assert_eq!(over.code(), "event:error:body-too-large");
    let detail = over.body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("4097") && detail.contains("4096"),
        "{detail}"
    );
    assert_eq!(over.body["invalid_parameters"][0]["name"], "body");
    assert_eq!(node.snapshot().await, before);
}

#[tokio::test]
async fn empty_conversation_expires_after_ttl() {
    let node = TestNode::start();
    let admin = node.admin();
    let mut ids = Vec::new();
    for properties in [
        json!({ "ttl": 60 }),
        json!({ "ttl": 60 }),
        json!({ "video": true }),
    ] {
        let reply = node
            .post(
                "/v0.1/conversations",
                &admin,
                json!({ "properties": properties }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        ids.push(id_of(&reply));
    }
    let [empty, occupied, forever] = <[String; 3]>::try_from(ids).expect("three ids");
    let alice = node.join(&occupied, "alice").await;
    let status = |reply: common::Reply| reply.status;

    // Only the empty conversation with a time to live expires.
    let later = OffsetDateTime::now_utc() + Duration::seconds(61);
    let expired = node.registry.expire_conversations(later);
    assert_eq!(expired.len(), 1, "{expired:?}");
    let path = |id: &str| format!("/v0.1/conversations/{id}");
    assert_eq!(
        status(node.get(&path(&empty), &admin).await),
        StatusCode::GONE
    );
    assert_eq!(
        status(node.get(&path(&occupied), &admin).await),
        StatusCode::OK
    );
    assert_eq!(
        status(node.get(&path(&forever), &admin).await),
        StatusCode::OK
    );

    // Once its last member leaves, the other one is kept for its time to live from then.
    let left = node.delete(&member_path(&occupied, &alice), &admin).await;
    assert_eq!(left.status, StatusCode::OK);
    let soon = OffsetDateTime::now_utc() + Duration::seconds(30);
    assert!(node.registry.expire_conversations(soon).is_empty());
    let expired = node
        .registry
        .expire_conversations(OffsetDateTime::now_utc() + Duration::seconds(61));
    assert_eq!(expired.len(), 1, "{expired:?}");
    let reply = node.get(&path(&occupied), &admin).await;
    assert_eq!(reply.code(), "conversation:error:deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_make_one_member() {
    let node = Arc::new(TestNode::start());
    let conversation = node.create_conversation().await;
    node.create_user("alice").await;
    let path = format!("/v0.1/conversations/{conversation}/members");

    let mut tasks = Vec::new();
    for index in 0..8 {
        let node = node.clone();
        let path = path.clone();
        let action = if index % 2 == 0 { "join" } else { "invite" };
        tasks.push(tokio::spawn(async move {
            let reply = node
                .post(
                    &path,
                    &node.admin(),
                    json!({ "user_name": "alice", "action": action }),
                )
                .await;
            (reply.status, reply.body["id"].as_str().map(str::to_owned))
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for task in tasks {
        let (status, id) = task.await.expect("request task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK | StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
        ids.extend(id);
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let members = node
        .registry
        .members(&ConversationId::from(conversation.as_str()));
    assert_eq!(members.expect("members").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leaves_leave_once() {
    let node = Arc::new(TestNode::start());
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    node.publish(&conversation, &alice).await;
    let path = member_path(&conversation, &alice);

    let mut tasks = Vec::new();
    for _ in 0..4 {
        let node = node.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            node.delete(&path, &node.admin()).await.status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::CONFLICT,
            StatusCode::CONFLICT,
            StatusCode::CONFLICT
        ]
    );
    let types = node.event_types(&conversation).await;
    assert_eq!(
        types.iter().filter(|kind| *kind == "member:left").count(),
        1
    );
    assert_eq!(
        types.iter().filter(|kind| *kind == "rtc:terminate").count(),
        1
    );
    assert_eq!(node.media_legs().await, 0);
}
