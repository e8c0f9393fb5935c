//! Sending replies and events to a socket, closing the socket rather than losing one silently.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tracing::{debug, warn};

use super::SEND_BUFFER;
use super::envelope::Outgoing;

/// Number of attempts to send the disconnect packet to a socket whose buffer is full.
const DISCONNECT_ATTEMPTS: u32 = 100;

/// Time between two of those attempts, in which the socket's writer frees room.
const DISCONNECT_RETRY: Duration = Duration::from_millis(50);

/// The sending side of one socket.
pub(crate) struct Outbox {
    socket: SocketRef,
    /// Set once the send buffer was found full and the socket is being closed.
    overflowed: AtomicBool,
}

impl Outbox {
    pub(crate) fn new(socket: SocketRef) -> Self {
        Outbox {
            socket,
            overflowed: AtomicBool::new(false),
        }
    }

    pub(crate) fn socket(&self) -> &SocketRef {
        &self.socket
    }

    pub(crate) fn send(&self, outgoing: &Outgoing) {
        self.emit(&outgoing.name, &outgoing.payload);
    }

    /// Sends an event. A socket that closed meanwhile misses it, which is what a closed socket
    /// means. A socket whose send buffer is full has a client that does not read: it is
    /// closed, so that the client sees its connection end instead of waiting for a reply or an
    /// event that never comes.
    pub(crate) fn emit(&self, name: &str, payload: &Value) {
        match self.socket.emit(name, payload) {
            Ok(()) => {}
            Err(SendError::Socket(SocketError::InternalChannelFull)) => self.close_overflowed(name),
            Err(error) => {
                debug!(socket = %self.socket.id, event = name, %error, "event not sent to a closed socket");
            }
        }
    }

    fn close_overflowed(&self, name: &str) {
        if self.overflowed.swap(true, Ordering::SeqCst) {
            return;
        }
        warn!(
            socket = %self.socket.id,
            event = name,
            buffer = SEND_BUFFER,
            "the socket's send buffer is full, so the event is lost; closing the socket"
        );
        let socket = self.socket.clone();
        tokio::spawn(async move {
            // The disconnect packet needs room in the buffer too.
            for _ in 0..DISCONNECT_ATTEMPTS {
                match socket.clone().disconnect() {
                    Err(SocketError::InternalChannelFull) => {
                        tokio::time::sleep(DISCONNECT_RETRY).await;
                    }
                    Ok(()) | Err(_) => return,
                }
            }
            warn!(
                socket = %socket.id,
                "closing a socket failed because its send buffer stayed full"
            );
        });
    }
}
