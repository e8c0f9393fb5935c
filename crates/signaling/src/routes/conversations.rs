//! `/conversations`: the shared spaces.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use room::{ConversationId, ConversationProperties, NewConversation};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use super::{ApiPath, ConversationParam};
use crate::access::{caller_user, require_reader};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::views::{ConversationView, Created, conversation_href};

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
