//! The Switchboard node: configuration, the wiring of signaling, room, storage, media and
//! webhooks, logging and graceful shutdown. The `switchboard` binary is a thin command line over this library, which
//! tests use to start real nodes in-process.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let node = switchboard::Node::start(switchboard::Config::ephemeral()).await?;
//! let token = node.admin_token(std::time::Duration::from_secs(600))?;
//! println!("{} {} {token}", node.http_url(), node.media_address());
//! node.shutdown().await
//! # }
//! ```

pub mod config;
pub mod demo;
mod expiry;
mod node;
mod storage;
mod telemetry;
mod webhook_delivery;

use std::time::Duration;

use anyhow::Context;

pub use config::Config;
pub use node::{Node, run};
pub use telemetry::init_tracing;

/// Mints a token with the configured key (the private key if one is set, else the secret) for
/// the configured application: an admin token without `user`, else one acting as the user of
/// that name.
pub fn mint_token(config: &Config, user: Option<&str>, ttl: Duration) -> anyhow::Result<String> {
    let issuer = config.auth.issuer(None)?;
    issuer.mint(user, ttl).context("failed to mint a token")
}
