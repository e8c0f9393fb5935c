//! Bearer tokens: verifying the JWTs that come with requests, and minting them.
//!
//! A node accepts HS256 tokens signed with its shared secret, RS256 tokens signed with the
//! application's private key (checked with its public key), or both, as configured. A token
//! must use an algorithm the node has a key for: `alg: none`, other algorithms and an HS256
//! token signed with the bytes of the RSA public key are all rejected.
//!
//! A token without `sub` is an admin token; one with `sub` acts as the user of that name.
//! Every token, admin tokens included, reaches only the paths its `acl.paths` patterns match
//! (see [`acl`]), and a token without `acl` reaches none. See [`Claims`] for which claims are
//! required.

pub mod acl;
mod claims;
mod issuer;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

pub use acl::{PathPattern, PatternError};
pub use claims::{Acl, Claims, DEFAULT_ACL_PATHS};
pub use issuer::{TokenGrant, TokenIssuer};

/// Shortest HS256 secret accepted, in bytes: RFC 7518 (section 3.2) requires a key at least as
/// long as the hash output, 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// Seconds of clock skew allowed between the minting backend and the node: a token is
/// accepted up to this long past `exp`, and `iat` and `nbf` may be this far in the future.
pub const CLOCK_LEEWAY_SECONDS: u64 = 30;

/// Maximum length of a token, in bytes. The tokens `switchboard token` mints with the default
/// paths are under 800 bytes, RS256 with a 2048-bit key included.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Identity a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The application's backend: may do everything its paths allow.
    Admin,
    /// One user, by name: acts only as itself.
    User(String),
}

/// The verified token of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub principal: Principal,
    pub claims: Claims,
    /// The compiled `acl.paths`, empty when the token has no `acl`.
    grants: Vec<PathPattern>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }

    /// Name of the user the token acts as, `None` for an admin token.
    pub fn user_name(&self) -> Option<&str> {
        match &self.principal {
            Principal::Admin => None,
            Principal::User(name) => Some(name),
        }
    }

    /// Returns whether the caller may mute other members: an admin, or a user token with the
    /// `moderator` claim.
    pub fn is_moderator(&self) -> bool {
        self.is_admin() || self.claims.moderator
    }

    /// Checks `path` (such as `/v0.1/conversations/CON-1` or a socket path) against the
    /// token's `acl.paths`.
    pub fn check_path(&self, path: &str) -> Result<(), AccessError> {
        if self.grants.iter().any(|pattern| pattern.matches(path)) {
            return Ok(());
        }
        Err(AccessError::PathNotGranted {
            path: path.to_owned(),
            has_acl: self.claims.acl.is_some(),
        })
    }
}

/// Failure to verify a token (each a 401 on a request), or to set up a key or mint a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("the Authorization header is missing: send `Authorization: Bearer <JWT>`")]
    MissingToken,
    #[error("the Authorization header is not of the form `Bearer <JWT>`")]
    MalformedHeader,
    #[error("the bearer token is not a JWT: {0}")]
    MalformedToken(String),
    #[error("the token's algorithm {alg:?} is not accepted: {reason}")]
    UnsupportedAlgorithm { alg: String, reason: String },
    #[error("the token signature does not match this node's key")]
    InvalidSignature,
    #[error("the token has expired: mint a new one")]
    Expired,
    #[error(
        "the token's nbf claim is in the future (allowing {CLOCK_LEEWAY_SECONDS} s of clock skew)"
    )]
    NotYetValid,
    #[error(
        "the token's iat claim ({iat}) is in the future: the node's clock reads {now}, and \
         {CLOCK_LEEWAY_SECONDS} s of skew are allowed"
    )]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("the token was issued for application {found:?}, not for this node's application")]
    WrongApplication { found: String },
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    #[error("the signing secret is {length} bytes long; HS256 needs at least {MIN_SECRET_BYTES}")]
    WeakSecret { length: usize },
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("no key to verify tokens with: configure a secret, a public key or both")]
    NoKey,
    #[error("invalid token grant: {0}")]
    InvalidGrant(String),
    #[error("failed to sign the token: {0}")]
    Signing(String),
    #[error("the system clock is before the Unix epoch")]
    Clock,
}

/// Why a valid token may not make a request: each is a 403.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    #[error("{}", path_not_granted(path, *has_acl))]
    PathNotGranted { path: String, has_acl: bool },
    #[error("this needs an admin token, and the token acts as user {user:?}")]
    AdminOnly { user: String },
    #[error("the token acts as user {user:?}, which does not exist: create the user first")]
    UnknownUser { user: String },
    #[error("user {user:?} is not an INVITED or JOINED member of conversation {conversation}")]
    NotAMember { user: String, conversation: String },
    #[error(
        "user {user:?} may invite others only as a JOINED member of conversation {conversation}"
    )]
    NotJoined { user: String, conversation: String },
    #[error("user {user:?} may not act as {target}, which belongs to user {owner:?}")]
    OtherUser {
        user: String,
        target: String,
        owner: String,
    },
    #[error(
        "user {user:?} may mute only its own member: muting member {target} needs an admin \
         token or a token with the moderator claim"
    )]
    ModeratorRequired { user: String, target: String },
}

fn path_not_granted(path: &str, has_acl: bool) -> String {
    if has_acl {
        format!("no pattern of the token's acl.paths matches {path}")
    } else {
        format!(
            "the token has no acl.paths claim, so it grants no path, {path} included: mint it \
             with the patterns it needs, such as /*/conversations/**"
        )
    }
}

/// The part of a JWT header the verifier reads before choosing a key.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
}

/// A key the node verifies tokens with, and the validation that goes with it.
#[derive(Clone)]
struct VerificationKey {
    key: DecodingKey,
    validation: Validation,
}

impl VerificationKey {
    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        // One algorithm per key: the library then rejects a token whose header names another
        // algorithm, and a key of the wrong family, before it checks a signature.
        let mut validation = Validation::new(algorithm);
        validation.leeway = CLOCK_LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        VerificationKey { key, validation }
    }
}

/// Checks bearer tokens against the node's keys and application id.
#[derive(Clone)]
pub struct TokenVerifier {
    application_id: String,
    hs256: Option<VerificationKey>,
    rs256: Option<VerificationKey>,
}

/// Shows the application and algorithms, never the keys.
impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("application_id", &self.application_id)
            .field("algorithms", &self.algorithms())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Creates a verifier with an HS256 `secret`, an RS256 public key in PEM, or both.
    pub fn new(
        application_id: impl Into<String>,
        secret: Option<&[u8]>,
        public_key_pem: Option<&[u8]>,
    ) -> Result<Self, AuthError> {
        let hs256 = match secret {
            None => None,
            Some(secret) => {
                check_secret(secret)?;
                let key = DecodingKey::from_secret(secret);
                Some(VerificationKey::new(key, Algorithm::HS256))
            }
        };
        let rs256 = public_key_pem
            .map(rsa_public_key)
            .transpose()?
            .map(|key| VerificationKey::new(key, Algorithm::RS256));
        if hs256.is_none() && rs256.is_none() {
            return Err(AuthError::NoKey);
        }

        Ok(TokenVerifier {
            application_id: application_id.into(),
            hs256,
            rs256,
        })
    }

    /// Creates a verifier of HS256 tokens signed with `secret`.
    pub fn hs256(application_id: impl Into<String>, secret: &[u8]) -> Result<Self, AuthError> {
        Self::new(application_id, Some(secret), None)
    }

    /// Creates a verifier of RS256 tokens, checked with an RSA public key in PEM.
    pub fn rs256(
        application_id: impl Into<String>,
        public_key_pem: &[u8],
    ) -> Result<Self, AuthError> {
        Self::new(application_id, None, Some(public_key_pem))
    }

    /// Algorithms this verifier accepts.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let hs256 = self.hs256.as_ref().map(|_| Algorithm::HS256);
        let rs256 = self.rs256.as_ref().map(|_| Algorithm::RS256);
        hs256.into_iter().chain(rs256).collect()
    }

    /// Verifies the value of an `Authorization` header.
    pub fn verify_header(&self, header: Option<&HeaderValue>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let value = header.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::MalformedHeader);
        }
        self.verify(token.trim())
    }

    /// Verifies a token: its shape, algorithm, signature, expiry, claims and application.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let alg = read_algorithm(token)?;
        let key = self.key_for(&alg)?;

        // The library checks the signature first, then `exp` and `nbf`.
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &key.validation)
            .map_err(library_error)?;
        let claims = parse_claims(data.claims)?;

        if claims.application_id != self.application_id {
            return Err(AuthError::WrongApplication {
                found: claims.application_id,
            });
        }
        let now = unix_now()?;
        if claims.iat > now.saturating_add(CLOCK_LEEWAY_SECONDS) {
            return Err(AuthError::IssuedInFuture {
                iat: claims.iat,
                now,
            });
        }

        let grants = match &claims.acl {
            None => Vec::new(),
            Some(acl) => acl
                .compile()
                .map_err(|error| AuthError::InvalidClaims(format!("acl.paths: {error}")))?,
        };
        let principal = match &claims.sub {
            None => Principal::Admin,
            Some(name) => Principal::User(name.clone()),
        };
        Ok(Caller {
            principal,
            claims,
            grants,
        })
    }

    fn key_for(&self, alg: &str) -> Result<&VerificationKey, AuthError> {
        let (key, name) = match alg {
            "HS256" => (&self.hs256, "HS256"),
            "RS256" => (&self.rs256, "RS256"),
            _ if alg.eq_ignore_ascii_case("none") => {
                return Err(AuthError::UnsupportedAlgorithm {
                    alg: alg.to_owned(),
                    reason: "unsigned tokens are never accepted".to_owned(),
                });
            }
            _ => {
                return Err(AuthError::UnsupportedAlgorithm {
                    alg: alg.to_owned(),
                    reason: format!("this node accepts {}", self.accepted()),
                });
            }
        };
        key.as_ref().ok_or_else(|| AuthError::UnsupportedAlgorithm {
            alg: alg.to_owned(),
            reason: format!(
                "this node has no {name} key configured and accepts {}",
                self.accepted()
            ),
        })
    }

    fn accepted(&self) -> String {
        let names: Vec<String> = self
            .algorithms()
            .iter()
            .map(|algorithm| format!("{algorithm:?}"))
            .collect();
        names.join(" and ")
    }
}

/// Reads the `alg` of a token's header after checking the token's shape, so that every
/// failure of the library afterwards is about the signature or the claims.
fn read_algorithm(token: &str) -> Result<String, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::MalformedToken(format!(
            "it is {} bytes long, and the limit is {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err(AuthError::MalformedToken(format!(
            "a JWT has 3 parts separated by `.`, and this one has {}",
            parts.len()
        )));
    };

    let header: RawHeader = decode_part(header)
        .map_err(|reason| AuthError::MalformedToken(format!("header: {reason}")))?;
    let payload: Value = decode_part(payload)
        .map_err(|reason| AuthError::MalformedToken(format!("payload: {reason}")))?;
    if !payload.is_object() {
        return Err(AuthError::MalformedToken(
            "payload: the claims are not a JSON object".to_owned(),
        ));
    }
    Ok(header.alg)
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|error| format!("not unpadded base64url: {error}"))?;
    serde_json::from_slice(&bytes).map_err(|error| format!("not valid JSON: {error}"))
}

/// Reads the claims of a verified token and checks the rules their types cannot express.
fn parse_claims(value: Value) -> Result<Claims, AuthError> {
    let claims: Claims = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        match path.as_str() {
            // A missing claim is reported at the root, and the message names it.
            "." => AuthError::InvalidClaims(error.to_string()),
            _ => AuthError::InvalidClaims(format!("claim {path}: {error}")),
        }
    })?;
    match claims.problem() {
        Some(problem) => Err(AuthError::InvalidClaims(problem)),
        None => Ok(claims),
    }
}

/// Maps the library's failures after [`read_algorithm`] passed.
fn library_error(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        // Header and payload decoded already, so base64 and crypto failures are the
        // signature's.
        ErrorKind::InvalidSignature | ErrorKind::Base64(_) | ErrorKind::Crypto(_) => {
            AuthError::InvalidSignature
        }
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::InvalidClaims(format!(
            "the {claim} claim is missing or not a number of seconds"
        )),
        _ => AuthError::MalformedToken(error.to_string()),
    }
}

fn rsa_public_key(pem: &[u8]) -> Result<DecodingKey, AuthError> {
    // The PEM parser reads the key bits out of a private key as well, and every signature
    // would then fail, so a private key is rejected by name.
    if String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
        return Err(AuthError::InvalidKey(
            "this is a private key; give the public key, as `openssl pkey -pubout` prints it"
                .to_owned(),
        ));
    }
    DecodingKey::from_rsa_pem(pem)
        .map_err(|error| AuthError::InvalidKey(format!("not an RSA public key in PEM: {error}")))
}

pub(crate) fn check_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::WeakSecret {
            length: secret.len(),
        });
    }
    Ok(())
}

fn unix_now() -> Result<u64, AuthError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .map_err(|_| AuthError::Clock)
}
