//! Request handling shared by every route: JSON errors for bad bodies, limits, unknown routes
//! and draining.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::TestNode;
use serde_json::json;
use signaling::SignalingConfig;

fn raw_post(path: &str, token: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(Body::from(body.to_owned())).expect("request")
}

#[tokio::test]
async fn malformed_json_is_400_json_error() {
    let node = TestNode::start();
    for body in ["{", "{\"name\": }", "", "{\"name\": \"a\"} trailing"] {
        let request = raw_post("/v0.1/users", &node.admin(), Some("application/json"), body);
        let reply = node.send(request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(reply.code(), "request:error:invalid-json", "{body:?}");
        assert_eq!(reply.body["title"], "Bad Request");
        assert!(reply.body["detail"].is_string());
    }
    assert!(node.registry.users().is_empty());
}

#[tokio::test]
async fn wrong_field_type_names_the_field() {
    let node = TestNode::start();
    let reply = node
        .post("/v0.1/users", &node.admin(), json!({ "name": 42 }))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "request:error:invalid-parameters");
    assert_eq!(reply.body["invalid_parameters"][0]["name"], "name");

    let conversation = node.create_conversation().await;
    let nested = node
        .post(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
            json!({ "from": "MEM-x", "body": { "offer": { "sdp": 1 } } }),
        )
        .await;
    assert_eq!(nested.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        nested.body["invalid_parameters"][0]["name"],
        "body.offer.sdp"
    );
}

#[tokio::test]
async fn missing_field_names_the_field() {
    let node = TestNode::start();
    let reply = node
        .post(
            "/v0.1/users",
            &node.admin(),
            json!({ "display_name": "Alice" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "request:error:invalid-parameters");
    assert_eq!(reply.body["invalid_parameters"][0]["name"], "name");
}

#[tokio::test]
async fn body_without_json_content_type_is_415() {
    let node = TestNode::start();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let request = raw_post(
            "/v0.1/users",
            &node.admin(),
            content_type,
            "{\"name\":\"a\"}",
        );
        let reply = node.send(request).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(reply.code(), "request:error:unsupported-media-type");
    }

    let charset = raw_post(
        "/v0.1/users",
        &node.admin(),
        Some("application/json; charset=utf-8"),
        "{\"name\":\"a\"}",
    );
    assert_eq!(node.send(charset).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn body_over_limit_is_413() {
    let node = TestNode::with_config(SignalingConfig { body_limit: 1024 });
    let body = json!({ "name": "x".repeat(2048) }).to_string();
    let request = raw_post(
        "/v0.1/users",
        &node.admin(),
        Some("application/json"),
        &body,
    );

    let reply = node.send(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "request:error:payload-too-large");
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("1024"),
        "{}",
        reply.body
    );
    assert!(node.registry.users().is_empty());
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let node = TestNode::start();
    let api = node.get("/v0.1/nothing-here", &node.admin()).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.code(), "request:error:not-found");

    let outside = node.call(Method::GET, "/nothing-here", None, None).await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    assert_eq!(outside.code(), "request:error:not-found");
}

#[tokio::test]
async fn unknown_api_route_needs_token() {
    let node = TestNode::start();
    let reply = node
        .call(Method::GET, "/v0.1/nothing-here", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let node = TestNode::start();
    let reply = node
        .call(Method::PATCH, "/v0.1/users", Some(&node.admin()), None)
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "request:error:method-not-allowed");
}

#[tokio::test]
async fn draining_node_rejects_new_work() {
    let node = TestNode::start();
    let alice = node.create_user("alice").await;
    let conversation = node.create_conversation().await;
    let bob = node.add_member(&conversation, "bob", "invite").await;
    node.state.start_draining();

    let readyz = node.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    let healthz = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(healthz.status, StatusCode::OK);

    let create = node
        .post("/v0.1/users", &node.admin(), json!({ "name": "bob" }))
        .await;
    assert_eq!(create.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(create.code(), "system:error:draining");
    let join = node
        .put(
            &format!("/v0.1/conversations/{conversation}/members/{bob}"),
            &node.admin(),
            json!({ "action": "join" }),
        )
        .await;
    assert_eq!(join.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(join.code(), "system:error:draining");
    let rename = node
        .put(
            &format!("/v0.1/users/{alice}"),
            &node.admin(),
            json!({ "name": "alicia" }),
        )
        .await;
    assert_eq!(rename.status, StatusCode::SERVICE_UNAVAILABLE);

    let list = node.get("/v0.1/users", &node.admin()).await;
    assert_eq!(list.status, StatusCode::OK);
    let leave = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/members/{bob}"),
            &node.admin(),
        )
        .await;
    assert_eq!(leave.status, StatusCode::OK);
}

#[tokio::test]
async fn stopped_media_worker_is_503() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;
    node.media.shutdown();

    let reply = node
        .offer(&conversation, &alice, common::PUBLISH_AV, None)
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "system:error:media-unavailable");
    let legs = node
        .get(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            &node.admin(),
        )
        .await;
    assert_eq!(legs.body["publishers"], json!([]));
}
