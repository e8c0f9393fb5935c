//! Webhook delivery of the node: the event sink that queues every event for the application's
//! `event_url`, and the export of its counters.

use std::sync::Arc;

use anyhow::Context;
use metrics::Metrics;
use room::ConversationId;
use signaling::{ApiEvent, EventFanout, EventSink};
use webhooks::{WebhookConfig, Webhooks};

/// Queues every event for webhook delivery.
struct WebhookSink {
    webhooks: Arc<Webhooks>,
}

impl EventSink for WebhookSink {
    fn deliver(&self, conversation_id: &ConversationId, event: &ApiEvent) {
        // A dropped event is counted in the webhook stats and logged at a limited rate by
        // the webhooks crate, so there is nothing left to do with the error.
        let _ = self
            .webhooks
            .enqueue(conversation_id.as_str(), event.clone());
    }
}

/// Starts webhook delivery when `webhooks.event_url` is set: adds its sink to `fanout`, and
/// makes every scrape of `metrics` read its counters. Returns `None` when it is unset.
pub(crate) fn start(
    config: &WebhookConfig,
    fanout: &EventFanout,
    metrics: &Metrics,
) -> anyhow::Result<Option<Arc<Webhooks>>> {
    if config.event_url.is_none() {
        return Ok(None);
    }
    let webhooks =
        Arc::new(Webhooks::start(config.clone()).context("failed to start webhook delivery")?);

    let source = Arc::clone(&webhooks);
    metrics.set_webhook_totals(Box::new(move || source.stats().outcomes().to_vec()));
    fanout.add_sink(Arc::new(WebhookSink {
        webhooks: Arc::clone(&webhooks),
    }));
    Ok(Some(webhooks))
}
