//! Request extractors whose rejections are [`ApiError`]s, so that malformed input gets the same
//! JSON error shape as every other failure instead of axum's plain-text defaults.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::auth::{AuthError, Caller};
use crate::error::ApiError;

/// A JSON request body, deserialized into `T`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().map(|limit| limit.0);
        if !has_json_content_type(&request) {
            return Err(ApiError::UnsupportedMediaType);
        }

        // `Bytes` applies the router's body limit and rejects a larger body with 413.
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: limit.unwrap_or_default(),
                    }
                } else {
                    ApiError::InvalidJson(rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The body limit in force, put in the request extensions by the router so that a rejection
/// can name it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

fn has_json_content_type(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

/// Deserializes a JSON object, telling a syntax error (`request:error:invalid-json`) from valid JSON of
/// the wrong shape (`request:error:invalid-parameters`, naming the field).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The whole body is checked for syntax first, because deserializing into `T` stops at the
    // first field of the wrong shape and would report `{"a": 1} trailing` as a missing field.
    // Skipping values does not check the bytes inside strings, so UTF-8 is checked apart.
    let text = std::str::from_utf8(bytes)
        .map_err(|error| ApiError::InvalidJson(format!("the body is not UTF-8: {error}")))?;
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|error| ApiError::InvalidJson(error.to_string()))?;

    // Serde also reads a struct from an array of its fields in order, and an update whose
    // fields may all be left out from `[]`, which no client means to send.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid_parameter("body", "must be a JSON object"));
    }

    // Valid JSON can still fail with a syntax category, such as an array where an enum is
    // expected, so every error from here on is about the shape.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        ApiError::invalid_parameter(field_name(&path, &inner), inner.to_string())
    })
}

/// Name of the field a data error is about. For a missing field serde reports the path of the
/// enclosing object and names the field only in its message, so the name is taken from there.
fn field_name(path: &str, error: &serde_json::Error) -> String {
    let message = error.to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (_, Some(name)) => format!("{path}.{name}"),
        (".", None) => "body".to_owned(),
        (_, None) => path.to_owned(),
    }
}

/// Query parameters, deserialized into `T`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let reason = error.into_inner().to_string();
                let name = if path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                ApiError::invalid_parameter(name, reason)
            })
    }
}

/// The verified token of the request, put in the request extensions by the auth middleware.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Auth(AuthError::MissingToken))
    }
}
