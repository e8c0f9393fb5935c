//! A real WebRTC client of Switchboard, on the async `webrtc` 0.21 crate.
//!
//! [`Publisher`] sends one Opus and one VP8 track of synthetic media whose payloads carry
//! counters and real VP8 keyframe headers; [`Subscriber`] receives one audio and one video track
//! and records every packet with its header. Tests compare the two to check what the node
//! forwarded, and the load test drives many of them. [`Relay`] lets a test make a peer vanish.

use std::time::{Duration, Instant};

pub mod media;
mod peer;
pub mod realtime;
mod relay;

pub use peer::{
    Kind, Peer, Publisher, ReceivedCounts, ReceivedPacket, SendPlan, SentPacket, Subscriber,
    SubscriberOptions,
};
pub use relay::Relay;

/// Polls `condition` every 20 ms until it is true or `timeout` passes, and returns its last value.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Errors of the test client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{context}: {source}")]
    WebRtc {
        context: &'static str,
        source: webrtc::error::Error,
    },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the peer connection is closed")]
    Closed,
}

impl ClientError {
    fn webrtc(context: &'static str) -> impl FnOnce(webrtc::error::Error) -> ClientError {
        move |source| ClientError::WebRtc { context, source }
    }
}
