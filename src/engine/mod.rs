//! The replication engine: make every region match the primary.
//!
//! A pass lists the primary ([`listing`]), groups tags by the manifest they
//! point at, and copies each such image ([`copy`]) to the regions whose tag
//! differs: blobs first ([`blob`], one read fanned out to all regions that
//! lack it, [`fanout`]), then child manifests by digest, bottom-up, then the
//! tags. A region therefore never serves a tag that points at missing
//! content, even if the pass is killed midway (DESIGN invariant 3).
//!
//! Every step is idempotent: a region that already has a blob or manifest
//! is detected (HEAD, or a fact learnt earlier in this process, [`facts`])
//! and skipped, so running a pass again after any failure only does what is
//! left.

pub mod blob;
pub mod cause;
pub mod copy;
pub mod dry;
pub mod facts;
pub mod fanout;
pub mod listing;
pub mod locks;
pub mod pass;
pub mod regions;
pub mod report;
pub mod source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::config::{Concurrency, Config, RepositoryFilter, Timeouts};
use crate::digest::Digest;
use crate::registry::{Registry, StatsSnapshot, http_client};
use crate::store::Store;
use facts::{Facts, RegionId, RegionRepos, RepoState};
use locks::KeyedLocks;
pub use pass::{Pass, Priority};
pub use report::{Failure, RegionReport, SyncReport, TagReport, TagState};
pub use source::Source;

/// Blob reads only fresh work may use, beyond `max_concurrent_blobs`.
pub const EXPRESS_READS: usize = 2;
/// Blob uploads per region only fresh work may use, beyond
/// `max_concurrent_blobs_per_region`.
pub const EXPRESS_UPLOADS: usize = 2;

/// Where the store lives inside the state directory.
pub fn store_path(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("store")
}

/// The regions as the store knows them: (name, URL), in config order.
fn region_names(config: &Config) -> Vec<(String, String)> {
    config
        .regions
        .iter()
        .map(|r| (r.name.clone(), r.display_url()))
        .collect()
}

/// Tags listed one by one in a report; beyond, they are only counted.
/// How long a failing registry's `GET /v2/` may take at the end of a pass.
const REGISTRY_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
pub const MAX_TAG_DETAILS: usize = 1000;

/// Image jobs listed but not yet started, at most.
const JOB_QUEUE: usize = 64;
/// Repositories listed (any-region mode) but not yet decided, at most.
const LIST_QUEUE: usize = 8;

/// The engine for one primary and its regions. Cheap to share; one per
/// process is enough, and facts learnt in one pass speed up the next.
pub struct Engine {
    /// The primary, in one-way mode.
    primary: Option<Arc<Registry>>,
    regions: Vec<Arc<Registry>>,
    filter: RepositoryFilter,
    limits: Concurrency,
    timeouts: Timeouts,
    max_attempts: u32,
    /// Blob reads from the primary in flight (each fanned out).
    blob_reads: Arc<Semaphore>,
    /// Extra reads for fresh work ([`Priority::Fresh`]).
    express_reads: Arc<Semaphore>,
    /// Blob uploads in flight, per region.
    region_uploads: Vec<Arc<Semaphore>>,
    /// Extra uploads per region for fresh work ([`Priority::Fresh`]).
    express_uploads: Vec<Arc<Semaphore>>,
    blob_locks: KeyedLocks<(RegionId, Digest)>,
    /// Each region's bandwidth limit, which decides who shares a read.
    byte_limits: Vec<Option<u64>>,
    manifest_locks: KeyedLocks<(String, Digest)>,
    facts: Facts,
    region_repos: RegionRepos,
    counters: Vec<RegionCounters>,
    /// Per region: people push there (any-region mode).
    writable: Vec<bool>,
    /// How any-region mode decides between regions.
    rules: crate::merge::Rules,
    /// The repositories this instance looks after (a cluster member's
    /// share); `None`: all.
    share: Option<Share>,
}

/// Which repositories an instance looks after.
pub type Share = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Writes to one region, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyCounts {
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_mounted: u64,
    pub manifests_pushed: u64,
}

impl std::ops::Sub for CopyCounts {
    type Output = CopyCounts;
    /// What was written between two readings (`self` the later one).
    fn sub(self, before: CopyCounts) -> CopyCounts {
        CopyCounts {
            blobs_uploaded: self.blobs_uploaded - before.blobs_uploaded,
            bytes_uploaded: self.bytes_uploaded - before.bytes_uploaded,
            blobs_mounted: self.blobs_mounted - before.blobs_mounted,
            manifests_pushed: self.manifests_pushed - before.manifests_pushed,
        }
    }
}

#[derive(Default)]
struct RegionCounters {
    blobs_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    blobs_mounted: AtomicU64,
    manifests_pushed: AtomicU64,
}

/// How a `georep sync` pass treats what the store says (see [`Pass`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Trust nothing recorded: check every manifest and blob in every region,
    /// correct the store, copy whatever is missing.
    pub verify: bool,
    /// Write nothing: count what would be copied ([`dry`]).
    pub dry_run: bool,
}

impl SyncOptions {
    /// The pass these options ask for: backfill priority, with the modes.
    pub fn pass(self) -> Pass {
        let pass = Pass::new(Priority::Backfill);
        let pass = if self.verify { pass.verifying() } else { pass };
        if self.dry_run { pass.dry_run() } else { pass }
    }
}

impl Engine {
    /// Opens the store in the config's state directory for this config's
    /// regions.
    pub fn open_store(config: &Config) -> Result<Arc<Store>, crate::store::StoreError> {
        Ok(Arc::new(Store::open(
            &store_path(config),
            &region_names(config),
        )?))
    }

    /// A temporary store for this config's regions, gone when dropped
    /// (a dry run with no store yet).
    pub fn temporary_store(config: &Config) -> Result<Arc<Store>, crate::store::StoreError> {
        Ok(Arc::new(Store::open_temporary(&region_names(config))?))
    }

    pub fn new(config: &Config, store: Arc<Store>) -> Engine {
        let http = http_client(&config.timeouts);
        // A cluster member names itself in every request.
        let agent = config
            .cluster
            .as_ref()
            .map(|c| format!("{} (instance {})", crate::http::USER_AGENT, c.instance_id));
        let named = |r: Registry| match &agent {
            Some(a) => r.with_agent(a),
            None => r,
        };
        let primary = config.primary().map(|p| {
            Arc::new(named(Registry::new(
                p,
                http.clone(),
                config.timeouts,
                config.max_attempts,
            )))
        });
        // All regions' uploads together, when the operator caps the link
        // they share.
        let total = config
            .total_max_bytes_per_sec
            .map(|b| Arc::new(crate::registry::limit::ByteLimiter::new(b)));
        let regions: Vec<Arc<Registry>> = config
            .regions
            .iter()
            .map(|r| {
                Arc::new(named(
                    Registry::new(r, http.clone(), config.timeouts, config.max_attempts)
                        .with_shared_bytes(total.clone())
                        .as_region(),
                ))
            })
            .collect();
        Engine {
            region_uploads: regions
                .iter()
                .map(|_| Arc::new(Semaphore::new(config.concurrency.blobs_per_region)))
                .collect(),
            express_uploads: regions
                .iter()
                .map(|_| Arc::new(Semaphore::new(EXPRESS_UPLOADS)))
                .collect(),
            counters: regions.iter().map(|_| RegionCounters::default()).collect(),
            primary,
            regions,
            filter: config.repositories.clone(),
            limits: config.concurrency,
            timeouts: config.timeouts,
            max_attempts: config.max_attempts,
            blob_reads: Arc::new(Semaphore::new(config.concurrency.blobs)),
            express_reads: Arc::new(Semaphore::new(EXPRESS_READS)),
            blob_locks: KeyedLocks::default(),
            byte_limits: config.regions.iter().map(|r| r.max_bytes_per_sec).collect(),
            manifest_locks: KeyedLocks::default(),
            facts: Facts::new(store),
            region_repos: RegionRepos::default(),
            writable: config.regions.iter().map(|r| r.accepts_pushes).collect(),
            rules: crate::merge::Rules {
                order: config.conflicts.order.clone(),
                skew_ns: config.conflicts.skew.as_nanos() as u64,
                propagate_deletes: config.daemon.deletes == crate::config::DeletePolicy::Propagate,
            },
            share: None,
        }
    }

    /// Lists only the repositories `share` says this instance looks after.
    pub fn with_share(mut self, share: Share) -> Engine {
        self.share = Some(share);
        self
    }

    /// Whether this instance looks after `repository`.
    pub fn in_share(&self, repository: &str) -> bool {
        self.share.as_ref().is_none_or(|s| s(repository))
    }

    /// The primary, in one-way mode.
    pub fn primary(&self) -> Option<&Arc<Registry>> {
        self.primary.as_ref()
    }

    /// How any-region mode decides between regions.
    pub fn rules(&self) -> &crate::merge::Rules {
        &self.rules
    }

    /// Every registry: the primary (if any), then the regions.
    pub fn registries(&self) -> impl Iterator<Item = &Arc<Registry>> {
        self.primary.iter().chain(self.regions.iter())
    }

    /// The registry a copy from `source` reads.
    pub fn source(&self, source: Source) -> Result<&Arc<Registry>, cause::Cause> {
        match source {
            Source::Primary => self.primary.as_ref().ok_or_else(|| {
                cause::Cause::permanent(
                    "this work was queued for the primary, and the config has none now (any-region mode): \
                     the next reconcile finds what is still missing",
                )
            }),
            Source::Region(r) => self.regions.get(r).ok_or_else(|| {
                cause::Cause::permanent(format!("no region {r} in the config"))
            }),
        }
    }

    pub fn regions(&self) -> &[Arc<Registry>] {
        &self.regions
    }

    fn region_ids(&self) -> Vec<RegionId> {
        (0..self.regions.len()).collect()
    }

    /// `regions` in groups that share reads: regions with the same
    /// bandwidth limit (or none) together. A region limited below the
    /// others would pace every blob, manifest and tag of theirs; apart, it
    /// reads on its own and goes at its own pace. (A region slow for other
    /// reasons is let go blob by blob: [`fanout::MAX_DRIFT`].)
    fn speed_classes(&self, regions: &[RegionId]) -> Vec<Vec<RegionId>> {
        let mut classes: BTreeMap<Option<u64>, Vec<RegionId>> = BTreeMap::new();
        for &r in regions {
            classes.entry(self.byte_limits[r]).or_default().push(r);
        }
        classes.into_values().collect()
    }

    pub fn store(&self) -> &Arc<Store> {
        self.facts.store()
    }

    /// Region `r` was found not to serve what the store recorded of `repo`:
    /// what was recorded until now is asked again when next needed.
    pub fn distrust(&self, r: crate::store::RegionId, repo: &str) {
        self.facts.distrust(r, repo);
    }

    /// One pass: make every region match the primary. Never fails as a
    /// whole; what did not work is listed in the report.
    pub async fn sync(&self, options: SyncOptions) -> SyncReport {
        let started = Instant::now();
        let pass = &options.pass();
        let before_primary = self.primary.as_ref().map(|p| p.stats());
        let before: Vec<(StatsSnapshot, CopyCounts)> = (0..self.regions.len())
            .map(|r| (self.regions[r].stats(), self.copied(r)))
            .collect();

        self.region_repos.clear();
        let mut failures = Vec::new();
        let mut tags_not_detailed = 0usize;
        let mut tag_states: BTreeMap<(String, String), (Digest, BTreeMap<String, TagState>)> =
            BTreeMap::new();
        let mut per_region = vec![(0usize, 0usize, 0usize); self.regions.len()];

        // Listing and copying run together: jobs flow through a bounded
        // queue as each repository is resolved.
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(JOB_QUEUE);
        let listing = async {
            if self.primary.is_some() {
                return self.list_primary(jobs_tx).await;
            }
            // Any-region mode: every writable region is listed, and each
            // repository's jobs decided from what they serve.
            let (tx, mut rx) = tokio::sync::mpsc::channel(LIST_QUEUE);
            let deciding = async {
                while let Some(repo) = rx.recv().await {
                    for job in self.jobs_of(&repo, &self.rules) {
                        if jobs_tx.send(job).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let (listing, ()) = tokio::join!(self.list_regions(None, tx), deciding);
            listing
        };
        let copying = async {
            let jobs = futures::stream::unfold(jobs_rx, |mut rx| async move {
                rx.recv().await.map(|job| (job, rx))
            });
            let mut results = std::pin::pin!(
                jobs.map(|job| async move {
                    let outcomes = self.copy_image(pass, &job).await;
                    (job, outcomes)
                })
                .buffer_unordered(self.limits.images)
            );
            while let Some((job, outcomes)) = results.next().await {
                for o in outcomes {
                    let region = &self.regions[o.region];
                    // Per-tag detail only for what changed or failed, and at
                    // most MAX_TAG_DETAILS tags: memory must not grow with
                    // the number of tags.
                    if o.state != TagState::InSync {
                        let key = (job.repository.clone(), o.tag.clone());
                        if tag_states.len() < MAX_TAG_DETAILS || tag_states.contains_key(&key) {
                            let entry = tag_states
                                .entry(key)
                                .or_insert_with(|| (job.digest.clone(), BTreeMap::new()));
                            entry.1.insert(region.name().to_owned(), o.state);
                        } else {
                            tags_not_detailed += 1;
                        }
                    }
                    if !options.dry_run && matches!(o.state, TagState::InSync | TagState::Copied) {
                        let finished = self.facts.store().finish_if_held(
                            o.region,
                            &job.repository,
                            &o.tag,
                            &job.digest,
                        );
                        if let Err(e) = finished {
                            tracing::warn!(
                                "clearing a queued item of {} failed: {e:#}",
                                region.name()
                            );
                        }
                    }
                    let counts = &mut per_region[o.region];
                    match o.state {
                        TagState::InSync => counts.0 += 1,
                        TagState::Copied => counts.1 += 1,
                        TagState::Failed => counts.2 += 1,
                    }
                    if let Some(cause) = o.failure {
                        failures.push(Failure {
                            region: region.name().to_owned(),
                            repository: Some(job.repository.clone()),
                            tag: Some(o.tag),
                            digest: Some(job.digest.clone()),
                            cause: cause.message,
                        });
                    }
                }
            }
        };
        let (listing, ()) = tokio::join!(listing, copying);
        failures.extend(listing.failures);
        let mut failures = self.one_cause_per_registry(failures).await;

        // Each region's pass: a success, or its first error. Failing to read
        // the primary is every region's error.
        let primary_error = self.primary.as_ref().and_then(|p| {
            failures
                .iter()
                .find(|f| f.region == p.name())
                .map(|f| format!("primary {}: {}", p.name(), f.cause))
        });
        for (r, reg) in self.regions.iter().enumerate() {
            let error = failures
                .iter()
                .find(|f| f.region == reg.name())
                .map(|f| {
                    let what = match (&f.repository, &f.tag) {
                        (Some(repo), Some(tag)) => format!("{repo}:{tag}: "),
                        (Some(repo), None) => format!("{repo}: "),
                        _ => String::new(),
                    };
                    format!("{what}{}", f.cause)
                })
                .or_else(|| primary_error.clone());
            if options.dry_run {
                continue;
            }
            let recorded = self.facts.store().record_pass(r, error.as_deref());
            if let Err(e) = recorded {
                tracing::warn!("recording the pass of {} failed: {e:#}", reg.name());
            }
        }
        self.facts.flush().await;
        if self.facts.had_write_errors() {
            failures.push(Failure {
                region: "state".to_owned(),
                repository: None,
                tag: None,
                digest: None,
                cause: format!(
                    "writing the state store {} failed (see the log); the next pass will check again what was not recorded",
                    self.facts.store().path().display()
                ),
            });
        }

        // Tags the regions hold that the primary deleted: the listing has
        // just tombstoned what it no longer lists.
        let mut only_in_region = Vec::new();
        let mut only_counts = vec![0usize; self.regions.len()];
        for (r, reg) in self.regions.iter().enumerate() {
            let only = self
                .facts
                .store()
                .only_in_region(r, |repo| self.filter.allows(repo));
            only_counts[r] = only.len();
            for o in only {
                if only_in_region.len() >= MAX_TAG_DETAILS {
                    break;
                }
                only_in_region.push(report::OnlyInRegion {
                    region: reg.name().to_owned(),
                    repository: o.repository,
                    tag: o.tag,
                    digest: o.digest,
                    deleted_on_primary_at: crate::store::format_unix(o.deleted_on_primary_at),
                });
            }
        }
        let regions = self
            .regions
            .iter()
            .enumerate()
            .map(|(r, reg)| {
                let (stats_before, counters_before) = &before[r];
                let copied = self.copied(r) - *counters_before;
                RegionReport {
                    name: reg.name().to_owned(),
                    url: reg.url().to_owned(),
                    tags_total: listing.tags,
                    tags_in_sync: per_region[r].0,
                    tags_copied: per_region[r].1,
                    tags_failed: per_region[r].2,
                    blobs_uploaded: copied.blobs_uploaded,
                    bytes_uploaded: copied.bytes_uploaded,
                    blobs_mounted: copied.blobs_mounted,
                    manifests_pushed: copied.manifests_pushed,
                    tags_only_in_region: only_counts[r],
                    unreachable: reg.is_unreachable(),
                    requests: reg.stats().minus(stats_before),
                }
            })
            .collect();
        failures.sort_by(|a, b| {
            (&a.region, &a.repository, &a.tag).cmp(&(&b.region, &b.repository, &b.tag))
        });
        SyncReport {
            dry_run: options.dry_run,
            primary: report::PrimaryReport {
                name: self
                    .primary
                    .as_ref()
                    .map_or("any-region", |p| p.name())
                    .to_owned(),
                url: self
                    .primary
                    .as_ref()
                    .map(|p| p.url().to_owned())
                    .unwrap_or_default(),
                repositories: listing.repositories,
                tags: listing.tags,
                requests: match (&self.primary, &before_primary) {
                    (Some(p), Some(before)) => p.stats().minus(before),
                    _ => StatsSnapshot::default(),
                },
            },
            regions,
            tags: tag_states
                .into_iter()
                .map(|((repository, tag), (digest, regions))| TagReport {
                    repository,
                    tag,
                    digest,
                    regions,
                })
                .collect(),
            tags_not_detailed,
            only_in_region,
            failures,
            elapsed_secs: started.elapsed().as_secs_f64(),
            peak_rss_bytes: crate::resources::peak_rss_bytes(),
            cpu_secs: crate::resources::cpu_secs(),
        }
    }

    /// A registry with a problem as a whole (credentials refused, TLS,
    /// unreachable: its `GET /v2/` says so) fails every item the same way;
    /// its failures are said once, as that problem, rather than once per
    /// tag. Registries that answer `GET /v2/` keep their per-item lines.
    async fn one_cause_per_registry(&self, failures: Vec<Failure>) -> Vec<Failure> {
        let mut rest = failures;
        let mut out = Vec::new();
        for reg in self.registries() {
            if !rest.iter().any(|f| f.region == reg.name()) {
                continue;
            }
            let problem = match tokio::time::timeout(REGISTRY_CHECK_WAIT, reg.check()).await {
                Ok(Err(problem)) => problem,
                Ok(Ok(())) | Err(_) => continue,
            };
            let (mine, others): (Vec<Failure>, Vec<Failure>) =
                rest.into_iter().partition(|f| f.region == reg.name());
            rest = others;
            let example = mine.iter().find_map(|f| match (&f.repository, &f.tag) {
                (Some(r), Some(t)) => Some(format!(", e.g. {r}:{t}")),
                (Some(r), None) => Some(format!(", e.g. {r}")),
                _ => None,
            });
            out.push(Failure {
                region: reg.name().to_owned(),
                repository: None,
                tag: None,
                digest: None,
                cause: format!(
                    "{problem} ({} item(s) not replicated{})",
                    mine.len(),
                    example.unwrap_or_default()
                ),
            });
        }
        out.extend(rest);
        out
    }

    /// What region `r` held of `repository` when this pass first asked.
    async fn repo_state(&self, r: RegionId, repository: &str) -> RepoState {
        self.region_repos
            .get(r, repository, async {
                match self.regions[r]
                    .tags(repository, &crate::registry::Scope::push(repository))
                    .await
                {
                    Ok(None) => RepoState::Absent,
                    Ok(Some(tags)) => RepoState::Tags(std::sync::Arc::new(tags.into_iter().collect())),
                    Err(e) => {
                        tracing::debug!(region = %self.regions[r].name(), %repository, "listing tags failed, checking each item instead: {e:#}");
                        RepoState::Unknown
                    }
                }
            })
            .await
    }

    /// Forgets the regions' listings of `repository`: a copy of it was
    /// stopped mid-way, and what it wrote before is not in them.
    pub fn forget_listing(&self, repository: &str) {
        self.region_repos.forget(repository);
    }

    /// Forgets the regions' repository listings: the daemon calls it at
    /// each reconcile, as a pass does at its start.
    pub fn forget_listings(&self) {
        self.region_repos.clear();
    }

    /// What the engine has written to region `r` since the process started.
    pub fn copied(&self, r: RegionId) -> CopyCounts {
        let c = &self.counters[r];
        CopyCounts {
            blobs_uploaded: c.blobs_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            blobs_mounted: c.blobs_mounted.load(Ordering::Relaxed),
            manifests_pushed: c.manifests_pushed.load(Ordering::Relaxed),
        }
    }
}
