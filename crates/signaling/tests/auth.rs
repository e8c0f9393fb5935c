//! Token verification over HTTP: which tokens get 401 and with which code, HS256 and RS256
//! keys, the claims rules, and `acl.paths`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{APPLICATION_ID, SECRET, TestNode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use signaling::SignalingConfig;
use signaling::auth::{AuthError, TokenGrant, TokenIssuer, TokenVerifier};

const PRIVATE_KEY: &[u8] = include_bytes!("fixtures/test-only-rsa-private.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("fixtures/test-only-rsa-public.pem");
const OTHER_PRIVATE_KEY: &[u8] = include_bytes!("fixtures/test-only-other-rsa-private.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Valid admin claims with the default paths, as JSON so that tests can break them.
fn claims() -> Value {
    let now = now();
    json!({
        "application_id": APPLICATION_ID,
        "exp": now + 600,
        "iat": now,
        "jti": "test-token",
        "acl": { "paths": { "/*/users/**": {}, "/*/conversations/**": {} } },
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().expect("an object of changes") {
        claims[key] = value.clone();
    }
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("claims object").remove(key);
    claims
}

fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    sign_with(claims, Algorithm::HS256, &EncodingKey::from_secret(secret))
}

fn sign_rs256(claims: &Value, private_key: &[u8]) -> String {
    let key = EncodingKey::from_rsa_pem(private_key).expect("test RSA key");
    sign_with(claims, Algorithm::RS256, &key)
}

fn sign_with(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign")
}

/// Unpadded base64url of `text`, for hand-made token parts.
fn base64url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn node_with_keys(secret: Option<&[u8]>, public_key: Option<&[u8]>) -> TestNode {
    let verifier = TokenVerifier::new(APPLICATION_ID, secret, public_key).expect("verifier");
    TestNode::with_verifier(SignalingConfig::default(), verifier)
}

async fn get_users(node: &TestNode, token: Option<&str>) -> common::Reply {
    node.call(Method::GET, "/v0.1/users", token, None).await
}

async fn assert_rejected(node: &TestNode, token: Option<&str>, code: &str) {
    let reply = get_users(node, token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.code(), code, "{}", reply.body);
    assert_eq!(reply.body["title"], "Unauthorized");
    assert!(reply.body["detail"].is_string());
}

async fn assert_accepted(node: &TestNode, token: &str) {
    let reply = get_users(node, Some(token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

async fn send_authorization(node: &TestNode, value: &str) -> common::Reply {
    let request = Request::builder()
        .uri("/v0.1/users")
        .header(header::AUTHORIZATION, value)
        .body(Body::empty())
        .expect("request");
    node.send(request).await
}

#[tokio::test]
async fn admin_token_is_accepted() {
    let node = TestNode::start();
    let reply = node.get("/v0.1/users", &node.admin()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["_embedded"]["users"], json!([]));
}

#[tokio::test]
async fn missing_token_is_401() {
    let node = TestNode::start();
    assert_rejected(&node, None, "auth:error:missing-token").await;
}

#[tokio::test]
async fn malformed_header_is_401() {
    let node = TestNode::start();
    let admin = node.admin();
    for value in [
        format!("Basic {admin}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        admin.clone(),
    ] {
        let reply = send_authorization(&node, &value).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{value:?}");
        assert_eq!(reply.code(), "auth:error:malformed-header", "{value:?}");
    }

    let lowercase = send_authorization(&node, &format!("bearer {admin}")).await;
    assert_eq!(
        lowercase.status,
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
}

#[tokio::test]
async fn malformed_tokens_are_401() {
    let node = TestNode::start();
    let payload = base64url(&claims().to_string());
    let header = base64url(r#"{"alg":"HS256"}"#);
    let cases = [
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.sig.extra"),
        format!("{}.{payload}.sig", base64url("not json")),
        format!("{}.{payload}.sig", base64url(r#"{"typ":"JWT"}"#)),
        format!("{header}.{}.sig", base64url("[1, 2]")),
        format!("{header}.{payload}!.sig"),
        "A".repeat(60_000),
    ];
    for token in cases {
        assert_rejected(&node, Some(&token), "auth:error:malformed-token").await;
    }
}

#[tokio::test]
async fn expired_token_is_401() {
    let node = TestNode::start();
    let now = now();
    let expired = with(claims(), json!({ "exp": now - 3_600, "iat": now - 7_200 }));
    assert_rejected(
        &node,
        Some(&sign_hs256(&expired, SECRET)),
        "auth:error:expired",
    )
    .await;

    // Within the clock leeway a token that just expired still works.
    let just_expired = with(claims(), json!({ "exp": now - 5, "iat": now - 600 }));
    assert_accepted(&node, &sign_hs256(&just_expired, SECRET)).await;
}

#[tokio::test]
async fn wrongly_signed_token_is_401() {
    let node = TestNode::start();
    let token = sign_hs256(&claims(), b"another-secret-another-secret-another-secret");
    assert_rejected(&node, Some(&token), "auth:error:invalid-signature").await;

    let empty_signature = sign_hs256(&claims(), SECRET);
    let (message, _) = empty_signature.rsplit_once('.').expect("a JWT");
    assert_rejected(
        &node,
        Some(&format!("{message}.")),
        "auth:error:invalid-signature",
    )
    .await;
}

#[tokio::test]
async fn tampered_token_is_401() {
    let node = TestNode::start();
    let user_token = node.user_token("alice");
    let admin_token = node.admin();

    // The admin claims under the user token's signature: valid JSON, wrong signature.
    let user_parts: Vec<&str> = user_token.split('.').collect();
    let admin_parts: Vec<&str> = admin_token.split('.').collect();
    let swapped = format!("{}.{}.{}", user_parts[0], admin_parts[1], user_parts[2]);
    assert_rejected(&node, Some(&swapped), "auth:error:invalid-signature").await;

    let mut flipped = admin_token.into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ASCII token");
    assert_rejected(&node, Some(&flipped), "auth:error:invalid-signature").await;

    let mut not_base64 = node.admin();
    not_base64.push('*');
    assert_rejected(&node, Some(&not_base64), "auth:error:invalid-signature").await;
}

#[tokio::test]
async fn alg_none_token_is_401() {
    let node = TestNode::start();
    let payload = base64url(&claims().to_string());
    for alg in ["none", "None", "NONE"] {
        let header = base64url(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{header}.{payload}.{signature}");
            assert_rejected(&node, Some(&token), "auth:error:unsupported-algorithm").await;
        }
    }
}

#[tokio::test]
async fn other_algorithms_are_401() {
    let node = TestNode::start();
    let hs512 = sign_with(
        &claims(),
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET),
    );
    assert_rejected(&node, Some(&hs512), "auth:error:unsupported-algorithm").await;

    let made_up = format!(
        "{}.{}.c2ln",
        base64url(r#"{"alg":"XS999"}"#),
        base64url(&claims().to_string())
    );
    assert_rejected(&node, Some(&made_up), "auth:error:unsupported-algorithm").await;

    // A valid RS256 token, but this node has only an HS256 secret.
    let rs256 = sign_rs256(&claims(), PRIVATE_KEY);
    let reply = get_users(&node, Some(&rs256)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "auth:error:unsupported-algorithm");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no RS256 key"), "{detail}");
}

#[tokio::test]
async fn rs256_token_is_accepted() {
    let node = node_with_keys(None, Some(PUBLIC_KEY));
    assert_accepted(&node, &sign_rs256(&claims(), PRIVATE_KEY)).await;

    let other_key = sign_rs256(&claims(), OTHER_PRIVATE_KEY);
    assert_rejected(&node, Some(&other_key), "auth:error:invalid-signature").await;

    // This node has no secret, so HS256 tokens are refused whatever they are signed with.
    let hs256 = sign_hs256(&claims(), SECRET);
    assert_rejected(&node, Some(&hs256), "auth:error:unsupported-algorithm").await;
}

#[tokio::test]
async fn node_with_both_keys_accepts_both() {
    let node = node_with_keys(Some(SECRET), Some(PUBLIC_KEY));
    assert_accepted(&node, &sign_rs256(&claims(), PRIVATE_KEY)).await;
    assert_accepted(&node, &sign_hs256(&claims(), SECRET)).await;
}

#[tokio::test]
async fn public_key_as_hmac_secret_is_401() {
    // Algorithm confusion: an HS256 token whose "secret" is the public key everyone may know.
    let confused = sign_hs256(&claims(), PUBLIC_KEY);

    let rsa_only = node_with_keys(None, Some(PUBLIC_KEY));
    assert_rejected(
        &rsa_only,
        Some(&confused),
        "auth:error:unsupported-algorithm",
    )
    .await;

    let both = node_with_keys(Some(SECRET), Some(PUBLIC_KEY));
    assert_rejected(&both, Some(&confused), "auth:error:invalid-signature").await;
}

#[tokio::test]
async fn other_application_token_is_401() {
    let node = TestNode::start();
    let foreign = with(claims(), json!({ "application_id": "another-application" }));
    let reply = get_users(&node, Some(&sign_hs256(&foreign, SECRET))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "auth:error:wrong-application");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("another-application"), "{detail}");
}

#[tokio::test]
async fn future_iat_is_401() {
    let node = TestNode::start();
    let now = now();
    let future = with(claims(), json!({ "iat": now + 3_600, "exp": now + 7_200 }));
    assert_rejected(
        &node,
        Some(&sign_hs256(&future, SECRET)),
        "auth:error:issued-in-future",
    )
    .await;

    // A backend clock a few seconds ahead is within the leeway.
    let skewed = with(claims(), json!({ "iat": now + 10 }));
    assert_accepted(&node, &sign_hs256(&skewed, SECRET)).await;
}

#[tokio::test]
async fn future_nbf_is_401() {
    let node = TestNode::start();
    let future = with(claims(), json!({ "nbf": now() + 3_600 }));
    assert_rejected(
        &node,
        Some(&sign_hs256(&future, SECRET)),
        "auth:error:not-yet-valid",
    )
    .await;

    let past = with(claims(), json!({ "nbf": now() - 60 }));
    assert_accepted(&node, &sign_hs256(&past, SECRET)).await;
}

#[tokio::test]
async fn malformed_claims_are_401() {
    let node = TestNode::start();
    let now = now();
    let cases = [
        ("no application_id", without(claims(), "application_id")),
        ("no exp", without(claims(), "exp")),
        ("no iat", without(claims(), "iat")),
        ("no jti", without(claims(), "jti")),
        ("empty jti", with(claims(), json!({ "jti": "" }))),
        ("empty sub", with(claims(), json!({ "sub": "" }))),
        ("numeric sub", with(claims(), json!({ "sub": 42 }))),
        ("exp as text", with(claims(), json!({ "exp": "tomorrow" }))),
        ("negative iat", with(claims(), json!({ "iat": -1 }))),
        (
            "exp before iat",
            with(claims(), json!({ "iat": now, "exp": now - 1 })),
        ),
        (
            "acl paths as a list",
            with(claims(), json!({ "acl": { "paths": ["/**"] } })),
        ),
        (
            "acl pattern without a slash",
            with(claims(), json!({ "acl": { "paths": { "users/**": {} } } })),
        ),
        (
            "acl pattern with a partial star",
            with(
                claims(),
                json!({ "acl": { "paths": { "/v0.1/user*": {} } } }),
            ),
        ),
        (
            "moderator as text",
            with(claims(), json!({ "moderator": "yes" })),
        ),
    ];
    for (case, claims) in cases {
        let reply = get_users(&node, Some(&sign_hs256(&claims, SECRET))).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "auth:error:invalid-claims", "{case}");
    }

    let no_iat = sign_hs256(&without(claims(), "iat"), SECRET);
    let reply = get_users(&node, Some(&no_iat)).await;
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("missing field `iat`"), "{detail}");

    let numeric_sub = sign_hs256(&with(claims(), json!({ "sub": 42 })), SECRET);
    let reply = get_users(&node, Some(&numeric_sub)).await;
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("claim sub"), "{detail}");
}

#[tokio::test]
async fn fractional_times_are_accepted() {
    let node = TestNode::start();
    let now = now() as f64;
    let fractional = with(claims(), json!({ "iat": now + 0.25, "exp": now + 600.5 }));
    assert_accepted(&node, &sign_hs256(&fractional, SECRET)).await;
}

#[tokio::test]
async fn token_without_acl_reaches_no_path() {
    let node = TestNode::start();
    let token = sign_hs256(&without(claims(), "acl"), SECRET);
    let reply = get_users(&node, Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.code(), "auth:error:path-not-granted");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no acl.paths claim"), "{detail}");

    let empty = sign_hs256(&with(claims(), json!({ "acl": { "paths": {} } })), SECRET);
    let reply = get_users(&node, Some(&empty)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "auth:error:path-not-granted");
}

#[tokio::test]
async fn acl_paths_limit_admin_token() {
    let node = TestNode::start();
    let users_only = with(
        claims(),
        json!({ "acl": { "paths": { "/*/users/**": {} } } }),
    );
    let token = sign_hs256(&users_only, SECRET);

    assert_accepted(&node, &token).await;
    let reply = node
        .post("/v0.1/conversations", &token, json!({ "name": "room" }))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.code(), "auth:error:path-not-granted");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("/v0.1/conversations"), "{detail}");

    // The name is still free, so the refused request created nothing.
    let created = node
        .post(
            "/v0.1/conversations",
            &node.admin(),
            json!({ "name": "room" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
}

#[tokio::test]
async fn acl_check_sees_the_full_path() {
    // The patterns start with the version segment, which the nested router strips.
    let node = TestNode::start();
    let exact = with(
        claims(),
        json!({ "acl": { "paths": { "/v0.1/users": {} } } }),
    );
    assert_accepted(&node, &sign_hs256(&exact, SECRET)).await;

    let stripped = with(claims(), json!({ "acl": { "paths": { "/users": {} } } }));
    let reply = get_users(&node, Some(&sign_hs256(&stripped, SECRET))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "auth:error:path-not-granted");
}

#[tokio::test]
async fn unknown_route_is_404_whatever_the_grants() {
    let node = TestNode::start();
    let users_only = with(
        claims(),
        json!({ "acl": { "paths": { "/*/users/**": {} } } }),
    );
    let token = sign_hs256(&users_only, SECRET);
    let reply = node.get("/v0.1/nothing-here", &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert_eq!(reply.code(), "request:error:not-found");
}

#[tokio::test]
async fn health_probes_need_no_token() {
    let node = TestNode::start();
    let healthz = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(healthz.status, StatusCode::OK);
    let readyz = node.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(readyz.status, StatusCode::OK);
}

#[test]
fn short_secret_is_rejected() {
    assert!(matches!(
        TokenVerifier::hs256(APPLICATION_ID, b"short"),
        Err(AuthError::WeakSecret { length: 5 })
    ));
    assert!(matches!(
        TokenIssuer::hs256(APPLICATION_ID, b"short"),
        Err(AuthError::WeakSecret { length: 5 })
    ));
}

#[test]
fn debug_output_hides_keys() {
    let verifier = TokenVerifier::hs256(APPLICATION_ID, SECRET).expect("verifier");
    let issuer = TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("issuer");
    let secret = String::from_utf8_lossy(SECRET).into_owned();
    for debug in [format!("{verifier:?}"), format!("{issuer:?}")] {
        assert!(!debug.contains(&secret), "{debug}");
        assert!(debug.contains(APPLICATION_ID), "{debug}");
    }
}

#[test]
fn verifier_needs_a_key() {
    assert!(matches!(
        TokenVerifier::new(APPLICATION_ID, None, None),
        Err(AuthError::NoKey)
    ));
}

#[test]
fn bad_rsa_keys_are_rejected() {
    assert!(matches!(
        TokenVerifier::rs256(APPLICATION_ID, PRIVATE_KEY),
        Err(AuthError::InvalidKey(_))
    ));
    assert!(matches!(
        TokenVerifier::rs256(APPLICATION_ID, b"not a key"),
        Err(AuthError::InvalidKey(_))
    ));
    assert!(matches!(
        TokenIssuer::rs256(APPLICATION_ID, PUBLIC_KEY),
        Err(AuthError::InvalidKey(_))
    ));
}

#[test]
fn minted_tokens_round_trip() {
    let hs256 = TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("issuer");
    let rs256 = TokenIssuer::rs256(APPLICATION_ID, PRIVATE_KEY).expect("issuer");
    let verifier =
        TokenVerifier::new(APPLICATION_ID, Some(SECRET), Some(PUBLIC_KEY)).expect("verifier");
    assert_eq!(verifier.algorithms(), [Algorithm::HS256, Algorithm::RS256]);

    for issuer in [hs256, rs256] {
        let token = issuer
            .mint(Some("alice"), Duration::from_secs(60))
            .expect("mint");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, issuer.algorithm());

        let caller = verifier.verify(&token).expect("verify");
        assert_eq!(caller.user_name(), Some("alice"));
        assert!(!caller.is_moderator());
        assert_eq!(caller.claims.application_id, APPLICATION_ID);
        assert_eq!(caller.claims.exp, caller.claims.iat + 60);
        assert!(!caller.claims.jti.is_empty());
        assert!(
            caller
                .check_path("/v0.1/conversations/CON-1/members")
                .is_ok()
        );
        assert!(caller.check_path("/v0.1/users/USR-1").is_ok());
        assert!(caller.check_path("/v0.1/sessions/rtc").is_ok());
        assert!(caller.check_path("/v0.1/legs/LEG-1").is_ok());
        assert!(caller.check_path("/metrics").is_err());
    }
}

#[test]
fn minted_grants_round_trip() {
    let issuer = TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("issuer");
    let verifier = TokenVerifier::hs256(APPLICATION_ID, SECRET).expect("verifier");
    let ttl = Duration::from_secs(60);

    let moderator = issuer
        .mint_grant(&TokenGrant::user("alice", ttl).moderator())
        .expect("mint");
    let caller = verifier.verify(&moderator).expect("verify");
    assert!(caller.is_moderator());
    assert!(caller.claims.moderator);

    let narrow = issuer
        .mint_grant(&TokenGrant::user("alice", ttl).acl_paths(vec!["/*/users/**".to_owned()]))
        .expect("mint");
    let caller = verifier.verify(&narrow).expect("verify");
    assert!(caller.check_path("/v0.1/users/USR-1").is_ok());
    assert!(caller.check_path("/v0.1/conversations").is_err());

    let admin = verifier
        .verify(&issuer.mint(None, ttl).expect("mint"))
        .expect("verify");
    assert!(admin.is_admin());
    assert!(admin.is_moderator(), "an admin may mute anyone");
}

#[test]
fn invalid_grants_are_not_minted() {
    let issuer = TokenIssuer::hs256(APPLICATION_ID, SECRET).expect("issuer");
    let ttl = Duration::from_secs(60);
    let cases = [
        TokenGrant::admin(ttl).moderator(),
        TokenGrant::user("", ttl),
        TokenGrant::user("alice", ttl).acl_paths(vec!["users/**".to_owned()]),
    ];
    for grant in cases {
        assert!(
            matches!(issuer.mint_grant(&grant), Err(AuthError::InvalidGrant(_))),
            "{grant:?}"
        );
    }
}
