//! `/conversations/{id}/members`: users' memberships of a conversation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use room::{Channel, ConversationId, MemberAction, MemberId, User, UserId};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use super::{ApiPath, ConversationParam, MemberParam};
use crate::access::{require_acting_as, require_may_add_member, require_reader};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::media_legs::close_media_legs;
use crate::paging::{ListQuery, cursor_links};
use crate::state::AppState;
use crate::views::{MemberView, MembersEmbedded, MembersPage, conversation_href};

#[derive(Deserialize, ToSchema)]
pub(super) struct AddMember {
    /// The user to add, by id; `user_name` may name it instead.
    user_id: Option<String>,
    user_name: Option<String>,
    /// `join` adds a JOINED member; `invite` an INVITED one.
    #[schema(value_type = String, pattern = "^(join|invite)$")]
    action: MemberAction,
    /// Parsed only to reject other channel types: `{"type": "app"}` is the only one, so the
    /// field may be left out.
    #[serde(default, rename = "channel")]
    #[schema(value_type = Option<Channel>)]
    _channel: Channel,
}

/// `POST /conversations/{conversation_id}/members`: joins or invites a user. A user token may
/// join only its own user, and may invite others only while it is a JOINED member.
#[utoipa::path(
    post,
    path = "/conversations/{conversation_id}/members",
    tag = "members",
    params(ConversationParam),
    request_body = AddMember,
    responses(
        (status = 201, description = "The member was created.", body = MemberView),
        (
            status = 200,
            description = "The user already had this member: an invitation it accepted, or a \
                           JOINED member whose old legs were closed because it joined again.",
            body = MemberView
        )
    ),
    security(("bearer" = []))
)]
pub(super) async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
    ApiJson(request): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    state.registry().check_conversation(&conversation_id)?;
    let user = resolve_user(&state, &request)?;

    let invited_by =
        require_may_add_member(&state, &caller, &conversation_id, &user, request.action)?;
    let _media_lock = state.lock_media(&conversation_id).await;
    let added =
        state
            .registry()
            .add_member(&conversation_id, &user.id, request.action, invited_by)?;
    close_media_legs(state.media(), &added.closed_legs).await;
    let member = added.member;
    info!(
        conversation = %conversation_id,
        member = %member.id,
        user = %member.user_id,
        state = %member.state,
        created = added.created,
        closed_legs = added.closed_legs.len(),
        "member added"
    );
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(member.into())))
}

/// Finds the user a request names by `user_id`, `user_name` or both (which must agree).
fn resolve_user(state: &AppState, request: &AddMember) -> Result<User, ApiError> {
    let registry = state.registry();
    match (&request.user_id, &request.user_name) {
        (None, None) => Err(ApiError::invalid_parameter(
            "user_id",
            "either user_id or user_name is required",
        )),
        (Some(id), None) => Ok(registry.user(&UserId::from(id.as_str()))?),
        (None, Some(name)) => Ok(registry.user_by_name(name)?),
        (Some(id), Some(name)) => {
            let user = registry.user(&UserId::from(id.as_str()))?;
            if user.name != *name {
                return Err(ApiError::invalid_parameter(
                    "user_name",
                    format!("user {id} is named {:?}, not {name:?}", user.name),
                ));
            }
            Ok(user)
        }
    }
}

/// `GET /conversations/{conversation_id}/members`: paged by creation, LEFT members included.
#[utoipa::path(
    get,
    path = "/conversations/{conversation_id}/members",
    tag = "members",
    params(ConversationParam, ListQuery),
    responses((status = 200, description = "A page of members.", body = MembersPage)),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<MembersPage>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let request = query.page_request()?;
    require_reader(&state, &caller, &conversation_id)?;

    let page = state.registry().list_members(&conversation_id, &request)?;
    let links = cursor_links(
        &format!("{}/members", conversation_href(conversation_id.as_str())),
        &request,
        page.next.as_deref(),
        page.prev.as_deref(),
    );
    Ok(Json(MembersPage {
        page_size: request.page_size,
        embedded: MembersEmbedded {
            members: page.items.into_iter().map(MemberView::from).collect(),
        },
        links,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateMember {
    /// `join`: accepts an invitation. Joining a JOINED member returns it and closes the legs
    /// it still has, because a member that joins again is a new client.
    #[schema(value_type = String, pattern = "^join$")]
    action: JoinAction,
}

/// The only action a member update takes.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum JoinAction {
    Join,
}

/// `PUT /conversations/{conversation_id}/members/{member_id}`: `{"action": "join"}` accepts an
/// invitation. A user token may update only its own member.
#[utoipa::path(
    put,
    path = "/conversations/{conversation_id}/members/{member_id}",
    tag = "members",
    params(ConversationParam, MemberParam),
    request_body = UpdateMember,
    responses((status = 200, description = "The member, now JOINED.", body = MemberView)),
    security(("bearer" = []))
)]
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((conversation_id, member_id)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<UpdateMember>,
) -> Result<Json<MemberView>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let member_id = MemberId::from(member_id);
    let JoinAction::Join = request.action;
    require_acting_as(&state, &caller, &conversation_id, &member_id)?;

    let _media_lock = state.lock_media(&conversation_id).await;
    let joined = state.registry().join_member(&conversation_id, &member_id)?;
    close_media_legs(state.media(), &joined.closed_legs).await;
    info!(
        conversation = %conversation_id,
        member = %member_id,
        closed_legs = joined.closed_legs.len(),
        "member joined"
    );
    Ok(Json(joined.member.into()))
}

/// `GET /conversations/{conversation_id}/members/{member_id}`.
#[utoipa::path(
    get,
    path = "/conversations/{conversation_id}/members/{member_id}",
    tag = "members",
    params(ConversationParam, MemberParam),
    responses((status = 200, description = "The member.", body = MemberView)),
    security(("bearer" = []))
)]
pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((conversation_id, member_id)): ApiPath<(String, String)>,
) -> Result<Json<MemberView>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    require_reader(&state, &caller, &conversation_id)?;

    let member = state
        .registry()
        .member(&conversation_id, &MemberId::from(member_id))?;
    Ok(Json(member.into()))
}

/// `DELETE /conversations/{conversation_id}/members/{member_id}`: the member leaves, and its
/// legs close. A user token may remove only its own member.
#[utoipa::path(
    delete,
    path = "/conversations/{conversation_id}/members/{member_id}",
    tag = "members",
    params(ConversationParam, MemberParam),
    responses((status = 200, description = "The member, now LEFT.", body = MemberView)),
    security(("bearer" = []))
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((conversation_id, member_id)): ApiPath<(String, String)>,
) -> Result<Json<MemberView>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let member_id = MemberId::from(member_id);
    require_acting_as(&state, &caller, &conversation_id, &member_id)?;

    let _media_lock = state.lock_media(&conversation_id).await;
    let departure = state
        .registry()
        .remove_member(&conversation_id, &member_id)?;
    close_media_legs(state.media(), &departure.closed_legs).await;
    info!(
        conversation = %conversation_id,
        member = %member_id,
        closed_legs = departure.closed_legs.len(),
        "member left"
    );
    Ok(Json(departure.member.into()))
}
