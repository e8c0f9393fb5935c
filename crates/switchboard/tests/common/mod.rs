//! Helpers shared by the node tests: settings, a REST client that keeps raw replies, and
//! checks of JSON problem replies.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod realtime;

use std::time::Duration;

use serde_json::Value;
use switchboard::{Config, Node};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const PUBLISH_AV: &str =
    include_str!("../../../signaling/tests/fixtures/chrome-publish-av.sdp");
pub const RECEIVE_ONLY: &str =
    include_str!("../../../signaling/tests/fixtures/chrome-recvonly.sdp");

/// Settings of a test node: ephemeral loopback ports and ICE timeouts short enough that a
/// vanished peer is closed within about three seconds.
pub fn fast_config() -> Config {
    let mut config = Config::ephemeral();
    config.media.ice_disconnected_timeout_ms = 1_000;
    config.media.ice_failed_timeout_ms = 2_000;
    config
}

/// Status, parsed JSON body (null when empty or not JSON) and raw text of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: String,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(node: &Node) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: node.http_url(),
        }
    }

    /// Sends a request with an optional `Authorization` value and an optional raw body with
    /// its content type.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), url);
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            content_type,
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|body| ("application/json", body.to_string().into_bytes()));
        let authorization = format!("Bearer {token}");
        self.raw(method, &format!("/v0.1{path}"), Some(&authorization), body)
            .await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, token, path, Some(body))
            .await
    }

    pub async fn delete(&self, token: &str, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, token, path, None).await
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.send(reqwest::Method::GET, token, path, None).await
    }

    /// Gets and expects a 200 status.
    pub async fn get_ok(&self, token: &str, path: &str) -> Value {
        let reply = self.get(token, path).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
        reply.body
    }

    /// Posts and expects a 2xx status.
    pub async fn post_ok(&self, token: &str, path: &str, body: Value) -> Value {
        let reply = self.post(token, path, body).await;
        assert!(
            (200..300).contains(&reply.status),
            "POST {path} failed with {}: {}",
            reply.status,
            reply.text
        );
        reply.body
    }
}

/// Asserts that a reply is a JSON problem with the expected status and `type`, with a
/// non-empty `title` and `detail`.
#[track_caller]
pub fn assert_problem(reply: &Reply, status: u16, code: &str, case: &str) {
    assert_eq!(
        reply.status, status,
        "{case}: expected status {status}, got {}: {}",
        reply.status, reply.text
    );
    assert!(
        reply.content_type.starts_with("application/json"),
        "{case}: expected a JSON content type, got {:?}",
        reply.content_type
    );
    assert_eq!(
        reply.body["type"], code,
        "{case}: expected type {code}: {}",
        reply.text
    );
    let title = reply.body["title"].as_str().unwrap_or_default();
    assert!(
        !title.is_empty(),
        "{case}: expected a title: {}",
        reply.text
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty(),
        "{case}: expected a detail: {}",
        reply.text
    );
}

/// Asserts a 4xx JSON problem whatever its status and type, and returns the type.
#[track_caller]
pub fn assert_client_problem(reply: &Reply, case: &str) -> String {
    assert!(
        (400..500).contains(&reply.status),
        "{case}: expected a 4xx status, got {}: {}",
        reply.status,
        reply.text
    );
    assert!(
        reply.content_type.starts_with("application/json"),
        "{case}: expected a JSON content type, got {:?} with status {}: {}",
        reply.content_type,
        reply.status,
        reply.text
    );
    let code = reply.body["type"].as_str().unwrap_or_default().to_owned();
    assert!(!code.is_empty(), "{case}: expected a type: {}", reply.text);
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty(),
        "{case}: expected a detail: {}",
        reply.text
    );
    code
}

/// Reads a conversation's whole event log, one `GET .../events/{id}` per event up to the
/// conversation's `sequence_number`, so that it does not depend on the list's paging.
pub async fn event_log(api: &Api, token: &str, conversation: &str) -> Vec<Value> {
    let path = format!("/conversations/{conversation}");
    let sequence_number = api.get_ok(token, &path).await["sequence_number"]
        .as_u64()
        .expect("sequence_number");
    let mut events = Vec::new();
    for id in 1..=sequence_number {
        events.push(api.get_ok(token, &format!("{path}/events/{id}")).await);
    }
    events
}
