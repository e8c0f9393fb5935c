//! Interop with an independent WebRTC implementation: aiortc (Python, with its own ICE, DTLS,
//! SRTP, and libvpx and libx264 through PyAV) publishes VP8 or H264 through a real node to a
//! second aiortc peer, which must decode the frames.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use switchboard::{Config, Node};

fn interop_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"))
}

/// Runs the aiortc script for one codec against a fresh node and returns its output line.
async fn interop(codec: &str) -> String {
    let python = interop_python();
    assert!(
        python.exists(),
        "{} not found: run scripts/setup-tests (or set INTEROP_PYTHON) to install aiortc",
        python.display()
    );
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/aiortc_interop.py");

    let node = Node::start(Config::ephemeral()).await.expect("start node");
    let token = node.admin_token(Duration::from_secs(600)).expect("token");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(node.http_url())
        .arg(&token)
        .args(["--codec", codec, "--frames", "60", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the aiortc script");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the aiortc script did not finish in 60 s")
        .expect("run the aiortc script");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "aiortc interop with {codec} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let stats = node.media().stats().await.expect("stats");
    assert!(stats.router.forwarded_packets > 0);
    node.shutdown().await.expect("shutdown");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_vp8_through_node_decodes() {
    let output = interop("vp8").await;
    assert!(output.contains("vp8 frames of 320x240 decoded"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_h264_through_node_decodes() {
    let output = interop("h264").await;
    assert!(
        output.contains("h264 frames of 320x240 decoded"),
        "{output}"
    );
}
