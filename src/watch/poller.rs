//! The poller: a full reconcile at start and every `poll_interval_secs`,
//! the backstop for events the registry lost (it keeps them in memory
//! only) and for pushes made while georep was down.
//!
//! A reconcile lists the primary (the engine's streaming listing), compares
//! each tag with what the store says each region holds, and queues the
//! differences as backfill (behind fresh pushes). It also wakes parked
//! items, so a permanent failure is tried once per interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::daemon::Shared;
use crate::shutdown::Signal;
use crate::store::queue::{Action, Change, Origin, WorkItem};
use crate::store::{now_unix, now_unix_ms};

/// Changes written to the store per transaction.
const BATCH: usize = 256;
/// Event ids are remembered this long for de-duplication.
const EVENT_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
/// With polling off, old event ids are forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(shared: Arc<Shared>, mut stop: Signal) {
    let Some(interval) = shared.config.daemon.poll_interval else {
        tracing::info!("polling is off (poll_interval_secs: 0): only notifications bring changes");
        // Old event ids are still forgotten now and then.
        loop {
            prune_events(&shared);
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = stop.wait() => return,
            }
        }
    };
    loop {
        reconcile(&shared).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait() => return,
        }
    }
}

/// One full reconcile against the primary's listing.
pub async fn reconcile(shared: &Shared) {
    {
        let mut s = shared.reconcile.lock().unwrap_or_else(|e| e.into_inner());
        s.running = true;
        s.last_started_at = Some(now_unix());
    }
    let store = shared.store();
    match store.unpark_all() {
        Ok(0) => {}
        Ok(n) => {
            shared.hints.rescan_all();
            tracing::info!(items = n, "reconcile: retrying parked items");
        }
        Err(e) => tracing::warn!("reconcile: waking parked items failed: {e:#}"),
    }
    prune_events(shared);
    shared.engine.forget_listings();
    shared.wake.notify_one();

    let regions = shared.config.regions.len();
    let (tx, mut rx) = mpsc::channel(64);
    let listing = shared.engine.list_primary(tx);
    let queueing = async {
        let mut queued = 0usize;
        let mut batch: Vec<Change> = Vec::new();
        while let Some(job) = rx.recv().await {
            let now = now_unix_ms();
            for tag in &job.tags {
                let behind = store.regions_behind(regions, &job.repository, tag, &job.digest);
                if behind.is_empty() {
                    continue;
                }
                batch.push(Change {
                    repository: job.repository.clone(),
                    reference: tag.clone(),
                    item: WorkItem::new(
                        Action::Copy,
                        job.digest.clone(),
                        Origin::Reconcile,
                        0,
                        now,
                    ),
                    regions: Some(behind),
                });
            }
            if batch.len() >= BATCH {
                queued += flush(shared, &mut batch);
            }
        }
        queued += flush(shared, &mut batch);
        queued
    };
    let (listing, queued) = tokio::join!(listing, queueing);
    if let Err(e) = store.flush().await {
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
    shared
        .metrics
        .reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(e) = &error {
        shared
            .metrics
            .reconcile_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    let mut s = shared.reconcile.lock().unwrap_or_else(|e| e.into_inner());
    s.running = false;
    s.count += 1;
    s.last_finished_at = Some(now_unix());
    s.last_tags = listing.tags;
    s.last_queued = queued;
    s.last_error = error;
}

/// Forgets event ids older than [`EVENT_MEMORY`].
fn prune_events(shared: &Shared) {
    let cutoff = now_unix_ms().saturating_sub(EVENT_MEMORY.as_millis() as u64);
    if let Err(e) = shared.store().prune_events(cutoff) {
        tracing::warn!("forgetting old event ids failed: {e:#}");
    }
}

/// Queues `batch` and wakes the workers; returns how many changes it held.
pub(crate) fn flush(shared: &Shared, batch: &mut Vec<Change>) -> usize {
    if batch.is_empty() {
        return 0;
    }
    let n = batch.len();
    if let Err(e) = shared.store().accept(None, batch) {
        tracing::warn!("reconcile: queueing {n} changes failed: {e:#}");
    }
    for c in batch.iter() {
        shared
            .hints
            .touch_regions(c.regions.as_deref(), &c.repository, &c.reference);
    }
    batch.clear();
    shared.wake.notify_one();
    n
}
