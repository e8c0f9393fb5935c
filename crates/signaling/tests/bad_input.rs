//! Bad input on every resource: malformed JSON, wrong types, unknown and missing fields,
//! unknown ids, oversized bodies, duplicate names, invalid state transitions and wrong content
//! types. Each gets a 4xx error body with `type`, `title` and `detail` (and, for a field,
//! `invalid_parameters` naming it), and leaves the node exactly as it was.

mod common;

use axum::http::{Method, StatusCode};
use common::TestNode;
use serde_json::{Value, json};

/// Ids of a conversation with a member in each state and an open leg, and of a second
/// conversation and a user without members.
struct Scene {
    conversation: String,
    other_conversation: String,
    alice: String,
    alice_leg: String,
    bob: String,
    carol: String,
    alice_user: String,
    dave_user: String,
}

async fn scene(node: &TestNode) -> Scene {
    let created = node
        .post(
            "/v0.1/conversations",
            &node.admin(),
            json!({ "name": "standup", "properties": { "video": true } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let conversation = created.body["id"].as_str().expect("id").to_owned();
    let other = node
        .post(
            "/v0.1/conversations",
            &node.admin(),
            json!({ "name": "review" }),
        )
        .await;
    let other_conversation = other.body["id"].as_str().expect("id").to_owned();

    let alice = node.join(&conversation, "alice").await;
    let alice_leg = node.publish(&conversation, &alice).await;
    let bob = node.add_member(&conversation, "bob", "invite").await;
    let carol = node.join(&conversation, "carol").await;
    let left = node
        .delete(
            &format!("/v0.1/conversations/{conversation}/members/{carol}"),
            &node.admin(),
        )
        .await;
    assert_eq!(left.status, StatusCode::OK);
    let dave_user = node.create_user("dave").await;
    let alice_user = node
        .registry
        .user_by_name("alice")
        .expect("alice")
        .id
        .to_string();

    Scene {
        conversation,
        other_conversation,
        alice,
        alice_leg,
        bob,
        carol,
        alice_user,
        dave_user,
    }
}

/// A request that must be rejected, and how.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    /// The field `invalid_parameters` must name first, for a field error.
    parameter: Option<&'static str>,
    /// A text the `detail` must contain, such as the unknown id.
    detail: Option<String>,
}

impl Case {
    fn json(method: Method, path: impl Into<String>, body: Value) -> Self {
        Self::raw(method, path, &body.to_string())
    }

    fn raw(method: Method, path: impl Into<String>, body: &str) -> Self {
        Self::bytes(method, path, body.as_bytes())
    }

    fn bytes(method: Method, path: impl Into<String>, body: &[u8]) -> Self {
        Case {
            method,
            path: path.into(),
            content_type: Some("application/json"),
            body: body.to_vec(),
            status: StatusCode::BAD_REQUEST,
            code: "request:error:invalid-parameters",
            parameter: None,
            detail: None,
        }
    }

    fn get(path: impl Into<String>) -> Self {
        Case {
            content_type: None,
            ..Self::raw(Method::GET, path, "")
        }
    }

    fn delete(path: impl Into<String>) -> Self {
        Case {
            content_type: None,
            ..Self::raw(Method::DELETE, path, "")
        }
    }

    fn invalid(mut self, parameter: &'static str) -> Self {
        self.parameter = Some(parameter);
        self
    }

    fn rejected(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    fn naming(mut self, text: impl Into<String>) -> Self {
        self.detail = Some(text.into());
        self
    }

    fn with_content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }

    fn describe(&self) -> String {
        format!(
            "{} {} ({:?}) {}",
            self.method,
            self.path,
            self.content_type,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Sends each case, then fails with one line for every way a reply differed from its case or
/// a rejected request changed the node.
async fn run(node: &TestNode, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let before = node.snapshot().await;
        let reply = node
            .send_raw(
                case.method.clone(),
                &case.path,
                case.content_type,
                case.body.clone(),
            )
            .await;
        let request = case.describe();

        if reply.status != case.status || reply.code() != case.code {
            failures.push(format!(
                "{request}: expected {} {}, got {} {}",
                case.status, case.code, reply.status, reply.body
            ));
            continue;
        }
        if reply.body["title"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{request}: no title in {}", reply.body));
        }
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        if detail.is_empty() {
            failures.push(format!("{request}: no detail in {}", reply.body));
        }
        if let Some(text) = &case.detail
            && !detail.contains(text.as_str())
        {
            failures.push(format!(
                "{request}: detail {detail:?} does not name {text:?}"
            ));
        }
        if let Some(parameter) = case.parameter {
            let named = &reply.body["invalid_parameters"][0];
            if named["name"] != parameter || named["reason"].as_str().is_none_or(str::is_empty) {
                failures.push(format!(
                    "{request}: expected invalid_parameters naming {parameter}, got {}",
                    reply.body
                ));
            }
        }
        if node.snapshot().await != before {
            failures.push(format!("{request}: the rejected request changed the node"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let targets = [
        (Method::POST, "/v0.1/users".to_owned()),
        (Method::PUT, format!("/v0.1/users/{}", scene.alice_user)),
        (Method::POST, "/v0.1/conversations".to_owned()),
        (Method::PUT, conversation.clone()),
        (Method::POST, format!("{conversation}/members")),
        (Method::PUT, format!("{conversation}/members/{}", scene.bob)),
        (Method::POST, format!("{conversation}/events")),
        (Method::POST, format!("{conversation}/rtc")),
    ];
    let mut cases = Vec::new();
    for (method, path) in &targets {
        for body in [
            "{",
            "{\"name\": }",
            "",
            "{\"a\":1} {}",
            "{'a': 1}",
            "\u{feff}{}",
        ] {
            cases.push(
                Case::raw(method.clone(), path.clone(), body)
                    .rejected(StatusCode::BAD_REQUEST, "request:error:invalid-json"),
            );
        }
        // Invalid UTF-8 inside a string, which skipping the value would not notice.
        cases.push(
            Case::bytes(method.clone(), path.clone(), b"{\"name\":\"\xff\xfe\"}")
                .rejected(StatusCode::BAD_REQUEST, "request:error:invalid-json"),
        );
        // Valid JSON that is not an object.
        for body in ["[]", "null", "\"join\"", "42"] {
            cases.push(Case::raw(method.clone(), path.clone(), body).invalid("body"));
        }
    }
    run(&node, cases).await;
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let members = format!("{conversation}/members");
    let events = format!("{conversation}/events");
    let rtc = format!("{conversation}/rtc");
    let user = format!("/v0.1/users/{}", scene.alice_user);
    let offer = json!({ "offer": { "type": "offer", "sdp": common::PUBLISH_AV } });

    let cases = vec![
        Case::json(Method::POST, "/v0.1/users", json!({ "name": 5 })).invalid("name"),
        Case::json(Method::POST, "/v0.1/users", json!({ "name": ["x"] })).invalid("name"),
        Case::json(
            Method::POST,
            "/v0.1/users",
            json!({ "name": "erin", "display_name": 5 }),
        )
        .invalid("display_name"),
        Case::json(Method::POST, "/v0.1/conversations", json!({ "name": 5 })).invalid("name"),
        Case::json(
            Method::POST,
            "/v0.1/conversations",
            json!({ "properties": "x" }),
        )
        .invalid("properties"),
        Case::json(
            Method::POST,
            "/v0.1/conversations",
            json!({ "properties": { "video": "yes" } }),
        )
        .invalid("properties.video"),
        Case::json(
            Method::POST,
            "/v0.1/conversations",
            json!({ "properties": { "ttl": -1 } }),
        )
        .invalid("properties.ttl"),
        Case::json(
            Method::POST,
            "/v0.1/conversations",
            json!({ "properties": { "ttl": 1.5 } }),
        )
        .invalid("properties.ttl"),
        Case::json(
            Method::POST,
            &members,
            json!({ "user_name": 5, "action": "join" }),
        )
        .invalid("user_name"),
        Case::json(
            Method::POST,
            &members,
            json!({ "user_name": "dave", "action": "dance" }),
        )
        .invalid("action"),
        // An id and a name that belong to different users.
        Case::json(
            Method::POST,
            &members,
            json!({ "user_id": scene.dave_user, "user_name": "alice", "action": "join" }),
        )
        .invalid("user_name"),
        Case::json(
            Method::POST,
            &members,
            json!({ "user_name": "dave", "action": "join", "channel": { "type": "phone" } }),
        )
        .invalid("channel.type"),
        Case::json(
            Method::POST,
            &members,
            json!({ "user_name": "dave", "action": "join", "channel": "app" }),
        )
        .invalid("channel"),
        Case::json(
            Method::POST,
            &events,
            json!({ "type": 5, "from": scene.alice }),
        )
        .invalid("type"),
        Case::json(
            Method::POST,
            &events,
            json!({ "type": "custom:x", "from": { "id": scene.alice } }),
        )
        .invalid("from"),
        Case::json(
            Method::POST,
            &events,
            json!({ "type": "bogus", "from": scene.alice }),
        )
        .rejected(StatusCode::BAD_REQUEST, "event:error:invalid-type")
        .invalid("type")
        .naming("bogus"),
        Case::json(
            Method::POST,
            &events,
            json!({ "type": "member:joined", "from": scene.alice }),
        )
        .rejected(StatusCode::BAD_REQUEST, "event:error:not-postable")
        .invalid("type")
        .naming("member:joined"),
        Case::json(
            Method::POST,
            &events,
            json!({ "type": format!("custom:{}", "x".repeat(101)), "from": scene.alice }),
        )
        .rejected(StatusCode::BAD_REQUEST, "event:error:invalid-type")
        .invalid("type"),
        Case::json(Method::POST, &rtc, json!({ "from": 5, "body": offer })).invalid("from"),
        Case::json(
            Method::POST,
            &rtc,
            json!({ "from": scene.alice, "body": { "offer": "sdp" } }),
        )
        .invalid("body.offer"),
        Case::json(
            Method::POST,
            &rtc,
            json!({ "from": scene.alice, "body": { "offer": { "type": "answer", "sdp": "v=0" } } }),
        )
        .invalid("body.offer.type"),
        Case::json(
            Method::POST,
            &rtc,
            json!({ "from": scene.alice, "body": { "offer": offer["offer"], "subscribe": { "rtc_id": 7 } } }),
        )
        .invalid("body.subscribe.rtc_id"),
        Case::json(Method::PUT, &user, json!({ "name": 5 })).invalid("name"),
        Case::json(Method::PUT, &user, json!({ "display_name": false })).invalid("display_name"),
        Case::json(Method::PUT, &conversation, json!({ "properties": "x" }))
            .invalid("properties"),
        Case::json(
            Method::PUT,
            &conversation,
            json!({ "properties": { "ttl": "60" } }),
        )
        .invalid("properties.ttl"),
        Case::json(
            Method::PUT,
            format!("{members}/{}", scene.bob),
            json!({ "action": "leave" }),
        )
        .invalid("action"),
        Case::json(
            Method::PUT,
            format!("{members}/{}", scene.bob),
            json!({ "action": ["join"] }),
        )
        .invalid("action"),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn invalid_values_name_the_field() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let user = format!("/v0.1/users/{}", scene.alice_user);
    let long = "x".repeat(256);

    let mut cases = Vec::new();
    for value in ["", "  ", "a\u{0}b", "line\nbreak", long.as_str()] {
        cases.push(
            Case::json(Method::POST, "/v0.1/users", json!({ "name": value })).invalid("name"),
        );
        cases.push(
            Case::json(
                Method::POST,
                "/v0.1/users",
                json!({ "name": "erin", "display_name": value }),
            )
            .invalid("display_name"),
        );
        cases.push(
            Case::json(
                Method::POST,
                "/v0.1/conversations",
                json!({ "name": value }),
            )
            .invalid("name"),
        );
        cases.push(Case::json(Method::PUT, &user, json!({ "name": value })).invalid("name"));
        cases.push(
            Case::json(Method::PUT, &user, json!({ "display_name": value }))
                .invalid("display_name"),
        );
        cases
            .push(Case::json(Method::PUT, &conversation, json!({ "name": value })).invalid("name"));
        cases.push(
            Case::json(Method::PUT, &conversation, json!({ "display_name": value }))
                .invalid("display_name"),
        );
    }
    run(&node, cases).await;
}

#[tokio::test]
async fn null_for_required_field_is_400() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let user = format!("/v0.1/users/{}", scene.alice_user);

    // `null` removes a display name or a time to live, but a name and the video flag cannot be
    // removed, so `null` for them is an error rather than "leave as it is".
    let cases = vec![
        Case::json(Method::POST, "/v0.1/users", json!({ "name": null })).invalid("name"),
        Case::json(Method::PUT, &user, json!({ "name": null })).invalid("name"),
        Case::json(Method::PUT, &conversation, json!({ "name": null })).invalid("name"),
        Case::json(Method::PUT, &conversation, json!({ "properties": null })).invalid("properties"),
        Case::json(
            Method::PUT,
            &conversation,
            json!({ "properties": { "video": null } }),
        )
        .invalid("properties.video"),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn unknown_fields_in_updates_are_400() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let user = format!("/v0.1/users/{}", scene.alice_user);
    let member = format!("{conversation}/members/{}", scene.bob);

    let cases = vec![
        Case::json(Method::PUT, &user, json!({ "nickname": "al" })).invalid("nickname"),
        Case::json(Method::PUT, &user, json!({ "name": "al", "id": "USR-1" })).invalid("id"),
        Case::json(Method::PUT, &conversation, json!({ "colour": "red" })).invalid("colour"),
        Case::json(
            Method::PUT,
            &conversation,
            json!({ "properties": { "video": true, "audio": true } }),
        )
        .invalid("properties.audio"),
        Case::json(
            Method::PUT,
            &member,
            json!({ "action": "join", "state": "LEFT" }),
        )
        .invalid("state"),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn missing_fields_are_named() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);

    let cases = vec![
        Case::json(Method::POST, "/v0.1/users", json!({})).invalid("name"),
        Case::json(
            Method::POST,
            format!("{conversation}/members"),
            json!({ "user_name": "dave" }),
        )
        .invalid("action"),
        Case::json(
            Method::POST,
            format!("{conversation}/members"),
            json!({ "action": "join" }),
        )
        .invalid("user_id"),
        Case::json(
            Method::PUT,
            format!("{conversation}/members/{}", scene.bob),
            json!({}),
        )
        .invalid("action"),
        Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "from": scene.alice }),
        )
        .invalid("type"),
        Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x" }),
        )
        .invalid("from"),
        Case::json(
            Method::POST,
            format!("{conversation}/rtc"),
            json!({ "from": scene.alice }),
        )
        .invalid("body"),
        Case::json(
            Method::POST,
            format!("{conversation}/rtc"),
            json!({ "from": scene.alice, "body": { "offer": { "type": "offer" } } }),
        )
        .invalid("body.offer.sdp"),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn unknown_ids_are_404_by_resource() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let not_found = StatusCode::NOT_FOUND;
    let user_missing = |case: Case| {
        case.rejected(not_found, "user:error:not-found")
            .naming("USR-missing")
            .invalid("user_id")
    };
    let member_missing = |case: Case| {
        case.rejected(not_found, "member:error:not-found")
            .naming("MEM-missing")
            .invalid("member_id")
    };
    let leg_missing = |case: Case, leg: &str| {
        case.rejected(not_found, "rtc:error:not-found")
            .naming(leg)
            .invalid("rtc_id")
    };
    let event_missing = |case: Case, event: &str| {
        case.rejected(not_found, "event:error:not-found")
            .naming(format!("event {event}"))
            .invalid("event_id")
    };

    let mut cases = vec![
        user_missing(Case::get("/v0.1/users/USR-missing")),
        user_missing(Case::json(
            Method::PUT,
            "/v0.1/users/USR-missing",
            json!({ "name": "x" }),
        )),
        user_missing(Case::delete("/v0.1/users/USR-missing")),
        user_missing(Case::get("/v0.1/users/USR-missing/conversations")),
        member_missing(Case::get(format!("{conversation}/members/MEM-missing"))),
        member_missing(Case::delete(format!("{conversation}/members/MEM-missing"))),
        member_missing(Case::json(
            Method::PUT,
            format!("{conversation}/members/MEM-missing"),
            json!({ "action": "join" }),
        )),
        member_missing(Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x", "from": "MEM-missing" }),
        )),
        member_missing(Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x", "from": scene.alice, "to": "MEM-missing" }),
        )),
        member_missing(Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "audio:mute:on", "from": scene.alice, "to": "MEM-missing" }),
        )),
        member_missing(Case::json(
            Method::POST,
            format!("{conversation}/rtc"),
            json!({ "from": "MEM-missing", "body": { "offer": { "sdp": common::PUBLISH_AV } } }),
        )),
        leg_missing(
            Case::json(
                Method::POST,
                format!("{conversation}/rtc"),
                json!({
                    "from": scene.alice,
                    "body": {
                        "offer": { "sdp": common::RECVONLY },
                        "subscribe": { "rtc_id": "LEG-missing" },
                    },
                }),
            ),
            "LEG-missing",
        ),
        leg_missing(
            Case::delete(format!("{conversation}/rtc/LEG-missing")),
            "LEG-missing",
        ),
        // A leg of one conversation is unknown in another.
        leg_missing(
            Case::delete(format!(
                "/v0.1/conversations/{}/rtc/{}",
                scene.other_conversation, scene.alice_leg
            )),
            &scene.alice_leg,
        ),
        event_missing(Case::get(format!("{conversation}/events/999")), "999"),
        event_missing(Case::get(format!("{conversation}/events/0")), "0"),
    ];

    let missing = "/v0.1/conversations/CON-missing";
    let conversation_requests = [
        Case::get(missing),
        Case::json(Method::PUT, missing, json!({ "display_name": "x" })),
        Case::delete(missing),
        Case::get(format!("{missing}/members")),
        Case::json(
            Method::POST,
            format!("{missing}/members"),
            json!({ "user_name": "dave", "action": "join" }),
        ),
        Case::get(format!("{missing}/members/MEM-x")),
        Case::get(format!("{missing}/events")),
        Case::json(
            Method::POST,
            format!("{missing}/events"),
            json!({ "type": "custom:x", "from": scene.alice }),
        ),
        Case::get(format!("{missing}/events/1")),
        Case::get(format!("{missing}/rtc")),
        Case::json(
            Method::POST,
            format!("{missing}/rtc"),
            json!({ "from": scene.alice, "body": { "offer": { "sdp": "v=0" } } }),
        ),
        Case::delete(format!("{missing}/rtc/LEG-x")),
    ];
    cases.extend(conversation_requests.into_iter().map(|case| {
        case.rejected(not_found, "conversation:error:not-found")
            .naming("CON-missing")
    }));
    run(&node, cases).await;
}

#[tokio::test]
async fn malformed_path_ids_are_400() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let cases = vec![
        Case::get(format!(
            "/v0.1/conversations/{}/events/first",
            scene.conversation
        ))
        .invalid("event_id"),
        Case::get(format!(
            "/v0.1/conversations/{}/events/-1",
            scene.conversation
        ))
        .invalid("event_id"),
        Case::get("/v0.1/users/%FF").invalid("user_id"),
        Case::get("/v0.1/conversations/%C3%28/members").invalid("conversation_id"),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    // Large enough for the scene's SDP offer, which is about 6 KB.
    const LIMIT: usize = 8192;
    let node = TestNode::with_body_limit(LIMIT);
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);

    // A new user's body of exactly `size` bytes, padded with a field the node ignores.
    let user_body = |size: usize| {
        let frame = json!({ "name": "erin", "pad": "" }).to_string().len();
        json!({ "name": "erin", "pad": "x".repeat(size - frame) }).to_string()
    };
    let padded = |mut body: Value| {
        body["pad"] = json!("x".repeat(LIMIT));
        body.to_string()
    };
    let offer = json!({ "from": scene.alice, "body": { "offer": { "sdp": common::PUBLISH_AV } } });

    let cases = vec![
        Case::raw(Method::POST, "/v0.1/users", &user_body(LIMIT + 1)),
        Case::raw(
            Method::PUT,
            format!("/v0.1/users/{}", scene.alice_user),
            &padded(json!({ "display_name": "Al" })),
        ),
        Case::raw(
            Method::POST,
            "/v0.1/conversations",
            &padded(json!({ "name": "retro" })),
        ),
        Case::raw(
            Method::PUT,
            conversation.clone(),
            &padded(json!({ "display_name": "x" })),
        ),
        Case::raw(
            Method::POST,
            format!("{conversation}/members"),
            &padded(json!({ "user_name": "dave", "action": "join" })),
        ),
        Case::raw(
            Method::PUT,
            format!("{conversation}/members/{}", scene.bob),
            &padded(json!({ "action": "join" })),
        ),
        Case::raw(
            Method::POST,
            format!("{conversation}/events"),
            &padded(json!({ "type": "custom:x", "from": scene.alice })),
        ),
        Case::raw(Method::POST, format!("{conversation}/rtc"), &padded(offer)),
        // The limit applies before the body is parsed, so malformed JSON gets 413 too.
        Case::raw(Method::POST, "/v0.1/users", &"{".repeat(LIMIT + 1)),
    ]
    .into_iter()
    .map(|case| {
        case.rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request:error:payload-too-large",
        )
        .naming(LIMIT.to_string())
    })
    .collect();
    run(&node, cases).await;

    let at_limit = user_body(LIMIT);
    assert_eq!(at_limit.len(), LIMIT);
    let fits = node
        .send_raw(
            Method::POST,
            "/v0.1/users",
            Some("application/json"),
            at_limit,
        )
        .await;
    assert_eq!(fits.status, StatusCode::CREATED, "{}", fits.body);
}

#[tokio::test]
async fn duplicate_names_are_409() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let user = "user:error:duplicate-name";
    let conversation = "conversation:error:duplicate-name";
    let conflict = StatusCode::CONFLICT;

    let cases = vec![
        Case::json(Method::POST, "/v0.1/users", json!({ "name": "alice" }))
            .rejected(conflict, user)
            .invalid("name")
            .naming("alice"),
        Case::json(
            Method::PUT,
            format!("/v0.1/users/{}", scene.dave_user),
            json!({ "name": "alice" }),
        )
        .rejected(conflict, user)
        .invalid("name")
        .naming("alice"),
        // A rename that fails leaves the display name in the same request unchanged too.
        Case::json(
            Method::PUT,
            format!("/v0.1/users/{}", scene.dave_user),
            json!({ "name": "bob", "display_name": "Dave" }),
        )
        .rejected(conflict, user)
        .invalid("name")
        .naming("bob"),
        Case::json(
            Method::POST,
            "/v0.1/conversations",
            json!({ "name": "standup" }),
        )
        .rejected(conflict, conversation)
        .invalid("name")
        .naming("standup"),
        // A rename that fails leaves the display name in the same request unchanged too.
        Case::json(
            Method::PUT,
            format!("/v0.1/conversations/{}", scene.other_conversation),
            json!({ "name": "standup", "display_name": "Review" }),
        )
        .rejected(conflict, conversation)
        .invalid("name")
        .naming("standup"),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn invalid_transitions_are_409() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let conflict = StatusCode::CONFLICT;
    let carol = format!("{conversation}/members/{}", scene.carol);

    let cases = vec![
        Case::delete(&carol)
            .rejected(conflict, "member:error:already-left")
            .naming(scene.carol.clone()),
        Case::json(Method::PUT, &carol, json!({ "action": "join" }))
            .rejected(conflict, "member:error:already-left")
            .naming(scene.carol.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/members"),
            json!({ "user_name": "alice", "action": "invite" }),
        )
        .rejected(conflict, "member:error:already-member")
        .naming(scene.alice.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/members"),
            json!({ "user_name": "bob", "action": "invite" }),
        )
        .rejected(conflict, "member:error:already-member")
        .naming(scene.bob.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x", "from": scene.bob }),
        )
        .rejected(conflict, "member:error:not-joined")
        .naming(scene.bob.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x", "from": scene.carol }),
        )
        .rejected(conflict, "member:error:not-joined")
        .naming(scene.carol.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "audio:mute:on", "from": scene.alice, "to": scene.bob }),
        )
        .rejected(conflict, "member:error:not-joined")
        .naming(scene.bob.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x", "from": scene.alice, "to": scene.carol }),
        )
        .rejected(conflict, "member:error:already-left")
        .naming(scene.carol.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/rtc"),
            json!({ "from": scene.bob, "body": { "offer": { "sdp": common::PUBLISH_AV } } }),
        )
        .rejected(conflict, "member:error:not-joined")
        .naming(scene.bob.clone()),
        Case::json(
            Method::POST,
            format!("{conversation}/rtc"),
            json!({ "from": scene.carol, "body": { "offer": { "sdp": common::PUBLISH_AV } } }),
        )
        .rejected(conflict, "member:error:not-joined")
        .naming(scene.carol.clone()),
    ];
    run(&node, cases).await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let node = TestNode::start();
    let scene = scene(&node).await;
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let targets = [
        (
            Method::POST,
            "/v0.1/users".to_owned(),
            json!({ "name": "erin" }),
        ),
        (
            Method::PUT,
            format!("/v0.1/users/{}", scene.alice_user),
            json!({ "display_name": "Al" }),
        ),
        (
            Method::POST,
            "/v0.1/conversations".to_owned(),
            json!({ "name": "retro" }),
        ),
        (
            Method::PUT,
            conversation.clone(),
            json!({ "display_name": "x" }),
        ),
        (
            Method::POST,
            format!("{conversation}/members"),
            json!({ "user_name": "dave", "action": "join" }),
        ),
        (
            Method::PUT,
            format!("{conversation}/members/{}", scene.bob),
            json!({ "action": "join" }),
        ),
        (
            Method::POST,
            format!("{conversation}/events"),
            json!({ "type": "custom:x", "from": scene.alice }),
        ),
    ];
    let mut cases = Vec::new();
    for (method, path, body) in &targets {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            Some("json"),
        ] {
            cases.push(
                Case::json(method.clone(), path.clone(), body.clone())
                    .with_content_type(content_type)
                    .rejected(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "request:error:unsupported-media-type",
                    ),
            );
        }
    }
    run(&node, cases).await;

    // The same requests with a JSON type and parameters are accepted.
    for (method, path, body) in targets {
        let reply = node
            .send_raw(
                method.clone(),
                &path,
                Some("Application/JSON; charset=utf-8"),
                body.to_string(),
            )
            .await;
        assert!(
            reply.status.is_success(),
            "{method} {path}: {} {}",
            reply.status,
            reply.body
        );
    }
}
