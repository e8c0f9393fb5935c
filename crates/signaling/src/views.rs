//! JSON shapes of responses.

use room::{
    Channel, Conversation, ConversationProperties, ConversationSummary, Event, ForwardingTable,
    LegState, MediaKind, Member, MemberMedia, MemberState, MemberTimestamps, MuteState, User,
    UserConversation,
};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Path prefix of the REST API.
pub const API_BASE: &str = "/v0.1";

pub(crate) fn user_href(user_id: &str) -> String {
    format!("{API_BASE}/users/{user_id}")
}

pub(crate) fn conversation_href(conversation_id: &str) -> String {
    format!("{API_BASE}/conversations/{conversation_id}")
}

pub(crate) fn member_href(conversation_id: &str, member_id: &str) -> String {
    format!("{}/members/{member_id}", conversation_href(conversation_id))
}

/// Body of a 201 response to a POST that created a resource.
#[derive(Serialize, ToSchema)]
pub(crate) struct Created {
    pub id: String,
    pub href: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedTimestamp {
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub timestamp: CreatedTimestamp,
    pub href: String,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            href: user_href(user.id.as_str()),
            id: user.id.to_string(),
            name: user.name,
            display_name: user.display_name,
            timestamp: CreatedTimestamp {
                created: user.created,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct MemberView {
    pub id: String,
    pub conversation_id: String,
    pub user_id: String,
    /// Name of the member's user.
    pub name: String,
    pub state: MemberState,
    pub timestamp: MemberTimestamps,
    pub channel: Channel,
    pub media: MemberMedia,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<String>,
    pub href: String,
}

impl From<Member> for MemberView {
    fn from(member: Member) -> Self {
        MemberView {
            href: member_href(member.conversation_id.as_str(), member.id.as_str()),
            id: member.id.to_string(),
            conversation_id: member.conversation_id.to_string(),
            user_id: member.user_id.to_string(),
            name: member.user_name,
            state: member.state,
            timestamp: member.timestamp,
            channel: member.channel,
            media: member.media,
            invited_by: member.invited_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PropertiesView {
    pub video: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl From<ConversationProperties> for PropertiesView {
    fn from(properties: ConversationProperties) -> Self {
        PropertiesView {
            video: properties.video,
            ttl: properties.ttl,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ConversationView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub properties: PropertiesView,
    pub timestamp: CreatedTimestamp,
    /// Id of the newest event, 0 before the first one.
    pub sequence_number: u64,
    pub members: Vec<MemberView>,
    pub href: String,
}

impl From<Conversation> for ConversationView {
    fn from(conversation: Conversation) -> Self {
        ConversationView {
            href: conversation_href(conversation.id.as_str()),
            id: conversation.id.to_string(),
            name: conversation.name,
            display_name: conversation.display_name,
            properties: conversation.properties.into(),
            timestamp: CreatedTimestamp {
                created: conversation.created,
            },
            sequence_number: conversation.sequence_number,
            members: conversation
                .members
                .into_iter()
                .map(MemberView::from)
                .collect(),
        }
    }
}

/// A conversation in a list: its fields without members.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConversationSummaryView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub properties: PropertiesView,
    pub timestamp: CreatedTimestamp,
    /// Id of the newest event, 0 before the first one.
    pub sequence_number: u64,
    pub href: String,
}

impl From<ConversationSummary> for ConversationSummaryView {
    fn from(conversation: ConversationSummary) -> Self {
        ConversationSummaryView {
            href: conversation_href(conversation.id.as_str()),
            id: conversation.id.to_string(),
            name: conversation.name,
            display_name: conversation.display_name,
            properties: conversation.properties.into(),
            timestamp: CreatedTimestamp {
                created: conversation.created,
            },
            sequence_number: conversation.sequence_number,
        }
    }
}

/// A conversation a user belongs to, with that user's member of it.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserConversationView {
    #[serde(flatten)]
    pub conversation: ConversationSummaryView,
    pub member: MemberSummaryView,
}

/// A member named from another resource.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberSummaryView {
    pub id: String,
    pub state: MemberState,
    pub href: String,
}

impl From<UserConversation> for UserConversationView {
    fn from(entry: UserConversation) -> Self {
        let member = entry.member;
        UserConversationView {
            conversation: entry.conversation.into(),
            member: MemberSummaryView {
                href: member_href(member.conversation_id.as_str(), member.id.as_str()),
                id: member.id.to_string(),
                state: member.state,
            },
        }
    }
}

/// One event of a conversation's log.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventView {
    /// Position in the conversation's log: 1 for the first event, then consecutive.
    pub id: u64,
    /// `member:joined`, `rtc:new`, `audio:mute:on`, `custom:<name>` and so on.
    #[serde(rename = "type")]
    pub kind: String,
    /// Member the event is from: the actor, or the member a node-made event is about.
    /// Absent on `conversation:*` events, which no member causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub body: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub href: String,
}

impl EventView {
    pub fn new(conversation_id: &str, event: Event) -> Self {
        EventView {
            href: event_href(conversation_id, event.id),
            id: event.id,
            kind: event.kind.to_string(),
            from: event.from.map(|from| from.to_string()),
            to: event.to.map(|to| to.to_string()),
            body: event.body,
            timestamp: event.timestamp,
        }
    }
}

pub(crate) fn event_href(conversation_id: &str, event_id: u64) -> String {
    format!("{}/events/{event_id}", conversation_href(conversation_id))
}

/// Body of a 201 response to a posted event.
#[derive(Serialize, ToSchema)]
pub(crate) struct PostedEventView {
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub href: String,
}

/// Body of a 201 response to an offer: `{rtc_id, body: {answer: {type: "answer", sdp}}}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct RtcAnswerView {
    pub rtc_id: String,
    pub body: RtcAnswerBody,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RtcAnswerBody {
    pub answer: SessionDescription,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sdp: String,
}

impl RtcAnswerView {
    pub fn new(rtc_id: String, sdp: String) -> Self {
        RtcAnswerView {
            rtc_id,
            body: RtcAnswerBody {
                answer: SessionDescription {
                    kind: "answer",
                    sdp,
                },
            },
        }
    }
}

/// The legs of a conversation, as the forwarding table the room derives.
#[derive(Serialize, ToSchema)]
pub(crate) struct LegsView {
    pub publishers: Vec<PublisherView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PublisherView {
    pub rtc_id: String,
    pub member_id: String,
    pub tracks: Vec<MediaKind>,
    pub state: LegState,
    pub muted: MuteState,
    pub subscribers: Vec<SubscriberView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SubscriberView {
    pub rtc_id: String,
    pub member_id: String,
    pub state: LegState,
}

impl From<ForwardingTable> for LegsView {
    fn from(table: ForwardingTable) -> Self {
        let publishers = table
            .publishers
            .into_iter()
            .map(|publisher| PublisherView {
                rtc_id: publisher.leg_id.to_string(),
                member_id: publisher.member_id.to_string(),
                tracks: publisher.tracks,
                state: publisher.state,
                muted: publisher.muted,
                subscribers: publisher
                    .subscribers
                    .into_iter()
                    .map(|subscriber| SubscriberView {
                        rtc_id: subscriber.leg_id.to_string(),
                        member_id: subscriber.member_id.to_string(),
                        state: subscriber.state,
                    })
                    .collect(),
            })
            .collect();
        LegsView { publishers }
    }
}

crate::paging::page_view!(
    /// A page of the users list.
    UsersPage,
    UsersEmbedded,
    users,
    UserView
);
crate::paging::page_view!(
    /// A page of the conversations list.
    ConversationsPage,
    ConversationsEmbedded,
    conversations,
    ConversationSummaryView
);
crate::paging::page_view!(
    /// A page of the conversations a user belongs to.
    UserConversationsPage,
    UserConversationsEmbedded,
    conversations,
    UserConversationView
);
crate::paging::page_view!(
    /// A page of a conversation's members.
    MembersPage,
    MembersEmbedded,
    members,
    MemberView
);
crate::paging::page_view!(
    /// A window of a conversation's event log.
    EventsPage,
    EventsEmbedded,
    events,
    EventView
);
