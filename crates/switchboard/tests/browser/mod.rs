//! Real Chromium for the browser tests. Each test re-runs its own test binary under `unshare`
//! in new network, PID and mount namespaces. The network namespace has only loopback, so neither
//! the node nor a browser can reach any other address. Every process that the run starts ends
//! when the run's first process exits. Inside, the test starts the node in-process, one
//! chromedriver, and one Chromium per user with its own profile, driven over W3C WebDriver.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Debian's `chromium` and `chromium-driver` packages, which `scripts/setup-tests` installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Set in the environment of the run inside the namespaces.
const INNER_RUN_ENV: &str = "SWITCHBOARD_BROWSER_TEST_INNER";
/// The whole run inside the namespaces, from start to exit.
const INNER_RUN_DEADLINE: Duration = Duration::from_secs(150);
/// The scenario inside that run. It is shorter, so that the scenario's own timeout message is
/// the failure.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(120);
/// One script in a page. The page's own waits have shorter deadlines.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(45);
/// The deadline a page sets itself for one script, shorter than [`SCRIPT_DEADLINE`].
const PAGE_SCRIPT_DEADLINE: Duration = Duration::from_secs(30);
const CHROMEDRIVER_START_DEADLINE: Duration = Duration::from_secs(15);
const PAGE_LOAD_DEADLINE: Duration = Duration::from_secs(30);
/// How long the SDK's global may take to appear after the page's load event.
const SDK_LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// How long a killed process may take to exit.
const PROCESS_EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// The tests of one binary take turns, because each starts several browsers and the machine
/// has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const HELPERS: &str = include_str!("sdk_helpers.js");

pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// Returns the repository's demo directory, with the page that loads the SDK and the SDK that
/// `scripts/setup-demo` installs.
pub fn demo_dir() -> PathBuf {
    repo_root().join("demo")
}

pub fn sdk_bundle() -> PathBuf {
    demo_dir().join(switchboard::demo::SDK_BUNDLE)
}

/// Runs `scenario` inside a private loopback-only network namespace, when called from the
/// `#[test]` named `test_name`. The outer run re-executes this test binary for just that test
/// under `unshare`, and fails with the inner run's output when the inner run fails. The inner run
/// brings up loopback and runs the scenario on a Tokio runtime.
pub fn run_isolated<F, Fut>(test_name: &str, scenario: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    if std::env::var_os(INNER_RUN_ENV).is_some() {
        run_inner(test_name, scenario);
    } else {
        run_outer(test_name);
    }
}

fn run_inner<F, Fut>(test_name: &str, scenario: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    bring_up_loopback();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the Tokio runtime");
    runtime.block_on(async {
        if tokio::time::timeout(SCENARIO_DEADLINE, scenario())
            .await
            .is_err()
        {
            panic!("{test_name} did not finish within {SCENARIO_DEADLINE:?}");
        }
    });
}

fn run_outer(test_name: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    require_installed();

    let output_dir = tempfile::tempdir().expect("create a temporary directory");
    let output_path = output_dir.path().join("output.txt");
    let output = File::create(&output_path).expect("create the output file");
    let test_binary = std::env::current_exe().expect("path of the test binary");
    let started = Instant::now();
    // --fork makes the test binary PID 1 of the new PID namespace, so the kernel kills every
    // process left in it (chromedriver, Chromium) when the test binary exits. --kill-child
    // passes a kill of `unshare` on to the test binary.
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "--",
        ])
        .arg(&test_binary)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(INNER_RUN_ENV, "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone the output file"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|error| panic!("failed to run unshare (util-linux): {error}"));

    let status = wait_with_deadline(&mut child, INNER_RUN_DEADLINE);
    let text = std::fs::read_to_string(&output_path).unwrap_or_default();
    println!("{text}");
    println!(
        "{test_name}: the run inside the namespaces took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "{test_name} failed inside the network namespace ({status}); its output:\n{text}"
        ),
        None => panic!(
            "{test_name} did not finish within {INNER_RUN_DEADLINE:?} and was killed; its \
             output:\n{text}"
        ),
    }
}

/// Waits for `child` until `deadline`, then kills it. Returns None when it was killed.
fn wait_with_deadline(child: &mut std::process::Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => panic!("failed to wait for the test run: {error}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Fails with the command that installs what is missing.
fn require_installed() {
    let required = [
        (
            PathBuf::from(CHROMIUM),
            "Chromium (Debian package chromium)",
        ),
        (
            PathBuf::from(CHROMEDRIVER),
            "chromedriver (Debian package chromium-driver)",
        ),
        (
            sdk_bundle(),
            "the Nexmo JavaScript SDK (nexmo-client 4.1.0)",
        ),
    ];
    let missing: Vec<String> = required
        .iter()
        .filter(|(path, _)| !path.exists())
        .map(|(path, package)| format!("{package} at {}", path.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "the browser tests need {}: run scripts/setup-tests to install them",
        missing.join(" and ")
    );
}

/// Brings `lo` up in the fresh network namespace and checks that it is the only interface, so
/// that nothing in this run can reach another address.
fn bring_up_loopback() {
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run `ip link set lo up` (iproute2)");
    assert!(status.success(), "`ip link set lo up` failed: {status}");
    // /proc/net/dev lists the interfaces of this process's network namespace (/sys/class/net
    // would still show those of the namespace that mounted /sys).
    let devices = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let interfaces: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "the browser test must run in a network namespace with only loopback"
    );
}

/// Prints a line with the time since `started`, to show where a run spends its time.
pub fn step(started: Instant, text: &str) {
    println!("[{:6.2} s] {text}", started.elapsed().as_secs_f64());
}

fn free_port() -> u16 {
    // Nothing else runs in this network namespace, so the port stays free until chromedriver
    // binds it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A chromedriver process with a temporary directory for the browsers it starts. On drop it
/// is killed with every process that uses that directory, and the directory is removed.
pub struct Chromedriver {
    child: tokio::process::Child,
    url: String,
    home: TempDir,
}

impl Chromedriver {
    pub async fn start() -> Chromedriver {
        let home = tempfile::Builder::new()
            .prefix("switchboard-browsers-")
            .tempdir()
            .expect("create a directory for the browsers");
        let port = free_port();
        // Chromium keeps its crash report database under XDG_CONFIG_HOME, which would be the
        // user's ~/.config otherwise.
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {CHROMEDRIVER}: {error}"));
        let url = format!("http://127.0.0.1:{port}");
        let status_url = format!("{url}/status");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = match http.get(&status_url).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .map(|status| status["value"]["ready"] == true)
                    .unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                started.elapsed() < CHROMEDRIVER_START_DEADLINE,
                "chromedriver did not become ready on {url} within {CHROMEDRIVER_START_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Chromedriver { child, url, home }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        kill_processes_using(self.home.path());
    }
}

/// One Chromium with a fresh profile, in one WebDriver session. Its processes are killed on drop.
pub struct Browser {
    pub user: String,
    client: Client,
    profile: TempDir,
}

impl Browser {
    pub async fn launch(driver: &Chromedriver, user: &str) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix(&format!("profile-{user}-"))
            .tempdir_in(driver.home.path())
            .expect("create a Chromium profile directory");

        let args = [
            "--headless=new",
            "--no-sandbox",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();

        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|error| panic!("failed to start Chromium for {user}: {error}"));

        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(SCRIPT_DEADLINE),
                Some(PAGE_LOAD_DEADLINE),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set the WebDriver timeouts");
        Browser {
            user: user.to_owned(),
            client,
            profile,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("{}: failed to load {url}: {error}", self.user));
    }

    /// Installs `window.sbt` (sdk_helpers.js) into the current page.
    pub async fn install_helpers(&self) {
        self.client
            .execute(HELPERS, Vec::new())
            .await
            .unwrap_or_else(|error| {
                panic!("{}: failed to install the helpers: {error}", self.user)
            });
    }

    /// Runs `body` as the body of an async function of `args` in the page and returns what it
    /// returns, or the error it throws as text.
    pub async fn try_run(&self, body: &str, args: Value) -> Result<Value, String> {
        // The SDK has no request timeouts, so the page enforces a deadline of its own, shorter
        // than WebDriver's, and the failure names the script that hung.
        let page_deadline_ms = PAGE_SCRIPT_DEADLINE.as_millis();
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             const describe = (error) => window.sbt ? window.sbt.describe(error) : String(error);\n\
             const deadline = new Promise((_, reject) => setTimeout(\n\
               () => reject(new Error('no result within {page_deadline_ms} ms')),\n\
               {page_deadline_ms}));\n\
             Promise.race([(async (args) => {{\n{body}\n}})(arguments[0]), deadline]).then(\n\
               (value) => done({{ ok: value === undefined ? null : value }}),\n\
               (error) => done({{ error: describe(error) }}));"
        );
        let call = self.client.execute_async(&script, vec![args]);
        let reply = match tokio::time::timeout(SCRIPT_DEADLINE + Duration::from_secs(5), call).await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return Err(format!("WebDriver: {error}")),
            Err(_) => return Err(format!("no reply within {SCRIPT_DEADLINE:?}")),
        };
        match reply.get("error") {
            Some(error) => Err(error.as_str().unwrap_or_default().to_owned()),
            None => Ok(reply.get("ok").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Runs like [`Browser::try_run`] and fails the test with the page's recorded events and
    /// errors when the script throws.
    pub async fn run(&self, action: &str, body: &str, args: Value) -> Value {
        match self.try_run(body, args).await {
            Ok(value) => value,
            Err(error) => {
                let state = self.page_state().await;
                panic!(
                    "{}: {action} failed: {error}\npage state: {state}",
                    self.user
                )
            }
        }
    }

    /// Returns the events, errors and last console lines that the helpers recorded, for failure
    /// messages.
    pub async fn page_state(&self) -> String {
        let script = "return window.sbt ? JSON.stringify({ events: window.sbt.events, \
                      errors: window.sbt.errors, console: window.sbt.console.slice(-60) }, \
                      null, 1) : 'no helpers in the page';";
        match self.client.execute(script, Vec::new()).await {
            Ok(Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(error) => format!("unavailable ({error})"),
        }
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        self.client
            .screenshot()
            .await
            .unwrap_or_else(|error| panic!("{}: screenshot failed: {error}", self.user))
    }

    /// Kills this browser's processes at once, as a crash would, waits until they have exited,
    /// and returns how many there were. They are found by the profile directory on their
    /// command lines.
    pub fn kill(&self) -> usize {
        kill_processes_using(self.profile.path())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The profile directory is removed after this, once nothing writes to it any more.
        self.kill();
    }
}

/// Loads the node's page at `/`, which loads the SDK, and installs the helpers.
pub async fn open_sdk_page(browser: &Browser, origin: &str) {
    browser.goto(&format!("{origin}/")).await;
    // The page's script tag loads the SDK before the load event, but a run once found it
    // missing right after navigation, so the check polls briefly and reports what it saw.
    let probe = "return { sdk: typeof ConversationClient, state: document.readyState, \
                 scripts: performance.getEntriesByType('resource').map(entry => \
                 entry.name + ' ' + entry.responseStatus) };";
    let deadline = Instant::now() + SDK_LOAD_DEADLINE;
    let loaded = loop {
        let loaded = browser
            .client()
            .execute(probe, Vec::new())
            .await
            .expect("check for the SDK");
        if loaded["sdk"] == "function" || Instant::now() >= deadline {
            break loaded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        loaded["sdk"], "function",
        "{}: the page at {origin}/ did not load the SDK's global ConversationClient: {loaded}",
        browser.user
    );
    browser.install_helpers().await;
}

/// Kills the processes that name `path` on their command line, waits up to
/// [`PROCESS_EXIT_DEADLINE`] until they have exited, and returns how many there were.
fn kill_processes_using(path: &Path) -> usize {
    let path = path.to_string_lossy().into_owned();
    let pids = processes_mentioning(&path);
    for &pid in &pids {
        // SAFETY: kill(2) has no memory effects. The pid is one of this run's processes, and
        // the run has a PID namespace of its own.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let started = Instant::now();
    while !processes_mentioning(&path).is_empty() && started.elapsed() < PROCESS_EXIT_DEADLINE {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

/// Ids of the live processes with a command-line argument that contains `text`. An exited
/// process that nobody has reaped yet has an empty command line, so it is not listed.
fn processes_mentioning(text: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own_pid = std::process::id();
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| u32::try_from(pid).ok() != Some(own_pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| {
                    cmdline
                        .split(|&byte| byte == 0)
                        .any(|arg| String::from_utf8_lossy(arg).contains(text))
                })
                .unwrap_or(false)
        })
        .collect()
}
