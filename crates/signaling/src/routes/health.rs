//! Liveness and readiness probes, without auth.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: 200 while the process serves HTTP.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the node accepts new work. 503 once it drains for shutdown, and
/// while its media worker is not running, because no offer could then get an answer.
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let unavailable = |status| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        )
    };
    if state.is_draining() {
        unavailable("draining")
    } else if !state.media().is_running() {
        unavailable("media_stopped")
    } else {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    }
}
