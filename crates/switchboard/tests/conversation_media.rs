//! A real node end to end: members join a conversation over REST, publish and subscribe with
//! real WebRTC peers, mute through the event API, and leave.

use std::time::{Duration, Instant};

use client::media::vp8_starts_keyframe;
use client::{Kind, Publisher, SendPlan, Subscriber, wait_until};
use serde_json::{Value, json};
use switchboard::{Config, Node};

mod common;

use common::{Api, CONNECT_TIMEOUT as TIMEOUT};

struct Member {
    id: String,
    token: String,
    publisher: Publisher,
    leg: String,
}

async fn join_and_publish(
    api: &Api,
    node: &Node,
    admin: &str,
    conversation: &str,
    name: &str,
) -> Member {
    api.post_ok(admin, "/users", json!({ "name": name })).await;
    let token = node
        .user_token(name, Duration::from_secs(600))
        .expect("user token");
    let member = api
        .post_ok(
            &token,
            &format!("/conversations/{conversation}/members"),
            json!({ "user_name": name, "action": "join", "channel": { "type": "app" } }),
        )
        .await;
    let id = member["id"].as_str().expect("member id").to_owned();
    assert_eq!(member["state"], "JOINED");

    let publisher = Publisher::new().await.expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let reply = api
        .post_ok(
            &token,
            &format!("/conversations/{conversation}/rtc"),
            json!({ "from": id, "body": { "offer": { "type": "offer", "sdp": offer } } }),
        )
        .await;
    let leg = reply["rtc_id"].as_str().expect("rtc_id").to_owned();
    let answer = reply["body"]["answer"]["sdp"].as_str().expect("answer");
    publisher
        .apply_answer(answer.to_owned())
        .await
        .expect("apply answer");
    publisher
        .wait_connected(TIMEOUT)
        .await
        .expect("publisher connects");
    Member {
        id,
        token,
        publisher,
        leg,
    }
}

async fn subscribe(
    api: &Api,
    conversation: &str,
    member: &Member,
    publisher_leg: &str,
) -> Subscriber {
    let subscriber = Subscriber::new().await.expect("subscriber");
    let offer = subscriber.offer().await.expect("offer");
    let reply = api
        .post_ok(
            &member.token,
            &format!("/conversations/{conversation}/rtc"),
            json!({
                "from": member.id,
                "body": { "offer": { "type": "offer", "sdp": offer }, "subscribe": { "rtc_id": publisher_leg } }
            }),
        )
        .await;
    let answer = reply["body"]["answer"]["sdp"].as_str().expect("answer");
    subscriber
        .apply_answer(answer.to_owned())
        .await
        .expect("apply answer");
    subscriber
        .wait_connected(TIMEOUT)
        .await
        .expect("subscriber connects");
    subscriber
}

fn event_types(events: &Value) -> Vec<String> {
    let list = events
        .as_array()
        .or_else(|| events["_embedded"]["events"].as_array())
        .or_else(|| events["events"].as_array())
        .unwrap_or_else(|| panic!("no event list in {events}"));
    list.iter()
        .filter_map(|event| event["type"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_hear_mute_and_leave() {
    let node = Node::start(Config::ephemeral()).await.expect("start node");
    let admin = node.admin_token(Duration::from_secs(600)).expect("admin");
    let api = Api::new(&node);
    let conversation = api
        .post_ok(
            &admin,
            "/conversations",
            json!({ "name": "standup", "properties": { "video": true } }),
        )
        .await["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();

    let mut members = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let member = join_and_publish(&api, &node, &admin, &conversation, name).await;
        member.publisher.start_media(SendPlan::default());
        members.push(member);
    }
    // views[receiver][sender]: what `receiver` gets of `sender`.
    let mut views: Vec<Vec<Option<Subscriber>>> = Vec::new();
    for receiver in &members {
        let mut row = Vec::new();
        for sender in &members {
            if sender.id == receiver.id {
                row.push(None);
            } else {
                row.push(Some(
                    subscribe(&api, &conversation, receiver, &sender.leg).await,
                ));
            }
        }
        views.push(row);
    }
    let view = |receiver: usize, sender: usize| -> &Subscriber {
        views[receiver][sender]
            .as_ref()
            .expect("a view of another member")
    };
    for receiver in 0..3 {
        for sender in 0..3 {
            if receiver != sender {
                assert!(
                    wait_until(TIMEOUT, || view(receiver, sender).count(Kind::Video) >= 15
                        && view(receiver, sender).count(Kind::Audio) >= 25)
                    .await,
                    "member {receiver} does not receive member {sender}"
                );
            }
        }
    }

    // Alice mutes her camera through the event API.
    api.post_ok(
        &members[0].token,
        &format!("/conversations/{conversation}/events"),
        json!({ "type": "video:mute:on", "from": members[0].id, "body": {} }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let bob_video_at_mute = view(1, 0).count(Kind::Video);
    let bob_audio_at_mute = view(1, 0).count(Kind::Audio);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        view(1, 0).count(Kind::Video),
        bob_video_at_mute,
        "alice's video reached bob while muted"
    );
    assert!(
        view(1, 0).count(Kind::Audio) > bob_audio_at_mute + 20,
        "alice's audio must go on while her video is muted"
    );
    let requests_before = members[0].publisher.keyframe_requests();
    api.post_ok(
        &members[0].token,
        &format!("/conversations/{conversation}/events"),
        json!({ "type": "video:mute:off", "from": members[0].id, "body": {} }),
    )
    .await;
    assert!(
        wait_until(TIMEOUT, || view(1, 0).count(Kind::Video)
            > bob_video_at_mute + 5)
        .await,
        "alice's video does not come back after unmute"
    );
    assert!(members[0].publisher.keyframe_requests() > requests_before);
    let video: Vec<_> = view(1, 0)
        .received()
        .into_iter()
        .filter(|packet| packet.kind == Kind::Video)
        .collect();
    assert!(vp8_starts_keyframe(&video[bob_video_at_mute].payload));
    for pair in video.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "bob sees a sequence gap in alice's video"
        );
    }

    let events = api
        .get_ok(&admin, &format!("/conversations/{conversation}/events"))
        .await;
    let types = event_types(&events);
    assert!(
        types.iter().any(|kind| kind == "video:mute:on"),
        "{types:?}"
    );
    assert!(
        types.iter().any(|kind| kind == "video:mute:off"),
        "{types:?}"
    );
    assert!(types.iter().any(|kind| kind == "member:media"), "{types:?}");

    // Carol leaves: her legs end, and nobody receives her any more.
    let status = api
        .delete(
            &members[2].token,
            &format!("/conversations/{conversation}/members/{}", members[2].id),
        )
        .await
        .status;
    assert!((200..300).contains(&status), "leaving failed with {status}");
    // Left: alice's and bob's publisher legs, and their views of each other.
    let deadline = Instant::now() + TIMEOUT;
    let mut legs = usize::MAX;
    while Instant::now() < deadline {
        legs = node.media().stats().await.expect("stats").legs;
        if legs == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        legs, 4,
        "carol's legs and the legs receiving her were not all closed"
    );
    let carol = api
        .get_ok(
            &admin,
            &format!("/conversations/{conversation}/members/{}", members[2].id),
        )
        .await;
    assert_eq!(carol["state"], "LEFT");
    let events = api
        .get_ok(&admin, &format!("/conversations/{conversation}/events"))
        .await;
    let types = event_types(&events);
    assert!(types.iter().any(|kind| kind == "member:left"), "{types:?}");
    assert!(
        types.iter().filter(|kind| *kind == "rtc:terminate").count() >= 5,
        "carol's publisher leg, her two subscriber legs and the two legs receiving her: {types:?}"
    );

    for member in &members {
        member.publisher.close().await;
    }
    node.shutdown().await.expect("shutdown");
}
