//! The scrape-time collector: the media worker's and the room's own counts as Prometheus
//! families.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use media::MediaStats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use room::Census;

use crate::MetricsError;

/// The counts of the room and the media worker, read once per scrape.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    pub census: Census,
    /// The media worker's counters, or `None` when the worker no longer replies. The media
    /// series are then left out rather than reported as 0, which would look like a counter
    /// reset.
    pub media: Option<MediaStats>,
}

/// One family the collector exposes.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    label: Option<&'static str>,
}

const fn spec(
    name: &'static str,
    kind: MetricType,
    label: Option<&'static str>,
    help: &'static str,
) -> Spec {
    Spec {
        name,
        help,
        kind,
        label,
    }
}

const COUNTER: MetricType = MetricType::COUNTER;
const GAUGE: MetricType = MetricType::GAUGE;

const MEDIA_WORKER_UP: Spec = spec(
    "switchboard_media_worker_up",
    GAUGE,
    None,
    "1 while the media worker answers, else 0, and the media series are then absent.",
);
const CONVERSATIONS: Spec = spec(
    "switchboard_conversations",
    GAUGE,
    None,
    "Conversations on this node.",
);
const MEMBERS: Spec = spec(
    "switchboard_members",
    GAUGE,
    Some("state"),
    "Members of this node's conversations by state: invited, joined or left. Members who left \
     are kept, so the left series only grows.",
);
const LEGS: Spec = spec(
    "switchboard_legs",
    GAUGE,
    Some("direction"),
    "Open legs by direction: upstream (a member publishes) or downstream (the node sends a \
     publisher leg's tracks to a member).",
);
const TRACKS: Spec = spec(
    "switchboard_tracks",
    GAUGE,
    None,
    "Published tracks in the router.",
);
const SUBSCRIPTIONS: Spec = spec(
    "switchboard_subscriptions",
    GAUGE,
    None,
    "Subscriptions of downstream legs to published tracks in the router.",
);
const PACKETS_RECEIVED: Spec = spec(
    "switchboard_packets_received_total",
    COUNTER,
    None,
    "RTP packets from publishers that passed SRTP and reached the router.",
);
const BYTES_RECEIVED: Spec = spec(
    "switchboard_bytes_received_total",
    COUNTER,
    None,
    "Bytes of the received RTP packets: header and payload, without padding or SRTP tag.",
);
const PACKETS_FORWARDED: Spec = spec(
    "switchboard_packets_forwarded_total",
    COUNTER,
    None,
    "RTP packets forwarded, one per subscription that got a copy.",
);
const BYTES_FORWARDED: Spec = spec(
    "switchboard_bytes_forwarded_total",
    COUNTER,
    None,
    "Bytes of the forwarded RTP packets: rewritten header and payload, before SRTP.",
);
const PACKETS_DROPPED: Spec = spec(
    "switchboard_packets_dropped_total",
    COUNTER,
    Some("reason"),
    "Packets and datagrams dropped, by reason. muted, no_subscriber, malformed, padding and \
     unknown_track count a received packet once. keyframe_wait, duplicate, too_old and \
     unknown_payload_type count once per subscription that skipped it. unroutable (no leg) and \
     rejected (not WebRTC, or failed STUN or SRTP checks) count datagrams. queue_full (kernel \
     send buffer full) and send_failed count datagrams the node did not send.",
);
const KEYFRAME_REQUESTS: Spec = spec(
    "switchboard_keyframe_requests_total",
    COUNTER,
    Some("direction"),
    "Keyframe requests (PLI or FIR): from_subscriber as received, to_publisher as sent after \
     merging and rate limiting.",
);
const NACKS_RECEIVED: Spec = spec(
    "switchboard_nacks_received_total",
    COUNTER,
    None,
    "Generic NACK packets received from peers. The WebRTC library answers them from its send \
     history.",
);
const RETRANSMISSIONS: Spec = spec(
    "switchboard_retransmissions_total",
    COUNTER,
    None,
    "Packets retransmitted on RTX from the node's packet cache. Always 0 until RTX exists; the \
     WebRTC library's NACK answers on the original SSRC are not counted here.",
);
const ICE_OUTCOMES: Spec = spec(
    "switchboard_ice_outcomes_total",
    COUNTER,
    Some("outcome"),
    "Legs whose ICE connectivity came up (connected), or that failed before it did (failed).",
);
const DTLS_OUTCOMES: Spec = spec(
    "switchboard_dtls_outcomes_total",
    COUNTER,
    Some("outcome"),
    "Legs whose DTLS handshake completed (connected), or that failed after ICE came up and \
     before the handshake completed (failed).",
);

/// Every family of the collector, for its descriptors.
const SPECS: &[&Spec] = &[
    &MEDIA_WORKER_UP,
    &CONVERSATIONS,
    &MEMBERS,
    &LEGS,
    &TRACKS,
    &SUBSCRIPTIONS,
    &PACKETS_RECEIVED,
    &BYTES_RECEIVED,
    &PACKETS_FORWARDED,
    &BYTES_FORWARDED,
    &PACKETS_DROPPED,
    &KEYFRAME_REQUESTS,
    &NACKS_RECEIVED,
    &RETRANSMISSIONS,
    &ICE_OUTCOMES,
    &DTLS_OUTCOMES,
];

/// Exposes the latest [`NodeSnapshot`]. The scrape handler stores a snapshot right before it
/// gathers the registry, so the lock is taken by scrapes only.
pub(crate) struct NodeCollector {
    descs: Vec<Desc>,
    latest: Mutex<NodeSnapshot>,
}

impl NodeCollector {
    pub(crate) fn new() -> Result<NodeCollector, MetricsError> {
        let descs = SPECS
            .iter()
            .map(|spec| {
                let labels = spec.label.iter().map(|label| (*label).to_owned()).collect();
                Desc::new(
                    spec.name.to_owned(),
                    spec.help.to_owned(),
                    labels,
                    HashMap::new(),
                )
                .map_err(MetricsError::Definition)
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeCollector {
            descs,
            latest: Mutex::new(NodeSnapshot::default()),
        })
    }

    pub(crate) fn update(&self, snapshot: NodeSnapshot) {
        // A panic while the lock was held cannot leave a snapshot half written.
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(|error| error.into_inner());
        *latest = snapshot;
    }

    fn snapshot(&self) -> NodeSnapshot {
        self.latest
            .lock()
            .unwrap_or_else(|error| error.into_inner())
            .clone()
    }
}

/// Registers the collector while [`crate::Metrics`] keeps a handle to update it.
pub(crate) struct SharedCollector(pub(crate) Arc<NodeCollector>);

impl Collector for SharedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.0.snapshot())
    }
}

/// Converts a count to a sample value. Counts stay far below 2^53, where `f64` is exact.
fn value(count: impl TryInto<u64>) -> f64 {
    count.try_into().map_or(f64::MAX, |count: u64| count as f64)
}

pub(crate) fn families(snapshot: &NodeSnapshot) -> Vec<MetricFamily> {
    let census = &snapshot.census;
    let mut families = vec![
        family(
            &MEDIA_WORKER_UP,
            &[("", if snapshot.media.is_some() { 1.0 } else { 0.0 })],
        ),
        family(&CONVERSATIONS, &[("", value(census.conversations))]),
        family(
            &MEMBERS,
            &[
                ("invited", value(census.members_invited)),
                ("joined", value(census.members_joined)),
                ("left", value(census.members_left)),
            ],
        ),
    ];
    if let Some(media) = &snapshot.media {
        families.extend(media_families(media));
    }
    families
}

fn media_families(media: &MediaStats) -> Vec<MetricFamily> {
    let router = &media.router;
    let outcomes = &media.outcomes;
    let send_failed = media.send_errors.saturating_sub(media.send_buffer_full);
    vec![
        family(
            &LEGS,
            &[
                ("upstream", value(media.publisher_legs)),
                ("downstream", value(media.subscriber_legs)),
            ],
        ),
        family(&TRACKS, &[("", value(media.tracks))]),
        family(&SUBSCRIPTIONS, &[("", value(media.subscriptions))]),
        family(&PACKETS_RECEIVED, &[("", value(router.received_packets))]),
        family(&BYTES_RECEIVED, &[("", value(router.received_bytes))]),
        family(&PACKETS_FORWARDED, &[("", value(router.forwarded_packets))]),
        family(&BYTES_FORWARDED, &[("", value(router.forwarded_bytes))]),
        family(
            &PACKETS_DROPPED,
            &[
                ("muted", value(router.dropped_muted)),
                ("no_subscriber", value(router.dropped_no_subscriber)),
                ("malformed", value(router.dropped_malformed)),
                ("queue_full", value(media.send_buffer_full)),
                ("unroutable", value(media.unroutable_datagrams)),
                ("keyframe_wait", value(router.dropped_waiting_for_keyframe)),
                ("padding", value(router.dropped_padding)),
                ("duplicate", value(router.dropped_duplicate)),
                ("too_old", value(router.dropped_too_old)),
                ("unknown_track", value(router.dropped_unknown_track)),
                (
                    "unknown_payload_type",
                    value(router.dropped_unknown_payload_type),
                ),
                ("rejected", value(media.rejected_datagrams)),
                ("send_failed", value(send_failed)),
            ],
        ),
        family(
            &KEYFRAME_REQUESTS,
            &[
                ("from_subscriber", value(media.keyframe_requests_received)),
                ("to_publisher", value(media.keyframe_requests_sent)),
            ],
        ),
        family(&NACKS_RECEIVED, &[("", value(media.nacks_received))]),
        family(&RETRANSMISSIONS, &[("", 0.0)]),
        family(
            &ICE_OUTCOMES,
            &[
                ("connected", value(outcomes.ice_connected)),
                ("failed", value(outcomes.ice_failed)),
            ],
        ),
        family(
            &DTLS_OUTCOMES,
            &[
                ("connected", value(outcomes.dtls_connected)),
                ("failed", value(outcomes.dtls_failed)),
            ],
        ),
    ]
}

/// Builds a family of `spec` with one sample per (label value, value). The label value is
/// ignored for a family without a label.
fn family(spec: &Spec, samples: &[(&str, f64)]) -> MetricFamily {
    let metrics = samples
        .iter()
        .map(|(label_value, sample)| {
            let mut metric = Metric::default();
            if let Some(label) = spec.label {
                let mut pair = LabelPair::default();
                pair.set_name(label.to_owned());
                pair.set_value((*label_value).to_owned());
                metric.set_label(vec![pair]);
            }
            if spec.kind == COUNTER {
                let mut counter = Counter::default();
                counter.set_value(*sample);
                metric.set_counter(counter);
            } else {
                let mut gauge = Gauge::default();
                gauge.set_value(*sample);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(spec.name.to_owned());
    family.set_help(spec.help.to_owned());
    family.set_field_type(spec.kind);
    family.set_metric(metrics);
    family
}

#[cfg(test)]
pub(crate) fn spec_names() -> Vec<&'static str> {
    SPECS.iter().map(|spec| spec.name).collect()
}
