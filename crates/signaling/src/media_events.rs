//! The task that applies the media worker's events to the room.

use media::MediaEvent;
use room::{Registry, RoomError};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info, warn};

use crate::convert::{close_reason, room_kind, room_leg};

/// Applies media events to the registry until the worker drops its sender, which it does when
/// it stops.
///
/// A closed leg is removed from its conversation with `rtc:terminate` (and `member:media` for a
/// publisher leg). Legs that a request already removed are skipped, because the worker reports
/// every close, including those the node asked for.
pub async fn process_media_events(registry: &Registry, mut events: UnboundedReceiver<MediaEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            MediaEvent::LegConnected { leg } => {
                match registry.mark_leg_connected(&room_leg(&leg)) {
                    Ok(leg) => info!(
                        conversation = %leg.conversation_id,
                        member = %leg.member_id,
                        leg = %leg.id,
                        "leg connected"
                    ),
                    Err(error) => debug!(%leg, %error, "connected leg is not in the room"),
                }
            }
            MediaEvent::LegClosed { leg, reason } => {
                let reason = close_reason(reason);
                match registry.close_leg_anywhere(&room_leg(&leg), reason) {
                    Ok(removed) => {
                        for leg in removed {
                            info!(
                                conversation = %leg.conversation_id,
                                member = %leg.member_id,
                                leg = %leg.id,
                                reason = reason.as_str(),
                                "leg closed"
                            );
                        }
                    }
                    Err(RoomError::LegNotFound(_)) => {
                        debug!(%leg, "closed leg was already removed from the room");
                    }
                    Err(error) => warn!(%leg, %error, "failed to remove a closed leg"),
                }
            }
            MediaEvent::TrackStarted { leg, kind } => match registry.find_leg(&room_leg(&leg)) {
                Ok(leg) => info!(
                    conversation = %leg.conversation_id,
                    member = %leg.member_id,
                    leg = %leg.id,
                    kind = %room_kind(kind),
                    "track started"
                ),
                Err(error) => debug!(%leg, %error, "started track's leg is not in the room"),
            },
        }
    }
    debug!("media event channel closed");
}
