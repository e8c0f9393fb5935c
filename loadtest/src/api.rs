//! The node's REST API, as far as the load test uses it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: base.to_owned(),
            token: token.trim().to_owned(),
        })
    }

    /// Checks that the node is ready on `/readyz` and accepts the token, so a wrong URL or token
    /// fails before any leg is built.
    pub async fn check(&self) -> Result<()> {
        let url = format!("{}/readyz", self.base);
        let response = self.http.get(&url).send().await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach the node at {}: {}; is it running, and is --url right?",
                self.base,
                root_cause(&error)
            )
        })?;
        if response.status() != StatusCode::OK {
            bail!(
                "the node at {} is not ready: GET /readyz returned {}",
                self.base,
                response.status()
            );
        }
        // Any reply but 401 or 403 means the token passed authentication: the user id is
        // made up, so a valid token gets 404.
        let url = format!("{}/v0.1/users/loadtest-token-check", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|error| anyhow::anyhow!("GET {url} failed: {}", root_cause(&error)))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = response.text().await.unwrap_or_default();
            bail!(
                "the node rejected the token ({status}{}): pass an admin token from \
                 `switchboard token --admin` run with the node's configuration",
                problem_code(&body)
                    .map(|code| format!(", {code}"))
                    .unwrap_or_default()
            );
        }
        if status.is_server_error() {
            bail!("GET {url} returned {status}");
        }
        Ok(())
    }

    async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/v0.1{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| anyhow::anyhow!("{method} {url} failed: {}", root_cause(&error)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the reply to {method} {url}"))?;
        if !status.is_success() {
            bail!("{method} {url} returned {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url} returned invalid JSON"))
    }

    pub async fn create_conversation(&self, name: &str) -> Result<String> {
        let reply = self
            .request(
                Method::POST,
                "/conversations",
                Some(json!({ "name": name })),
            )
            .await?;
        id(&reply, "conversation")
    }

    /// Creates a user and joins it to the conversation; returns the member id.
    pub async fn join(&self, conversation: &str, user: &str) -> Result<String> {
        self.request(Method::POST, "/users", Some(json!({ "name": user })))
            .await?;
        let reply = self
            .request(
                Method::POST,
                &format!("/conversations/{conversation}/members"),
                Some(json!({ "user_name": user, "action": "join", "channel": { "type": "app" } })),
            )
            .await?;
        id(&reply, "member")
    }

    /// Makes the member leave, which ends its legs.
    pub async fn leave(&self, conversation: &str, member: &str) -> Result<()> {
        self.request(
            Method::DELETE,
            &format!("/conversations/{conversation}/members/{member}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Sends an offer, to publish or, with `subscribe_to`, to subscribe to a publisher leg;
    /// returns the new leg's id and the answer SDP.
    pub async fn rtc(
        &self,
        conversation: &str,
        member: &str,
        offer: String,
        subscribe_to: Option<&str>,
    ) -> Result<(String, String)> {
        let mut body = json!({ "offer": { "type": "offer", "sdp": offer } });
        if let Some(leg) = subscribe_to {
            body["subscribe"] = json!({ "rtc_id": leg });
        }
        let reply = self
            .request(
                Method::POST,
                &format!("/conversations/{conversation}/rtc"),
                Some(json!({ "from": member, "body": body })),
            )
            .await?;
        let leg = reply["rtc_id"]
            .as_str()
            .context("the rtc reply has no rtc_id")?;
        let sdp = reply["body"]["answer"]["sdp"]
            .as_str()
            .context("the rtc reply has no answer SDP")?;
        Ok((leg.to_owned(), sdp.to_owned()))
    }
}

fn id(reply: &Value, what: &str) -> Result<String> {
    reply["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the node's reply has no {what} id: {reply}"))
}

/// Returns the `type` code of a JSON problem reply, such as `system:error:invalid-token`.
fn problem_code(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value["type"].as_str().map(str::to_owned)
}

/// Returns the innermost error, which names the actual failure (such as "Connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
