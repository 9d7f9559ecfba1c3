//! The audit: every `audit_interval_secs`, each region is asked whether it
//! still serves every tag georep recorded there.
//!
//! A reconcile compares the primary with the store and trusts the store's
//! facts about the regions, so content a region lost behind georep's back
//! (a wiped or rebuilt registry, storage restored from an old backup, a tag
//! deleted or overwritten by hand) would never be copied again. The audit
//! closes that gap at the cost of one tag listing per repository and one
//! `HEAD` per tag and region: a tag missing from the region's listing, or
//! served at another digest, is forgotten in the store, the region's other
//! facts about that repository are distrusted (its blobs and manifests are
//! asked about again when copied), and the tag is queued again like a
//! reconcile's backfill. Tags the store does not say a region holds are the
//! reconcile's business and are not asked about here.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use futures::future::join_all;

use crate::daemon::Shared;
use crate::digest::Digest;
use crate::registry::Scope;
use crate::shutdown::Signal;
use crate::store::queue::{Action, Change, Origin, WorkItem};
use crate::store::{RegionId, now_unix, now_unix_ms};

/// Tags of one repository asked about at once in one region.
pub const AUDIT_CONCURRENCY: usize = 4;

pub async fn run(shared: Arc<Shared>, mut stop: Signal) {
    let Some(interval) = shared.config.daemon.audit_interval else {
        tracing::info!("audits are off (audit_interval_secs: 0)");
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait() => return,
        }
        audit(&shared).await;
    }
}

/// What one region's audit found.
#[derive(Default)]
struct Found {
    checked: usize,
    stale: usize,
    /// What could not be asked, first one kept.
    error: Option<String>,
}

/// One audit of every region.
pub async fn audit(shared: &Shared) {
    let started = std::time::Instant::now();
    {
        let mut s = shared.audit.lock().unwrap_or_else(|e| e.into_inner());
        s.running = true;
        s.last_started_at = Some(now_unix());
    }
    let regions = (0..shared.config.regions.len()).map(|r| audit_region(shared, r));
    let found = join_all(regions).await;
    if let Err(e) = shared.store().flush().await {
        tracing::warn!("audit: flushing the store failed: {e:#}");
    }
    let checked = found.iter().map(|f| f.checked).sum();
    let stale = found.iter().map(|f| f.stale).sum();
    let error = found.into_iter().find_map(|f| f.error);
    shared.metrics.audits.fetch_add(1, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(checked, stale, secs, "audit done");
    let mut s = shared.audit.lock().unwrap_or_else(|e| e.into_inner());
    s.running = false;
    s.count += 1;
    s.last_finished_at = Some(now_unix());
    s.last_checked = checked;
    s.last_stale = stale;
    s.last_secs = secs;
    s.last_error = error;
}

async fn audit_region(shared: &Shared, r: RegionId) -> Found {
    let region = &shared.engine.regions()[r];
    let store = shared.store();
    let mut found = Found::default();
    if region.is_unreachable() {
        found.error = Some(format!(
            "region {} ({}) is unreachable: not audited",
            region.name(),
            region.url()
        ));
        return found;
    }
    let filter = &shared.config.repositories;
    // Repositories the config no longer selects are left alone, as the
    // reconcile leaves them.
    for repo in store
        .primary_repositories()
        .into_iter()
        .filter(|r| filter.allows(r))
    {
        // The tags the store says the region serves at the primary's digest.
        let held: Vec<(String, Digest)> = store
            .primary_tags(&repo)
            .into_iter()
            .filter(|(tag, t)| {
                store
                    .manifest(r, &repo, tag)
                    .is_some_and(|f| f.digest == t.digest)
            })
            .map(|(tag, t)| (tag, t.digest))
            .collect();
        if held.is_empty() {
            continue;
        }
        // The scope copies use, so their cached token serves the audit too.
        let scope = Scope::push(&repo);
        let listed: HashSet<String> = match region.tags(&repo, &scope).await {
            Ok(Some(tags)) => tags.into_iter().collect(),
            Ok(None) => HashSet::new(),
            Err(e) => {
                found.error.get_or_insert_with(|| {
                    format!(
                        "listing the tags of {repo} in region {}: {e:#}",
                        region.name()
                    )
                });
                continue;
            }
        };
        found.checked += held.len();
        let asks = futures::stream::iter(held)
            .map(|(tag, digest)| {
                let scope = &scope;
                let repo = &repo;
                let listed = &listed;
                async move {
                    if !listed.contains(&tag) {
                        return (tag, digest, Ok(false));
                    }
                    let head = region.head_manifest(repo, &tag, scope).await;
                    let serves = head.map(|h| h.is_some_and(|h| h.digest == digest));
                    (tag, digest, serves)
                }
            })
            .buffer_unordered(AUDIT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut stale: Vec<Change> = Vec::new();
        for (tag, digest, serves) in asks {
            match serves {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = store.forget_manifest(r, &repo, &tag) {
                        tracing::warn!("audit: forgetting {repo}:{tag} failed: {e:#}");
                    }
                    stale.push(Change {
                        repository: repo.clone(),
                        reference: tag,
                        item: WorkItem::new(
                            Action::Copy,
                            digest,
                            Origin::Reconcile,
                            0,
                            now_unix_ms(),
                        ),
                        regions: Some(vec![r]),
                    });
                }
                Err(e) => {
                    found.error.get_or_insert_with(|| {
                        format!("checking {repo}:{tag} in region {}: {e:#}", region.name())
                    });
                }
            }
        }
        if stale.is_empty() {
            continue;
        }
        tracing::warn!(
            region = %region.name(),
            "audit: {} does not serve {} tag(s) of {repo} that georep copied there \
             (e.g. {}): copying them again",
            region.url(),
            stale.len(),
            stale[0].reference
        );
        shared.engine.distrust(r, &repo);
        found.stale += stale.len();
        shared.metrics.regions[r]
            .audit_stale
            .fetch_add(stale.len() as u64, Ordering::Relaxed);
        super::poller::flush(shared, &mut stale);
    }
    found
}
