//! The HTTP routes of a node.

mod conversations;
mod events;
mod health;
mod members;
mod rtc;
mod users;

use axum::extract::{
    DefaultBodyLimit, FromRequestParts, MatchedPath, OriginalUri, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{Method, Uri, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::state::AppState;
use crate::views::API_BASE;

/// Builds the node's HTTP routes: the REST API under `/v0.1`, every route of which needs a
/// bearer token, and the unauthenticated `/healthz` and `/readyz`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().body_limit;
    let conversation = "/conversations/{conversation_id}";

    let api = Router::new()
        .route("/users", post(users::create).get(users::list))
        .route("/users/{user_id}", get(users::show))
        .route("/conversations", post(conversations::create))
        .route(conversation, get(conversations::show))
        .route(
            &format!("{conversation}/members"),
            post(members::add).get(members::list),
        )
        .route(
            &format!("{conversation}/members/{{member_id}}"),
            get(members::show).delete(members::remove),
        )
        .route(
            &format!("{conversation}/rtc"),
            post(rtc::create).get(rtc::list),
        )
        .route(
            &format!("{conversation}/rtc/{{rtc_id}}"),
            delete(rtc::remove),
        )
        .route(
            &format!("{conversation}/events"),
            post(events::create).get(events::list),
        )
        .route(
            &format!("{conversation}/events/{{event_id}}"),
            get(events::show),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), authenticate));

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest(API_BASE, api)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .with_state(state)
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

    if state.is_draining() && request.method() == Method::POST {
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
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::invalid_parameter("path", rejection.body_text()))
    }
}
