use crate::{SubscriptionId, TrackId};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("track {0} not found")]
    UnknownTrack(TrackId),
    #[error("track {0} already exists; remove it before adding it again")]
    DuplicateTrack(TrackId),
    #[error("subscription {0} already exists; unsubscribe it before subscribing again")]
    DuplicateSubscription(SubscriptionId),
    #[error("subscription {0} not found")]
    UnknownSubscription(SubscriptionId),
    #[error(
        "invalid mid extension for subscription {subscription}: id {id} with a {length}-byte \
         value, but the id must be 1 to 255 and the value 1 to 255 bytes"
    )]
    InvalidMid {
        subscription: SubscriptionId,
        id: u8,
        length: usize,
    },
}
