//! Conversions between the room's types and the media worker's.

use room::{LegCloseReason, LegId, MediaKind, MuteState};

pub(crate) fn media_leg(leg: &LegId) -> media::LegId {
    media::LegId(leg.to_string())
}

pub(crate) fn room_leg(leg: &media::LegId) -> LegId {
    LegId::from(leg.0.as_str())
}

pub(crate) fn room_kind(kind: media::MediaKind) -> MediaKind {
    match kind {
        media::MediaKind::Audio => MediaKind::Audio,
        media::MediaKind::Video => MediaKind::Video,
    }
}

pub(crate) fn media_kind(kind: MediaKind) -> media::MediaKind {
    match kind {
        MediaKind::Audio => media::MediaKind::Audio,
        MediaKind::Video => media::MediaKind::Video,
    }
}

pub(crate) fn media_mute(muted: MuteState) -> media::MuteState {
    media::MuteState {
        audio: muted.audio,
        video: muted.video,
    }
}

pub(crate) fn close_reason(reason: media::CloseReason) -> LegCloseReason {
    match reason {
        media::CloseReason::Requested => LegCloseReason::Requested,
        media::CloseReason::ConnectionFailed => LegCloseReason::ConnectionFailed,
        media::CloseReason::PeerClosed => LegCloseReason::PeerClosed,
        media::CloseReason::PublisherClosed => LegCloseReason::PublisherClosed,
        media::CloseReason::Shutdown => LegCloseReason::Shutdown,
        media::CloseReason::AnswerTimeout => LegCloseReason::AnswerTimeout,
    }
}
