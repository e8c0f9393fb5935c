//! The scenarios: building legs through the REST API, sending media, counting what arrives and
//! sampling the node while it forwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use client::{Publisher, Subscriber, SubscriberOptions};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Api;
use crate::args::{Plan, Scenario};
use crate::server::{ServerProbe, ServerSample, own_cpu_seconds, udp_receive_drops};

/// Time allowed for one leg's offer, answer, ICE and DTLS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for every subscriber's first video packet before the measurement starts.
const FIRST_VIDEO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time after the publishers stop for packets in flight to arrive.
const DRAIN: Duration = Duration::from_secs(1);
/// Time allowed for closing every peer at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// One reading per second of the measurement, for the progress line and the plots.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the measurement started.
    pub at: f64,
    /// Packets per second the node forwarded: its counter when it has one, else what the
    /// subscribers received.
    pub forwarded_per_second: f64,
    pub received_per_second: f64,
    pub expected_per_second: f64,
    pub server_cpu_cores: Option<f64>,
    pub server_cpu_ns_per_packet: Option<f64>,
    pub server_resident_mib: Option<f64>,
    pub client_cpu_cores: Option<f64>,
}

/// Counts of a churn run besides forwarding: completed and failed join-to-leave cycles.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnOutcome {
    pub cycles: u64,
    pub failures: u64,
    pub first_failure: Option<String>,
}

/// Everything a run measured, before it is turned into figures.
pub struct Outcome {
    pub publisher_legs: usize,
    pub subscriber_legs: usize,
    pub join_times: Vec<Duration>,
    pub first_video_times: Vec<Duration>,
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    pub window: Duration,
    pub baseline: ServerSample,
    pub start: ServerSample,
    pub end: ServerSample,
    pub client_cpu_seconds: Option<f64>,
    pub samples: Vec<Sample>,
    pub srtp_cipher: Option<String>,
    pub churn: Option<ChurnOutcome>,
    pub drops: SocketDrops,
}

/// Datagrams the kernel dropped at full socket receive buffers during the measurement.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SocketDrops {
    /// At the node's sockets (`None` without `--server-pid`).
    pub node: Option<u64>,
    /// At the load test's own sockets: loss the client side caused.
    pub load_test: Option<u64>,
}

impl SocketDrops {
    fn read(pid: Option<u32>) -> SocketDrops {
        SocketDrops {
            node: pid.and_then(|pid| udp_receive_drops(&pid.to_string())),
            load_test: udp_receive_drops("self"),
        }
    }

    fn since(self, earlier: SocketDrops) -> SocketDrops {
        let delta = |after: Option<u64>, before: Option<u64>| {
            after.zip(before).map(|(a, b)| a.saturating_sub(b))
        };
        SocketDrops {
            node: delta(self.node, earlier.node),
            load_test: delta(self.load_test, earlier.load_test),
        }
    }
}

/// The counts of a steady scenario's measurement window.
struct Measurement {
    expected: u64,
    received: u64,
    duplicates: u64,
    window: Duration,
    start: ServerSample,
    end: ServerSample,
    client_cpu_seconds: Option<f64>,
    samples: Vec<Sample>,
    drops: SocketDrops,
}

struct PublisherLeg {
    leg: String,
    member: usize,
    publisher: Publisher,
}

struct SubscriberLeg {
    publisher: usize,
    subscriber: Subscriber,
}

/// Totals over every leg at one moment.
#[derive(Clone, Copy, Default)]
struct Totals {
    sent_per_subscriber: u64,
    received: u64,
    duplicates: u64,
}

pub struct Runner {
    pub plan: Plan,
    pub api: Api,
    pub probe: ServerProbe,
    pub progress: MultiProgress,
    /// Unique per run, so runs against one node do not collide on user names.
    pub run_id: String,
}

impl Runner {
    pub async fn run(&self) -> Result<Outcome> {
        match self.plan.scenario {
            Scenario::Churn => self.run_churn().await,
            _ => self.run_steady().await,
        }
    }

    fn bar(&self, length: u64, template: &str) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(length));
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    async fn run_steady(&self) -> Result<Outcome> {
        let plan = &self.plan;
        let baseline = self.probe.sample().await;
        let conversation = self
            .api
            .create_conversation(&format!("loadtest-{}", self.run_id))
            .await?;

        let mut members = Vec::with_capacity(plan.members);
        for index in 0..plan.members {
            let user = format!("loadtest-{}-{index}", self.run_id);
            members.push(self.api.join(&conversation, &user).await?);
        }
        let members = Arc::new(members);

        let subscriptions: usize = plan.publishers * (plan.members - 1);
        let bar = self.bar(
            (plan.publishers + subscriptions) as u64,
            "{prefix:>10} [{bar:30}] {pos}/{len} legs {msg}",
        );
        bar.set_prefix("connecting");
        let semaphore = Arc::new(Semaphore::new(plan.join_concurrency));
        let mut join_times = Vec::new();

        // Publishers first, so every subscription has a leg to name.
        let mut tasks = JoinSet::new();
        for member in 0..plan.publishers {
            let api = self.api.clone();
            let conversation = conversation.clone();
            let members = Arc::clone(&members);
            let semaphore = Arc::clone(&semaphore);
            let video = plan.media.video;
            let send_plan = plan.media.send_plan();
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await?;
                let started = Instant::now();
                let (leg, publisher) =
                    publish(&api, &conversation, &members[member], video).await?;
                let joined = started.elapsed();
                publisher.start_media(send_plan);
                anyhow::Ok((
                    PublisherLeg {
                        leg,
                        member,
                        publisher,
                    },
                    joined,
                ))
            });
        }
        let mut publishers = Vec::new();
        while let Some(result) = tasks.join_next().await {
            let (leg, joined) = result.context("a publishing task failed")??;
            join_times.push(joined);
            publishers.push(Arc::new(leg));
            bar.inc(1);
        }
        publishers.sort_by_key(|leg| leg.member);

        let mut tasks = JoinSet::new();
        for (index, publisher) in publishers.iter().enumerate() {
            for member in 0..plan.members {
                if member == publisher.member {
                    continue;
                }
                let api = self.api.clone();
                let conversation = conversation.clone();
                let members = Arc::clone(&members);
                let semaphore = Arc::clone(&semaphore);
                let leg = publisher.leg.clone();
                let video = plan.media.video;
                tasks.spawn(async move {
                    let _permit = semaphore.acquire_owned().await?;
                    let started = Instant::now();
                    let subscriber =
                        subscribe(&api, &conversation, &members[member], &leg, video).await?;
                    anyhow::Ok((index, subscriber, started, started.elapsed()))
                });
            }
        }
        let mut subscribers = Vec::new();
        let mut starts = Vec::new();
        while let Some(result) = tasks.join_next().await {
            let (publisher, subscriber, started, joined) =
                result.context("a subscribing task failed")??;
            join_times.push(joined);
            starts.push(started);
            subscribers.push(SubscriberLeg {
                publisher,
                subscriber,
            });
            bar.inc(1);
        }
        bar.finish_with_message("connected");

        let srtp_cipher = match publishers.first() {
            Some(leg) => leg.publisher.srtp_cipher().await,
            None => None,
        };

        // Wait for every subscriber's first video packet, then let the node settle.
        let first_video_times = if plan.media.video {
            wait_first_video(&subscribers, &starts).await
        } else {
            Vec::new()
        };
        tokio::time::sleep(plan.warmup).await;

        let measured = self.measure(&publishers, &subscribers).await;

        close(publishers, subscribers).await;
        Ok(Outcome {
            publisher_legs: plan.publishers,
            subscriber_legs: subscriptions,
            join_times,
            first_video_times,
            expected: measured.expected,
            received: measured.received,
            duplicates: measured.duplicates,
            window: measured.window,
            baseline,
            start: measured.start,
            end: measured.end,
            client_cpu_seconds: measured.client_cpu_seconds,
            samples: measured.samples,
            srtp_cipher,
            churn: None,
            drops: measured.drops,
        })
    }

    /// Samples every second for the plan's duration, then stops the publishers and counts
    /// what arrived.
    async fn measure(
        &self,
        publishers: &[Arc<PublisherLeg>],
        subscribers: &[SubscriberLeg],
    ) -> Measurement {
        let totals = || {
            let sent: Vec<u64> = publishers
                .iter()
                .map(|leg| leg.publisher.sent_count())
                .collect();
            let mut totals = Totals::default();
            for leg in subscribers {
                let counts = leg.subscriber.counts();
                totals.sent_per_subscriber += sent[leg.publisher];
                totals.received += counts.total();
                totals.duplicates += counts.duplicates;
            }
            totals
        };

        let duration = self.plan.duration;
        let bar = self.bar(
            duration.as_secs().max(1),
            "{prefix:>10} [{bar:30}] {pos}/{len} s {msg}",
        );
        bar.set_prefix("measuring");
        let mut sampler = Sampler::new(self.probe.sample().await, totals());
        let start = sampler.server.clone();
        let first = sampler.totals;
        let client_cpu_start = own_cpu_seconds();
        let drops_start = SocketDrops::read(self.probe.pid);
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        while started.elapsed() < duration {
            let remaining = duration.saturating_sub(started.elapsed());
            if remaining < Duration::from_secs(1) {
                tokio::time::sleep(remaining).await;
                break;
            }
            ticker.tick().await;
            let sample = sampler.next(started, self.probe.sample().await, totals());
            bar.set_position(sample.at.round() as u64);
            bar.set_message(progress_message(&sample));
            samples.push(sample);
        }
        let window = started.elapsed();
        let end = self.probe.sample().await;
        let sent_at_end = totals().sent_per_subscriber;
        let client_cpu_end = own_cpu_seconds();
        for leg in publishers {
            leg.publisher.stop_media();
        }
        tokio::time::sleep(DRAIN).await;
        let last = totals();
        let drops = SocketDrops::read(self.probe.pid).since(drops_start);
        bar.finish_with_message("done");
        Measurement {
            expected: sent_at_end - first.sent_per_subscriber,
            received: last.received - first.received,
            duplicates: last.duplicates - first.duplicates,
            window,
            start,
            end,
            client_cpu_seconds: client_cpu_end.zip(client_cpu_start).map(|(e, s)| e - s),
            samples,
            drops,
        }
    }

    async fn run_churn(&self) -> Result<Outcome> {
        let plan = &self.plan;
        let baseline = self.probe.sample().await;
        let conversation = self
            .api
            .create_conversation(&format!("loadtest-{}", self.run_id))
            .await?;
        let host_member = self
            .api
            .join(&conversation, &format!("loadtest-{}-host", self.run_id))
            .await?;
        let started = Instant::now();
        let (host_leg, host) = publish(&self.api, &conversation, &host_member, true).await?;
        let host_join = started.elapsed();
        host.start_media(plan.media.send_plan());
        let srtp_cipher = host.srtp_cipher().await;
        let host = Arc::new(host);
        tokio::time::sleep(plan.warmup).await;

        let bar = self.bar(
            plan.duration.as_secs().max(1),
            "{prefix:>10} [{bar:30}] {pos}/{len} s {msg}",
        );
        bar.set_prefix("churning");
        let start = self.probe.sample().await;
        let client_cpu_start = own_cpu_seconds();
        let drops_start = SocketDrops::read(self.probe.pid);
        let began = Instant::now();
        let deadline = began + plan.duration;

        let mut slots = JoinSet::new();
        for slot in 0..plan.members {
            let context = ChurnContext {
                api: self.api.clone(),
                conversation: conversation.clone(),
                host_leg: host_leg.clone(),
                host: Arc::clone(&host),
                run_id: self.run_id.clone(),
                hold: plan.hold,
                send_plan: plan.media.send_plan(),
            };
            // Spread the slots over one hold so joins and leaves do not come in waves.
            let offset = plan.hold.mul_f64(slot as f64 / plan.members as f64);
            slots.spawn(async move {
                tokio::time::sleep(offset).await;
                context.churn(slot, deadline).await
            });
        }

        let mut samples = Vec::new();
        // NOTE: churning legs come and go, so per-second samples carry no client totals: the
        // packet plots of a churn run are empty unless the node has a forwarded counter.
        let mut sampler = Sampler::new(start.clone(), Totals::default());
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        while Instant::now() < deadline {
            ticker.tick().await;
            let sample = sampler.next(began, self.probe.sample().await, Totals::default());
            bar.set_position(sample.at.round() as u64);
            bar.set_message(progress_message(&sample));
            samples.push(sample);
        }
        let end = self.probe.sample().await;
        let client_cpu_end = own_cpu_seconds();
        let drops = SocketDrops::read(self.probe.pid).since(drops_start);
        let window = began.elapsed();

        let mut outcome = SlotOutcome::default();
        while let Some(result) = slots.join_next().await {
            match result {
                Ok(slot) => outcome.merge(slot),
                Err(error) => outcome.fail(anyhow!("a churn slot failed: {error}")),
            }
        }
        bar.finish_with_message("done");
        host.close().await;
        let mut join_times = outcome.join_times;
        join_times.push(host_join);
        Ok(Outcome {
            publisher_legs: 1 + outcome.churn.cycles as usize,
            subscriber_legs: outcome.churn.cycles as usize,
            join_times,
            first_video_times: outcome.first_video_times,
            expected: outcome.expected,
            received: outcome.received,
            duplicates: outcome.duplicates,
            window,
            baseline,
            start,
            end,
            client_cpu_seconds: client_cpu_end.zip(client_cpu_start).map(|(e, s)| e - s),
            samples,
            srtp_cipher,
            churn: Some(outcome.churn),
            drops,
        })
    }
}

/// Turns consecutive readings into per-second rates.
struct Sampler {
    server: ServerSample,
    totals: Totals,
    client_cpu: Option<f64>,
    at: Instant,
}

impl Sampler {
    fn new(server: ServerSample, totals: Totals) -> Sampler {
        Sampler {
            server,
            totals,
            client_cpu: own_cpu_seconds(),
            at: Instant::now(),
        }
    }

    fn next(&mut self, began: Instant, server: ServerSample, totals: Totals) -> Sample {
        let now = Instant::now();
        let seconds = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let client_cpu = own_cpu_seconds();
        let delta = |after: Option<f64>, before: Option<f64>| after.zip(before).map(|(a, b)| a - b);
        let received = (totals.received - self.totals.received) as f64 / seconds;
        let forwarded = delta(server.forwarded_packets, self.server.forwarded_packets)
            .map(|packets| packets / seconds);
        let forwarded_per_second = forwarded.unwrap_or(received);
        let cpu = delta(server.cpu_seconds, self.server.cpu_seconds);
        let sample = Sample {
            at: now.duration_since(began).as_secs_f64(),
            forwarded_per_second,
            received_per_second: received,
            expected_per_second: (totals.sent_per_subscriber - self.totals.sent_per_subscriber)
                as f64
                / seconds,
            server_cpu_cores: cpu.map(|cpu| cpu / seconds),
            server_cpu_ns_per_packet: cpu.and_then(|cpu| {
                (forwarded_per_second > 0.0).then(|| cpu * 1e9 / (forwarded_per_second * seconds))
            }),
            server_resident_mib: server.resident_bytes.map(|bytes| bytes / (1024.0 * 1024.0)),
            client_cpu_cores: delta(client_cpu, self.client_cpu).map(|cpu| cpu / seconds),
        };
        self.server = server;
        self.totals = totals;
        self.client_cpu = client_cpu;
        self.at = now;
        sample
    }
}

fn progress_message(sample: &Sample) -> String {
    let mut message = format!("{:.0} packets/s forwarded", sample.forwarded_per_second);
    if sample.expected_per_second > 0.0 {
        let loss = 100.0 * (1.0 - sample.received_per_second / sample.expected_per_second);
        message.push_str(&format!(", loss {:.1} %", loss.max(0.0)));
    }
    if let Some(cores) = sample.server_cpu_cores {
        message.push_str(&format!(", node {cores:.2} cores"));
    }
    if let Some(cores) = sample.client_cpu_cores {
        message.push_str(&format!(", load test {cores:.2} cores"));
    }
    message
}

async fn publish(
    api: &Api,
    conversation: &str,
    member: &str,
    video: bool,
) -> Result<(String, Publisher)> {
    let publisher = if video {
        Publisher::new().await
    } else {
        Publisher::audio_only().await
    }
    .context("creating a publisher peer")?;
    let offer = publisher
        .offer()
        .await
        .context("creating the publisher's offer")?;
    let (leg, answer) = api
        .rtc(conversation, member, offer, None)
        .await
        .with_context(|| format!("publishing for member {member}"))?;
    publisher
        .apply_answer(answer)
        .await
        .with_context(|| format!("applying the answer of publisher leg {leg}"))?;
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("connecting publisher leg {leg}"))?;
    Ok((leg, publisher))
}

async fn subscribe(
    api: &Api,
    conversation: &str,
    member: &str,
    publisher_leg: &str,
    video: bool,
) -> Result<Subscriber> {
    // NOTE: the `webrtc` crate authenticates and decrypts every SRTP packet a subscriber
    // receives, so the load test costs about as much CPU per packet as the node does.
    let subscriber = Subscriber::with_options(SubscriberOptions {
        receive_video: video,
        record_packets: false,
        ..SubscriberOptions::default()
    })
    .await
    .context("creating a subscriber peer")?;
    let offer = subscriber
        .offer()
        .await
        .context("creating the subscriber's offer")?;
    let (leg, answer) = api
        .rtc(conversation, member, offer, Some(publisher_leg))
        .await
        .with_context(|| format!("subscribing member {member} to leg {publisher_leg}"))?;
    subscriber
        .apply_answer(answer)
        .await
        .with_context(|| format!("applying the answer of subscriber leg {leg}"))?;
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("connecting subscriber leg {leg}"))?;
    Ok(subscriber)
}

/// Waits until every subscriber has video or the timeout passes, and returns the time from
/// each one's start to its first video packet.
async fn wait_first_video(subscribers: &[SubscriberLeg], starts: &[Instant]) -> Vec<Duration> {
    let all_arrived = || {
        subscribers
            .iter()
            .all(|leg| leg.subscriber.first_video_at().is_some())
    };
    client::wait_until(FIRST_VIDEO_TIMEOUT, all_arrived).await;
    subscribers
        .iter()
        .zip(starts)
        .filter_map(|(leg, started)| {
            leg.subscriber
                .first_video_at()
                .map(|at| at.duration_since(*started))
        })
        .collect()
}

async fn close(publishers: Vec<Arc<PublisherLeg>>, subscribers: Vec<SubscriberLeg>) {
    let mut tasks = JoinSet::new();
    for leg in subscribers {
        tasks.spawn(async move { leg.subscriber.close().await });
    }
    for leg in publishers {
        tasks.spawn(async move { leg.publisher.close().await });
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    // Peers that do not close in time are dropped with the runtime.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, all).await;
}

struct ChurnContext {
    api: Api,
    conversation: String,
    host_leg: String,
    host: Arc<Publisher>,
    run_id: String,
    hold: Duration,
    send_plan: client::SendPlan,
}

#[derive(Default)]
struct SlotOutcome {
    churn: ChurnOutcome,
    join_times: Vec<Duration>,
    first_video_times: Vec<Duration>,
    expected: u64,
    received: u64,
    duplicates: u64,
}

impl SlotOutcome {
    fn fail(&mut self, error: anyhow::Error) {
        self.churn.failures += 1;
        if self.churn.first_failure.is_none() {
            self.churn.first_failure = Some(format!("{error:#}"));
        }
    }

    fn merge(&mut self, other: SlotOutcome) {
        self.churn.cycles += other.churn.cycles;
        self.churn.failures += other.churn.failures;
        if self.churn.first_failure.is_none() {
            self.churn.first_failure = other.churn.first_failure;
        }
        self.join_times.extend(other.join_times);
        self.first_video_times.extend(other.first_video_times);
        self.expected += other.expected;
        self.received += other.received;
        self.duplicates += other.duplicates;
    }
}

impl ChurnContext {
    /// Runs join, publish, subscribe, hold and leave cycles until the next one would end after
    /// `deadline`.
    async fn churn(self, slot: usize, deadline: Instant) -> SlotOutcome {
        let mut outcome = SlotOutcome::default();
        let mut cycle = 0u64;
        while Instant::now() + self.hold < deadline {
            if let Err(error) = self.cycle(slot, cycle, &mut outcome).await {
                outcome.fail(error);
                // Give a failing node a moment rather than hammering it.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            cycle += 1;
        }
        outcome
    }

    async fn cycle(&self, slot: usize, cycle: u64, outcome: &mut SlotOutcome) -> Result<()> {
        let user = format!("loadtest-{}-{slot}-{cycle}", self.run_id);
        let member = self.api.join(&self.conversation, &user).await?;

        let started = Instant::now();
        let (_, publisher) = publish(&self.api, &self.conversation, &member, true).await?;
        outcome.join_times.push(started.elapsed());
        publisher.start_media(self.send_plan.clone());

        let started = Instant::now();
        let subscribed =
            subscribe(&self.api, &self.conversation, &member, &self.host_leg, true).await;
        let subscriber = match subscribed {
            Ok(subscriber) => subscriber,
            Err(error) => {
                publisher.close().await;
                let _ = self.api.leave(&self.conversation, &member).await;
                return Err(error);
            }
        };
        outcome.join_times.push(started.elapsed());
        let video = client::wait_until(FIRST_VIDEO_TIMEOUT, || {
            subscriber.first_video_at().is_some()
        })
        .await;
        if let Some(at) = subscriber.first_video_at() {
            outcome.first_video_times.push(at.duration_since(started));
        }

        // Count from the first video packet on: before it, the subscription waits for a
        // keyframe and drops video by design.
        let sent_before = self.host.sent_count();
        let counts_before = subscriber.counts();
        tokio::time::sleep(self.hold).await;
        let sent_after = self.host.sent_count();
        let counts_after = subscriber.counts();
        if video {
            outcome.expected += sent_after - sent_before;
            outcome.received += counts_after.total() - counts_before.total();
            outcome.duplicates += counts_after.duplicates - counts_before.duplicates;
        }

        let left = self.api.leave(&self.conversation, &member).await;
        subscriber.close().await;
        publisher.close().await;
        left?;
        if !video {
            return Err(anyhow!(
                "subscriber of member {member} got no video within {} s",
                FIRST_VIDEO_TIMEOUT.as_secs()
            ));
        }
        outcome.churn.cycles += 1;
        Ok(())
    }
}
