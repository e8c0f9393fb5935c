//! The OpenAPI 3 document of the REST API, served at `/v0.1/openapi.json`.
//!
//! Paths and schemas come from the `#[utoipa::path]` attributes on the handlers and the
//! `ToSchema` types they take and return, and the router registers each handler through the
//! same attribute, so a route cannot exist without its entry in the document.

use axum::body::Bytes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};

use crate::error::ErrorBody;

/// Name of the bearer-token security scheme that every REST operation requires.
pub(crate) const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "Conversation API of a Switchboard node: users, conversations, members, \
                       legs and the event log."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "users", description = "The application's users."),
        (name = "conversations", description = "Conversations, the shared spaces."),
        (name = "members", description = "Users' memberships of a conversation."),
        (name = "rtc", description = "Legs: WebRTC connections created by an SDP exchange."),
        (name = "events", description = "The event log of a conversation.")
    )
)]
struct ApiDoc;

/// Returns the document skeleton: info, tags, the security scheme and the error schema. The
/// router adds the paths.
pub(crate) fn base_document() -> OpenApi {
    ApiDoc::openapi()
}

/// Completes the document of the routes nested under `base`: prefixes their paths with it
/// and gives every operation its error response.
pub(crate) fn finish(mut document: OpenApi, base: &str) -> OpenApi {
    let paths = std::mem::take(&mut document.paths.paths);
    document.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (format!("{base}{path}"), item))
        .collect();
    ErrorResponses.modify(&mut document);
    document
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A JWT signed with the node's key: an admin token (no `sub`) or a user token.",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// Gives every operation a `default` response with the error body. Every request can fail with
/// one of the errors in [`crate::ApiError`], such as a bad token, a malformed body or a draining
/// node, and listing all of them on every path would bury the ones that matter.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_default_error(operation);
            }
        }
    }
}

fn add_default_error(operation: &mut Operation) {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let response = ResponseBuilder::new()
        .description("An error: `type` is a stable code, `detail` says what failed.")
        .content("application/json", content)
        .build();
    operation
        .responses
        .responses
        .entry("default".to_owned())
        .or_insert(response.into());
}

/// Serializes the document once, at start-up, so that each request only copies bytes.
pub(crate) fn to_json(document: &OpenApi) -> Bytes {
    match serde_json::to_vec(document) {
        Ok(json) => Bytes::from(json),
        // The document is built from static types, so this is a bug in the node, not bad input.
        Err(error) => {
            tracing::error!(%error, "serializing the OpenAPI document failed");
            Bytes::from_static(b"{}")
        }
    }
}
