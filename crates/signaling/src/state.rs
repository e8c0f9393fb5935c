//! State shared by every request handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use media::MediaHandle;
use metrics::Metrics;
use room::{ConversationId, Registry};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::auth::TokenVerifier;

/// Default maximum size of a request body, in bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Settings of the HTTP API.
#[derive(Clone, Debug)]
pub struct SignalingConfig {
    /// Maximum size of a request body, in bytes. Larger bodies get 413.
    pub body_limit: usize,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Handle to everything a request needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    media: MediaHandle,
    verifier: TokenVerifier,
    config: SignalingConfig,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// One lock per conversation, held across the room check, the media command and the room
    /// update of a media change, so that two changes of one conversation reach the room and
    /// the media worker in the same order.
    media_locks: DashMap<ConversationId, Arc<Mutex<()>>>,
}

impl AppState {
    /// Creates the state with metrics of its own. A node whose media worker observes into the
    /// same metrics uses [`AppState::with_metrics`].
    pub fn new(
        registry: Arc<Registry>,
        media: MediaHandle,
        verifier: TokenVerifier,
        config: SignalingConfig,
    ) -> Self {
        // The definitions are constants, and a test of the metrics crate registers them all.
        let metrics = Metrics::new().expect("the metric definitions are valid");
        Self::with_metrics(registry, media, verifier, config, Arc::new(metrics))
    }

    pub fn with_metrics(
        registry: Arc<Registry>,
        media: MediaHandle,
        verifier: TokenVerifier,
        config: SignalingConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                registry,
                media,
                verifier,
                config,
                metrics,
                draining: AtomicBool::new(false),
                media_locks: DashMap::new(),
            }),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn media(&self) -> &MediaHandle {
        &self.inner.media
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.inner.verifier
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Marks the node as draining: `/readyz` returns 503 and new POST requests are rejected.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Takes the media lock of a conversation.
    // NOTE: Locks are never removed, like the conversations themselves.
    pub(crate) async fn lock_media(&self, conversation: &ConversationId) -> OwnedMutexGuard<()> {
        let lock = self
            .inner
            .media_locks
            .entry(conversation.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}
