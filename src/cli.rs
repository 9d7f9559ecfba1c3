//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::corpus::Preset;

#[derive(Debug, Parser)]
#[command(
    name = "georep",
    version,
    about = "Geo-replicate an OCI registry to one replica per region",
    long_about = "Geo-replicate an OCI registry: every push to the primary appears in every \
                  replica region, byte for byte.\n\nLogs go to stderr (filter with GEOREP_LOG, \
                  e.g. GEOREP_LOG=debug); results go to stdout."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass: make every region match the primary, then exit
    /// (0 all in sync, 1 something failed, 2 bad config or usage).
    Sync(SyncArgs),
    /// What each region has, how far behind it is, and its last errors,
    /// from the state store (no registry is contacted); exit 0 when every
    /// region is in sync, 1 otherwise.
    Status(StatusArgs),
    /// The daemon: receive the primary's push notifications, reconcile
    /// every poll_interval_secs, replicate continuously, serve /healthz,
    /// /readyz, /v1/status and /metrics. Stops gracefully on SIGTERM/SIGINT.
    Run(RunArgs),
    /// Wait until an image is in every region (exit 0), or time out (exit 1):
    /// a deployment gate for CD pipelines. Asks the registries themselves.
    Wait(WaitArgs),
    /// Validate a config file and exit (0 valid, 2 invalid).
    CheckConfig(CheckConfigArgs),
    /// Start a local primary and two replica registries, push sample images,
    /// replicate them and show where each tag landed.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Trust nothing the state store says: check every manifest and blob in
    /// every region, correct the store, and copy whatever is missing.
    #[arg(long)]
    pub verify: bool,
    /// Move the state store aside (kept as `store.broken-<time>`) and
    /// rebuild it from the registries (implies --verify).
    #[arg(long)]
    pub rebuild_state: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// The image: REPOSITORY:TAG or REPOSITORY@DIGEST (no registry host).
    pub image: String,
    /// Give up after this long (e.g. 90s, 5m, 1h).
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    /// Time between two checks.
    #[arg(long, default_value = "1s")]
    pub interval: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the registries' storage, logs and the generated config
    /// (default: a new temporary directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the sample images.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Size of the sample set.
    #[arg(long, value_enum, default_value_t = Preset::Demo)]
    pub preset: Preset,
    /// Keep the registries running after the demo until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}
