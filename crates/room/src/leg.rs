//! Legs: the WebRTC connections of members.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{ConversationId, LegId, MemberId};

/// The kind of a track, as in the SDP media section (`m=audio` or `m=video`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub const ALL: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mute flags of one member, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MuteState {
    pub audio: bool,
    pub video: bool,
}

impl MuteState {
    pub fn get(self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }
}

/// Direction of the media a leg carries, relative to the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "direction", rename_all = "lowercase")]
pub enum LegRole {
    /// Upstream: the member publishes these tracks to the node.
    Upstream { tracks: Vec<MediaKind> },
    /// Downstream: the node sends the tracks of the publisher leg `publisher` to the member.
    Downstream { publisher: LegId },
}

/// Connection state of a leg as the media worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LegState {
    /// The offer was answered, but ICE and DTLS are not up yet.
    Connecting,
    /// ICE, DTLS and SRTP are up.
    Connected,
}

/// One WebRTC connection of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub id: LegId,
    pub conversation_id: ConversationId,
    pub member_id: MemberId,
    pub role: LegRole,
    pub state: LegState,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

impl Leg {
    pub fn is_publisher(&self) -> bool {
        matches!(self.role, LegRole::Upstream { .. })
    }

    /// Publisher leg this leg receives from, for a downstream leg.
    pub fn publisher(&self) -> Option<&LegId> {
        match &self.role {
            LegRole::Downstream { publisher } => Some(publisher),
            LegRole::Upstream { .. } => None,
        }
    }

    /// Kinds of the tracks this leg publishes, empty for a downstream leg.
    pub fn published_kinds(&self) -> &[MediaKind] {
        match &self.role {
            LegRole::Upstream { tracks } => tracks,
            LegRole::Downstream { .. } => &[],
        }
    }
}

/// Why a leg ended, recorded in its `rtc:terminate` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegCloseReason {
    /// A client or the application ended the leg.
    Requested,
    /// The leg's member left the conversation.
    MemberLeft,
    /// The leg's member joined again, which means the client that opened the leg is gone.
    MemberRejoined,
    /// The publisher leg this downstream leg received from ended.
    PublisherClosed,
    /// The peer stopped answering ICE consent checks, or DTLS failed.
    ConnectionFailed,
    /// The peer closed its connection (a DTLS close_notify).
    PeerClosed,
    /// The node is shutting down.
    Shutdown,
    /// The conversation was deleted, or expired.
    ConversationDeleted,
    /// The realtime session that opened the leg ended: its socket closed or logged out.
    SessionEnded,
    /// No answer to the node's offer for the downstream leg arrived in time.
    AnswerTimeout,
}

impl LegCloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LegCloseReason::Requested => "requested",
            LegCloseReason::MemberLeft => "member_left",
            LegCloseReason::MemberRejoined => "member_rejoined",
            LegCloseReason::ConversationDeleted => "conversation_deleted",
            LegCloseReason::PublisherClosed => "publisher_closed",
            LegCloseReason::ConnectionFailed => "connection_failed",
            LegCloseReason::PeerClosed => "peer_closed",
            LegCloseReason::Shutdown => "shutdown",
            LegCloseReason::SessionEnded => "session_ended",
            LegCloseReason::AnswerTimeout => "answer_timeout",
        }
    }
}
