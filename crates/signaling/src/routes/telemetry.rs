//! The Prometheus scrape, and the layer that gives every request a span and a latency sample.

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{NodeSnapshot, UNMATCHED_ROUTE};
use tracing::Instrument;
use tracing::field::Empty;

use crate::state::AppState;

/// `GET /metrics`: every metric in the Prometheus text format, without auth. The series hold
/// counts only, no ids or addresses.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // A stopped worker leaves its series out, and the scrape still reports the rest.
    let media = state.media().stats().await.ok();
    let snapshot = NodeSnapshot {
        census: state.registry().census(),
        media,
    };
    match state.metrics().render(snapshot) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "failed to encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Runs a request inside a span with its method, route template and the ids in its path, and
/// records its latency by method, route template and status.
pub(super) async fn observe_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The route template, never the path itself, so ids in paths do not become series.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        conversation = Empty,
        member = Empty,
        leg = Empty,
        user = Empty,
    );
    let (mut parts, body) = request.into_parts();
    if let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await {
        for (name, value) in &params {
            let field = match name {
                "conversation_id" => "conversation",
                "member_id" => "member",
                "rtc_id" => "leg",
                "user_id" => "user",
                _ => continue,
            };
            span.record(field, tracing::field::display(value));
        }
    }

    let response = next
        .run(Request::from_parts(parts, body))
        .instrument(span)
        .await;
    state.metrics().observe_http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
