//! The demo page's routes on a real node: the page's files, the SDK bundle, the page settings
//! and the development tokens, next to the API routes that must keep working.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::demo::SDK_BUNDLE;
use switchboard::{Config, Node};

mod common;

use common::{Api, Reply, assert_problem, event_log};

/// A secret other than the development one, which turns the node's token minting off.
const PRODUCTION_SECRET: &str = "a-production-secret-of-32-bytes-or-more";

/// Returns the repository's demo directory, with the page that the node serves by default.
fn repository_demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo")
}

/// Settings of a test node that serves the demo from `dir`.
fn demo_config(dir: &Path) -> Config {
    let mut config = Config::ephemeral();
    config.demo.dir = dir.to_path_buf();
    config
}

async fn get(api: &Api, path: &str) -> Reply {
    api.raw(Method::GET, path, None, None).await
}

/// Posts a raw body with a content type to `/demo/token`.
async fn post_token_raw(api: &Api, content_type: &str, body: &str) -> Reply {
    let body = Some((content_type, body.as_bytes().to_vec()));
    api.raw(Method::POST, "/demo/token", None, body).await
}

async fn post_token(api: &Api, body: Value) -> Reply {
    post_token_raw(api, "application/json", &body.to_string()).await
}

/// Requests a token for `user` that also puts the user into `conversation`, and returns the
/// token and the conversation's id.
async fn token_for_conversation(api: &Api, user: &str, conversation: &str) -> (String, String) {
    let reply = post_token(api, json!({"user": user, "conversation": conversation})).await;
    assert_eq!(
        reply.status, 200,
        "POST /demo/token for {user} in {conversation}: {}",
        reply.text
    );
    assert_eq!(reply.body["user"]["name"], user, "{}", reply.text);
    assert_eq!(
        reply.body["conversation"]["name"], conversation,
        "{}",
        reply.text
    );
    let token = reply.body["token"].as_str().expect("a token").to_owned();
    let id = reply.body["conversation"]["id"]
        .as_str()
        .expect("a conversation id")
        .to_owned();
    (token, id)
}

/// Returns the members of `user` in a conversation, LEFT ones included, as the REST API
/// shows them.
fn members_of(conversation: &Value, user: &str) -> Vec<Value> {
    conversation["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|member| member["name"] == user)
        .cloned()
        .collect()
}

async fn conversation_count(node: &Node, api: &Api) -> usize {
    let admin = node.admin_token(Duration::from_secs(60)).expect("token");
    let list = api.get_ok(&admin, "/conversations?page_size=100").await;
    list["_embedded"]["conversations"]
        .as_array()
        .expect("conversations")
        .len()
}

/// Writes a demo directory with a page and, if given, a stand-in for the SDK bundle.
fn fake_demo_dir(sdk_bundle: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><p>test page</p>",
    )
    .expect("write index.html");
    if let Some(contents) = sdk_bundle {
        let bundle = dir.path().join(SDK_BUNDLE);
        std::fs::create_dir_all(bundle.parent().expect("a parent directory"))
            .expect("create the SDK directory");
        std::fs::write(&bundle, contents).expect("write the SDK bundle");
    }
    dir
}

#[tokio::test]
async fn page_files_are_served() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let page = get(&api, "/").await;
    assert_eq!(page.status, 200, "GET /: {}", page.text);
    assert!(
        page.content_type.starts_with("text/html"),
        "{:?}",
        page.content_type
    );
    assert!(
        page.text.contains("/sdk/conversationClient.js"),
        "the page loads the SDK: {}",
        page.text
    );
    assert!(
        page.text.contains("/demo/app.js"),
        "the page loads its script"
    );

    let script = get(&api, "/demo/app.js").await;
    assert_eq!(script.status, 200, "GET /demo/app.js: {}", script.text);
    assert!(
        script.content_type.contains("javascript"),
        "{:?}",
        script.content_type
    );
    assert!(script.text.contains("window.switchboardDemo"));

    let style = get(&api, "/demo/style.css").await;
    assert_eq!(style.status, 200, "GET /demo/style.css: {}", style.text);
    assert!(
        style.content_type.starts_with("text/css"),
        "{:?}",
        style.content_type
    );

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn other_demo_files_are_not_served() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    for path in [
        "/demo/package.json",
        "/demo/package-lock.json",
        "/demo/index.html",
        "/demo/node_modules/nexmo-client/package.json",
        "/demo/../Cargo.toml",
        "/demo/",
    ] {
        let reply = get(&api, path).await;
        assert_problem(&reply, 404, "request:error:not-found", path);
    }
    let reply = api.raw(Method::POST, "/", None, None).await;
    assert_problem(&reply, 405, "request:error:method-not-allowed", "POST /");

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn api_routes_work_beside_demo() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    for path in ["/healthz", "/readyz", "/metrics", "/v0.1/openapi.json"] {
        let reply = get(&api, path).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
    }
    let admin = node.admin_token(Duration::from_secs(60)).expect("token");
    let users = api.get(&admin, "/users").await;
    assert_eq!(users.status, 200, "GET /v0.1/users: {}", users.text);
    let missing = get(&api, "/no-such-route").await;
    assert_problem(
        &missing,
        404,
        "request:error:not-found",
        "GET /no-such-route",
    );
    let unauthenticated = get(&api, "/v0.1/users").await;
    assert_problem(
        &unauthenticated,
        401,
        "auth:error:missing-token",
        "GET /v0.1/users without a token",
    );

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn config_reports_development_tokens() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let reply = get(&api, "/demo/config.json").await;
    assert_eq!(reply.status, 200, "GET /demo/config.json: {}", reply.text);
    assert_eq!(reply.body, json!({"mint_tokens": true, "token_url": null}));

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn demo_token_is_accepted_by_rest_api() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let reply = post_token(&api, json!({"user": "alice"})).await;
    assert_eq!(reply.status, 200, "POST /demo/token: {}", reply.text);
    let token = reply.body["token"].as_str().expect("a token").to_owned();
    let user_id = reply.body["user"]["id"]
        .as_str()
        .expect("a user id")
        .to_owned();
    assert_eq!(reply.body["user"]["name"], "alice");
    assert!(user_id.starts_with("USR-"), "{user_id}");

    let user = api.get(&token, &format!("/users/{user_id}")).await;
    assert_eq!(user.status, 200, "the user reads itself: {}", user.text);
    assert_eq!(user.body["name"], "alice");
    let conversation = api
        .post(&token, "/conversations", json!({"name": "standup"}))
        .await;
    assert_eq!(
        conversation.status, 201,
        "the user creates a conversation: {}",
        conversation.text
    );
    let conversation_id = conversation.body["id"].as_str().expect("an id");
    let member = api
        .post(
            &token,
            &format!("/conversations/{conversation_id}/members"),
            json!({"user_name": "alice", "action": "join"}),
        )
        .await;
    assert_eq!(member.status, 201, "the user joins: {}", member.text);
    let admin_only = api.get(&token, "/users").await;
    assert_problem(
        &admin_only,
        403,
        "auth:error:admin-only",
        "a demo token is a user token, not an admin token",
    );

    let again = post_token(&api, json!({"user": "alice"})).await;
    assert_eq!(again.status, 200, "a second token: {}", again.text);
    assert_eq!(
        again.body["user"]["id"], user_id,
        "the existing user is reused"
    );
    let admin = node.admin_token(Duration::from_secs(60)).expect("token");
    let users = api.get(&admin, "/users?page_size=100").await;
    let count = users.body["_embedded"]["users"]
        .as_array()
        .expect("users")
        .len();
    assert_eq!(count, 1, "one user: {}", users.text);

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_token_request_gets_400() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let cases = [
        ("{\"user\": ", "request:error:invalid-json", None),
        ("not json", "request:error:invalid-json", None),
        ("{}", "request:error:invalid-parameters", Some("user")),
        (
            "{\"user\": 5}",
            "request:error:invalid-parameters",
            Some("user"),
        ),
        (
            "{\"user\": null}",
            "request:error:invalid-parameters",
            Some("user"),
        ),
        (
            "{\"user\": \"\"}",
            "request:error:invalid-parameters",
            Some("user"),
        ),
        (
            "{\"user\": \" alice\"}",
            "request:error:invalid-parameters",
            Some("user"),
        ),
        (
            "{\"user\": \"al\\u0000ice\"}",
            "request:error:invalid-parameters",
            Some("user"),
        ),
        (
            "[\"alice\"]",
            "request:error:invalid-parameters",
            Some("body"),
        ),
        (
            "{\"user\": \"alice\", \"admin\": true}",
            "request:error:invalid-parameters",
            Some("admin"),
        ),
    ];
    for (body, code, parameter) in cases {
        let reply = post_token_raw(&api, "application/json", body).await;
        assert_problem(&reply, 400, code, body);
        if let Some(parameter) = parameter {
            let named = &reply.body["invalid_parameters"][0]["name"];
            assert_eq!(named, parameter, "{body}: {}", reply.text);
        }
    }
    let long_name = "a".repeat(256);
    let reply = post_token(&api, json!({"user": long_name})).await;
    assert_problem(
        &reply,
        400,
        "request:error:invalid-parameters",
        "256 characters",
    );

    let reply = post_token_raw(&api, "text/plain", "{\"user\": \"alice\"}").await;
    assert_problem(
        &reply,
        415,
        "request:error:unsupported-media-type",
        "a text/plain body",
    );

    let admin = node.admin_token(Duration::from_secs(60)).expect("token");
    let users = api.get(&admin, "/users").await;
    let users = users.body["_embedded"]["users"].as_array().expect("users");
    assert!(users.is_empty(), "bad requests create no user: {users:?}");

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn token_with_conversation_invites_user() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let (alice_token, conversation_id) = token_for_conversation(&api, "alice", "standup").await;
    assert!(conversation_id.starts_with("CON-"), "{conversation_id}");
    let path = format!("/conversations/{conversation_id}");
    let conversation = api.get(&alice_token, &path).await;
    assert_eq!(
        conversation.status, 200,
        "the invited user reads the conversation: {}",
        conversation.text
    );
    let conversation = conversation.body;
    assert_eq!(conversation["name"], "standup");
    assert_eq!(conversation["display_name"], "standup");
    assert_eq!(conversation["properties"]["video"], true);
    let alice_members = members_of(&conversation, "alice");
    assert_eq!(alice_members.len(), 1, "{conversation}");
    let alice_member = &alice_members[0];
    assert_eq!(alice_member["state"], "INVITED", "{alice_member}");
    assert!(
        alice_member.get("invited_by").is_none(),
        "no member invited alice: {alice_member}"
    );

    let (bob_token, bob_conversation) = token_for_conversation(&api, "bob", "standup").await;
    assert_eq!(
        bob_conversation, conversation_id,
        "the name finds the same conversation"
    );
    assert_eq!(conversation_count(&node, &api).await, 1);
    let conversation = api.get_ok(&bob_token, &path).await;
    let bob_members = members_of(&conversation, "bob");
    assert_eq!(bob_members.len(), 1, "{conversation}");
    assert_eq!(bob_members[0]["state"], "INVITED", "{conversation}");
    assert_ne!(bob_members[0]["id"], alice_member["id"]);

    let joined = api
        .post(
            &alice_token,
            &format!("{path}/members"),
            json!({"user_name": "alice", "action": "join"}),
        )
        .await;
    assert_eq!(
        joined.status, 200,
        "the join accepts the invitation: {}",
        joined.text
    );
    assert_eq!(joined.body["id"], alice_member["id"], "{}", joined.text);
    assert_eq!(joined.body["state"], "JOINED", "{}", joined.text);

    let admin = node.admin_token(Duration::from_secs(60)).expect("token");
    let events = event_log(&api, &admin, &conversation_id).await;
    let types: Vec<&str> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "conversation:created",
            "member:invited",
            "member:invited",
            "member:joined"
        ]
    );
    assert_eq!(events[1]["body"]["user"]["name"], "alice");
    assert_eq!(events[2]["body"]["user"]["name"], "bob");

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn token_without_conversation_adds_none() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    for body in [
        json!({"user": "alice"}),
        json!({"user": "alice", "conversation": null}),
    ] {
        let reply = post_token(&api, body.clone()).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text);
        assert!(
            reply.body.get("conversation").is_none(),
            "{body}: {}",
            reply.text
        );
    }
    assert_eq!(conversation_count(&node, &api).await, 0);

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn member_is_not_invited_again() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let (token, conversation_id) = token_for_conversation(&api, "alice", "standup").await;
    let path = format!("/conversations/{conversation_id}");
    let invited = api.get_ok(&token, &path).await;
    let sequence_number = &invited["sequence_number"];

    // An INVITED user asks again.
    let (_, again) = token_for_conversation(&api, "alice", "standup").await;
    assert_eq!(again, conversation_id);
    let conversation = api.get_ok(&token, &path).await;
    assert_eq!(
        &conversation["sequence_number"], sequence_number,
        "no event for an INVITED user: {conversation}"
    );
    assert_eq!(
        members_of(&conversation, "alice").len(),
        1,
        "{conversation}"
    );

    // A JOINED user asks again.
    let joined = api
        .post_ok(
            &token,
            &format!("{path}/members"),
            json!({"user_name": "alice", "action": "join"}),
        )
        .await;
    let joined_conversation = api.get_ok(&token, &path).await;
    let (_, again) = token_for_conversation(&api, "alice", "standup").await;
    assert_eq!(again, conversation_id);
    let conversation = api.get_ok(&token, &path).await;
    assert_eq!(
        conversation["sequence_number"], joined_conversation["sequence_number"],
        "no event for a JOINED user: {conversation}"
    );
    let members = members_of(&conversation, "alice");
    assert_eq!(members.len(), 1, "{conversation}");
    assert_eq!(members[0]["id"], joined["id"]);
    assert_eq!(members[0]["state"], "JOINED", "{conversation}");

    // A user that left is invited again, as a new member.
    let member_id = joined["id"].as_str().expect("a member id");
    let left = api
        .delete(&token, &format!("{path}/members/{member_id}"))
        .await;
    assert_eq!(left.status, 200, "alice leaves: {}", left.text);
    let (_, again) = token_for_conversation(&api, "alice", "standup").await;
    assert_eq!(again, conversation_id);
    let conversation = api.get_ok(&token, &path).await;
    let members = members_of(&conversation, "alice");
    let states: Vec<&Value> = members.iter().map(|member| &member["state"]).collect();
    assert_eq!(
        states,
        [&json!("LEFT"), &json!("INVITED")],
        "{conversation}"
    );

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_conversation_name_gets_400() {
    let node = Node::start(demo_config(&repository_demo_dir()))
        .await
        .expect("start");
    let api = Api::new(&node);

    let long_name = "a".repeat(256);
    let cases = [
        json!(""),
        json!("   "),
        json!(" standup"),
        json!("standup "),
        json!("stand\nup"),
        json!("stand\u{0}up"),
        json!(long_name),
        json!(5),
        json!(["standup"]),
    ];
    for conversation in cases {
        let body = json!({"user": "alice", "conversation": conversation});
        let reply = post_token(&api, body.clone()).await;
        assert_problem(
            &reply,
            400,
            "request:error:invalid-parameters",
            &body.to_string(),
        );
        let named = &reply.body["invalid_parameters"][0]["name"];
        assert_eq!(named, "conversation", "{body}: {}", reply.text);
    }

    let admin = node.admin_token(Duration::from_secs(60)).expect("token");
    let users = api.get_ok(&admin, "/users").await;
    let users = users["_embedded"]["users"].as_array().expect("users");
    assert!(users.is_empty(), "bad requests create no user: {users:?}");
    assert_eq!(
        conversation_count(&node, &api).await,
        0,
        "bad requests create no conversation"
    );

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn token_route_is_absent_outside_development() {
    let mut config = demo_config(&repository_demo_dir());
    config.auth.secret = switchboard::config::Secret::new(PRODUCTION_SECRET);
    config.demo.token_url = Some("https://app.example.com/switchboard-token".to_owned());
    let node = Node::start(config).await.expect("start");
    let api = Api::new(&node);

    let reply = post_token(&api, json!({"user": "alice"})).await;
    assert_problem(
        &reply,
        404,
        "request:error:not-found",
        "POST /demo/token on a node with its own secret",
    );
    let reply = get(&api, "/demo/config.json").await;
    assert_eq!(reply.status, 200, "GET /demo/config.json: {}", reply.text);
    assert_eq!(
        reply.body,
        json!({
            "mint_tokens": false,
            "token_url": "https://app.example.com/switchboard-token",
        })
    );
    let page = get(&api, "/").await;
    assert_eq!(page.status, 200, "the page is still served: {}", page.text);

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sdk_route_serves_installed_bundle() {
    let bundle = "window.ConversationClient = function () {}; // a stand-in for the SDK\n";
    let dir = fake_demo_dir(Some(bundle));
    let node = Node::start(demo_config(dir.path())).await.expect("start");
    let api = Api::new(&node);

    let reply = get(&api, "/sdk/conversationClient.js").await;
    assert_eq!(
        reply.status, 200,
        "GET /sdk/conversationClient.js: {}",
        reply.text
    );
    assert_eq!(reply.text, bundle);
    assert!(
        reply.content_type.contains("javascript"),
        "{:?}",
        reply.content_type
    );
    let page = get(&api, "/").await;
    assert_eq!(page.status, 200, "GET /: {}", page.text);
    assert!(page.text.contains("test page"), "{}", page.text);

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sdk_route_without_bundle_gives_setup_hint() {
    let dir = fake_demo_dir(None);
    let node = Node::start(demo_config(dir.path())).await.expect("start");
    let api = Api::new(&node);

    let reply = get(&api, "/sdk/conversationClient.js").await;
    assert_problem(
        &reply,
        404,
        "request:error:not-found",
        "GET /sdk/conversationClient.js without the SDK",
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("scripts/setup-demo"), "{detail}");

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn missing_page_names_demo_dir() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(demo_config(dir.path())).await.expect("start");
    let api = Api::new(&node);

    for path in ["/", "/demo/app.js", "/demo/style.css"] {
        let reply = get(&api, path).await;
        assert_problem(&reply, 404, "request:error:not-found", path);
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("demo.dir"), "{path}: {detail}");
    }

    node.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn disabled_demo_serves_nothing() {
    let mut config = demo_config(&repository_demo_dir());
    config.demo.enabled = false;
    let node = Node::start(config).await.expect("start");
    let api = Api::new(&node);

    for path in [
        "/",
        "/demo/app.js",
        "/demo/config.json",
        "/sdk/conversationClient.js",
    ] {
        let reply = get(&api, path).await;
        assert_problem(&reply, 404, "request:error:not-found", path);
    }
    let reply = post_token(&api, json!({"user": "alice"})).await;
    assert_problem(&reply, 404, "request:error:not-found", "POST /demo/token");
    let health = get(&api, "/healthz").await;
    assert_eq!(health.status, 200, "GET /healthz: {}", health.text);

    node.shutdown().await.expect("shutdown");
}
