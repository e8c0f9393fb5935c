//! The unchanged Nexmo JavaScript SDK 4.1.0 against a real node, in real Chromium: four users,
//! each in a browser of its own, create and join a video conversation through the SDK's
//! realtime API at `/rtc`, see and hear each other, mute and unmute, invite, leave, and
//! survive one browser's crash. Each test runs in a network namespace with only loopback.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::Node;

mod browser;
mod common;

use browser::{Browser, Chromedriver, run_isolated, step};
use common::Api;

/// Deadline of one wait for an SDK event inside a page.
const EVENT_WAIT_MS: u64 = 15_000;

/// A node on loopback whose ICE timeouts close a vanished browser's legs within seconds.
fn node_config() -> switchboard::Config {
    common::fast_config()
}

/// A user with a logged-in SDK in a browser of its own.
struct SdkUser {
    name: String,
    browser: Browser,
}

impl SdkUser {
    /// Creates the user over REST, opens the node's page in a new browser and logs in.
    async fn open(
        node: &Node,
        api: &Api,
        admin: &str,
        driver: &Chromedriver,
        name: &str,
    ) -> SdkUser {
        api.post_ok(admin, "/users", json!({ "name": name })).await;
        let token = node
            .user_token(name, Duration::from_secs(600))
            .expect("user token");
        let browser = Browser::launch(driver, name).await;
        browser::open_sdk_page(&browser, &node.http_url()).await;
        let me = browser
            .run(
                "login",
                "return sbt.login(args.origin, args.token);",
                json!({ "origin": node.http_url(), "token": token }),
            )
            .await;
        assert_eq!(me["name"], name, "{name}: application.me after login: {me}");
        SdkUser {
            name: name.to_owned(),
            browser,
        }
    }

    async fn run(&self, what: &str, body: &str, args: Value) -> Value {
        self.browser.run(what, body, args).await
    }

    async fn join(&self, conversation: &str) {
        self.run(
            "join",
            "const conversation = await sbt.application.getConversation(args.cid);\n\
             sbt.watch(conversation);\n\
             await conversation.join();",
            json!({ "cid": conversation }),
        )
        .await;
    }

    async fn enable_video(&self) {
        self.run(
            "media.enable",
            "await sbt.conversation.media.enable({ video: 'both', audio: true });",
            json!({}),
        )
        .await;
    }

    /// Waits until this page's SDK fired `media:stream:on` for a remote stream on the Member of
    /// each of `others`, then until each of their videos keeps decoding.
    async fn expect_live_video_of(&self, others: &[&str]) {
        for other in others {
            self.run(
                &format!("media:stream:on from {other}"),
                "await sbt.waitForEvent('member', 'media:stream:on', args.other, args.ms, true);",
                json!({ "other": other, "ms": EVENT_WAIT_MS }),
            )
            .await;
        }
        for other in others {
            let frames = self
                .run(
                    &format!("decoded video frames of {other}"),
                    "const first = await sbt.framesGrow(args.other, args.ms);\n\
                     const second = await sbt.framesGrow(args.other, args.ms);\n\
                     return { first, second };",
                    json!({ "other": other, "ms": EVENT_WAIT_MS }),
                )
                .await;
            assert_eq!(
                frames["second"]["after"]["legs"], 1,
                "{}: receive peer connections for {other}: {frames}",
                self.name
            );
            println!("{}: frames of {other} grow: {frames}", self.name);
        }
        let videos = self
            .run("video elements", "return sbt.videoElements();", json!({}))
            .await;
        for other in others {
            let video = videos
                .as_array()
                .and_then(|list| list.iter().find(|video| video["member"] == *other))
                .unwrap_or_else(|| panic!("{}: no <video> for {other}: {videos}", self.name));
            assert!(
                video["width"].as_u64().unwrap_or(0) > 0,
                "{}: the <video> of {other} shows no frame: {video}",
                self.name
            );
        }
    }

    async fn expect_event(&self, scope: &str, kind: &str, about: &str) {
        self.run(
            &format!("{scope} event {kind} about {about}"),
            "await sbt.waitForEvent(args.scope, args.kind, args.about, args.ms);",
            json!({ "scope": scope, "kind": kind, "about": about, "ms": EVENT_WAIT_MS }),
        )
        .await;
    }
}

/// Checks, in `viewer`'s page, that the publisher's muted video stops reaching it while its
/// audio goes on. The first second after the mute event lets frames already on their way
/// arrive.
async fn expect_video_muted(viewer: &SdkUser, publisher: &str) -> u64 {
    let sample = viewer
        .run(
            &format!("video of {publisher} stops after its mute"),
            "await sbt.waitForEvent('conversation', 'video:mute:on', args.publisher, args.ms);\n\
             await sbt.sleep(1000);\n\
             const first = await sbt.inbound(args.publisher);\n\
             await sbt.sleep(1000);\n\
             const second = await sbt.inbound(args.publisher);\n\
             return { first, second };",
            json!({ "publisher": publisher, "ms": EVENT_WAIT_MS }),
        )
        .await;
    println!("{}: {publisher} muted its video: {sample}", viewer.name);
    let first = &sample["first"];
    let second = &sample["second"];
    assert_eq!(
        first["frames_decoded"], second["frames_decoded"],
        "{}: frames of {publisher} kept arriving one second after video:mute:on: {sample}",
        viewer.name
    );
    assert!(
        second["audio_packets"].as_u64() > first["audio_packets"].as_u64(),
        "{}: the audio of {publisher} stopped with its video mute: {sample}",
        viewer.name
    );
    second["frames_decoded"].as_u64().unwrap_or(0)
}

/// Checks, in `viewer`'s page, that the publisher's video frames grow again within a second of
/// the `video:mute:off` event.
async fn expect_video_unmuted(viewer: &SdkUser, publisher: &str, frames_while_muted: u64) {
    let sample = viewer
        .run(
            &format!("video of {publisher} resumes after its unmute"),
            "await sbt.waitForEvent('conversation', 'video:mute:off', args.publisher, args.ms);\n\
             return await sbt.waitFor(\n\
               `decoded frames of ${args.publisher} past ${args.frames} after video:mute:off`,\n\
               async () => {\n\
                 const now = await sbt.inbound(args.publisher);\n\
                 return now.frames_decoded > args.frames ? now : null;\n\
               },\n\
               1000);",
            json!({ "publisher": publisher, "ms": EVENT_WAIT_MS, "frames": frames_while_muted }),
        )
        .await;
    println!("{}: {publisher} unmuted its video: {sample}", viewer.name);
}

#[test]
fn sdk_video_conversation() {
    run_isolated("sdk_video_conversation", sdk_video_conversation_scenario);
}

async fn sdk_video_conversation_scenario() {
    let started = Instant::now();
    let node = Node::start(node_config()).await.expect("start node");
    let admin = node
        .admin_token(Duration::from_secs(600))
        .expect("admin token");
    let api = Api::new(&node);
    let driver = Chromedriver::start().await;
    step(started, "node and chromedriver started");

    let (a, b, c, d) = tokio::join!(
        SdkUser::open(&node, &api, &admin, &driver, "A"),
        SdkUser::open(&node, &api, &admin, &driver, "B"),
        SdkUser::open(&node, &api, &admin, &driver, "C"),
        SdkUser::open(&node, &api, &admin, &driver, "D"),
    );
    step(started, "four browsers logged in");

    let conversation = a
        .run(
            "newConversation",
            "const conversation = await sbt.application.newConversation({\n\
               name: 'browser-sdk', display_name: 'Browser SDK',\n\
               properties: { video: true },\n\
             });\n\
             return conversation.id;",
            json!({}),
        )
        .await;
    let conversation = conversation.as_str().expect("conversation id").to_owned();
    tokio::join!(
        a.join(&conversation),
        b.join(&conversation),
        c.join(&conversation)
    );
    step(started, "A, B and C joined");
    tokio::join!(a.enable_video(), b.enable_video(), c.enable_video());
    step(started, "A, B and C enabled video");
    tokio::join!(
        a.expect_live_video_of(&["B", "C"]),
        b.expect_live_video_of(&["A", "C"]),
        c.expect_live_video_of(&["A", "B"]),
    );
    step(started, "each of A, B and C decodes the other two");

    a.run(
        "mute video",
        "await sbt.conversation.media.mute(true, false, true);",
        json!({}),
    )
    .await;
    let (frames_at_b, frames_at_c) =
        tokio::join!(expect_video_muted(&b, "A"), expect_video_muted(&c, "A"));
    step(started, "A's video stopped at B and C, its audio went on");
    a.run(
        "unmute video",
        "await sbt.conversation.media.mute(false, false, true);",
        json!({}),
    )
    .await;
    tokio::join!(
        expect_video_unmuted(&b, "A", frames_at_b),
        expect_video_unmuted(&c, "A", frames_at_c),
    );
    step(started, "A's video resumed at B and C");

    a.run(
        "invite D",
        "await sbt.conversation.invite({ user_name: 'D' });",
        json!({}),
    )
    .await;
    d.expect_event("application", "member:invited", "D").await;
    d.run(
        "join the invitation",
        "const conversation = sbt.application.conversations[sbt.invitedConversationId];\n\
         if (!conversation) throw new Error('no conversation for the invitation');\n\
         sbt.watch(conversation);\n\
         await conversation.join();\n\
         await conversation.media.enable({ video: 'both', audio: true });",
        json!({}),
    )
    .await;
    step(started, "D accepted the invitation and enabled video");
    for user in [&a, &b, &c] {
        user.expect_event("conversation", "member:joined", "D")
            .await;
    }
    tokio::join!(
        a.expect_live_video_of(&["D"]),
        b.expect_live_video_of(&["D"]),
        c.expect_live_video_of(&["D"]),
        d.expect_live_video_of(&["A", "B", "C"]),
    );
    step(started, "everyone decodes D, and D decodes everyone");

    c.run("leave", "await sbt.conversation.leave();", json!({}))
        .await;
    for user in [&a, &b, &d] {
        user.expect_event("conversation", "member:left", "C").await;
        user.expect_event("member", "media:stream:off", "C").await;
    }
    step(started, "A, B and D saw C leave");

    let killed = a.browser.kill();
    assert!(killed > 0, "no Chromium process of A found to kill");
    for user in [&b, &d] {
        user.expect_event("member", "media:stream:off", "A").await;
        user.expect_event("conversation", "member:left", "A").await;
    }
    step(
        started,
        "B and D saw A's streams end and A leave after its browser died",
    );

    for user in [&b, &d] {
        let errors = user
            .run("page errors", "return sbt.errors;", json!({}))
            .await;
        assert_eq!(errors, json!([]), "{}: errors in the page", user.name);
    }
    drop((a, b, c, d));
    drop(driver);
    node.shutdown().await.expect("shut down the node");
    step(started, "done");
}
