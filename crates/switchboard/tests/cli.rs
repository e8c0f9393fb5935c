//! Runs the built `switchboard` binary: its token command and a node started with no
//! arguments.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use signaling::auth::{Caller, TokenVerifier};
use switchboard::config::{DEVELOPMENT_APPLICATION_ID, DEVELOPMENT_SECRET, ENV_PREFIX, SETTINGS};

/// Builds a command that runs the binary without the `SWITCHBOARD_*` variables of the
/// environment running the tests, so that it uses its defaults.
fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(ENV_PREFIX) {
            command.env_remove(key);
        }
    }
    command
}

fn mint(args: &[&str]) -> String {
    let output = switchboard()
        .arg("token")
        .args(args)
        .output()
        .expect("run switchboard token");
    assert!(
        output.status.success(),
        "switchboard token {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 token")
        .trim()
        .to_owned()
}

fn development_verifier() -> TokenVerifier {
    TokenVerifier::hs256(DEVELOPMENT_APPLICATION_ID, DEVELOPMENT_SECRET.as_bytes())
        .expect("verifier")
}

#[test]
fn admin_token_verifies_with_development_secret() {
    let token = mint(&["--admin"]);
    let caller = development_verifier().verify(&token).expect("valid token");
    assert!(caller.is_admin());
    assert_eq!(caller.claims.exp - caller.claims.iat, 86_400);
}

#[test]
fn user_token_carries_user_and_ttl() {
    let token = mint(&["--user", "alice", "--ttl", "60"]);
    let caller = development_verifier().verify(&token).expect("valid token");
    assert_eq!(caller.user_name(), Some("alice"));
    assert_eq!(caller.claims.exp - caller.claims.iat, 60);
}

const PUBLIC_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../signaling/tests/fixtures/test-only-rsa-public.pem"
);
const PRIVATE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../signaling/tests/fixtures/test-only-rsa-private.pem"
);
const OTHER_PRIVATE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../signaling/tests/fixtures/test-only-other-rsa-private.pem"
);

fn rs256_verifier() -> TokenVerifier {
    let pem = std::fs::read(PUBLIC_KEY).expect("test public key");
    TokenVerifier::rs256(DEVELOPMENT_APPLICATION_ID, &pem).expect("verifier")
}

/// Returns the `acl.paths` patterns of a verified token, sorted.
fn acl_paths(caller: &Caller) -> Vec<String> {
    let acl = caller.claims.acl.as_ref().expect("an acl claim");
    let mut paths: Vec<String> = acl.paths.keys().cloned().collect();
    paths.sort();
    paths
}

/// Runs `switchboard token` and returns its exit status, stdout and stderr.
fn run_token(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = switchboard()
        .arg("token")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run switchboard token");
    (
        output.status.success(),
        String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    )
}

#[test]
fn minted_tokens_carry_default_paths() {
    for args in [&["--admin"][..], &["--user", "alice"][..]] {
        let caller = development_verifier()
            .verify(&mint(args))
            .expect("valid token");
        assert_eq!(
            acl_paths(&caller),
            [
                "/*/conversations/**",
                "/*/legs/**",
                "/*/sessions/**",
                "/*/users/**"
            ],
            "{args:?}"
        );
        assert!(!caller.claims.moderator, "{args:?}");
        assert!(!caller.claims.jti.is_empty(), "{args:?}");
    }
}

#[test]
fn moderator_token_carries_the_claim() {
    let token = mint(&["--user", "alice", "--moderator"]);
    let caller = development_verifier().verify(&token).expect("valid token");
    assert_eq!(caller.user_name(), Some("alice"));
    assert!(caller.claims.moderator);
    assert!(caller.is_moderator());
}

#[test]
fn moderator_needs_a_user() {
    let (success, stdout, stderr) = run_token(&["--admin", "--moderator"], &[]);
    assert!(!success);
    assert!(stdout.is_empty());
    assert!(stderr.contains("moderator"), "{stderr}");
}

#[test]
fn acl_paths_replace_the_defaults() {
    let token = mint(&[
        "--user",
        "alice",
        "--acl-path",
        "/*/users/**",
        "--acl-path",
        "/v0.1/conversations/CON-1/**",
    ]);
    let caller = development_verifier().verify(&token).expect("valid token");
    assert_eq!(
        acl_paths(&caller),
        ["/*/users/**", "/v0.1/conversations/CON-1/**"]
    );
    assert!(
        caller
            .check_path("/v0.1/conversations/CON-1/members")
            .is_ok()
    );
    assert!(caller.check_path("/v0.1/conversations/CON-2").is_err());
}

#[test]
fn invalid_acl_path_is_rejected() {
    let (success, stdout, stderr) = run_token(&["--admin", "--acl-path", "users/**"], &[]);
    assert!(!success);
    assert!(stdout.is_empty());
    assert!(stderr.contains("\"users/**\""), "{stderr}");
}

#[test]
fn private_key_option_signs_rs256() {
    let token = mint(&["--user", "alice", "--private-key", PRIVATE_KEY]);
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let caller = rs256_verifier().verify(&token).expect("valid token");
    assert_eq!(caller.user_name(), Some("alice"));
    assert!(development_verifier().verify(&token).is_err());
}

#[test]
fn configured_private_key_signs_rs256() {
    let env = [
        ("SWITCHBOARD_AUTH_PRIVATE_KEY", PRIVATE_KEY),
        ("SWITCHBOARD_AUTH_PUBLIC_KEY", PUBLIC_KEY),
    ];
    let (success, stdout, stderr) = run_token(&["--admin", "--ttl", "120"], &env);
    assert!(success, "{stderr}");
    assert!(
        stderr.is_empty(),
        "no warning for a matching key pair: {stderr}"
    );
    let caller = rs256_verifier().verify(stdout.trim()).expect("valid token");
    assert!(caller.is_admin());
    assert_eq!(caller.claims.exp - caller.claims.iat, 120);
}

#[test]
fn mismatched_private_key_warns() {
    let env = [("SWITCHBOARD_AUTH_PUBLIC_KEY", PUBLIC_KEY)];
    let (success, stdout, stderr) =
        run_token(&["--admin", "--private-key", OTHER_PRIVATE_KEY], &env);
    assert!(success, "{stderr}");
    assert!(!stdout.trim().is_empty());
    assert!(stderr.contains("would reject this token"), "{stderr}");
}

#[test]
fn public_key_alone_cannot_sign() {
    let env = [("SWITCHBOARD_AUTH_PUBLIC_KEY", PUBLIC_KEY)];
    let (success, stdout, stderr) = run_token(&["--admin"], &env);
    assert!(!success);
    assert!(stdout.is_empty());
    assert!(stderr.contains("auth.private_key"), "{stderr}");
}

#[test]
fn token_help_names_units() {
    let output = switchboard()
        .args(["token", "--help"])
        .output()
        .expect("run token --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    for expected in [
        "--ttl <SECONDS>",
        "in seconds",
        "--acl-path <PATTERN>",
        "--private-key <FILE>",
        "--moderator",
        "`moderator` claim",
    ] {
        assert!(help.contains(expected), "token --help lacks {expected:?}");
    }
}

#[test]
fn deploy_example_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/switchboard.toml");
    let output = switchboard()
        .args(["--config", path, "token", "--admin"])
        .output()
        .expect("run switchboard token");
    assert!(
        output.status.success(),
        "deploy/switchboard.toml does not load: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).expect("UTF-8 token");
    let verifier = TokenVerifier::hs256(
        "my-application",
        b"replace-me-with-at-least-32-random-bytes",
    )
    .expect("verifier");
    let caller = verifier
        .verify(token.trim())
        .expect("signed with the file's secret");
    assert!(caller.is_admin());
}

#[test]
fn token_needs_admin_or_user() {
    let output = switchboard()
        .arg("token")
        .output()
        .expect("run switchboard token");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

#[test]
fn help_lists_every_setting() {
    let output = switchboard().arg("--help").output().expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    for setting in SETTINGS {
        assert!(help.contains(setting.key), "--help lacks {}", setting.key);
        assert!(
            help.contains(&setting.env_var()),
            "--help lacks {}",
            setting.env_var()
        );
    }
}

/// Sends `GET path` and returns the status code.
fn http_get(address: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(address).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// Kills the node if the test fails before it stops it.
struct RunningNode(Child);

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn node_without_arguments_serves_and_stops() {
    // The default data directory is relative to the working directory, so the node runs in a
    // temporary one.
    let working_dir = tempfile::tempdir().expect("a temporary working directory");
    // Port 0 through the environment, so that the test never clashes with a running node.
    let child = switchboard()
        .current_dir(working_dir.path())
        .env("SWITCHBOARD_HTTP_ADDRESS", "127.0.0.1:0")
        .env("SWITCHBOARD_MEDIA_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchboard");
    let mut node = RunningNode(child);

    let stdout = node.0.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let address = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no start message; printed so far: {printed:?}"));
        let found = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_owned);
        printed.push(line);
        if let Some(address) = found {
            break address;
        }
    };
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
        printed.push(line);
    }
    assert!(
        printed.iter().any(|line| line.contains("token --admin")),
        "{printed:?}"
    );

    assert_eq!(http_get(&address, "/healthz"), 200);
    assert_eq!(http_get(&address, "/readyz"), 200);
    assert_eq!(http_get(&address, "/v0.1/users"), 401);

    let signal = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(signal.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.0.try_wait().expect("poll the node") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the node exited with {status}");
    let database = working_dir
        .path()
        .join("switchboard-data")
        .join(store::DATABASE_FILE_NAME);
    assert!(database.is_file(), "{} is missing", database.display());
}

#[test]
fn unusable_data_dir_is_named() {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let data_dir = file.path().join("data");
    let output = switchboard()
        .env("SWITCHBOARD_HTTP_ADDRESS", "127.0.0.1:0")
        .env("SWITCHBOARD_MEDIA_BIND", "127.0.0.1:0")
        .env("SWITCHBOARD_STORAGE_DATA_DIR", &data_dir)
        .output()
        .expect("run switchboard");

    assert!(!output.status.success(), "the node started anyway");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage.data_dir"), "{stderr}");
    assert!(stderr.contains(&data_dir.display().to_string()), "{stderr}");
}
