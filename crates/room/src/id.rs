//! Identifiers of users, conversations, members and legs.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Prefix of every id this node generates, before the dash and the UUID.
            pub const PREFIX: &'static str = $prefix;

            /// Generates a new id from a random (version 4) UUID.
            pub fn generate() -> Self {
                Self(format!("{}-{}", $prefix, Uuid::new_v4()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Ids from requests are taken as they are: an id this node never generated is simply
        // not found, so there is nothing to validate beyond the lookup.
        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

define_id!(
    /// Id of a user (`USR-<uuid>`).
    UserId,
    "USR"
);
define_id!(
    /// Id of a conversation (`CON-<uuid>`).
    ConversationId,
    "CON"
);
define_id!(
    /// Id of a member, one user's membership of one conversation (`MEM-<uuid>`).
    MemberId,
    "MEM"
);
define_id!(
    /// Id of a leg, one WebRTC connection of a member (`LEG-<uuid>`). Clients call it `rtc_id`.
    LegId,
    "LEG"
);
