//! The `loadtest` binary against bad input, and one short real run against a node started in
//! this process.

use std::process::{Command, Output};
use std::time::Duration;

use switchboard::{Config, Node};

fn loadtest(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(arguments)
        .env_remove("LOADTEST_TOKEN")
        .output()
        .expect("running the loadtest binary")
}

/// Checks a failed run: nonzero exit, one line on stderr containing `expected`, no panic.
fn assert_rejected(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status: {:?}", output.status);
    assert!(stderr.contains(expected), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
}

/// Returns a loopback port with nothing listening on it: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("probe port address").port()
}

#[test]
fn unreachable_node_is_reported() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let output = loadtest(&["--url", &url, "--token", "t", "--duration", "1"]);
    assert_rejected(&output, "cannot reach the node");
}

#[test]
fn zero_members_is_rejected() {
    let output = loadtest(&["--token", "t", "--members", "0"]);
    assert_rejected(&output, "--members must be between 2 and 1000");
}

#[test]
fn meeting_of_one_is_rejected() {
    let output = loadtest(&["--token", "t", "--scenario", "meeting", "--members", "1"]);
    assert_rejected(&output, "of 1 member forwards nothing");
}

#[test]
fn negative_duration_is_rejected() {
    let output = loadtest(&["--token", "t", "--duration", "-5"]);
    assert_rejected(&output, "--duration must be more than 0");
}

#[test]
fn zero_duration_is_rejected() {
    let output = loadtest(&["--token", "t", "--duration", "0"]);
    assert_rejected(&output, "--duration must be more than 0");
}

#[test]
fn unknown_scenario_is_rejected() {
    let output = loadtest(&["--token", "t", "--scenario", "party"]);
    assert_rejected(&output, "invalid value 'party' for '--scenario");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn missing_token_is_rejected() {
    let output = loadtest(&["--members", "3"]);
    assert_rejected(&output, "--token");
}

#[test]
fn empty_token_is_rejected() {
    let output = loadtest(&["--token", " "]);
    assert_rejected(&output, "--token is empty");
}

#[test]
fn unknown_server_pid_is_rejected_before_load() {
    // Linux process ids stay below 2^22, so this one cannot exist.
    let node = tokio_node();
    let output = loadtest(&[
        "--url",
        &node.url,
        "--token",
        &node.token,
        "--server-pid",
        "99999999",
    ]);
    assert_rejected(&output, "--server-pid 99999999: no such process");
}

#[test]
fn bad_token_is_reported() {
    let node = tokio_node();
    let output = loadtest(&["--url", &node.url, "--token", "not-a-token"]);
    assert_rejected(&output, "the node rejected the token (401");
}

#[test]
fn meeting_of_two_reports_forwarding() {
    let node = tokio_node();
    let output_dir = tempfile::tempdir().expect("creating a report directory");
    let pid = std::process::id().to_string();
    let output = loadtest(&[
        "--url",
        &node.url,
        "--token",
        &node.token,
        "--scenario",
        "meeting",
        "--members",
        "2",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--floor-packets",
        "1000",
        "--server-pid",
        &pid,
        "--output",
        output_dir.path().to_str().expect("UTF-8 temp path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");

    let json = std::fs::read_to_string(output_dir.path().join("meeting-2.json"))
        .expect("reading the JSON report");
    let report: serde_json::Value = serde_json::from_str(&json).expect("parsing the report");
    assert_eq!(report["publisher_legs"], 2);
    assert_eq!(report["subscriber_legs"], 2);
    assert!(
        report["received_packets"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    assert!(
        report["server_cpu_ns_per_packet"].as_f64().unwrap_or(0.0) > 0.0,
        "{json}"
    );
    assert!(
        report["ratio_to_floor"].as_f64().unwrap_or(0.0) > 0.0,
        "{json}"
    );
    assert_eq!(report["srtp_cipher"], "SRTP_AEAD_AES_128_GCM");
    let html = std::fs::read_to_string(output_dir.path().join("meeting-2.html"))
        .expect("reading the HTML report");
    assert!(html.contains("<svg"), "the HTML report has no plot");
}

/// A node on ephemeral loopback ports, running on its own runtime thread for the test's length.
struct TestNode {
    url: String,
    token: String,
    // Dropped before the runtime it runs on.
    _node: Node,
    _runtime: tokio::runtime::Runtime,
}

fn tokio_node() -> TestNode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("starting a runtime for the node");
    let node = runtime
        .block_on(Node::start(Config::ephemeral()))
        .expect("starting the node");
    let url = node.http_url();
    let token = node
        .admin_token(Duration::from_secs(600))
        .expect("minting an admin token");
    TestNode {
        url,
        token,
        _node: node,
        _runtime: runtime,
    }
}
