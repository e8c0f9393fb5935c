//! The interceptor the worker adds to every leg's chain.
//!
//! The `rtc` interceptor chain ends in a terminus that drops inbound RTCP unless a packet carries
//! `Attribute::DeliverToApplication`. The [`RtcpTap`] sits on the wire side of every built-in
//! interceptor and does three things to inbound RTCP. It counts the packets that passed SRTCP
//! authentication, because the core drops what fails it without any other trace. It counts the
//! NACKs among them, because the NACK responder consumes them. And it marks compound packets
//! holding a PLI or FIR for delivery, because the worker relays those to the publisher. No
//! interceptor of `rtc` 0.21.1 drops inbound RTCP or its attributes before the terminus, so the
//! mark made here reaches it. Reports and NACKs stay inside the chain.
//!
//! One tap rather than a counter and a separate marker: every interceptor in the chain costs each
//! outbound packet a push and a pop of the whole message, on the path every forwarded copy takes.

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

/// Position of the tap: on the wire side of every built-in interceptor, before any of them
/// consumes a report.
pub(crate) const RTCP_TAP_SLOT: usize = 500;

pub(crate) struct RtcpTap {
    /// Inbound RTCP packets of this leg.
    rtcp: Arc<AtomicU64>,
    /// Generic NACKs received, shared by the taps of every leg.
    nacks: Arc<AtomicU64>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    /// Creates a tap that adds NACKs to `nacks`, and returns it with the leg's RTCP count it
    /// increments.
    pub(crate) fn new(nacks: Arc<AtomicU64>) -> (RtcpTap, Arc<AtomicU64>) {
        let rtcp = Arc::new(AtomicU64::new(0));
        let tap = RtcpTap {
            rtcp: Arc::clone(&rtcp),
            nacks,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        };
        (tap, rtcp)
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
        if let Packet::Rtcp(list) = &msg.message.packet {
            // One thread writes and reads the counts, so no ordering is needed.
            self.rtcp.fetch_add(1, Ordering::Relaxed);
            let nack_count = list
                .iter()
                .filter(|packet| packet.as_any().is::<TransportLayerNack>())
                .count();
            if nack_count > 0 {
                self.nacks.fetch_add(nack_count as u64, Ordering::Relaxed);
            }
            if is_keyframe_request(&msg.message.packet) {
                msg.message.add(Attribute::DeliverToApplication);
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
