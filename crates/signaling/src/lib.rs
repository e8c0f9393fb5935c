//! The HTTP API of a Switchboard node.
//!
//! REST resources under `/v0.1` for application backends and clients (users, conversations,
//! members, legs and events), bearer-token auth, and the SDP exchange with the media worker.
//! Requests become commands on the [`room::Registry`]; commands that change media also go to
//! the [`media::MediaHandle`], and [`process_media_events`] feeds what the worker reports back
//! into the registry. An [`EventFanout`] hands every appended event, in its REST JSON shape, to
//! the sinks that send events out of the node.

mod access;
pub mod auth;
mod convert;
mod error;
mod extract;
mod fanout;
mod media_events;
mod media_legs;
mod openapi;
mod paging;
pub mod realtime;
mod routes;
mod state;
mod views;

pub use error::{ApiError, InvalidParameter};
pub use extract::{ApiJson, BodyLimit};
pub use fanout::{ApiEvent, EventFanout, EventSink};
pub use media_events::process_media_events;
pub use media_legs::close_media_legs;
pub use routes::router;
pub use state::{AppState, DEFAULT_BODY_LIMIT, SignalingConfig};
pub use views::API_BASE;
