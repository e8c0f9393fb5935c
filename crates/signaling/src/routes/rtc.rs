//! `/conversations/{id}/rtc`: legs, created by exchanging an SDP offer for an answer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use media::MediaError;
use room::{ConversationId, LegCloseReason, LegId, MemberId, RoomError};
use serde::Deserialize;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::{ApiPath, ConversationParam, LegParam};
use crate::access::{require_acting_as, require_reader};
use crate::auth::Caller;
use crate::convert::{media_leg, media_mute, room_kind};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::views::{LegsView, RtcAnswerView};

#[derive(Deserialize, ToSchema)]
pub(super) struct CreateLeg {
    /// The member the leg belongs to.
    from: String,
    body: CreateLegBody,
}

#[derive(Deserialize, ToSchema)]
struct CreateLegBody {
    offer: Offer,
    /// The publisher leg to receive. Without it the offer's tracks are published.
    subscribe: Option<SubscribeTarget>,
}

#[derive(Deserialize, ToSchema)]
struct Offer {
    /// `"offer"`, which the JavaScript SDK leaves out on video legs.
    #[serde(rename = "type")]
    kind: Option<String>,
    sdp: String,
}

#[derive(Deserialize, ToSchema)]
struct SubscribeTarget {
    rtc_id: String,
}

/// `POST /conversations/{conversation_id}/rtc`: answers an offer with a new upstream leg, or
/// with a downstream leg when `body.subscribe` names a publisher leg. The member must be
/// JOINED, and a user token may create legs only for its own member.
#[utoipa::path(
    post,
    path = "/conversations/{conversation_id}/rtc",
    tag = "rtc",
    params(ConversationParam),
    request_body = CreateLeg,
    responses((status = 201, description = "The leg was created; the answer is complete (ICE-lite, candidates included).", body = RtcAnswerView)),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
    ApiJson(request): ApiJson<CreateLeg>,
) -> Result<(StatusCode, Json<RtcAnswerView>), ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let member_id = MemberId::from(request.from);
    if let Some(kind) = &request.body.offer.kind
        && kind != "offer"
    {
        return Err(ApiError::invalid_parameter(
            "body.offer.type",
            format!("expected \"offer\", found {kind:?}"),
        ));
    }
    require_acting_as(&state, &caller, &conversation_id, &member_id)?;

    let _media_lock = state.lock_media(&conversation_id).await;
    let leg_id = LegId::generate();
    let offer = request.body.offer.sdp;
    let answer = match request.body.subscribe {
        None => publish(&state, &conversation_id, &member_id, &leg_id, offer).await?,
        Some(target) => {
            let publisher = LegId::from(target.rtc_id);
            subscribe(
                &state,
                &conversation_id,
                &member_id,
                &leg_id,
                &publisher,
                offer,
            )
            .await?
        }
    };

    let view = RtcAnswerView::new(leg_id.to_string(), answer);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn publish(
    state: &AppState,
    conversation_id: &ConversationId,
    member_id: &MemberId,
    leg_id: &LegId,
    offer: String,
) -> Result<String, ApiError> {
    // The media lock is held, so the mute flags cannot change before the leg is added.
    let muted = state.registry().check_publish(conversation_id, member_id)?;
    let answer = state
        .media()
        .publish(media_leg(leg_id), offer, media_mute(muted))
        .await?;

    let tracks: Vec<room::MediaKind> = answer.tracks.iter().copied().map(room_kind).collect();
    let added = state
        .registry()
        .add_publisher_leg(conversation_id, member_id, leg_id, &tracks);
    if let Err(error) = added {
        discard_media_leg(state, leg_id).await;
        return Err(error.into());
    }
    info!(
        conversation = %conversation_id,
        member = %member_id,
        leg = %leg_id,
        ?tracks,
        "publisher leg created"
    );
    Ok(answer.sdp)
}

async fn subscribe(
    state: &AppState,
    conversation_id: &ConversationId,
    member_id: &MemberId,
    leg_id: &LegId,
    publisher: &LegId,
    offer: String,
) -> Result<String, ApiError> {
    state
        .registry()
        .check_subscribe(conversation_id, member_id, publisher)?;
    let answer = state
        .media()
        .subscribe(media_leg(leg_id), media_leg(publisher), offer)
        .await?;

    let added = state
        .registry()
        .add_subscriber_leg(conversation_id, member_id, leg_id, publisher);
    if let Err(error) = added {
        discard_media_leg(state, leg_id).await;
        return Err(error.into());
    }
    info!(
        conversation = %conversation_id,
        member = %member_id,
        leg = %leg_id,
        publisher_leg = %publisher,
        "subscriber leg created"
    );
    Ok(answer)
}

/// Closes a leg the media worker answered but the room rejected, so that no half-created leg
/// stays behind.
async fn discard_media_leg(state: &AppState, leg_id: &LegId) {
    if let Err(error) = state.media().close_leg(media_leg(leg_id)).await {
        warn!(leg = %leg_id, %error, "closing a rejected leg in the media worker failed");
    }
}

/// `DELETE /conversations/{conversation_id}/rtc/{rtc_id}`: ends a leg, and for a publisher leg
/// the downstream legs receiving it. A user token may end only its own member's legs.
#[utoipa::path(
    delete,
    path = "/conversations/{conversation_id}/rtc/{rtc_id}",
    tag = "rtc",
    params(ConversationParam, LegParam),
    responses((status = 204, description = "The leg ended.")),
    security(("bearer" = []))
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((conversation_id, leg_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let leg_id = LegId::from(leg_id);
    let leg = state.registry().leg(&conversation_id, &leg_id)?;
    require_acting_as(&state, &caller, &conversation_id, &leg.member_id)?;

    let _media_lock = state.lock_media(&conversation_id).await;
    match state.media().close_leg(media_leg(&leg_id)).await {
        // The worker may have closed the leg on its own, with the event not handled yet.
        Ok(()) | Err(MediaError::LegNotFound(_)) => {}
        Err(error) => return Err(error.into()),
    }

    // The media event task may remove the leg first when it receives the worker's close
    // event. Either way the room records one `rtc:terminate`.
    match state
        .registry()
        .close_leg(&conversation_id, &leg_id, LegCloseReason::Requested)
    {
        Ok(_) | Err(RoomError::LegNotFound(_)) => {}
        Err(error) => return Err(error.into()),
    }
    info!(
        conversation = %conversation_id,
        member = %leg.member_id,
        leg = %leg_id,
        "leg ended"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /conversations/{conversation_id}/rtc`: the open legs, as publisher legs with the
/// downstream legs receiving each.
#[utoipa::path(
    get,
    path = "/conversations/{conversation_id}/rtc",
    tag = "rtc",
    params(ConversationParam),
    responses((status = 200, description = "The forwarding table of the conversation.", body = LegsView)),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
) -> Result<Json<LegsView>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    require_reader(&state, &caller, &conversation_id)?;

    let table = state.registry().forwarding_table(&conversation_id)?;
    Ok(Json(table.into()))
}
