//! The request types of the realtime API, each carried out as REST requests where the REST API
//! has the operation, and against the media worker for the answers to the node's offers.

use std::sync::Arc;

use axum::http::Method;
use media::MediaError;
use room::{ConversationId, LegId, MemberId};
use serde_json::{Map, Value, json};
use tracing::info;

use super::envelope::{Outgoing, Request, RequestError};
use super::rest::segment;
use super::sdk;
use super::session::{OwnLeg, Session};
use super::{Connection, Realtime, SUPPORTED_TYPES};
use crate::auth::AuthError;
use crate::convert::media_leg;
use crate::views::ConversationView;

/// Maximum number of REST pages read to answer one list request: 5,000 conversations or
/// events at 100 a page.
const MAX_PAGES: usize = 50;

/// Page size of the REST requests behind list requests.
const PAGE_SIZE: usize = 100;

impl Realtime {
    /// Handles one request and returns its reply.
    pub(super) async fn handle(
        self: &Arc<Self>,
        connection: &Connection,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let kind = request.kind.as_str();
        if !SUPPORTED_TYPES.contains(&kind) {
            return Err(RequestError::new(
                "unsupported",
                format!(
                    "the realtime API does not handle {kind:?}; it handles {}",
                    SUPPORTED_TYPES.join(", ")
                ),
            ));
        }
        if kind == "session:login" {
            return self.login(connection, request);
        }
        let Some(session) = connection.session() else {
            return Err(RequestError::new(
                "unauthenticated",
                "the socket is not logged in: send session:login with a user token first",
            ));
        };
        match kind {
            "session:logout" => self.logout(connection, session, request).await,
            "session:update-token" => self.update_token(session, request),
            "user:conversations" => self.user_conversations(session, request).await,
            "new:conversation" => self.new_conversation(session, request).await,
            "conversation:get" => self.get_conversation(session, request).await,
            "conversation:join" => self.join(session, request).await,
            "conversation:invite" => self.invite(session, request).await,
            "conversation:member:delete" => self.delete_member(session, request).await,
            "conversation:events" => self.events(session, request).await,
            "rtc:new" => self.publish(session, request).await,
            "rtc:answer" => self.answer(session, request).await,
            "rtc:terminate" => self.terminate(session, request).await,
            // The 4.x SDK sends every candidate in its SDP. Trickled ones are acknowledged and
            // not needed: ICE-lite learns the peer's address from its checks.
            "rtc:ice" => Ok(Outgoing::success(request, "rtc:ice:success", json!({}))),
            _ => self.mute(session, request).await,
        }
    }

    fn login(&self, connection: &Connection, request: &Request) -> Result<Outgoing, RequestError> {
        if connection.session().is_some() {
            return Err(RequestError::new(
                "already-logged-in",
                "the socket is logged in already; open another socket for another session",
            ));
        }
        let token = request.required_body_str("token")?;
        let caller = self.state.verifier().verify(token).map_err(login_error)?;
        let Some(user_name) = caller.user_name() else {
            return Err(RequestError::new(
                "invalid-token",
                "a session needs a user token, whose sub claim names the user; this is an \
                 admin token",
            ));
        };
        let user = self.state.registry().user_by_name(user_name).map_err(|_| {
            RequestError::new(
                "user-not-found",
                format!("the token's user {user_name:?} does not exist; create it first"),
            )
        })?;
        if connection.session.get().is_some() {
            // A session that logged out keeps the socket; a new login needs a new socket, as
            // the SDK's own logout disconnects.
            return Err(RequestError::new(
                "logged-out",
                "this socket logged out; connect again to log in",
            ));
        }

        let session = Arc::new(Session::new(
            format!("SES-{}", uuid::Uuid::new_v4()),
            user.id.clone(),
            user.name.clone(),
            token.to_owned(),
            Arc::clone(&connection.outbox),
        ));
        if connection.session.set(Arc::clone(&session)).is_err() {
            return Err(RequestError::new(
                "already-logged-in",
                "the socket is logged in already",
            ));
        }
        self.sessions.insert(Arc::clone(&session));
        info!(session = %session.id, user = %user.name, "realtime session started");
        Ok(Outgoing::success(
            request,
            "session:success",
            json!({ "id": session.id, "user_id": user.id, "name": user.name }),
        ))
    }

    async fn logout(
        &self,
        connection: &Connection,
        session: &Arc<Session>,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        connection
            .logged_out
            .store(true, std::sync::atomic::Ordering::SeqCst);
        info!(session = %session.id, user = %session.user_name, "realtime session logged out");
        self.end_session(session).await;
        Ok(Outgoing::success(request, "session:logged-out", json!({})))
    }

    fn update_token(&self, session: &Session, request: &Request) -> Result<Outgoing, RequestError> {
        let token = request.required_body_str("token")?;
        let caller = self.state.verifier().verify(token).map_err(login_error)?;
        if caller.user_name() != Some(session.user_name.as_str()) {
            return Err(RequestError::new(
                "invalid-token",
                format!(
                    "the new token must be for the session's user {:?}",
                    session.user_name
                ),
            ));
        }
        session.set_token(token.to_owned());
        Ok(Outgoing::success(
            request,
            "session:update-token:success",
            json!({}),
        ))
    }

    async fn user_conversations(
        &self,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let first = format!(
            "/users/{}/conversations?page_size={PAGE_SIZE}",
            segment(session.user_id.as_str())
        );
        let pages = self.read_pages(session, first, "conversations").await?;
        let conversations: Vec<Value> = pages.iter().map(sdk::user_conversation).collect();
        Ok(Outgoing::success(
            request,
            "user:conversations:success",
            Value::Array(conversations),
        ))
    }

    async fn new_conversation(
        &self,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let mut body = Map::new();
        for field in ["name", "display_name", "properties"] {
            if let Some(value) = request.body.get(field) {
                body.insert(field.to_owned(), value.clone());
            }
        }
        // The SDK takes its audio-only path in a conversation without `properties.video`, and
        // the node serves only video legs to the SDK, so its conversations are video ones.
        let properties = body.entry("properties").or_insert_with(|| json!({}));
        if let Some(properties) = properties.as_object_mut() {
            properties.entry("video").or_insert(json!(true));
        }
        let created = self
            .call(
                session,
                Method::POST,
                "/conversations",
                Some(Value::Object(body)),
            )
            .await?;
        if let Some(id) = created["id"].as_str() {
            session.record_created(ConversationId::from(id));
        }
        Ok(Outgoing::success(
            request,
            "new:conversation:success",
            json!({ "id": created["id"] }),
        ))
    }

    async fn get_conversation(
        &self,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let read = self
            .call(
                session,
                Method::GET,
                &format!("/conversations/{}", segment(cid)),
                None,
            )
            .await;
        let conversation_id = ConversationId::from(cid);
        let conversation = match read {
            Ok(conversation) => conversation,
            // The SDK reads a conversation it created before it joins it, which the REST rules
            // (members only) reject. Its creator may read it.
            Err(error) if is_access_error(&error) && session.created(&conversation_id) => {
                let conversation = self.state.registry().conversation(&conversation_id)?;
                serde_json::to_value(ConversationView::from(conversation)).map_err(|error| {
                    RequestError::new("internal", format!("encoding the conversation: {error}"))
                })?
            }
            Err(error) => return Err(error),
        };
        Ok(Outgoing::success(
            request,
            "conversation:get:success",
            sdk::conversation(&conversation),
        ))
    }

    async fn join(
        self: &Arc<Self>,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        if let Some(user_id) = request.body_str("user_id")?
            && user_id != session.user_id.as_str()
        {
            return Err(RequestError::invalid_parameter(
                "body.user_id",
                format!("a session joins only as its own user {}", session.user_id),
            ));
        }
        let member = self
            .call(
                session,
                Method::POST,
                &format!("/conversations/{}/members", segment(cid)),
                Some(json!({ "user_id": session.user_id, "action": "join" })),
            )
            .await?;
        if let Some(member_id) = member["id"].as_str() {
            session.record_joined(ConversationId::from(cid), MemberId::from(member_id));
        }
        Ok(Outgoing::success(
            request,
            "conversation:join:success",
            sdk::member(&member),
        ))
    }

    async fn invite(&self, session: &Session, request: &Request) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let mut body = json!({ "action": "invite" });
        let user_id = request.body_str("user_id")?;
        let user_name = request.body_str("user_name")?;
        if user_id.is_none() && user_name.is_none() {
            return Err(RequestError::invalid_parameter(
                "body.user_name",
                "either body.user_id or body.user_name names the user to invite",
            ));
        }
        if let Some(user_id) = user_id {
            body["user_id"] = json!(user_id);
        }
        if let Some(user_name) = user_name {
            body["user_name"] = json!(user_name);
        }
        let member = self
            .call(
                session,
                Method::POST,
                &format!("/conversations/{}/members", segment(cid)),
                Some(body),
            )
            .await?;
        Ok(Outgoing::success(
            request,
            "conversation:invite:success",
            sdk::member(&member),
        ))
    }

    async fn delete_member(
        &self,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let member_id = match request.body_str("member_id")? {
            Some(member_id) => member_id,
            None => request
                .to
                .as_deref()
                .ok_or_else(|| RequestError::invalid_parameter("body.member_id", "is missing"))?,
        };
        let member = self
            .call(
                session,
                Method::DELETE,
                &format!(
                    "/conversations/{}/members/{}",
                    segment(cid),
                    segment(member_id)
                ),
                None,
            )
            .await?;
        session.forget_joined(&ConversationId::from(cid), &MemberId::from(member_id));
        Ok(Outgoing::success(
            request,
            "conversation:member:delete:success",
            sdk::member(&member),
        ))
    }

    async fn events(&self, session: &Session, request: &Request) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let mut query = vec![("page_size".to_owned(), PAGE_SIZE.to_string())];
        for field in ["start_id", "end_id", "order"] {
            match request.body.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(value)) => query.push((field.to_owned(), value.clone())),
                Some(Value::Number(value)) => query.push((field.to_owned(), value.to_string())),
                Some(_) => {
                    return Err(RequestError::invalid_parameter(
                        format!("body.{field}"),
                        "must be a string or a number",
                    ));
                }
            }
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let first = format!("/conversations/{}/events?{query}", segment(cid));
        let events = self.read_pages(session, first, "events").await?;
        let events: Vec<Value> = events
            .iter()
            .filter_map(|event| sdk::event(cid, event).map(|(_, payload)| payload))
            .collect();
        Ok(Outgoing::success(
            request,
            "conversation:events:success",
            Value::Array(events),
        ))
    }

    async fn publish(
        self: &Arc<Self>,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let from = request.sender()?;
        let receives = publish_direction(request)?;
        let sdp = match &request.body.get("offer") {
            Some(Value::Object(offer)) => match offer.get("sdp") {
                Some(Value::String(sdp)) => sdp.clone(),
                _ => {
                    return Err(RequestError::invalid_parameter(
                        "body.offer.sdp",
                        "is missing or not a string",
                    ));
                }
            },
            _ => {
                return Err(RequestError::invalid_parameter(
                    "body.offer",
                    "is missing or not an object with sdp",
                ));
            }
        };
        let created = self
            .call(
                session,
                Method::POST,
                &format!("/conversations/{}/rtc", segment(cid)),
                Some(json!({ "from": from, "body": { "offer": { "sdp": sdp } } })),
            )
            .await?;
        let (Some(rtc_id), Some(answer)) = (
            created["rtc_id"].as_str(),
            created["body"]["answer"]["sdp"].as_str(),
        ) else {
            return Err(RequestError::new(
                "internal",
                "the leg was created without an rtc_id or an answer",
            ));
        };
        let conversation_id = ConversationId::from(cid);
        session.record_opened(LegId::from(rtc_id));
        session.media().legs.insert(
            LegId::from(rtc_id),
            OwnLeg {
                conversation_id: conversation_id.clone(),
                member_id: MemberId::from(from),
                receives,
                offers: Default::default(),
            },
        );
        // The SDK waits for `rtc:new:success` before it applies an answer with that rtc_id,
        // so the answer may go out first.
        session.emit(
            "rtc:answer",
            &json!({ "cid": cid, "body": { "rtc_id": rtc_id, "answer": answer } }),
        );
        self.reconcile_later(conversation_id);
        Ok(Outgoing::success(
            request,
            "rtc:new:success",
            json!({ "rtc_id": rtc_id }),
        ))
    }

    async fn answer(&self, session: &Session, request: &Request) -> Result<Outgoing, RequestError> {
        let own_leg = LegId::from(request.leg()?);
        let publisher_leg = LegId::from(request.required_body_str("leg_id")?);
        let answer = request.required_body_str("answer")?;
        let downstream = {
            let media = session.media();
            let own = media.legs.get(&own_leg).ok_or_else(|| {
                RequestError::new(
                    "unknown-leg",
                    format!("rtc_id {own_leg} is not a leg this session opened with rtc:new"),
                )
            })?;
            if request.cid.as_deref() != Some(own.conversation_id.as_str()) {
                return Err(RequestError::invalid_parameter(
                    "cid",
                    format!("leg {own_leg} is in conversation {}", own.conversation_id),
                ));
            }
            own.offers.get(&publisher_leg).cloned().ok_or_else(|| {
                RequestError::new(
                    "unknown-leg",
                    format!(
                        "no rtc:offer for publisher leg {publisher_leg} was sent on leg {own_leg}"
                    ),
                )
            })?
        };
        self.state
            .media()
            .accept_answer(media_leg(&downstream), answer.to_owned())
            .await
            .map_err(answer_error)?;
        info!(
            session = %session.id,
            leg = %downstream,
            publisher_leg = %publisher_leg,
            "subscriber leg answered"
        );
        Ok(Outgoing::success(request, "rtc:answer:success", json!({})))
    }

    async fn terminate(
        self: &Arc<Self>,
        session: &Session,
        request: &Request,
    ) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let leg = request.leg()?;
        let ended = self
            .call(
                session,
                Method::DELETE,
                &format!("/conversations/{}/rtc/{}", segment(cid), segment(leg)),
                None,
            )
            .await;
        match ended {
            Ok(_) => {}
            // Leaving closes the member's legs, and the SDK then ends each of them itself. A leg
            // of this session that is gone already has ended as requested.
            Err(error)
                if error.code.as_deref() == Some("rtc:error:not-found")
                    && session.opened(&LegId::from(leg)) => {}
            Err(error) => return Err(error),
        }
        self.reconcile_later(ConversationId::from(cid));
        Ok(Outgoing::success(
            request,
            "rtc:terminate:success",
            json!({ "rtc_id": leg }),
        ))
    }

    async fn mute(&self, session: &Session, request: &Request) -> Result<Outgoing, RequestError> {
        let cid = request.conversation()?;
        let from = request.sender()?;
        let to = request.to.as_deref().unwrap_or(from);
        let posted = self
            .call(
                session,
                Method::POST,
                &format!("/conversations/{}/events", segment(cid)),
                Some(json!({
                    "type": request.kind,
                    "from": from,
                    "to": to,
                    "body": Value::Object(request.body.clone()),
                })),
            )
            .await?;
        Ok(Outgoing::success(
            request,
            format!("{}:success", request.kind),
            json!({ "id": posted["id"], "timestamp": posted["timestamp"] }),
        ))
    }

    async fn call(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RequestError> {
        self.rest.call(&session.token(), method, path, body).await
    }

    /// Reads a REST list from `first` on, following `next` links, and returns its items.
    async fn read_pages(
        &self,
        session: &Session,
        first: String,
        name: &str,
    ) -> Result<Vec<Value>, RequestError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next.take() {
            let page = self.call(session, Method::GET, &path, None).await?;
            items.extend(sdk::page_items(&page, name).iter().cloned());
            pages += 1;
            if pages < MAX_PAGES {
                next = sdk::next_page(&page);
            }
        }
        Ok(items)
    }
}

/// Reads `body.video` of `rtc:new` and returns whether the client receives (direction `both`).
fn publish_direction(request: &Request) -> Result<bool, RequestError> {
    let Some(video) = request.body.get("video") else {
        return Err(RequestError::new(
            "audio-only-unsupported",
            "the node serves video legs only: enable media with {video: 'both'} or \
             {video: 'send_only'} in a conversation whose properties.video is true",
        ));
    };
    let name = video.get("name").and_then(Value::as_str).unwrap_or("video");
    if name == "screenshare" {
        return Err(RequestError::new(
            "screenshare-unsupported",
            "screen sharing through the SDK needs a Chrome extension and is not supported",
        ));
    }
    match video.get("direction").and_then(Value::as_str) {
        Some("both") | None => Ok(true),
        Some("send_only") => Ok(false),
        Some("receive_only") => Err(RequestError::new(
            "unsupported-direction",
            "receive_only is not supported: the SDK 4.x does not implement it, so a member \
             that receives also publishes, with direction both",
        )),
        Some(other) => Err(RequestError::invalid_parameter(
            "body.video.direction",
            format!("{other:?} is not both or send_only"),
        )),
    }
}

fn is_access_error(error: &RequestError) -> bool {
    error
        .code
        .as_deref()
        .is_some_and(|code| code.starts_with("auth:error:"))
}

fn login_error(error: AuthError) -> RequestError {
    match error {
        AuthError::Expired => RequestError::new("expired-token", error.to_string()),
        other => RequestError::new("invalid-token", other.to_string()),
    }
}

fn answer_error(error: MediaError) -> RequestError {
    let reason = match &error {
        MediaError::InvalidAnswer(_) => "invalid-answer",
        MediaError::NoSupportedCodec(_) => "no-supported-codec",
        MediaError::LegNotFound(_) => "unknown-leg",
        MediaError::NotAwaitingAnswer(_) => "already-answered",
        MediaError::Stopped => "media-unavailable",
        _ => "invalid-answer",
    };
    RequestError::new(reason, error.to_string())
}
