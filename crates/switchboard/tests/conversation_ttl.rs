//! Conversations with a `ttl` are deleted by the node's timer once they have had no INVITED or
//! JOINED member for that long.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::{Config, Node};

mod common;

use common::{Api, assert_problem};

const TOKEN_TTL: Duration = Duration::from_secs(600);
/// Upper bound of the wait for an expiry: the one-second ttl, plus the one-second timer, plus
/// a wide margin for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(15);

fn id(value: &serde_json::Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn emptied_conversation_expires_after_ttl() {
    let node = Node::start(Config::ephemeral()).await.expect("start");
    let api = Api::new(&node);
    let admin = node.admin_token(TOKEN_TTL).expect("admin token");
    api.post_ok(&admin, "/users", json!({ "name": "alice" }))
        .await;
    api.post_ok(&admin, "/users", json!({ "name": "bob" }))
        .await;

    let short = id(&api
        .post_ok(
            &admin,
            "/conversations",
            json!({ "name": "short", "properties": { "ttl": 1 } }),
        )
        .await);
    let occupied = id(&api
        .post_ok(
            &admin,
            "/conversations",
            json!({ "name": "occupied", "properties": { "ttl": 1 } }),
        )
        .await);
    let lasting = id(&api
        .post_ok(&admin, "/conversations", json!({ "name": "lasting" }))
        .await);
    let join = |name: &str| json!({ "user_name": name, "action": "join" });
    let alice = id(&api
        .post_ok(
            &admin,
            &format!("/conversations/{short}/members"),
            join("alice"),
        )
        .await);
    api.post_ok(
        &admin,
        &format!("/conversations/{occupied}/members"),
        join("bob"),
    )
    .await;

    let left = api
        .delete(&admin, &format!("/conversations/{short}/members/{alice}"))
        .await;
    assert_eq!(left.status, 200, "{}", left.text);
    let started = Instant::now();
    let deleted_reply = loop {
        let reply = api.get(&admin, &format!("/conversations/{short}")).await;
        if reply.status != 200 {
            break reply;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the conversation still exists {PATIENCE:?} after its last member left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_problem(
        &deleted_reply,
        410,
        "conversation:error:deleted",
        "expired conversation",
    );

    // The conversation with a JOINED member and the one without ttl outlive the expiry.
    for conversation in [&occupied, &lasting] {
        let reply = api
            .get(&admin, &format!("/conversations/{conversation}"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    node.shutdown().await.expect("shutdown");
}
