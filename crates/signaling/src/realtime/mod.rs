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
//! some in a row that depend on each other (a join, then an offer).

mod envelope;
mod handlers;
mod push;
mod rest;
mod sdk;
mod session;
mod subscriptions;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use room::{ConversationId, LegCloseReason};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{Event, SocketRef, TryData};
use socketioxide::socket::DisconnectReason;
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::envelope::{Outgoing, Request, RequestError};
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
}

/// Mounts the realtime API on `router`, which also serves the REST requests that realtime
/// requests become, and makes it a sink of `fanout` so that sessions receive events.
pub fn attach(
    router: Router,
    state: AppState,
    fanout: &EventFanout,
    config: RealtimeConfig,
) -> Router {
    let path = config.path.clone();
    let (layer, io) = SocketIo::builder()
        .req_path(config.path.clone())
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .max_payload(config.max_message_bytes as u64)
        .ws_max_message_size(config.max_message_bytes)
        .build_layer();
    let realtime = Arc::new(Realtime {
        state,
        rest: RestBridge::new(router.clone()),
        sessions: Sessions::default(),
        config,
    });

    let (events, queue) = mpsc::channel(EVENT_QUEUE);
    fanout.add_sink(Arc::new(push::EventQueue::new(events)));
    tokio::spawn(push::run(Arc::clone(&realtime), queue));

    io.ns("/", move |socket: SocketRef| {
        let realtime = Arc::clone(&realtime);
        async move { realtime.connect(socket) }
    });
    info!(path = %path, "realtime API mounted");
    router.layer(layer)
}

/// One socket's connection: the session once logged in, and the queue of its requests.
struct Connection {
    socket: SocketRef,
    session: OnceLock<Arc<Session>>,
    /// Set by `session:logout`: the socket stays open until the client closes it, but is no
    /// longer logged in.
    logged_out: std::sync::atomic::AtomicBool,
}

impl Connection {
    fn session(&self) -> Option<&Arc<Session>> {
        if self.logged_out.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        self.session.get()
    }
}

impl Realtime {
    fn connect(self: Arc<Self>, socket: SocketRef) {
        let connection = Arc::new(Connection {
            socket: socket.clone(),
            session: OnceLock::new(),
            logged_out: std::sync::atomic::AtomicBool::new(false),
        });
        let (requests, queue) = mpsc::channel::<(String, Option<Value>)>(REQUEST_QUEUE);
        tokio::spawn(Arc::clone(&self).serve(Arc::clone(&connection), queue));

        socket.on_fallback(
            move |socket: SocketRef, Event(kind): Event, TryData(data): TryData<Value>| {
                let requests = requests.clone();
                async move {
                    // A payload that is not JSON is handed on as missing, to get its error reply.
                    let payload = data.ok();
                    if let Err(mpsc::error::TrySendError::Full((kind, payload))) =
                        requests.try_send((kind, payload))
                    {
                        let error = RequestError::new(
                            "too-many-requests",
                            format!(
                                "more than {REQUEST_QUEUE} requests are waiting on this socket; \
                                 wait for replies before sending more"
                            ),
                        );
                        let error = match tid_of(payload.as_ref()) {
                            Some(tid) => error.with_rid(&tid),
                            None => error,
                        };
                        emit(&socket, &error.reply(&kind));
                    }
                }
            },
        );

        let realtime = Arc::clone(&self);
        let disconnected = Arc::clone(&connection);
        socket.on_disconnect(move |reason: DisconnectReason| {
            let realtime = Arc::clone(&realtime);
            let connection = Arc::clone(&disconnected);
            async move {
                if let Some(session) = connection.session.get() {
                    info!(session = %session.id, user = %session.user_name, %reason, "realtime session ended");
                    realtime.end_session(session).await;
                }
            }
        });

        let login_timeout = self.config.login_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(login_timeout).await;
            if connection.session.get().is_none() && connection.socket.connected() {
                info!(socket = %connection.socket.id, "closing a socket that did not log in");
                let error = RequestError::new(
                    "login-timeout",
                    format!(
                        "no session:login within {} seconds; the socket is closed",
                        login_timeout.as_secs()
                    ),
                );
                emit(&connection.socket, &error.reply("session"));
                if let Err(error) = connection.socket.clone().disconnect() {
                    warn!(%error, "closing a socket that did not log in failed");
                }
            }
        });
    }

    /// Handles a socket's requests one at a time, until the socket closes.
    async fn serve(
        self: Arc<Self>,
        connection: Arc<Connection>,
        mut queue: mpsc::Receiver<(String, Option<Value>)>,
    ) {
        while let Some((kind, payload)) = queue.recv().await {
            let started = Instant::now();
            // The SDK expects a failed login as `session:error:<reason>`.
            let error_prefix = if kind == "session:login" {
                "session"
            } else {
                kind.as_str()
            };
            let reply = match Request::parse(&kind, payload) {
                Ok(request) => match self.handle(&connection, &request).await {
                    Ok(reply) => reply,
                    Err(error) => error.with_rid(&request.tid).reply(error_prefix),
                },
                Err(error) => error.reply(error_prefix),
            };
            emit(&connection.socket, &reply);
            self.state
                .metrics()
                .realtime_request_duration()
                .with_label_values(&[metric_label(&kind)])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Ends a session: closes its legs and leaves the members it joined unless the user has
    /// another live session, so everyone sees its media and membership end.
    async fn end_session(&self, session: &Arc<Session>) {
        self.sessions.remove(session);
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
        if self.sessions.has_user(&session.user_id) {
            return;
        }
        for (conversation_id, member_id) in session.take_joined() {
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

fn emit(socket: &SocketRef, outgoing: &Outgoing) {
    if let Err(error) = socket.emit(&outgoing.name, &outgoing.payload) {
        tracing::debug!(socket = %socket.id, event = %outgoing.name, %error, "reply not sent to a closed socket");
    }
}

fn tid_of(payload: Option<&Value>) -> Option<String> {
    payload?.get("tid")?.as_str().map(str::to_owned)
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
