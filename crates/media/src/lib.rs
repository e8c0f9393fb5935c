//! The WebRTC transport of a Switchboard node.
//!
//! One UDP socket carries every leg of the node. A single worker thread owns that socket, every
//! leg's sans-IO peer connection (webrtc-rs's `rtc` core) and the [`router::Router`]. It reads a
//! datagram and finds its leg, by the STUN username first and then by the remote address that
//! ICE validated. The leg's peer connection decrypts it, the router rewrites decrypted RTP for
//! each subscriber, and the worker writes the result to the subscribers' peer connections.
//! Nothing on that path locks or awaits, so a conversation's fan-out never crosses threads.
//!
//! The rest of the node talks to the worker through [`MediaHandle`]: commands go in over a
//! channel that wakes the worker, answers come back on one-shot channels, and what happens on the
//! wire (a leg connected, a leg closed because its peer vanished) comes out as [`MediaEvent`]s.
//!
//! A leg starts from either side's offer. [`MediaHandle::publish`] and [`MediaHandle::subscribe`]
//! answer a client's offer. [`MediaHandle::offer_subscription`] makes the node's own offer for a
//! subscriber leg, send-only and complete with the node's candidate, and
//! [`MediaHandle::accept_answer`] applies the client's answer to it. Such a leg waits at most
//! [`MediaConfig::answer_timeout`] for its answer. Once answered, it routes and rewrites media
//! like a leg made by `subscribe`.

mod answer;
mod codecs;
mod demux;
mod interceptors;
mod leg;
mod offer;
mod worker;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use router::{MediaKind, RouterStats};

/// Identifier of one leg, chosen by the caller (the signaling layer uses `LEG-<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub String);

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for LegId {
    fn from(value: &str) -> Self {
        LegId(value.to_owned())
    }
}

/// Settings of the media worker.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Address the UDP socket binds to.
    pub bind: SocketAddr,
    /// Address put in the answer's ICE candidate, for NAT and load balancers. Defaults to `bind`,
    /// which then must be a concrete address, not `0.0.0.0` or `::`.
    pub announced_address: Option<SocketAddr>,
    /// Shortest time between two keyframe requests sent to one publisher track.
    pub keyframe_request_interval: Duration,
    /// Time without ICE consent checks after which a leg counts as disconnected.
    pub ice_disconnected_timeout: Duration,
    /// Further time without checks after which the leg is failed and closed.
    pub ice_failed_timeout: Duration,
    /// Histogram of the time from a datagram's receive to the send of each forwarded copy of
    /// its RTP packet, in seconds. `None` skips the measurement and its clock reads.
    pub packet_transit: Option<prometheus::Histogram>,
    /// Receive and send buffer size requested for the media socket, in bytes. One socket
    /// carries every leg, so a burst (keyframes of many publishers, the worker briefly off its
    /// core) must fit in it. Linux caps the request at `net.core.rmem_max` and `wmem_max`.
    pub socket_buffer_bytes: usize,
    /// Time a subscriber leg created by [`MediaHandle::offer_subscription`] waits for its answer.
    /// A leg still unanswered then is closed with [`CloseReason::AnswerTimeout`], so a client
    /// that never answers cannot hold its leg, ICE credentials and SSRCs forever.
    pub answer_timeout: Duration,
}

/// Default size of the media socket's buffers: 4 MiB. Linux doubles it for its own accounting,
/// which we estimate at about 2.3 KB per 1,200-byte datagram, so about 3,500 datagrams fit.
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 7882)),
            announced_address: None,
            keyframe_request_interval: Duration::from_millis(250),
            ice_disconnected_timeout: Duration::from_secs(5),
            ice_failed_timeout: Duration::from_secs(25),
            packet_transit: None,
            socket_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            answer_timeout: Duration::from_secs(30),
        }
    }
}

/// Mute state a publisher leg starts with, replayed from the member's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuteState {
    pub audio: bool,
    pub video: bool,
}

/// The answer to a publisher offer and what the leg will publish.
#[derive(Clone, Debug)]
pub struct PublishAnswer {
    /// Complete SDP answer: ICE-lite, the node's candidate and end-of-candidates included.
    pub sdp: String,
    /// Kinds of the tracks the offer sends, in offer order.
    pub tracks: Vec<MediaKind>,
}

/// Reason a leg was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseReason {
    /// `close_leg` was called.
    Requested,
    /// The peer stopped answering ICE consent checks, or DTLS failed.
    ConnectionFailed,
    /// The peer closed its connection (a DTLS close_notify).
    PeerClosed,
    /// The publisher leg this subscriber leg received from was closed.
    PublisherClosed,
    /// The node is shutting down.
    Shutdown,
    /// No answer to the node's offer arrived within [`MediaConfig::answer_timeout`].
    AnswerTimeout,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Requested => "requested",
            CloseReason::ConnectionFailed => "connection_failed",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PublisherClosed => "publisher_closed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::AnswerTimeout => "answer_timeout",
        }
    }
}

/// Event on the wire, for the conversation layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE, DTLS and SRTP are up on the leg.
    LegConnected { leg: LegId },
    /// The leg is gone: its peer connection is closed and its routes removed.
    LegClosed { leg: LegId, reason: CloseReason },
    /// The first packet of one of a publisher leg's tracks arrived.
    TrackStarted { leg: LegId, kind: MediaKind },
}

/// Counters of the media worker, read on request.
#[derive(Clone, Debug, Default)]
pub struct MediaStats {
    pub router: RouterStats,
    pub legs: usize,
    pub publisher_legs: usize,
    pub subscriber_legs: usize,
    /// Published tracks in the router.
    pub tracks: usize,
    /// Subscriptions in the router, over all tracks.
    pub subscriptions: usize,
    /// Datagrams from an address no leg owns that were not a STUN request for a known leg.
    pub unroutable_datagrams: u64,
    /// Datagrams from a leg's address that were not WebRTC, STUN requests its ICE agent did not
    /// answer (failed integrity), and RTP or RTCP that failed SRTP authentication or replay
    /// checks. Forged DTLS records are dropped by the core without a trace and are not counted.
    pub rejected_datagrams: u64,
    /// Datagrams the socket could not send, and forwarded packets a subscriber leg rejected.
    pub send_errors: u64,
    /// The part of `send_errors` where the kernel's send buffer was full (`WouldBlock`).
    pub send_buffer_full: u64,
    /// Keyframe requests (PLI or FIR) sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests (PLI or FIR) received from subscribers.
    pub keyframe_requests_received: u64,
    /// Generic NACK packets (RFC 4585) received from peers after SRTCP authentication. The
    /// `rtc` NACK responder resends the packets they list from its send history.
    pub nacks_received: u64,
    /// Outcomes of legs' ICE and DTLS setup.
    pub outcomes: ConnectionOutcomes,
}

/// Outcomes of setting up legs' connections.
///
/// A leg counts as ICE connected when its ICE agent first reports connected, and as DTLS
/// connected when its peer connection first does (ICE, DTLS and SRTP up). A leg closed for a
/// connection failure before that counts as failed in the first layer that was not up. Legs
/// closed for other reasons before connecting (hang-up, request, shutdown) count in neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionOutcomes {
    pub ice_connected: u64,
    pub ice_failed: u64,
    pub dtls_connected: u64,
    pub dtls_failed: u64,
}

/// Errors of the media worker, one variant per problem a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("invalid SDP offer: {0}")]
    InvalidOffer(String),
    #[error("the offer has no codec Switchboard can forward: {0}")]
    NoSupportedCodec(String),
    #[error("the offer sends no media to publish")]
    NothingToPublish,
    #[error("the subscriber receives none of the publisher's tracks: {0}")]
    NothingToSubscribe(String),
    #[error("invalid SDP answer: {0}")]
    InvalidAnswer(String),
    #[error(
        "leg {0} is not waiting for an answer: only a leg created by offer_subscription is, until its answer is applied"
    )]
    NotAwaitingAnswer(LegId),
    #[error("leg {0} already exists")]
    DuplicateLeg(LegId),
    #[error("leg {0} not found")]
    LegNotFound(LegId),
    #[error("leg {0} is not a publisher leg")]
    NotAPublisher(LegId),
    #[error("the publisher leg has no {0:?} track")]
    NoSuchTrack(MediaKind),
    #[error("invalid media configuration: {0}")]
    Config(String),
    #[error("failed to bind the media socket on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("WebRTC failure: {0}")]
    Rtc(String),
    #[error("the media worker has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Publish {
        leg: LegId,
        offer: String,
        muted: MuteState,
        reply: oneshot::Sender<Result<PublishAnswer, MediaError>>,
    },
    Subscribe {
        leg: LegId,
        publisher: LegId,
        offer: String,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    OfferSubscription {
        leg: LegId,
        publisher: LegId,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    AcceptAnswer {
        leg: LegId,
        answer: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    CloseLeg {
        leg: LegId,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    SetMuted {
        publisher: LegId,
        kind: MediaKind,
        muted: bool,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Stats {
        reply: oneshot::Sender<MediaStats>,
    },
    Shutdown,
}

/// Channel to the worker, plus the waker that makes it look at the channel at once.
#[derive(Clone)]
struct CommandSender {
    commands: std::sync::mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl CommandSender {
    fn send(&self, command: Command) -> Result<(), MediaError> {
        self.commands
            .send(command)
            .map_err(|_| MediaError::Stopped)?;
        self.waker.wake().map_err(|_| MediaError::Stopped)
    }
}

/// Cloneable handle to the media worker.
#[derive(Clone)]
pub struct MediaHandle {
    sender: CommandSender,
    local_addr: SocketAddr,
    announced_address: SocketAddr,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    running: Arc<AtomicBool>,
}

/// Clears the running flag when the worker thread ends, whether it returns or panics.
struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl MediaHandle {
    /// Binds the media socket and starts the worker thread.
    pub fn start(
        config: MediaConfig,
    ) -> Result<(MediaHandle, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = std::sync::mpsc::channel();
        let worker = worker::Worker::bind(config, commands_rx, events_tx)?;
        let local_addr = worker.local_addr();
        let announced_address = worker.announced_address();
        let waker = worker.waker();
        let running = Arc::new(AtomicBool::new(true));
        let guard = RunningGuard(Arc::clone(&running));
        let thread = std::thread::Builder::new()
            .name("switchboard-media".into())
            .spawn(move || {
                let _guard = guard;
                worker.run();
            })
            .map_err(|e| MediaError::Config(format!("failed to start the media thread: {e}")))?;
        let handle = MediaHandle {
            sender: CommandSender {
                commands: commands_tx,
                waker,
            },
            local_addr,
            announced_address,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            running,
        };
        Ok((handle, events_rx))
    }

    /// Address the media socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns whether the worker thread is still running. It stops on shutdown, and on its own
    /// only if its poll fails or it panics.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Address announced in answers' ICE candidates.
    pub fn announced_address(&self) -> SocketAddr {
        self.announced_address
    }

    /// Answers an offer whose send tracks become the leg's published tracks.
    pub async fn publish(
        &self,
        leg: LegId,
        offer: String,
        muted: MuteState,
    ) -> Result<PublishAnswer, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::Publish {
            leg,
            offer,
            muted,
            reply,
        })?;
        answer.await.map_err(|_| MediaError::Stopped)?
    }

    /// Answers an offer that receives the tracks of the publisher leg `publisher`.
    pub async fn subscribe(
        &self,
        leg: LegId,
        publisher: LegId,
        offer: String,
    ) -> Result<String, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::Subscribe {
            leg,
            publisher,
            offer,
            reply,
        })?;
        answer.await.map_err(|_| MediaError::Stopped)?
    }

    /// Creates a subscriber leg for the tracks of the publisher leg `publisher` and returns the
    /// node's SDP offer for it.
    ///
    /// The offer has one send-only section per publisher track, in the publisher's order, with
    /// the codecs the publisher negotiated and one `a=msid` stream id for all of them. It is
    /// complete: ICE-lite, the node's candidate and end-of-candidates are in it. Apply the
    /// subscriber's answer with [`MediaHandle::accept_answer`] within
    /// [`MediaConfig::answer_timeout`], or the leg is closed with
    /// [`CloseReason::AnswerTimeout`].
    pub async fn offer_subscription(
        &self,
        leg: LegId,
        publisher: LegId,
    ) -> Result<String, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::OfferSubscription {
            leg,
            publisher,
            reply,
        })?;
        answer.await.map_err(|_| MediaError::Stopped)?
    }

    /// Applies a subscriber's SDP answer to a leg created by
    /// [`MediaHandle::offer_subscription`].
    ///
    /// An answer that fails its checks leaves the leg as it was, still waiting, so a correct
    /// answer can follow. One that does not parse, is an offer or does not mirror the offer's
    /// sections gets [`MediaError::InvalidAnswer`]. One that accepts none of the offered tracks
    /// gets [`MediaError::NothingToSubscribe`]. An unknown leg gets [`MediaError::LegNotFound`].
    /// A leg that is not waiting for an answer gets [`MediaError::NotAwaitingAnswer`]: a
    /// publisher leg, a leg that answered a client's offer, or a leg already answered.
    pub async fn accept_answer(&self, leg: LegId, answer: String) -> Result<(), MediaError> {
        let (reply, result) = oneshot::channel();
        self.sender
            .send(Command::AcceptAnswer { leg, answer, reply })?;
        result.await.map_err(|_| MediaError::Stopped)?
    }

    /// Closes a leg; closing a publisher leg also closes the legs subscribed to it.
    pub async fn close_leg(&self, leg: LegId) -> Result<(), MediaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::CloseLeg { leg, reply })?;
        answer.await.map_err(|_| MediaError::Stopped)?
    }

    /// Mutes or unmutes the publisher leg's tracks of one kind in the router.
    pub async fn set_muted(
        &self,
        publisher: LegId,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), MediaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::SetMuted {
            publisher,
            kind,
            muted,
            reply,
        })?;
        answer.await.map_err(|_| MediaError::Stopped)?
    }

    /// Reads the worker's counters.
    pub async fn stats(&self) -> Result<MediaStats, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::Stats { reply })?;
        answer.await.map_err(|_| MediaError::Stopped)
    }

    /// Closes every leg, flushes the DTLS close alerts and stops the worker thread.
    pub fn shutdown(&self) {
        // A worker that already stopped has nothing left to close.
        let _ = self.sender.send(Command::Shutdown);
        let thread = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the media worker thread panicked");
        }
    }
}
