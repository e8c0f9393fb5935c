//! The unchanged Nexmo JavaScript SDK 4.1.0 against a real node, in real Chromium with one
//! browser per user. Through the SDK, four users join a video conversation over the realtime
//! API at `/rtc`, decode each other's video, mute and unmute, invite, leave, and see one
//! browser's crash end its member. Through the demo page's form, three users join and the page
//! shows their videos. Each test runs in a network namespace with only loopback.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{Value, json};
use switchboard::Node;

mod browser;
mod common;

use browser::{Browser, Chromedriver, run_isolated, step};
use common::Api;

/// Deadline of one wait for an SDK event inside a page.
const EVENT_WAIT_MS: u64 = 15_000;

/// Returns the settings of a node on loopback that serves the repository's demo page, with ICE
/// timeouts that close a vanished browser's legs within seconds.
fn node_config() -> switchboard::Config {
    let mut config = common::fast_config();
    config.demo.dir = browser::demo_dir();
    config
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

    async fn run(&self, action: &str, body: &str, args: Value) -> Value {
        self.browser.run(action, body, args).await
    }

    /// Waits for the application-level `member:invited` of this user, then joins the
    /// conversation that the SDK loaded for the invitation.
    async fn accept_invitation(&self) {
        self.expect_event("application", "member:invited", &self.name)
            .await;
        self.run(
            "join the invitation",
            "const conversation = sbt.application.conversations[sbt.invitedConversationId];\n\
             if (!conversation) throw new Error('no conversation for the invitation');\n\
             sbt.watch(conversation);\n\
             await conversation.join();",
            json!({}),
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

    async fn print_video_report(&self) {
        let report = self
            .run("video report", "return sbt.videoReport();", json!({}))
            .await;
        println!("{}: video statistics: {report}", self.name);
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
    // A user token reads only conversations its user is an INVITED or JOINED member of, so
    // B and C enter by invitation.
    a.run(
        "join and invite",
        "const conversation = sbt.application.conversations[args.cid];\n\
         sbt.watch(conversation);\n\
         await conversation.join();\n\
         await conversation.invite({ user_name: 'B' });\n\
         await conversation.invite({ user_name: 'C' });",
        json!({ "cid": conversation }),
    )
    .await;
    tokio::join!(b.accept_invitation(), c.accept_invitation());
    step(started, "A, B and C joined");
    tokio::join!(a.enable_video(), b.enable_video(), c.enable_video());
    step(started, "A, B and C enabled video");
    tokio::join!(
        a.expect_live_video_of(&["B", "C"]),
        b.expect_live_video_of(&["A", "C"]),
        c.expect_live_video_of(&["A", "B"]),
    );
    step(started, "each of A, B and C decodes the other two");
    for user in [&a, &b, &c] {
        user.print_video_report().await;
    }

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
    d.accept_invitation().await;
    d.enable_video().await;
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

    for user in [&b, &c, &d] {
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

/// A user of the demo page, driven through its form and buttons.
struct DemoUser {
    name: String,
    browser: Browser,
}

impl DemoUser {
    async fn open(driver: &Chromedriver, origin: &str, name: &str) -> DemoUser {
        let browser = Browser::launch(driver, name).await;
        browser.goto(&format!("{origin}/")).await;
        browser.install_helpers().await;
        let user = DemoUser {
            name: name.to_owned(),
            browser,
        };
        user.wait_until(
            "the Join button to be enabled",
            "!document.getElementById('join-button').disabled",
        )
        .await;
        user
    }

    /// Waits until the JavaScript `condition` is true in the page, and fails with the page's
    /// status line and the demo's recorded events when it does not in time.
    async fn wait_until(&self, label: &str, condition: &str) {
        let body = format!(
            "await sbt.waitFor(args.label, () => {condition}, args.ms);\n\
             return null;"
        );
        let result = self
            .browser
            .try_run(&body, json!({ "label": label, "ms": EVENT_WAIT_MS }))
            .await;
        if let Err(error) = result {
            let state = self
                .browser
                .try_run(
                    "return { status: document.getElementById('status').textContent,\n\
                     events: window.switchboardDemo && window.switchboardDemo.events };",
                    json!({}),
                )
                .await;
            let state = state.map_or_else(|error| error, |state| state.to_string());
            panic!("{}: {error}\ndemo page state: {state}", self.name);
        }
    }

    async fn type_into(&self, id: &str, text: &str) {
        let field = self
            .browser
            .client()
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|error| panic!("{}: no #{id}: {error}", self.name));
        field.clear().await.expect("clear the field");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("{}: typing into #{id} failed: {error}", self.name));
    }

    async fn click(&self, id: &str) {
        self.browser
            .client()
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|error| panic!("{}: no #{id}: {error}", self.name))
            .click()
            .await
            .unwrap_or_else(|error| panic!("{}: clicking #{id} failed: {error}", self.name));
    }

    /// Types the user name and the conversation name, and clicks Join.
    async fn join(&self, conversation: &str) {
        self.type_into("user-name", &self.name).await;
        self.type_into("conversation-name", conversation).await;
        self.click("join-button").await;
    }
}

/// Returns `test-artifacts` in the Cargo target directory, where test runs keep screenshots.
fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts")
}

#[test]
fn demo_page_grid() {
    run_isolated("demo_page_grid", demo_page_grid_scenario);
}

async fn demo_page_grid_scenario() {
    let started = Instant::now();
    let node = Node::start(node_config()).await.expect("start node");
    let origin = node.http_url();
    let driver = Chromedriver::start().await;
    let (alice, bob, carol) = tokio::join!(
        DemoUser::open(&driver, &origin, "alice"),
        DemoUser::open(&driver, &origin, "bob"),
        DemoUser::open(&driver, &origin, "carol"),
    );
    step(started, "three demo pages loaded");

    // The node's token service creates the conversation for the first user who names it and
    // makes each user a member, so that the page can load and join it.
    alice.join("standup").await;
    alice
        .wait_until(
            "the local camera",
            "document.getElementById('local-video').videoWidth > 0",
        )
        .await;
    tokio::join!(bob.join("standup"), carol.join("standup"));
    step(started, "alice, bob and carol pressed Join");

    // Every page shows its own camera and the two others, playing.
    let grid_is_live = "Array.from(document.querySelectorAll('#videos video')).filter(\n\
                          (video) => video.videoWidth > 0 && video.currentTime > 0.5).length === 3";
    for user in [&alice, &bob, &carol] {
        user.wait_until("three playing videos in the grid", grid_is_live)
            .await;
    }
    step(started, "each page plays three videos");

    let regions = alice
        .browser
        .run(
            "video regions",
            "const scale = window.devicePixelRatio;\n\
             return Array.from(document.querySelectorAll('#videos video')).map((video) => {\n\
               const rect = video.getBoundingClientRect();\n\
               return { name: video.dataset.memberName || 'local',\n\
                 x: Math.round(rect.x * scale), y: Math.round(rect.y * scale),\n\
                 width: Math.round(rect.width * scale), height: Math.round(rect.height * scale) };\n\
             });",
            json!({}),
        )
        .await;
    let png_bytes = alice.browser.screenshot().await;
    let screenshot = Screenshot::decode(&png_bytes);
    let regions = regions.as_array().expect("a list of video regions");
    assert_eq!(regions.len(), 3, "alice's grid: {regions:?}");
    for region in regions {
        let luma = screenshot.luma_in(region);
        println!("alice's screenshot, video of {}: {luma:?}", region["name"]);
        assert!(
            luma.bright_fraction > 0.1,
            "the video of {} is black in alice's screenshot: {luma:?}",
            region["name"]
        );
        assert!(
            luma.deviation > 10.0,
            "the video of {} is one flat colour in alice's screenshot: {luma:?}",
            region["name"]
        );
    }

    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).expect("create the test artifacts directory");
    let path = dir.join("demo-grid.png");
    std::fs::write(&path, &png_bytes).expect("write the screenshot");
    println!("saved alice's grid to {}", path.display());
    if std::env::var_os("SWITCHBOARD_UPDATE_SCREENSHOT").is_some() {
        let docs = browser::repo_root().join("docs/demo-grid.png");
        std::fs::write(&docs, &png_bytes).expect("write docs/demo-grid.png");
        println!("updated {}", docs.display());
    }

    for user in [&alice, &bob, &carol] {
        let failures = user
            .browser
            .run(
                "the demo's failure events",
                "return window.switchboardDemo.events.filter((event) =>\n\
                   event.type === 'unhandledrejection' || event.type.endsWith(':failed'));",
                json!({}),
            )
            .await;
        assert_eq!(
            failures,
            json!([]),
            "{}: failures on the demo page",
            user.name
        );
    }

    drop((alice, bob, carol));
    drop(driver);
    node.shutdown().await.expect("shut down the node");
    step(started, "done");
}

/// Luminance statistics of one region of a screenshot.
#[derive(Debug)]
struct Luma {
    deviation: f64,
    /// Share of pixels brighter than near-black (luma above 40 of 255).
    bright_fraction: f64,
}

/// A decoded RGBA screenshot.
struct Screenshot {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
}

impl Screenshot {
    fn decode(png_bytes: &[u8]) -> Screenshot {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
        let mut reader = decoder.read_info().expect("read the PNG header");
        let mut buffer = vec![0; reader.output_buffer_size().expect("PNG buffer size")];
        let frame = reader.next_frame(&mut buffer).expect("decode the PNG");
        assert_eq!(
            frame.color_type,
            png::ColorType::Rgba,
            "the screenshot decodes to {:?}",
            frame.color_type
        );
        assert_eq!(frame.bit_depth, png::BitDepth::Eight);
        buffer.truncate(frame.buffer_size());
        Screenshot {
            width: frame.width as usize,
            height: frame.height as usize,
            rgba: buffer,
        }
    }

    /// Statistics of the region `{x, y, width, height}` in pixels, clipped to the image.
    fn luma_in(&self, region: &Value) -> Luma {
        let coordinate = |key: &str| region[key].as_u64().unwrap_or(0) as usize;
        let left = coordinate("x").min(self.width);
        let top = coordinate("y").min(self.height);
        let right = (left + coordinate("width")).min(self.width);
        let bottom = (top + coordinate("height")).min(self.height);
        assert!(
            right > left && bottom > top,
            "the video region {region} lies outside the {}x{} screenshot",
            self.width,
            self.height
        );
        let mut values = Vec::with_capacity((right - left) * (bottom - top));
        for y in top..bottom {
            for x in left..right {
                let offset = (y * self.width + x) * 4;
                let [r, g, b] = [0, 1, 2].map(|channel| f64::from(self.rgba[offset + channel]));
                // ITU-R BT.601 luma weights.
                values.push(0.299 * r + 0.587 * g + 0.114 * b);
            }
        }
        let count = values.len() as f64;
        let mean = values.iter().sum::<f64>() / count;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
        let bright = values.iter().filter(|&&v| v > 40.0).count() as f64;
        Luma {
            deviation: variance.sqrt(),
            bright_fraction: bright / count,
        }
    }
}
