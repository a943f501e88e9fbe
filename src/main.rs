//! The `xray-warden` binary: parse flags, load config (exit 64 listing every problem), set up
//! logging, run the daemon until a signal, map the outcome to an exit code.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing::{error, info, warn};
use xray_warden::cli::{Cli, Command, RemoteArgs, RunArgs};
use xray_warden::config::{Config, Overrides, Secrets};
use xray_warden::daemon::{self, Stop};
use xray_warden::remote;

/// sysexits.h EX_USAGE / EX_CONFIG family: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Sync(args) => manage(
            &RemoteArgs {
                config: args.config,
                json: args.json,
                timeout: args.timeout,
            },
            Ok(remote::sync_request(args.force)),
        ),
        Command::Tunnels { action, remote } => manage(
            &remote,
            remote::tunnels_request(&action).map_err(|e| e.to_string()),
        ),
        Command::Health { remote } => manage(&remote, Ok(remote::health_request())),
        Command::Orphans { action, remote } => {
            manage(&remote, Ok(remote::orphans_request(&action)))
        }
    }
}

/// Runs a command against the running daemon's API and prints its answer.
fn manage(args: &RemoteArgs, request: Result<remote::Request, String>) -> ExitCode {
    let (config, secrets) = match load(args.config.as_deref(), &Overrides::default()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let output = request.and_then(|r| {
        remote::command(&config, &secrets, r, args.json, args.timeout).map_err(|e| e.to_string())
    });
    match output {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("xray-warden: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration and its secrets, or the exit code for a bad one (after saying why).
fn load(
    path: Option<&std::path::Path>,
    overrides: &Overrides,
) -> Result<(Config, Secrets), ExitCode> {
    let loaded = Config::load(path, overrides).and_then(|c| Secrets::load(&c).map(|s| (c, s)));
    loaded.map_err(|err| {
        eprintln!("xray-warden: {err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(args: RunArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
    };
    let (config, secrets) = match load(args.config.as_deref(), &overrides) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if args.check {
        println!("configuration is valid:\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    xray_warden::logging::init(&config.log_filter, args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(blocking_keep_alive(&config))
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let code = runtime.block_on(serve(config, secrets));
    // Tasks that outlived the grace period are abandoned, not awaited.
    runtime.shutdown_background();
    code
}

/// How long an idle thread of the blocking pool is kept. The sampler and the health pass do
/// their reads there once per interval; tokio's default of 10 s let the threads exit between
/// two 15 s passes, so that every pass started new ones (about three every 15 s: thread
/// creation, a fresh stack faulted in, seen in perf of a steady warden). Kept for two of the
/// longer interval, they are reused; at most an hour.
fn blocking_keep_alive(config: &Config) -> Duration {
    let longest = config.sampler.interval.max(config.health.interval);
    (longest * 2).clamp(Duration::from_secs(10), Duration::from_secs(3600))
}

async fn serve(config: Config, secrets: Secrets) -> ExitCode {
    raise_open_file_limit();
    let listener = match xray_warden::http::bind(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            error!(listen = %config.listen, error = %err, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(config.listen, |a| a);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "listening on http://{addr}/metrics"
    );
    let stop = Stop::default();
    tokio::spawn(daemon::watch_signals(stop.clone()));
    match daemon::run(config, secrets, listener, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "unclean shutdown");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-file limit to the hard one, as Go programs (the cores among them) do at
/// start: the sampler holds four cgroup files open per running tunnel, HTTP connections and
/// gRPC channels need the rest. The shipped unit sets both with `LimitNOFILE=`; elsewhere the
/// soft limit is often 1,024 while the hard one is far higher.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(to = ?limit.maximum, "raised the soft open-file limit"),
        Err(err) => warn!(error = %err, "cannot raise the soft open-file limit"),
    }
}
