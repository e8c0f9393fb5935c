//! The HTTP routes of a node.

mod conversations;
mod events;
mod health;
mod members;
mod rtc;
mod telemetry;
mod users;

use axum::body::Bytes;
use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequestParts, MatchedPath, OriginalUri, Path, RawPathParams, Request,
    State,
};
use axum::http::request::Parts;
use axum::http::{Method, Uri, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::openapi;
use crate::state::AppState;
use crate::views::API_BASE;

/// Builds the node's HTTP routes: the REST API under `/v0.1`, every route of which needs a
/// bearer token, its OpenAPI document at `/v0.1/openapi.json`, and the unauthenticated
/// `/healthz`, `/readyz` and `/metrics`. Every request runs in a span and counts in the
/// request latency histogram.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().body_limit;
    let (api, document) = api_routes().split_for_parts();
    let document = openapi::to_json(&openapi::finish(document, API_BASE));

    let api = api
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), authenticate));

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(telemetry::metrics))
        .route(
            &format!("{API_BASE}/openapi.json"),
            get(move || serve_document(document.clone())),
        )
        .nest(API_BASE, api)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(
            state.clone(),
            telemetry::observe_request,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .with_state(state)
}

/// Builds the REST routes, relative to the API base. Each handler is registered through its
/// `#[utoipa::path]` attribute, which also puts it in the OpenAPI document.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base_document())
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::show, users::update, users::remove))
        .routes(routes!(users::conversations))
        .routes(routes!(conversations::create, conversations::list))
        .routes(routes!(
            conversations::show,
            conversations::update,
            conversations::remove
        ))
        .routes(routes!(members::add, members::list))
        .routes(routes!(members::show, members::update, members::remove))
        .routes(routes!(rtc::create, rtc::list))
        .routes(routes!(rtc::remove))
        .routes(routes!(events::create, events::list))
        .routes(routes!(events::show))
}

/// Returns the OpenAPI document. It needs no token, so that tools can read it first.
async fn serve_document(document: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}

/// Verifies the bearer token and checks the request path against its `acl.paths`, then puts
/// the [`crate::auth::Caller`] in the request extensions.
async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state
        .verifier()
        .verify_header(request.headers().get(header::AUTHORIZATION))?;

    // Inside the nested API router the URI has lost its `/v0.1` prefix, which the patterns
    // (`/*/conversations/**`) expect, so the path is taken from the URI as it was received.
    // A path that matches no route gets its 404 whatever the grants, as it reaches nothing.
    let path = match request.extensions().get::<OriginalUri>() {
        Some(OriginalUri(uri)) => uri.path(),
        None => request.uri().path(),
    };
    if request.extensions().get::<MatchedPath>().is_some() {
        caller.check_path(path)?;
    }

    // A draining node takes no new work: nothing is created (POST) or joined and renamed
    // (PUT). Reads and DELETE still work, so clients can leave and clean up.
    let new_work = matches!(*request.method(), Method::POST | Method::PUT);
    if state.is_draining() && new_work {
        return Err(ApiError::Draining);
    }

    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Path parameters, with a JSON error for a path that does not decode.
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let rejection = match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => return Ok(ApiPath(value)),
            Err(rejection) => rejection,
        };

        // Tuples of parameters report a position; the router's raw parameters, in the same
        // order, have the name.
        let names: Vec<String> = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params.iter().map(|(name, _)| name.to_owned()).collect(),
            Err(_) => Vec::new(),
        };
        let (name, reason) = describe_path_rejection(&rejection, &names);
        Err(ApiError::invalid_parameter(name, reason))
    }
}

/// Names the path parameter a rejection is about (`path` when it is about none) and describes
/// what is wrong with it. `names` are the route's parameter names in path order.
fn describe_path_rejection(rejection: &PathRejection, names: &[String]) -> (String, String) {
    let PathRejection::FailedToDeserializePathParams(error) = rejection else {
        return ("path".to_owned(), rejection.body_text());
    };
    let invalid = |value: &str, expected: &str| format!("{value:?} is not a valid {expected}");
    match error.kind() {
        PathErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (key.clone(), invalid(value, expected_type)),
        PathErrorKind::ParseErrorAtIndex {
            index,
            value,
            expected_type,
        } => {
            let name = names
                .get(*index)
                .cloned()
                .unwrap_or_else(|| "path".to_owned());
            (name, invalid(value, expected_type))
        }
        PathErrorKind::InvalidUtf8InPathParam { key } => (
            key.clone(),
            "is not valid UTF-8 once percent-decoded".to_owned(),
        ),
        _ => ("path".to_owned(), error.body_text()),
    }
}

/// The conversation in a route's path, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct ConversationParam {
    /// Id of the conversation, `CON-<uuid>`.
    conversation_id: String,
}

/// The member in a route's path, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct MemberParam {
    /// Id of the member, `MEM-<uuid>`.
    member_id: String,
}

/// The leg in a route's path, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct LegParam {
    /// Id of the leg, `LEG-<uuid>`.
    rtc_id: String,
}

/// The event in a route's path, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct EventParam {
    /// Id of the event in its conversation's log.
    event_id: u64,
}

/// The user in a route's path, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct UserParam {
    /// Id of the user, `USR-<uuid>`.
    user_id: String,
}

/// Deserializes a field that may be left out (`None`), set to `null` (`Some(None)`) or set to a
/// value, for updates where `null` removes a value. Use with `#[serde(default)]`.
pub(crate) fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Deserializes a field that may be left out (`None`) but, when present, must not be `null`,
/// for updates of fields that cannot be removed, so that `null` is an error rather than
/// "leave as it is". Use with `#[serde(default)]`.
pub(crate) fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
