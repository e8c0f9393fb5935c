//! Helpers of the realtime API tests: a socket on a test node, requests that fail the test on a
//! timeout, and checks of success replies.

use std::time::Duration;

use client::realtime::{RealtimeClient, ReceivedEvent};
use serde_json::{Value, json};
use switchboard::Node;

/// Deadline of one wait for a reply or an event.
pub const WAIT: Duration = Duration::from_secs(10);

/// Time within which an event that should not come would have come.
pub const QUIET: Duration = Duration::from_millis(500);

/// Connects a socket to the node's realtime API at its default path.
pub async fn connect(node: &Node) -> RealtimeClient {
    RealtimeClient::connect(node.http_address(), "/rtc")
        .await
        .expect("the socket connects")
}

/// Sends a request and returns its reply, failing the test on a timeout.
pub async fn request(socket: &RealtimeClient, name: &str, fields: Value) -> ReceivedEvent {
    socket
        .request(name, fields, WAIT)
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// Asserts a success reply of type `expected` and returns its body.
#[track_caller]
pub fn success(reply: &ReceivedEvent, expected: &str) -> Value {
    assert_eq!(reply.name, expected, "{:?}", reply.payload);
    reply.payload["body"].clone()
}

/// Creates a conversation with `new:conversation` and returns its id.
pub async fn create_conversation(socket: &RealtimeClient, name: &str) -> String {
    let reply = request(
        socket,
        "new:conversation",
        json!({ "body": { "name": name, "display_name": "Stand-up" } }),
    )
    .await;
    let body = success(&reply, "new:conversation:success");
    body["id"].as_str().expect("conversation id").to_owned()
}
