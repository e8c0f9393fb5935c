//! A second adversarial pass on the media core, against a real node on loopback. It covers
//! legs closed while others connect to them, mute toggled while media flows, and shutdown with
//! legs in every state. It also covers publishers that never get keyframe requests, offers
//! without track ids, peers that restart from the address of a vanished leg, network blips,
//! and many publish and subscribe cycles.
//!
//! The contract checked here: closed legs leave nothing behind in the media worker or the
//! room, and each leg gets exactly one `rtc:terminate`. Subscribers see no sequence gap across
//! mute and resume at a keyframe. Keyframe requests stay rate-limited, and shutdown closes
//! every leg.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::media::{
    AUDIO_TICKS_PER_PACKET, VIDEO_TICKS_PER_FRAME, opus_counter, vp8_counter, vp8_starts_keyframe,
};
use client::{Kind, Publisher, ReceivedPacket, SendPlan, Subscriber, wait_until};
use media::MediaStats;
use room::{ConversationId, EventQuery, EventType};
use serde_json::json;
use switchboard::{Config, Node};
use tokio::net::UdpSocket;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

mod common;

use common::{Api, CONNECT_TIMEOUT, PUBLISH_AV, RECEIVE_ONLY, Reply, assert_problem, fast_config};

/// Taken for writing by the test that measures the process's memory, and for reading by every
/// other test, so that no other test allocates while it measures.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// Held while a node starts, so that a test can tell its node's media thread from the others.
static NODE_START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// A node, its REST API and a conversation with members
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct MemberInfo {
    id: String,
    token: String,
}

/// A node with one conversation and JOINED members, each with its own user token.
struct Scene {
    node: Node,
    api: Api,
    admin: String,
    conversation: String,
    members: Vec<MemberInfo>,
    /// Thread id of this node's media worker.
    media_thread: Option<u32>,
}

impl Scene {
    async fn start(config: Config, names: &[&str]) -> Scene {
        let (node, media_thread) = start_node(config).await;
        let api = Api::new(&node);
        let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
        let conversation = api.post_ok(&admin, "/conversations", json!({})).await["id"]
            .as_str()
            .expect("conversation id")
            .to_owned();
        let mut scene = Scene {
            node,
            api,
            admin,
            conversation,
            members: Vec::new(),
            media_thread,
        };
        for name in names {
            let member = scene.join(name).await;
            scene.members.push(member);
        }
        scene
    }

    async fn join(&self, name: &str) -> MemberInfo {
        self.api
            .post_ok(&self.admin, "/users", json!({ "name": name }))
            .await;
        let token = self
            .node
            .user_token(name, Duration::from_secs(600))
            .expect("user token");
        let member = self
            .api
            .post_ok(
                &token,
                &self.path("/members"),
                json!({ "user_name": name, "action": "join" }),
            )
            .await;
        MemberInfo {
            id: member["id"].as_str().expect("member id").to_owned(),
            token,
        }
    }

    fn path(&self, rest: &str) -> String {
        format!("/conversations/{}{rest}", self.conversation)
    }

    /// Posts an offer for `member`: a publisher leg, or a subscriber leg of `publisher`.
    async fn offer_as(&self, member: &MemberInfo, sdp: &str, publisher: Option<&str>) -> Reply {
        let mut body = json!({ "offer": { "type": "offer", "sdp": sdp } });
        if let Some(publisher) = publisher {
            body["subscribe"] = json!({ "rtc_id": publisher });
        }
        self.api
            .post(
                &member.token,
                &self.path("/rtc"),
                json!({ "from": member.id, "body": body }),
            )
            .await
    }

    /// Posts an offer that must be answered, and returns the leg id and the answer.
    async fn offer_ok(
        &self,
        member: &MemberInfo,
        sdp: &str,
        publisher: Option<&str>,
    ) -> (String, String) {
        let reply = self.offer_as(member, sdp, publisher).await;
        assert_eq!(reply.status, 201, "offer: {}", reply.text);
        let leg = reply.body["rtc_id"].as_str().expect("rtc_id").to_owned();
        let answer = reply.body["body"]["answer"]["sdp"]
            .as_str()
            .expect("answer")
            .to_owned();
        (leg, answer)
    }

    /// Posts a mute event from `member` about itself.
    async fn mute(&self, member: &MemberInfo, kind: &str, muted: bool) {
        let state = if muted { "on" } else { "off" };
        let body = json!({ "type": format!("{kind}:mute:{state}"), "from": member.id });
        let reply = self
            .api
            .post(&member.token, &self.path("/events"), body)
            .await;
        assert_eq!(reply.status, 201, "{kind}:mute:{state}: {}", reply.text);
    }

    async fn delete_leg(&self, member: &MemberInfo, leg: &str) -> Reply {
        self.api
            .delete(&member.token, &self.path(&format!("/rtc/{leg}")))
            .await
    }

    async fn leave(&self, member: &MemberInfo) {
        let reply = self
            .api
            .delete(
                &member.token,
                &self.path(&format!("/members/{}", member.id)),
            )
            .await;
        assert_eq!(reply.status, 200, "leave: {}", reply.text);
    }

    async fn snapshot(&self) -> Snapshot {
        let conversation = self
            .node
            .registry()
            .conversation(&ConversationId::from(self.conversation.as_str()))
            .expect("conversation");
        let stats = stats(&self.node).await;
        Snapshot {
            room_legs: conversation
                .legs
                .iter()
                .map(|leg| leg.id.to_string())
                .collect(),
            media_legs: stats.legs,
        }
    }

    /// Polls until the media worker and the room both hold `legs` legs.
    async fn wait_for_legs(&self, legs: usize, timeout: Duration) -> Snapshot {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot().await;
            if (snapshot.media_legs == legs && snapshot.room_legs.len() == legs)
                || Instant::now() > deadline
            {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Returns the `reason` of every `rtc:terminate` event of `leg`, in log order.
    fn terminate_reasons(&self, leg: &str) -> Vec<String> {
        terminate_reasons(self.node.registry(), &self.conversation, leg)
    }

    fn count_events(&self, kind: EventType) -> usize {
        self.node
            .registry()
            .events(
                &ConversationId::from(self.conversation.as_str()),
                &EventQuery {
                    page_size: usize::MAX,
                    ..EventQuery::default()
                },
            )
            .expect("events")
            .iter()
            .filter(|event| event.kind == kind)
            .count()
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    room_legs: Vec<String>,
    media_legs: usize,
}

async fn stats(node: &Node) -> MediaStats {
    node.media().stats().await.expect("media stats")
}

fn terminate_reasons(registry: &room::Registry, conversation: &str, leg: &str) -> Vec<String> {
    registry
        .events(
            &ConversationId::from(conversation),
            &EventQuery {
                page_size: usize::MAX,
                ..EventQuery::default()
            },
        )
        .expect("events")
        .into_iter()
        .filter(|event| event.kind == EventType::RtcTerminate && event.body["rtc_id"] == leg)
        .map(|event| event.body["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Threads and memory of this process
// ---------------------------------------------------------------------------------------------

/// Thread ids of this process whose name starts like the media worker's.
fn media_threads() -> HashSet<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return HashSet::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse::<u32>().ok()?;
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            name.starts_with("switchboard-med").then_some(tid)
        })
        .collect()
}

/// Starts a node and finds its media worker thread: the one thread of that name that did not
/// exist before the start. A new thread takes its name only once it runs, which on a loaded
/// machine can be after `Node::start` returns, so the search waits up to two seconds for it.
async fn start_node(config: Config) -> (Node, Option<u32>) {
    let guard = NODE_START.lock().await;
    let before = media_threads();
    let node = Node::start(config).await.expect("start node");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut new: Vec<u32> = media_threads().difference(&before).copied().collect();
    while new.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        new = media_threads().difference(&before).copied().collect();
    }
    drop(guard);
    let thread = (new.len() == 1).then(|| new[0]);
    (node, thread)
}

/// User plus system CPU time of one thread of this process, from `/proc`.
fn thread_cpu(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The fields after the parenthesised name start with the state, field 3 of proc(5).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, that is 11 and 12 after the state.
    let total = ticks(11) + ticks(12);
    // Assumes USER_HZ is 100, as on x86-64 and AArch64 Linux.
    Duration::from_millis(total * 10)
}

/// Resident set size of this process, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Real WebRTC peers and a relay in front of them
// ---------------------------------------------------------------------------------------------

/// Content type of a DTLS alert record, the first byte of its header.
const DTLS_ALERT: u8 = 21;

/// Returns whether a datagram is RTCP, by the RFC 7983 and RFC 5761 ranges.
fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, 192..=223, ..])
}

/// A UDP relay between test peers and the node. It forwards what the node sends to the current
/// peer, and can drop the node's RTCP, pause both directions, or retire the current peer.
/// A retired peer's datagrams are dropped, and the next new source becomes the peer. Every
/// peer thus reaches the node from the relay's one node-facing address, as a client that
/// restarts on a fixed port, or behind a NAT that keeps its mapping, does.
struct Proxy {
    address: SocketAddr,
    server: SocketAddr,
    peer: Arc<Mutex<Option<SocketAddr>>>,
    retired: Arc<Mutex<Vec<SocketAddr>>>,
    drop_rtcp: Arc<AtomicBool>,
    dropped_rtcp: Arc<AtomicU64>,
    /// DTLS alert records the node sent to the peer.
    alerts_to_peer: Arc<AtomicU64>,
    /// While set, nothing passes in either direction.
    paused: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(server: SocketAddr) -> Proxy {
        let peer_side = UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy");
        let server_side = UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy");
        server_side.connect(server).await.expect("connect proxy");
        let address = peer_side.local_addr().expect("proxy address");

        let peer = Arc::new(Mutex::new(None::<SocketAddr>));
        let retired = Arc::new(Mutex::new(Vec::new()));
        let drop_rtcp = Arc::new(AtomicBool::new(false));
        let dropped_rtcp = Arc::new(AtomicU64::new(0));
        let alerts_to_peer = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));

        let task = {
            let (peer, retired) = (Arc::clone(&peer), Arc::clone(&retired));
            let (drop_rtcp, dropped_rtcp) = (Arc::clone(&drop_rtcp), Arc::clone(&dropped_rtcp));
            let alerts = Arc::clone(&alerts_to_peer);
            let paused = Arc::clone(&paused);
            let cut = Arc::clone(&cut);
            tokio::spawn(async move {
                let mut from_peer = vec![0u8; 2048];
                let mut from_server = vec![0u8; 2048];
                while !cut.load(Ordering::SeqCst) {
                    tokio::select! {
                        received = peer_side.recv_from(&mut from_peer) => {
                            let Ok((length, source)) = received else { break };
                            if paused.load(Ordering::SeqCst)
                                || retired.lock().expect("retired").contains(&source)
                            {
                                continue;
                            }
                            *peer.lock().expect("peer") = Some(source);
                            let _ = server_side.send(&from_peer[..length]).await;
                        }
                        received = server_side.recv(&mut from_server) => {
                            let Ok(length) = received else { continue };
                            let datagram = &from_server[..length];
                            if paused.load(Ordering::SeqCst) {
                                continue;
                            }
                            if datagram.first() == Some(&DTLS_ALERT) {
                                alerts.fetch_add(1, Ordering::SeqCst);
                            }
                            if drop_rtcp.load(Ordering::SeqCst) && is_rtcp(datagram) {
                                dropped_rtcp.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            let current = *peer.lock().expect("peer");
                            if let Some(current) = current {
                                let _ = peer_side.send_to(datagram, current).await;
                            }
                        }
                    }
                }
            })
        };

        Proxy {
            address,
            server,
            peer,
            retired,
            drop_rtcp,
            dropped_rtcp,
            alerts_to_peer,
            paused,
            cut,
            task,
        }
    }

    /// Rewrites the node's candidate in an answer so the peer sends to the proxy.
    fn rewrite_answer(&self, sdp: &str) -> String {
        let from = format!(" {} {} typ ", self.server.ip(), self.server.port());
        let to = format!(" {} {} typ ", self.address.ip(), self.address.port());
        sdp.replace(&from, &to)
    }

    /// Drops the current peer for good, as if it crashed. The next new source takes its place.
    fn retire_peer(&self) {
        if let Some(current) = self.peer.lock().expect("peer").take() {
            self.retired.lock().expect("retired").push(current);
        }
    }

    fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    fn set_drop_rtcp(&self, drop: bool) {
        self.drop_rtcp.store(drop, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes for `member` with a real peer, optionally through a proxy, and returns the peer
/// and its leg once the peer is connected.
async fn publish_peer(
    scene: &Scene,
    member: &MemberInfo,
    proxy: Option<&Proxy>,
) -> (Publisher, String) {
    let publisher = Publisher::new().await.expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let (leg, answer) = scene.offer_ok(member, &offer, None).await;
    let answer = match proxy {
        Some(proxy) => proxy.rewrite_answer(&answer),
        None => answer,
    };
    publisher.apply_answer(answer).await.expect("apply answer");
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("publisher connects");
    (publisher, leg)
}

/// Subscribes `member` to a publisher leg with a real peer, optionally through a proxy, and
/// returns once it is connected.
async fn subscribe_peer(
    scene: &Scene,
    member: &MemberInfo,
    publisher_leg: &str,
    proxy: Option<&Proxy>,
) -> (Subscriber, String) {
    let subscriber = Subscriber::new().await.expect("subscriber");
    let offer = subscriber.offer().await.expect("offer");
    let (leg, answer) = scene.offer_ok(member, &offer, Some(publisher_leg)).await;
    let answer = match proxy {
        Some(proxy) => proxy.rewrite_answer(&answer),
        None => answer,
    };
    subscriber.apply_answer(answer).await.expect("apply answer");
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("subscriber connects");
    (subscriber, leg)
}

/// Waits until a subscriber has received `more` further packets of `kind`.
async fn receives_more(
    subscriber: &Subscriber,
    kind: Kind,
    more: usize,
    timeout: Duration,
) -> bool {
    let start = subscriber.count(kind);
    wait_until(timeout, || subscriber.count(kind) >= start + more).await
}

fn received_of(subscriber: &Subscriber, kind: Kind) -> Vec<ReceivedPacket> {
    subscriber
        .received()
        .into_iter()
        .filter(|packet| packet.kind == kind)
        .collect()
}

/// Asserts that the packets of `kind` a subscriber received have consecutive sequence numbers
/// and one SSRC.
#[track_caller]
fn assert_consecutive(subscriber: &Subscriber, kind: Kind, case: &str) {
    let packets = received_of(subscriber, kind);
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "{case}: expected consecutive {kind:?} sequence numbers, got {} after {}",
            pair[1].sequence_number,
            pair[0].sequence_number
        );
        assert_eq!(
            pair[1].ssrc, pair[0].ssrc,
            "{case}: expected one {kind:?} SSRC"
        );
    }
}

/// Asserts that a subscriber's video starts at a keyframe and that wherever frames are missing
/// (the router dropped them) it resumes at a keyframe. Returns the number of resumptions.
#[track_caller]
fn assert_resumes_at_keyframes(subscriber: &Subscriber, case: &str) -> usize {
    let video = received_of(subscriber, Kind::Video);
    let Some(first) = video.first() else {
        return 0;
    };
    assert!(
        vp8_starts_keyframe(&first.payload),
        "{case}: expected the first video packet to start a keyframe, got {:?}",
        vp8_counter(&first.payload)
    );
    let mut resumptions = 0;
    for pair in video.windows(2) {
        let before = vp8_counter(&pair[0].payload).expect("a counter in the payload");
        let after = vp8_counter(&pair[1].payload).expect("a counter in the payload");
        let next_packet = after == (before.0, before.1 + 1);
        let next_frame = after.0 == before.0 + 1 && after.1 == 0;
        if next_packet || next_frame {
            continue;
        }
        resumptions += 1;
        assert!(
            vp8_starts_keyframe(&pair[1].payload),
            "{case}: expected video to resume at a keyframe, got frame {after:?} after {before:?}"
        );
    }
    resumptions
}

/// Asserts that a subscriber's RTP timestamps advance exactly as the publisher's do, across
/// every packet the router dropped: one frame is 3000 ticks and one audio packet 960.
#[track_caller]
fn assert_publisher_clock(subscriber: &Subscriber, case: &str) {
    let video = received_of(subscriber, Kind::Video);
    for pair in video.windows(2) {
        let frames = vp8_counter(&pair[1].payload)
            .zip(vp8_counter(&pair[0].payload))
            .map(|(after, before)| after.0.wrapping_sub(before.0))
            .expect("a counter in the payload");
        assert_eq!(
            pair[1].timestamp.wrapping_sub(pair[0].timestamp),
            frames.wrapping_mul(VIDEO_TICKS_PER_FRAME),
            "{case}: expected video timestamps to advance {VIDEO_TICKS_PER_FRAME} a frame \
             over {frames} frames"
        );
    }
    let audio = received_of(subscriber, Kind::Audio);
    for pair in audio.windows(2) {
        let packets = opus_counter(&pair[1].payload)
            .zip(opus_counter(&pair[0].payload))
            .map(|(after, before)| after.wrapping_sub(before))
            .expect("a counter in the payload");
        assert_eq!(
            pair[1].timestamp.wrapping_sub(pair[0].timestamp),
            packets.wrapping_mul(AUDIO_TICKS_PER_PACKET),
            "{case}: expected audio timestamps to advance {AUDIO_TICKS_PER_PACKET} a packet \
             over {packets} packets"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Legs closed while others connect to them
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_closed_while_subscriber_connects() {
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(fast_config(), &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (
        scene.members[0].clone(),
        scene.members[1].clone(),
        scene.members[2].clone(),
    );

    // Case 1: Alice ends her leg after Bob's offer is answered but before his peer applies the
    // answer. Case 2: she ends it while his peer applies the answer and connects. Case 3: her
    // peer vanishes while Carol's peer connects.
    for case in 0..3 {
        let proxy = Proxy::start(scene.node.media_address()).await;
        let (publisher, publisher_leg) = publish_peer(&scene, &alice, Some(&proxy)).await;
        publisher.start_media(SendPlan::default());
        let watcher = if case == 2 { &carol } else { &bob };
        let subscriber = Subscriber::new().await.expect("subscriber");
        let offer = subscriber.offer().await.expect("offer");
        let (subscriber_leg, answer) = scene.offer_ok(watcher, &offer, Some(&publisher_leg)).await;

        match case {
            0 => {
                let reply = scene.delete_leg(&alice, &publisher_leg).await;
                assert_eq!(reply.status, 204, "case {case}: delete: {}", reply.text);
                subscriber.apply_answer(answer).await.expect("apply answer");
            }
            1 => {
                let (applied, reply) = tokio::join!(
                    subscriber.apply_answer(answer),
                    scene.delete_leg(&alice, &publisher_leg)
                );
                applied.expect("apply answer");
                assert_eq!(reply.status, 204, "case {case}: delete: {}", reply.text);
            }
            _ => {
                proxy.cut();
                subscriber.apply_answer(answer).await.expect("apply answer");
            }
        }

        let snapshot = scene.wait_for_legs(0, Duration::from_secs(8)).await;
        assert_eq!(
            snapshot.media_legs, 0,
            "case {case}: expected both legs closed in the media worker"
        );
        assert!(
            snapshot.room_legs.is_empty(),
            "case {case}: expected no leg in the room, got {:?}",
            snapshot.room_legs
        );
        let publisher_reason = if case == 2 {
            "connection_failed"
        } else {
            "requested"
        };
        assert_eq!(
            scene.terminate_reasons(&publisher_leg),
            vec![publisher_reason.to_owned()],
            "case {case}: expected one rtc:terminate for the publisher leg"
        );
        assert_eq!(
            scene.terminate_reasons(&subscriber_leg),
            vec!["publisher_closed".to_owned()],
            "case {case}: expected one rtc:terminate for the subscriber leg"
        );
        let legs = scene.api.get(&scene.admin, &scene.path("/rtc")).await;
        assert_eq!(
            legs.body["publishers"],
            json!([]),
            "case {case}: expected GET /rtc to list no leg"
        );

        // The subscriber's late checks must neither reopen anything nor get media.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let received = subscriber.received().len();
        let forwarded = stats(&scene.node).await.router.forwarded_packets;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            subscriber.received().len(),
            received,
            "case {case}: expected no media after the publisher leg closed"
        );
        assert_eq!(
            stats(&scene.node).await.router.forwarded_packets,
            forwarded,
            "case {case}: expected nothing forwarded"
        );
        assert_eq!(
            scene.snapshot().await.media_legs,
            0,
            "case {case}: expected no leg to come back"
        );
        subscriber.close().await;
        publisher.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blip_keeps_legs() {
    // Alice's network drops everything for 2.5 s. Her peer sends a consent check every 2 s, so
    // the node hears nothing for up to 4.5 s: longer than the 1 s ICE disconnected timeout,
    // shorter than the 7 s after which a leg fails. Her legs must survive it.
    let _shared = EXCLUSIVE.read().await;
    let mut config = Config::ephemeral();
    config.media.ice_disconnected_timeout_ms = 1_000;
    config.media.ice_failed_timeout_ms = 6_000;
    let scene = Scene::start(config, &["alice", "bob"]).await;
    let (alice, bob) = (scene.members[0].clone(), scene.members[1].clone());
    let proxy = Proxy::start(scene.node.media_address()).await;
    let (publisher, publisher_leg) = publish_peer(&scene, &alice, Some(&proxy)).await;
    publisher.start_media(SendPlan::default());
    let (view, subscriber_leg) = subscribe_peer(&scene, &bob, &publisher_leg, None).await;
    assert!(
        receives_more(&view, Kind::Video, 10, CONNECT_TIMEOUT).await,
        "expected alice's video to reach bob"
    );
    let events_before = scene.count_events(EventType::RtcTerminate);

    proxy.set_paused(true);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    proxy.set_paused(false);
    assert!(
        receives_more(&view, Kind::Video, 10, Duration::from_secs(3)).await,
        "expected alice's video to come back after the blip"
    );
    // Past the failed timeout of a leg that never heard from its peer again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receives_more(&view, Kind::Video, 10, Duration::from_secs(2)).await,
        "expected alice's video to keep flowing after the blip"
    );
    assert_eq!(
        scene.count_events(EventType::RtcTerminate),
        events_before,
        "expected no leg closed by the blip"
    );
    let room_legs = scene.snapshot().await.room_legs;
    assert_eq!(
        room_legs,
        vec![publisher_leg, subscriber_leg],
        "expected both legs to stay"
    );
    view.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_hangup_closes_subscribers() {
    // Default ICE timeouts, so that only Alice's close_notify can end her leg in time.
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(Config::ephemeral(), &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (
        scene.members[0].clone(),
        scene.members[1].clone(),
        scene.members[2].clone(),
    );
    let (publisher, publisher_leg) = publish_peer(&scene, &alice, None).await;
    publisher.start_media(SendPlan::default());
    let (bob_view, bob_leg) = subscribe_peer(&scene, &bob, &publisher_leg, None).await;
    let (carol_view, carol_leg) = subscribe_peer(&scene, &carol, &publisher_leg, None).await;
    for view in [&bob_view, &carol_view] {
        assert!(
            receives_more(view, Kind::Video, 10, CONNECT_TIMEOUT).await,
            "expected alice's video to flow"
        );
    }
    let registry = scene.node.registry();
    let conversation = ConversationId::from(scene.conversation.as_str());
    let all_connected = wait_until(Duration::from_secs(3), || {
        registry.forwarding_table(&conversation).is_ok_and(|table| {
            table.publishers.iter().all(|publisher| {
                publisher.state == room::LegState::Connected
                    && publisher.subscribers.len() == 2
                    && publisher
                        .subscribers
                        .iter()
                        .all(|subscriber| subscriber.state == room::LegState::Connected)
            })
        })
    })
    .await;
    assert!(
        all_connected,
        "expected the room to show every leg connected"
    );

    publisher.close().await;
    let snapshot = scene.wait_for_legs(0, Duration::from_secs(3)).await;
    assert_eq!(
        snapshot.media_legs, 0,
        "expected alice's leg and both subscriber legs closed within 3 s of her close_notify"
    );
    assert!(snapshot.room_legs.is_empty(), "expected no leg in the room");
    assert_eq!(
        scene.terminate_reasons(&publisher_leg),
        vec!["peer_closed".to_owned()],
        "expected one rtc:terminate for alice's leg"
    );
    for leg in [&bob_leg, &carol_leg] {
        assert_eq!(
            scene.terminate_reasons(leg),
            vec!["publisher_closed".to_owned()],
            "expected one rtc:terminate for subscriber leg {leg}"
        );
    }
    bob_view.close().await;
    carol_view.close().await;
}

// ---------------------------------------------------------------------------------------------
// Mute while media flows
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator, so that a failing run can be repeated exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_toggles_keep_sequence() {
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(fast_config(), &["alice", "bob"]).await;
    let (alice, bob) = (scene.members[0].clone(), scene.members[1].clone());
    let (publisher, publisher_leg) = publish_peer(&scene, &alice, None).await;
    publisher.start_media(SendPlan::default());
    let (view, _) = subscribe_peer(&scene, &bob, &publisher_leg, None).await;
    assert!(
        receives_more(&view, Kind::Video, 10, CONNECT_TIMEOUT).await,
        "expected alice's video to flow"
    );

    // 40 changes at random moments, about 2 s in all, for video and audio.
    let mut random = XorShift(41);
    let mut muted = [false, false];
    let requests_before = publisher.keyframe_requests();
    let started = Instant::now();
    for _ in 0..40 {
        let index = random.below(2) as usize;
        muted[index] = !muted[index];
        let kind = ["video", "audio"][index];
        scene.mute(&alice, kind, muted[index]).await;
        tokio::time::sleep(Duration::from_millis(random.below(90))).await;
    }
    // End muted for a while, then unmute both.
    for (index, kind) in ["video", "audio"].into_iter().enumerate() {
        if !muted[index] {
            scene.mute(&alice, kind, true).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let video_at_last_mute = view.count(Kind::Video);
    let audio_at_last_mute = view.count(Kind::Audio);
    scene.mute(&alice, "video", false).await;
    scene.mute(&alice, "audio", false).await;
    let elapsed = started.elapsed();

    assert!(
        receives_more(&view, Kind::Video, 15, Duration::from_secs(3)).await,
        "expected video to resume after the last unmute"
    );
    assert!(
        receives_more(&view, Kind::Audio, 15, Duration::from_secs(3)).await,
        "expected audio to resume after the last unmute"
    );
    let video = received_of(&view, Kind::Video);
    assert!(
        vp8_starts_keyframe(&video[video_at_last_mute].payload),
        "expected the first video packet after the last unmute to start a keyframe"
    );
    assert!(
        view.count(Kind::Audio) > audio_at_last_mute,
        "expected audio after the last unmute"
    );
    assert_consecutive(&view, Kind::Video, "video across mute toggles");
    assert_consecutive(&view, Kind::Audio, "audio across mute toggles");
    assert_publisher_clock(&view, "mute toggles");
    let resumptions = assert_resumes_at_keyframes(&view, "video across mute toggles");
    assert!(
        resumptions >= 1,
        "expected video to have been interrupted by mute"
    );

    // Unmutes ask for keyframes, but no faster than one per 250 ms.
    let requests = publisher.keyframe_requests() - requests_before;
    let allowed = (elapsed.as_millis() / 250) as u64 + 3;
    assert!(
        requests <= allowed,
        "expected at most {allowed} keyframe requests over {elapsed:?}, got {requests}"
    );
    let legs = scene.api.get(&scene.admin, &scene.path("/rtc")).await;
    assert_eq!(
        legs.body["publishers"][0]["muted"],
        json!({ "audio": false, "video": false }),
        "expected GET /rtc to show alice unmuted"
    );
    view.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_muted() {
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(fast_config(), &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (
        scene.members[0].clone(),
        scene.members[1].clone(),
        scene.members[2].clone(),
    );

    // Alice mutes her video after she publishes, and Bob subscribes while it is muted.
    let (alice_peer, alice_leg) = publish_peer(&scene, &alice, None).await;
    alice_peer.start_media(SendPlan::default());
    scene.mute(&alice, "video", true).await;
    let (bob_view, _) = subscribe_peer(&scene, &bob, &alice_leg, None).await;
    assert!(
        receives_more(&bob_view, Kind::Audio, 20, CONNECT_TIMEOUT).await,
        "expected alice's audio while her video is muted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bob_view.count(Kind::Video),
        0,
        "expected no video while alice's video is muted"
    );

    // Carol mutes both kinds before she publishes: the new leg must start muted.
    scene.mute(&carol, "video", true).await;
    scene.mute(&carol, "audio", true).await;
    let (carol_peer, carol_leg) = publish_peer(&scene, &carol, None).await;
    carol_peer.start_media(SendPlan::default());
    let (carol_view, _) = subscribe_peer(&scene, &bob, &carol_leg, None).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        carol_view.received().len(),
        0,
        "expected nothing of carol's, who published muted"
    );
    let legs = scene.api.get(&scene.admin, &scene.path("/rtc")).await;
    assert_eq!(
        legs.body["publishers"][1]["muted"],
        json!({ "audio": true, "video": true }),
        "expected GET /rtc to show carol muted"
    );

    scene.mute(&carol, "audio", false).await;
    assert!(
        receives_more(&carol_view, Kind::Audio, 10, Duration::from_secs(3)).await,
        "expected carol's audio after she unmutes it"
    );
    assert_eq!(
        carol_view.count(Kind::Video),
        0,
        "expected carol's video to stay muted"
    );
    for (member, view) in [(&alice, &bob_view), (&carol, &carol_view)] {
        scene.mute(member, "video", false).await;
        assert!(
            receives_more(view, Kind::Video, 10, Duration::from_secs(3)).await,
            "expected video after unmute"
        );
        assert_resumes_at_keyframes(view, "video after subscribing while muted");
        assert_consecutive(view, Kind::Video, "video after subscribing while muted");
        assert_consecutive(view, Kind::Audio, "audio after subscribing while muted");
        assert_publisher_clock(view, "subscribing while muted");
    }
    bob_view.close().await;
    carol_view.close().await;
    alice_peer.close().await;
    carol_peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmute_then_subscribe_mid_stream() {
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(fast_config(), &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (
        scene.members[0].clone(),
        scene.members[1].clone(),
        scene.members[2].clone(),
    );
    let (publisher, publisher_leg) = publish_peer(&scene, &alice, None).await;
    publisher.start_media(SendPlan::default());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Mute and unmute with no subscriber, then subscribe at once.
    scene.mute(&alice, "video", true).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    scene.mute(&alice, "video", false).await;
    let (bob_view, _) = subscribe_peer(&scene, &bob, &publisher_leg, None).await;
    assert!(
        receives_more(&bob_view, Kind::Video, 10, Duration::from_secs(3)).await,
        "expected video for a subscriber that joined after an unmute"
    );
    // Carol joins mid-stream, within the keyframe request interval of Bob's request.
    let (carol_view, _) = subscribe_peer(&scene, &carol, &publisher_leg, None).await;
    assert!(
        receives_more(&carol_view, Kind::Video, 10, Duration::from_secs(3)).await,
        "expected video for a subscriber that joined mid-stream"
    );
    for view in [&bob_view, &carol_view] {
        assert_eq!(
            assert_resumes_at_keyframes(view, "video of a new subscriber"),
            0,
            "expected no frame gap"
        );
        assert_consecutive(view, Kind::Video, "video of a new subscriber");
    }
    bob_view.close().await;
    carol_view.close().await;
    publisher.close().await;
}

// ---------------------------------------------------------------------------------------------
// Offers without track ids
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_msid_forwards_video() {
    // RFC 8830 makes `a=msid` optional, and the JSEP answerer then gives each track an id of
    // its own. Alice's offer has neither `a=msid` lines nor msid attributes on `a=ssrc` lines.
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(fast_config(), &["alice", "bob"]).await;
    let (alice, bob) = (scene.members[0].clone(), scene.members[1].clone());
    let publisher = Publisher::new().await.expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let without_msid: String = offer
        .lines()
        .filter(|line| !line.starts_with("a=msid:") && !line.contains(" msid:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    assert!(
        !without_msid.contains("msid:"),
        "expected the offer without msid"
    );
    let (leg, answer) = scene.offer_ok(&alice, &without_msid, None).await;
    publisher.apply_answer(answer).await.expect("apply answer");
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("publisher connects");
    publisher.start_media(SendPlan::default());
    let (view, _) = subscribe_peer(&scene, &bob, &leg, None).await;

    assert!(
        receives_more(&view, Kind::Audio, 20, Duration::from_secs(3)).await,
        "expected alice's audio to reach bob"
    );
    let video = receives_more(&view, Kind::Video, 10, Duration::from_secs(2)).await;
    let router = stats(&scene.node).await.router;
    assert!(
        video,
        "expected alice's video to reach bob, but bob got {} video packets for {} audio \
         packets, and the router received {} packets in all",
        view.count(Kind::Video),
        view.count(Kind::Audio),
        router.received_packets
    );
    view.close().await;
    publisher.close().await;
}

// ---------------------------------------------------------------------------------------------
// Keyframe requests that never reach the publisher
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keyframe_requests_rate_limited() {
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(fast_config(), &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (
        scene.members[0].clone(),
        scene.members[1].clone(),
        scene.members[2].clone(),
    );
    let proxy = Proxy::start(scene.node.media_address()).await;
    let (publisher, publisher_leg) = publish_peer(&scene, &alice, Some(&proxy)).await;
    publisher.start_media(SendPlan::default());
    let (bob_view, _) = subscribe_peer(&scene, &bob, &publisher_leg, None).await;
    assert!(
        receives_more(&bob_view, Kind::Video, 10, CONNECT_TIMEOUT).await,
        "expected alice's video to reach bob"
    );

    // From now on no RTCP reaches Alice, so she sends no further keyframe, and Carol waits.
    proxy.set_drop_rtcp(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (carol_view, _) = subscribe_peer(&scene, &carol, &publisher_leg, None).await;
    let before = stats(&scene.node).await;
    let media_thread = scene.media_thread.expect("the media thread of the node");
    let cpu_before = thread_cpu(media_thread);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let after = stats(&scene.node).await;
    let cpu = thread_cpu(media_thread).saturating_sub(cpu_before);

    let sent = after.keyframe_requests_sent - before.keyframe_requests_sent;
    let allowed = (elapsed.as_millis() / 250) as u64 + 2;
    assert!(
        sent <= allowed,
        "expected at most {allowed} keyframe requests over {elapsed:?}, got {sent}"
    );
    assert!(
        sent >= 4,
        "expected the request to be repeated while carol waits, got {sent}"
    );
    assert!(
        proxy.dropped_rtcp.load(Ordering::SeqCst) >= sent,
        "expected the requests to be dropped on the way"
    );
    assert_eq!(
        carol_view.count(Kind::Video),
        0,
        "expected no video for carol before a keyframe"
    );
    assert!(
        carol_view.count(Kind::Audio) > 50,
        "expected audio for carol while her video waits"
    );
    assert!(
        receives_more(&bob_view, Kind::Video, 10, Duration::from_secs(2)).await,
        "expected bob's video to go on"
    );
    assert!(
        cpu < elapsed / 4,
        "expected the media worker to stay mostly idle, but it used {cpu:?} of CPU in \
         {elapsed:?}"
    );

    // Once requests get through again, Carol's video starts at a keyframe.
    proxy.set_drop_rtcp(false);
    assert!(
        receives_more(&carol_view, Kind::Video, 10, Duration::from_secs(3)).await,
        "expected carol's video once a keyframe request reaches alice"
    );
    assert_resumes_at_keyframes(&carol_view, "carol's video");
    assert_consecutive(&bob_view, Kind::Video, "bob's video");
    bob_view.close().await;
    carol_view.close().await;
    publisher.close().await;
}

// ---------------------------------------------------------------------------------------------
// A peer that restarts on the address of its vanished leg
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_same_address_connects() {
    // Default ICE timeouts: a vanished leg stays open for up to 30 s. Alice's client uses a
    // fixed port, or a NAT that keeps her mapping, so her new peer reaches the node from the
    // address her old leg was bound to.
    let _shared = EXCLUSIVE.read().await;
    let scene = Scene::start(Config::ephemeral(), &["alice", "bob"]).await;
    let (alice, bob) = (scene.members[0].clone(), scene.members[1].clone());
    let proxy = Proxy::start(scene.node.media_address()).await;
    let (old_peer, old_leg) = publish_peer(&scene, &alice, Some(&proxy)).await;
    old_peer.start_media(SendPlan::default());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The old peer crashes, and the new one publishes from the same address.
    proxy.retire_peer();
    old_peer.stop_media();
    let new_peer = Publisher::new().await.expect("publisher");
    let offer = new_peer.offer().await.expect("offer");
    let (new_leg, answer) = scene.offer_ok(&alice, &offer, None).await;
    let rejected_before = stats(&scene.node).await.rejected_datagrams;
    new_peer
        .apply_answer(proxy.rewrite_answer(&answer))
        .await
        .expect("apply answer");
    let connected_beside_old = new_peer
        .wait_connected(Duration::from_secs(5))
        .await
        .is_ok();
    let rejected = stats(&scene.node).await.rejected_datagrams - rejected_before;
    let old_leg_open = scene.snapshot().await.room_legs.contains(&old_leg);

    // Once the old leg is gone, a third peer gets through on the same address, which shows
    // that the proxy is not what stops the second one.
    let reply = scene.delete_leg(&alice, &old_leg).await;
    assert_eq!(reply.status, 204, "delete the old leg: {}", reply.text);
    proxy.retire_peer();
    let third_peer = Publisher::new().await.expect("publisher");
    let offer = third_peer.offer().await.expect("offer");
    let (third_leg, answer) = scene.offer_ok(&alice, &offer, None).await;
    third_peer
        .apply_answer(proxy.rewrite_answer(&answer))
        .await
        .expect("apply answer");
    let third_connected = third_peer.wait_connected(Duration::from_secs(5)).await;
    assert!(
        third_connected.is_ok(),
        "expected a new leg to connect through the proxy once the old leg was closed"
    );
    third_peer.start_media(SendPlan::default());
    let (view, _) = subscribe_peer(&scene, &bob, &third_leg, None).await;
    assert!(
        receives_more(&view, Kind::Video, 10, Duration::from_secs(3)).await,
        "expected bob to receive alice's leg on the reused address"
    );

    assert!(
        connected_beside_old,
        "expected alice's new leg {new_leg} to connect from the address of her vanished leg \
         {old_leg} (still open: {old_leg_open}), but the node dropped {rejected} of its \
         datagrams as rejected"
    );
    view.close().await;
    third_peer.close().await;
    new_peer.close().await;
    old_peer.close().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_leg() {
    let _shared = EXCLUSIVE.read().await;
    let mut config = Config::ephemeral();
    config.shutdown.drain_delay_ms = 1_000;
    let scene = Scene::start(config, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (
        scene.members[0].clone(),
        scene.members[1].clone(),
        scene.members[2].clone(),
    );

    // Alice publishes media to Bob. Carol's subscriber peer is still connecting, and Carol's
    // own publisher leg has no peer at all.
    let (publisher, publisher_leg) = publish_peer(&scene, &alice, None).await;
    publisher.start_media(SendPlan::default());
    let proxy = Proxy::start(scene.node.media_address()).await;
    let (bob_view, bob_leg) = subscribe_peer(&scene, &bob, &publisher_leg, Some(&proxy)).await;
    assert!(
        receives_more(&bob_view, Kind::Video, 10, CONNECT_TIMEOUT).await,
        "expected alice's video to reach bob"
    );
    let carol_view = Subscriber::new().await.expect("subscriber");
    let offer = carol_view.offer().await.expect("offer");
    let (carol_leg, carol_answer) = scene.offer_ok(&carol, &offer, Some(&publisher_leg)).await;
    let (peerless_leg, _) = scene.offer_ok(&carol, PUBLISH_AV, None).await;
    let legs = [&publisher_leg, &bob_leg, &carol_leg, &peerless_leg];
    assert_eq!(scene.snapshot().await.media_legs, 4, "expected four legs");

    let Scene {
        node,
        api,
        admin,
        conversation,
        ..
    } = scene;
    let media = node.media().clone();
    let state = node.state().clone();
    let base = node.http_url();
    let shutdown = tokio::spawn(node.shutdown());
    carol_view
        .apply_answer(carol_answer)
        .await
        .expect("apply answer");

    // While the node drains, new work is rejected and reads still work.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = format!("/conversations/{conversation}/rtc");
    let reply = api
        .post(
            &alice.token,
            &path,
            json!({ "from": alice.id, "body": { "offer": { "sdp": PUBLISH_AV } } }),
        )
        .await;
    assert_problem(
        &reply,
        503,
        "system:error:draining",
        "publish while draining",
    );
    let reply = api
        .post(
            &alice.token,
            &format!("/conversations/{conversation}/events"),
            json!({ "type": "video:mute:on", "from": alice.id }),
        )
        .await;
    assert_problem(&reply, 503, "system:error:draining", "mute while draining");
    let reply = api.get(&admin, &path).await;
    assert_eq!(reply.status, 200, "GET /rtc while draining: {}", reply.text);
    assert_eq!(
        stats_of(&media).await.map(|stats| stats.legs),
        Some(4),
        "expected every leg open while the node drains"
    );

    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task")
        .expect("shutdown");
    assert!(
        stats_of(&media).await.is_none(),
        "expected the media worker stopped"
    );
    for leg in legs {
        assert_eq!(
            terminate_reasons(state.registry(), &conversation, leg),
            vec!["shutdown".to_owned()],
            "expected one rtc:terminate with reason shutdown for {leg}"
        );
    }
    let remaining = state
        .registry()
        .conversation(&ConversationId::from(conversation.as_str()))
        .expect("conversation")
        .legs;
    assert!(remaining.is_empty(), "expected no leg in the room");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "expected the HTTP listener closed"
    );

    // The node sends a DTLS close_notify to Bob's peer. The `webrtc` 0.21.1 client keeps
    // reporting itself connected after it, so only the relay can see the alert.
    let alerted = wait_until(Duration::from_secs(2), || {
        proxy.alerts_to_peer.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(alerted, "expected a DTLS alert to bob's peer at shutdown");
    bob_view.close().await;
    carol_view.close().await;
    publisher.close().await;
}

async fn stats_of(media: &media::MediaHandle) -> Option<MediaStats> {
    tokio::time::timeout(Duration::from_secs(5), media.stats())
        .await
        .ok()
        .and_then(Result::ok)
}

// ---------------------------------------------------------------------------------------------
// Many cycles of publishing, subscribing and closing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leg_cycles_leave_nothing() {
    let _shared = EXCLUSIVE.read().await;
    let mut scene = Scene::start(Config::ephemeral(), &[]).await;

    // Real peers: the publisher leg ends by request, by its member leaving, or by a hang-up.
    for cycle in 0..6 {
        let publisher_member = scene.join(&format!("p{cycle}")).await;
        let subscriber_member = scene.join(&format!("s{cycle}")).await;
        scene.members = vec![publisher_member.clone(), subscriber_member.clone()];
        let (publisher, publisher_leg) = publish_peer(&scene, &publisher_member, None).await;
        publisher.start_media(SendPlan::default());
        let (view, subscriber_leg) =
            subscribe_peer(&scene, &subscriber_member, &publisher_leg, None).await;
        assert!(
            receives_more(&view, Kind::Video, 5, CONNECT_TIMEOUT).await,
            "cycle {cycle}: expected video"
        );
        let expected = match cycle % 3 {
            0 => {
                let reply = scene.delete_leg(&publisher_member, &publisher_leg).await;
                assert_eq!(reply.status, 204, "cycle {cycle}: delete: {}", reply.text);
                "requested"
            }
            1 => {
                scene.leave(&publisher_member).await;
                "member_left"
            }
            _ => {
                publisher.close().await;
                "peer_closed"
            }
        };
        let snapshot = scene.wait_for_legs(0, Duration::from_secs(5)).await;
        assert_eq!(snapshot.media_legs, 0, "cycle {cycle}: media legs");
        assert!(snapshot.room_legs.is_empty(), "cycle {cycle}: room legs");
        assert_eq!(
            scene.terminate_reasons(&publisher_leg),
            vec![expected.to_owned()],
            "cycle {cycle}: expected one rtc:terminate for the publisher leg"
        );
        assert_eq!(
            scene.terminate_reasons(&subscriber_leg),
            vec!["publisher_closed".to_owned()],
            "cycle {cycle}: expected one rtc:terminate for the subscriber leg"
        );
        view.close().await;
        publisher.close().await;
    }
    let before = stats(&scene.node).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = stats(&scene.node).await;
    assert_eq!(
        after.router.received_packets, before.router.received_packets,
        "expected no packet routed after every leg closed"
    );
    assert_eq!(after.legs, 0, "expected no leg in the media worker");
    assert_eq!(after.tracks, 0, "expected no track in the router");
    assert_eq!(
        after.subscriptions, 0,
        "expected no subscription in the router"
    );

    // Offers without peers: publish, subscribe, then end the publisher leg, or the subscriber
    // leg and then the publisher leg.
    let publisher_member = scene.join("peerless-publisher").await;
    let subscriber_member = scene.join("peerless-subscriber").await;
    for cycle in 0..30 {
        let (publisher_leg, _) = scene.offer_ok(&publisher_member, PUBLISH_AV, None).await;
        let (subscriber_leg, _) = scene
            .offer_ok(&subscriber_member, RECEIVE_ONLY, Some(&publisher_leg))
            .await;
        let leg = if cycle % 2 == 0 {
            &publisher_leg
        } else {
            &subscriber_leg
        };
        let member = if cycle % 2 == 0 {
            &publisher_member
        } else {
            &subscriber_member
        };
        let reply = scene.delete_leg(member, leg).await;
        assert_eq!(reply.status, 204, "cycle {cycle}: delete: {}", reply.text);
        if cycle % 2 == 1 {
            let reply = scene.delete_leg(&publisher_member, &publisher_leg).await;
            assert_eq!(reply.status, 204, "cycle {cycle}: delete: {}", reply.text);
        }
    }
    let snapshot = scene.wait_for_legs(0, Duration::from_secs(3)).await;
    assert_eq!(
        snapshot.media_legs, 0,
        "expected no leg in the media worker"
    );
    assert!(snapshot.room_legs.is_empty(), "expected no leg in the room");
    let opened = scene.count_events(EventType::RtcNew);
    let closed = scene.count_events(EventType::RtcTerminate);
    assert_eq!(opened, 72, "expected two legs a cycle");
    assert_eq!(
        closed, opened,
        "expected one rtc:terminate for each rtc:new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_memory_levels_off() {
    // Runs alone, so that the process's memory is this test's. The cycles go to the media
    // worker directly, because the room keeps every event in memory by design.
    let _exclusive = EXCLUSIVE.write().await;
    let (node, _) = start_node(Config::ephemeral()).await;
    let media = node.media();
    let cycle = async |index: usize| {
        let publisher = media::LegId(format!("LEG-P{index}"));
        let subscriber = media::LegId(format!("LEG-S{index}"));
        media
            .publish(
                publisher.clone(),
                PUBLISH_AV.to_owned(),
                media::MuteState::default(),
            )
            .await
            .expect("publish");
        media
            .subscribe(
                subscriber.clone(),
                publisher.clone(),
                RECEIVE_ONLY.to_owned(),
            )
            .await
            .expect("subscribe");
        if index % 2 == 1 {
            media.close_leg(subscriber).await.expect("close subscriber");
        }
        media.close_leg(publisher).await.expect("close publisher");
    };
    for index in 0..20 {
        cycle(index).await;
    }
    let resident_before = resident_kib();
    for index in 20..80 {
        cycle(index).await;
    }
    let resident_after = resident_kib();
    let stats = media.stats().await.expect("media stats");
    assert_eq!(stats.legs, 0, "expected no leg in the media worker");

    // An open leg takes roughly 120 KiB (an estimate from 40 open publisher legs), so leaked
    // legs would show at once.
    let growth = resident_after.saturating_sub(resident_before);
    assert!(
        growth < 1024,
        "expected resident memory to level off over 60 cycles, but it grew by {growth} KiB"
    );
    node.shutdown().await.expect("shutdown");
}
