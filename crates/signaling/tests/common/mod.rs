//! An in-process node for the REST tests: the real router, registry and media worker (on
//! 127.0.0.1 port 0), driven without an HTTP socket.

#![allow(dead_code)]

mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use media::{MediaConfig, MediaHandle};
use room::{Conversation, Event, EventQuery, PageRequest, Registry, User};
use serde_json::{Value, json};
use signaling::auth::{TokenIssuer, TokenVerifier};
use signaling::{AppState, SignalingConfig};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const APPLICATION_ID: &str = "test-application";
pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret-0123";

pub const PUBLISH_AV: &str = include_str!("../fixtures/chrome-publish-av.sdp");
pub const RECVONLY: &str = include_str!("../fixtures/chrome-recvonly.sdp");
pub const PUBLISH_H264_ONLY: &str = include_str!("../fixtures/chrome-publish-h264-only.sdp");
pub const PUBLISH_H265_ONLY: &str = include_str!("../fixtures/chrome-publish-h265-only.sdp");

pub struct TestNode {
    pub app: Router,
    pub state: AppState,
    pub media: MediaHandle,
    pub registry: Arc<Registry>,
    pub issuer: TokenIssuer,
    events_task: JoinHandle<()>,
    /// Checks every reply against the served OpenAPI document; fetched on first use.
    checker: OnceCell<openapi::ResponseChecker>,
}

/// A reply: status and JSON body (`Value::Null` for an empty body).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// Returns the `type` code of an error body.
    pub fn code(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

/// Everything a node contains at one moment: users, conversations with their members, legs and
/// event logs, and the number of legs in the media worker.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub conversations: Vec<(Conversation, Vec<Event>)>,
    pub media_legs: usize,
}

impl TestNode {
    pub fn start() -> Self {
        Self::with_config(SignalingConfig::default())
    }

    /// Starts a node that rejects request bodies larger than `body_limit` bytes.
    pub fn with_body_limit(body_limit: usize) -> Self {
        Self::with_config(SignalingConfig { body_limit })
    }

    pub fn with_config(config: SignalingConfig) -> Self {
        let verifier = TokenVerifier::hs256(APPLICATION_ID, SECRET).expect("verifier");
        Self::with_verifier(config, verifier)
    }

    /// Starts a node that checks tokens with `verifier`; [`TestNode::issuer`] still signs
    /// with [`SECRET`].
    pub fn with_verifier(config: SignalingConfig, verifier: TokenVerifier) -> Self {
        let media_config = MediaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MediaConfig::default()
        };
        let (media, events) = MediaHandle::start(media_config).expect("start the media worker");
        let registry = Arc::new(Registry::new());
        let issuer = TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("issuer");
        let state = AppState::new(registry.clone(), media.clone(), verifier, config);

        let task_registry = registry.clone();
        let events_task = tokio::spawn(async move {
            signaling::process_media_events(&task_registry, events).await;
        });
        TestNode {
            app: signaling::router(state.clone()),
            state,
            media,
            registry,
            issuer,
            events_task,
            checker: OnceCell::new(),
        }
    }

    pub fn admin(&self) -> String {
        self.issuer
            .mint(None, Duration::from_secs(600))
            .expect("mint admin token")
    }

    pub fn user_token(&self, name: &str) -> String {
        self.issuer
            .mint(Some(name), Duration::from_secs(600))
            .expect("mint user token")
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("build request");
        self.send(request).await
    }

    /// Sends a request and checks the reply against the node's OpenAPI document.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let reply = self.send_unchecked(request).await;
        self.checker()
            .await
            .check(&method, &uri, reply.status, &reply.body);
        reply
    }

    /// Checks a reply against the OpenAPI document, as [`TestNode::send`] does.
    pub async fn check_reply(&self, method: Method, uri: &str, status: StatusCode, body: &Value) {
        self.checker().await.check(&method, uri, status, body);
    }

    async fn checker(&self) -> &openapi::ResponseChecker {
        self.checker
            .get_or_init(|| async {
                let request = Request::builder()
                    .uri("/v0.1/openapi.json")
                    .body(Body::empty())
                    .expect("build request");
                let reply = self.send_unchecked(request).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                openapi::ResponseChecker::new(reply.body)
            })
            .await
    }

    async fn send_unchecked(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                panic!(
                    "body is not JSON ({error}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply { status, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Sends `body` as it is, with an admin token and the given `Content-Type` (none when
    /// `None`), for bodies that [`TestNode::call`] cannot make: malformed JSON, other types.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin()));
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let request = builder.body(body.into()).expect("build request");
        self.send(request).await
    }

    /// Reads everything the registry and the media worker hold, to show that a rejected
    /// request changed nothing.
    pub async fn snapshot(&self) -> Snapshot {
        let mut conversations = Vec::new();
        let mut request = PageRequest {
            page_size: room::MAX_PAGE_SIZE,
            ..PageRequest::default()
        };
        loop {
            let page = self
                .registry
                .list_conversations(&request)
                .expect("list conversations");
            for summary in page.items {
                let conversation = self
                    .registry
                    .conversation(&summary.id)
                    .expect("listed conversation");
                let events = self
                    .registry
                    .events(&summary.id, &EventQuery::default())
                    .expect("read the event log");
                conversations.push((conversation, events));
            }
            match page.next {
                Some(cursor) => request.cursor = Some(cursor),
                None => break,
            }
        }
        Snapshot {
            users: self.registry.users(),
            conversations,
            media_legs: self.media_legs().await,
        }
    }

    pub async fn create_user(&self, name: &str) -> String {
        let reply = self
            .post("/v0.1/users", &self.admin(), json!({ "name": name }))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().expect("user id").to_owned()
    }

    pub async fn create_conversation(&self) -> String {
        let reply = self
            .post(
                "/v0.1/conversations",
                &self.admin(),
                json!({ "properties": { "video": true } }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"]
            .as_str()
            .expect("conversation id")
            .to_owned()
    }

    /// Creates the user if needed and adds it to the conversation; returns the member id.
    pub async fn add_member(&self, conversation: &str, user_name: &str, action: &str) -> String {
        if self.registry.user_by_name(user_name).is_err() {
            self.create_user(user_name).await;
        }
        let reply = self
            .post(
                &format!("/v0.1/conversations/{conversation}/members"),
                &self.admin(),
                json!({ "user_name": user_name, "action": action, "channel": { "type": "app" } }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().expect("member id").to_owned()
    }

    pub async fn join(&self, conversation: &str, user_name: &str) -> String {
        self.add_member(conversation, user_name, "join").await
    }

    /// Posts an offer for a member with the admin token.
    pub async fn offer(
        &self,
        conversation: &str,
        member: &str,
        sdp: &str,
        subscribe: Option<&str>,
    ) -> Reply {
        self.offer_as(&self.admin(), conversation, member, sdp, subscribe)
            .await
    }

    pub async fn offer_as(
        &self,
        token: &str,
        conversation: &str,
        member: &str,
        sdp: &str,
        subscribe: Option<&str>,
    ) -> Reply {
        let mut body = json!({ "offer": { "type": "offer", "sdp": sdp } });
        if let Some(publisher) = subscribe {
            body["subscribe"] = json!({ "rtc_id": publisher });
        }
        self.post(
            &format!("/v0.1/conversations/{conversation}/rtc"),
            token,
            json!({ "from": member, "body": body }),
        )
        .await
    }

    /// Publishes the audio and video fixture and returns the leg id.
    pub async fn publish(&self, conversation: &str, member: &str) -> String {
        let reply = self.offer(conversation, member, PUBLISH_AV, None).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["rtc_id"].as_str().expect("rtc_id").to_owned()
    }

    pub async fn subscribe(&self, conversation: &str, member: &str, publisher: &str) -> String {
        let reply = self
            .offer(conversation, member, RECVONLY, Some(publisher))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["rtc_id"].as_str().expect("rtc_id").to_owned()
    }

    pub async fn events(&self, conversation: &str) -> Vec<Value> {
        let reply = self
            .get(
                &format!("/v0.1/conversations/{conversation}/events"),
                &self.admin(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["_embedded"]["events"]
            .as_array()
            .expect("an event array")
            .clone()
    }

    pub async fn event_types(&self, conversation: &str) -> Vec<String> {
        self.events(conversation)
            .await
            .iter()
            .map(|event| event["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Number of legs the media worker holds.
    pub async fn media_legs(&self) -> usize {
        self.media.stats().await.expect("media stats").legs
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.events_task.abort();
        self.media.shutdown();
    }
}
