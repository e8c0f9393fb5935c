//! The realtime API: socket.io at `/rtc` on the HTTP port, in the protocol of the Nexmo
//! JavaScript SDK 4.x (socket.io v2, engine.io 3, WebSocket transport).
//!
//! A client logs in with `session:login` and a user token of the REST API, then sends
//! requests: conversations, members, legs and mute. Each request is carried out as a REST
//! request with the session's token, so both APIs share their rules and error codes. The node
//! pushes every conversation event to the live sessions of the conversation's members, and
//! offers each session that publishes with direction `both` a downstream leg for every other
//! member's publisher leg (`rtc:offer`), whose answer comes back as `rtc:answer`.
//!
//! Requests of one socket are handled one at a time in arrival order, because the SDK sends
//! some in a row that depend on each other (a join, then an offer). A socket's session ends
//! after the request in progress, so that nothing a request creates outlives the session.

mod envelope;
mod handlers;
mod outbox;
mod push;
mod rest;
mod sdk;
mod session;
mod subscriptions;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use room::{ConversationId, LegCloseReason};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{Event, SocketRef, TryData};
use socketioxide::socket::DisconnectReason;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use self::envelope::{Request, RequestError};
use self::outbox::Outbox;
use self::rest::RestBridge;
use self::session::{Session, Sessions};
use crate::fanout::{ApiEvent, EventFanout};
use crate::state::AppState;

/// Settings of the realtime API.
#[derive(Clone, Debug)]
pub struct RealtimeConfig {
    /// Path of the socket.io endpoint; clients connect to `<path>/?EIO=3&transport=websocket`.
    pub path: String,
    /// Time a socket may stay connected without logging in before the node closes it.
    pub login_timeout: Duration,
    /// Interval of engine.io heartbeats, sent to clients in the handshake.
    pub ping_interval: Duration,
    /// Time without a heartbeat after which the node closes a socket and ends its session.
    pub ping_timeout: Duration,
    /// Maximum size of one message from a client, in bytes. An SDP offer with many codecs is
    /// about 10 KB.
    pub max_message_bytes: usize,
}

/// Default path of the realtime API, the one the SDK uses by default.
pub const DEFAULT_REALTIME_PATH: &str = "/rtc";

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            path: DEFAULT_REALTIME_PATH.to_owned(),
            login_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(10),
            max_message_bytes: 256 * 1024,
        }
    }
}

/// Maximum number of requests of one socket waiting to be handled. The SDK waits for most
/// replies, so only a misbehaving client fills it, and its extra requests get an error reply.
const REQUEST_QUEUE: usize = 64;

/// Maximum number of packets waiting to be written to one socket: replies, pushed events and
/// heartbeats. A socket whose buffer is full is closed (see [`Outbox`]), so it must hold the
/// bursts of a working client: a flood's error replies, or the events of many members joining
/// at once.
const SEND_BUFFER: usize = 1024;

/// Maximum number of events waiting to be pushed to sessions. Events that do not fit are
/// dropped and logged, because the registry must never wait for a slow socket.
const EVENT_QUEUE: usize = 16 * 1024;

/// Request types the realtime API handles. Anything else gets `<type>:error:unsupported`.
pub(crate) const SUPPORTED_TYPES: [&str; 18] = [
    "session:login",
    "session:logout",
    "session:update-token",
    "user:conversations",
    "new:conversation",
    "conversation:get",
    "conversation:join",
    "conversation:invite",
    "conversation:member:delete",
    "conversation:events",
    "rtc:new",
    "rtc:answer",
    "rtc:terminate",
    "rtc:ice",
    "audio:mute:on",
    "audio:mute:off",
    "video:mute:on",
    "video:mute:off",
];

/// State of the realtime API shared by every socket.
pub(crate) struct Realtime {
    state: AppState,
    rest: RestBridge,
    sessions: Sessions,
    config: RealtimeConfig,
    /// Sockets whose requests are still being served or whose session is still ending.
    serving: AtomicUsize,
    /// Becomes true when the node stops, which ends every session like a closed socket does.
    stopping: watch::Sender<bool>,
}

/// Closes the realtime API's sockets when the node stops.
#[derive(Clone)]
pub struct RealtimeHandle {
    io: SocketIo,
    realtime: Arc<Realtime>,
}

impl RealtimeHandle {
    /// Closes every socket, and waits up to `timeout` for their sessions to end: their legs
    /// closed and the members they joined left. Returns the number of sockets still ending
    /// then.
    pub async fn close(&self, timeout: Duration) -> usize {
        let sockets = self.realtime.serving.load(Ordering::SeqCst);
        info!(sockets, "closing the realtime sockets");
        self.io.close().await;
        // socketioxide 0.18 removes its namespaces before it closes their sockets, and then
        // finds no socket whose disconnect handler it could call, so the sessions are ended
        // from here.
        self.realtime.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let serving = self.realtime.serving.load(Ordering::SeqCst);
            if serving == 0 || tokio::time::Instant::now() >= deadline {
                return serving;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Mounts the realtime API on `router`, which also serves the REST requests that realtime
/// requests become, and makes it a sink of `fanout` so that sessions receive events. The
/// handle closes the sockets when the node stops.
pub fn attach(
    router: Router,
    state: AppState,
    fanout: &EventFanout,
    config: RealtimeConfig,
) -> (Router, RealtimeHandle) {
    let path = config.path.clone();
    let (layer, io) = SocketIo::builder()
        .req_path(config.path.clone())
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .max_payload(config.max_message_bytes as u64)
        .ws_max_message_size(config.max_message_bytes)
        .max_buffer_size(SEND_BUFFER)
        .build_layer();
    let realtime = Arc::new(Realtime {
        state,
        rest: RestBridge::new(router.clone()),
        sessions: Sessions::default(),
        config,
        serving: AtomicUsize::new(0),
        stopping: watch::Sender::new(false),
    });

    let (events, queue) = mpsc::channel(EVENT_QUEUE);
    fanout.add_sink(Arc::new(push::EventQueue::new(events)));
    tokio::spawn(push::run(Arc::clone(&realtime), queue));

    let connecting = Arc::clone(&realtime);
    io.ns("/", move |socket: SocketRef| {
        // socketioxide runs the returned future as a task of its own, after it has sent the
        // connect packet. The handlers are registered here instead, before the task starts,
        // so that a request sent right after the connect packet finds them.
        Arc::clone(&connecting).connect(socket);
        std::future::ready(())
    });
    info!(path = %path, "realtime API mounted");
    let handle = RealtimeHandle { io, realtime };
    (router.layer(layer), handle)
}

/// A request as it waits in a socket's queue.
struct QueuedRequest {
    kind: String,
    /// The payload, or why it cannot be read as a JSON value, for its error reply.
    payload: Result<Value, String>,
    /// The `tid` of a payload that is no JSON value but an object with a string `tid`, such as
    /// one with a binary attachment or nested too deep, so that its error reply has a `rid`.
    tid: Option<String>,
}

/// Only the `tid` of a request payload. Its other fields are skipped without being parsed into
/// values, which reads payloads that a `serde_json::Value` cannot hold.
#[derive(Deserialize)]
struct RequestTid {
    tid: Option<String>,
}

/// One socket's connection: the session once logged in, and the queue of its requests.
struct Connection {
    outbox: Arc<Outbox>,
    session: OnceLock<Arc<Session>>,
    /// Set by `session:logout`: the socket stays open until the client closes it, but is no
    /// longer logged in.
    logged_out: AtomicBool,
    /// Becomes true when the socket closes. The task serving the socket then ends its session,
    /// after the request in progress and without the requests still queued.
    closed: watch::Sender<bool>,
}

impl Connection {
    fn session(&self) -> Option<&Arc<Session>> {
        if self.logged_out.load(Ordering::SeqCst) {
            return None;
        }
        self.session.get()
    }

    fn socket(&self) -> &SocketRef {
        self.outbox.socket()
    }
}

impl Realtime {
    fn connect(self: Arc<Self>, socket: SocketRef) {
        let outbox = Arc::new(Outbox::new(socket.clone()));
        let connection = Arc::new(Connection {
            outbox: Arc::clone(&outbox),
            session: OnceLock::new(),
            logged_out: AtomicBool::new(false),
            closed: watch::Sender::new(false),
        });
        let (requests, queue) = mpsc::channel::<QueuedRequest>(REQUEST_QUEUE);
        self.serving.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(Arc::clone(&self).serve(Arc::clone(&connection), queue));

        // The socket holds its handlers, so the handler holds the outbox weakly: a strong
        // reference would keep the socket alive through itself.
        let weak_outbox: Weak<Outbox> = Arc::downgrade(&outbox);
        socket.on_fallback(
            move |Event(kind): Event,
                  TryData(envelope): TryData<RequestTid>,
                  TryData(data): TryData<Value>| {
                // socketioxide runs each handler's future as a task of its own, and tasks may
                // start in any order. The request is queued here, in the part that runs in
                // arrival order.
                let request = QueuedRequest {
                    kind,
                    payload: data.map_err(|error| error.to_string()),
                    tid: envelope
                        .ok()
                        .and_then(|envelope| envelope.tid)
                        .filter(|tid| !tid.is_empty()),
                };
                if let Err(mpsc::error::TrySendError::Full(request)) = requests.try_send(request)
                    && let Some(outbox) = weak_outbox.upgrade()
                {
                    let error = RequestError::new(
                        "too-many-requests",
                        format!(
                            "more than {REQUEST_QUEUE} requests are waiting on this socket; \
                             wait for replies before sending more"
                        ),
                    );
                    let error = match request.tid {
                        Some(tid) => error.with_rid(&tid),
                        None => error,
                    };
                    outbox.send(&error.reply(error_prefix(&request.kind)));
                }
                std::future::ready(())
            },
        );

        let disconnected = Arc::clone(&connection);
        socket.on_disconnect(move |reason: DisconnectReason| {
            if let Some(session) = disconnected.session.get() {
                info!(session = %session.id, user = %session.user_name, %reason, "realtime socket closed");
            }
            disconnected.closed.send_replace(true);
            std::future::ready(())
        });
        // A socket that closed before its disconnect handler was registered calls none.
        if !socket.connected() {
            connection.closed.send_replace(true);
        }

        let login_timeout = self.config.login_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(login_timeout).await;
            if connection.session.get().is_none() && connection.socket().connected() {
                info!(socket = %connection.socket().id, "closing a socket that did not log in");
                let error = RequestError::new(
                    "login-timeout",
                    format!(
                        "no session:login within {} seconds; the socket is closed",
                        login_timeout.as_secs()
                    ),
                );
                connection.outbox.send(&error.reply("session"));
                if let Err(error) = connection.socket().clone().disconnect() {
                    warn!(%error, "closing a socket that did not log in failed");
                }
            }
        });
    }

    /// Handles a socket's requests one at a time until the socket closes, then ends its
    /// session.
    async fn serve(
        self: Arc<Self>,
        connection: Arc<Connection>,
        mut queue: mpsc::Receiver<QueuedRequest>,
    ) {
        let mut closed = connection.closed.subscribe();
        let mut stopping = self.stopping.subscribe();
        loop {
            let next = tokio::select! {
                biased;
                _ = closed.wait_for(|closed| *closed) => None,
                _ = stopping.wait_for(|stopping| *stopping) => None,
                request = queue.recv() => request,
            };
            let Some(request) = next else {
                break;
            };
            self.serve_one(&connection, request).await;
        }
        // A session that logged out has ended already.
        if let Some(session) = connection.session() {
            info!(session = %session.id, user = %session.user_name, "realtime session ended");
            self.end_session(session).await;
        }
        self.serving.fetch_sub(1, Ordering::SeqCst);
    }

    async fn serve_one(self: &Arc<Self>, connection: &Connection, queued: QueuedRequest) {
        let started = Instant::now();
        let kind = queued.kind;
        let prefix = error_prefix(&kind);
        let parsed = match queued.payload {
            Ok(payload) => Request::parse(&kind, Some(payload)),
            // serde_json reads at most 128 nested levels, and socketioxide hands binary
            // attachments over as bytes, which no JSON value holds.
            Err(reason) => Err(RequestError::invalid_request(format!(
                "the payload cannot be read as JSON ({reason}); send a JSON object with a tid, \
                 without binary attachments and nested at most 128 levels deep"
            ))),
        };
        let reply = match parsed {
            Ok(request) => match self.handle(connection, &request).await {
                Ok(reply) => reply,
                Err(error) => error.with_rid(&request.tid).reply(prefix),
            },
            Err(error) => match (&error.rid, queued.tid) {
                (None, Some(tid)) => error.with_rid(&tid).reply(prefix),
                _ => error.reply(prefix),
            },
        };
        connection.outbox.send(&reply);
        self.state
            .metrics()
            .realtime_request_duration()
            .with_label_values(&[metric_label(&kind)])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Ends a session: closes its legs and leaves the members it joined, so everyone sees its
    /// media and membership end. Another live session of the user takes the members over
    /// instead, and leaves them when it ends.
    async fn end_session(&self, session: &Arc<Session>) {
        let leaving = self.sessions.remove(session);
        let legs: Vec<_> = session.media().legs.drain().collect();
        for (leg_id, own) in legs {
            subscriptions::close_leg(
                &self.state,
                &own.conversation_id,
                &leg_id,
                LegCloseReason::SessionEnded,
            )
            .await;
            for downstream in own.offers.values() {
                subscriptions::close_leg(
                    &self.state,
                    &own.conversation_id,
                    downstream,
                    LegCloseReason::SessionEnded,
                )
                .await;
            }
        }
        for (conversation_id, member_id) in leaving {
            subscriptions::leave(&self.state, &conversation_id, &member_id).await;
        }
    }

    /// Runs the subscription reconciliation of a conversation in the background.
    fn reconcile_later(self: &Arc<Self>, conversation_id: ConversationId) {
        let realtime = Arc::clone(self);
        tokio::spawn(async move {
            subscriptions::reconcile(&realtime, &conversation_id).await;
        });
    }
}

/// Returns the request type that names the error replies to `kind`: the SDK expects a failed
/// login as `session:error:<reason>`.
fn error_prefix(kind: &str) -> &str {
    if kind == "session:login" {
        "session"
    } else {
        kind
    }
}

/// Returns the metric label of a request type: the type when supported, else `other`, so that
/// clients cannot create series.
fn metric_label(kind: &str) -> &str {
    SUPPORTED_TYPES
        .iter()
        .find(|supported| **supported == kind)
        .copied()
        .unwrap_or("other")
}

/// An event waiting to be pushed, with its conversation.
pub(crate) type QueuedEvent = (ConversationId, ApiEvent);
