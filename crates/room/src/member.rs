//! Members: one user's membership of one conversation.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{ConversationId, MemberId, UserId};
use crate::leg::{MediaKind, MuteState};

/// State of a member in its conversation.
///
/// A member is created INVITED or JOINED, an INVITED member may become JOINED, and either may
/// become LEFT. LEFT is final: a user who comes back gets a new member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MemberState {
    Invited,
    Joined,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Invited => "INVITED",
            MemberState::Joined => "JOINED",
            MemberState::Left => "LEFT",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Action requested when a user is added to a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberAction {
    Join,
    Invite,
}

/// The kind of client a member is connected through. Only in-app clients exist so far. Phone
/// and SIP channels would be further variants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    #[default]
    App,
}

/// The channel of a member, serialized as `{"type": "app"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Channel {
    #[serde(rename = "type")]
    pub kind: ChannelType,
}

/// When the member entered each state it has been in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberTimestamps {
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub invited: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub joined: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub left: Option<OffsetDateTime>,
}

/// Media state of one kind: whether any publisher leg of the member sends it, and whether the
/// member is muted for it. Mute outlives legs, so a new publisher leg starts muted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrackSettings {
    pub enabled: bool,
    pub muted: bool,
}

/// Media state of a member, the content of its `member:media` events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberMedia {
    pub audio_settings: TrackSettings,
    pub video_settings: TrackSettings,
}

impl MemberMedia {
    pub fn settings(&self, kind: MediaKind) -> TrackSettings {
        match kind {
            MediaKind::Audio => self.audio_settings,
            MediaKind::Video => self.video_settings,
        }
    }

    pub(crate) fn settings_mut(&mut self, kind: MediaKind) -> &mut TrackSettings {
        match kind {
            MediaKind::Audio => &mut self.audio_settings,
            MediaKind::Video => &mut self.video_settings,
        }
    }
}

/// One user's membership of one conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    /// Name of the user, copied so that member lists need no user lookup.
    pub user_name: String,
    pub state: MemberState,
    pub timestamp: MemberTimestamps,
    pub channel: Channel,
    /// Name of the user who sent the invitation, for members created by an invitation.
    pub invited_by: Option<String>,
    pub media: MemberMedia,
}

impl Member {
    pub fn is_joined(&self) -> bool {
        self.state == MemberState::Joined
    }

    /// Returns whether the membership has not ended: INVITED and JOINED members take part,
    /// LEFT ones are history.
    pub fn is_active(&self) -> bool {
        self.state != MemberState::Left
    }

    pub fn muted(&self) -> MuteState {
        MuteState {
            audio: self.media.audio_settings.muted,
            video: self.media.video_settings.muted,
        }
    }
}
