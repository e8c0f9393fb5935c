//! The event log of a conversation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::RoomError;
use crate::id::{ConversationId, MemberId};
use crate::leg::MediaKind;

/// Maximum size of the body of an event posted by a client, in bytes of compact JSON.
pub const MAX_POSTED_BODY_BYTES: usize = 4096;

/// Maximum length of `<name>` in a `custom:<name>` event type, in characters.
pub const MAX_CUSTOM_NAME_LENGTH: usize = 100;

const CUSTOM_PREFIX: &str = "custom:";

/// The type of an event, serialized as the string clients see (`member:joined`, `custom:x`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    ConversationCreated,
    ConversationUpdated,
    ConversationDeleted,
    MemberJoined,
    MemberInvited,
    MemberLeft,
    MemberMedia,
    RtcNew,
    RtcTerminate,
    AudioMuteOn,
    AudioMuteOff,
    VideoMuteOn,
    VideoMuteOff,
    /// An application's own event, `custom:<name>`. The field is the full type string.
    Custom(String),
}

impl EventType {
    pub fn as_str(&self) -> &str {
        match self {
            EventType::ConversationCreated => "conversation:created",
            EventType::ConversationUpdated => "conversation:updated",
            EventType::ConversationDeleted => "conversation:deleted",
            EventType::MemberJoined => "member:joined",
            EventType::MemberInvited => "member:invited",
            EventType::MemberLeft => "member:left",
            EventType::MemberMedia => "member:media",
            EventType::RtcNew => "rtc:new",
            EventType::RtcTerminate => "rtc:terminate",
            EventType::AudioMuteOn => "audio:mute:on",
            EventType::AudioMuteOff => "audio:mute:off",
            EventType::VideoMuteOn => "video:mute:on",
            EventType::VideoMuteOff => "video:mute:off",
            EventType::Custom(name) => name,
        }
    }

    /// Kind and new mute flag of a mute event type.
    pub fn mute(&self) -> Option<(MediaKind, bool)> {
        match self {
            EventType::AudioMuteOn => Some((MediaKind::Audio, true)),
            EventType::AudioMuteOff => Some((MediaKind::Audio, false)),
            EventType::VideoMuteOn => Some((MediaKind::Video, true)),
            EventType::VideoMuteOff => Some((MediaKind::Video, false)),
            _ => None,
        }
    }

    /// Returns whether clients may post events of this type. The node creates the others.
    pub fn is_postable(&self) -> bool {
        self.mute().is_some() || matches!(self, EventType::Custom(_))
    }
}

impl FromStr for EventType {
    type Err = RoomError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let known = match value {
            "conversation:created" => EventType::ConversationCreated,
            "conversation:updated" => EventType::ConversationUpdated,
            "conversation:deleted" => EventType::ConversationDeleted,
            "member:joined" => EventType::MemberJoined,
            "member:invited" => EventType::MemberInvited,
            "member:left" => EventType::MemberLeft,
            "member:media" => EventType::MemberMedia,
            "rtc:new" => EventType::RtcNew,
            "rtc:terminate" => EventType::RtcTerminate,
            "audio:mute:on" => EventType::AudioMuteOn,
            "audio:mute:off" => EventType::AudioMuteOff,
            "video:mute:on" => EventType::VideoMuteOn,
            "video:mute:off" => EventType::VideoMuteOff,
            _ => return parse_custom(value),
        };
        Ok(known)
    }
}

/// Accepts `custom:<name>` where the name is 1 to 100 characters of letters, digits and
/// `_ - . :`, so that a type is safe to put in URLs, logs and metric labels.
fn parse_custom(value: &str) -> Result<EventType, RoomError> {
    let invalid = || RoomError::InvalidEventType(value.to_owned());
    let name = value.strip_prefix(CUSTOM_PREFIX).ok_or_else(invalid)?;

    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if name.is_empty() || name.len() > MAX_CUSTOM_NAME_LENGTH || !name.chars().all(allowed) {
        return Err(invalid());
    }
    Ok(EventType::Custom(value.to_owned()))
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

/// One entry of a conversation's event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the conversation's log: 1 for the first event, then consecutive.
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Member the event is from: the actor, or the member a node-made event is about. Events
    /// about the conversation itself (`conversation:*`) have none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<MemberId>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to: Option<MemberId>,
    pub body: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// An event a client posts.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub kind: EventType,
    pub from: MemberId,
    /// Target member; a mute event without one mutes its sender.
    pub to: Option<MemberId>,
    pub body: Value,
}

/// Order in which events are listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    /// Returns the order as query parameters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// A window of the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventQuery {
    /// Smallest event id to include.
    pub start_id: Option<u64>,
    /// Largest event id to include.
    pub end_id: Option<u64>,
    /// Maximum number of events returned. Descending order returns the newest ones.
    pub page_size: usize,
    pub order: Order,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            start_id: None,
            end_id: None,
            page_size: usize::MAX,
            order: Order::Asc,
        }
    }
}

/// Receiver of every event the registry appends, such as a webhook sender or the realtime
/// sessions.
pub trait EventListener: Send + Sync {
    /// Receives an event after the transaction that appended it committed. Events of one
    /// conversation arrive in log order, because the registry calls this while it holds that
    /// conversation's lock. Implementations must therefore return quickly and never block: queue
    /// the event with a `try_send` and count what does not fit.
    fn appended(&self, conversation_id: &ConversationId, event: &Event);
}

/// Size of a body as compact JSON, the measure of [`MAX_POSTED_BODY_BYTES`].
pub(crate) fn body_size(body: &Value) -> usize {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    serde_json::to_vec(body).map_or(0, |bytes| bytes.len())
}
