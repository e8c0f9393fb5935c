//! The forwarding table: which publisher legs exist and which legs receive them.

use serde::Serialize;

use crate::conversation::ConversationRecord;
use crate::id::{ConversationId, LegId, MemberId};
use crate::leg::{LegState, MediaKind, MuteState};
use crate::member::Member;

/// Routes of one conversation, derived from its legs and its members' mute state. The media
/// worker keeps the same routes, and this view is what the room expects them to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwardingTable {
    pub conversation_id: ConversationId,
    /// Publisher legs in the order they were created.
    pub publishers: Vec<PublisherRoutes>,
}

/// A publisher leg and the downstream legs that receive its tracks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublisherRoutes {
    pub leg_id: LegId,
    pub member_id: MemberId,
    pub tracks: Vec<MediaKind>,
    pub state: LegState,
    /// The publishing member's mute flags, which apply to every leg it publishes.
    pub muted: MuteState,
    pub subscribers: Vec<SubscriberRoute>,
}

/// A downstream leg receiving a publisher leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriberRoute {
    pub leg_id: LegId,
    pub member_id: MemberId,
    pub state: LegState,
}

impl ForwardingTable {
    pub(crate) fn derive(record: &ConversationRecord) -> Self {
        let publishers = record
            .legs
            .iter()
            .filter(|leg| leg.is_publisher())
            .map(|publisher| {
                let muted = record
                    .member(&publisher.member_id)
                    .map(Member::muted)
                    .unwrap_or_default();
                let subscribers = record
                    .legs
                    .iter()
                    .filter(|leg| leg.publisher() == Some(&publisher.id))
                    .map(|leg| SubscriberRoute {
                        leg_id: leg.id.clone(),
                        member_id: leg.member_id.clone(),
                        state: leg.state,
                    })
                    .collect();
                PublisherRoutes {
                    leg_id: publisher.id.clone(),
                    member_id: publisher.member_id.clone(),
                    tracks: publisher.published_kinds().to_vec(),
                    state: publisher.state,
                    muted,
                    subscribers,
                }
            })
            .collect();

        ForwardingTable {
            conversation_id: record.id.clone(),
            publishers,
        }
    }

    pub fn publisher(&self, leg: &LegId) -> Option<&PublisherRoutes> {
        self.publishers
            .iter()
            .find(|publisher| publisher.leg_id == *leg)
    }
}
