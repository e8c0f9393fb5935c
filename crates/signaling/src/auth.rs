//! Bearer tokens: verifying the JWTs that come with requests and minting them for the
//! configured key.
//!
//! Tokens are HS256 JWTs signed with the node's shared secret. A token without `sub` is an
//! admin token, and one with `sub` acts as the user of that name. The claims keep `acl.paths` so
//! that path grants can be enforced later, and the verifier hides its key type so that RS256
//! keys per application can be added beside the shared secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Shortest HS256 secret accepted, in bytes: RFC 7518 (section 3.2) requires a key at least as
/// long as the hash output, 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// Seconds a token may be past `exp` and still be accepted, for clock skew between the
/// minting backend and the node.
const EXPIRY_LEEWAY_SECONDS: u64 = 30;

/// Path patterns a minted token grants, in the Nexmo `acl.paths` format.
const DEFAULT_ACL_PATHS: [&str; 4] = [
    "/*/users/**",
    "/*/conversations/**",
    "/*/sessions/**",
    "/*/legs/**",
];

/// The claims of a Switchboard token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub application_id: String,
    /// Name of the user the token acts as, absent in an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, in seconds since the Unix epoch.
    pub iat: u64,
    /// Unique id of the token.
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Acl>,
}

/// Path grants of a token: path pattern to an object of optional restrictions.
// NOTE: The grants are parsed and kept but not enforced yet. Access is decided by the
// principal alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    #[serde(default)]
    pub paths: Map<String, Value>,
}

/// Identity a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The application's backend: may do everything.
    Admin,
    /// One user, by name: acts only as itself.
    User(String),
}

/// The verified token of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub principal: Principal,
    pub claims: Claims,
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
}

/// Failure to verify or mint a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is missing: send `Authorization: Bearer <JWT>`")]
    MissingToken,
    #[error("the Authorization header is not of the form `Bearer <JWT>`")]
    MalformedHeader,
    #[error("the token has expired: mint a new one")]
    Expired,
    #[error("the token signature does not match this node's key")]
    InvalidSignature,
    #[error("the token was issued for application {found:?}, not for this node's application")]
    WrongApplication { found: String },
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the signing secret is {length} bytes long; HS256 needs at least {MIN_SECRET_BYTES}")]
    WeakSecret { length: usize },
    #[error("failed to sign the token: {0}")]
    Signing(String),
    #[error("the system clock is before the Unix epoch")]
    Clock,
}

/// Checks bearer tokens against the node's key and application id.
#[derive(Clone)]
pub struct TokenVerifier {
    application_id: String,
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// Creates a verifier of HS256 tokens signed with `secret`.
    pub fn hs256(application_id: impl Into<String>, secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(secret)?;

        // Listing HS256 as the only algorithm makes the library reject `alg: none` and every
        // other algorithm before it looks at the signature.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = EXPIRY_LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);

        Ok(TokenVerifier {
            application_id: application_id.into(),
            key: DecodingKey::from_secret(secret),
            validation,
        })
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

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::InvalidSignature,
                _ => AuthError::Invalid(error.to_string()),
            },
        )?;
        let claims = data.claims;

        if claims.application_id != self.application_id {
            return Err(AuthError::WrongApplication {
                found: claims.application_id,
            });
        }
        let principal = match &claims.sub {
            None => Principal::Admin,
            Some(name) if name.is_empty() => {
                return Err(AuthError::Invalid("the sub claim is empty".to_owned()));
            }
            Some(name) => Principal::User(name.clone()),
        };
        Ok(Caller { principal, claims })
    }
}

/// Mints tokens with the node's key.
#[derive(Clone)]
pub struct TokenIssuer {
    application_id: String,
    key: EncodingKey,
}

impl TokenIssuer {
    /// Creates an issuer of HS256 tokens signed with `secret`.
    pub fn hs256(application_id: impl Into<String>, secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(secret)?;
        Ok(TokenIssuer {
            application_id: application_id.into(),
            key: EncodingKey::from_secret(secret),
        })
    }

    /// Mints a token valid for `ttl`: an admin token without `user`, else one acting as the
    /// user of that name.
    pub fn mint(&self, user: Option<&str>, ttl: Duration) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Clock)?
            .as_secs();
        let paths = DEFAULT_ACL_PATHS
            .iter()
            .map(|path| ((*path).to_owned(), Value::Object(Map::new())))
            .collect();
        let claims = Claims {
            application_id: self.application_id.clone(),
            sub: user.map(str::to_owned),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            acl: Some(Acl { paths }),
        };

        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|error| AuthError::Signing(error.to_string()))
    }
}

fn check_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::WeakSecret {
            length: secret.len(),
        });
    }
    Ok(())
}
