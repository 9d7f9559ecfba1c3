//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::lab::bench::runner::Peer;
use crate::lab::corpus::Preset;
use crate::progress::ProgressMode;

#[derive(Debug, Parser)]
#[command(
    name = "georep",
    version,
    about = "Geo-replicate an OCI registry to one replica per region",
    long_about = "Geo-replicate an OCI registry: every push to the primary appears in every \
                  replica region, byte for byte.\n\nResults go to stdout, logs to stderr: \
                  filter them with GEOREP_LOG (or RUST_LOG) in the usual syntax, e.g. \
                  GEOREP_LOG=debug or GEOREP_LOG=georep::engine=trace,info; the default is \
                  georep=info,warn.\n\nExit codes: 0 success, 1 the work failed (the output says \
                  what), 2 bad config or usage."
)]
pub struct Cli {
    /// Log lines as text (for people) or JSON objects, one per line (for
    /// log collectors).
    #[arg(long, global = true, value_enum, env = "GEOREP_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Ask a running daemon's /healthz (at the config's `listen` address, or
    /// --url): exit 0 healthy, 1 not (a container health check).
    Health(HealthArgs),
    /// Ask the running daemon to reconcile now (list the primary, queue
    /// what the regions lack) and say what it queued.
    #[command(after_help = "Examples:
  georep reconcile --config georep.yaml
  georep reconcile --config georep.yaml --region westeurope --repository team/app

Exit status: 0 the reconcile ran and listed everything, 1 it ran but some of
the primary could not be listed, 2 no daemon answered or bad usage.")]
    Reconcile(SteerArgs),
    /// Ask the running daemon to audit now: each region is asked whether it
    /// still serves what georep copied there, and what it lost is queued
    /// again (e.g. after a region was wiped).
    #[command(after_help = "Examples:
  georep audit --config georep.yaml --region westeurope
  georep audit --config georep.yaml --json

Exit status: 0 the audit ran and could ask everything, 1 some region or tag
could not be asked, 2 no daemon answered or bad usage.")]
    Audit(SteerArgs),
    /// Ask the running daemon to retry parked items now (all, or one
    /// region's or repository's).
    #[command(after_help = "Examples:
  georep retry --config georep.yaml
  georep retry --config georep.yaml --region westeurope --repository team/app

Exit status: 0 the daemon answered (the count says how many items were
retried), 2 no daemon answered or bad usage.")]
    Retry(SteerArgs),
    /// Outgoing notifications: `georep notify test TARGET` posts a sample
    /// event to one `notify:` target and says what it answered.
    #[command(
        subcommand,
        after_help = "Examples:
  georep notify test --config georep.yaml chat
  georep notify test --config georep.yaml https://hooks.example.com/georep --event deleted

Exit status: 0 the target answered 2xx, 1 it refused or could not be
reached (the message says which, and whether the daemon would retry), 2 bad
config or usage."
    )]
    Notify(NotifyCommand),
    /// Start a local primary and two replica registries, push sample images,
    /// replicate them and show where each tag landed.
    Demo(DemoArgs),
    /// Measure copy throughput: a raw baseline, georep (cold and no-op) and
    /// skopeo, side by side on one generated corpus, every run verified.
    Bench(Box<BenchArgs>),
    /// (Internal) one measured run of `georep bench`.
    #[command(hide = true)]
    BenchChild(BenchChildArgs),
    /// (Internal) runs a command and records the CPU and memory it used.
    #[command(hide = true)]
    BenchExec(BenchExecArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep sync --config georep.yaml                   # one pass, a table per region
  georep sync --config georep.yaml --dry-run         # what would be copied, writing nothing
  georep sync --config georep.yaml --json | jq '.regions[] | {name, tags_failed}'
  georep sync --config georep.yaml --verify          # re-check every item in every region
  GEOREP_LOG=debug georep sync -c georep.yaml --progress plain 2> sync.log

Exit status: 0 every region matches the primary, 1 something failed (one
line per failure: region, repository, tag, digest, cause), 2 bad config or
usage.")]
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
    #[arg(long, conflicts_with = "dry_run")]
    pub rebuild_state: bool,
    /// Write nothing to any region: list, diff and ask (reads only), then
    /// report what a sync would copy — per region tags, uploads with their
    /// bytes, mounts and manifests — and which tags.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress per region on stderr: a live line per region on a
    /// terminal, plain `[sync] REGION: ...` lines every 5 s otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep run --config /etc/georep/georep.yaml
  GEOREP_LOG_FORMAT=json georep run -c georep.yaml   # JSON log lines for a collector
  curl -s localhost:9090/v1/status | jq              # while it runs: per region lag, queue, errors

The primary's registry posts its notifications to http://LISTEN/v1/notifications
(notifications.endpoints in its config). SIGTERM or Ctrl-C finishes the
work in flight (shutdown_grace_secs) and stops; what is left resumes at the
next start. Exit status: 0 stopped on a signal, 2 could not start or
stopped on an error (bad config, the listen address taken, the state
store locked by another georep...; the message names it).")]
pub struct RunArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep wait --config georep.yaml team/app:v1.4.2 --timeout 10m && kubectl apply -f deploy.yaml
  georep wait -c georep.yaml team/app@sha256:9f86d0... --interval 5s

Exit status: 0 the image is in every region at the primary's digest, 1
timed out (the regions still missing it are named, with the last error
asking them), 2 bad config or usage.")]
pub struct WaitArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// The image as a pipeline holds it: REPOSITORY[:TAG] (no tag means
    /// :latest), REPOSITORY@DIGEST, REPOSITORY:TAG@DIGEST (waits for the
    /// digest), each optionally after HOST[:PORT]/ — the primary's or a
    /// region's host.
    pub image: String,
    /// Give up after this long (e.g. 90s, 5m, 1h).
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    /// Time between two checks.
    #[arg(long, default_value = "1s")]
    pub interval: String,
    /// Wait for this digest (e.g. the one `docker push` printed). Without
    /// it the digest is the primary's; in any-region mode, that of the
    /// region the image's host names, or else whatever every region comes
    /// to agree on.
    #[arg(long)]
    pub digest: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep status --config georep.yaml
  georep status -c georep.yaml --json | jq '.regions[] | select(.tags_missing + .tags_differ > 0)'

Exit status: 0 every region in sync, 1 some region behind or failing, 2 bad
config or usage.")]
pub struct StatusArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep check-config --config georep.yaml
  georep check-config --config georep.yaml --connect   # and can every registry be used?
  GEOREP_CONFIG=/etc/georep/georep.yaml georep check-config

Every mistake is reported with file:line:column, all at once; a valid config
is printed as it was understood (sizes in bytes, intervals, policies).

Exit status: 0 valid (and with --connect every registry usable), 1 valid but
a registry has a problem (--connect), 2 invalid.")]
pub struct CheckConfigArgs {
    /// The config file (YAML).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// Also ask every registry `GET /v2/` with its credentials and report
    /// each problem (unreachable, TLS, credentials refused).
    #[arg(long)]
    pub connect: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep demo                      # start, replicate, show, clean up
  georep demo --keep --dir ./demo  # leave the registries running (Ctrl-C stops them)

Needs the `docker-registry` binary (Debian/Ubuntu: apt-get install
docker-registry). Exit status: 0 every region matched, 1 not.")]
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
    /// Start the registries on this port and the next ones (primary first)
    /// instead of free ports.
    #[arg(long)]
    pub port_base: Option<u16>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep bench                                  # small corpus, 3 local regions
  georep bench --preset medium --svg bench.svg  # ~1.5 GiB, with a chart
  georep bench --sweep 1,2,4,8,16 --json > bench.json
  georep bench --repositories 4 --tags 2 --big-layers 1 --big-layer-size 512MiB
  georep bench --config georep.yaml --preset small   # your registries, under georep-bench/

Exit status: 0 every run verified, 1 some run failed or left a region
different from the primary, 2 bad usage or setup.")]
pub struct BenchArgs {
    /// Corpus size: small ~200 MiB, medium ~1.5 GiB, large ~8 GiB.
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Start the local registries on this port and the next ones (primary
    /// first) instead of free ports.
    #[arg(long, conflicts_with = "config")]
    pub port_base: Option<u16>,
    /// Seed of the generated corpus (same seed, same bytes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replica regions to start (local registries only).
    #[arg(long, default_value_t = 3)]
    pub regions: usize,
    /// Benchmark the registries of this config instead of local ones. Only
    /// repositories under georep-bench/ are written (the regions need
    /// deletes enabled, to be wiped between runs) and they are deleted
    /// afterwards unless --keep.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Repositories (overrides the preset).
    #[arg(long)]
    pub repositories: Option<usize>,
    /// Images per repository, tagged v1..vN (plus `latest` on the last).
    #[arg(long)]
    pub tags: Option<usize>,
    /// Layers of each image besides the shared base layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Size of those layers: SIZE or MIN..MAX (e.g. 1MiB..10MiB).
    #[arg(long)]
    pub layer_size: Option<String>,
    /// Base layers shared by every image.
    #[arg(long)]
    pub base_layers: Option<usize>,
    /// Size of the base layers: SIZE or MIN..MAX.
    #[arg(long)]
    pub base_layer_size: Option<String>,
    /// Extra large layers, spread over the first images.
    #[arg(long)]
    pub big_layers: Option<usize>,
    /// Size of the large layers: SIZE or MIN..MAX (e.g. 100MiB..140MiB).
    #[arg(long)]
    pub big_layer_size: Option<String>,
    /// Every n-th tag is a two-platform index (0: none).
    #[arg(long)]
    pub multi_arch_every: Option<usize>,
    /// Blobs in flight for the raw baseline and georep (default: the
    /// config's max_concurrent_blobs).
    #[arg(long, conflicts_with = "sweep")]
    pub concurrency: Option<usize>,
    /// Run raw and georep at each of these concurrency levels (e.g.
    /// 1,2,4,8,16); the chart then plots MiB/s per level.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// Raw + georep cold runs per level (the ratio is their mean).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Run skopeo sync as a peer.
    #[arg(long, value_enum, default_value_t = Peer::Auto)]
    pub skopeo: Peer,
    /// Verify tags, manifests and blob presence only, without reading every
    /// blob back from every region.
    #[arg(long)]
    pub quick_verify: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the chart to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Progress on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Working directory for registries, logs and plans (default: a
    /// temporary directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory, and on --config registries the
    /// benchmark's repositories.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct BenchChildArgs {
    /// The run's plan (JSON), written by `georep bench`.
    #[arg(long)]
    pub plan: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchExecArgs {
    /// Where to write the CPU time and peak RSS (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  georep health --config /etc/georep/georep.yaml
  georep health --url http://10.0.0.5:9090

Exit status: 0 the daemon answered /healthz with 200, 1 it did not (or not
in time), 2 bad config or usage.")]
pub struct HealthArgs {
    /// The daemon's config file (its `listen` address is asked).
    #[arg(long, short, env = "GEOREP_CONFIG", required_unless_present = "url")]
    pub config: Option<PathBuf>,
    /// The daemon's base URL instead (e.g. http://127.0.0.1:9090).
    #[arg(long, conflicts_with = "config")]
    pub url: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "3s")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct SteerArgs {
    /// The daemon's config file (its `listen` address and `api.auth` are
    /// used; registry passwords are not needed).
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only this repository.
    #[arg(long)]
    pub repository: Option<String>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting for the answer after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Post a sample event (repository `georep/notify-test`) to a target,
    /// in its format and with its credentials; exit 0 if it answered 2xx.
    Test(NotifyTestArgs),
}

#[derive(Debug, Args)]
pub struct NotifyTestArgs {
    #[arg(long, short, env = "GEOREP_CONFIG")]
    pub config: PathBuf,
    /// The target: its `name`, or its URL as written in the config.
    pub target: String,
    /// The kind of event to send (replicated, complete, deleted, failed).
    #[arg(long, default_value = "complete")]
    pub event: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_subcommand_has_examples_and_exit_status_in_help() {
        let cli = super::Cli::command();
        let mut seen = 0;
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            let after = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                after.contains("Examples:\n  georep "),
                "{} --help has no examples",
                sub.get_name()
            );
            assert!(
                after.contains("Exit status") || after.contains("exit status"),
                "{} --help does not give its exit status",
                sub.get_name()
            );
            seen += 1;
        }
        assert_eq!(seen, 12);
        cli.debug_assert();
    }
}
