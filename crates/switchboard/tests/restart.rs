//! A node restarted on the same data directory keeps users, conversations, members and event
//! logs, and starts without legs.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::{Config, Node};

mod common;

use common::{Api, PUBLISH_AV, assert_problem, event_log};

const TOKEN_TTL: Duration = Duration::from_secs(600);

fn config_on(data_dir: &Path) -> Config {
    let mut config = Config::ephemeral();
    config.storage.temporary_data_dir = false;
    config.storage.data_dir = data_dir.to_owned();
    config
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// What the first node recorded, read back over REST before it stopped.
struct Recorded {
    users: Vec<Value>,
    conversation: String,
    conversation_view: Value,
    events: Vec<Value>,
    leg: String,
}

/// Creates users, a conversation with a JOINED, an INVITED and a LEFT member, custom events
/// and a publisher leg.
async fn record_history(node: &Node) -> Recorded {
    let api = Api::new(node);
    let admin = node.admin_token(TOKEN_TTL).expect("admin token");

    let mut user_ids = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let created = api.post_ok(&admin, "/users", json!({ "name": name })).await;
        user_ids.push(id(&created));
    }
    let conversation = id(&api
        .post_ok(
            &admin,
            "/conversations",
            json!({ "name": "standup", "display_name": "Daily standup",
                    "properties": { "video": true } }),
        )
        .await);
    let members = format!("/conversations/{conversation}/members");
    let alice = id(&api
        .post_ok(
            &admin,
            &members,
            json!({ "user_name": "alice", "action": "join", "channel": { "type": "app" } }),
        )
        .await);
    api.post_ok(
        &admin,
        &members,
        json!({ "user_name": "bob", "action": "invite", "channel": { "type": "app" } }),
    )
    .await;
    let carol = id(&api
        .post_ok(
            &admin,
            &members,
            json!({ "user_name": "carol", "action": "join", "channel": { "type": "app" } }),
        )
        .await);
    let left = api.delete(&admin, &format!("{members}/{carol}")).await;
    assert_eq!(left.status, 200, "{}", left.text);

    let events = format!("/conversations/{conversation}/events");
    for text in ["first", "second"] {
        api.post_ok(
            &admin,
            &events,
            json!({ "type": "custom:chat", "from": alice, "body": { "text": text } }),
        )
        .await;
    }
    let leg = api
        .post_ok(
            &admin,
            &format!("/conversations/{conversation}/rtc"),
            json!({ "from": alice,
                    "body": { "offer": { "type": "offer", "sdp": PUBLISH_AV } } }),
        )
        .await["rtc_id"]
        .as_str()
        .expect("rtc_id")
        .to_owned();

    let mut users = Vec::new();
    for user_id in &user_ids {
        users.push(api.get_ok(&admin, &format!("/users/{user_id}")).await);
    }
    Recorded {
        users,
        conversation_view: api
            .get_ok(&admin, &format!("/conversations/{conversation}"))
            .await,
        events: event_log(&api, &admin, &conversation).await,
        conversation,
        leg,
    }
}

/// Returns the members of a conversation view by id, without their media state, which the
/// end of the legs changes.
fn members_by_id(conversation_view: &Value) -> Vec<(String, Value)> {
    let mut members: Vec<(String, Value)> = conversation_view["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| {
            let mut member = member.clone();
            member
                .as_object_mut()
                .expect("a member object")
                .remove("media");
            (id(&member), member)
        })
        .collect();
    members.sort_by(|left, right| left.0.cmp(&right.0));
    members
}

#[tokio::test]
async fn restart_keeps_users_conversations_and_events() {
    let data_dir = tempfile::tempdir().expect("a temporary data directory");

    let first = Node::start(config_on(data_dir.path()))
        .await
        .expect("start the first node");
    let recorded = record_history(&first).await;
    first.shutdown().await.expect("stop the first node");

    let second = Node::start(config_on(data_dir.path()))
        .await
        .expect("start the second node");
    let api = Api::new(&second);
    let admin = second.admin_token(TOKEN_TTL).expect("admin token");
    let conversation = &recorded.conversation;
    let path = format!("/conversations/{conversation}");

    for user in &recorded.users {
        let reloaded = api.get_ok(&admin, &format!("/users/{}", id(user))).await;
        assert_eq!(&reloaded, user, "user after the restart");
    }
    let duplicate = api.post(&admin, "/users", json!({ "name": "alice" })).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.text);

    let view = api.get_ok(&admin, &path).await;
    for field in [
        "id",
        "name",
        "display_name",
        "properties",
        "timestamp",
        "href",
    ] {
        assert_eq!(
            view[field], recorded.conversation_view[field],
            "conversation field {field}"
        );
    }
    assert_eq!(
        members_by_id(&view),
        members_by_id(&recorded.conversation_view)
    );
    let states: Vec<String> = members_by_id(&view)
        .iter()
        .map(|(_, member)| format!("{}:{}", member["name"], member["state"]))
        .collect();
    for expected in [
        r#""alice":"JOINED""#,
        r#""bob":"INVITED""#,
        r#""carol":"LEFT""#,
    ] {
        assert!(states.contains(&expected.to_owned()), "{states:?}");
    }

    // The log contains everything the first node served, then the end of its leg at shutdown.
    let events = event_log(&api, &admin, conversation).await;
    let sequence_number = view["sequence_number"].as_u64().expect("sequence_number");
    assert_eq!(events.len() as u64, sequence_number);
    assert!(events.len() > recorded.events.len());
    assert_eq!(events[..recorded.events.len()], recorded.events[..]);
    let terminate = events[recorded.events.len()..]
        .iter()
        .find(|event| event["type"] == "rtc:terminate")
        .expect("the leg's end is in the log");
    assert_eq!(terminate["body"]["rtc_id"], recorded.leg.as_str());
    assert_eq!(terminate["body"]["reason"], "shutdown");
    let custom: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] == "custom:chat")
        .collect();
    assert_eq!(custom.len(), 2);
    assert_eq!(custom[0]["body"]["text"], "first");

    let legs = api.get_ok(&admin, &format!("{path}/rtc")).await;
    assert_eq!(legs["publishers"], json!([]), "no leg outlives its node");
    let missing = api
        .get(&admin, &format!("{path}/events/{}", sequence_number + 1))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);

    let alice = members_by_id(&view)
        .into_iter()
        .find(|(_, member)| member["name"] == "alice")
        .map(|(member_id, _)| member_id)
        .expect("alice's member");
    let posted = api
        .post_ok(
            &admin,
            &format!("{path}/events"),
            json!({ "type": "custom:chat", "from": alice, "body": { "text": "after" } }),
        )
        .await;
    assert_eq!(posted["id"].as_u64(), Some(sequence_number + 1));
    let stored = api
        .get_ok(&admin, &format!("{path}/events/{}", sequence_number + 1))
        .await;
    assert_eq!(stored["body"]["text"], "after");
    let view = api.get_ok(&admin, &path).await;
    assert_eq!(view["sequence_number"].as_u64(), Some(sequence_number + 1));

    let published = api
        .post(
            &admin,
            &format!("{path}/rtc"),
            json!({ "from": alice,
                    "body": { "offer": { "type": "offer", "sdp": PUBLISH_AV } } }),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text);
    assert_ne!(published.body["rtc_id"], recorded.leg.as_str());

    second.shutdown().await.expect("stop the second node");
}

#[tokio::test]
async fn removed_data_dir_starts_empty() {
    let data_dir = tempfile::tempdir().expect("a temporary data directory");
    let node = Node::start(config_on(data_dir.path()))
        .await
        .expect("start");
    let api = Api::new(&node);
    let admin = node.admin_token(TOKEN_TTL).expect("admin token");
    let user = id(&api
        .post_ok(&admin, "/users", json!({ "name": "dora" }))
        .await);
    node.shutdown().await.expect("stop");

    std::fs::remove_dir_all(data_dir.path()).expect("remove the data directory");
    let node = Node::start(config_on(data_dir.path()))
        .await
        .expect("start on a new directory");
    let api = Api::new(&node);
    let admin = node.admin_token(TOKEN_TTL).expect("admin token");
    let reply = api.get(&admin, &format!("/users/{user}")).await;
    assert_problem(
        &reply,
        404,
        "user:error:not-found",
        "user of a removed data directory",
    );
    node.shutdown().await.expect("stop");
}
