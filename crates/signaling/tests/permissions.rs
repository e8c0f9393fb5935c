//! The permission matrix: representative requests of each kind, sent by every kind of caller,
//! each with the status and `type` it must get, and proof that a refused request changed
//! nothing.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode};
use common::{APPLICATION_ID, PUBLISH_AV, RECVONLY, SECRET, TestNode};
use room::{Conversation, ConversationId};
use serde_json::{Value, json};
use signaling::SignalingConfig;
use signaling::auth::{Claims, TokenGrant, TokenIssuer, TokenVerifier};

const PRIVATE_KEY: &[u8] = include_bytes!("fixtures/test-only-rsa-private.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("fixtures/test-only-rsa-public.pem");
const OTHER_PRIVATE_KEY: &[u8] = include_bytes!("fixtures/test-only-other-rsa-private.pem");

const TTL: Duration = Duration::from_secs(600);

/// The sender of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    Admin,
    /// The user the requests act for: a JOINED member of the conversation.
    Alice,
    /// Alice's token with the moderator claim.
    Moderator,
    /// Another JOINED member of the conversation.
    Bob,
    /// A user sender is no member of the conversation.
    Eve,
    /// A user token for a name that no user has.
    UnknownUser,
    /// Alice, with `acl.paths` granting only `/*/users/**`.
    AliceUsersOnly,
    /// Alice, signed RS256 with the application's private key.
    AliceRs256,
    NoToken,
    Expired,
    /// Alice's header and signature around admin claims.
    Tampered,
    AlgNone,
    WrongApplication,
    FutureIat,
    /// Alice, signed RS256 with a key that is not the application's.
    Rs256OtherKey,
    /// Admin claims signed HS256 with the RSA public key as the secret.
    PublicKeyAsSecret,
}

/// Callers whose token is valid, in the column order of [`TABLE`].
const VALID: [Sender; 8] = [
    Sender::Admin,
    Sender::Alice,
    Sender::Moderator,
    Sender::Bob,
    Sender::Eve,
    Sender::UnknownUser,
    Sender::AliceUsersOnly,
    Sender::AliceRs256,
];

/// Callers whose token is refused, with the code each gets on every request.
const INVALID: [(Sender, &str); 8] = [
    (Sender::NoToken, "auth:error:missing-token"),
    (Sender::Expired, "auth:error:expired"),
    (Sender::Tampered, "auth:error:invalid-signature"),
    (Sender::AlgNone, "auth:error:unsupported-algorithm"),
    (Sender::WrongApplication, "auth:error:wrong-application"),
    (Sender::FutureIat, "auth:error:issued-in-future"),
    (Sender::Rs256OtherKey, "auth:error:invalid-signature"),
    (Sender::PublicKeyAsSecret, "auth:error:invalid-signature"),
];

/// A representative request of each kind. The ones about a member act for Alice's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    CreateUser,
    ListUsers,
    ReadAlice,
    CreateConversation,
    ReadConversation,
    ReadEvents,
    /// Alice joins a conversation she is no member of yet.
    JoinAlice,
    /// Carol, a user outside the conversation, is invited.
    InviteCarol,
    LeaveAlice,
    PublishAlice,
    /// Alice subscribes to Bob's publisher leg.
    SubscribeAlice,
    CustomEventFromAlice,
    AliceMutesHerself,
    AliceMutesBob,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success(StatusCode),
    Refused(StatusCode, &'static str),
}

const OK: Outcome = Outcome::Success(StatusCode::OK);
const CREATED: Outcome = Outcome::Success(StatusCode::CREATED);
const ADMIN_ONLY: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:admin-only");
const OTHER_USER: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:other-user");
const NOT_MEMBER: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:not-a-member");
const NOT_JOINED: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:not-joined");
const UNKNOWN: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:unknown-user");
const PATH: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:path-not-granted");
const MODERATOR: Outcome = Outcome::Refused(StatusCode::FORBIDDEN, "auth:error:moderator-required");

/// Outcome of each request for the callers of [`VALID`], in that order:
/// admin, Alice, moderator, Bob, Eve, unknown user, users-only Alice, RS256 Alice.
#[rustfmt::skip]
const TABLE: [(Request, [Outcome; 8]); 14] = [
    (Request::CreateUser,
        [CREATED, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY]),
    (Request::ListUsers,
        [OK, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY, ADMIN_ONLY]),
    (Request::ReadAlice,
        [OK, OK, OK, OTHER_USER, OTHER_USER, UNKNOWN, OK, OK]),
    (Request::CreateConversation,
        [CREATED, CREATED, CREATED, CREATED, CREATED, UNKNOWN, PATH, CREATED]),
    (Request::ReadConversation,
        [OK, OK, OK, OK, NOT_MEMBER, UNKNOWN, PATH, OK]),
    (Request::ReadEvents,
        [OK, OK, OK, OK, NOT_MEMBER, UNKNOWN, PATH, OK]),
    (Request::JoinAlice,
        [CREATED, CREATED, CREATED, OTHER_USER, OTHER_USER, UNKNOWN, PATH, CREATED]),
    (Request::InviteCarol,
        [CREATED, CREATED, CREATED, CREATED, NOT_JOINED, UNKNOWN, PATH, CREATED]),
    (Request::LeaveAlice,
        [OK, OK, OK, OTHER_USER, OTHER_USER, UNKNOWN, PATH, OK]),
    (Request::PublishAlice,
        [CREATED, CREATED, CREATED, OTHER_USER, OTHER_USER, UNKNOWN, PATH, CREATED]),
    (Request::SubscribeAlice,
        [CREATED, CREATED, CREATED, OTHER_USER, OTHER_USER, UNKNOWN, PATH, CREATED]),
    (Request::CustomEventFromAlice,
        [CREATED, CREATED, CREATED, OTHER_USER, OTHER_USER, UNKNOWN, PATH, CREATED]),
    (Request::AliceMutesHerself,
        [CREATED, CREATED, CREATED, OTHER_USER, OTHER_USER, UNKNOWN, PATH, CREATED]),
    (Request::AliceMutesBob,
        [CREATED, MODERATOR, CREATED, OTHER_USER, OTHER_USER, UNKNOWN, PATH, MODERATOR]),
];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The tokens of every caller.
struct Tokens {
    hs256: TokenIssuer,
    rs256: TokenIssuer,
}

impl Tokens {
    fn new() -> Self {
        Tokens {
            hs256: TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("HS256 issuer"),
            rs256: TokenIssuer::rs256(APPLICATION_ID, PRIVATE_KEY).expect("RS256 issuer"),
        }
    }

    fn mint(issuer: &TokenIssuer, grant: TokenGrant) -> String {
        issuer.mint_grant(&grant).expect("mint")
    }

    fn alice_claims(&self) -> Claims {
        self.hs256
            .claims(&TokenGrant::user("alice", TTL))
            .expect("claims")
    }

    fn token(&self, sender: Sender) -> Option<String> {
        let hs256 = &self.hs256;
        let token = match sender {
            Sender::NoToken => return None,
            Sender::Admin => Self::mint(hs256, TokenGrant::admin(TTL)),
            Sender::Alice => Self::mint(hs256, TokenGrant::user("alice", TTL)),
            Sender::Moderator => Self::mint(hs256, TokenGrant::user("alice", TTL).moderator()),
            Sender::Bob => Self::mint(hs256, TokenGrant::user("bob", TTL)),
            Sender::Eve => Self::mint(hs256, TokenGrant::user("eve", TTL)),
            Sender::UnknownUser => Self::mint(hs256, TokenGrant::user("nobody", TTL)),
            Sender::AliceUsersOnly => Self::mint(
                hs256,
                TokenGrant::user("alice", TTL).acl_paths(vec!["/*/users/**".to_owned()]),
            ),
            Sender::AliceRs256 => Self::mint(&self.rs256, TokenGrant::user("alice", TTL)),
            Sender::Expired => {
                let mut claims = self.alice_claims();
                claims.iat = now() - 7_200;
                claims.exp = now() - 3_600;
                hs256.sign(&claims).expect("sign")
            }
            Sender::Tampered => {
                let alice = Self::mint(hs256, TokenGrant::user("alice", TTL));
                let admin = Self::mint(hs256, TokenGrant::admin(TTL));
                let alice: Vec<&str> = alice.split('.').collect();
                let admin: Vec<&str> = admin.split('.').collect();
                format!("{}.{}.{}", alice[0], admin[1], alice[2])
            }
            Sender::AlgNone => {
                let admin = Self::mint(hs256, TokenGrant::admin(TTL));
                let payload = admin.split('.').nth(1).expect("payload");
                // Base64url of {"alg":"none","typ":"JWT"}.
                format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
            }
            Sender::WrongApplication => {
                let other = TokenIssuer::hs256("another-application", SECRET).expect("issuer");
                Self::mint(&other, TokenGrant::admin(TTL))
            }
            Sender::FutureIat => {
                let mut claims = self.alice_claims();
                claims.iat = now() + 3_600;
                claims.exp = now() + 7_200;
                hs256.sign(&claims).expect("sign")
            }
            Sender::Rs256OtherKey => {
                let other = TokenIssuer::rs256(APPLICATION_ID, OTHER_PRIVATE_KEY).expect("issuer");
                Self::mint(&other, TokenGrant::admin(TTL))
            }
            Sender::PublicKeyAsSecret => {
                let confused = TokenIssuer::hs256(APPLICATION_ID, PUBLIC_KEY).expect("issuer");
                Self::mint(&confused, TokenGrant::admin(TTL))
            }
        };
        Some(token)
    }
}

/// A fresh conversation for one request: Bob JOINED, and Alice JOINED unless the request is
/// her joining.
struct Scene {
    conversation: String,
    alice_user: String,
    alice_member: Option<String>,
    bob_member: String,
    bob_leg: Option<String>,
}

async fn node_with_both_keys() -> TestNode {
    let verifier =
        TokenVerifier::new(APPLICATION_ID, Some(SECRET), Some(PUBLIC_KEY)).expect("verifier");
    let node = TestNode::with_verifier(SignalingConfig::default(), verifier);
    for name in ["alice", "bob", "eve", "carol"] {
        node.create_user(name).await;
    }
    node
}

async fn set_scene(node: &TestNode, request: Request) -> Scene {
    let conversation = node.create_conversation().await;
    let bob_member = node.join(&conversation, "bob").await;
    // Publishing costs an SDP answer, so only the requests about Bob's media get a leg.
    let bob_leg = match request {
        Request::SubscribeAlice | Request::AliceMutesBob => {
            Some(node.publish(&conversation, &bob_member).await)
        }
        _ => None,
    };
    let alice_member = match request {
        Request::JoinAlice => None,
        _ => Some(node.join(&conversation, "alice").await),
    };
    let alice_user = node
        .registry
        .user_by_name("alice")
        .expect("alice exists")
        .id
        .to_string();
    Scene {
        conversation,
        alice_user,
        alice_member,
        bob_member,
        bob_leg,
    }
}

/// Builds the method, path and body of `request` in `scene`.
fn describe(request: Request, scene: &Scene, row: usize) -> (Method, String, Option<Value>) {
    let conversation = format!("/v0.1/conversations/{}", scene.conversation);
    let alice = scene.alice_member.clone().unwrap_or_default();
    let event = |body: Value| (Method::POST, format!("{conversation}/events"), Some(body));
    match request {
        Request::CreateUser => (
            Method::POST,
            "/v0.1/users".to_owned(),
            Some(json!({ "name": format!("new-user-{row}") })),
        ),
        Request::ListUsers => (Method::GET, "/v0.1/users".to_owned(), None),
        Request::ReadAlice => (
            Method::GET,
            format!("/v0.1/users/{}", scene.alice_user),
            None,
        ),
        Request::CreateConversation => (
            Method::POST,
            "/v0.1/conversations".to_owned(),
            Some(json!({ "properties": { "video": true } })),
        ),
        Request::ReadConversation => (Method::GET, conversation, None),
        Request::ReadEvents => (Method::GET, format!("{conversation}/events"), None),
        Request::JoinAlice => (
            Method::POST,
            format!("{conversation}/members"),
            Some(json!({ "user_name": "alice", "action": "join", "channel": { "type": "app" } })),
        ),
        Request::InviteCarol => (
            Method::POST,
            format!("{conversation}/members"),
            Some(json!({ "user_name": "carol", "action": "invite" })),
        ),
        Request::LeaveAlice => (
            Method::DELETE,
            format!("{conversation}/members/{alice}"),
            None,
        ),
        Request::PublishAlice => (
            Method::POST,
            format!("{conversation}/rtc"),
            Some(
                json!({ "from": alice, "body": { "offer": { "type": "offer", "sdp": PUBLISH_AV } } }),
            ),
        ),
        Request::SubscribeAlice => (
            Method::POST,
            format!("{conversation}/rtc"),
            Some(json!({
                "from": alice,
                "body": {
                    "offer": { "type": "offer", "sdp": RECVONLY },
                    "subscribe": { "rtc_id": scene.bob_leg },
                },
            })),
        ),
        Request::CustomEventFromAlice => {
            event(json!({ "type": "custom:hello", "from": alice, "body": { "text": "hi" } }))
        }
        Request::AliceMutesHerself => {
            event(json!({ "type": "audio:mute:on", "from": alice, "body": {} }))
        }
        Request::AliceMutesBob => event(json!({
            "type": "audio:mute:on",
            "from": alice,
            "to": scene.bob_member,
            "body": {},
        })),
    }
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    users: usize,
    conversation: Conversation,
    legs: usize,
}

async fn snapshot(node: &TestNode, scene: &Scene) -> Snapshot {
    let conversation = ConversationId::from(scene.conversation.as_str());
    Snapshot {
        users: node.registry.users().len(),
        conversation: node
            .registry
            .conversation(&conversation)
            .expect("scene conversation"),
        legs: node.media_legs().await,
    }
}

/// Sends `request` as `sender` in a fresh scene and returns what differs from `expected`.
async fn check(
    node: &TestNode,
    tokens: &Tokens,
    row: usize,
    request: Request,
    sender: Sender,
    expected: Outcome,
) -> Option<String> {
    let scene = set_scene(node, request).await;
    let (method, path, body) = describe(request, &scene, row);
    let before = snapshot(node, &scene).await;
    let token = tokens.token(sender);
    let reply = node.call(method, &path, token.as_deref(), body).await;

    let matches = match expected {
        Outcome::Success(status) => reply.status == status,
        Outcome::Refused(status, code) => reply.status == status && reply.code() == code,
    };
    if !matches {
        return Some(format!(
            "{request:?} as {sender:?}: expected {expected:?}, got {} {}",
            reply.status, reply.body
        ));
    }
    if let Outcome::Refused(..) = expected {
        if reply.body["title"].as_str().is_none() || reply.body["detail"].as_str().is_none() {
            return Some(format!(
                "{request:?} as {sender:?}: error body lacks title or detail: {}",
                reply.body
            ));
        }
        let after = snapshot(node, &scene).await;
        if after != before {
            return Some(format!(
                "{request:?} as {sender:?}: refused but changed {before:?} into {after:?}"
            ));
        }
    }
    None
}

#[tokio::test]
async fn permission_matrix() {
    let node = node_with_both_keys().await;
    let tokens = Tokens::new();
    let mut failures = Vec::new();
    let mut row = 0;

    for (request, outcomes) in TABLE {
        for (sender, expected) in VALID.into_iter().zip(outcomes) {
            row += 1;
            failures.extend(check(&node, &tokens, row, request, sender, expected).await);
        }
        for (sender, code) in INVALID {
            row += 1;
            let expected = Outcome::Refused(StatusCode::UNAUTHORIZED, code);
            failures.extend(check(&node, &tokens, row, request, sender, expected).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {row} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn moderator_mute_reaches_the_target() {
    let node = node_with_both_keys().await;
    let tokens = Tokens::new();
    let scene = set_scene(&node, Request::AliceMutesBob).await;
    let (method, path, body) = describe(Request::AliceMutesBob, &scene, 0);

    let reply = node
        .call(
            method,
            &path,
            tokens.token(Sender::Moderator).as_deref(),
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let events = node.events(&scene.conversation).await;
    let mute = events
        .iter()
        .find(|event| event["type"] == "audio:mute:on")
        .expect("the mute event");
    assert_eq!(mute["type"], "audio:mute:on");
    assert_eq!(mute["from"].as_str(), scene.alice_member.as_deref());
    assert_eq!(mute["to"].as_str(), Some(scene.bob_member.as_str()));
}

#[tokio::test]
async fn mute_addressed_to_self_needs_no_moderator() {
    let node = node_with_both_keys().await;
    let tokens = Tokens::new();
    let scene = set_scene(&node, Request::AliceMutesHerself).await;
    let alice = scene.alice_member.clone().expect("alice joined");

    let reply = node
        .post(
            &format!("/v0.1/conversations/{}/events", scene.conversation),
            &tokens.token(Sender::Alice).expect("token"),
            json!({ "type": "video:mute:on", "from": alice, "to": alice, "body": {} }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn custom_event_to_other_member_is_allowed() {
    let node = node_with_both_keys().await;
    let tokens = Tokens::new();
    let scene = set_scene(&node, Request::CustomEventFromAlice).await;

    let reply = node
        .post(
            &format!("/v0.1/conversations/{}/events", scene.conversation),
            &tokens.token(Sender::Alice).expect("token"),
            json!({
                "type": "custom:poke",
                "from": scene.alice_member,
                "to": scene.bob_member,
                "body": {},
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn user_cannot_end_other_members_leg() {
    let node = node_with_both_keys().await;
    let tokens = Tokens::new();
    let scene = set_scene(&node, Request::SubscribeAlice).await;
    let bob_leg = scene.bob_leg.clone().expect("bob publishes");

    let reply = node
        .delete(
            &format!("/v0.1/conversations/{}/rtc/{bob_leg}", scene.conversation),
            &tokens.token(Sender::Alice).expect("token"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.code(), "auth:error:other-user");
    assert_eq!(node.media_legs().await, 1);
}

#[tokio::test]
async fn invited_user_reads_but_cannot_invite() {
    let node = node_with_both_keys().await;
    let tokens = Tokens::new();
    let conversation = node.create_conversation().await;
    node.add_member(&conversation, "eve", "invite").await;
    let eve = tokens.token(Sender::Eve).expect("token");

    let read = node
        .get(&format!("/v0.1/conversations/{conversation}"), &eve)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);

    let invite = node
        .post(
            &format!("/v0.1/conversations/{conversation}/members"),
            &eve,
            json!({ "user_name": "carol", "action": "invite" }),
        )
        .await;
    assert_eq!(invite.status, StatusCode::FORBIDDEN, "{}", invite.body);
    assert_eq!(invite.code(), "auth:error:not-joined");
}
