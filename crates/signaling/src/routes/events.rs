//! `/conversations/{id}/events`: the conversation's event log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use media::MediaError;
use room::{
    ConversationId, EventQuery, EventType, MAX_PAGE_SIZE, MemberId, MuteChange, NewEvent, Order,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{debug, info};
use utoipa::{IntoParams, ToSchema};

use super::{ApiPath, ConversationParam, EventParam};
use crate::access::{require_may_post_event, require_reader};
use crate::auth::Caller;
use crate::convert::{media_kind, media_leg};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::paging::{Link, PageLinks, check_page_size, page_href};
use crate::state::AppState;
use crate::views::{
    EventView, EventsEmbedded, EventsPage, PostedEventView, conversation_href, event_href,
};

#[derive(Deserialize, ToSchema)]
pub(super) struct CreateEvent {
    /// `custom:<name>`, or a mute type such as `audio:mute:on`.
    #[serde(rename = "type")]
    kind: String,
    /// The JOINED member the event is from.
    from: String,
    /// The target member; a mute event without one mutes its sender.
    to: Option<String>,
    /// Up to 4 KiB of compact JSON.
    #[serde(default = "empty_object")]
    body: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// `POST /conversations/{conversation_id}/events`: appends a `custom:<name>` or mute event from
/// a JOINED member. A mute event also mutes or unmutes its target's publisher legs in the
/// media worker. A user token may post only from its own member.
#[utoipa::path(
    post,
    path = "/conversations/{conversation_id}/events",
    tag = "events",
    params(ConversationParam),
    request_body = CreateEvent,
    responses((status = 201, description = "The event was appended to the log.", body = PostedEventView)),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
    ApiJson(request): ApiJson<CreateEvent>,
) -> Result<(StatusCode, Json<PostedEventView>), ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let kind: EventType = request.kind.parse()?;
    let from = MemberId::from(request.from);
    let to = request.to.map(MemberId::from);
    require_may_post_event(&state, &caller, &conversation_id, &kind, &from, to.as_ref())?;

    let _media_lock = state.lock_media(&conversation_id).await;
    let posted = state.registry().post_event(
        &conversation_id,
        NewEvent {
            kind,
            from,
            to,
            body: request.body,
        },
    )?;
    if let Some(change) = &posted.mute {
        apply_mute(&state, &conversation_id, change).await?;
    }

    let event = posted.event;
    debug!(conversation = %conversation_id, event = event.id, kind = %event.kind, "event posted");
    let view = PostedEventView {
        id: event.id,
        timestamp: event.timestamp,
        href: event_href(conversation_id.as_str(), event.id),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

async fn apply_mute(
    state: &AppState,
    conversation_id: &ConversationId,
    change: &MuteChange,
) -> Result<(), ApiError> {
    for leg in &change.publisher_legs {
        let result = state
            .media()
            .set_muted(media_leg(leg), media_kind(change.kind), change.muted)
            .await;
        match result {
            Ok(()) => {}
            // The leg publishes no track of this kind, or the worker closed it and its event
            // is not handled yet: there is nothing to mute.
            Err(MediaError::NoSuchTrack(_) | MediaError::LegNotFound(_)) => {
                debug!(leg = %leg, kind = %change.kind, "no track to mute")
            }
            Err(error) => return Err(error.into()),
        }
    }
    info!(
        conversation = %conversation_id,
        member = %change.member_id,
        kind = %change.kind,
        muted = change.muted,
        legs = change.publisher_legs.len(),
        "mute changed"
    );
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListEvents {
    /// Smallest event id to include.
    start_id: Option<u64>,
    /// Largest event id to include.
    end_id: Option<u64>,
    /// Maximum number of events, 1 to 100 (100 when absent).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<usize>,
    /// `asc` (oldest first, the default) or `desc`.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    order: Option<Order>,
}

/// `GET /conversations/{conversation_id}/events`: a window of the log by id range, oldest
/// first unless `order=desc`, with links to the neighbouring windows.
#[utoipa::path(
    get,
    path = "/conversations/{conversation_id}/events",
    tag = "events",
    params(ConversationParam, ListEvents),
    responses((status = 200, description = "A window of the log.", body = EventsPage)),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListEvents>,
) -> Result<Json<EventsPage>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    let page_size = check_page_size(query.page_size, MAX_PAGE_SIZE)?;
    if let (Some(start), Some(end)) = (query.start_id, query.end_id)
        && start > end
    {
        return Err(ApiError::invalid_parameter(
            "end_id",
            format!("must not be less than start_id ({start}), found {end}"),
        ));
    }
    require_reader(&state, &caller, &conversation_id)?;

    let window = EventQuery {
        start_id: query.start_id,
        end_id: query.end_id,
        page_size,
        order: query.order.unwrap_or_default(),
    };
    let page = state.registry().list_events(&conversation_id, &window)?;
    let path = format!("{}/events", conversation_href(conversation_id.as_str()));
    let links = PageLinks {
        this: Link {
            href: window_href(&path, &window),
        },
        next: page.next.map(|next| Link {
            href: window_href(&path, &next),
        }),
        prev: page.prev.map(|prev| Link {
            href: window_href(&path, &prev),
        }),
    };
    let events = page
        .events
        .into_iter()
        .map(|event| EventView::new(conversation_id.as_str(), event))
        .collect();
    Ok(Json(EventsPage {
        page_size,
        embedded: EventsEmbedded { events },
        links,
    }))
}

/// Builds the href of a window of the log from its query.
fn window_href(path: &str, window: &EventQuery) -> String {
    let mut parameters = Vec::new();
    if let Some(start_id) = window.start_id {
        parameters.push(("start_id", start_id.to_string()));
    }
    if let Some(end_id) = window.end_id {
        parameters.push(("end_id", end_id.to_string()));
    }
    parameters.push(("page_size", window.page_size.to_string()));
    parameters.push(("order", window.order.as_str().to_owned()));
    page_href(path, &parameters)
}

/// `GET /conversations/{conversation_id}/events/{event_id}`: one event of the log.
#[utoipa::path(
    get,
    path = "/conversations/{conversation_id}/events/{event_id}",
    tag = "events",
    params(ConversationParam, EventParam),
    responses((status = 200, description = "The event.", body = EventView)),
    security(("bearer" = []))
)]
pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((conversation_id, event_id)): ApiPath<(String, u64)>,
) -> Result<Json<EventView>, ApiError> {
    let conversation_id = ConversationId::from(conversation_id);
    require_reader(&state, &caller, &conversation_id)?;

    let window = EventQuery {
        start_id: Some(event_id),
        end_id: Some(event_id),
        page_size: 1,
        order: Order::Asc,
    };
    let event = state
        .registry()
        .events(&conversation_id, &window)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::EventNotFound {
            conversation_id: conversation_id.to_string(),
            event_id,
        })?;
    Ok(Json(EventView::new(conversation_id.as_str(), event)))
}
