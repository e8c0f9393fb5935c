//! The node's offers of downstream legs to realtime sessions.
//!
//! For every upstream leg a session opened with direction `both` and every other member's
//! publisher leg in the same conversation, the node creates a downstream leg, sends its offer
//! as `rtc:offer` and waits for `rtc:answer`. Reconciling a conversation compares what the
//! forwarding table contains with what the sessions were offered: it makes the missing offers
//! and closes the downstream legs of upstream legs that ended. It runs under the
//! conversation's media lock, so two runs never offer the same pair.

use std::sync::Arc;

use media::MediaError;
use room::{ConversationId, LegCloseReason, LegId, MemberId, MuteState, RoomError};
use serde_json::json;
use tracing::{info, warn};

use super::Realtime;
use super::session::Session;
use crate::convert::media_leg;
use crate::media_legs::close_media_legs;
use crate::state::AppState;

/// A downstream leg to offer: the session and its upstream leg, and the publisher leg.
struct PlannedOffer {
    session: Arc<Session>,
    own_leg: LegId,
    subscriber: MemberId,
    publisher_leg: LegId,
    publisher: MemberId,
    muted: MuteState,
}

/// Makes the offers the conversation lacks and closes the downstream legs whose upstream leg
/// ended.
pub(crate) async fn reconcile(realtime: &Realtime, conversation_id: &ConversationId) {
    let state = &realtime.state;
    let _media_lock = state.lock_media(conversation_id).await;
    let table = match state.registry().forwarding_table(conversation_id) {
        Ok(table) => table,
        Err(_) => {
            forget_conversation(realtime, conversation_id);
            return;
        }
    };
    let open_legs: std::collections::HashSet<&LegId> = table
        .publishers
        .iter()
        .map(|publisher| &publisher.leg_id)
        .collect();

    let mut planned = Vec::new();
    let mut orphans = Vec::new();
    for session in realtime.sessions.all() {
        let mut media = session.media();
        let ended: Vec<LegId> = media
            .legs
            .iter()
            .filter(|(leg_id, own)| {
                own.conversation_id == *conversation_id && !open_legs.contains(leg_id)
            })
            .map(|(leg_id, _)| leg_id.clone())
            .collect();
        for leg_id in ended {
            if let Some(own) = media.legs.remove(&leg_id) {
                orphans.extend(own.offers.into_values());
            }
        }
        for (leg_id, own) in &media.legs {
            if own.conversation_id != *conversation_id || !own.receives {
                continue;
            }
            for publisher in &table.publishers {
                if publisher.member_id == own.member_id
                    || own.offers.contains_key(&publisher.leg_id)
                {
                    continue;
                }
                planned.push(PlannedOffer {
                    session: Arc::clone(&session),
                    own_leg: leg_id.clone(),
                    subscriber: own.member_id.clone(),
                    publisher_leg: publisher.leg_id.clone(),
                    publisher: publisher.member_id.clone(),
                    muted: publisher.muted,
                });
            }
        }
    }

    for leg_id in orphans {
        close_leg_locked(state, conversation_id, &leg_id, LegCloseReason::Requested).await;
    }
    for offer in planned {
        make_offer(state, conversation_id, offer).await;
    }
}

async fn make_offer(state: &AppState, conversation_id: &ConversationId, offer: PlannedOffer) {
    let registry = state.registry();
    if let Err(error) =
        registry.check_subscribe(conversation_id, &offer.subscriber, &offer.publisher_leg)
    {
        // The subscriber is not JOINED, for one: the pair is tried again on the next change.
        info!(
            conversation = %conversation_id,
            member = %offer.subscriber,
            publisher_leg = %offer.publisher_leg,
            %error,
            "no downstream leg offered"
        );
        return;
    }
    let leg_id = LegId::generate();
    let sdp = match state
        .media()
        .offer_subscription(media_leg(&leg_id), media_leg(&offer.publisher_leg))
        .await
    {
        Ok(sdp) => sdp,
        Err(error) => {
            warn!(
                conversation = %conversation_id,
                member = %offer.subscriber,
                publisher_leg = %offer.publisher_leg,
                %error,
                "the media worker made no offer for a downstream leg"
            );
            record_offer(&offer, leg_id);
            return;
        }
    };
    if let Err(error) = registry.add_subscriber_leg(
        conversation_id,
        &offer.subscriber,
        &leg_id,
        &offer.publisher_leg,
    ) {
        warn!(conversation = %conversation_id, leg = %leg_id, %error, "the room rejected an offered leg");
        discard_media_leg(state, &leg_id).await;
        return;
    }
    if !record_offer(&offer, leg_id.clone()) {
        // The upstream leg ended while the offer was made.
        close_leg_locked(state, conversation_id, &leg_id, LegCloseReason::Requested).await;
        return;
    }
    info!(
        conversation = %conversation_id,
        member = %offer.subscriber,
        leg = %leg_id,
        publisher_leg = %offer.publisher_leg,
        "downstream leg offered"
    );
    offer.session.emit(
        "rtc:offer",
        &json!({
            "cid": conversation_id,
            "body": {
                "leg_id": offer.own_leg,
                "member_id": offer.publisher,
                "member_leg_id": offer.publisher_leg,
                "name": "video",
                "sdp": sdp,
                "media_settings": {
                    "audio": { "muted": offer.muted.audio },
                    "video": { "muted": offer.muted.video },
                },
            },
        }),
    );
}

/// Records that the pair was offered. Returns false when the upstream leg is gone.
fn record_offer(offer: &PlannedOffer, downstream: LegId) -> bool {
    let mut media = offer.session.media();
    match media.legs.get_mut(&offer.own_leg) {
        Some(own) => {
            own.offers.insert(offer.publisher_leg.clone(), downstream);
            true
        }
        None => false,
    }
}

/// Drops the sessions' records of a conversation that no longer exists.
fn forget_conversation(realtime: &Realtime, conversation_id: &ConversationId) {
    for session in realtime.sessions.all() {
        session
            .media()
            .legs
            .retain(|_, own| own.conversation_id != *conversation_id);
    }
}

/// Closes a leg in the media worker and the room, under the conversation's media lock.
pub(crate) async fn close_leg(
    state: &AppState,
    conversation_id: &ConversationId,
    leg_id: &LegId,
    reason: LegCloseReason,
) {
    let _media_lock = state.lock_media(conversation_id).await;
    close_leg_locked(state, conversation_id, leg_id, reason).await;
}

async fn close_leg_locked(
    state: &AppState,
    conversation_id: &ConversationId,
    leg_id: &LegId,
    reason: LegCloseReason,
) {
    discard_media_leg(state, leg_id).await;
    match state.registry().close_leg(conversation_id, leg_id, reason) {
        Ok(_) | Err(RoomError::LegNotFound(_) | RoomError::ConversationNotFound(_)) => {}
        Err(error) => {
            warn!(conversation = %conversation_id, leg = %leg_id, %error, "closing a leg in the room failed")
        }
    }
}

async fn discard_media_leg(state: &AppState, leg_id: &LegId) {
    match state.media().close_leg(media_leg(leg_id)).await {
        Ok(()) | Err(MediaError::LegNotFound(_)) => {}
        Err(error) => warn!(leg = %leg_id, %error, "closing a leg in the media worker failed"),
    }
}

/// Makes a member leave, as the node, when the session that joined it ended.
pub(crate) async fn leave(
    state: &AppState,
    conversation_id: &ConversationId,
    member_id: &MemberId,
) {
    let _media_lock = state.lock_media(conversation_id).await;
    // An error means the member left already, or the conversation is gone.
    if let Ok(departure) = state.registry().remove_member(conversation_id, member_id) {
        close_media_legs(state.media(), &departure.closed_legs).await;
        info!(
            conversation = %conversation_id,
            member = %member_id,
            closed_legs = departure.closed_legs.len(),
            "member left with its session"
        );
    }
}
