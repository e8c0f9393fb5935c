//! The Prometheus metrics of a Switchboard node.
//!
//! [`Metrics`] owns one `prometheus` registry with two kinds of metrics. Histograms are live
//! `prometheus` metrics that their owners update as things happen: the media worker observes
//! packet transit times, the HTTP layer request latencies. Everything the media worker, the room
//! and webhook delivery already count (packets, drops, legs, members, deliveries) is not copied
//! into `prometheus` as it happens. It is read once per scrape, as a [`NodeSnapshot`] or from
//! the source given to [`Metrics::set_webhook_totals`], so the counting code keeps its plain
//! counters and pays nothing for the export.
//!
//! Names follow the Prometheus conventions: the `switchboard_` prefix, counters ending in
//! `_total` and durations in `_seconds`. The standard process metrics
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...) come from the
//! `prometheus` process collector on Linux, with the CPU time made precise to a clock tick.

mod node;
#[cfg(target_os = "linux")]
mod process;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub use node::NodeSnapshot;

/// Content type of the text exposition format that [`Metrics::render`] produces.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Route label of a request that matched no route, so unknown paths cannot add series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the packet transit buckets: 5 µs doubling up to about 164 ms. The doubling
/// keeps the relative error of a quantile estimate the same from the fast path of an idle node
/// to the queueing of an overloaded one.
fn packet_transit_buckets() -> Vec<f64> {
    (0..16).map(|step| 5e-6 * f64::from(1u32 << step)).collect()
}

/// Upper bounds of the request latency buckets, from 0.5 ms to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Source of the webhook delivery totals since the start, by outcome label, read at every
/// scrape.
pub type WebhookTotals = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Errors of building or encoding the metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A metric definition was rejected by the registry: an invalid or duplicate name.
    #[error("invalid metric definition: {0}")]
    Definition(#[source] prometheus::Error),
    /// The text encoder failed.
    #[error("failed to encode the metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

/// The metrics of one node: its registry and the handles of its live metrics. Handles are
/// cheap to clone and update lock-free from any thread.
pub struct Metrics {
    registry: Registry,
    http_request_duration: HistogramVec,
    realtime_request_duration: HistogramVec,
    packet_transit: Histogram,
    webhook_deliveries: IntCounterVec,
    webhook_totals: OnceLock<WebhookTotals>,
    /// Serializes the update of `webhook_deliveries` from its source, so that two concurrent
    /// scrapes do not both add the same increase.
    webhook_update: Mutex<()>,
    node: Arc<node::NodeCollector>,
}

impl Metrics {
    /// Defines every metric in a new registry, with the process collector where the platform
    /// has one (Linux).
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_http_request_duration_seconds",
                "Time to answer a REST request, from its arrival to the response head, by \
                 method, matched route template and status.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )
        .map_err(MetricsError::Definition)?;
        let realtime_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_realtime_request_duration_seconds",
                "Time to answer a request on the realtime socket.io API, from the start of its \
                 handling to its reply, by request type (other for types the node does not \
                 handle).",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["type"],
        )
        .map_err(MetricsError::Definition)?;
        let packet_transit = Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_packet_transit_seconds",
                "Time a forwarded RTP packet spends inside the node, from the receive of its \
                 datagram to the send of each forwarded copy.",
            )
            .buckets(packet_transit_buckets()),
        )
        .map_err(MetricsError::Definition)?;
        let webhook_deliveries = IntCounterVec::new(
            Opts::new(
                "switchboard_webhook_deliveries_total",
                "Webhook deliveries, by outcome.",
            ),
            &["outcome"],
        )
        .map_err(MetricsError::Definition)?;
        let node = Arc::new(node::NodeCollector::new()?);

        register(&registry, http_request_duration.clone())?;
        register(&registry, realtime_request_duration.clone())?;
        register(&registry, packet_transit.clone())?;
        register(&registry, webhook_deliveries.clone())?;
        register(&registry, node::SharedCollector(Arc::clone(&node)))?;
        #[cfg(target_os = "linux")]
        register(&registry, process::ProcessMetrics::new())?;

        Ok(Metrics {
            registry,
            http_request_duration,
            realtime_request_duration,
            packet_transit,
            webhook_deliveries,
            webhook_totals: OnceLock::new(),
            webhook_update: Mutex::new(()),
            node,
        })
    }

    /// Returns the packet transit histogram, for the media worker.
    pub fn packet_transit(&self) -> Histogram {
        self.packet_transit.clone()
    }

    /// Records the latency of one REST request. `route` is the matched route template, such
    /// as `/v0.1/conversations/{conversation_id}`, or [`UNMATCHED_ROUTE`].
    pub fn observe_http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.http_request_duration
            .with_label_values(&[method, route, status.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// Returns the realtime request latency histogram, labelled by message type.
    pub fn realtime_request_duration(&self) -> &HistogramVec {
        &self.realtime_request_duration
    }

    /// Returns the webhook delivery counter, labelled by outcome. A node that sets
    /// [`Metrics::set_webhook_totals`] must not increment it as well.
    pub fn webhook_deliveries(&self) -> &IntCounterVec {
        &self.webhook_deliveries
    }

    /// Makes every scrape bring `switchboard_webhook_deliveries_total` up to the totals that
    /// `totals` returns. Returns false, and keeps the first source, if one is set already.
    pub fn set_webhook_totals(&self, totals: WebhookTotals) -> bool {
        self.webhook_totals.set(totals).is_ok()
    }

    fn update_webhook_deliveries(&self) {
        let Some(totals) = self.webhook_totals.get() else {
            return;
        };
        // The guard protects no data of its own, so a poisoned lock is as good as a clean one.
        let _update = self
            .webhook_update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (outcome, total) in totals() {
            let counter = self.webhook_deliveries.with_label_values(&[outcome]);
            let current = counter.get();
            if total > current {
                counter.inc_by(total - current);
            }
        }
    }

    /// Encodes every metric in the Prometheus text format, with the node's counts taken from
    /// `snapshot`.
    pub fn render(&self, snapshot: NodeSnapshot) -> Result<String, MetricsError> {
        self.node.update(snapshot);
        self.update_webhook_deliveries();
        let families = self.registry.gather();
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .map_err(MetricsError::Encode)?;
        Ok(text)
    }
}

fn register(
    registry: &Registry,
    collector: impl prometheus::core::Collector + 'static,
) -> Result<(), MetricsError> {
    registry
        .register(Box::new(collector))
        .map_err(MetricsError::Definition)
}

#[cfg(test)]
mod tests;
