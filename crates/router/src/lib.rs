//! The media router: the synchronous hot path of the Switchboard SFU.
//!
//! A selective forwarding unit never decodes media. It receives each publisher's RTP and
//! sends every subscriber a copy. The copies differ only in their headers, because each
//! subscriber's leg negotiated its own SSRC, payload types and header extension ids. The
//! router also drops packets for some subscribers: while a track is muted, until a video
//! subscriber can start at a keyframe, or when the subscriber did not negotiate the payload
//! type. The transport decrypts a packet, passes it to [`Router::route`] with the id of the
//! publisher track, and sends each returned [`Forward`] on the subscriber's leg.
//!
//! Receivers treat a gap in sequence numbers as loss and send NACKs, so the router
//! renumbers each subscription so that its own drops leave no gap while real upstream loss
//! still does. Late packets within a window are mapped to the number they would have had in
//! order, and duplicates are dropped. RTP timestamps keep the publisher's clock with a fixed
//! offset per subscription.
//!
//! Video decoders need a keyframe after joining or after frames went missing, so the router
//! also decides when the transport should send a keyframe request (PLI or FIR) to a
//! publisher. It merges requests and sends at most one per
//! [`RouterConfig::keyframe_request_interval`] per track.
//!
//! The router does no I/O and reads no clock: every call takes `now` from the caller, and
//! initial sequence numbers and timestamps come from the caller too, so its behaviour is
//! reproducible in tests.

mod codec;
mod error;
mod keyframe;
mod parse;
mod rewrite;
mod router;
mod sequence;
mod stats;
mod track;

pub use codec::{Codec, MediaKind, PayloadCodecs};
pub use error::RouterError;
pub use keyframe::starts_keyframe;
pub use rewrite::{ExtensionMap, PayloadTypeMap, SubscriberRewrite};
pub use router::{Forward, LastForwarded, RouteOutcome, Router, RouterConfig};
pub use stats::RouterStats;

/// A published track: one SSRC stream of a publisher's leg.
pub type TrackId = u64;
/// One subscriber's subscription to one track.
pub type SubscriptionId = u64;
