//! `/conversations`: the shared spaces.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use room::{ConversationId, ConversationProperties, ConversationUpdate, NewConversation};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use super::{ApiPath, ConversationParam, not_null, present_or_null};
use crate::access::{caller_user, require_admin, require_reader};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::media_legs::close_media_legs;
use crate::paging::{ListQuery, cursor_links};
use crate::state::AppState;
use crate::views::{
    API_BASE, ConversationSummaryView, ConversationView, ConversationsEmbedded, ConversationsPage,
    Created, conversation_href,
};

#[derive(Deserialize, ToSchema)]
pub(super) struct CreateConversation {
    /// Unique name; the conversation's id when absent.
    name: Option<String>,
    display_name: Option<String>,
    properties: Option<Properties>,
}

#[derive(Deserialize, ToSchema)]
struct Properties {
    /// Whether this is a video conversation.
    #[serde(default)]
    video: bool,
    /// Seconds an empty conversation is kept before it is deleted.
    ttl: Option<u64>,
}

/// `POST /conversations`: an admin, or any existing user.
#[utoipa::path(
    post,
    path = "/conversations",
    tag = "conversations",
    request_body = CreateConversation,
    responses((status = 201, description = "The conversation was created.", body = Created)),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    caller_user(&state, &caller)?;

    let properties = request
        .properties
        .map(|properties| ConversationProperties {
            video: properties.video,
            ttl: properties.ttl,
        })
        .unwrap_or_default();
    let conversation = state.registry().create_conversation(NewConversation {
        name: request.name,
        display_name: request.display_name,
        properties,
    })?;
    info!(
        conversation = %conversation.id,
        name = %conversation.name,
        video = properties.video,
        "conversation created"
    );

    let created = Created {
        href: conversation_href(conversation.id.as_str()),
        id: conversation.id.to_string(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /conversations/{conversation_id}`: with its members and `sequence_number`.
#[utoipa::path(
    get,
    path = "/conversations/{conversation_id}",
    tag = "conversations",
    params(ConversationParam),
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("bearer" = []))
)]
pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
) -> Result<Json<ConversationView>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    require_reader(&state, &caller, &conversation_id)?;

    let conversation = state.registry().conversation(&conversation_id)?;
    Ok(Json(conversation.into()))
}

/// `GET /conversations`: paged by creation. An admin token lists every conversation; a user
/// token lists the conversations its user belongs to, LEFT memberships included.
#[utoipa::path(
    get,
    path = "/conversations",
    tag = "conversations",
    params(ListQuery),
    responses((status = 200, description = "A page of conversations.", body = ConversationsPage)),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ConversationsPage>, ApiError> {
    let request = query.page_request()?;
    let registry = state.registry();

    let (conversations, next, prev) = match caller_user(&state, &caller)? {
        None => {
            let page = registry.list_conversations(&request)?;
            let items = page.items.into_iter().map(ConversationSummaryView::from);
            (items.collect(), page.next, page.prev)
        }
        Some(user) => {
            let page = registry.list_user_conversations(&user.id, &request)?;
            let items = page
                .items
                .into_iter()
                .map(|entry| ConversationSummaryView::from(entry.conversation));
            (items.collect(), page.next, page.prev)
        }
    };
    let links = cursor_links(
        &format!("{API_BASE}/conversations"),
        &request,
        next.as_deref(),
        prev.as_deref(),
    );
    Ok(Json(ConversationsPage {
        page_size: request.page_size,
        embedded: ConversationsEmbedded { conversations },
        links,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateConversation {
    /// A new unique name.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    name: Option<String>,
    /// A new display name, or `null` to remove it.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<String>)]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = UpdateProperties)]
    properties: Option<UpdateProperties>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateProperties {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool)]
    video: Option<bool>,
    /// Seconds an empty conversation is kept, or `null` to keep it while empty.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<u64>)]
    ttl: Option<Option<u64>>,
}

/// `PUT /conversations/{conversation_id}`: admin only. Fields left out keep their values, and a
/// change appends `conversation:updated`.
#[utoipa::path(
    put,
    path = "/conversations/{conversation_id}",
    tag = "conversations",
    params(ConversationParam),
    request_body = UpdateConversation,
    responses((status = 200, description = "The conversation as changed.", body = ConversationView)),
    security(("bearer" = []))
)]
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateConversation>,
) -> Result<Json<ConversationView>, ApiError> {
    require_admin(&caller)?;
    let conversation_id = ConversationId::from(conversation_id);

    let (video, ttl) = match request.properties {
        Some(properties) => (properties.video, properties.ttl),
        None => (None, None),
    };
    let conversation = state.registry().update_conversation(
        &conversation_id,
        ConversationUpdate {
            name: request.name,
            display_name: request.display_name,
            video,
            ttl,
        },
    )?;
    info!(conversation = %conversation.id, name = %conversation.name, "conversation updated");
    Ok(Json(conversation.into()))
}

/// `DELETE /conversations/{conversation_id}`: admin only. Every leg closes, the log gets
/// `conversation:deleted`, and later requests on the id get 410.
#[utoipa::path(
    delete,
    path = "/conversations/{conversation_id}",
    tag = "conversations",
    params(ConversationParam),
    responses((status = 204, description = "The conversation was deleted.")),
    security(("bearer" = []))
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let conversation_id = ConversationId::from(conversation_id);

    let _media_lock = state.lock_media(&conversation_id).await;
    let deleted = state.registry().delete_conversation(&conversation_id)?;
    close_media_legs(state.media(), &deleted.closed_legs).await;
    info!(
        conversation = %conversation_id,
        closed_legs = deleted.closed_legs.len(),
        "conversation deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}
