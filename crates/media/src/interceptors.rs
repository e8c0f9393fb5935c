//! The interceptor the worker adds to every leg's chain, twice.
//!
//! The `rtc` interceptor chain ends in a terminus that drops inbound RTCP unless a packet carries
//! `Attribute::DeliverToApplication`. On the application side, an [`RtcpTap`] lets PLI and FIR from
//! subscribers through, because the worker relays them to the publisher. Reports and NACKs stay
//! inside the chain. On the wire side, another counts the RTCP that passed SRTCP authentication,
//! because the core drops what fails it without any other trace, and the NACKs among it, because
//! the NACK responder consumes them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Position of the keyframe request tap: on the application side of every built-in interceptor.
pub(crate) const KEYFRAME_REQUEST_SLOT: usize = 14_000;
/// Position of the counting tap: on the wire side of every built-in interceptor, before any of
/// them consumes a report.
pub(crate) const RTCP_COUNTER_SLOT: usize = 500;

/// Action of a tap on inbound RTCP. Every packet passes on unchanged otherwise.
enum Tap {
    /// Marks compound packets holding a PLI or FIR for delivery to the worker.
    KeyframeRequests,
    /// Counts inbound RTCP packets in `rtcp`, and the generic NACKs they carry in `nacks`.
    Count {
        rtcp: Arc<AtomicU64>,
        nacks: Arc<AtomicU64>,
    },
}

pub(crate) struct RtcpTap {
    tap: Tap,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    fn new(tap: Tap) -> RtcpTap {
        RtcpTap {
            tap,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Creates the tap that lets keyframe requests through to the worker.
    pub(crate) fn keyframe_requests() -> RtcpTap {
        RtcpTap::new(Tap::KeyframeRequests)
    }

    /// Creates a counting tap that adds NACKs to `nacks`, and returns it with the RTCP count it
    /// increments.
    pub(crate) fn counter(nacks: Arc<AtomicU64>) -> (RtcpTap, Arc<AtomicU64>) {
        let rtcp = Arc::new(AtomicU64::new(0));
        let tap = Tap::Count {
            rtcp: Arc::clone(&rtcp),
            nacks,
        };
        (RtcpTap::new(tap), rtcp)
    }
}

fn is_keyframe_request(packet: &Packet) -> bool {
    let Packet::Rtcp(list) = packet else {
        return false;
    };
    list.iter().any(|rtcp| {
        let any = rtcp.as_any();
        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        match &self.tap {
            Tap::KeyframeRequests => {
                if is_keyframe_request(&msg.message.packet) {
                    msg.message.add(Attribute::DeliverToApplication);
                }
            }
            Tap::Count { rtcp, nacks } => {
                if let Packet::Rtcp(list) = &msg.message.packet {
                    // One thread writes and reads the counts, so no ordering is needed.
                    rtcp.fetch_add(1, Ordering::Relaxed);
                    let nack_count = list
                        .iter()
                        .filter(|packet| packet.as_any().is::<TransportLayerNack>())
                        .count();
                    if nack_count > 0 {
                        nacks.fetch_add(nack_count as u64, Ordering::Relaxed);
                    }
                }
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
