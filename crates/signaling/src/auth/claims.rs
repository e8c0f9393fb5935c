//! The claims of a Switchboard token and their rules.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::acl::{PathPattern, PatternError};

/// Path patterns `switchboard token` grants unless `--acl-path` replaces them: the REST
/// resources a client SDK uses, in the Nexmo `acl.paths` format.
pub const DEFAULT_ACL_PATHS: [&str; 4] = [
    "/*/users/**",
    "/*/conversations/**",
    "/*/sessions/**",
    "/*/legs/**",
];

/// The claims of a Switchboard token.
///
/// Required: `application_id`, `exp`, `iat` and a non-empty `jti`. Optional: `sub` (absent in
/// an admin token, non-empty otherwise), `nbf`, `acl` and `moderator`. Other claims are
/// ignored. Times are seconds since the Unix epoch; fractional seconds are accepted and
/// truncated, because some JWT libraries write them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub application_id: String,
    /// Name of the user the token acts as, absent in an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Issue time.
    #[serde(deserialize_with = "numeric_date")]
    pub iat: u64,
    /// Time before which the token is not valid yet.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<u64>,
    /// Unique id of the token.
    pub jti: String,
    /// Paths the token may be used on. Without it the token grants no path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Acl>,
    /// Switchboard's private claim: a user token with `"moderator": true` may mute other
    /// members of a conversation it has joined. Admin tokens may do so without it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub moderator: bool,
}

/// Path grants of a token: each key of `paths` is a [`PathPattern`].
///
/// NOTE: The object after each pattern (Nexmo tokens write `{}`) is accepted but not read, so
/// a pattern grants every method on the paths it matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    #[serde(default)]
    pub paths: Map<String, Value>,
}

impl Acl {
    /// Creates grants of `patterns`, each with an empty restriction object.
    pub fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let paths = patterns
            .into_iter()
            .map(|pattern| (pattern.to_owned(), Value::Object(Map::new())))
            .collect();
        Acl { paths }
    }

    /// Compiles every pattern, failing on the first invalid one.
    pub fn compile(&self) -> Result<Vec<PathPattern>, PatternError> {
        self.paths.keys().map(|pattern| pattern.parse()).collect()
    }
}

impl Claims {
    /// Checks the rules serde cannot express, and returns what is wrong.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.application_id.trim().is_empty() {
            return Some("the application_id claim is empty".to_owned());
        }
        if self.jti.trim().is_empty() {
            return Some("the jti claim is empty".to_owned());
        }
        if self.sub.as_deref().is_some_and(|sub| sub.trim().is_empty()) {
            return Some("the sub claim is empty: leave it out for an admin token".to_owned());
        }
        if self.exp < self.iat {
            return Some(format!(
                "the exp claim ({}) is before the iat claim ({})",
                self.exp, self.iat
            ));
        }
        None
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Reads a JSON number of seconds, truncating a fraction. Negative and non-finite values are
/// rejected.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(seconds) = number.as_u64() {
        return Ok(seconds);
    }
    match number.as_f64() {
        // The cast saturates above u64::MAX, which no clock reaches.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds as u64),
        _ => Err(serde::de::Error::custom(format!(
            "expected seconds since the Unix epoch, found {number}"
        ))),
    }
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    numeric_date(deserializer).map(Some)
}
