//! Closing the media worker's side of legs that the room already removed.

use media::{MediaError, MediaHandle};
use room::Leg;
use tracing::warn;

use crate::convert::media_leg;

/// Closes in the media worker every leg of `legs`, which the room has already removed: when a
/// member leaves or joins again, a user or conversation is deleted, or a conversation expires. The room's change is kept whatever the worker returns, so a
/// failure is logged and not returned.
pub async fn close_media_legs(media: &MediaHandle, legs: &[Leg]) {
    for leg in legs {
        match media.close_leg(media_leg(&leg.id)).await {
            // A downstream leg closes with its publisher leg, so it may be gone already.
            Ok(()) | Err(MediaError::LegNotFound(_)) => {}
            Err(error) => warn!(
                conversation = %leg.conversation_id,
                member = %leg.member_id,
                leg = %leg.id,
                %error,
                "closing a leg in the media worker failed"
            ),
        }
    }
}
