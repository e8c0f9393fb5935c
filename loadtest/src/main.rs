//! Drives a running Switchboard node with real WebRTC legs (ICE, DTLS, SRTP over loopback)
//! through its REST API, and reports delivery and join times.
//!
//! Scenarios:
//! - `livestream`: one member publishes audio and video, the others subscribe to it.
//! - `meeting`: every member publishes, and every member subscribes to every other.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use client::{Kind, Publisher, SendPlan, Subscriber};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    /// One member publishes audio and video; every other member subscribes to it.
    Livestream,
    /// Every member publishes, and every member subscribes to every other.
    Meeting,
}

#[derive(Debug, Parser)]
#[command(about = "Load test a running Switchboard node with real WebRTC legs")]
struct Arguments {
    /// Base URL of the node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    url: String,
    /// Admin token for the node (`switchboard token --admin` prints one).
    #[arg(long, env = "LOADTEST_TOKEN")]
    token: String,
    #[arg(long, value_enum, default_value = "livestream")]
    scenario: Scenario,
    /// Members in the conversation, publishers included (2 to 200).
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Seconds of media after everyone joined (1 to 600).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Bytes per video packet; 1,000 bytes at 30 frames per second is about 250 kbit/s.
    #[arg(long, default_value_t = 1000)]
    video_packet_size: usize,
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}/v0.1{path}", self.base.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}: is the node running?"))?;
        let status = response.status();
        let text = response.text().await.context("reading the response")?;
        if !status.is_success() {
            bail!("POST {url} failed with {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url} returned invalid JSON"))
    }

    async fn rtc(&self, conversation: &str, member: &str, body: Value) -> Result<(String, String)> {
        let reply = self
            .post(
                &format!("/conversations/{conversation}/rtc"),
                json!({ "from": member, "body": body }),
            )
            .await?;
        let leg = reply["rtc_id"].as_str().context("no rtc_id in the reply")?;
        let sdp = reply["body"]["answer"]["sdp"]
            .as_str()
            .context("no answer in the reply")?;
        Ok((leg.to_owned(), sdp.to_owned()))
    }
}

struct Subscription {
    publisher: usize,
    subscriber: Subscriber,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let arguments = Arguments::parse();
    if arguments.token.trim().is_empty() {
        bail!(
            "--token is empty: pass an admin token, e.g. --token \"$(switchboard token --admin)\""
        );
    }
    if !(2..=200).contains(&arguments.members) {
        bail!(
            "--members must be between 2 and 200, not {}",
            arguments.members
        );
    }
    if !(1..=600).contains(&arguments.duration) {
        bail!(
            "--duration must be between 1 and 600 seconds, not {}",
            arguments.duration
        );
    }
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?,
        base: arguments.url.clone(),
        token: arguments.token.clone(),
    };

    // Unique names per run, so runs against one node do not collide.
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id())
    );
    let conversation = api
        .post(
            "/conversations",
            json!({ "name": format!("loadtest-{run}") }),
        )
        .await?["id"]
        .as_str()
        .context("no conversation id")?
        .to_owned();
    let mut members = Vec::new();
    for index in 0..arguments.members {
        let name = format!("loadtest-{run}-{index}");
        api.post("/users", json!({ "name": name })).await?;
        let member = api
            .post(
                &format!("/conversations/{conversation}/members"),
                json!({ "user_name": name, "action": "join", "channel": { "type": "app" } }),
            )
            .await?["id"]
            .as_str()
            .context("no member id")?
            .to_owned();
        members.push(member);
    }

    let publishing: Vec<usize> = match arguments.scenario {
        Scenario::Livestream => vec![0],
        Scenario::Meeting => (0..arguments.members).collect(),
    };
    let mut join_times = Vec::new();
    let mut publishers = Vec::new();
    for &index in &publishing {
        let started = Instant::now();
        let publisher = Publisher::new().await?;
        let offer = publisher.offer().await?;
        let (leg, answer) = api
            .rtc(
                &conversation,
                &members[index],
                json!({ "offer": { "type": "offer", "sdp": offer } }),
            )
            .await?;
        publisher.apply_answer(answer).await?;
        publisher.wait_connected(Duration::from_secs(15)).await?;
        join_times.push(started.elapsed());
        publisher.start_media(SendPlan {
            video_packet_size: arguments.video_packet_size,
            ..SendPlan::default()
        });
        publishers.push((index, leg, publisher));
    }

    let mut subscriptions = Vec::new();
    for (publisher, (publisher_index, leg, _)) in publishers.iter().enumerate() {
        for (index, member) in members.iter().enumerate() {
            if index == *publisher_index {
                continue;
            }
            let started = Instant::now();
            let subscriber = Subscriber::new().await?;
            let offer = subscriber.offer().await?;
            let (_, answer) = api
                .rtc(
                    &conversation,
                    member,
                    json!({ "offer": { "type": "offer", "sdp": offer }, "subscribe": { "rtc_id": leg } }),
                )
                .await?;
            subscriber.apply_answer(answer).await?;
            subscriber.wait_connected(Duration::from_secs(15)).await?;
            join_times.push(started.elapsed());
            subscriptions.push(Subscription {
                publisher,
                subscriber,
            });
        }
    }

    println!(
        "{} legs connected; sending for {} s",
        join_times.len(),
        arguments.duration
    );
    let counts_at_start: Vec<usize> = subscriptions
        .iter()
        .map(|subscription| subscription.subscriber.received().len())
        .collect();
    let sent_at_start: Vec<usize> = publishers.iter().map(|(_, _, p)| p.sent().len()).collect();
    tokio::time::sleep(Duration::from_secs(arguments.duration)).await;
    let sent_at_end: Vec<usize> = publishers.iter().map(|(_, _, p)| p.sent().len()).collect();
    for (_, _, publisher) in &publishers {
        publisher.stop_media();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut expected = 0usize;
    let mut received = 0usize;
    let mut video = 0usize;
    for (subscription, at_start) in subscriptions.iter().zip(&counts_at_start) {
        let packets = subscription.subscriber.received();
        received += packets.len().saturating_sub(*at_start);
        video += packets
            .iter()
            .filter(|packet| packet.kind == Kind::Video)
            .count();
        expected += sent_at_end[subscription.publisher] - sent_at_start[subscription.publisher];
    }
    let loss = if expected == 0 {
        0.0
    } else {
        100.0 * expected.saturating_sub(received) as f64 / expected as f64
    };
    join_times.sort();
    println!("scenario            {:?}", arguments.scenario);
    println!("members             {}", arguments.members);
    println!("publisher legs      {}", publishers.len());
    println!("subscriber legs     {}", subscriptions.len());
    println!(
        "packets forwarded/s {:.0}",
        received as f64 / arguments.duration as f64
    );
    println!("video packets seen  {video}");
    println!("loss                {loss:.2} %");
    println!(
        "join time p50, p99  {:.0} ms, {:.0} ms",
        percentile(&join_times, 0.5).as_secs_f64() * 1000.0,
        percentile(&join_times, 0.99).as_secs_f64() * 1000.0
    );
    for (_, _, publisher) in &publishers {
        publisher.close().await;
    }
    for subscription in &subscriptions {
        subscription.subscriber.close().await;
    }
    Ok(())
}
