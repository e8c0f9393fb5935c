//! Interop with an independent WebRTC implementation: aiortc (Python, with its own ICE, DTLS,
//! SRTP and libvpx through PyAV) publishes VP8 through a real node to a second aiortc peer,
//! which must decode the frames.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_and_aiortc_decodes() {
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
        .args(["--frames", "60", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the aiortc script");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the aiortc script did not finish in 60 s")
        .expect("run the aiortc script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "aiortc interop failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("frames of 320x240 decoded"), "{stdout}");

    let stats = node.media().stats().await.expect("stats");
    assert!(stats.router.forwarded_packets > 0);
    node.shutdown().await.expect("shutdown");
}
