//! The `georep` binary: parse the command line, set up logging, run one
//! subcommand, turn its outcome into an exit code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use georep::cli::{Cli, Command};
use georep::commands::{self, EXIT_ERROR};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { EXIT_ERROR } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Sync(a) => commands::sync::run(a).await,
            Command::Run(a) => commands::run::run(a).await,
            Command::Wait(a) => commands::wait::run(a).await,
            Command::Status(a) => commands::status::run(a).await,
            Command::CheckConfig(a) => commands::check_config::run(a),
            Command::Health(a) => commands::health::run(a).await,
            Command::Demo(a) => commands::demo::run(a).await,
            Command::Bench(a) => commands::bench::run(a).await,
            Command::BenchChild(a) => commands::bench::child(a).await,
            Command::BenchExec(a) => commands::bench::exec(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GEOREP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("georep=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
