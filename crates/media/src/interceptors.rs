//! Interceptors the worker adds to every leg's chain.
//!
//! The `rtc` interceptor chain ends in a terminus that drops inbound RTCP unless a packet carries
//! `Attribute::DeliverToApplication`. [`KeyframeFeedback`] lets PLI and FIR from subscribers through,
//! because the worker relays them to the publisher; reports and NACKs stay inside the chain.
//! [`InboundRtcpCounter`] counts the RTCP that passed SRTCP authentication, because the core drops
//! what fails it without any other trace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Position of [`KeyframeFeedback`]: on the application side of every built-in interceptor.
pub(crate) const KEYFRAME_FEEDBACK_SLOT: usize = 14_000;
/// Position of [`InboundRtcpCounter`]: on the wire side of every built-in interceptor, before any
/// of them consumes a report.
pub(crate) const RTCP_COUNTER_SLOT: usize = 500;

#[derive(Default)]
pub(crate) struct KeyframeFeedback {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
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

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if is_keyframe_request(&msg.message.packet) {
            msg.message.add(Attribute::DeliverToApplication);
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

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Counts inbound RTCP packets, that is SRTCP that decrypted and authenticated.
#[derive(Default)]
pub(crate) struct InboundRtcpCounter {
    received: Arc<AtomicU64>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl InboundRtcpCounter {
    /// Returns the counter and the shared count it increments.
    pub(crate) fn new() -> (InboundRtcpCounter, Arc<AtomicU64>) {
        let received = Arc::new(AtomicU64::new(0));
        let counter = InboundRtcpCounter {
            received: Arc::clone(&received),
            ..InboundRtcpCounter::default()
        };
        (counter, received)
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for InboundRtcpCounter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            // One thread writes and reads the count, so no ordering with other memory is needed.
            self.received.fetch_add(1, Ordering::Relaxed);
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

impl Interceptor for InboundRtcpCounter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
