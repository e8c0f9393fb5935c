//! Bearer-token checks: which tokens get 401, and which grants get 403.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode};
use common::{APPLICATION_ID, SECRET, TestNode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use signaling::auth::{Claims, TokenIssuer, TokenVerifier};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn sign(claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn claims(sub: Option<&str>, exp: u64) -> Claims {
    Claims {
        application_id: APPLICATION_ID.to_owned(),
        sub: sub.map(str::to_owned),
        exp,
        iat: now(),
        jti: "test-token".to_owned(),
        acl: None,
    }
}

async fn assert_rejected(node: &TestNode, token: Option<&str>, code: &str) {
    let reply = node.call(Method::GET, "/v0.1/users", token, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.code(), code);
    assert!(reply.body["detail"].is_string());
}

#[tokio::test]
async fn admin_token_is_accepted() {
    let node = TestNode::start();
    let reply = node.get("/v0.1/users", &node.admin()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!([]));
}

#[tokio::test]
async fn missing_token_is_401() {
    let node = TestNode::start();
    assert_rejected(&node, None, "system:error:invalid-token").await;
}

#[tokio::test]
async fn malformed_tokens_are_401() {
    let node = TestNode::start();
    for token in ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30."] {
        assert_rejected(&node, Some(token), "system:error:invalid-token").await;
    }

    let basic = axum::http::Request::builder()
        .uri("/v0.1/users")
        .header("authorization", format!("Basic {}", node.admin()))
        .body(axum::body::Body::empty())
        .expect("request");
    let reply = node.send(basic).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "system:error:invalid-token");
}

#[tokio::test]
async fn expired_token_is_401() {
    let node = TestNode::start();
    let token = sign(&claims(None, now() - 3600), SECRET);
    assert_rejected(&node, Some(&token), "system:error:expired-token").await;
}

#[tokio::test]
async fn wrongly_signed_token_is_401() {
    let node = TestNode::start();
    let token = sign(
        &claims(None, now() + 600),
        b"another-secret-another-secret-another-secret",
    );
    assert_rejected(&node, Some(&token), "system:error:invalid-token").await;
}

#[tokio::test]
async fn tampered_token_is_401() {
    let node = TestNode::start();
    let user_token = node.user_token("alice");
    let admin_token = node.admin();

    // Put the admin claims under the user token's signature: valid JSON, wrong signature.
    let user_parts: Vec<&str> = user_token.split('.').collect();
    let admin_parts: Vec<&str> = admin_token.split('.').collect();
    let tampered = format!("{}.{}.{}", user_parts[0], admin_parts[1], user_parts[2]);
    assert_rejected(&node, Some(&tampered), "system:error:invalid-token").await;
}

#[tokio::test]
async fn alg_none_token_is_401() {
    let node = TestNode::start();
    let admin_token = node.admin();
    let payload = admin_token.split('.').nth(1).expect("payload");

    // Base64url of {"alg":"none","typ":"JWT"}.
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    for signature in ["", "c2lnbmF0dXJl"] {
        let token = format!("{none_header}.{payload}.{signature}");
        assert_rejected(&node, Some(&token), "system:error:invalid-token").await;
    }
}

#[tokio::test]
async fn other_application_token_is_401() {
    let node = TestNode::start();
    let mut foreign = claims(None, now() + 600);
    foreign.application_id = "another-application".to_owned();
    let token = sign(&foreign, SECRET);
    assert_rejected(&node, Some(&token), "system:error:invalid-token").await;
}

#[tokio::test]
async fn health_probes_need_no_token() {
    let node = TestNode::start();
    let healthz = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(healthz.status, StatusCode::OK);
    let readyz = node.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(readyz.status, StatusCode::OK);
}

#[tokio::test]
async fn user_token_cannot_manage_users() {
    let node = TestNode::start();
    node.create_user("alice").await;
    let token = node.user_token("alice");

    let create = node
        .post("/v0.1/users", &token, json!({ "name": "mallory" }))
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    assert_eq!(create.code(), "system:error:forbidden");
    assert!(node.registry.user_by_name("mallory").is_err());

    let list = node.get("/v0.1/users", &token).await;
    assert_eq!(list.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn user_reads_only_its_own_user() {
    let node = TestNode::start();
    let alice = node.create_user("alice").await;
    let bob = node.create_user("bob").await;
    let token = node.user_token("alice");

    let own = node.get(&format!("/v0.1/users/{alice}"), &token).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["name"], "alice");
    let other = node.get(&format!("/v0.1/users/{bob}"), &token).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn token_of_unknown_user_is_403() {
    let node = TestNode::start();
    let token = node.user_token("nobody");
    let reply = node
        .post("/v0.1/conversations", &token, json!({ "name": "room" }))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "system:error:forbidden");
}

#[tokio::test]
async fn user_cannot_join_as_other_user() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    node.create_user("alice").await;
    node.create_user("bob").await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("alice"),
            json!({ "user_name": "bob", "action": "join" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let members = node
        .registry
        .members(&conversation.as_str().into())
        .expect("members");
    assert!(members.is_empty());

    let own = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &node.user_token("alice"),
            json!({ "user_name": "alice", "action": "join" }),
        )
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
}

#[tokio::test]
async fn user_cannot_act_for_other_member() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let alice_token = node.user_token("alice");

    let publish = node
        .offer_as(&alice_token, &conversation, &bob, common::PUBLISH_AV, None)
        .await;
    assert_eq!(publish.status, StatusCode::FORBIDDEN);
    assert_eq!(node.media_legs().await, 0);

    let mute = node
        .post(
            &format!("/v0.1/conversations/{conversation}/events"),
            &alice_token,
            json!({ "type": "audio:mute:on", "from": bob, "body": {} }),
        )
        .await;
    assert_eq!(mute.status, StatusCode::FORBIDDEN);

    let leave = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/members/{bob}"),
            &alice_token,
        )
        .await;
    assert_eq!(leave.status, StatusCode::FORBIDDEN);
    assert_eq!(
        node.event_types(&conversation).await,
        ["conversation:created", "member:joined", "member:joined"]
    );
}

#[tokio::test]
async fn user_cannot_end_other_members_leg() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    node.join(&conversation, "alice").await;
    let bob = node.join(&conversation, "bob").await;
    let bob_leg = node.publish(&conversation, &bob).await;

    let reply = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/rtc/{bob_leg}"),
            &node.user_token("alice"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(node.media_legs().await, 1);
}

#[tokio::test]
async fn user_publishes_as_own_member() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    let alice = node.join(&conversation, "alice").await;

    let reply = node
        .offer_as(
            &node.user_token("alice"),
            &conversation,
            &alice,
            common::PUBLISH_AV,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn user_reads_only_conversations_it_is_in() {
    let node = TestNode::start();
    let conversation = node.create_conversation().await;
    node.join(&conversation, "alice").await;
    node.create_user("eve").await;
    let path = format!("/v0.1/conversations/{conversation}");

    let member = node.get(&path, &node.user_token("alice")).await;
    assert_eq!(member.status, StatusCode::OK);
    let outsider = node.get(&path, &node.user_token("eve")).await;
    assert_eq!(outsider.status, StatusCode::FORBIDDEN);
    let outsider_events = node
        .get(&format!("{path}/events"), &node.user_token("eve"))
        .await;
    assert_eq!(outsider_events.status, StatusCode::FORBIDDEN);
}

#[test]
fn short_secret_is_rejected() {
    assert!(TokenVerifier::hs256(APPLICATION_ID, b"short").is_err());
    assert!(TokenIssuer::hs256(APPLICATION_ID, b"short").is_err());
}

#[test]
fn minted_token_round_trips() {
    let issuer = TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("issuer");
    let verifier = TokenVerifier::hs256(APPLICATION_ID, SECRET).expect("verifier");
    let token = issuer
        .mint(Some("alice"), std::time::Duration::from_secs(60))
        .expect("mint");

    let caller = verifier.verify(&token).expect("verify");
    assert_eq!(caller.user_name(), Some("alice"));
    assert_eq!(caller.claims.application_id, APPLICATION_ID);
    assert!(caller.claims.exp >= caller.claims.iat + 60);
    assert!(!caller.claims.jti.is_empty());
    let acl = caller.claims.acl.expect("acl");
    assert!(acl.paths.contains_key("/*/conversations/**"));
}
