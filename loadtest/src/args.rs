//! Command-line flags, their checks, and the media plan derived from them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use client::SendPlan;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every member publishes audio and video and subscribes to every other member.
    Meeting,
    /// One member publishes audio and video; every other member subscribes to it.
    Livestream,
    /// Audio only: `--publishers` members publish, every member subscribes to every publisher
    /// other than itself.
    Audio,
    /// One host publishes audio and video. Each of `--members` members joins, publishes,
    /// subscribes to the host, stays `--hold` seconds and leaves, over and over until
    /// `--duration` ends.
    Churn,
}

#[derive(Debug, Parser)]
#[command(
    about = "Load test a running Switchboard node with real WebRTC legs (ICE, DTLS, SRTP) on \
             loopback, and measure what forwarding costs it"
)]
pub struct Arguments {
    /// Base URL of the node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    pub url: String,
    /// Admin token for the node (`switchboard token --admin` prints one).
    #[arg(long, env = "LOADTEST_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long, value_enum, default_value = "livestream")]
    pub scenario: Scenario,
    /// Members in the conversation, publishers included; for churn, the members that come and
    /// go at the same time, besides the host.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub members: i64,
    /// Audio publishers (audio scenario only; default: every member).
    #[arg(long, allow_negative_numbers = true)]
    pub publishers: Option<i64>,
    /// Seconds of measurement after every leg is connected.
    #[arg(long, default_value = "15", allow_negative_numbers = true)]
    pub duration: f64,
    /// Seconds between the last leg connecting and the start of the measurement.
    #[arg(long, default_value = "2", allow_negative_numbers = true)]
    pub warmup: f64,
    /// Seconds each churning member stays before leaving (churn scenario only).
    #[arg(long, default_value = "3", allow_negative_numbers = true)]
    pub hold: f64,
    /// Video bitrate of each publisher, in kbit/s.
    #[arg(long, default_value_t = 1500, allow_negative_numbers = true)]
    pub video_bitrate: i64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    pub frame_rate: i64,
    /// Seconds between periodic keyframes (0: only the first and the requested ones).
    #[arg(long, default_value = "2", allow_negative_numbers = true)]
    pub keyframe_interval: f64,
    /// Size of a keyframe relative to a delta frame.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub keyframe_factor: i64,
    /// Maximum RTP payload per video packet, in bytes; frames are split into packets of this
    /// size.
    #[arg(long, default_value_t = 1200, allow_negative_numbers = true)]
    pub video_packet_size: i64,
    /// Opus payload per audio packet, in bytes (80 bytes every 20 ms is 32 kbit/s).
    #[arg(long, default_value_t = 80, allow_negative_numbers = true)]
    pub audio_packet_size: i64,
    /// Audio packets per second.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    pub audio_rate: i64,
    /// Legs connecting at the same time.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    pub join_concurrency: i64,
    /// Process id of the node on this machine, read from /proc when the node has no /metrics.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// URL of the node's Prometheus metrics (default: `<url>/metrics`).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Packets per profile for the floor measurement (0 skips it).
    #[arg(long, default_value_t = 200_000)]
    pub floor_packets: u64,
    /// Directory for the JSON and HTML reports.
    #[arg(long, default_value = "loadtest-reports")]
    pub output: PathBuf,
}

/// The checked run: counts and durations in their own types.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub url: String,
    pub metrics_url: String,
    pub members: usize,
    pub publishers: usize,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    #[serde(serialize_with = "seconds")]
    pub hold: Duration,
    pub join_concurrency: usize,
    pub media: MediaPlan,
}

/// Media plan of each publisher.
#[derive(Clone, Debug, Serialize)]
pub struct MediaPlan {
    pub video: bool,
    pub frame_rate: u32,
    pub video_packet_size: usize,
    pub packets_per_delta_frame: u8,
    pub packets_per_keyframe: u8,
    pub keyframe_interval_frames: u32,
    pub audio_packet_size: usize,
    pub audio_rate: u32,
    /// Video plus audio RTP payload, in kbit/s, after rounding to whole packets.
    pub payload_kbps: f64,
    /// Video plus audio packets per second.
    pub packets_per_second: f64,
}

impl MediaPlan {
    pub fn send_plan(&self) -> SendPlan {
        SendPlan {
            video_packet_size: self.video_packet_size,
            packets_per_keyframe: self.packets_per_keyframe,
            packets_per_delta_frame: self.packets_per_delta_frame,
            keyframe_interval: self.keyframe_interval_frames,
            audio_packet_size: self.audio_packet_size,
            send_audio: true,
            send_video: self.video,
            frame_interval: Duration::from_secs_f64(1.0 / f64::from(self.frame_rate)),
            audio_interval: Duration::from_secs_f64(1.0 / f64::from(self.audio_rate)),
            record_sent: false,
        }
    }
}

fn seconds<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

/// Largest conversation the load test builds.
const MAX_MEMBERS: i64 = 1000;
/// Largest meeting: every member has a leg per other member, so 100 members make 10,000 legs.
const MAX_MEETING_MEMBERS: i64 = 100;
/// Maximum measurement, so a mistyped value cannot keep the load running for hours.
const MAX_SECONDS: f64 = 600.0;

fn in_range(flag: &str, value: i64, low: i64, high: i64, unit: &str) -> Result<usize> {
    if value < low || value > high {
        bail!("--{flag} must be between {low} and {high}{unit}, not {value}");
    }
    Ok(value as usize)
}

fn seconds_flag(flag: &str, value: f64, allow_zero: bool) -> Result<Duration> {
    let low_ok = if allow_zero {
        value >= 0.0
    } else {
        value > 0.0
    };
    if !value.is_finite() || !low_ok || value > MAX_SECONDS {
        let low = if allow_zero { "0" } else { "more than 0" };
        bail!("--{flag} must be {low} and at most {MAX_SECONDS} seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

impl Arguments {
    /// Checks every flag and derives the plan; the error names the first invalid flag.
    pub fn plan(&self) -> Result<Plan> {
        if self.token.trim().is_empty() {
            bail!(
                "--token is empty: pass an admin token, e.g. --token \"$(switchboard token --admin)\""
            );
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!(
                "--url must start with http:// or https://, not {:?}",
                self.url
            );
        }
        let members = match self.scenario {
            Scenario::Meeting | Scenario::Audio => {
                if self.members == 1 {
                    bail!(
                        "a {:?} of 1 member forwards nothing: pass --members 2 or more",
                        self.scenario
                    );
                }
                let max = if self.scenario == Scenario::Meeting {
                    MAX_MEETING_MEMBERS
                } else {
                    MAX_MEMBERS
                };
                in_range("members", self.members, 2, max, " members")?
            }
            Scenario::Livestream => in_range("members", self.members, 2, MAX_MEMBERS, " members")?,
            Scenario::Churn => in_range("members", self.members, 1, MAX_MEMBERS, " members")?,
        };
        let publishers = match (self.scenario, self.publishers) {
            (Scenario::Audio, Some(publishers)) => in_range(
                "publishers",
                publishers,
                1,
                members as i64,
                " (the member count)",
            )?,
            (Scenario::Audio, None) | (Scenario::Meeting, None) => members,
            (Scenario::Livestream, None) => 1,
            (Scenario::Churn, None) => 1 + members,
            (scenario, Some(_)) => {
                bail!("--publishers applies to the audio scenario only, not {scenario:?}")
            }
        };
        let duration = seconds_flag("duration", self.duration, false)?;
        let warmup = duration_or("warmup", self.warmup)?;
        let hold = seconds_flag("hold", self.hold, false)?;
        if self.scenario == Scenario::Churn && hold >= duration {
            bail!(
                "--hold ({} s) must be shorter than --duration ({} s), or no member leaves",
                self.hold,
                self.duration
            );
        }
        let join_concurrency = in_range("join-concurrency", self.join_concurrency, 1, 64, "")?;
        let metrics_url = self
            .metrics_url
            .clone()
            .unwrap_or_else(|| format!("{}/metrics", self.url.trim_end_matches('/')));
        Ok(Plan {
            scenario: self.scenario,
            url: self.url.trim_end_matches('/').to_owned(),
            metrics_url,
            members,
            publishers,
            duration,
            warmup,
            hold,
            join_concurrency,
            media: self.media_plan()?,
        })
    }

    fn media_plan(&self) -> Result<MediaPlan> {
        let video = self.scenario != Scenario::Audio;
        let frame_rate = in_range("frame-rate", self.frame_rate, 1, 120, " frames per second")?;
        let video_bitrate = in_range("video-bitrate", self.video_bitrate, 1, 50_000, " kbit/s")?;
        let packet_size = in_range(
            "video-packet-size",
            self.video_packet_size,
            100,
            1200,
            " bytes",
        )?;
        let keyframe_factor = in_range("keyframe-factor", self.keyframe_factor, 1, 20, "")?;
        let audio_packet_size = in_range(
            "audio-packet-size",
            self.audio_packet_size,
            8,
            1000,
            " bytes",
        )?;
        let audio_rate = in_range("audio-rate", self.audio_rate, 1, 100, " packets per second")?;
        let keyframe_seconds = duration_or("keyframe-interval", self.keyframe_interval)?;
        let keyframe_interval_frames =
            (keyframe_seconds.as_secs_f64() * frame_rate as f64).round() as u32;

        // Split the bitrate between delta frames and keyframes `keyframe_factor` times larger,
        // so that the average over one keyframe interval matches the bitrate.
        let frame_bytes = video_bitrate as f64 * 1000.0 / 8.0 / frame_rate as f64;
        let frames = keyframe_interval_frames.max(1) as f64;
        let delta_bytes = if keyframe_interval_frames == 0 {
            frame_bytes
        } else {
            frame_bytes * frames / (frames - 1.0 + keyframe_factor as f64)
        };
        let packets = |bytes: f64| (bytes / packet_size as f64).round().clamp(1.0, 255.0) as u8;
        let packets_per_delta_frame = packets(delta_bytes);
        let packets_per_keyframe = packets(delta_bytes * keyframe_factor as f64);

        let video_packets_per_second = if !video {
            0.0
        } else if keyframe_interval_frames == 0 {
            f64::from(packets_per_delta_frame) * frame_rate as f64
        } else {
            (f64::from(packets_per_delta_frame) * (frames - 1.0) + f64::from(packets_per_keyframe))
                / frames
                * frame_rate as f64
        };
        let audio_packets_per_second = audio_rate as f64;
        let payload_kbps = (video_packets_per_second * packet_size as f64
            + audio_packets_per_second * audio_packet_size as f64)
            * 8.0
            / 1000.0;
        Ok(MediaPlan {
            video,
            frame_rate: frame_rate as u32,
            video_packet_size: packet_size,
            packets_per_delta_frame,
            packets_per_keyframe,
            keyframe_interval_frames,
            audio_packet_size,
            audio_rate: audio_rate as u32,
            payload_kbps,
            packets_per_second: video_packets_per_second + audio_packets_per_second,
        })
    }
}

fn duration_or(flag: &str, value: f64) -> Result<Duration> {
    seconds_flag(flag, value, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(extra: &[&str]) -> Arguments {
        let mut all = vec!["loadtest", "--token", "t"];
        all.extend_from_slice(extra);
        Arguments::parse_from(all)
    }

    #[test]
    fn default_video_is_about_1500_kbps() {
        let plan = arguments(&[]).plan().unwrap();
        assert_eq!(plan.media.packets_per_delta_frame, 5);
        assert_eq!(plan.media.packets_per_keyframe, 20);
        assert!(
            (plan.media.payload_kbps - 1532.0).abs() < 60.0,
            "{}",
            plan.media.payload_kbps
        );
    }

    #[test]
    fn audio_scenario_sends_no_video() {
        let plan = arguments(&["--scenario", "audio", "--members", "5", "--publishers", "2"])
            .plan()
            .unwrap();
        assert!(!plan.media.video);
        assert_eq!(plan.publishers, 2);
        assert_eq!(plan.media.packets_per_second, 50.0);
    }

    #[test]
    fn meeting_of_one_is_rejected() {
        let error = arguments(&["--scenario", "meeting", "--members", "1"])
            .plan()
            .unwrap_err();
        assert!(error.to_string().contains("of 1 member"), "{error}");
    }

    #[test]
    fn publishers_outside_audio_is_rejected() {
        let error = arguments(&["--publishers", "2"]).plan().unwrap_err();
        assert!(error.to_string().contains("audio scenario only"), "{error}");
    }

    #[test]
    fn churn_hold_must_fit_duration() {
        let error = arguments(&["--scenario", "churn", "--hold", "20", "--duration", "10"])
            .plan()
            .unwrap_err();
        assert!(error.to_string().contains("--hold"), "{error}");
    }
}
