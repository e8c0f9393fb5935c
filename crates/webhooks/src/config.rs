//! Settings of webhook delivery, their defaults and their validation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Certificate, Url};
use serde::{Deserialize, Serialize};

use crate::WebhookError;

/// Minimum length of the signing secret, in bytes: 256 bits, the output size of SHA-256.
pub const MIN_SECRET_BYTES: usize = 32;

/// Maximum number of delivery lanes. Each lane has at most one request in flight.
pub const MAX_LANES: usize = 1024;

/// Maximum number of attempts per event.
pub const MAX_ATTEMPTS: u32 = 100;

/// Maximum of every duration setting, in milliseconds: one day.
pub const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;

/// Settings of webhook delivery. Every field has a default, so a configuration file only names
/// what it changes. The fields ending in `_ms` are durations in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL that receives every conversation event by POST, http or https. Unset disables webhooks.
    pub event_url: Option<String>,
    /// HMAC-SHA256 key of the signature header, at least 32 bytes. Required with `event_url`.
    pub secret: WebhookSecret,
    /// Maximum number of events accepted and not yet delivered or dropped, including those being
    /// sent. An event enqueued beyond it is dropped and counted.
    pub queue_capacity: usize,
    /// Number of delivery lanes, each sending one request at a time. A conversation's events
    /// always go through the same lane, in order.
    pub lanes: usize,
    /// Attempts per event, the first included, before the event is dropped and counted.
    pub max_attempts: u32,
    /// Upper bound of the delay before the second attempt, in milliseconds. The bound doubles for
    /// every further attempt, and each delay is drawn between half the bound and the bound.
    pub initial_backoff_ms: u64,
    /// Cap of the delay between attempts, in milliseconds, also for a receiver's `Retry-After`.
    pub max_backoff_ms: u64,
    /// Time allowed for one attempt, from connecting to the end of the response, in milliseconds.
    pub request_timeout_ms: u64,
    /// PEM file of CA certificates trusted for an https `event_url`, in addition to the Mozilla
    /// root certificates built in. For receivers whose certificate comes from a private CA.
    pub ca_file: Option<PathBuf>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            event_url: None,
            secret: WebhookSecret::default(),
            queue_capacity: 10_000,
            lanes: 16,
            max_attempts: 6,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            request_timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// The signing secret. Its `Debug` output is redacted, so a logged configuration does not show it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        WebhookSecret(secret.into())
    }

    /// Returns the secret, the key of the HMAC.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret(<{} bytes, redacted>)", self.0.len())
    }
}

/// A configuration that passed validation, with the URL parsed and durations converted.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) event_url: Url,
    pub(crate) secret: WebhookSecret,
    pub(crate) queue_capacity: usize,
    pub(crate) lanes: usize,
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) root_certificates: Vec<Certificate>,
}

impl WebhookConfig {
    /// Checks every field, and reads `ca_file`. The error names the first invalid field, as
    /// written in the configuration. The secret is checked only when `event_url` is set, because
    /// it is unused otherwise.
    pub fn validate(&self) -> Result<(), WebhookError> {
        if let Some(event_url) = &self.event_url {
            parse_event_url(event_url)?;
            check_secret(&self.secret)?;
        }
        self.check_limits()?;
        if let Some(path) = &self.ca_file {
            load_ca_file(path)?;
        }
        Ok(())
    }

    pub(crate) fn settings(&self) -> Result<Settings, WebhookError> {
        self.validate()?;
        let Some(event_url) = &self.event_url else {
            return Err(invalid(
                "event_url",
                "is missing: set it to enable webhooks",
            ));
        };
        Ok(Settings {
            event_url: parse_event_url(event_url)?,
            secret: self.secret.clone(),
            queue_capacity: self.queue_capacity,
            lanes: self.lanes,
            max_attempts: self.max_attempts,
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            root_certificates: match &self.ca_file {
                Some(path) => load_ca_file(path)?,
                None => Vec::new(),
            },
        })
    }

    fn check_limits(&self) -> Result<(), WebhookError> {
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1"));
        }
        if self.lanes == 0 || self.lanes > MAX_LANES {
            let reason = format!("is {}, but must be from 1 to {MAX_LANES}", self.lanes);
            return Err(invalid("lanes", reason));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            let reason = format!(
                "is {}, but must be from 1 to {MAX_ATTEMPTS}",
                self.max_attempts
            );
            return Err(invalid("max_attempts", reason));
        }
        for (field, value) in [
            ("initial_backoff_ms", self.initial_backoff_ms),
            ("max_backoff_ms", self.max_backoff_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if value == 0 || value > MAX_DURATION_MS {
                let reason = format!("is {value}, but must be from 1 to {MAX_DURATION_MS}");
                return Err(invalid(field, reason));
            }
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            let reason = format!(
                "is {}, but must be at least initial_backoff_ms ({})",
                self.max_backoff_ms, self.initial_backoff_ms
            );
            return Err(invalid("max_backoff_ms", reason));
        }
        Ok(())
    }
}

fn parse_event_url(text: &str) -> Result<Url, WebhookError> {
    let url = Url::parse(text)
        .map_err(|error| invalid("event_url", format!("is not a valid URL: {error}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        let reason = format!("has scheme {}, but must be http or https", url.scheme());
        return Err(invalid("event_url", reason));
    }
    if url.host().is_none() {
        return Err(invalid("event_url", "has no host"));
    }
    Ok(url)
}

fn load_ca_file(path: &Path) -> Result<Vec<Certificate>, WebhookError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|error| invalid("ca_file", format!("{shown} cannot be read: {error}")))?;
    let certificates = Certificate::from_pem_bundle(&pem)
        .map_err(|error| invalid("ca_file", format!("{shown} is not valid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(invalid(
            "ca_file",
            format!("{shown} contains no certificate"),
        ));
    }
    Ok(certificates)
}

fn check_secret(secret: &WebhookSecret) -> Result<(), WebhookError> {
    let length = secret.expose().len();
    if length < MIN_SECRET_BYTES {
        let reason = format!("is {length} bytes long, but must be at least {MIN_SECRET_BYTES}");
        return Err(invalid("secret", reason));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WebhookError {
    WebhookError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> WebhookConfig {
        WebhookConfig {
            event_url: Some("http://127.0.0.1:9000/events".to_owned()),
            secret: WebhookSecret::new("0123456789abcdef0123456789abcdef"),
            ..WebhookConfig::default()
        }
    }

    fn invalid_field(config: &WebhookConfig) -> &'static str {
        match config.validate() {
            Err(WebhookError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_disabled() {
        let config = WebhookConfig::default();
        assert_eq!(config.event_url, None);
        assert!(config.validate().is_ok());
        assert!(enabled().validate().is_ok());
    }

    #[test]
    fn deserializes_partial_settings_over_defaults() {
        let text = r#"{"event_url": "https://127.0.0.1/hook", "max_attempts": 3}"#;
        let config: WebhookConfig = serde_json::from_str(text).expect("valid settings");
        assert_eq!(config.event_url.as_deref(), Some("https://127.0.0.1/hook"));
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.queue_capacity, 10_000);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let result = serde_json::from_str::<WebhookConfig>(r#"{"retries": 3}"#);
        let message = result.expect_err("unknown field").to_string();
        assert!(message.contains("retries"), "{message}");
    }

    /// Changes one setting of a valid configuration to an invalid value.
    type Breakage = fn(&mut WebhookConfig);

    #[test]
    fn invalid_fields_are_named() {
        let cases: [(&str, Breakage); 15] = [
            ("event_url", |c| c.event_url = Some("not a url".into())),
            ("event_url", |c| {
                c.event_url = Some("ftp://127.0.0.1/x".into())
            }),
            ("event_url", |c| c.event_url = Some("unix:/run/hook".into())),
            ("secret", |c| c.secret = WebhookSecret::new("short")),
            ("queue_capacity", |c| c.queue_capacity = 0),
            ("lanes", |c| c.lanes = 0),
            ("lanes", |c| c.lanes = MAX_LANES + 1),
            ("max_attempts", |c| c.max_attempts = 0),
            ("initial_backoff_ms", |c| c.initial_backoff_ms = 0),
            ("max_backoff_ms", |c| {
                c.initial_backoff_ms = 100;
                c.max_backoff_ms = 99;
            }),
            ("request_timeout_ms", |c| c.request_timeout_ms = 0),
            ("max_attempts", |c| c.max_attempts = MAX_ATTEMPTS + 1),
            ("initial_backoff_ms", |c| {
                c.initial_backoff_ms = MAX_DURATION_MS + 1
            }),
            ("max_backoff_ms", |c| c.max_backoff_ms = u64::MAX),
            ("request_timeout_ms", |c| {
                c.request_timeout_ms = MAX_DURATION_MS + 1
            }),
        ];
        for (field, break_config) in cases {
            let mut config = enabled();
            break_config(&mut config);
            assert_eq!(invalid_field(&config), field, "{config:?}");
        }
    }

    #[test]
    fn unusable_ca_file_is_named() {
        let directory = std::env::temp_dir().join(format!("webhooks-ca-{}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("temporary directory");
        let no_certificate = directory.join("empty.pem");
        std::fs::write(&no_certificate, "not a certificate\n").expect("write");

        for path in [directory.join("missing.pem"), no_certificate] {
            let mut config = enabled();
            config.ca_file = Some(path.clone());
            assert_eq!(invalid_field(&config), "ca_file", "{}", path.display());
        }
        std::fs::remove_dir_all(&directory).expect("remove the temporary directory");
    }

    #[test]
    fn secret_is_unchecked_while_disabled() {
        let config = WebhookConfig {
            secret: WebhookSecret::new("short"),
            ..WebhookConfig::default()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn starting_needs_an_event_url() {
        let error = WebhookConfig::default()
            .settings()
            .expect_err("no event_url");
        assert!(matches!(
            error,
            WebhookError::InvalidConfig {
                field: "event_url",
                ..
            }
        ));
    }

    #[test]
    fn error_message_names_the_field() {
        let mut config = enabled();
        config.secret = WebhookSecret::new("short");
        let message = config.validate().expect_err("short secret").to_string();
        assert!(message.contains("secret"), "{message}");
        assert!(message.contains("5 bytes"), "{message}");
        assert!(
            !message.contains("short"),
            "the message must not show the secret: {message}"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = WebhookSecret::new("0123456789abcdef0123456789abcdef");
        let text = format!("{:?}", enabled());
        assert!(!text.contains(secret.expose()), "{text}");
    }
}
