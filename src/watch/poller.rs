//! The reconcile: a full pass over the primary's listing, at start and
//! every `poll_interval_secs` (run by [`crate::background`]), the backstop
//! for events the registry lost (it keeps them in memory only) and for
//! pushes made while georep was down.
//!
//! A reconcile lists the primary (the engine's streaming listing), compares
//! each tag with what the store says each region holds ([`behind`]), and
//! hands the differences to the [`Intake`] as backfill (behind fresh
//! pushes). It also wakes parked items, so a permanent failure is tried
//! once per interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Only;
use super::intake::Intake;
use super::merge::Merge;
use crate::background::{Activation, BackgroundTask};
use crate::config::RepositoryFilter;
use crate::digest::Digest;
use crate::engine::Engine;
use crate::engine::listing::ImageJob;
use crate::metrics::Metrics;
use crate::registry::Scope;
use crate::store::Store;
use crate::store::now_unix_ms;
use crate::store::queue::{Action, Change, Origin, WorkItem};

/// Changes written to the store per transaction.
const BATCH: usize = 256;

/// What the last reconcile found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Repositories listed on the primary (a cluster member's: its share).
    #[serde(rename = "last_repositories", default)]
    pub repositories: usize,
    /// Tags listed on the primary.
    #[serde(rename = "last_tags")]
    pub tags: usize,
    /// Items queued (regions found behind).
    #[serde(rename = "last_queued")]
    pub queued: usize,
    /// Per region: tags it holds that the primary deleted.
    #[serde(rename = "last_only_in_region", default)]
    pub only_in_region: BTreeMap<String, usize>,
    /// Of those, deletes queued (`deletes.policy: propagate`).
    #[serde(rename = "last_deletes_queued", default)]
    pub deletes_queued: usize,
}

#[derive(Clone)]
pub struct Reconcile {
    pub engine: Arc<Engine>,
    pub intake: Arc<Intake>,
    pub metrics: Arc<Metrics>,
    /// Repositories the config selects (others are left alone).
    pub filter: RepositoryFilter,
    /// Any-region mode: every writable region is listed and the merge
    /// decides ([`Reconcile::run_regions`]).
    pub merge: Option<Arc<Merge>>,
}

/// The diff of one listed image: a backfill change per tag, naming the
/// regions of `0..regions` the store does not say hold it.
pub fn behind(store: &Store, regions: usize, job: &ImageJob, now_ms: u64) -> Vec<Change> {
    job.tags
        .iter()
        .filter_map(|tag| {
            let behind = store.regions_behind(regions, &job.repository, tag, &job.digest);
            (!behind.is_empty()).then(|| Change {
                repository: job.repository.clone(),
                reference: tag.clone(),
                item: WorkItem::new(
                    Action::Copy,
                    job.digest.clone(),
                    Origin::Reconcile,
                    0,
                    now_ms,
                ),
                regions: Some(behind),
            })
        })
        .collect()
}

impl Reconcile {
    /// Queues `batch`; a failure is logged, and what it held is found again
    /// by the next reconcile.
    fn queue(&self, batch: &mut Vec<Change>) -> usize {
        let n = batch.len();
        match self.intake.changes(batch) {
            Ok(queued) => queued,
            Err(e) => {
                tracing::warn!("reconcile: queueing {n} changes failed: {e:#}");
                0
            }
        }
    }
}

impl Reconcile {
    /// Per region, the tags it holds that the primary deleted (as the
    /// listing just found), and the deletes queued for them: a manifest the
    /// primary no longer serves is deleted by digest, a tag whose manifest
    /// it still serves (a registry that deletes tags alone) by tag. Only
    /// when deletes propagate, one `HEAD` on the primary per such tag (is it
    /// really gone?) and per manifest.
    async fn left_in_regions(&self, scope: &Only) -> (BTreeMap<String, usize>, usize) {
        let store = self.engine.store();
        let Some(primary) = self.engine.primary() else {
            return (BTreeMap::new(), 0);
        };
        let mut on_primary: HashMap<(String, Digest), bool> = HashMap::new();
        let mut counts = BTreeMap::new();
        let mut queued = 0;
        for (r, region) in self.engine.regions().iter().enumerate() {
            if !scope.region(region.name()) {
                continue;
            }
            let only = store.only_in_region(r, |repo| {
                self.filter.allows(repo) && self.engine.in_share(repo) && scope.repository(repo)
            });
            counts.insert(region.name().to_owned(), only.len());
            if only.is_empty() {
                continue;
            }
            tracing::info!(
                region = %region.name(),
                "{} tag(s) only in the region, deleted on the primary (e.g. {}:{})",
                only.len(),
                only[0].repository,
                only[0].tag
            );
            if !self.intake.propagates_deletes() {
                continue;
            }
            // Nothing is deleted on a tombstone alone: the primary is asked
            // for the tag first. A tag pushed while the listing ran can be
            // tombstoned by it; the primary serving it means it is live
            // (and the store is put right), and it is left alone.
            let mut confirmed = Vec::with_capacity(only.len());
            for o in only {
                let scope = Scope::pull(&o.repository);
                match primary.head_manifest(&o.repository, &o.tag, &scope).await {
                    Ok(None) => confirmed.push(o),
                    Ok(Some(h)) => {
                        tracing::debug!(repository = %o.repository, tag = %o.tag, "on the primary after all: not deleted");
                        if let Err(e) = store.record_primary_tag(
                            &o.repository,
                            &o.tag,
                            &h.digest,
                            h.media_type.as_deref(),
                        ) {
                            tracing::warn!(
                                "reconcile: recording {}:{} failed: {e:#}",
                                o.repository,
                                o.tag
                            );
                        }
                    }
                    Err(e) => tracing::warn!(
                        "reconcile: asking the primary for {}:{} failed; its delete waits: {e:#}",
                        o.repository,
                        o.tag
                    ),
                }
            }
            let only = confirmed;
            for o in &only {
                let key = (o.repository.clone(), o.digest.clone());
                if on_primary.contains_key(&key) {
                    continue;
                }
                let scope = Scope::pull(&o.repository);
                match primary
                    .head_manifest(&o.repository, o.digest.as_str(), &scope)
                    .await
                {
                    Ok(found) => {
                        on_primary.insert(key, found.is_some());
                    }
                    Err(e) => tracing::warn!(
                        "reconcile: asking the primary for {}@{} failed; its delete waits: {e:#}",
                        o.repository,
                        o.digest
                    ),
                }
            }
            let due = self.intake.due_deletes(r, &only, |repo, d| {
                on_primary.get(&(repo.to_owned(), d.clone())).copied()
            });
            match due {
                Ok(n) => queued += n,
                Err(e) => {
                    tracing::warn!(region = %region.name(), "reconcile: queueing deletes failed: {e:#}")
                }
            }
        }
        (counts, queued)
    }
}

impl Reconcile {
    /// The start of every reconcile: the parked items it covers are tried
    /// again, and the regions' listings are asked anew. Returns the
    /// region `only` names, if it does.
    pub(super) fn begin(&self, only: &Only) -> Option<usize> {
        let region_id = only
            .region
            .as_deref()
            .and_then(|name| self.engine.regions().iter().position(|r| r.name() == name));
        match self.intake.unpark(region_id, only.repository.as_deref()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(items = n, "reconcile: retrying parked items"),
            Err(e) => tracing::warn!("reconcile: waking parked items failed: {e:#}"),
        }
        self.engine.forget_listings();
        region_id
    }

    /// The end of every reconcile: the queue made durable, counted, logged;
    /// the first listing failure (of `listed`) is its error.
    pub(super) async fn conclude(
        &self,
        listing: &crate::engine::listing::Listing,
        queued: usize,
        listed: &str,
    ) -> Option<String> {
        if let Err(e) = self.intake.flush().await {
            tracing::warn!("reconcile: flushing the store failed: {e:#}");
        }
        let error = listing.failures.first().map(|f| {
            let region = if f.region.is_empty() || listed == "the primary" {
                String::new()
            } else {
                format!("{}: ", f.region)
            };
            format!(
                "{region}{}{}: {}",
                f.repository.as_deref().unwrap_or(""),
                f.tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                f.cause
            )
        });
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = &error {
            self.metrics
                .reconcile_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                failures = listing.failures.len(),
                "reconcile: listing {listed} was incomplete: {e}"
            );
        }
        tracing::info!(
            repositories = listing.repositories,
            tags = listing.tags,
            queued,
            "reconcile done"
        );
        error
    }
}

impl BackgroundTask for Reconcile {
    type Report = ReconcileReport;
    const NAME: &'static str = "reconcile";

    async fn activate(&self) -> Activation<ReconcileReport> {
        self.run(&Only::default()).await
    }
}

impl Reconcile {
    /// One reconcile of what `only` covers (everything, periodically; one
    /// region or repository when an operator asks).
    pub async fn run(&self, only: &Only) -> Activation<ReconcileReport> {
        if let Some(merge) = &self.merge {
            return self.run_regions(merge, only).await;
        }
        let region_id = self.begin(only);
        let regions = self.engine.regions().len();
        let store = self.engine.store();
        let (tx, mut rx) = mpsc::channel(64);
        let within = |repo: &str| only.repository(repo);
        let listing = self
            .engine
            .list_primary_in(only.repository.as_deref(), &within, tx);
        let queueing = async {
            let mut queued = 0usize;
            let mut batch: Vec<Change> = Vec::new();
            while let Some(job) = rx.recv().await {
                let changes = behind(store, regions, &job, now_unix_ms())
                    .into_iter()
                    .filter_map(|mut c| {
                        if let (Some(r), Some(behind)) = (region_id, c.regions.as_mut()) {
                            behind.retain(|x| *x == r);
                        }
                        c.regions
                            .as_ref()
                            .is_none_or(|b| !b.is_empty())
                            .then_some(c)
                    });
                batch.extend(changes);
                if batch.len() >= BATCH {
                    queued += self.queue(&mut batch);
                }
            }
            queued + self.queue(&mut batch)
        };
        let (listing, queued) = tokio::join!(listing, queueing);
        let (only_in_region, deletes_queued) = self.left_in_regions(only).await;
        let error = self.conclude(&listing, queued, "the primary").await;
        Activation {
            report: ReconcileReport {
                repositories: listing.repositories,
                tags: listing.tags,
                queued,
                only_in_region,
                deletes_queued,
            },
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_queued_for_the_regions_that_lack_it_at_that_digest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = [
            ("a".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("b".to_owned(), "http://127.0.0.1:2".to_owned()),
            ("c".to_owned(), "http://127.0.0.1:3".to_owned()),
        ];
        let store = Store::open(&dir.path().join("store"), &names).expect("store");
        let new = Digest::sha256_of(b"new");
        let old = Digest::sha256_of(b"old");
        // a holds v1 at the listed digest, b at an older one, c not at all;
        // every region holds v2.
        store.record_manifest(0, "app", "v1", &new).expect("fact");
        store.record_manifest(1, "app", "v1", &old).expect("fact");
        for r in 0..3 {
            store.record_manifest(r, "app", "v2", &new).expect("fact");
        }
        let job = ImageJob {
            repository: "app".into(),
            digest: new.clone(),
            tags: vec!["v1".into(), "v2".into()],
            source: crate::engine::Source::Primary,
        };
        let changes = behind(&store, 3, &job, 7);
        assert_eq!(changes.len(), 1, "v2 is everywhere");
        let c = &changes[0];
        assert_eq!((c.repository.as_str(), c.reference.as_str()), ("app", "v1"));
        assert_eq!(c.regions.as_deref(), Some(&[1, 2][..]));
        assert_eq!(c.item.digest, new);
        assert_eq!(c.item.origin, Origin::Reconcile, "backfill, behind pushes");
    }
}
