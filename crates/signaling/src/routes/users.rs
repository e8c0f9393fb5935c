//! `/users`: the application's users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use room::{NewUser, UserId, UserUpdate};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use super::{ApiPath, UserParam, not_null, present_or_null};
use crate::access::{require_admin, require_self_or_admin};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::media_legs::close_media_legs;
use crate::paging::{ListQuery, cursor_links};
use crate::state::AppState;
use crate::views::{
    API_BASE, Created, UserConversationView, UserConversationsEmbedded, UserConversationsPage,
    UserView, UsersEmbedded, UsersPage, user_href,
};

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

/// `GET /users`: admin only, paged by creation.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    params(ListQuery),
    responses((status = 200, description = "A page of users.", body = UsersPage)),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UsersPage>, ApiError> {
    require_admin(&caller)?;
    let request = query.page_request()?;

    let page = state.registry().list_users(&request)?;
    let links = cursor_links(
        &format!("{API_BASE}/users"),
        &request,
        page.next.as_deref(),
        page.prev.as_deref(),
    );
    Ok(Json(UsersPage {
        page_size: request.page_size,
        embedded: UsersEmbedded {
            users: page.items.into_iter().map(UserView::from).collect(),
        },
        links,
    }))
}

/// `GET /users/{user_id}`: an admin, or the user itself.
#[utoipa::path(
    get,
    path = "/users/{user_id}",
    tag = "users",
    params(UserParam),
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateUser {
    /// A new unique name. Members created before the change keep the old name.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    name: Option<String>,
    /// A new display name, or `null` to remove it.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<String>)]
    display_name: Option<Option<String>>,
}

/// `PUT /users/{user_id}`: admin only. Fields left out keep their values.
#[utoipa::path(
    put,
    path = "/users/{user_id}",
    tag = "users",
    params(UserParam),
    request_body = UpdateUser,
    responses((status = 200, description = "The user as changed.", body = UserView)),
    security(("bearer" = []))
)]
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    require_admin(&caller)?;
    let user_id = UserId::from(user_id);

    let user = state.registry().update_user(
        &user_id,
        UserUpdate {
            name: request.name,
            display_name: request.display_name,
        },
    )?;
    info!(user = %user.id, name = %user.name, "user updated");
    Ok(Json(user.into()))
}

/// `DELETE /users/{user_id}`: admin only. The user leaves every conversation it is a member
/// of, its legs close, and its member records stay in those conversations as history.
#[utoipa::path(
    delete,
    path = "/users/{user_id}",
    tag = "users",
    params(UserParam),
    responses((status = 204, description = "The user was deleted.")),
    security(("bearer" = []))
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let user_id = UserId::from(user_id);

    let departures = state.registry().delete_user(&user_id)?;
    for departure in &departures {
        close_media_legs(state.media(), &departure.closed_legs).await;
    }
    info!(user = %user_id, left_conversations = departures.len(), "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users/{user_id}/conversations`: an admin, or the user itself. Each conversation comes
/// with the user's newest member of it, LEFT ones included.
#[utoipa::path(
    get,
    path = "/users/{user_id}/conversations",
    tag = "users",
    params(UserParam, ListQuery),
    responses((
        status = 200,
        description = "A page of the user's conversations.",
        body = UserConversationsPage
    )),
    security(("bearer" = []))
)]
pub(super) async fn conversations(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserConversationsPage>, ApiError> {
    let user_id = UserId::from(user_id);
    let user = state.registry().user(&user_id)?;
    require_self_or_admin(&state, &caller, &user)?;
    let request = query.page_request()?;

    let page = state
        .registry()
        .list_user_conversations(&user.id, &request)?;
    let links = cursor_links(
        &format!("{}/conversations", user_href(user.id.as_str())),
        &request,
        page.next.as_deref(),
        page.prev.as_deref(),
    );
    Ok(Json(UserConversationsPage {
        page_size: request.page_size,
        embedded: UserConversationsEmbedded {
            conversations: page
                .items
                .into_iter()
                .map(UserConversationView::from)
                .collect(),
        },
        links,
    }))
}
