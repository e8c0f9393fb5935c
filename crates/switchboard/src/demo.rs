//! The demo page at `/`: plain HTML and JavaScript that runs the unchanged Nexmo JavaScript SDK
//! 4.1.0 against the node's realtime API, and the tokens it logs in with.
//!
//! Routes, all without a token:
//!
//! - `GET /`: the page, `<demo.dir>/index.html`;
//! - `GET /demo/app.js`, `GET /demo/style.css`: its script and style sheet;
//! - `GET /demo/config.json`: where the page gets tokens, `{"mint_tokens", "token_url"}`;
//! - `POST /demo/token`: on a development node only, a user token for `{"user": NAME}`, and
//!   with `"conversation": NAME` also an INVITED member of that conversation;
//! - `GET /sdk/conversationClient.js`: the SDK bundle that `scripts/setup-demo` installs from
//!   npm into `<demo.dir>/node_modules`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use room::{
    Conversation, ConversationProperties, MemberAction, NewConversation, NewUser, RoomError, User,
    validate_name,
};
use serde::{Deserialize, Serialize};
use signaling::auth::TokenIssuer;
use signaling::{ApiError, ApiJson, AppState, BodyLimit};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tracing::{info, warn};

use crate::config::{Config, DEVELOPMENT_SECRET};

/// The page's files besides `index.html`, served under `/demo/`. The demo directory also
/// contains `package.json` and `node_modules/`, which the node does not serve.
const PAGE_FILES: [&str; 2] = ["app.js", "style.css"];

/// Path of the SDK bundle inside the demo directory, where `npm ci` installs it.
pub const SDK_BUNDLE: &str = "node_modules/nexmo-client/dist/conversationClient.js";

/// Lifetime of the tokens that `POST /demo/token` mints.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(4 * 60 * 60);

/// How many times `POST /demo/token` looks up or creates a conversation that other requests
/// create or delete at the same moment, before it gives up.
const CONVERSATION_ATTEMPTS: u32 = 5;

/// Pause before the next attempt, while another request finishes creating the conversation.
const CONVERSATION_RETRY_DELAY: Duration = Duration::from_millis(20);

/// State of the demo routes: the node's API state, the token issuer and the token URL.
struct Demo {
    state: AppState,
    /// Signs the page's tokens with the development secret; `None` unless the node uses it.
    issuer: Option<TokenIssuer>,
    token_url: Option<String>,
}

/// Builds the demo routes, or returns `None` when `demo.enabled` is false. The router has no
/// fallback, so that the node's API router, which it is merged into, handles every other path.
pub(crate) fn router(config: &Config, state: &AppState) -> anyhow::Result<Option<Router>> {
    let settings = &config.demo;
    if !settings.enabled {
        info!("demo page disabled");
        return Ok(None);
    }

    // Tokens signed with the public development secret prove nothing, so minting them for any
    // caller gives away nothing that the node's settings do not already give away.
    let issuer = if config.auth.uses_development_secret() {
        let issuer = TokenIssuer::hs256(&config.auth.application_id, DEVELOPMENT_SECRET.as_bytes())
            .context("failed to create the demo's token issuer")?;
        Some(issuer)
    } else {
        None
    };
    log_mode(
        &settings.dir,
        issuer.is_some(),
        settings.token_url.as_deref(),
    );

    let dir = settings.dir.clone();
    let demo = Arc::new(Demo {
        state: state.clone(),
        issuer,
        token_url: settings.token_url.clone(),
    });

    let index = dir.join("index.html");
    let mut router = Router::new()
        .route(
            "/",
            get(move |request| serve_page_file(index.clone(), request)),
        )
        .route("/demo/config.json", get(page_config))
        .route(
            "/sdk/conversationClient.js",
            get(move |request| serve_sdk(dir.join(SDK_BUNDLE), request)),
        );
    for file in PAGE_FILES {
        let path = settings.dir.join(file);
        router = router.route(
            &format!("/demo/{file}"),
            get(move |request| serve_page_file(path.clone(), request)),
        );
    }
    if demo.issuer.is_some() {
        router = router.route("/demo/token", post(mint_token));
    }
    let body_limit = state.config().body_limit;
    let router = router
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .with_state(demo);
    Ok(Some(router))
}

fn log_mode(dir: &Path, mint_tokens: bool, token_url: Option<&str>) {
    let mode = match (token_url, mint_tokens) {
        (Some(_), _) => "token_url",
        (None, true) => "development tokens",
        (None, false) => "no tokens",
    };
    info!(
        dir = %dir.display(),
        mode,
        token_url = token_url.unwrap_or_default(),
        "demo page served at /"
    );
    if !mint_tokens && token_url.is_none() {
        warn!(
            "the demo page has no way to get tokens: the node does not use the development \
             secret, so set demo.token_url to the application's token service"
        );
    }
    if !dir.join("index.html").is_file() {
        warn!(
            dir = %dir.display(),
            "the demo directory has no index.html: set demo.dir to the repository's demo directory"
        );
    }
    if !dir.join(SDK_BUNDLE).is_file() {
        warn!(
            dir = %dir.display(),
            "the demo page's SDK is not installed: run scripts/setup-demo"
        );
    }
}

/// The page's settings, which tell it where to get tokens.
#[derive(Serialize)]
struct PageConfig {
    /// Whether `POST /demo/token` exists.
    mint_tokens: bool,
    /// The application's token service, which the page uses when it is set.
    token_url: Option<String>,
}

async fn page_config(State(demo): State<Arc<Demo>>) -> Json<PageConfig> {
    Json(PageConfig {
        mint_tokens: demo.issuer.is_some(),
        token_url: demo.token_url.clone(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// Name of the user to log in as, created if no user has it.
    user: String,
    /// Name of a conversation to put the user into, created if no conversation has it.
    conversation: Option<String>,
}

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    user: TokenUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<TokenConversation>,
}

#[derive(Serialize)]
struct TokenConversation {
    id: String,
    name: String,
}

#[derive(Serialize)]
struct TokenUser {
    id: String,
    name: String,
}

/// `POST /demo/token`: mints a user token like `switchboard token --user NAME`, valid for
/// [`DEMO_TOKEN_TTL`], and creates the user first if it does not exist.
///
/// A user token can read only the conversations its user is an INVITED or JOINED member of,
/// so an application's backend puts its users into conversations. With a conversation name,
/// the node plays that backend. It finds or creates the video conversation with that name, and
/// makes the user an INVITED member of it unless the user is INVITED or JOINED there already.
async fn mint_token(
    State(demo): State<Arc<Demo>>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if demo.state.is_draining() {
        return Err(ApiError::Draining);
    }
    // The route exists only with an issuer.
    let Some(issuer) = &demo.issuer else {
        return Err(ApiError::RouteNotFound("/demo/token".to_owned()));
    };
    // Both names are checked before anything is created, so that a bad request creates
    // neither a user nor a conversation.
    if let Some(name) = &request.conversation {
        validate_name("conversation", name)?;
    }
    let user = find_or_create_user(&demo.state, &request.user)?;
    let conversation = match &request.conversation {
        Some(name) => Some(invite_to_conversation(&demo.state, &user, name).await?),
        None => None,
    };
    let token = issuer.mint(Some(&user.name), DEMO_TOKEN_TTL)?;
    Ok(Json(TokenResponse {
        token,
        user: TokenUser {
            id: user.id.to_string(),
            name: user.name,
        },
        conversation: conversation.map(|conversation| TokenConversation {
            id: conversation.id.to_string(),
            name: conversation.name,
        }),
    }))
}

/// Makes the user an INVITED member of the conversation named `name`, which is found or
/// created, unless the user has an INVITED or JOINED member there. Returns the conversation.
async fn invite_to_conversation(
    state: &AppState,
    user: &User,
    name: &str,
) -> Result<Conversation, ApiError> {
    let mut attempt = 1;
    loop {
        let result = find_or_create_conversation(state, name).and_then(|conversation| {
            invite_user(state, &conversation, user)?;
            Ok(conversation)
        });
        let error = match result {
            Ok(conversation) => return Ok(conversation),
            Err(error) => error,
        };
        // Another request created the conversation and has not stored it yet, or deleted it
        // since it was found, so the next attempt finds or creates it again.
        let retry = matches!(
            error,
            RoomError::DuplicateConversationName(_)
                | RoomError::ConversationNotFound(_)
                | RoomError::ConversationDeleted(_)
        );
        if !retry || attempt == CONVERSATION_ATTEMPTS {
            return Err(error.into());
        }
        attempt += 1;
        tokio::time::sleep(CONVERSATION_RETRY_DELAY).await;
    }
}

/// Adds the user as an INVITED member, with no inviter because the application's backend adds
/// it rather than another member. A user that is INVITED or JOINED already keeps its member.
fn invite_user(
    state: &AppState,
    conversation: &Conversation,
    user: &User,
) -> Result<(), RoomError> {
    let invited =
        state
            .registry()
            .add_member(&conversation.id, &user.id, MemberAction::Invite, None);
    match invited {
        Ok(added) => {
            info!(
                conversation = %conversation.id,
                member = %added.member.id,
                user = %user.id,
                "demo user invited"
            );
            Ok(())
        }
        Err(RoomError::AlreadyMember { member, state, .. }) => {
            info!(
                conversation = %conversation.id,
                member = %member,
                user = %user.id,
                state = %state,
                "demo user is already a member"
            );
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Finds the conversation named `name`, or creates it as a video conversation, which the
/// JavaScript SDK needs for sending video.
fn find_or_create_conversation(state: &AppState, name: &str) -> Result<Conversation, RoomError> {
    let registry = state.registry();
    if let Some(conversation) = registry.conversation_by_name(name) {
        return Ok(conversation);
    }
    let conversation = registry.create_conversation(NewConversation {
        name: Some(name.to_owned()),
        display_name: Some(name.to_owned()),
        properties: ConversationProperties {
            video: true,
            ttl: None,
        },
    })?;
    info!(
        conversation = %conversation.id,
        name = %conversation.name,
        "demo conversation created"
    );
    Ok(conversation)
}

fn find_or_create_user(state: &AppState, name: &str) -> Result<User, ApiError> {
    let registry = state.registry();
    match registry.user_by_name(name) {
        Ok(user) => return Ok(user),
        Err(RoomError::UserNameNotFound(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let new_user = NewUser {
        name: name.to_owned(),
        display_name: None,
    };
    match registry.create_user(new_user) {
        Ok(user) => {
            info!(user = %user.id, name = %user.name, "demo user created");
            Ok(user)
        }
        // Another request created it since the lookup above.
        Err(RoomError::DuplicateUserName(_)) => Ok(registry.user_by_name(name)?),
        Err(RoomError::InvalidField { reason, .. }) => {
            Err(ApiError::invalid_parameter("user", reason))
        }
        Err(error) => Err(error.into()),
    }
}

async fn serve_page_file(path: PathBuf, request: Request) -> Response {
    serve_file(&path, request, || {
        not_found(format!(
            "the demo page's file {} is missing: set demo.dir to the repository's demo directory",
            path.display()
        ))
    })
    .await
}

async fn serve_sdk(path: PathBuf, request: Request) -> Response {
    serve_file(&path, request, || {
        not_found(format!(
            "the Nexmo JavaScript SDK is not installed at {}: run scripts/setup-demo in the \
             repository, then reload the page",
            path.display()
        ))
    })
    .await
}

/// Serves one file with `ServeFile`, which handles `HEAD`, conditional and range requests,
/// and replaces its empty 404 with `missing`.
async fn serve_file(path: &Path, request: Request, missing: impl FnOnce() -> Response) -> Response {
    let response = match ServeFile::new(path).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.status() == StatusCode::NOT_FOUND {
        return missing();
    }
    response.map(Body::new)
}

/// Builds a 404 in the API's error shape, with a detail that names the next step.
fn not_found(detail: String) -> Response {
    let body = NotFound {
        code: "request:error:not-found",
        title: "Not Found",
        detail,
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

#[derive(Serialize)]
struct NotFound {
    #[serde(rename = "type")]
    code: &'static str,
    title: &'static str,
    detail: String,
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
