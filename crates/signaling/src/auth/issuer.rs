//! Minting tokens with the node's secret (HS256) or the application's private key (RS256).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::claims::{Acl, Claims, DEFAULT_ACL_PATHS};
use super::{AuthError, check_secret};

/// The identity, grants and lifetime of a token to mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// User the token acts as; `None` mints an admin token.
    pub user: Option<String>,
    /// Whether a user token may mute other members (the `moderator` claim).
    pub moderator: bool,
    /// Patterns of `acl.paths`; `None` grants [`DEFAULT_ACL_PATHS`].
    pub acl_paths: Option<Vec<String>>,
    /// Time from now until the token expires.
    pub ttl: Duration,
}

impl TokenGrant {
    /// Creates the grant of an admin token with the default paths.
    pub fn admin(ttl: Duration) -> Self {
        TokenGrant {
            user: None,
            moderator: false,
            acl_paths: None,
            ttl,
        }
    }

    /// Creates the grant of a token acting as the user `name`, with the default paths.
    pub fn user(name: impl Into<String>, ttl: Duration) -> Self {
        TokenGrant {
            user: Some(name.into()),
            ..TokenGrant::admin(ttl)
        }
    }

    /// Adds the moderator grant.
    pub fn moderator(mut self) -> Self {
        self.moderator = true;
        self
    }

    /// Replaces the default paths.
    pub fn acl_paths(mut self, patterns: Vec<String>) -> Self {
        self.acl_paths = Some(patterns);
        self
    }
}

/// Mints tokens with one key.
#[derive(Clone)]
pub struct TokenIssuer {
    application_id: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

/// Shows the application and algorithm, never the key.
impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("application_id", &self.application_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Creates an issuer of HS256 tokens signed with `secret`.
    pub fn hs256(application_id: impl Into<String>, secret: &[u8]) -> Result<Self, AuthError> {
        check_secret(secret)?;
        Ok(TokenIssuer {
            application_id: application_id.into(),
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
        })
    }

    /// Creates an issuer of RS256 tokens signed with an RSA private key in PEM (PKCS#1 or
    /// PKCS#8).
    pub fn rs256(
        application_id: impl Into<String>,
        private_key_pem: &[u8],
    ) -> Result<Self, AuthError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem).map_err(|error| {
            AuthError::InvalidKey(format!("not an RSA private key in PEM: {error}"))
        })?;
        let issuer = TokenIssuer {
            application_id: application_id.into(),
            algorithm: Algorithm::RS256,
            key,
        };

        // The PEM parser accepts some keys the signer cannot use, so sign once now to report
        // a bad key here rather than on the first token.
        let probe = Claims {
            application_id: issuer.application_id.clone(),
            sub: None,
            exp: 0,
            iat: 0,
            nbf: None,
            jti: "probe".to_owned(),
            acl: None,
            moderator: false,
        };
        issuer
            .sign(&probe)
            .map_err(|error| AuthError::InvalidKey(error.to_string()))?;
        Ok(issuer)
    }

    /// Algorithm of the tokens this issuer signs.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Mints a token with the default paths valid for `ttl`: an admin token without `user`,
    /// else one acting as the user of that name.
    pub fn mint(&self, user: Option<&str>, ttl: Duration) -> Result<String, AuthError> {
        let grant = match user {
            None => TokenGrant::admin(ttl),
            Some(name) => TokenGrant::user(name, ttl),
        };
        self.mint_grant(&grant)
    }

    /// Mints a token for `grant`, issued now.
    pub fn mint_grant(&self, grant: &TokenGrant) -> Result<String, AuthError> {
        self.sign(&self.claims(grant)?)
    }

    /// Builds the claims of `grant`, issued now, with a fresh `jti`.
    pub fn claims(&self, grant: &TokenGrant) -> Result<Claims, AuthError> {
        if grant
            .user
            .as_deref()
            .is_some_and(|user| user.trim().is_empty())
        {
            return Err(AuthError::InvalidGrant("the user name is empty".to_owned()));
        }
        if grant.moderator && grant.user.is_none() {
            return Err(AuthError::InvalidGrant(
                "the moderator grant is for user tokens; admin tokens may mute anyone".to_owned(),
            ));
        }
        let acl = match &grant.acl_paths {
            None => Acl::from_patterns(DEFAULT_ACL_PATHS),
            Some(patterns) => Acl::from_patterns(patterns.iter().map(String::as_str)),
        };
        acl.compile()
            .map_err(|error| AuthError::InvalidGrant(error.to_string()))?;

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Clock)?
            .as_secs();
        Ok(Claims {
            application_id: self.application_id.clone(),
            sub: grant.user.clone(),
            exp: now.saturating_add(grant.ttl.as_secs()),
            iat: now,
            nbf: None,
            jti: uuid::Uuid::new_v4().to_string(),
            acl: Some(acl),
            moderator: grant.moderator,
        })
    }

    /// Signs `claims` as they are, without checking them: tests use it to make tokens a
    /// node must reject.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(|error| AuthError::Signing(error.to_string()))
    }
}
