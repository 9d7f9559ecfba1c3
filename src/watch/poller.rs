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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::intake::Intake;
use crate::background::{Activation, BackgroundTask};
use crate::engine::Engine;
use crate::engine::listing::ImageJob;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::now_unix_ms;
use crate::store::queue::{Action, Change, Origin, WorkItem};

/// Changes written to the store per transaction.
const BATCH: usize = 256;

/// What the last reconcile found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Tags listed on the primary.
    #[serde(rename = "last_tags")]
    pub tags: usize,
    /// Items queued (regions found behind).
    #[serde(rename = "last_queued")]
    pub queued: usize,
}

pub struct Reconcile {
    pub engine: Arc<Engine>,
    pub intake: Arc<Intake>,
    pub metrics: Arc<Metrics>,
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

impl BackgroundTask for Reconcile {
    type Report = ReconcileReport;
    const NAME: &'static str = "reconcile";

    async fn activate(&self) -> Activation<ReconcileReport> {
        match self.intake.unpark_all() {
            Ok(0) => {}
            Ok(n) => tracing::info!(items = n, "reconcile: retrying parked items"),
            Err(e) => tracing::warn!("reconcile: waking parked items failed: {e:#}"),
        }
        self.engine.forget_listings();

        let regions = self.engine.regions().len();
        let store = self.engine.store();
        let (tx, mut rx) = mpsc::channel(64);
        let listing = self.engine.list_primary(tx);
        let queueing = async {
            let mut queued = 0usize;
            let mut batch: Vec<Change> = Vec::new();
            while let Some(job) = rx.recv().await {
                batch.extend(behind(store, regions, &job, now_unix_ms()));
                if batch.len() >= BATCH {
                    queued += self.queue(&mut batch);
                }
            }
            queued + self.queue(&mut batch)
        };
        let (listing, queued) = tokio::join!(listing, queueing);
        if let Err(e) = self.intake.flush().await {
            tracing::warn!("reconcile: flushing the store failed: {e:#}");
        }
        let error = listing.failures.first().map(|f| {
            format!(
                "{}{}: {}",
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
                "reconcile: listing the primary was incomplete: {e}"
            );
        }
        tracing::info!(
            repositories = listing.repositories,
            tags = listing.tags,
            queued,
            "reconcile done"
        );
        Activation {
            report: ReconcileReport {
                tags: listing.tags,
                queued,
            },
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

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
