//! A socket.io v2 client (engine.io 3 over WebSocket) for the node's realtime API, speaking
//! what the Nexmo JavaScript SDK 4.x speaks, so tests can drive the protocol without a browser
//! and send what the SDK never would.
//!
//! Engine.io 3 frames are text: `0{…}` opens the session, `2`/`3` are the client's ping and the
//! server's pong, and `4` carries a socket.io packet, of which `40` connects the default
//! namespace and `42[name, payload]` is an event.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Errors of the realtime client.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("WebSocket failure: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("unexpected frame from the node: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("the socket is closed")]
    Closed,
}

/// One event received from the node: its name and payload.
#[derive(Clone, Debug)]
pub struct ReceivedEvent {
    pub name: String,
    pub payload: Value,
}

/// An instruction to the task that writes to the WebSocket.
enum Outbound {
    /// Messages written back to back and flushed once, so the node reads them in one go.
    Frames(Vec<Message>),
    Close,
}

/// A connected socket.io v2 client.
pub struct RealtimeClient {
    frames: mpsc::UnboundedSender<Outbound>,
    events: Mutex<mpsc::UnboundedReceiver<ReceivedEvent>>,
    /// Events received while waiting for another one, in arrival order.
    backlog: Mutex<VecDeque<ReceivedEvent>>,
    closed: Arc<AtomicBool>,
    heartbeat: Arc<AtomicBool>,
    next_tid: std::sync::atomic::AtomicU64,
}

impl RealtimeClient {
    /// Connects to `ws://<address><path>/?EIO=3&transport=websocket` and waits for the
    /// engine.io handshake and the default namespace's connect packet.
    pub async fn connect(address: SocketAddr, path: &str) -> Result<RealtimeClient, RealtimeError> {
        let url = format!("ws://{address}{path}/?EIO=3&transport=websocket");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let (mut sink, mut stream) = socket.split();

        let open = next_text(&mut stream).await?;
        let handshake: Value = open
            .strip_prefix('0')
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| {
                RealtimeError::Protocol(format!("expected an open packet, got {open:?}"))
            })?;
        let ping_interval =
            Duration::from_millis(handshake["pingInterval"].as_u64().unwrap_or(25_000));
        // A socket.io v2 client emits nothing before the namespace's connect packet: the node
        // closes a socket whose event arrives before it has connected the namespace.
        let connected = next_text(&mut stream).await?;
        if connected != "40" {
            return Err(RealtimeError::Protocol(format!(
                "expected the connect packet 40, got {connected:?}"
            )));
        }

        let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Outbound>();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let heartbeat = Arc::new(AtomicBool::new(true));

        tokio::spawn(async move {
            while let Some(Outbound::Frames(frames)) = frames_rx.recv().await {
                let mut failed = false;
                for frame in frames {
                    if sink.feed(frame).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || sink.flush().await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_closed = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                // The node disconnected the default namespace, which ends a v2 client's socket.
                if text.as_str() == "41" {
                    break;
                }
                if let Some(event) = parse_event(text.as_str()) {
                    let _ = events_tx.send(event);
                }
            }
            reader_closed.store(true, Ordering::SeqCst);
        });

        let pinger = frames_tx.clone();
        let pinging = Arc::clone(&heartbeat);
        let ping_closed = Arc::clone(&closed);
        tokio::spawn(async move {
            while !ping_closed.load(Ordering::SeqCst) {
                tokio::time::sleep(ping_interval).await;
                if pinging.load(Ordering::SeqCst)
                    && pinger
                        .send(Outbound::Frames(vec![Message::text("2")]))
                        .is_err()
                {
                    break;
                }
            }
        });

        Ok(RealtimeClient {
            frames: frames_tx,
            events: Mutex::new(events_rx),
            backlog: Mutex::new(VecDeque::new()),
            closed,
            heartbeat,
            next_tid: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Sends an event whose payload is `payload` as is.
    pub fn emit(&self, name: &str, payload: &Value) -> Result<(), RealtimeError> {
        let frame = format!("42{}", json!([name, payload]));
        self.send_frame(frame)
    }

    /// Sends events back to back in one write, as a client that does not wait for replies.
    pub fn emit_all(&self, events: &[(&str, Value)]) -> Result<(), RealtimeError> {
        let frames = events
            .iter()
            .map(|(name, payload)| format!("42{}", json!([name, payload])))
            .collect();
        self.send_frames(frames)
    }

    /// Sends a raw engine.io frame, for malformed input.
    pub fn send_frame(&self, frame: String) -> Result<(), RealtimeError> {
        self.send_frames(vec![frame])
    }

    /// Sends raw engine.io frames back to back in one write.
    pub fn send_frames(&self, frames: Vec<String>) -> Result<(), RealtimeError> {
        let messages = frames.into_iter().map(Message::text).collect();
        self.frames
            .send(Outbound::Frames(messages))
            .map_err(|_| RealtimeError::Closed)
    }

    /// Sends a binary WebSocket message, such as the attachment of a `45-` packet. Engine.io 3
    /// expects the message type `4` as its first byte.
    pub fn send_binary(&self, bytes: Vec<u8>) -> Result<(), RealtimeError> {
        self.frames
            .send(Outbound::Frames(vec![Message::binary(bytes)]))
            .map_err(|_| RealtimeError::Closed)
    }

    /// Closes the WebSocket, as a browser tab that goes away.
    pub fn close(&self) {
        let _ = self.frames.send(Outbound::Close);
    }

    /// Sends a request of type `name` with a fresh `tid` added to `fields`, and waits for the
    /// reply whose `rid` is that `tid`.
    pub async fn request(
        &self,
        name: &str,
        mut fields: Value,
        timeout: Duration,
    ) -> Result<ReceivedEvent, RealtimeError> {
        let tid = format!("tid-{}", self.next_tid.fetch_add(1, Ordering::SeqCst));
        fields["tid"] = json!(tid);
        self.emit(name, &fields)?;
        self.wait_for(&format!("the reply to {name}"), timeout, |event| {
            event.payload["rid"] == tid
        })
        .await
    }

    /// Waits for the first event named `name`, keeping the others for later waits.
    pub async fn next_event(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<ReceivedEvent, RealtimeError> {
        self.wait_for(name, timeout, |event| event.name == name)
            .await
    }

    /// Waits for the first event that `matches` accepts, keeping the others for later waits.
    pub async fn wait_for(
        &self,
        description: &str,
        timeout: Duration,
        mut matches: impl FnMut(&ReceivedEvent) -> bool,
    ) -> Result<ReceivedEvent, RealtimeError> {
        {
            let mut backlog = self.backlog.lock().await;
            if let Some(index) = backlog.iter().position(&mut matches)
                && let Some(event) = backlog.remove(index)
            {
                return Ok(event);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.events.lock().await;
        loop {
            let received = tokio::time::timeout_at(deadline, events.recv()).await;
            match received {
                Err(_) => return Err(RealtimeError::Timeout(description.to_owned())),
                Ok(None) => return Err(RealtimeError::Closed),
                Ok(Some(event)) if matches(&event) => return Ok(event),
                Ok(Some(event)) => self.backlog.lock().await.push_back(event),
            }
        }
    }

    /// Returns every event received so far that no wait took, and empties the backlog.
    pub async fn drain(&self) -> Vec<ReceivedEvent> {
        let mut received: Vec<_> = self.backlog.lock().await.drain(..).collect();
        let mut events = self.events.lock().await;
        while let Ok(event) = events.try_recv() {
            received.push(event);
        }
        received
    }

    /// Stops sending heartbeats, as a client that vanished without closing its socket.
    pub fn stop_heartbeat(&self) {
        self.heartbeat.store(false, Ordering::SeqCst);
    }

    /// Returns whether the node closed the WebSocket.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until the node closes the WebSocket.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.is_closed()).await
    }
}

async fn next_text<S>(stream: &mut S) -> Result<String, RealtimeError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(message) = stream.next().await {
        if let Message::Text(text) = message? {
            return Ok(text.as_str().to_owned());
        }
    }
    Err(RealtimeError::Closed)
}

/// Parses a `42[name, payload]` frame. Other frames (pong, connect) carry no event.
fn parse_event(frame: &str) -> Option<ReceivedEvent> {
    let array: Value = serde_json::from_str(frame.strip_prefix("42")?).ok()?;
    let name = array.get(0)?.as_str()?.to_owned();
    let payload = array.get(1).cloned().unwrap_or(Value::Null);
    Some(ReceivedEvent { name, payload })
}
