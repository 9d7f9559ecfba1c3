//! `georep bench`: one corpus, several ways of copying it to every region,
//! measured side by side in one invocation.
//!
//! For each concurrency level (one, or several with `--sweep`) and round:
//! the raw baseline, then a georep cold sync (fresh state directory), each
//! on wiped regions; after a level's last round a no-op sync on the same
//! state. Then, once, skopeo as a peer. Every run is verified; a run whose
//! regions differ from the primary is reported as failed. Throughput is
//! unique blob bytes / wall seconds, and the figures to read are the
//! ratios — georep to the raw baseline and to skopeo — which stay
//! meaningful on a noisy machine where absolute MiB/s do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

use super::child::{ChildPlan, ChildResult, ChildTask, PROGRESS_PREFIX};
use super::target::{PREFIX, ServerRequests, Target};
use super::verify::{self, Expect};
use crate::lab::corpus::{Corpus, CorpusSpec};
use crate::progress::{Phase, Progress, ProgressMode};
use crate::units::human_bytes;

/// Whether skopeo runs as a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// When `skopeo` is installed.
    Auto,
    /// Always (fails without skopeo).
    Always,
    Never,
}

pub struct BenchOptions {
    /// The georep binary the measured runs are started from.
    pub georep: PathBuf,
    /// The corpus's name in the report (a preset or "custom").
    pub corpus_name: String,
    pub spec: CorpusSpec,
    /// An operator's config; `None` starts local registries.
    pub config: Option<PathBuf>,
    /// Regions to start (local only).
    pub regions: usize,
    /// The local registries' first port (`None`: free ports).
    pub port_base: Option<u16>,
    /// Working directory (default: a temporary one, removed at the end).
    pub dir: Option<PathBuf>,
    /// Keep the working directory, and on an operator's registries the
    /// benchmark's repositories.
    pub keep: bool,
    /// Blobs in flight per level; empty: the config's `max_concurrent_blobs`.
    pub levels: Vec<usize>,
    pub rounds: usize,
    pub skopeo: Peer,
    /// Read every blob back from every region and hash it.
    pub read_back: bool,
    pub progress: ProgressMode,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    /// "local" or the config file.
    pub target: String,
    pub primary: String,
    pub regions: Vec<String>,
    pub corpus: CorpusSummary,
    pub runs: Vec<RunResult>,
    pub summary: Summary,
    /// Things worth knowing that are not runs (skopeo skipped, cleanup).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorpusSummary {
    pub name: String,
    pub seed: u64,
    pub repositories: usize,
    pub tags: usize,
    pub manifests: usize,
    pub unique_blobs: usize,
    pub unique_blob_bytes: u64,
    pub largest_blob_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Raw,
    Georep,
    GeorepNoop,
    Skopeo,
}

impl RunKind {
    pub fn label(self) -> &'static str {
        match self {
            RunKind::Raw => "raw",
            RunKind::Georep => "georep",
            RunKind::GeorepNoop => "georep no-op",
            RunKind::Skopeo => "skopeo",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub kind: RunKind,
    /// Blobs in flight (`None` for skopeo, which has no such knob).
    pub concurrency: Option<usize>,
    pub round: usize,
    pub wall_secs: f64,
    /// Unique blob bytes / wall seconds; `None` for a no-op or a failed run.
    pub mib_per_sec: Option<f64>,
    pub bytes_uploaded: Option<u64>,
    /// Requests by kind: server-side (registry logs) for local registries,
    /// else as the client counted them (none for skopeo).
    pub requests: Option<Requests>,
    pub peak_rss_bytes: Option<u64>,
    pub cpu_secs: Option<f64>,
    /// CPU seconds of all local registry processes during the run.
    pub registry_cpu_secs: Option<f64>,
    /// Throughput relative to the raw baseline of the same level and round.
    pub ratio_to_raw: Option<f64>,
    /// Throughput relative to skopeo.
    pub ratio_to_skopeo: Option<f64>,
    /// Regions byte-identical to the primary afterwards.
    pub verified: bool,
    pub verify_secs: f64,
    /// Why the run failed (copy or verification), if it did.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Requests {
    /// "registry logs" or "client".
    pub source: &'static str,
    pub primary: BTreeMap<String, u64>,
    pub replicas: BTreeMap<String, u64>,
}

impl Requests {
    pub fn replica_total(&self) -> u64 {
        self.replicas.values().sum()
    }
    pub fn primary_total(&self) -> u64 {
        self.primary.values().sum()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Per level: georep's throughput / the raw baseline's (mean, min, max
    /// over rounds).
    pub georep_vs_raw: Vec<LevelRatio>,
    /// georep's throughput / skopeo's, georep at `compared_level`.
    pub georep_vs_skopeo: Option<f64>,
    /// The level georep is compared with skopeo (and skopeo with raw) at:
    /// the configured one, or georep's best when a sweep left it out.
    pub compared_level: usize,
    /// Requests the no-op syncs sent to the regions (the most of any level).
    pub noop_replica_requests: Option<u64>,
    /// The highest peak RSS of any georep run.
    pub georep_peak_rss_bytes: Option<u64>,
    pub all_verified: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct LevelRatio {
    pub concurrency: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Mean MiB/s of each side.
    pub raw_mib_per_sec: f64,
    pub georep_mib_per_sec: f64,
}

impl BenchReport {
    pub fn ok(&self) -> bool {
        self.summary.all_verified && self.runs.iter().all(|r| r.error.is_none())
    }
}

/// Removes a temporary working directory when dropped.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let progress = Progress::new(opts.progress);
    let (dir, temporary) = crate::lab::localreg::work_dir(opts.dir.as_deref(), "georep-bench")?;
    // Declared before the registries: dropped (removed) after they stop.
    let _cleanup = TempDir((temporary && !opts.keep).then(|| dir.clone()));

    let mut target = match &opts.config {
        Some(path) => Target::configured(path)?,
        None => {
            progress.note(&format!(
                "starting a local primary and {} regions in {}",
                opts.regions,
                dir.display()
            ));
            Target::local(&dir.join("registries"), opts.regions, opts.port_base).await?
        }
    };
    if let Some(bad) = opts
        .spec
        .repositories
        .iter()
        .find(|r| !r.starts_with(PREFIX))
    {
        bail!("the benchmark writes only under {PREFIX}, not to {bad:?}");
    }

    let phase = progress.phase("generating corpus", None);
    let corpus = Corpus::generate(&opts.spec).await;
    let bytes = corpus.unique_blob_bytes();
    phase.finish(&format!(
        "{} tags, {} unique blobs, {}",
        corpus.tags.len(),
        corpus.unique_blobs(),
        human_bytes(bytes)
    ));

    let (primary, _) = target.clients();
    primary.ping().await.with_context(|| {
        format!(
            "the primary {} ({}) does not answer",
            primary.name(),
            primary.url()
        )
    })?;
    let phase = progress.phase("pushing corpus to primary", None);
    corpus.push(&primary).await.with_context(|| {
        format!(
            "pushing the benchmark corpus to the primary {} ({})",
            primary.name(),
            primary.url()
        )
    })?;
    phase.finish("done");

    let mut notes = Vec::new();
    let skopeo = match opts.skopeo {
        Peer::Never => None,
        Peer::Auto | Peer::Always => match super::skopeo::version().await {
            Some(v) => Some(v),
            None if opts.skopeo == Peer::Always => {
                bail!(
                    "skopeo is not installed (apt-get install skopeo), and --skopeo always was given"
                )
            }
            None => {
                notes.push("skopeo is not installed: its run was skipped".to_owned());
                None
            }
        },
    };

    let levels = if opts.levels.is_empty() {
        vec![target.config().concurrency.blobs]
    } else {
        opts.levels.clone()
    };
    let mut bench = Bench {
        opts,
        progress,
        dir: dir.clone(),
        corpus: &corpus,
        bytes,
        runs: Vec::new(),
    };
    let result = bench.measure(&mut target, &levels, skopeo.as_deref()).await;
    if !opts.keep {
        notes.extend(target.cleanup(&corpus).await);
    }
    result?;

    let config = target.config();
    let mut report = BenchReport {
        machine: machine(),
        target: match &opts.config {
            Some(p) => p.display().to_string(),
            None => "local registries".to_owned(),
        },
        primary: config
            .primary()
            .map_or_else(|| "(any-region)".to_owned(), |p| p.display_url()),
        regions: config.regions.iter().map(|r| r.name.clone()).collect(),
        corpus: CorpusSummary {
            name: opts.corpus_name.clone(),
            seed: opts.spec.seed,
            repositories: corpus.manifests.len(),
            tags: corpus.tags.len(),
            manifests: corpus.manifests.values().map(Vec::len).sum(),
            unique_blobs: corpus.unique_blobs(),
            unique_blob_bytes: bytes,
            largest_blob_bytes: corpus
                .blobs
                .values()
                .flat_map(|b| b.values())
                .map(|b| b.size)
                .max()
                .unwrap_or(0),
        },
        runs: bench.runs,
        summary: Summary::default(),
        notes,
    };
    if let Some(v) = skopeo {
        report.notes.push(format!(
            "skopeo peer: {v}; one `skopeo sync --all --preserve-digests` per repository, regions side by side"
        ));
    }
    if opts.keep || !temporary {
        report.notes.push(format!(
            "working directory (logs, plans): {}",
            dir.display()
        ));
    }
    // skopeo (no such knob) is compared with georep at the configured
    // level if it was measured, else at georep's best.
    summarize(&mut report, target.config().concurrency.blobs);
    Ok(report)
}

struct Bench<'a> {
    opts: &'a BenchOptions,
    progress: Progress,
    dir: PathBuf,
    corpus: &'a Corpus,
    bytes: u64,
    runs: Vec<RunResult>,
}

impl Bench<'_> {
    async fn measure(
        &mut self,
        target: &mut Target,
        levels: &[usize],
        skopeo: Option<&str>,
    ) -> anyhow::Result<()> {
        let regions = target.config().regions.len() as u64;
        let total = self.bytes * regions;
        for &level in levels {
            let mut state = PathBuf::new();
            for round in 1..=self.opts.rounds.max(1) {
                let name = format!("raw c={level} #{round}");
                target.wipe_regions(self.corpus).await?;
                let task = ChildTask::Raw {
                    blobs: super::unique_blobs(self.corpus),
                };
                let state_dir = self.dir.join(format!("state-raw-{level}-{round}"));
                self.child_run(
                    target,
                    RunKind::Raw,
                    &name,
                    level,
                    round,
                    task,
                    &state_dir,
                    Some(total),
                )
                .await?;

                let name = format!("georep c={level} #{round}");
                target.wipe_regions(self.corpus).await?;
                state = self.dir.join(format!("state-{level}-{round}"));
                let _ = std::fs::remove_dir_all(&state);
                self.child_run(
                    target,
                    RunKind::Georep,
                    &name,
                    level,
                    round,
                    ChildTask::Sync,
                    &state,
                    Some(total),
                )
                .await?;
            }
            let name = format!("georep no-op c={level}");
            self.child_run(
                target,
                RunKind::GeorepNoop,
                &name,
                level,
                self.opts.rounds.max(1),
                ChildTask::Sync,
                &state,
                None,
            )
            .await?;
        }
        if skopeo.is_some() {
            target.wipe_regions(self.corpus).await?;
            self.skopeo_run(target, total).await?;
        }
        Ok(())
    }

    /// One measured child run, verified, recorded.
    #[allow(clippy::too_many_arguments)]
    async fn child_run(
        &mut self,
        target: &Target,
        kind: RunKind,
        name: &str,
        level: usize,
        round: usize,
        task: ChildTask,
        state_dir: &Path,
        total: Option<u64>,
    ) -> anyhow::Result<()> {
        let plan = ChildPlan {
            config: target.config_path().to_owned(),
            state_dir: state_dir.to_owned(),
            repository_prefix: PREFIX.to_owned(),
            concurrency: level,
            task,
        };
        let marks = target.marks().await;
        let cpu0 = target.registries_cpu();
        let phase = self.progress.phase(name, total);
        let (wall, child) = self.spawn_child(&plan, name, &phase).await?;
        let registry_cpu = cpu0.zip(target.registries_cpu()).map(|(a, b)| b - a);
        let server = match &marks {
            Some(m) => target.requests_since(m).await,
            None => None,
        };
        let requests = Some(match server {
            Some(s) => from_server(s),
            None => Requests {
                source: "client",
                primary: child.primary_requests.clone(),
                replicas: child.region_requests.clone(),
            },
        });
        let expect = if kind == RunKind::Raw {
            Expect::Blobs
        } else {
            Expect::Images
        };
        // The no-op changed nothing; its check need not read every blob again.
        let read_back = self.opts.read_back && kind != RunKind::GeorepNoop;
        let mut error = (!child.failures.is_empty()).then(|| {
            format!(
                "{} failure(s), first: {}",
                child.failures.len(),
                child.failures[0]
            )
        });
        let outcome = match (&requests, kind) {
            (Some(q), RunKind::GeorepNoop) => {
                format!("{} requests to the regions", q.replica_total())
            }
            _ => format!(
                "{:.1} MiB/s of unique blobs",
                self.bytes as f64 / (1 << 20) as f64 / wall
            ),
        };
        let failed = if error.is_some() {
            " (with failures)"
        } else {
            ""
        };
        phase.finish(&format!("{outcome}{failed}"));
        let (verified, verify_secs, verify_error) = self.verify(target, expect, read_back).await;
        if error.is_none() {
            error = verify_error;
        }
        self.runs.push(RunResult {
            kind,
            concurrency: Some(level),
            round,
            wall_secs: wall,
            mib_per_sec: None,
            bytes_uploaded: Some(child.bytes_uploaded),
            requests,
            peak_rss_bytes: child.peak_rss_bytes,
            cpu_secs: child.cpu_secs,
            registry_cpu_secs: registry_cpu,
            ratio_to_raw: None,
            ratio_to_skopeo: None,
            verified,
            verify_secs,
            error,
        });
        Ok(())
    }

    async fn skopeo_run(&mut self, target: &Target, total: u64) -> anyhow::Result<()> {
        let config = target.config();
        let authfile = super::skopeo::write_authfile(config, &self.dir)?;
        let repos: Vec<String> = self.corpus.manifests.keys().cloned().collect();
        let invocations = super::skopeo::invocations(config, &repos, authfile.as_deref())?;
        let marks = target.marks().await;
        let cpu0 = target.registries_cpu();
        let disk0 = target.replica_disk_bytes();
        let phase = self.progress.phase("skopeo sync", disk0.map(|_| total));
        let log = self.dir.join("skopeo.log");
        let run = super::skopeo::run(&self.opts.georep, invocations, &self.dir, &log);
        let mut run = std::pin::pin!(run);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let run = loop {
            tokio::select! {
                r = &mut run => break r?,
                _ = tick.tick() => {
                    if let (Some(d0), Some(d)) = (disk0, target.replica_disk_bytes()) {
                        phase.set(d.saturating_sub(d0));
                    }
                }
            }
        };
        if let Some(path) = authfile {
            let _ = std::fs::remove_file(path);
        }
        phase.finish(&format!(
            "{:.1} MiB/s of unique blobs",
            self.bytes as f64 / (1 << 20) as f64 / run.elapsed_secs
        ));
        let registry_cpu = cpu0.zip(target.registries_cpu()).map(|(a, b)| b - a);
        let server = match &marks {
            Some(m) => target.requests_since(m).await,
            None => None,
        };
        let (verified, verify_secs, verify_error) = self
            .verify(target, Expect::Images, self.opts.read_back)
            .await;
        let error = run
            .failures
            .first()
            .map(|f| format!("{} failure(s), first: {f}", run.failures.len()))
            .or(verify_error);
        self.runs.push(RunResult {
            kind: RunKind::Skopeo,
            concurrency: None,
            round: 1,
            wall_secs: run.elapsed_secs,
            mib_per_sec: None,
            bytes_uploaded: None,
            requests: server.map(from_server),
            peak_rss_bytes: Some(run.peak_rss_bytes),
            cpu_secs: Some(run.cpu_secs),
            registry_cpu_secs: registry_cpu,
            ratio_to_raw: None,
            ratio_to_skopeo: None,
            verified,
            verify_secs,
            error,
        });
        Ok(())
    }

    /// Checks every region; (verified, seconds, first problem).
    async fn verify(
        &self,
        target: &Target,
        expect: Expect,
        read_back: bool,
    ) -> (bool, f64, Option<String>) {
        let phase = self.progress.phase("verifying regions", None);
        let started = Instant::now();
        let (_, regions) = target.clients();
        let checks = regions
            .iter()
            .map(|r| verify::region(r, self.corpus, expect, read_back));
        let problems: Vec<String> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        let secs = started.elapsed().as_secs_f64();
        match problems.first() {
            None => {
                phase.finish(if read_back {
                    "every region byte-identical (all blobs read back and hashed)"
                } else {
                    "every region identical (tags, manifests, blob presence and sizes)"
                });
                (true, secs, None)
            }
            Some(p) => {
                phase.finish(&format!("FAILED: {p}"));
                (false, secs, Some(format!("verification: {p}")))
            }
        }
    }

    /// Runs `georep bench-child` on `plan`; its wall time and result.
    async fn spawn_child(
        &self,
        plan: &ChildPlan,
        name: &str,
        phase: &Phase,
    ) -> anyhow::Result<(f64, ChildResult)> {
        let file = name.replace([' ', '=', '#'], "_").replace("__", "_");
        let plan_path = self.dir.join(format!("plan-{file}.json"));
        std::fs::write(&plan_path, serde_json::to_vec_pretty(plan)?)
            .with_context(|| format!("writing {}", plan_path.display()))?;
        let log_path = self.dir.join(format!("{file}.log"));
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&self.opts.georep)
            .arg("bench-child")
            .arg("--plan")
            .arg(&plan_path)
            .env(
                "GEOREP_LOG",
                std::env::var("GEOREP_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.opts.georep.display()))?;
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let read_out = async {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s).await;
            s
        };
        let read_err = async {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut kept = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix(PROGRESS_PREFIX) {
                    Some(n) => phase.set(n.trim().parse().unwrap_or(0)),
                    None => kept.push(line),
                }
            }
            kept
        };
        let (out, logged, status) = tokio::join!(read_out, read_err, child.wait());
        let wall = started.elapsed().as_secs_f64();
        let status = status?;
        let _ = std::fs::write(&log_path, logged.join("\n"));
        if !status.success() {
            let tail = logged[logged.len().saturating_sub(10)..].join("\n");
            bail!("the {name} run failed ({status}):\n{tail}");
        }
        let result: ChildResult = serde_json::from_str(&out)
            .with_context(|| format!("reading the {name} run's result"))?;
        Ok((wall, result))
    }
}

fn from_server(s: ServerRequests) -> Requests {
    Requests {
        source: "registry logs",
        primary: s.primary,
        replicas: s.replicas,
    }
}

/// Throughput, ratios and the summary, once every run is in.
fn summarize(report: &mut BenchReport, preferred_level: usize) {
    let mib = report.corpus.unique_blob_bytes as f64 / (1 << 20) as f64;
    for r in &mut report.runs {
        if r.kind != RunKind::GeorepNoop && r.error.is_none() && r.verified {
            r.mib_per_sec = Some(mib / r.wall_secs);
        }
    }
    let raw_of = |runs: &[RunResult], level: Option<usize>, round: usize| {
        runs.iter()
            .find(|r| r.kind == RunKind::Raw && r.concurrency == level && r.round == round)
            .and_then(|r| r.mib_per_sec)
    };
    let skopeo = report
        .runs
        .iter()
        .find(|r| r.kind == RunKind::Skopeo)
        .and_then(|r| r.mib_per_sec);
    let levels: Vec<usize> = report.runs.iter().filter_map(|r| r.concurrency).collect();
    let best = |kind| {
        report
            .runs
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| Some((r.concurrency?, r.mib_per_sec?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c)
    };
    let default_level = if levels.contains(&preferred_level) {
        preferred_level
    } else {
        best(RunKind::Georep)
            .or(levels.first().copied())
            .unwrap_or(preferred_level)
    };
    let snapshot = report.runs.clone();
    for r in &mut report.runs {
        let Some(v) = r.mib_per_sec else { continue };
        r.ratio_to_raw = match r.kind {
            RunKind::Skopeo => raw_of(&snapshot, Some(default_level), 1).map(|raw| v / raw),
            _ => raw_of(&snapshot, r.concurrency, r.round).map(|raw| v / raw),
        };
        r.ratio_to_skopeo = skopeo.map(|s| v / s);
    }
    let mut levels = levels;
    levels.dedup();
    let mut summary = Summary {
        all_verified: report.runs.iter().all(|r| r.verified),
        compared_level: default_level,
        ..Summary::default()
    };
    for level in levels {
        let pairs: Vec<(f64, f64)> = report
            .runs
            .iter()
            .filter(|r| r.kind == RunKind::Georep && r.concurrency == Some(level))
            .filter_map(|r| {
                Some((
                    r.mib_per_sec?,
                    raw_of(&report.runs, r.concurrency, r.round)?,
                ))
            })
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let ratios: Vec<f64> = pairs.iter().map(|(g, r)| g / r).collect();
        let n = pairs.len() as f64;
        summary.georep_vs_raw.push(LevelRatio {
            concurrency: level,
            mean: ratios.iter().sum::<f64>() / n,
            min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max: ratios.iter().copied().fold(0.0, f64::max),
            raw_mib_per_sec: pairs.iter().map(|p| p.1).sum::<f64>() / n,
            georep_mib_per_sec: pairs.iter().map(|p| p.0).sum::<f64>() / n,
        });
    }
    summary.georep_vs_skopeo = skopeo.and_then(|s| {
        summary
            .georep_vs_raw
            .iter()
            .find(|l| l.concurrency == default_level)
            .map(|l| l.georep_mib_per_sec / s)
    });
    summary.noop_replica_requests = report
        .runs
        .iter()
        .filter(|r| r.kind == RunKind::GeorepNoop)
        .filter_map(|r| r.requests.as_ref().map(Requests::replica_total))
        .max();
    summary.georep_peak_rss_bytes = report
        .runs
        .iter()
        .filter(|r| matches!(r.kind, RunKind::Georep | RunKind::GeorepNoop))
        .filter_map(|r| r.peak_rss_bytes)
        .max();
    report.summary = summary;
}

fn machine() -> Machine {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        os: format!("{} {kernel}", std::env::consts::OS)
            .trim()
            .to_owned(),
    }
}
