//! The error type of every request, and its JSON form.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use media::MediaError;
use room::RoomError;
use serde::Serialize;

use crate::auth::{AccessError, AuthError};

/// One request field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvalidParameter {
    /// Path of the field in the request, such as `body.offer.sdp` or `page_size`.
    pub name: String,
    pub reason: String,
}

/// Failure of a request. Every variant maps to an HTTP status and a stable `type` code that
/// clients can match on; the message becomes the `detail`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A rule of one route that a valid token breaks; the access rules in [`AccessError`]
    /// have codes of their own.
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{detail}")]
    InvalidParameters {
        detail: String,
        parameters: Vec<InvalidParameter>,
    },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON: send `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("no resource at {0}")]
    RouteNotFound(String),
    #[error("event {event_id} not found in conversation {conversation_id}")]
    EventNotFound {
        conversation_id: String,
        event_id: u64,
    },
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("the node is shutting down and accepts no new work")]
    Draining,
}

impl ApiError {
    /// Creates an error about one request field.
    pub fn invalid_parameter(name: impl Into<String>, reason: impl Into<String>) -> Self {
        let parameter = InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        };
        ApiError::InvalidParameters {
            detail: format!("invalid {}: {}", parameter.name, parameter.reason),
            parameters: vec![parameter],
        }
    }

    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    /// Returns the stable `type` code of the error.
    pub fn code(&self) -> &'static str {
        self.classify().1
    }

    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Room(error) => classify_room(error),
            ApiError::Media(error) => classify_media(error),
            ApiError::Auth(error) => classify_auth(error),
            ApiError::Access(error) => (StatusCode::FORBIDDEN, access_code(error)),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "auth:error:forbidden"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "request:error:invalid-json"),
            ApiError::InvalidParameters { .. } => {
                (StatusCode::BAD_REQUEST, "request:error:invalid-parameters")
            }
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request:error:payload-too-large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request:error:unsupported-media-type",
            ),
            ApiError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "request:error:not-found"),
            ApiError::EventNotFound { .. } => (StatusCode::NOT_FOUND, "event:error:not-found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "request:error:method-not-allowed",
            ),
            ApiError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "system:error:draining"),
        }
    }

    fn title(&self) -> &'static str {
        let status = self.status();
        status.canonical_reason().unwrap_or("Error")
    }
}

fn classify_auth(error: &AuthError) -> (StatusCode, &'static str) {
    let code = match error {
        AuthError::MissingToken => "auth:error:missing-token",
        AuthError::MalformedHeader => "auth:error:malformed-header",
        AuthError::MalformedToken(_) => "auth:error:malformed-token",
        AuthError::UnsupportedAlgorithm { .. } => "auth:error:unsupported-algorithm",
        AuthError::InvalidSignature => "auth:error:invalid-signature",
        AuthError::Expired => "auth:error:expired",
        AuthError::NotYetValid => "auth:error:not-yet-valid",
        AuthError::IssuedInFuture { .. } => "auth:error:issued-in-future",
        AuthError::WrongApplication { .. } => "auth:error:wrong-application",
        AuthError::InvalidClaims(_) => "auth:error:invalid-claims",
        // The node's own keys and clock, not the request.
        AuthError::WeakSecret { .. }
        | AuthError::InvalidKey(_)
        | AuthError::NoKey
        | AuthError::InvalidGrant(_)
        | AuthError::Signing(_)
        | AuthError::Clock => return (StatusCode::INTERNAL_SERVER_ERROR, "system:error:internal"),
    };
    (StatusCode::UNAUTHORIZED, code)
}

fn access_code(error: &AccessError) -> &'static str {
    match error {
        AccessError::PathNotGranted { .. } => "auth:error:path-not-granted",
        AccessError::AdminOnly { .. } => "auth:error:admin-only",
        AccessError::UnknownUser { .. } => "auth:error:unknown-user",
        AccessError::NotAMember { .. } => "auth:error:not-a-member",
        AccessError::NotJoined { .. } => "auth:error:not-joined",
        AccessError::OtherUser { .. } => "auth:error:other-user",
        AccessError::ModeratorRequired { .. } => "auth:error:moderator-required",
    }
}

fn classify_room(error: &RoomError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        RoomError::UserNotFound(_) | RoomError::UserNameNotFound(_) => {
            (S::NOT_FOUND, "user:error:not-found")
        }
        RoomError::DuplicateUserName(_) => (S::CONFLICT, "user:error:duplicate-name"),
        RoomError::ConversationNotFound(_) => (S::NOT_FOUND, "conversation:error:not-found"),
        RoomError::ConversationDeleted(_) => (S::GONE, "conversation:error:deleted"),
        RoomError::DuplicateConversationName(_) => {
            (S::CONFLICT, "conversation:error:duplicate-name")
        }
        RoomError::MemberNotFound(_) => (S::NOT_FOUND, "member:error:not-found"),
        RoomError::MemberNotJoined { .. } => (S::CONFLICT, "member:error:not-joined"),
        RoomError::MemberAlreadyLeft(_) => (S::CONFLICT, "member:error:already-left"),
        RoomError::AlreadyMember { .. } => (S::CONFLICT, "member:error:already-member"),
        RoomError::LegNotFound(_) => (S::NOT_FOUND, "rtc:error:not-found"),
        RoomError::DuplicateLeg(_) => (S::CONFLICT, "rtc:error:duplicate-leg"),
        RoomError::NotAPublisherLeg(_) => (S::BAD_REQUEST, "rtc:error:not-a-publisher"),
        RoomError::OwnPublisherLeg { .. } => (S::BAD_REQUEST, "rtc:error:own-leg"),
        RoomError::AlreadySubscribed { .. } => (S::CONFLICT, "rtc:error:already-subscribed"),
        RoomError::TooManyPublisherLegs { .. } => (S::CONFLICT, "rtc:error:too-many-legs"),
        RoomError::InvalidField { .. } => (S::BAD_REQUEST, "request:error:invalid-parameters"),
        RoomError::InvalidEventType(_) => (S::BAD_REQUEST, "event:error:invalid-type"),
        RoomError::EventTypeNotPostable(_) => (S::BAD_REQUEST, "event:error:not-postable"),
        RoomError::EventBodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "event:error:body-too-large"),
        RoomError::InvalidCursor(_) => (S::BAD_REQUEST, "request:error:invalid-cursor"),
        RoomError::Storage(_) => (S::SERVICE_UNAVAILABLE, "system:error:storage-unavailable"),
    }
}

fn classify_media(error: &MediaError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match error {
        MediaError::InvalidOffer(_) | MediaError::InvalidAnswer(_) => {
            (S::BAD_REQUEST, "rtc:error:invalid-sdp")
        }
        MediaError::NoSupportedCodec(_) => (S::BAD_REQUEST, "rtc:error:no-supported-codec"),
        MediaError::NothingToPublish => (S::BAD_REQUEST, "rtc:error:nothing-to-publish"),
        MediaError::NothingToSubscribe(_) => (S::BAD_REQUEST, "rtc:error:nothing-to-subscribe"),
        MediaError::DuplicateLeg(_) => (S::CONFLICT, "rtc:error:duplicate-leg"),
        MediaError::LegNotFound(_) => (S::NOT_FOUND, "rtc:error:not-found"),
        MediaError::NotAPublisher(_) => (S::BAD_REQUEST, "rtc:error:not-a-publisher"),
        MediaError::NoSuchTrack(_) => (S::CONFLICT, "rtc:error:no-such-track"),
        MediaError::NotAwaitingAnswer(_) => (S::CONFLICT, "rtc:error:not-awaiting-answer"),
        // These come from the node itself (its configuration, its socket or the WebRTC
        // library), not from the request.
        MediaError::Config(_) | MediaError::Bind { .. } | MediaError::Rtc(_) => {
            (S::INTERNAL_SERVER_ERROR, "system:error:internal")
        }
        MediaError::Stopped => (S::SERVICE_UNAVAILABLE, "system:error:media-unavailable"),
    }
}

/// The JSON body of an error response.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable code to match on, such as `conversation:error:not-found`.
    #[serde(rename = "type")]
    code: &'static str,
    /// The HTTP status text.
    title: &'static str,
    /// The failure, the value it is about, and the next step.
    detail: String,
    /// The request fields that failed validation: for a 400, and for a 409 or 413 that one
    /// field caused.
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_parameters: Option<Vec<InvalidParameter>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.classify();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        } else {
            tracing::debug!(code, error = %self, "request rejected");
        }

        // Internal failures are logged above, and the client gets no internals: a storage
        // error's message names files and SQL.
        let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "the node failed to handle the request; see its log".to_owned()
        } else if matches!(self, ApiError::Room(RoomError::Storage(_))) {
            "the node could not store the change, so nothing changed; retry later".to_owned()
        } else {
            self.to_string()
        };
        let invalid_parameters = match &self {
            ApiError::InvalidParameters { parameters, .. } => Some(parameters.clone()),
            ApiError::Room(error) => room_parameter(error).map(|parameter| vec![parameter]),
            ApiError::EventNotFound { .. } => Some(vec![InvalidParameter {
                name: "event_id".to_owned(),
                reason: self.to_string(),
            }]),
            _ => None,
        };
        let body = ErrorBody {
            code,
            title: self.title(),
            detail,
            invalid_parameters,
        };
        (status, Json(body)).into_response()
    }
}

/// Finds the request field a room error is about, for the errors that one field causes.
fn room_parameter(error: &RoomError) -> Option<InvalidParameter> {
    let name = match error {
        RoomError::InvalidField { field, .. } => field,
        RoomError::InvalidCursor(_) => "cursor",
        RoomError::InvalidEventType(_) | RoomError::EventTypeNotPostable(_) => "type",
        RoomError::EventBodyTooLarge { .. } => "body",
        RoomError::DuplicateUserName(_) | RoomError::DuplicateConversationName(_) => "name",
        // Unknown ids and state conflicts name the id they are about. The same id may come
        // from the path or the body (a member in `from`, a user in `user_id`), and the name is
        // the one the path uses.
        RoomError::UserNotFound(_) | RoomError::AlreadyMember { .. } => "user_id",
        RoomError::UserNameNotFound(_) => "user_name",
        RoomError::ConversationNotFound(_) | RoomError::ConversationDeleted(_) => "conversation_id",
        RoomError::MemberNotFound(_)
        | RoomError::MemberNotJoined { .. }
        | RoomError::MemberAlreadyLeft(_)
        | RoomError::OwnPublisherLeg { .. }
        | RoomError::TooManyPublisherLegs { .. } => "member_id",
        RoomError::LegNotFound(_)
        | RoomError::NotAPublisherLeg(_)
        | RoomError::AlreadySubscribed { .. } => "rtc_id",
        RoomError::DuplicateLeg(_) | RoomError::Storage(_) => return None,
    };
    let reason = match error {
        RoomError::InvalidField { reason, .. } | RoomError::InvalidCursor(reason) => reason.clone(),
        other => other.to_string(),
    };
    Some(InvalidParameter {
        name: name.to_owned(),
        reason,
    })
}
