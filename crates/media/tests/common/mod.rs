//! Helpers shared by the media crate's tests that run real WebRTC peers against a node.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use client::{Publisher, Relay};
use media::{CloseReason, LegId, MediaConfig, MediaEvent, MediaHandle, MediaKind, MuteState};
use tokio::sync::mpsc::UnboundedReceiver;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of a node on 127.0.0.1 with a port the system picks.
pub fn node_config() -> MediaConfig {
    MediaConfig {
        bind: "127.0.0.1:0".parse().expect("bind address"),
        // Short consent timeouts so a vanished peer is closed within seconds.
        ice_disconnected_timeout: Duration::from_secs(1),
        ice_failed_timeout: Duration::from_secs(2),
        ..MediaConfig::default()
    }
}

pub fn start_node() -> (MediaHandle, UnboundedReceiver<MediaEvent>) {
    MediaHandle::start(node_config()).expect("start the media worker")
}

pub async fn publish(media: &MediaHandle, leg: &str) -> Publisher {
    publish_via(media, leg, None).await
}

/// Publishes audio and video on a new leg, through `relay` if given, and waits for the peer to
/// connect.
pub async fn publish_via(media: &MediaHandle, leg: &str, relay: Option<&Relay>) -> Publisher {
    let publisher = Publisher::new().await.expect("publisher");
    let offer = publisher.offer().await.expect("publisher offer");
    let answer = media
        .publish(LegId::from(leg), offer, MuteState::default())
        .await
        .expect("publish answer");
    assert_eq!(answer.tracks, vec![MediaKind::Audio, MediaKind::Video]);
    let sdp = match relay {
        Some(relay) => relay.rewrite_answer(&answer.sdp),
        None => answer.sdp,
    };
    publisher.apply_answer(sdp).await.expect("apply answer");
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("publisher connects");
    publisher
}

/// Waits up to `timeout` for the next `LegClosed` event, skipping other events.
pub async fn next_closed(
    events: &mut UnboundedReceiver<MediaEvent>,
    timeout: Duration,
) -> Option<(LegId, CloseReason)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .ok()??;
        if let MediaEvent::LegClosed { leg, reason } = event {
            return Some((leg, reason));
        }
    }
}
