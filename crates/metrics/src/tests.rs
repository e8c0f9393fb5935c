//! Tests of the text exposition.

use std::collections::BTreeMap;
use std::time::Duration;

use media::MediaStats;
use room::Census;

use crate::{Metrics, NodeSnapshot};

/// Returns the `# TYPE` line of every family in a scrape: name to type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Returns the value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

fn busy_snapshot() -> NodeSnapshot {
    let mut media = MediaStats {
        publisher_legs: 1,
        subscriber_legs: 2,
        tracks: 2,
        subscriptions: 4,
        send_errors: 5,
        send_buffer_full: 3,
        nacks_received: 6,
        ..MediaStats::default()
    };
    media.router.received_packets = 100;
    media.router.forwarded_bytes = 123_456;
    media.router.dropped_muted = 7;
    media.outcomes.ice_connected = 3;
    media.outcomes.dtls_failed = 1;
    NodeSnapshot {
        census: Census {
            conversations: 1,
            members_invited: 0,
            members_joined: 2,
            members_left: 1,
        },
        media: Some(media),
    }
}

#[test]
fn exposition_names_follow_conventions() {
    let metrics = Metrics::new().expect("metrics");
    metrics.observe_http_request(
        "GET",
        "/v0.1/conversations/{conversation_id}",
        200,
        Duration::from_millis(3),
    );
    metrics
        .realtime_request_duration()
        .with_label_values(&["ping"])
        .observe(0.001);
    metrics
        .webhook_deliveries()
        .with_label_values(&["delivered"])
        .inc();
    metrics.packet_transit().observe(20e-6);
    let text = metrics.render(busy_snapshot()).expect("render");
    let types = types(&text);

    let ours: Vec<_> = types
        .iter()
        .filter(|(name, _)| !name.starts_with("process_"))
        .collect();
    assert!(ours.len() > 15, "too few families: {types:?}");
    for (name, kind) in &ours {
        assert!(name.starts_with("switchboard_"), "{name} lacks the prefix");
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name} lacks _total"),
            "histogram" => assert!(name.ends_with("_seconds"), "histogram {name}"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            other => panic!("{name} has the unexpected type {other}"),
        }
    }
    for name in crate::node::spec_names() {
        assert!(types.contains_key(name), "{name} is not exposed");
    }
    for name in [
        "switchboard_http_request_duration_seconds",
        "switchboard_realtime_request_duration_seconds",
        "switchboard_packet_transit_seconds",
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some("histogram"));
    }
    if cfg!(target_os = "linux") {
        assert_eq!(
            types.get("process_cpu_seconds_total").map(String::as_str),
            Some("counter")
        );
        assert_eq!(
            types
                .get("process_resident_memory_bytes")
                .map(String::as_str),
            Some("gauge")
        );
    }
}

#[test]
fn exposition_carries_snapshot_values() {
    let metrics = Metrics::new().expect("metrics");
    let text = metrics.render(busy_snapshot()).expect("render");

    let expected = [
        ("switchboard_media_worker_up", 1.0),
        ("switchboard_conversations", 1.0),
        ("switchboard_members{state=\"joined\"}", 2.0),
        ("switchboard_members{state=\"left\"}", 1.0),
        ("switchboard_legs{direction=\"upstream\"}", 1.0),
        ("switchboard_legs{direction=\"downstream\"}", 2.0),
        ("switchboard_tracks", 2.0),
        ("switchboard_packets_received_total", 100.0),
        ("switchboard_bytes_forwarded_total", 123_456.0),
        ("switchboard_packets_dropped_total{reason=\"muted\"}", 7.0),
        (
            "switchboard_packets_dropped_total{reason=\"queue_full\"}",
            3.0,
        ),
        (
            "switchboard_packets_dropped_total{reason=\"send_failed\"}",
            2.0,
        ),
        ("switchboard_nacks_received_total", 6.0),
        ("switchboard_retransmissions_total", 0.0),
        ("switchboard_ice_outcomes_total{outcome=\"connected\"}", 3.0),
        ("switchboard_dtls_outcomes_total{outcome=\"failed\"}", 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
}

#[test]
fn histograms_expose_buckets_sum_and_count() {
    let metrics = Metrics::new().expect("metrics");
    metrics.packet_transit().observe(20e-6);
    metrics.packet_transit().observe(3e-3);
    metrics.observe_http_request("POST", "/v0.1/users", 201, Duration::from_millis(2));
    let text = metrics.render(NodeSnapshot::default()).expect("render");

    assert_eq!(
        sample(&text, "switchboard_packet_transit_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_packet_transit_seconds_bucket{le=\"0.00002\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_packet_transit_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(2.0)
    );
    let series = "switchboard_http_request_duration_seconds_count\
                  {method=\"POST\",route=\"/v0.1/users\",status=\"201\"}";
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
}

#[test]
fn stopped_media_worker_leaves_out_media_series() {
    let metrics = Metrics::new().expect("metrics");
    let snapshot = NodeSnapshot {
        media: None,
        ..busy_snapshot()
    };
    let text = metrics.render(snapshot).expect("render");

    assert_eq!(sample(&text, "switchboard_media_worker_up"), Some(0.0));
    assert_eq!(sample(&text, "switchboard_conversations"), Some(1.0));
    assert!(
        !text.contains("switchboard_packets_received_total"),
        "{text}"
    );
}

#[test]
fn webhook_totals_are_read_at_scrape() {
    let metrics = Metrics::new().expect("metrics");
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(3));
    let source = delivered.clone();
    let set = metrics.set_webhook_totals(Box::new(move || {
        vec![
            (
                "delivered",
                source.load(std::sync::atomic::Ordering::Relaxed),
            ),
            ("failed", 1),
        ]
    }));
    assert!(set);
    assert!(
        !metrics.set_webhook_totals(Box::new(Vec::new)),
        "a second source is rejected"
    );

    let text = metrics.render(busy_snapshot()).expect("render");
    let delivered_series = r#"switchboard_webhook_deliveries_total{outcome="delivered"}"#;
    let failed_series = r#"switchboard_webhook_deliveries_total{outcome="failed"}"#;
    assert_eq!(sample(&text, delivered_series), Some(3.0));
    assert_eq!(sample(&text, failed_series), Some(1.0));

    delivered.store(10, std::sync::atomic::Ordering::Relaxed);
    let text = metrics.render(busy_snapshot()).expect("render");
    assert_eq!(sample(&text, delivered_series), Some(10.0));
    let text = metrics.render(busy_snapshot()).expect("render");
    assert_eq!(
        sample(&text, delivered_series),
        Some(10.0),
        "a scrape without new deliveries adds nothing"
    );
    assert_eq!(sample(&text, failed_series), Some(1.0));
}

#[test]
fn packet_transit_buckets_span_microseconds_to_100_ms() {
    let buckets = crate::packet_transit_buckets();
    assert_eq!(buckets.first().copied(), Some(5e-6));
    assert!(buckets.last().copied().unwrap_or_default() >= 0.1);
    assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]));
}

#[cfg(target_os = "linux")]
#[test]
fn process_cpu_time_counts_below_one_second() {
    // Burn at least two clock ticks, so the value cannot be 0 at tick resolution.
    let started = std::time::Instant::now();
    let mut spin = 0u64;
    while started.elapsed() < Duration::from_millis(50) {
        spin = std::hint::black_box(spin.wrapping_add(1));
    }
    let metrics = Metrics::new().expect("metrics");
    let text = metrics.render(NodeSnapshot::default()).expect("render");

    let cpu = sample(&text, "process_cpu_seconds_total").expect("process CPU time");
    assert!(cpu > 0.0, "{text}");
    assert!(sample(&text, "process_resident_memory_bytes").unwrap_or_default() > 0.0);
}
