//! The timer that deletes conversations whose time to live has passed.

use std::sync::Arc;
use std::time::Duration;

use media::MediaHandle;
use room::Registry;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

/// Time between two checks for expired conversations. A conversation's `ttl` counts whole
/// seconds, so checking every second deletes it at most about a second late. A check locks
/// each conversation once, briefly, which is little next to the requests a node serves.
pub(crate) const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Spawns the task that checks for expired conversations every [`EXPIRY_INTERVAL`] until it
/// is aborted.
pub(crate) fn spawn(registry: Arc<Registry>, media: MediaHandle) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(EXPIRY_INTERVAL);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            expire_conversations(&registry, &media).await;
        }
    })
}

/// Deletes every expired conversation and closes its legs in the media worker.
async fn expire_conversations(registry: &Arc<Registry>, media: &MediaHandle) {
    // Each deletion commits to storage, which blocks, so the scan runs off the runtime's
    // worker threads.
    let scan_registry = Arc::clone(registry);
    let outcomes = match tokio::task::spawn_blocking(move || {
        scan_registry.expire_conversations(OffsetDateTime::now_utc())
    })
    .await
    {
        Ok(outcomes) => outcomes,
        Err(error) => {
            warn!(%error, "the check for expired conversations failed");
            return;
        }
    };

    for outcome in outcomes {
        match outcome {
            Ok(deleted) => {
                let conversation = &deleted.conversation;
                info!(
                    conversation = %conversation.id,
                    ttl_seconds = conversation.properties.ttl,
                    closed_legs = deleted.closed_legs.len(),
                    "conversation expired"
                );
                signaling::close_media_legs(media, &deleted.closed_legs).await;
            }
            Err(error) => warn!(
                %error,
                "deleting an expired conversation failed; the next check retries it"
            ),
        }
    }
}
