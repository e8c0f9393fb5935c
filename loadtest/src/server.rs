//! Readings of the node's process: its `/metrics` when it has them, else `/proc` of a process
//! id on this machine.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

const CPU_SECONDS: &str = "process_cpu_seconds_total";
const RESIDENT_BYTES: &str = "process_resident_memory_bytes";
const FORWARDED: &str = "switchboard_packets_forwarded_total";
const TRANSIT_BUCKET: &str = "switchboard_packet_transit_seconds_bucket";

/// One reading of the node's counters; `None` where no source had the value.
#[derive(Clone, Debug, Default)]
pub struct ServerSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub forwarded_packets: Option<f64>,
    /// Cumulative counts of the transit histogram by upper bound in seconds, `+Inf` last.
    pub transit_buckets: Option<Vec<(f64, f64)>>,
}

/// Source of the CPU and memory figures, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Metrics,
    Proc,
    None,
}

pub struct ServerProbe {
    http: reqwest::Client,
    metrics_url: String,
    pub pid: Option<u32>,
    has_metrics: bool,
    clock_ticks: f64,
}

impl ServerProbe {
    /// Probes `/metrics` once to learn whether the node has them, and checks `pid` exists.
    pub async fn new(metrics_url: &str, pid: Option<u32>) -> Result<ServerProbe> {
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
        {
            bail!("--server-pid {pid}: no such process on this machine");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut probe = ServerProbe {
            http,
            metrics_url: metrics_url.to_owned(),
            pid,
            has_metrics: false,
            clock_ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
        };
        probe.has_metrics = probe
            .scrape()
            .await
            .is_some_and(|metrics| metrics.contains_key(CPU_SECONDS));
        Ok(probe)
    }

    pub fn cpu_source(&self) -> Source {
        if self.has_metrics {
            Source::Metrics
        } else if self.pid.is_some() {
            Source::Proc
        } else {
            Source::None
        }
    }

    async fn scrape(&self) -> Option<BTreeMap<String, Vec<(String, f64)>>> {
        let response = self.http.get(&self.metrics_url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let text = response.text().await.ok()?;
        Some(parse_exposition(&text))
    }

    pub async fn sample(&self) -> ServerSample {
        let mut sample = ServerSample::default();
        if self.has_metrics
            && let Some(metrics) = self.scrape().await
        {
            let single = |name: &str| {
                metrics
                    .get(name)
                    .map(|series| series.iter().map(|(_, value)| value).sum())
            };
            sample.cpu_seconds = single(CPU_SECONDS);
            sample.resident_bytes = single(RESIDENT_BYTES);
            sample.forwarded_packets = single(FORWARDED);
            sample.transit_buckets = metrics.get(TRANSIT_BUCKET).map(|series| buckets(series));
        }
        if let Some(pid) = self.pid {
            if sample.cpu_seconds.is_none() {
                sample.cpu_seconds = proc_cpu_seconds(pid, self.clock_ticks);
            }
            if sample.resident_bytes.is_none() {
                sample.resident_bytes = proc_resident_bytes(pid);
            }
        }
        sample
    }
}

/// CPU seconds (user plus system) this process has used, from `/proc/self/stat`.
pub fn own_cpu_seconds() -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    proc_cpu_seconds_at(
        "/proc/self/stat",
        if ticks > 0 { ticks as f64 } else { 100.0 },
    )
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was full, summed over the
/// sockets process `pid` (or `self`) has open, from the `drops` column of `/proc/net/udp`.
pub fn udp_receive_drops(pid: &str) -> Option<u64> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Columns: sl, local, remote, st, queues, tr, retrnsmt, uid, timeout, inode, ref,
            // pointer, drops.
            if fields.len() >= 13 && inodes.contains(fields[9]) {
                drops += fields[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(drops)
}

fn proc_cpu_seconds(pid: u32, clock_ticks: f64) -> Option<f64> {
    proc_cpu_seconds_at(&format!("/proc/{pid}/stat"), clock_ticks)
}

fn proc_cpu_seconds_at(path: &str, clock_ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name in field 2 may contain spaces, so count fields after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), so 11 and 12 after the name.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / clock_ticks)
}

fn proc_resident_bytes(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Parses the Prometheus text exposition format into samples by metric name, each with its
/// label text (between the braces, empty when none) and value. Comments and lines that do not
/// parse are skipped.
pub fn parse_exposition(text: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut metrics: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(open) => match line[open..].find('}') {
                Some(close) => (&line[..open + close + 1], &line[open + close + 1..]),
                None => continue,
            },
            None => match line.split_once(char::is_whitespace) {
                Some((name, rest)) => (name, rest),
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        metrics
            .entry(name.to_owned())
            .or_default()
            .push((labels.to_owned(), value));
    }
    metrics
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Sums the bucket series by their `le` bound, over any other labels, in increasing order.
fn buckets(series: &[(String, f64)]) -> Vec<(f64, f64)> {
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    for (labels, count) in series {
        let Some(bound) = label(labels, "le").and_then(|le| parse_value(&le)) else {
            continue;
        };
        match by_bound.iter_mut().find(|(existing, _)| *existing == bound) {
            Some((_, total)) => *total += count,
            None => by_bound.push((bound, *count)),
        }
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_bound
}

fn label(labels: &str, key: &str) -> Option<String> {
    labels.split(',').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name.trim() == key).then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Computes the `quantile` (0 to 1) of the observations between two readings of a cumulative
/// histogram, interpolated linearly inside the bucket it falls in, as Prometheus's
/// `histogram_quantile` does. `None` when no observation fell between the readings.
pub fn histogram_quantile(
    before: &[(f64, f64)],
    after: &[(f64, f64)],
    quantile: f64,
) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = quantile * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for (bound, count) in &deltas {
        if *count >= rank {
            if bound.is_infinite() {
                // Above the highest finite bucket: report that bound, as Prometheus does.
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            let fraction = if in_bucket > 0.0 {
                (rank - lower_count) / in_bucket
            } else {
                1.0
            };
            return Some(lower_bound + (bound - lower_bound) * fraction);
        }
        lower_bound = *bound;
        lower_count = *count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+07
switchboard_packets_forwarded_total 4000
switchboard_packet_transit_seconds_bucket{le=\"0.0001\"} 10
switchboard_packet_transit_seconds_bucket{le=\"0.001\"} 90
switchboard_packet_transit_seconds_bucket{le=\"+Inf\"} 100
switchboard_packet_transit_seconds_sum 0.05
switchboard_packets_dropped_total{reason=\"muted\"} 3
";

    #[test]
    fn exposition_values_parse() {
        let metrics = parse_exposition(EXPOSITION);
        assert_eq!(metrics[CPU_SECONDS], vec![(String::new(), 12.5)]);
        assert_eq!(metrics[RESIDENT_BYTES][0].1, 10_485_760.0);
        assert_eq!(
            metrics["switchboard_packets_dropped_total"],
            vec![("reason=\"muted\"".to_owned(), 3.0)]
        );
    }

    #[test]
    fn buckets_sort_with_infinity_last() {
        let metrics = parse_exposition(EXPOSITION);
        let buckets = buckets(&metrics[TRANSIT_BUCKET]);
        assert_eq!(
            buckets,
            vec![(0.0001, 10.0), (0.001, 90.0), (f64::INFINITY, 100.0)]
        );
    }

    #[test]
    fn quantile_interpolates_inside_bucket() {
        let after = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let median = histogram_quantile(&[], &after, 0.5).unwrap();
        assert!((median - 0.001).abs() < 1e-12, "{median}");
        let p75 = histogram_quantile(&[], &after, 0.75).unwrap();
        assert!((p75 - 0.0015).abs() < 1e-12, "{p75}");
    }

    #[test]
    fn quantile_uses_the_difference_of_readings() {
        let before = [(0.001, 100.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let after = [(0.001, 100.0), (0.002, 200.0), (f64::INFINITY, 200.0)];
        let median = histogram_quantile(&before, &after, 0.5).unwrap();
        assert!(median > 0.001, "{median}");
        assert!(median <= 0.002, "{median}");
        assert_eq!(histogram_quantile(&before, &before, 0.5), None);
    }

    #[test]
    fn udp_receive_drops_counts_own_sockets() {
        let _socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_receive_drops("self"), Some(0));
    }

    #[test]
    fn own_cpu_seconds_reads_proc() {
        assert!(own_cpu_seconds().is_some());
    }
}
