//! Settings of a node: defaults, then a TOML file, then `SWITCHBOARD_*` environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use signaling::auth::{TokenIssuer, TokenVerifier};
use webhooks::{WebhookConfig, WebhookError};

/// Prefix of the environment variables that override settings: `SWITCHBOARD_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Environment variable naming the TOML file, read when `--config` is not given.
pub const CONFIG_FILE_ENV: &str = "SWITCHBOARD_CONFIG";

/// Signing secret used when none is configured. It is public, so tokens signed with it prove
/// nothing: a node using it is for development only, and prints a warning when it starts.
pub const DEVELOPMENT_SECRET: &str = "switchboard-development-secret-not-for-production";

/// Application id used when none is configured.
pub const DEVELOPMENT_APPLICATION_ID: &str = "switchboard-development";

/// Data directory used when none is configured, relative to the node's working directory.
pub const DEFAULT_DATA_DIR: &str = "switchboard-data";

/// Directory of the demo page used when none is configured, relative to the node's working
/// directory: the repository's `demo/` when the node runs from the repository.
pub const DEFAULT_DEMO_DIR: &str = "demo";

/// All settings of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaSettings,
    pub auth: AuthSettings,
    pub storage: StorageSettings,
    /// Delivery of every conversation event to the application's `event_url`, off while
    /// `event_url` is unset.
    pub webhooks: WebhookConfig,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
    pub realtime: RealtimeSettings,
    pub demo: DemoSettings,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP API listens on.
    pub address: SocketAddr,
    /// Maximum size of a request body, in bytes.
    pub body_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 7880)),
            body_limit: signaling::DEFAULT_BODY_LIMIT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Address of the one UDP socket that carries every leg.
    pub bind: SocketAddr,
    /// Address put in answers' ICE candidates, for NAT and load balancers, `bind` when unset.
    pub announced_address: Option<SocketAddr>,
    /// Minimum time between two keyframe requests to one publisher track, in milliseconds.
    pub keyframe_request_interval_ms: u64,
    /// Time without ICE consent checks after which a leg counts as disconnected, in
    /// milliseconds.
    pub ice_disconnected_timeout_ms: u64,
    /// Further time without checks after which the leg is closed, in milliseconds.
    pub ice_failed_timeout_ms: u64,
    /// Receive and send buffer size requested for the media socket, in bytes.
    pub socket_buffer_bytes: usize,
    /// Time a downstream leg offered by the node waits for the client's answer, in
    /// milliseconds, before it is closed.
    pub answer_timeout_ms: u64,
}

impl Default for MediaSettings {
    fn default() -> Self {
        let defaults = media::MediaConfig::default();
        MediaSettings {
            bind: defaults.bind,
            announced_address: defaults.announced_address,
            keyframe_request_interval_ms: millis(defaults.keyframe_request_interval),
            ice_disconnected_timeout_ms: millis(defaults.ice_disconnected_timeout),
            ice_failed_timeout_ms: millis(defaults.ice_failed_timeout),
            socket_buffer_bytes: defaults.socket_buffer_bytes,
            answer_timeout_ms: millis(defaults.answer_timeout),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl MediaSettings {
    pub fn to_media_config(&self) -> media::MediaConfig {
        media::MediaConfig {
            bind: self.bind,
            announced_address: self.announced_address,
            keyframe_request_interval: Duration::from_millis(self.keyframe_request_interval_ms),
            ice_disconnected_timeout: Duration::from_millis(self.ice_disconnected_timeout_ms),
            ice_failed_timeout: Duration::from_millis(self.ice_failed_timeout_ms),
            packet_transit: None,
            socket_buffer_bytes: self.socket_buffer_bytes,
            answer_timeout: Duration::from_millis(self.answer_timeout_ms),
        }
    }
}

/// Settings of token verification, and of signing in `switchboard token`.
///
/// HS256 is accepted with `secret`, RS256 with the public key (`public_key` or
/// `public_key_pem`), and both when both are set. The development secret applies only while
/// no public key is set, so a node configured with just a public key accepts no HS256 token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret shared with the application's backend, at least 32 bytes.
    pub secret: Secret,
    /// Application id that every token's `application_id` claim must match.
    pub application_id: String,
    /// Path of the application's RSA public key (PEM) that RS256 tokens are checked with.
    pub public_key: Option<PathBuf>,
    /// The same public key as PEM text, for deployments that pass keys in variables.
    pub public_key_pem: Option<String>,
    /// Path of the RSA private key (PEM) that `switchboard token` signs RS256 tokens with.
    pub private_key: Option<PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            secret: Secret(DEVELOPMENT_SECRET.to_owned()),
            application_id: DEVELOPMENT_APPLICATION_ID.to_owned(),
            public_key: None,
            public_key_pem: None,
            private_key: None,
        }
    }
}

impl AuthSettings {
    pub fn uses_development_secret(&self) -> bool {
        self.hs256_secret() == Some(DEVELOPMENT_SECRET)
    }

    /// Returns the HS256 secret in force: `None` when only a public key is configured.
    pub fn hs256_secret(&self) -> Option<&str> {
        let secret = self.secret.expose();
        let has_public_key = self.public_key.is_some() || self.public_key_pem.is_some();
        if has_public_key && secret == DEVELOPMENT_SECRET {
            return None;
        }
        Some(secret)
    }

    /// Reads the configured RSA public key, from `public_key_pem` or the `public_key` file.
    pub fn public_key(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match (&self.public_key, &self.public_key_pem) {
            (None, None) => Ok(None),
            (None, Some(pem)) => Ok(Some(pem.clone().into_bytes())),
            (Some(path), None) => std::fs::read(path)
                .map(Some)
                .with_context(|| format!("failed to read auth.public_key {}", path.display())),
            (Some(_), Some(_)) => bail!(
                "auth.public_key and auth.public_key_pem are both set: keep the one that contains \
                 the application's public key"
            ),
        }
    }

    /// Builds the verifier of the node's tokens.
    pub fn verifier(&self) -> anyhow::Result<TokenVerifier> {
        let public_key = self.public_key()?;
        TokenVerifier::new(
            &self.application_id,
            self.hs256_secret().map(str::as_bytes),
            public_key.as_deref(),
        )
        .context("invalid auth settings")
    }

    /// Builds the issuer `switchboard token` signs with: RS256 with `private_key` (or
    /// `auth.private_key`), else HS256 with the secret in force.
    pub fn issuer(&self, private_key: Option<&Path>) -> anyhow::Result<TokenIssuer> {
        self.issuer_if_any(private_key)?.context(
            "no key to sign tokens with: set auth.secret or auth.private_key, or pass \
             --private-key",
        )
    }

    /// Builds the issuer like [`AuthSettings::issuer`], or returns `None` when no signing key
    /// is configured, as on a node that only checks RS256 tokens.
    pub fn issuer_if_any(&self, private_key: Option<&Path>) -> anyhow::Result<Option<TokenIssuer>> {
        if let Some(path) = private_key.or(self.private_key.as_deref()) {
            let pem = std::fs::read(path)
                .with_context(|| format!("failed to read the private key {}", path.display()))?;
            let issuer = TokenIssuer::rs256(&self.application_id, &pem)
                .with_context(|| format!("invalid private key {}", path.display()))?;
            return Ok(Some(issuer));
        }
        let Some(secret) = self.hs256_secret() else {
            return Ok(None);
        };
        let issuer = TokenIssuer::hs256(&self.application_id, secret.as_bytes())
            .context("invalid auth settings")?;
        Ok(Some(issuer))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of the SQLite database with users, conversations, members and event logs,
    /// created if missing. A relative path is relative to the node's working directory.
    pub data_dir: PathBuf,
    /// Whether the node stores into a fresh temporary directory instead of `data_dir`, which
    /// is removed when the node's registry is dropped. [`Config::ephemeral`] sets it for tests,
    /// and no file or environment variable can.
    #[serde(skip)]
    pub temporary_data_dir: bool,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            temporary_data_dir: false,
        }
    }
}

/// A secret string that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Log filter of a node with no `log.filter` setting.
pub const DEFAULT_LOG_FILTER: &str = "info,rtc=error";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing` filter directives, such as `info,signaling=debug`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            // The WebRTC library (rtc 0.21 and its rtc_* crates, all matched by the `rtc` prefix)
            // logs at warn what any peer can cause. Some of it is per packet, and some names the
            // peer's address, such as rtc_ice's "discard message from".
            filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Time between `/readyz` turning 503 and the HTTP listener closing, in milliseconds, so
    /// that a load balancer stops sending new work first.
    pub drain_delay_ms: u64,
    /// Maximum wait for in-flight HTTP requests to finish, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            drain_delay_ms: 0,
            timeout_ms: 10_000,
        }
    }
}

/// The socket.io API of the Nexmo JavaScript SDK 4.x, on the HTTP port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeSettings {
    /// Path of the socket.io endpoint, the SDK's `path` setting.
    pub path: String,
    /// Time a socket may stay connected without logging in, in milliseconds.
    pub login_timeout_ms: u64,
    /// Interval of engine.io heartbeats, in milliseconds.
    pub ping_interval_ms: u64,
    /// Time without a heartbeat after which a socket is closed and its session ends, in
    /// milliseconds.
    pub ping_timeout_ms: u64,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        let defaults = signaling::realtime::RealtimeConfig::default();
        RealtimeSettings {
            path: defaults.path,
            login_timeout_ms: millis(defaults.login_timeout),
            ping_interval_ms: millis(defaults.ping_interval),
            ping_timeout_ms: millis(defaults.ping_timeout),
        }
    }
}

impl RealtimeSettings {
    pub fn to_realtime_config(&self) -> signaling::realtime::RealtimeConfig {
        signaling::realtime::RealtimeConfig {
            path: self.path.clone(),
            login_timeout: Duration::from_millis(self.login_timeout_ms),
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            ..signaling::realtime::RealtimeConfig::default()
        }
    }
}

/// Settings of the demo page that the node serves at `/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Whether the node serves the demo page.
    pub enabled: bool,
    /// Directory with the page's files, and with the SDK in `node_modules/` once
    /// `scripts/setup-demo` has installed it. A relative path is relative to the node's working
    /// directory.
    pub dir: PathBuf,
    /// URL the page fetches user tokens from, `GET <token_url>?user=<name>` returning
    /// `{"token": ...}`: the application's own token service. With `&conversation=<name>` the
    /// service also makes the user a member of that conversation and returns
    /// `"conversation": {"id", "name"}`. When it is unset, only a node on the development
    /// secret gives the page tokens.
    pub token_url: Option<String>,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            enabled: true,
            dir: PathBuf::from(DEFAULT_DEMO_DIR),
            token_url: None,
        }
    }
}

/// One setting, for the `--help` text, the environment overrides and their test.
pub struct SettingDoc {
    /// Key in the TOML file, `section.key`.
    pub key: &'static str,
    pub description: &'static str,
    /// Whether the value is text, which is read from the environment as it is. Other values
    /// are parsed, so that `SWITCHBOARD_HTTP_BODY_LIMIT=1000` is a number.
    pub is_text: bool,
}

impl SettingDoc {
    /// Name of the environment variable that overrides this setting.
    pub fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}",
            self.key.replace('.', "_").to_ascii_uppercase()
        )
    }
}

/// Every setting, in the order `--help` lists them.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "http.address",
        description: "address of the HTTP API [default: 127.0.0.1:7880]",
        is_text: true,
    },
    SettingDoc {
        key: "http.body_limit",
        description: "maximum request body, in bytes [default: 65536]",
        is_text: false,
    },
    SettingDoc {
        key: "media.bind",
        description: "address of the media UDP socket [default: 127.0.0.1:7882]",
        is_text: true,
    },
    SettingDoc {
        key: "media.announced_address",
        description: "address put in ICE candidates, for NAT and load balancers \
                      [default: media.bind]",
        is_text: true,
    },
    SettingDoc {
        key: "media.keyframe_request_interval_ms",
        description: "minimum time between keyframe requests to one track, in ms [default: 250]",
        is_text: false,
    },
    SettingDoc {
        key: "media.ice_disconnected_timeout_ms",
        description: "time without ICE checks before a leg is disconnected, in ms [default: 5000]",
        is_text: false,
    },
    SettingDoc {
        key: "media.ice_failed_timeout_ms",
        description: "further time without ICE checks before a leg is closed, in ms \
                      [default: 25000]",
        is_text: false,
    },
    SettingDoc {
        key: "media.socket_buffer_bytes",
        description: "receive and send buffer of the media socket, in bytes; Linux caps it at \
                      net.core.rmem_max and wmem_max [default: 4194304]",
        is_text: false,
    },
    SettingDoc {
        key: "media.answer_timeout_ms",
        description: "time a downstream leg offered by the node (realtime rtc:offer) waits for \
                      its answer before it is closed, in ms [default: 30000]",
        is_text: false,
    },
    SettingDoc {
        key: "auth.secret",
        description: "HS256 token signing secret, at least 32 bytes [default: a public \
                      development secret, used only while no public key is set]",
        is_text: true,
    },
    SettingDoc {
        key: "auth.application_id",
        description: "application id that tokens must carry [default: switchboard-development]",
        is_text: true,
    },
    SettingDoc {
        key: "auth.public_key",
        description: "path of the application's RSA public key (PEM); RS256 tokens are checked \
                      with it, and the development secret is then off [default: none]",
        is_text: true,
    },
    SettingDoc {
        key: "auth.public_key_pem",
        description: "the same public key as PEM text, instead of auth.public_key \
                      [default: none]",
        is_text: true,
    },
    SettingDoc {
        key: "auth.private_key",
        description: "path of the RSA private key (PEM) `switchboard token` signs RS256 tokens \
                      with [default: none, so tokens are HS256]",
        is_text: true,
    },
    SettingDoc {
        key: "storage.data_dir",
        description: "directory of the SQLite database with users, conversations, members and \
                      event logs, created if missing; a relative path is relative to the working \
                      directory [default: switchboard-data]",
        is_text: true,
    },
    SettingDoc {
        key: "webhooks.event_url",
        description: "http or https URL that receives every conversation event by a signed \
                      POST [default: none, so webhooks are off]",
        is_text: true,
    },
    SettingDoc {
        key: "webhooks.secret",
        description: "HMAC-SHA256 key of the X-Switchboard-Signature header, at least 32 bytes; \
                      required with webhooks.event_url [default: none]",
        is_text: true,
    },
    SettingDoc {
        key: "webhooks.queue_capacity",
        description: "maximum events waiting for delivery; further events are dropped and \
                      counted [default: 10000]",
        is_text: false,
    },
    SettingDoc {
        key: "webhooks.lanes",
        description: "delivery lanes, each sending one request at a time; a conversation's \
                      events always take the same lane [default: 16]",
        is_text: false,
    },
    SettingDoc {
        key: "webhooks.max_attempts",
        description: "attempts per event, the first included, before it is dropped [default: 6]",
        is_text: false,
    },
    SettingDoc {
        key: "webhooks.initial_backoff_ms",
        description: "upper bound of the delay before the second attempt, doubling for each \
                      further one, in ms [default: 500]",
        is_text: false,
    },
    SettingDoc {
        key: "webhooks.max_backoff_ms",
        description: "maximum delay between attempts, also for a receiver's Retry-After, in ms \
                      [default: 30000]",
        is_text: false,
    },
    SettingDoc {
        key: "webhooks.request_timeout_ms",
        description: "time allowed for one attempt, in ms [default: 10000]",
        is_text: false,
    },
    SettingDoc {
        key: "webhooks.ca_file",
        description: "PEM file of CA certificates trusted for an https event_url, besides the \
                      built-in Mozilla roots [default: none]",
        is_text: true,
    },
    SettingDoc {
        key: "log.format",
        description: "log format, text or json [default: text]",
        is_text: true,
    },
    SettingDoc {
        key: "log.filter",
        description: "tracing filter directives [default: info,rtc=error]",
        is_text: true,
    },
    SettingDoc {
        key: "shutdown.drain_delay_ms",
        description: "time /readyz reports 503 before the HTTP listener closes, in ms [default: 0]",
        is_text: false,
    },
    SettingDoc {
        key: "shutdown.timeout_ms",
        description: "maximum wait for in-flight requests on shutdown, then again for queued \
                      webhook deliveries, in ms [default: 10000]",
        is_text: false,
    },
    SettingDoc {
        key: "realtime.path",
        description: "path of the socket.io endpoint of the Nexmo JavaScript SDK 4.x, on the \
                      HTTP port [default: /rtc]",
        is_text: true,
    },
    SettingDoc {
        key: "realtime.login_timeout_ms",
        description: "time a realtime socket may stay open without session:login, in ms \
                      [default: 10000]",
        is_text: false,
    },
    SettingDoc {
        key: "realtime.ping_interval_ms",
        description: "interval of the realtime sockets' heartbeats, in ms [default: 10000]",
        is_text: false,
    },
    SettingDoc {
        key: "realtime.ping_timeout_ms",
        description: "time without a heartbeat after which a realtime socket closes and its \
                      session ends, in ms [default: 10000]",
        is_text: false,
    },
    SettingDoc {
        key: "demo.enabled",
        description: "whether the node serves the demo page at / [default: true]",
        is_text: false,
    },
    SettingDoc {
        key: "demo.dir",
        description: "directory of the demo page and of the SDK that scripts/setup-demo \
                      installs; a relative path is relative to the working directory \
                      [default: demo]",
        is_text: true,
    },
    SettingDoc {
        key: "demo.token_url",
        description: "URL the demo page gets user tokens from, and memberships of the \
                      conversations it names (GET <url>?user=NAME&conversation=NAME, as the \
                      README's Demo section describes) [default: none, so only a node on the \
                      development secret gives the page tokens]",
        is_text: true,
    },
];

impl Config {
    /// Loads the defaults, then `file` if given, then `SWITCHBOARD_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(environment());
        for setting in SETTINGS.iter().filter(|setting| setting.is_text) {
            // Parsed, an application id such as `0042` would become the number 42.
            if let Ok(value) = std::env::var(setting.env_var()) {
                figment = figment.merge(Serialized::default(setting.key, value));
            }
        }

        let config: Config = figment.extract().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Settings for a node on ephemeral loopback ports, for tests: HTTP and media bind
    /// 127.0.0.1 port 0, and storage goes to a fresh temporary directory, removed when the
    /// node's registry is dropped. The storage is real SQLite, so tests run the same storage
    /// code as a deployed node.
    pub fn ephemeral() -> Config {
        let mut config = Config::default();
        config.http.address = SocketAddr::from(([127, 0, 0, 1], 0));
        config.media.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.storage.temporary_data_dir = true;
        config
    }

    /// Checks the settings that the components would reject later with a less clear message.
    pub fn validate(&self) -> anyhow::Result<()> {
        let secret_length = self.auth.secret.expose().len();
        if secret_length < signaling::auth::MIN_SECRET_BYTES {
            bail!(
                "auth.secret is {secret_length} bytes long, but it must be at least {} bytes",
                signaling::auth::MIN_SECRET_BYTES
            );
        }
        if self.auth.application_id.trim().is_empty() {
            bail!("auth.application_id must not be empty");
        }
        if self.http.body_limit == 0 {
            bail!("http.body_limit must be greater than 0");
        }
        if self.media.bind.ip().is_unspecified() && self.media.announced_address.is_none() {
            bail!(
                "media.bind is {}, which is no address a client can reach: set \
                 media.announced_address",
                self.media.bind
            );
        }
        if self.storage.data_dir.as_os_str().is_empty() && !self.storage.temporary_data_dir {
            bail!("storage.data_dir must not be empty: set the directory of the node's database");
        }
        let path = &self.realtime.path;
        if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
            bail!("realtime.path is {path:?}: it must start with / and not end with /");
        }
        if path == signaling::API_BASE || path.starts_with(&format!("{}/", signaling::API_BASE)) {
            bail!(
                "realtime.path is {path:?}, inside the REST API under {}",
                signaling::API_BASE
            );
        }
        for (key, value) in [
            ("realtime.login_timeout_ms", self.realtime.login_timeout_ms),
            ("realtime.ping_interval_ms", self.realtime.ping_interval_ms),
            ("realtime.ping_timeout_ms", self.realtime.ping_timeout_ms),
            ("media.answer_timeout_ms", self.media.answer_timeout_ms),
        ] {
            if value == 0 {
                bail!("{key} must be greater than 0");
            }
        }
        if self.demo.enabled && self.demo.dir.as_os_str().is_empty() {
            bail!(
                "demo.dir must not be empty: set the directory of the demo page, or set demo.enabled to false"
            );
        }
        if let Some(token_url) = &self.demo.token_url
            && token_url.trim().is_empty()
        {
            bail!(
                "demo.token_url must not be empty: set the URL of the application's token service, or leave it out"
            );
        }
        self.webhooks.validate().map_err(|error| match error {
            WebhookError::InvalidConfig { field, reason } => {
                anyhow!("webhooks.{field} {reason}")
            }
            other => anyhow!(other).context("invalid webhooks settings"),
        })?;
        Ok(())
    }
}

/// Reads `SWITCHBOARD_<SECTION>_<KEY>` as `section.key`. Only the first underscore separates,
/// because keys contain underscores themselves.
fn environment() -> Env {
    Env::prefixed(ENV_PREFIX)
        .ignore(&["config"])
        .map(|key| key.as_str().replacen('_', ".", 1).into())
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes its closures' error type to figment::Error"
)]
mod tests {
    use figment::Jail;

    use super::*;

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn defaults_are_a_loopback_development_node() {
        Jail::expect_with(|_| {
            let config = Config::load(None).expect("load");
            assert_eq!(config.http.address, address("127.0.0.1:7880"));
            assert_eq!(config.media.bind, address("127.0.0.1:7882"));
            assert!(config.auth.uses_development_secret());
            assert_eq!(config.log.filter, "info,rtc=error");
            assert_eq!(config.storage.data_dir, Path::new("switchboard-data"));
            assert_eq!(config.webhooks.event_url, None);
            assert!(config.demo.enabled);
            assert_eq!(config.demo.dir, Path::new("demo"));
            assert_eq!(config.demo.token_url, None);
            Ok(())
        });
    }

    #[test]
    fn ephemeral_config_uses_temporary_storage() {
        let config = Config::ephemeral();
        assert!(config.storage.temporary_data_dir);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn temporary_storage_is_not_a_file_setting() {
        Jail::expect_with(|jail| {
            jail.create_file("switchboard.toml", "[storage]\ntemporary_data_dir = true\n")?;
            let error = Config::load(Some(Path::new("switchboard.toml")))
                .expect_err("an unknown storage key");
            assert!(
                format!("{error:#}").contains("temporary_data_dir"),
                "{error:#}"
            );
            Ok(())
        });
    }

    #[test]
    fn empty_data_dir_is_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_STORAGE_DATA_DIR", "");
            let error = Config::load(None).expect_err("an empty data_dir");
            assert!(error.to_string().contains("storage.data_dir"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn empty_demo_settings_are_rejected() {
        for (variable, value, key) in [
            ("SWITCHBOARD_DEMO_DIR", "", "demo.dir"),
            ("SWITCHBOARD_DEMO_TOKEN_URL", " ", "demo.token_url"),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(variable, value);
                let error = Config::load(None).expect_err("an empty demo setting");
                assert!(error.to_string().contains(key), "{variable}: {error}");
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_DEMO_ENABLED", "false");
            jail.set_env("SWITCHBOARD_DEMO_DIR", "");
            assert!(
                Config::load(None).is_ok(),
                "a disabled demo needs no directory"
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_webhook_settings_name_their_key() {
        let cases = [
            (
                "SWITCHBOARD_WEBHOOKS_EVENT_URL",
                "ftp://127.0.0.1/events",
                "webhooks.event_url",
            ),
            ("SWITCHBOARD_WEBHOOKS_SECRET", "short", "webhooks.secret"),
            ("SWITCHBOARD_WEBHOOKS_LANES", "0", "webhooks.lanes"),
            (
                "SWITCHBOARD_WEBHOOKS_MAX_ATTEMPTS",
                "0",
                "webhooks.max_attempts",
            ),
            (
                "SWITCHBOARD_WEBHOOKS_CA_FILE",
                "missing-ca.pem",
                "webhooks.ca_file",
            ),
        ];
        for (variable, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(
                    "SWITCHBOARD_WEBHOOKS_EVENT_URL",
                    "http://127.0.0.1:9300/events",
                );
                jail.set_env(
                    "SWITCHBOARD_WEBHOOKS_SECRET",
                    "fedcba9876543210fedcba9876543210",
                );
                jail.set_env(variable, value);
                let error = Config::load(None).expect_err("an invalid webhook setting");
                let message = format!("{error:#}");
                assert!(message.contains(key), "{variable}={value}: {message}");
                if key == "webhooks.secret" {
                    assert!(!message.contains(value), "the secret is shown: {message}");
                }
                Ok(())
            });
        }
    }

    #[test]
    fn webhook_secret_is_not_in_debug_output() {
        let mut config = Config::default();
        config.webhooks.secret =
            webhooks::WebhookSecret::new("a-webhook-secret-of-32-bytes-or-more");
        let debug = format!("{config:?}");
        assert!(!debug.contains("a-webhook-secret"), "{debug}");
    }

    #[test]
    fn environment_overrides_every_setting() {
        let values = [
            ("http.address", "127.0.0.1:9000"),
            ("http.body_limit", "1000"),
            ("media.bind", "127.0.0.1:9001"),
            ("media.announced_address", "192.0.2.1:9001"),
            ("media.keyframe_request_interval_ms", "500"),
            ("media.ice_disconnected_timeout_ms", "1000"),
            ("media.ice_failed_timeout_ms", "2000"),
            ("media.socket_buffer_bytes", "1048576"),
            ("media.answer_timeout_ms", "4500"),
            ("auth.secret", "0123456789abcdef0123456789abcdef"),
            ("auth.application_id", "0042"),
            ("auth.public_key", "keys/application.pub.pem"),
            ("auth.public_key_pem", "-----BEGIN PUBLIC KEY-----"),
            ("auth.private_key", "keys/application.pem"),
            ("storage.data_dir", "/var/lib/switchboard"),
            ("webhooks.event_url", "http://127.0.0.1:9300/events"),
            ("webhooks.secret", "fedcba9876543210fedcba9876543210"),
            ("webhooks.queue_capacity", "50"),
            ("webhooks.lanes", "3"),
            ("webhooks.max_attempts", "4"),
            ("webhooks.initial_backoff_ms", "20"),
            ("webhooks.max_backoff_ms", "80"),
            ("webhooks.request_timeout_ms", "700"),
            ("webhooks.ca_file", "receiver-ca.pem"),
            ("log.format", "json"),
            ("log.filter", "debug"),
            ("shutdown.drain_delay_ms", "300"),
            ("shutdown.timeout_ms", "400"),
            ("realtime.path", "/socket"),
            ("realtime.login_timeout_ms", "1500"),
            ("realtime.ping_interval_ms", "2500"),
            ("realtime.ping_timeout_ms", "3500"),
            ("demo.enabled", "false"),
            ("demo.dir", "/srv/switchboard-demo"),
            ("demo.token_url", "https://app.example.com/token"),
        ];
        assert_eq!(
            values.len(),
            SETTINGS.len(),
            "every documented setting has a value here"
        );

        Jail::expect_with(|jail| {
            // Validation reads the CA file, so it must hold a certificate.
            let certificate = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("a self-signed certificate");
            jail.create_file("receiver-ca.pem", &certificate.cert.pem())?;
            for setting in SETTINGS {
                let value = values
                    .iter()
                    .find(|(key, _)| *key == setting.key)
                    .map(|(_, value)| *value)
                    .expect("a test value");
                jail.set_env(setting.env_var(), value);
            }

            let config = Config::load(None).expect("load");
            assert_eq!(config.http.address, address("127.0.0.1:9000"));
            assert_eq!(config.http.body_limit, 1000);
            assert_eq!(config.media.bind, address("127.0.0.1:9001"));
            assert_eq!(
                config.media.announced_address,
                Some(address("192.0.2.1:9001"))
            );
            assert_eq!(config.media.keyframe_request_interval_ms, 500);
            assert_eq!(config.media.ice_disconnected_timeout_ms, 1000);
            assert_eq!(config.media.ice_failed_timeout_ms, 2000);
            assert_eq!(config.media.socket_buffer_bytes, 1_048_576);
            assert_eq!(config.media.answer_timeout_ms, 4500);
            assert_eq!(
                config.auth.secret.expose(),
                "0123456789abcdef0123456789abcdef"
            );
            assert_eq!(config.auth.application_id, "0042");
            assert_eq!(
                config.auth.public_key.as_deref(),
                Some(Path::new("keys/application.pub.pem"))
            );
            assert_eq!(
                config.auth.public_key_pem.as_deref(),
                Some("-----BEGIN PUBLIC KEY-----")
            );
            assert_eq!(
                config.auth.private_key.as_deref(),
                Some(Path::new("keys/application.pem"))
            );
            assert_eq!(config.storage.data_dir, Path::new("/var/lib/switchboard"));
            assert!(!config.storage.temporary_data_dir);
            let webhooks = &config.webhooks;
            assert_eq!(
                webhooks.event_url.as_deref(),
                Some("http://127.0.0.1:9300/events")
            );
            assert_eq!(webhooks.secret.expose(), "fedcba9876543210fedcba9876543210");
            assert_eq!(webhooks.queue_capacity, 50);
            assert_eq!(webhooks.lanes, 3);
            assert_eq!(webhooks.max_attempts, 4);
            assert_eq!(webhooks.initial_backoff_ms, 20);
            assert_eq!(webhooks.max_backoff_ms, 80);
            assert_eq!(webhooks.request_timeout_ms, 700);
            assert_eq!(
                webhooks.ca_file.as_deref(),
                Some(Path::new("receiver-ca.pem"))
            );
            assert_eq!(config.log.format, LogFormat::Json);
            assert_eq!(config.log.filter, "debug");
            assert_eq!(config.shutdown.drain_delay_ms, 300);
            assert_eq!(config.shutdown.timeout_ms, 400);
            assert_eq!(config.realtime.path, "/socket");
            assert_eq!(config.realtime.login_timeout_ms, 1500);
            assert_eq!(config.realtime.ping_interval_ms, 2500);
            assert_eq!(config.realtime.ping_timeout_ms, 3500);
            assert!(!config.demo.enabled);
            assert_eq!(config.demo.dir, Path::new("/srv/switchboard-demo"));
            assert_eq!(
                config.demo.token_url.as_deref(),
                Some("https://app.example.com/token")
            );
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "switchboard.toml",
                r#"
                [http]
                address = "127.0.0.1:9100"
                body_limit = 2048

                [auth]
                application_id = "from-file"
                "#,
            )?;
            jail.set_env("SWITCHBOARD_HTTP_ADDRESS", "127.0.0.1:9200");
            jail.set_env("SWITCHBOARD_CONFIG", "ignored-here.toml");

            let config = Config::load(Some(Path::new("switchboard.toml"))).expect("load");
            assert_eq!(config.http.address, address("127.0.0.1:9200"));
            assert_eq!(config.http.body_limit, 2048);
            assert_eq!(config.auth.application_id, "from-file");
            assert_eq!(config.media.bind, address("127.0.0.1:7882"));
            Ok(())
        });
    }

    #[test]
    fn unknown_setting_is_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_HTTP_ADRESS", "127.0.0.1:9000");
            let error = Config::load(None).expect_err("a misspelt key");
            assert!(format!("{error:#}").contains("adress"), "{error:#}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_rejected() {
        Jail::expect_with(|_| {
            let error = Config::load(Some(Path::new("missing.toml"))).expect_err("no file");
            assert!(error.to_string().contains("missing.toml"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn short_secret_is_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_AUTH_SECRET", "short");
            let error = Config::load(None).expect_err("a short secret");
            assert!(error.to_string().contains("auth.secret"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn unspecified_media_bind_needs_announced_address() {
        let mut config = Config::default();
        config.media.bind = address("0.0.0.0:7882");
        assert!(config.validate().is_err());
        config.media.announced_address = Some(address("192.0.2.1:7882"));
        assert!(config.validate().is_ok());
    }

    const PUBLIC_KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../signaling/tests/fixtures/test-only-rsa-public.pem"
    );
    const PRIVATE_KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../signaling/tests/fixtures/test-only-rsa-private.pem"
    );

    #[test]
    fn public_key_turns_development_secret_off() {
        let mut auth = AuthSettings {
            public_key: Some(PathBuf::from(PUBLIC_KEY)),
            ..AuthSettings::default()
        };
        assert_eq!(auth.hs256_secret(), None);
        assert!(!auth.uses_development_secret());
        let verifier = auth.verifier().expect("verifier");
        assert_eq!(verifier.algorithms(), [jsonwebtoken::Algorithm::RS256]);
        assert!(
            auth.issuer_if_any(None)
                .expect("no key is no error")
                .is_none(),
            "a node that only checks RS256 tokens has nothing to sign with"
        );
        assert!(auth.issuer(None).is_err());

        auth.secret = Secret::new("an-explicit-secret-of-32-bytes-or-more");
        let verifier = auth.verifier().expect("verifier");
        assert_eq!(
            verifier.algorithms(),
            [
                jsonwebtoken::Algorithm::HS256,
                jsonwebtoken::Algorithm::RS256
            ]
        );
    }

    #[test]
    fn inline_public_key_is_read() {
        let pem = std::fs::read_to_string(PUBLIC_KEY).expect("fixture");
        let auth = AuthSettings {
            public_key_pem: Some(pem),
            ..AuthSettings::default()
        };
        let verifier = auth.verifier().expect("verifier");
        assert_eq!(verifier.algorithms(), [jsonwebtoken::Algorithm::RS256]);
    }

    #[test]
    fn two_public_keys_are_rejected() {
        let auth = AuthSettings {
            public_key: Some(PathBuf::from(PUBLIC_KEY)),
            public_key_pem: Some("-----BEGIN PUBLIC KEY-----".to_owned()),
            ..AuthSettings::default()
        };
        let error = auth.verifier().expect_err("two keys");
        assert!(error.to_string().contains("both set"), "{error}");
    }

    #[test]
    fn missing_public_key_file_is_named() {
        let auth = AuthSettings {
            public_key: Some(PathBuf::from("no-such-key.pem")),
            ..AuthSettings::default()
        };
        let error = auth.verifier().expect_err("no file");
        assert!(error.to_string().contains("no-such-key.pem"), "{error}");
    }

    #[test]
    fn private_key_selects_rs256() {
        let auth = AuthSettings {
            private_key: Some(PathBuf::from(PRIVATE_KEY)),
            ..AuthSettings::default()
        };
        let issuer = auth.issuer(None).expect("issuer");
        assert_eq!(issuer.algorithm(), jsonwebtoken::Algorithm::RS256);

        let hs256 = AuthSettings::default().issuer(None).expect("issuer");
        assert_eq!(hs256.algorithm(), jsonwebtoken::Algorithm::HS256);
        let given = AuthSettings::default()
            .issuer(Some(Path::new(PRIVATE_KEY)))
            .expect("issuer");
        assert_eq!(given.algorithm(), jsonwebtoken::Algorithm::RS256);
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let config = Config::default();
        let debug = format!("{config:?}");
        assert!(!debug.contains(DEVELOPMENT_SECRET));
    }
}
