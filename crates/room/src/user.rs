//! Users of the application.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::RoomError;
use crate::id::UserId;

/// Maximum length of a user name, conversation name or display name, in characters.
pub const MAX_NAME_LENGTH: usize = 255;

/// An application's user, known by a unique name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub display_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// The fields of a user to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub display_name: Option<String>,
}

/// Checks a name or display name: 1 to [`MAX_NAME_LENGTH`] characters, not only whitespace,
/// no whitespace at either end, and no control characters, which would corrupt logs and
/// headers.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), RoomError> {
    let invalid = |reason: &str| RoomError::InvalidField {
        field,
        reason: reason.to_owned(),
    };

    if value.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LENGTH {
        return Err(invalid(&format!(
            "must be at most {MAX_NAME_LENGTH} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    // "alice" and "alice " would otherwise be two users that look the same in every list.
    if value.trim() != value {
        return Err(invalid("must not start or end with whitespace"));
    }
    Ok(())
}
