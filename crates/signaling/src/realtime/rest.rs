//! Requests of the realtime API carried out as REST requests on the node's own router, with the
//! session's token. The socket API thereby has exactly the REST API's access rules, input
//! checks, error codes, draining behaviour and logs.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::Value;
use tower::ServiceExt;

use super::envelope::RequestError;
use crate::error::InvalidParameter;
use crate::views::API_BASE;

/// Maximum size of a REST response the bridge reads. The largest are pages of 100 events with
/// bodies of up to 4 KiB each.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The node's REST router, called in process.
#[derive(Clone)]
pub(crate) struct RestBridge {
    router: Router,
}

impl RestBridge {
    pub(crate) fn new(router: Router) -> Self {
        RestBridge { router }
    }

    /// Sends a request to `path`, relative to the API base, and returns the response's JSON
    /// (`null` for an empty body). A non-2xx response becomes the error it describes.
    pub(crate) async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RequestError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{API_BASE}{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|error| RequestError::invalid_request(format!("invalid request: {error}")))?;

        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| internal(format!("reading the response failed: {error}")))?;
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|error| internal(format!("the response is not JSON: {error}")))?
        };
        if status.is_success() {
            Ok(json)
        } else {
            Err(error_from_problem(&json))
        }
    }
}

/// Converts a REST error body (`type`, `detail`, `invalid_parameters`) to a request error.
fn error_from_problem(problem: &Value) -> RequestError {
    let code = problem["type"].as_str().unwrap_or("system:error:internal");
    let detail = problem["detail"].as_str().unwrap_or("the request failed");
    let mut error = RequestError::new(super::envelope::reason_of_code(code), detail);
    error.code = Some(code.to_owned());
    if let Some(parameters) = problem["invalid_parameters"].as_array() {
        error.invalid_parameters = parameters
            .iter()
            .filter_map(|parameter| {
                Some(InvalidParameter {
                    name: parameter["name"].as_str()?.to_owned(),
                    reason: parameter["reason"].as_str()?.to_owned(),
                })
            })
            .collect();
    }
    error
}

fn internal(description: String) -> RequestError {
    RequestError::new("internal", description)
}

/// Percent-encodes one path segment: ids come from clients and must not add segments.
pub(crate) fn segment(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
