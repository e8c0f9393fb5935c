//! Drives a running Switchboard node with real WebRTC legs (ICE, DTLS, SRTP over loopback)
//! through its REST API, and measures what forwarding costs the node: packets per second, loss,
//! CPU time per forwarded packet against the floor of SRTP plus `send_to`, memory per leg, join
//! time, time to first video and in-node transit time.

mod api;
mod args;
mod report;
mod run;
mod server;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{MultiProgress, ProgressDrawTarget};
use switchboard_benches::floor::{self, Profile};

use crate::api::Api;
use crate::args::Arguments;
use crate::report::Report;
use crate::run::Runner;
use crate::server::ServerProbe;

/// Maximum time a run may take beyond its measurement: joining, warm-up and closing.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let arguments = match Arguments::try_parse() {
        Ok(arguments) => arguments,
        Err(error) => return usage_error(error),
    };
    match run(arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a flag error on one line (clap spreads it over several) and exits with 2; help and
/// version go out as clap formats them.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        error.exit();
    }
    let rendered = error.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty() && !line.starts_with("Usage:") && !line.starts_with("For more")
        })
        .collect();
    let message = message.join(" ");
    eprintln!(
        "loadtest: {} (see --help)",
        message.strip_prefix("error: ").unwrap_or(&message)
    );
    ExitCode::from(2)
}

fn run(arguments: Arguments) -> Result<()> {
    let plan = arguments.plan()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let limit = plan.duration + plan.warmup + SETUP_ALLOWANCE;
    runtime.block_on(async {
        tokio::time::timeout(limit, run_plan(arguments, plan))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the run took longer than {} s and was stopped",
                    limit.as_secs()
                )
            })?
    })?;
    // Peers that did not close in time still own tasks; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

async fn run_plan(arguments: Arguments, plan: args::Plan) -> Result<()> {
    let api = Api::new(&plan.url, &arguments.token)?;
    api.check().await?;
    let probe = ServerProbe::new(&plan.metrics_url, arguments.server_pid).await?;
    let cpu_source = probe.cpu_source();
    if cpu_source == server::Source::None {
        eprintln!(
            "loadtest: the node has no process metrics at {} and --server-pid is not set, so \
             its CPU and memory are n/a",
            plan.metrics_url
        );
    }

    let progress = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id())
    );
    let runner = Runner {
        plan: plan.clone(),
        api,
        probe,
        progress,
        run_id,
    };
    let outcome = runner.run().await?;

    // The floor runs after every leg has closed, so it competes with nothing of ours.
    let floors = if arguments.floor_packets == 0 {
        Vec::new()
    } else {
        let packets = arguments.floor_packets;
        tokio::task::spawn_blocking(move || {
            Profile::ALL
                .into_iter()
                .map(|profile| floor::measure(profile, packets))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .context("the floor measurement panicked")?
        .context("measuring the floor")?
    };

    let report = Report::new(plan.clone(), outcome, floors, cpu_source);
    println!("{}", report.table());
    let stem = format!(
        "{}-{}",
        format!("{:?}", plan.scenario).to_lowercase(),
        plan.members
    );
    let (json, html) = report.write(&arguments.output, &stem)?;
    println!("wrote {} and {}", json.display(), html.display());
    Ok(())
}
