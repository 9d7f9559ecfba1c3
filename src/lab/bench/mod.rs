//! Throughput measurement: `georep bench` ([`runner`]) and the raw
//! baseline georep is compared with.
//!
//! The baseline is the practical ceiling of a machine and its registries:
//! for every unique blob, one `GET` from the primary streamed into one
//! monolithic `PUT` per region, with no HEADs, no hashing and no manifests
//! — what a hand-written `curl | tee` pipeline would do. georep's
//! throughput is reported as a ratio to it, measured in the same run, which
//! stays meaningful on a noisy machine where absolute MiB/s do not.
//!
//! - [`runner`]: the runs, their order, the ratios; [`target`]: local
//!   registries or an operator's; [`child`]: each measured run as its own
//!   process; [`skopeo`]: the peer; [`verify`]: regions vs the primary;
//!   [`output`]: table and SVG chart; [`progress`]: bars or plain lines.

pub mod child;
pub mod output;
pub mod runner;
pub mod skopeo;
pub mod target;
pub mod verify;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::config::{RegistryConfig, Timeouts};
use crate::lab::corpus::Corpus;
use crate::registry::{Registry, RegistryError, http_client};

/// Chunks queued per region in the baseline's tee (as in georep's fan-out).
const TEE_QUEUE_CHUNKS: usize = 16;

/// What a baseline run moved.
#[derive(Clone, Debug)]
pub struct RawCopy {
    pub elapsed: Duration,
    pub blobs: usize,
    pub bytes: u64,
}

/// One blob of the raw baseline's work: where it is read and written.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RawBlob {
    pub repository: String,
    pub digest: crate::digest::Digest,
    pub size: u64,
}

/// Every unique blob of `corpus`, each in the first repository that holds it.
pub fn unique_blobs(corpus: &Corpus) -> Vec<RawBlob> {
    let mut seen = HashSet::new();
    let mut work = Vec::new();
    for (repo, blobs) in &corpus.blobs {
        for b in blobs.values() {
            if seen.insert(b.digest.clone()) {
                work.push(RawBlob {
                    repository: repo.clone(),
                    digest: b.digest.clone(),
                    size: b.size,
                });
            }
        }
    }
    work
}

/// The raw baseline over `work`, `concurrency` blobs at a time; `moved`
/// counts the bytes handed to the regions' uploads as they go.
pub async fn raw_copy_blobs(
    primary: &Registry,
    regions: &[Registry],
    work: &[RawBlob],
    concurrency: usize,
    moved: Option<&AtomicU64>,
) -> Result<RawCopy, RegistryError> {
    let bytes = work.iter().map(|b| b.size).sum();
    let blobs = work.len();
    let started = Instant::now();
    let mut copies = futures::stream::iter(work)
        .map(|b| {
            raw_copy_blob(
                primary,
                regions,
                &b.repository,
                &b.repository,
                &b.digest,
                b.size,
                moved,
            )
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = copies.next().await {
        r?;
    }
    Ok(RawCopy {
        elapsed: started.elapsed(),
        blobs,
        bytes,
    })
}

/// The baseline's copy of one blob: open a session in `to_repo` of every
/// region, GET it once from `from_repo` of the primary, stream it to every
/// region (monolithic PUTs), no checks.
pub async fn raw_copy_blob(
    primary: &Registry,
    regions: &[Registry],
    from_repo: &str,
    to_repo: &str,
    digest: &crate::digest::Digest,
    size: u64,
    moved: Option<&AtomicU64>,
) -> Result<(), RegistryError> {
    let mut sessions = Vec::with_capacity(regions.len());
    for r in regions {
        sessions.push(r.start_upload(to_repo).await?);
    }
    let mut src = primary.get_blob(from_repo, digest).await?;
    let mut senders = Vec::new();
    let mut puts = Vec::new();
    for (r, s) in regions.iter().zip(&sessions) {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(TEE_QUEUE_CHUNKS);
        senders.push(tx);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        puts.push(r.put_upload(s, digest, size, body));
    }
    let pump = async {
        while let Some(chunk) = src.next().await {
            let chunk = chunk?;
            if let Some(m) = moved {
                m.fetch_add((chunk.len() * senders.len()) as u64, Ordering::Relaxed);
            }
            for tx in &senders {
                // A failed PUT shows in its own result.
                let _ = tx.send(Ok(chunk.clone())).await;
            }
        }
        drop(senders);
        Ok::<(), RegistryError>(())
    };
    let (pumped, results) = tokio::join!(pump, futures::future::join_all(puts));
    pumped?;
    for r in results {
        r?;
    }
    Ok(())
}

/// The baseline's copy of one image from `from_repo` on the primary to
/// `to_repo` in every region: its blobs (one read each, fanned out), then
/// the manifest under `tag`. Returns how long it took.
pub async fn raw_copy_image(
    primary: &Registry,
    regions: &[Registry],
    from_repo: &str,
    to_repo: &str,
    tag: &str,
    manifest: &crate::registry::Manifest,
) -> Result<Duration, RegistryError> {
    let started = Instant::now();
    let refs = manifest.references().map_err(|e| RegistryError::Protocol {
        method: reqwest::Method::GET,
        url: primary.url().to_owned(),
        reason: e.to_string(),
    })?;
    let blobs = refs.blobs.iter().map(|b| {
        raw_copy_blob(
            primary, regions, from_repo, to_repo, &b.digest, b.size, None,
        )
    });
    futures::future::join_all(blobs)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    let puts = regions
        .iter()
        .map(|r| r.put_manifest(to_repo, tag, manifest));
    futures::future::join_all(puts)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    Ok(started.elapsed())
}

/// A local primary and `regions` replicas, and a georep config naming them
/// (`state_dir` inside `dir`), for the benchmarks.
pub struct LocalSetup {
    pub primary: crate::lab::localreg::LocalRegistry,
    pub replicas: Vec<crate::lab::localreg::LocalRegistry>,
    pub config: std::path::PathBuf,
}

impl LocalSetup {
    /// Starts the registries under `dir`; `extra_yaml` is appended to the config.
    pub async fn start(
        dir: &std::path::Path,
        regions: usize,
        extra_yaml: &str,
    ) -> anyhow::Result<LocalSetup> {
        Self::start_with(
            dir,
            regions,
            extra_yaml,
            crate::lab::localreg::LocalOptions::default(),
        )
        .await
    }

    /// As [`LocalSetup::start`], with options for the primary (e.g. its
    /// notifications).
    pub async fn start_with(
        dir: &std::path::Path,
        regions: usize,
        extra_yaml: &str,
        primary: crate::lab::localreg::LocalOptions,
    ) -> anyhow::Result<LocalSetup> {
        let mut free = crate::lab::localreg::Ports::default();
        Self::start_on(dir, regions, extra_yaml, primary, &mut free).await
    }

    /// As [`LocalSetup::start_with`], the replicas on ports from `ports`.
    pub async fn start_on(
        dir: &std::path::Path,
        regions: usize,
        extra_yaml: &str,
        primary: crate::lab::localreg::LocalOptions,
        ports: &mut crate::lab::localreg::Ports,
    ) -> anyhow::Result<LocalSetup> {
        use crate::lab::localreg::LocalRegistry;
        let primary = LocalRegistry::start(&dir.join("primary"), primary).await?;
        let mut replicas = Vec::new();
        for i in 0..regions {
            replicas
                .push(LocalRegistry::start(&dir.join(format!("r{i}")), ports.options()?).await?);
        }
        let mut yaml = format!(
            "state_dir: ./state\nprimary:\n  name: primary\n  url: {}\nregions:\n",
            primary.url()
        );
        for (i, r) in replicas.iter().enumerate() {
            yaml.push_str(&format!("  - name: r{i}\n    url: {}\n", r.url()));
        }
        yaml.push_str(extra_yaml);
        yaml.push('\n');
        let config = dir.join("georep.yaml");
        std::fs::write(&config, yaml)?;
        Ok(LocalSetup {
            primary,
            replicas,
            config,
        })
    }
}

/// An anonymous client for a local registry at `url`.
pub fn client(url: &str) -> Result<Registry, url::ParseError> {
    let t = Timeouts::default();
    Ok(Registry::new(
        &RegistryConfig::new("bench", url)?,
        http_client(&t),
        t,
        crate::config::DEFAULT_MAX_ATTEMPTS,
    ))
}

/// The primary's listing alone, as georep lists it (catalog, tags/list per
/// repository, a `HEAD` per tag, with georep's client and concurrency):
/// the floor of a no-op pass. Seconds, and tags listed.
pub async fn listing_alone(url: &str) -> anyhow::Result<(f64, usize)> {
    let p = client(url)?;
    let t = Instant::now();
    let names = p.catalog().await?;
    let mut per_repo = futures::stream::iter(names)
        .map(|repo| {
            let p = &p;
            async move {
                let scope = crate::registry::Scope::pull(&repo);
                let tags = p.tags(&repo, &scope).await?.unwrap_or_default();
                let heads = futures::stream::iter(tags)
                    .map(|tag| {
                        let (repo, scope) = (&repo, &scope);
                        async move { p.head_manifest(repo, &tag, scope).await }
                    })
                    .buffer_unordered(8)
                    .collect::<Vec<_>>()
                    .await;
                let n = heads.len();
                heads.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok::<usize, RegistryError>(n)
            }
        })
        .buffer_unordered(4);
    let mut listed = 0;
    while let Some(n) = per_repo.next().await {
        listed += n?;
    }
    Ok((t.elapsed().as_secs_f64(), listed))
}

/// A benchmark's knob: environment variable `name` as a number, else
/// `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`-th percentile (0–100) of `sorted` (nearest rank); NaN when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A client that pushes as people do: with another user agent than
/// georep's (in any-region mode georep takes events made with its own as
/// its own writes).
pub fn people_client(url: &str) -> Result<Registry, url::ParseError> {
    let t = Timeouts::default();
    let http = reqwest::Client::builder()
        .user_agent(PEOPLE_USER_AGENT)
        .connect_timeout(t.connect)
        .build()
        .unwrap_or_default();
    Ok(Registry::new(
        &RegistryConfig::new("people", url)?,
        http,
        t,
        crate::config::DEFAULT_MAX_ATTEMPTS,
    ))
}

/// The user agent of [`people_client`]: Docker's shape.
pub const PEOPLE_USER_AGENT: &str = "docker/27.4.0 go/go1.22.10 (georep lab)";

/// Runs `georep sync --json` (the binary at `georep`) on `config`; returns
/// the wall time and the parsed report. `GEOREP_LOG` is passed through
/// (default `warn`); with `GEOREP_BENCH_LOG` set, stderr is appended there.
pub async fn run_sync(
    georep: &std::path::Path,
    config: &std::path::Path,
) -> anyhow::Result<(f64, serde_json::Value)> {
    use anyhow::Context as _;
    let started = Instant::now();
    let out = tokio::process::Command::new(georep)
        .args(["sync", "--json", "--config"])
        .arg(config)
        .env(
            "GEOREP_LOG",
            std::env::var("GEOREP_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .output()
        .await
        .with_context(|| format!("running {}", georep.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if let Ok(path) = std::env::var("GEOREP_BENCH_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(&out.stderr);
        }
    }
    if !out.status.success() {
        anyhow::bail!(
            "georep sync failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((secs, serde_json::from_slice(&out.stdout)?))
}

/// Requests a sync report says were sent to all replicas.
pub fn replica_requests(report: &serde_json::Value) -> u64 {
    report["regions"]
        .as_array()
        .map(|regions| {
            regions
                .iter()
                .filter_map(|r| r["requests"]["requests"].as_object())
                .flat_map(|m| m.values().filter_map(|v| v.as_u64()))
                .sum()
        })
        .unwrap_or(0)
}
