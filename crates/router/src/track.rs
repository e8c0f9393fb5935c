//! Per-track forwarding state and the fan-out of one packet to a track's subscriptions.

use std::time::{Duration, Instant};

use rtc_rtp::Packet;

use crate::SubscriptionId;
use crate::codec::{Codec, MediaKind, PayloadCodecs};
use crate::keyframe::starts_keyframe;
use crate::rewrite::{SubscriberRewrite, rewrite_header};
use crate::router::{Forward, LastForwarded};
use crate::sequence::{Arrival, SequenceRewriter, SequenceUnwrapper};
use crate::stats::RouterStats;

/// Rate limit and merging of keyframe requests toward one publisher track.
#[derive(Debug, Default)]
pub(crate) struct KeyframeRequests {
    last_sent: Option<Instant>,
    /// A request was suppressed by the rate limit and is still owed to the publisher.
    pub(crate) pending: bool,
}

impl KeyframeRequests {
    pub(crate) fn may_send(&self, now: Instant, interval: Duration) -> bool {
        self.last_sent
            .is_none_or(|last_sent| now.saturating_duration_since(last_sent) >= interval)
    }

    pub(crate) fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.pending = false;
    }
}

#[derive(Debug)]
pub(crate) enum SubscriptionState {
    /// Nothing is forwarded until a packet the subscription can start at: a keyframe if
    /// `needs_keyframe`, otherwise any packet newer than `newer_than`. That packet gets
    /// `sequence_number`.
    Waiting {
        sequence_number: u16,
        needs_keyframe: bool,
        /// The highest extended sequence number the track had received when the
        /// subscription was made or restarted. Older packets arriving late must not start
        /// it, because the numbers from `sequence_number` on are meant for packets that
        /// follow them.
        newer_than: Option<u64>,
    },
    Forwarding(SequenceRewriter),
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) rewrite: SubscriberRewrite,
    pub(crate) state: SubscriptionState,
    /// Added to publisher timestamps. It is set on the first forwarded packet and kept
    /// across mute, because the publisher's clock runs on while muted.
    pub(crate) timestamp_offset: Option<u32>,
    /// Kept so that a later source switch (a simulcast layer change) can continue the
    /// timestamps from the wall clock.
    pub(crate) last_forwarded: Option<LastForwarded>,
}

impl Subscription {
    pub(crate) fn is_waiting_for_keyframe(&self) -> bool {
        matches!(
            self.state,
            SubscriptionState::Waiting {
                needs_keyframe: true,
                ..
            }
        )
    }

    /// Makes the subscription start over at its next usable packet newer than
    /// `track_highest`, numbered right after the last one it received, so that no gap
    /// shows where packets were dropped.
    pub(crate) fn restart(&mut self, needs_keyframe: bool, track_highest: Option<u64>) {
        let (sequence_number, handled) = match &self.state {
            SubscriptionState::Waiting {
                sequence_number,
                newer_than,
                ..
            } => (*sequence_number, *newer_than),
            SubscriptionState::Forwarding(rewriter) => {
                (rewriter.next_sequence_number(), Some(rewriter.highest()))
            }
        };
        self.state = SubscriptionState::Waiting {
            sequence_number,
            needs_keyframe,
            newer_than: handled.max(track_highest),
        };
    }
}

#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) kind: MediaKind,
    pub(crate) codecs: PayloadCodecs,
    pub(crate) muted: bool,
    pub(crate) sequence: SequenceUnwrapper,
    pub(crate) keyframe_requests: KeyframeRequests,
    pub(crate) subscriptions: Vec<Subscription>,
}

/// One incoming packet, with the values the fan-out loop needs.
pub(crate) struct Incoming<'a> {
    pub(crate) packet: &'a Packet,
    pub(crate) extended: u64,
    pub(crate) codec: Codec,
    pub(crate) now: Instant,
}

/// Closes the padding packet's slot in every forwarding subscription, so it leaves no gap.
pub(crate) fn drop_padding(track: &mut Track, extended: u64) {
    for subscription in &mut track.subscriptions {
        if let SubscriptionState::Forwarding(rewriter) = &mut subscription.state
            && matches!(rewriter.classify(extended), Arrival::New | Arrival::Late)
        {
            rewriter.drop_packet(extended);
        }
    }
}

/// Forwards one media packet to every subscription of `track` that takes it.
///
/// Returns whether the packet starts a keyframe if a waiting subscription needed to know,
/// so that the caller does not run the detection again.
pub(crate) fn fan_out(
    track: &mut Track,
    incoming: &Incoming<'_>,
    stats: &mut RouterStats,
    out: &mut Vec<Forward>,
) -> Option<bool> {
    let header = &incoming.packet.header;
    let mut keyframe: Option<bool> = None;

    for subscription in &mut track.subscriptions {
        let payload_type = subscription.rewrite.payload_types.get(header.payload_type);
        let (sequence_number, is_newest) = match &mut subscription.state {
            SubscriptionState::Waiting {
                sequence_number,
                needs_keyframe,
                newer_than,
            } => {
                if newer_than.is_some_and(|newer_than| incoming.extended <= newer_than) {
                    stats.dropped_too_old += 1;
                    continue;
                }
                if *needs_keyframe
                    && !*keyframe.get_or_insert_with(|| {
                        starts_keyframe(incoming.codec, &incoming.packet.payload)
                    })
                {
                    stats.dropped_waiting_for_keyframe += 1;
                    continue;
                }
                if payload_type.is_none() {
                    stats.dropped_unknown_payload_type += 1;
                    continue;
                }
                let sequence_number = *sequence_number;
                subscription.state = SubscriptionState::Forwarding(SequenceRewriter::start(
                    incoming.extended,
                    sequence_number,
                ));
                (sequence_number, true)
            }
            SubscriptionState::Forwarding(rewriter) => {
                let arrival = rewriter.classify(incoming.extended);
                match arrival {
                    Arrival::Duplicate => {
                        stats.dropped_duplicate += 1;
                        continue;
                    }
                    Arrival::TooOld => {
                        stats.dropped_too_old += 1;
                        continue;
                    }
                    Arrival::New | Arrival::Late => {}
                }
                if payload_type.is_none() {
                    stats.dropped_unknown_payload_type += 1;
                    rewriter.drop_packet(incoming.extended);
                    continue;
                }
                let Some(sequence_number) = rewriter.forward(incoming.extended) else {
                    stats.dropped_too_old += 1;
                    continue;
                };
                (sequence_number, arrival == Arrival::New)
            }
        };
        let Some(payload_type) = payload_type else {
            continue;
        };

        let timestamp_offset = *subscription.timestamp_offset.get_or_insert(
            subscription
                .rewrite
                .initial_timestamp
                .wrapping_sub(header.timestamp),
        );
        let timestamp = header.timestamp.wrapping_add(timestamp_offset);
        let (rewritten, header_size) = rewrite_header(
            header,
            &subscription.rewrite,
            payload_type,
            sequence_number,
            timestamp,
        );
        if is_newest {
            subscription.last_forwarded = Some(LastForwarded {
                at: incoming.now,
                sequence_number,
                timestamp,
            });
        }
        stats.forwarded_packets += 1;
        stats.forwarded_bytes += (header_size + incoming.packet.payload.len()) as u64;
        out.push(Forward {
            subscription: subscription.id,
            packet: Packet {
                header: rewritten,
                payload: incoming.packet.payload.clone(),
            },
        });
    }
    keyframe
}
