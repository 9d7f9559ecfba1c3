//! The `georep` binary: parse the command line, set up logging, run one
//! subcommand, turn its outcome into an exit code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use georep::cli::{Cli, Command, LogFormat, NotifyCommand};
use georep::commands::{self, ExitStatus};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let status = if e.use_stderr() {
                ExitStatus::Error
            } else {
                ExitStatus::Success
            };
            let _ = e.print();
            return status.into();
        }
    };
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitStatus::Error.into();
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Sync(a) => commands::sync::run(a, cli.log_format).await,
            Command::Run(a) => commands::run::run(a).await,
            Command::Wait(a) => commands::wait::run(a).await,
            Command::Status(a) => commands::status::run(a).await,
            Command::CheckConfig(a) => commands::check_config::run(a).await,
            Command::Health(a) => commands::health::run(a).await,
            Command::Notify(NotifyCommand::Test(a)) => commands::notify::test(a).await,
            Command::Reconcile(a) => commands::steer::reconcile(a).await,
            Command::Audit(a) => commands::steer::audit(a).await,
            Command::Retry(a) => commands::steer::retry(a).await,
            Command::Demo(a) => commands::demo::run(a).await,
            Command::Bench(a) => commands::bench::run(a).await,
            Command::BenchChild(a) => commands::bench::child(a).await,
            Command::BenchExec(a) => commands::bench::exec(a),
        }
    });
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                // One JSON object like every other line a collector reads.
                LogFormat::Json => tracing::error!(error = %format!("{e:#}"), "the command failed"),
            }
            ExitStatus::Error.into()
        }
    }
}

/// Logs to stderr, filtered by `GEOREP_LOG`, else `RUST_LOG`, else
/// `georep=info,warn`; a filter that does not parse is reported and the
/// default used.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (filter, bad) = ["GEOREP_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| {
            let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
            Some(match EnvFilter::try_new(&value) {
                Ok(f) => (f, None),
                Err(e) => (
                    EnvFilter::new(DEFAULT_LOG),
                    Some(format!(
                        "{var}={value:?} is not a log filter ({e}); using {DEFAULT_LOG}"
                    )),
                ),
            })
        })
        .unwrap_or_else(|| (EnvFilter::new(DEFAULT_LOG), None));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
    }
}

const DEFAULT_LOG: &str = "georep=info,warn";
