//! The measured side of `georep bench`. Every measured run is a child
//! process of the same binary — `georep bench-child --plan F` for the raw
//! baseline and for georep's sync, `georep bench-exec -- skopeo ...` for
//! skopeo — so each run's CPU seconds and peak RSS are its own, measured the
//! same way, and none of the benchmark's bookkeeping (corpus, verification)
//! is counted in them.
//!
//! A child reads its plan (JSON), prints progress lines on stderr
//! ([`PROGRESS_PREFIX`] + bytes handed to the regions so far) and its
//! [`ChildResult`] as JSON on stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::RawBlob;
use crate::config::{Config, RepositoryFilter};
use crate::engine::{Engine, SyncOptions};
use crate::registry::{Registry, StatsSnapshot, http_client};

/// Starts a progress line on a child's stderr.
pub const PROGRESS_PREFIX: &str = "georep-bench-progress ";
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What a child does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildPlan {
    /// The georep config naming the primary and the regions (credentials,
    /// limits and timeouts come from it).
    pub config: PathBuf,
    /// Replaces the config's `state_dir` (a fresh one is a cold sync).
    pub state_dir: PathBuf,
    /// Only repositories under this prefix are touched.
    pub repository_prefix: String,
    /// Blobs in flight: the raw baseline's, and georep's
    /// `max_concurrent_blobs` and per-region uploads.
    pub concurrency: usize,
    pub task: ChildTask,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChildTask {
    /// The raw baseline over these blobs.
    Raw { blobs: Vec<RawBlob> },
    /// A `georep sync` pass.
    Sync,
}

/// What a child reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChildResult {
    pub elapsed_secs: f64,
    /// Bytes uploaded to all regions together.
    pub bytes_uploaded: u64,
    /// What did not work, one line each (empty: all done).
    pub failures: Vec<String>,
    pub peak_rss_bytes: Option<u64>,
    pub cpu_secs: Option<f64>,
    /// Requests sent, by kind, as the client counted them.
    pub primary_requests: BTreeMap<String, u64>,
    pub region_requests: BTreeMap<String, u64>,
}

/// The resources an external command used (`georep bench-exec`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecUsage {
    pub cpu_secs: f64,
    pub peak_rss_bytes: u64,
    /// The command's exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
}

/// The config a plan runs with: the file's, with the plan's state
/// directory, repository prefix and concurrency.
pub fn plan_config(plan: &ChildPlan) -> anyhow::Result<Config> {
    let mut config = crate::config::load(&plan.config)?;
    config.state_dir = plan.state_dir.clone();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    config.repositories = prefix_filter(&plan.repository_prefix)?;
    let c = plan.concurrency.max(1);
    config.concurrency.blobs = c;
    config.concurrency.blobs_per_region = c;
    Ok(config)
}

/// Repositories under `prefix` (which ends with `/`), at any depth.
pub fn prefix_filter(prefix: &str) -> anyhow::Result<RepositoryFilter> {
    let glob = globset::GlobBuilder::new(&format!("{}**", globset::escape(prefix)))
        .literal_separator(true)
        .build()
        .with_context(|| format!("repository prefix {prefix:?}"))?;
    let set = globset::GlobSetBuilder::new().add(glob).build()?;
    Ok(RepositoryFilter::new(Some(set), None))
}

/// `georep bench-child --plan F`: runs the plan, prints the result.
pub async fn run(plan_path: &Path) -> anyhow::Result<ChildResult> {
    let text = std::fs::read_to_string(plan_path)
        .with_context(|| format!("reading the bench plan {}", plan_path.display()))?;
    let plan: ChildPlan = serde_json::from_str(&text)
        .with_context(|| format!("parsing the bench plan {}", plan_path.display()))?;
    let config = plan_config(&plan)?;
    let mut result = match &plan.task {
        ChildTask::Raw { blobs } => raw(&config, blobs, plan.concurrency).await,
        ChildTask::Sync => sync(&config).await?,
    };
    result.peak_rss_bytes = crate::resources::peak_rss_bytes();
    result.cpu_secs = crate::resources::cpu_secs();
    Ok(result)
}

async fn raw(config: &Config, blobs: &[RawBlob], concurrency: usize) -> ChildResult {
    let http = http_client(&config.timeouts);
    let client = |r| Registry::new(r, http.clone(), config.timeouts, config.max_attempts);
    let Some(primary) = config.primary() else {
        return ChildResult {
            failures: vec![
                "the raw copy reads a primary: the benchmark needs a one-way config".to_owned(),
            ],
            ..ChildResult::default()
        };
    };
    let primary = client(primary);
    let regions: Vec<Registry> = config.regions.iter().map(client).collect();
    let moved = AtomicU64::new(0);
    let started = Instant::now();
    let copy = super::raw_copy_blobs(&primary, &regions, blobs, concurrency, Some(&moved));
    let outcome = with_progress(copy, || moved.load(Ordering::Relaxed)).await;
    ChildResult {
        elapsed_secs: started.elapsed().as_secs_f64(),
        bytes_uploaded: moved.load(Ordering::Relaxed),
        failures: outcome
            .err()
            .map(|e| format!("{e:#}"))
            .into_iter()
            .collect(),
        primary_requests: by_kind(&primary.stats()),
        region_requests: sum_by_kind(regions.iter().map(|r| r.stats())),
        ..ChildResult::default()
    }
}

async fn sync(config: &Config) -> anyhow::Result<ChildResult> {
    let store = Engine::open_store(config)?;
    let engine = Engine::new(config, store);
    let regions = config.regions.len();
    let uploaded = || {
        (0..regions)
            .map(|r| engine.copied(r).bytes_uploaded)
            .sum::<u64>()
    };
    let started = Instant::now();
    let report = with_progress(engine.sync(SyncOptions::default()), uploaded).await;
    Ok(ChildResult {
        elapsed_secs: started.elapsed().as_secs_f64(),
        bytes_uploaded: report.regions.iter().map(|r| r.bytes_uploaded).sum(),
        failures: report
            .failures
            .iter()
            .map(|f| {
                let what = match (&f.repository, &f.tag, &f.digest) {
                    (Some(r), Some(t), _) => format!("{r}:{t}"),
                    (Some(r), None, Some(d)) => format!("{r}@{d}"),
                    (Some(r), None, None) => r.clone(),
                    _ => String::new(),
                };
                format!("{} {what}: {}", f.region, f.cause)
            })
            .collect(),
        primary_requests: by_kind(&report.primary.requests),
        region_requests: sum_by_kind(report.regions.iter().map(|r| r.requests.clone())),
        ..ChildResult::default()
    })
}

/// Runs `work`, printing `done()` as a progress line every 200 ms.
async fn with_progress<T>(work: impl Future<Output = T>, done: impl Fn() -> u64) -> T {
    use std::io::Write as _;
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            out = &mut work => {
                let _ = writeln!(std::io::stderr(), "{PROGRESS_PREFIX}{}", done());
                return out;
            }
            _ = tick.tick() => {
                let _ = writeln!(std::io::stderr(), "{PROGRESS_PREFIX}{}", done());
            }
        }
    }
}

fn by_kind(s: &StatsSnapshot) -> BTreeMap<String, u64> {
    s.requests
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect()
}

fn sum_by_kind(stats: impl Iterator<Item = StatsSnapshot>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in stats {
        for (k, v) in s.requests {
            *out.entry(k.to_owned()).or_insert(0) += v;
        }
    }
    out
}

/// `georep bench-exec --out F -- CMD ARGS...`: runs the command, waits for
/// it, and writes the CPU time and peak RSS it used to `out` (from
/// `getrusage(RUSAGE_CHILDREN)`: this process has no other child).
pub fn exec(out: &Path, command: &[String]) -> anyhow::Result<ExecUsage> {
    let (program, args) = command
        .split_first()
        .context("bench-exec: no command given")?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let result = ExecUsage {
        cpu_secs: secs(usage.user_time()) + secs(usage.system_time()),
        // Linux reports KiB.
        peak_rss_bytes: usage.max_rss().max(0) as u64 * 1024,
        exit_code: status.code(),
    };
    std::fs::write(out, serde_json::to_vec(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_filter_takes_only_the_prefix() {
        let f = prefix_filter("georep-bench/").unwrap();
        assert!(f.allows("georep-bench/svc01"));
        assert!(f.allows("georep-bench/a/b"));
        assert!(!f.allows("georep-benchx/svc01"));
        assert!(!f.allows("library/georep-bench/x"));
        assert!(!f.allows("team/app"));
    }

    #[test]
    fn exec_measures_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("usage.json");
        let cmd = [
            "sh",
            "-c",
            "head -c 20000000 /dev/zero | sha256sum >/dev/null; exit 3",
        ]
        .map(String::from);
        let u = exec(&out, &cmd).unwrap();
        assert_eq!(u.exit_code, Some(3));
        assert!(u.peak_rss_bytes > 0);
        let again: ExecUsage = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(again.exit_code, Some(3));
    }
}
