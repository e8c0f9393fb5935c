//! Figures of a run, printed as a table and written as JSON and as an HTML page with plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use plotters::prelude::*;
use serde::Serialize;
use switchboard_benches::floor::{Floor, Profile};

use crate::args::Plan;
use crate::run::{ChurnOutcome, Outcome, Sample, SocketDrops};
use crate::server::{Source, histogram_quantile};

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct TransitMicroseconds {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub publisher_legs: usize,
    pub subscriber_legs: usize,
    pub window_seconds: f64,
    pub expected_packets: u64,
    pub received_packets: u64,
    /// Retransmitted copies the subscribers received, not counted in `received_packets`.
    pub duplicate_packets: u64,
    pub loss_percent: f64,
    /// Datagrams dropped at full socket receive buffers, by side.
    pub socket_drops: SocketDrops,
    pub forwarded_per_second: f64,
    /// `server_counter` when the node's forwarded counter was read, else `subscribers`.
    pub forwarded_source: &'static str,
    pub cpu_source: Source,
    pub server_cpu_cores: Option<f64>,
    pub server_cpu_ns_per_packet: Option<f64>,
    pub server_resident_mib_before: Option<f64>,
    pub server_resident_mib_during: Option<f64>,
    pub server_resident_kib_per_leg: Option<f64>,
    pub join_ms: Option<Percentiles>,
    pub first_video_ms: Option<Percentiles>,
    pub transit_us: Option<TransitMicroseconds>,
    /// Transit histogram over the measurement: bucket bound in µs and cumulative count.
    pub transit_histogram: Option<Vec<(f64, f64)>>,
    pub join_times_ms: Vec<f64>,
    pub first_video_times_ms: Vec<f64>,
    pub srtp_cipher: Option<String>,
    pub floor: Vec<Floor>,
    /// Node CPU time per forwarded packet over the floor of the negotiated profile.
    pub ratio_to_floor: Option<f64>,
    pub client_cpu_cores: Option<f64>,
    pub churn: Option<ChurnOutcome>,
    pub samples: Vec<Sample>,
}

fn sorted_ms(times: &[Duration]) -> Vec<f64> {
    let mut sorted: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

fn percentiles(sorted: &[f64]) -> Option<Percentiles> {
    if sorted.is_empty() {
        return None;
    }
    let at = |fraction: f64| {
        let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    };
    Some(Percentiles {
        p50: at(0.5),
        p99: at(0.99),
    })
}

impl Report {
    pub fn new(plan: Plan, outcome: Outcome, floor: Vec<Floor>, cpu_source: Source) -> Report {
        let window = outcome.window.as_secs_f64().max(1e-3);
        let delta = |after: Option<f64>, before: Option<f64>| after.zip(before).map(|(a, b)| a - b);
        let server_forwarded = delta(
            outcome.end.forwarded_packets,
            outcome.start.forwarded_packets,
        );
        let forwarded = server_forwarded.unwrap_or(outcome.received as f64);
        let cpu = delta(outcome.end.cpu_seconds, outcome.start.cpu_seconds);
        let server_cpu_ns_per_packet =
            cpu.and_then(|cpu| (forwarded > 0.0).then(|| cpu * 1e9 / forwarded));
        let legs = outcome.publisher_legs + outcome.subscriber_legs;
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        let server_resident_kib_per_leg = if outcome.churn.is_none() && legs > 0 {
            delta(outcome.end.resident_bytes, outcome.baseline.resident_bytes)
                .map(|bytes| bytes / 1024.0 / legs as f64)
        } else {
            None
        };
        let transit_us = outcome
            .start
            .transit_buckets
            .as_deref()
            .or(Some(&[]))
            .zip(outcome.end.transit_buckets.as_deref())
            .and_then(|(before, after)| {
                let quantile = |q| histogram_quantile(before, after, q).map(|s| s * 1e6);
                Some(TransitMicroseconds {
                    p50: quantile(0.5)?,
                    p99: quantile(0.99)?,
                    p999: quantile(0.999)?,
                })
            });
        let transit_histogram = outcome.end.transit_buckets.as_deref().map(|after| {
            let before = outcome.start.transit_buckets.as_deref().unwrap_or(&[]);
            after
                .iter()
                .map(|(bound, count)| {
                    let earlier = before
                        .iter()
                        .find(|(b, _)| b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (bound * 1e6, count - earlier)
                })
                .collect()
        });
        let join_times_ms = sorted_ms(&outcome.join_times);
        let first_video_times_ms = sorted_ms(&outcome.first_video_times);
        let negotiated = outcome
            .srtp_cipher
            .as_deref()
            .and_then(Profile::from_name)
            .unwrap_or(Profile::AeadAes128Gcm);
        let ratio_to_floor = server_cpu_ns_per_packet.and_then(|cost| {
            floor
                .iter()
                .find(|floor| floor.profile == negotiated)
                .map(|floor| cost / floor.total_ns)
        });
        let loss_percent = if outcome.expected == 0 {
            0.0
        } else {
            100.0 * outcome.expected.saturating_sub(outcome.received) as f64
                / outcome.expected as f64
        };
        Report {
            plan,
            publisher_legs: outcome.publisher_legs,
            subscriber_legs: outcome.subscriber_legs,
            window_seconds: window,
            expected_packets: outcome.expected,
            received_packets: outcome.received,
            duplicate_packets: outcome.duplicates,
            loss_percent,
            socket_drops: outcome.drops,
            forwarded_per_second: forwarded / window,
            forwarded_source: if server_forwarded.is_some() {
                "server_counter"
            } else {
                "subscribers"
            },
            cpu_source,
            server_cpu_cores: cpu.map(|cpu| cpu / window),
            server_cpu_ns_per_packet,
            server_resident_mib_before: outcome.baseline.resident_bytes.map(mib),
            server_resident_mib_during: outcome.end.resident_bytes.map(mib),
            server_resident_kib_per_leg,
            join_ms: percentiles(&join_times_ms),
            first_video_ms: percentiles(&first_video_times_ms),
            transit_us,
            transit_histogram,
            join_times_ms,
            first_video_times_ms,
            srtp_cipher: outcome.srtp_cipher,
            floor,
            ratio_to_floor,
            client_cpu_cores: outcome.client_cpu_seconds.map(|cpu| cpu / window),
            churn: outcome.churn,
            samples: outcome.samples,
        }
    }

    /// Builds the summary table printed at the end of a run.
    pub fn table(&self) -> Table {
        let na = || "n/a".to_owned();
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec!["measure", "value"]);
        let mut row = |name: &str, value: String| {
            table.add_row(vec![name.to_owned(), value]);
        };
        row(
            "scenario",
            format!(
                "{:?}, {} members, {} publishers",
                self.plan.scenario, self.plan.members, self.plan.publishers
            ),
        );
        row(
            "media per publisher",
            format!(
                "{:.0} kbit/s payload, {:.0} packets/s",
                self.plan.media.payload_kbps, self.plan.media.packets_per_second
            ),
        );
        row(
            "legs",
            format!(
                "{} publisher, {} subscriber",
                self.publisher_legs, self.subscriber_legs
            ),
        );
        if let Some(churn) = &self.churn {
            row(
                "churn cycles",
                format!("{} completed, {} failed", churn.cycles, churn.failures),
            );
            if let Some(failure) = &churn.first_failure {
                row("first churn failure", failure.clone());
            }
        }
        row("measured for", format!("{:.1} s", self.window_seconds));
        row(
            "packets forwarded/s",
            format!(
                "{:.0} ({})",
                self.forwarded_per_second,
                self.forwarded_source.replace('_', " ")
            ),
        );
        row(
            "loss",
            format!(
                "{:.2} % ({} of {} expected; {} retransmitted copies)",
                self.loss_percent,
                self.expected_packets.saturating_sub(self.received_packets),
                self.expected_packets,
                self.duplicate_packets
            ),
        );
        let drops = |value: Option<u64>| value.map_or_else(na, |count| count.to_string());
        row(
            "receive buffer drops",
            format!(
                "node {}, load test {}",
                drops(self.socket_drops.node),
                drops(self.socket_drops.load_test)
            ),
        );
        row(
            "node CPU",
            self.server_cpu_cores.map_or_else(na, |cores| {
                format!("{cores:.2} cores (from {:?})", self.cpu_source)
            }),
        );
        row(
            "node CPU per forwarded packet",
            self.server_cpu_ns_per_packet
                .map_or_else(na, |ns| format!("{:.2} µs", ns / 1000.0)),
        );
        row(
            "node memory per leg",
            self.server_resident_kib_per_leg
                .map_or_else(na, |kib| format!("{kib:.0} KiB")),
        );
        row(
            "node resident memory",
            match (
                self.server_resident_mib_before,
                self.server_resident_mib_during,
            ) {
                (Some(before), Some(during)) => {
                    format!("{before:.1} MiB before, {during:.1} MiB at the end")
                }
                _ => na(),
            },
        );
        row(
            "join time p50, p99",
            self.join_ms
                .map_or_else(na, |p| format!("{:.0} ms, {:.0} ms", p.p50, p.p99)),
        );
        row(
            "first video p50, p99",
            self.first_video_ms
                .map_or_else(na, |p| format!("{:.0} ms, {:.0} ms", p.p50, p.p99)),
        );
        row(
            "transit p50, p99, p99.9",
            self.transit_us.map_or_else(na, |t| {
                format!("{:.0} µs, {:.0} µs, {:.0} µs", t.p50, t.p99, t.p999)
            }),
        );
        row("SRTP profile", self.srtp_cipher.clone().unwrap_or_else(na));
        for floor in &self.floor {
            row(
                &format!("floor {}", floor.profile.name()),
                format!(
                    "{:.2} µs CPU (protect {:.2} µs, send_to {:.2} µs; {:.2} µs wall)",
                    floor.total_ns / 1000.0,
                    floor.protect_ns / 1000.0,
                    floor.send_ns / 1000.0,
                    floor.total_wall_ns / 1000.0
                ),
            );
        }
        row(
            "node cost / floor",
            self.ratio_to_floor
                .map_or_else(na, |ratio| format!("{ratio:.1}")),
        );
        row(
            "load test CPU",
            self.client_cpu_cores
                .map_or_else(na, |cores| format!("{cores:.2} cores")),
        );
        table
    }

    /// Writes `<stem>.json` and `<stem>.html` into `directory`; returns their paths.
    pub fn write(&self, directory: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating the report directory {}", directory.display()))?;
        let json = directory.join(format!("{stem}.json"));
        let text = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        let html = directory.join(format!("{stem}.html"));
        std::fs::write(&html, self.html()?)
            .with_context(|| format!("writing {}", html.display()))?;
        Ok((json, html))
    }

    fn html(&self) -> Result<String> {
        let mut page = String::new();
        let title = format!(
            "Switchboard load test: {:?}, {} members",
            self.plan.scenario, self.plan.members
        );
        let _ = write!(
            page,
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .6rem;\
             text-align:left}}</style></head><body><h1>{title}</h1>\n<table>"
        );
        for row in self.table().row_iter() {
            let cells: Vec<String> = row
                .cell_iter()
                .map(|cell| escape(&cell.content()))
                .collect();
            let _ = write!(page, "<tr><th>{}</th><td>{}</td></tr>", cells[0], cells[1]);
        }
        page.push_str("</table>\n");

        let at = |value: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            self.samples
                .iter()
                .filter_map(|sample| value(sample).map(|v| (sample.at, v)))
                .collect()
        };
        let mut charts = vec![line_chart(
            "Packets per second",
            "seconds",
            "packets/s",
            &[
                ("forwarded", at(|s| Some(s.forwarded_per_second)), BLUE),
                ("received", at(|s| Some(s.received_per_second)), GREEN),
                (
                    "sent × subscribers",
                    at(|s| Some(s.expected_per_second)),
                    BLACK,
                ),
            ],
        )?];
        charts.push(line_chart(
            "Loss per second",
            "seconds",
            "%",
            &[(
                "loss",
                at(|s| {
                    (s.expected_per_second > 0.0).then(|| {
                        (100.0 * (1.0 - s.received_per_second / s.expected_per_second)).max(0.0)
                    })
                }),
                RED,
            )],
        )?);
        let negotiated = self
            .srtp_cipher
            .as_deref()
            .and_then(Profile::from_name)
            .unwrap_or(Profile::AeadAes128Gcm);
        let floor_us = self
            .floor
            .iter()
            .find(|floor| floor.profile == negotiated)
            .map(|floor| floor.total_ns / 1000.0);
        let cost = at(|s| s.server_cpu_ns_per_packet.map(|ns| ns / 1000.0));
        let mut cost_series = vec![("node CPU per forwarded packet", cost.clone(), BLUE)];
        if let (Some(floor), Some(first), Some(last)) = (floor_us, cost.first(), cost.last()) {
            cost_series.push(("floor", vec![(first.0, floor), (last.0, floor)], BLACK));
        }
        charts.push(line_chart(
            "Node CPU time per forwarded packet",
            "seconds",
            "µs",
            &cost_series,
        )?);
        charts.push(line_chart(
            "CPU cores used",
            "seconds",
            "cores",
            &[
                ("node", at(|s| s.server_cpu_cores), BLUE),
                ("load test", at(|s| s.client_cpu_cores), RED),
            ],
        )?);
        charts.push(line_chart(
            "Node resident memory",
            "seconds",
            "MiB",
            &[("resident", at(|s| s.server_resident_mib), BLUE)],
        )?);
        let cdf = |times: &[f64]| -> Vec<(f64, f64)> {
            let count = times.len() as f64;
            times
                .iter()
                .enumerate()
                .map(|(index, ms)| (*ms, (index + 1) as f64 / count))
                .collect()
        };
        charts.push(line_chart(
            "Join time and time to first video (cumulative)",
            "ms",
            "fraction of legs",
            &[
                ("join", cdf(&self.join_times_ms), BLUE),
                ("first video", cdf(&self.first_video_times_ms), RED),
            ],
        )?);
        if let Some(histogram) = &self.transit_histogram {
            let total = histogram.last().map_or(0.0, |(_, count)| *count);
            let points: Vec<(f64, f64)> = histogram
                .iter()
                .filter(|(bound, _)| bound.is_finite())
                .map(|(bound, count)| (*bound, if total > 0.0 { count / total } else { 0.0 }))
                .collect();
            charts.push(line_chart(
                "In-node transit time (cumulative, by histogram bucket)",
                "µs",
                "fraction of forwarded packets",
                &[("transit", points, BLUE)],
            )?);
        } else {
            charts.push(
                "<h2>In-node transit time</h2><p>n/a: the node has no \
                 switchboard_packet_transit_seconds histogram.</p>"
                    .to_owned(),
            );
        }
        for chart in charts {
            page.push_str(&chart);
            page.push('\n');
        }
        page.push_str("</body></html>\n");
        Ok(page)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of a chart: its legend, its points and its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// Draws one SVG line chart, or a "No data" note when every series is empty.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let points = series.iter().flat_map(|(_, points, _)| points.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    let mut any = false;
    for (x, y) in points {
        any = true;
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    if !any {
        return Ok(format!("<h2>{}</h2><p>No data.</p>", escape(title)));
    }
    let mut svg = String::new();
    {
        let backend = SVGBackend::with_string(&mut svg, (800, 320));
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max.max(1.0), 0.0..(y_max * 1.1).max(1e-9))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(plot_error)?;
        for (name, points, color) in series {
            if points.is_empty() {
                continue;
            }
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {error}")
}
