//! The OpenAPI document: served without a token, complete, and strict enough to catch a
//! response that does not match it.

mod common;

use axum::http::{Method, StatusCode};
use common::TestNode;
use serde_json::{Value, json};

async fn document(node: &TestNode) -> Value {
    let reply = node
        .call(Method::GET, "/v0.1/openapi.json", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

#[tokio::test]
async fn document_is_served_without_token() {
    let node = TestNode::start();
    let document = document(&node).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "Switchboard");
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn document_lists_every_route() {
    let node = TestNode::start();
    let document = document(&node).await;
    let paths = document["paths"].as_object().expect("paths");

    let expected = [
        ("/v0.1/users", "post"),
        ("/v0.1/users", "get"),
        ("/v0.1/users/{user_id}", "get"),
        ("/v0.1/conversations", "post"),
        ("/v0.1/conversations/{conversation_id}", "get"),
        ("/v0.1/conversations/{conversation_id}/members", "post"),
        ("/v0.1/conversations/{conversation_id}/members", "get"),
        (
            "/v0.1/conversations/{conversation_id}/members/{member_id}",
            "get",
        ),
        (
            "/v0.1/conversations/{conversation_id}/members/{member_id}",
            "delete",
        ),
        ("/v0.1/conversations/{conversation_id}/rtc", "post"),
        ("/v0.1/conversations/{conversation_id}/rtc", "get"),
        (
            "/v0.1/conversations/{conversation_id}/rtc/{rtc_id}",
            "delete",
        ),
        ("/v0.1/conversations/{conversation_id}/events", "post"),
        ("/v0.1/conversations/{conversation_id}/events", "get"),
        (
            "/v0.1/conversations/{conversation_id}/events/{event_id}",
            "get",
        ),
    ];
    for (path, method) in expected {
        let operation = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing"))[method];
        assert!(operation.is_object(), "{method} {path} is missing");
        assert!(
            operation["responses"]["default"].is_object(),
            "{method} {path} has no error response"
        );
    }
}

#[tokio::test]
#[should_panic(expected = "does not match the OpenAPI document")]
async fn checker_rejects_body_missing_field() {
    let node = TestNode::start();
    let user = json!({ "id": "USR-1", "href": "/v0.1/users/USR-1", "timestamp": {} });
    node.check_reply(Method::GET, "/v0.1/users/USR-1", StatusCode::OK, &user)
        .await;
}

#[tokio::test]
#[should_panic(expected = "does not declare")]
async fn checker_rejects_undeclared_success_status() {
    let node = TestNode::start();
    node.check_reply(
        Method::POST,
        "/v0.1/users",
        StatusCode::OK,
        &json!({ "id": "USR-1", "href": "/v0.1/users/USR-1" }),
    )
    .await;
}
