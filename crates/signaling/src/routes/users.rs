//! `/users`: the application's users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use room::{NewUser, UserId};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use super::ApiPath;
use crate::access::{require_admin, require_self_or_admin};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::views::{Created, UserView, user_href};

#[derive(Deserialize, ToSchema)]
pub(super) struct CreateUser {
    /// Unique name of the user, 1 to 255 characters.
    name: String,
    display_name: Option<String>,
}

/// `POST /users`: admin only.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = CreateUser,
    responses((status = 201, description = "The user was created.", body = Created)),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    require_admin(&caller)?;

    let user = state.registry().create_user(NewUser {
        name: request.name,
        display_name: request.display_name,
    })?;
    info!(user = %user.id, name = %user.name, "user created");

    let created = Created {
        href: user_href(user.id.as_str()),
        id: user.id.to_string(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /users`: admin only.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    responses((status = 200, description = "Every user.", body = Vec<UserView>)),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    require_admin(&caller)?;
    let users = state.registry().users();
    Ok(Json(users.into_iter().map(UserView::from).collect()))
}

/// `GET /users/{user_id}`: an admin, or the user itself.
#[utoipa::path(
    get,
    path = "/users/{user_id}",
    tag = "users",
    params(("user_id" = String, Path, description = "Id of the user, `USR-<uuid>`.")),
    responses((status = 200, description = "The user.", body = UserView)),
    security(("bearer" = []))
)]
pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    let user_id = UserId::from(user_id);
    let user = state.registry().user(&user_id)?;
    require_self_or_admin(&state, &caller, &user)?;
    Ok(Json(user.into()))
}
