//! The `switchboard` command: runs a node, or mints a token for its key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use signaling::auth::TokenGrant;
use switchboard::config::{CONFIG_FILE_ENV, ENV_PREFIX, SETTINGS};
use switchboard::{Config, Node};

/// A self-hosted video conferencing SFU.
///
/// Without a command, runs a node. With no config file and no SWITCHBOARD_* variables it is a
/// development node on 127.0.0.1: HTTP on port 7880, media on UDP port 7882, tokens signed with
/// a public development secret.
#[derive(Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    /// TOML file with settings. SWITCHBOARD_* environment variables override it.
    #[arg(long, global = true, env = CONFIG_FILE_ENV, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node until SIGINT or SIGTERM (the default command).
    Serve,
    /// Prints a token for the configured application, signed RS256 with a private key when
    /// one is given or configured, else HS256 with the configured secret.
    Token(TokenArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("principal").required(true).args(["admin", "user"])))]
struct TokenArgs {
    /// Mint an admin token (no `sub` claim), which may do everything its paths allow.
    #[arg(long)]
    admin: bool,
    /// Mint a token that acts as the user of this name (the `sub` claim).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Let the user mute other members (sets the `moderator` claim to true).
    #[arg(long, requires = "user")]
    moderator: bool,
    /// Lifetime of the token, in seconds: `exp` is `iat` plus this.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    ttl: u64,
    /// Grant this `acl.paths` pattern (`*` is one path segment, `**` any number). Repeat it
    /// for several; given once or more, it replaces the default patterns /*/users/**,
    /// /*/conversations/**, /*/sessions/** and /*/legs/**.
    #[arg(long = "acl-path", value_name = "PATTERN")]
    acl_paths: Vec<String>,
    /// Sign RS256 with this RSA private key (PEM) instead of auth.private_key or the secret.
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run_command() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command() -> anyhow::Result<()> {
    let matches = Cli::command().after_help(settings_help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).map_err(|error| error.exit())?;
    let config = Config::load(cli.config.as_deref())?;

    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            switchboard::init_tracing(&config.log)?;
            let runtime = tokio::runtime::Runtime::new().context("failed to start the runtime")?;
            runtime.block_on(serve(config, cli.config.as_deref()))
        }
        Command::Token(args) => {
            let token = mint(&config, args)?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Mints the token `args` describe, and warns when the node's settings would reject it.
fn mint(config: &Config, args: TokenArgs) -> anyhow::Result<String> {
    let issuer = config.auth.issuer(args.private_key.as_deref())?;
    let ttl = Duration::from_secs(args.ttl);
    // Clap lets exactly one of --admin and --user through.
    let mut grant = match args.user {
        Some(user) => TokenGrant::user(user, ttl),
        None => TokenGrant::admin(ttl),
    };
    grant.moderator = args.moderator;
    if !args.acl_paths.is_empty() {
        grant.acl_paths = Some(args.acl_paths);
    }
    let token = issuer
        .mint_grant(&grant)
        .context("failed to mint a token")?;

    // A private key that does not match the configured public key makes tokens the node
    // rejects, which is easier to see here than in a client's 401.
    let check = config
        .auth
        .verifier()
        .and_then(|verifier| Ok(verifier.verify(&token)?));
    if let Err(error) = check {
        eprintln!(
            "switchboard: warning: a node with these settings would reject this token: {error:#}"
        );
    }
    Ok(token)
}

async fn serve(config: Config, config_file: Option<&Path>) -> anyhow::Result<()> {
    let development_secret = config.auth.uses_development_secret();
    let node = Node::start(config).await?;
    print_start_message(&node, config_file, development_secret);

    wait_for_shutdown_signal().await?;
    node.shutdown().await
}

/// Tells the person who started the node where it listens and how to get a token.
fn print_start_message(node: &Node, config_file: Option<&Path>, development_secret: bool) {
    println!(
        "Switchboard is listening: HTTP API on {}, media on UDP {}.",
        node.http_url(),
        node.media_address()
    );
    if development_secret {
        println!(
            "Tokens are signed with the public development secret; set {ENV_PREFIX}AUTH_SECRET \
             before others can reach this node."
        );
    }
    let demo = &node.config().demo;
    if demo.enabled {
        println!("The demo page is at {}/", node.http_url());
        if !demo.dir.join(switchboard::demo::SDK_BUNDLE).is_file() {
            println!(
                "  but its SDK is not installed: run scripts/setup-demo, then reload the page."
            );
        }
    }

    let program = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("switchboard"));
    let mut command = program.to_string_lossy().into_owned();
    if let Some(file) = config_file {
        command = format!("{command} --config {}", file.display());
    }
    println!("Mint a token for this node with:");
    println!("  {command} token --admin");
    println!("  {command} token --user NAME");
    let has_overrides =
        std::env::vars_os().any(|(key, _)| key.to_string_lossy().starts_with(ENV_PREFIX));
    if has_overrides {
        println!("in an environment with the same {ENV_PREFIX}* variables as this node.");
    }
}

#[cfg(unix)]
async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("failed to listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown signal received");
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("failed to listen for Ctrl-C")?;
    tracing::info!("shutdown signal received");
    Ok(())
}

/// Builds the settings part of `--help`: every TOML key with the environment variable that
/// overrides it.
fn settings_help() -> String {
    let mut help = format!(
        "Settings: defaults, then the TOML file (--config or {CONFIG_FILE_ENV}), then environment \
         variables. A TOML key section.key is set by {ENV_PREFIX}SECTION_KEY.\n"
    );
    for setting in SETTINGS {
        help.push_str(&format!(
            "\n  {}  ({})\n      {}",
            setting.key,
            setting.env_var(),
            setting.description
        ));
    }
    help
}
