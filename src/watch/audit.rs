//! The audit: every `audit_interval_secs` (run by [`crate::background`]),
//! each region is asked whether it
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
use serde::{Deserialize, Serialize};

use super::Only;
use super::intake::Intake;
use crate::background::{Activation, BackgroundTask};
use crate::config::RepositoryFilter;
use crate::digest::Digest;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::registry::Scope;
use crate::store::queue::{Action, Change, Origin, WorkItem};
use crate::store::{RegionId, Store, now_unix_ms};

/// Tags of one repository asked about at once in one region.
pub const AUDIT_CONCURRENCY: usize = 4;

/// What the last audit found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditReport {
    /// (region, tag) pairs asked about.
    #[serde(rename = "last_checked")]
    pub checked: usize,
    /// Of those, the ones a region did not serve as recorded (queued again).
    #[serde(rename = "last_stale")]
    pub stale: usize,
}

#[derive(Clone)]
pub struct Audit {
    pub engine: Arc<Engine>,
    pub intake: Arc<Intake>,
    pub metrics: Arc<Metrics>,
    pub filter: RepositoryFilter,
}

/// What one region's audit found.
#[derive(Default)]
struct Found {
    checked: usize,
    stale: usize,
    /// What could not be asked, first one kept.
    error: Option<String>,
}

/// What the audit makes of one tag the store says a region serves.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Served at the recorded digest.
    Serves,
    /// Missing from the region's listing, or served at another digest:
    /// forgotten and copied again.
    Stale,
    /// The region could not be asked: nothing is concluded.
    Unknown(String),
}

/// The verdict on a tag from the region's answer to a manifest `HEAD`
/// (`None`: not in the region's tag listing, so not asked).
pub fn verdict<E: std::fmt::Display>(
    recorded: &Digest,
    head: Option<Result<Option<Digest>, E>>,
) -> Verdict {
    match head {
        Some(Ok(Some(served))) if &served == recorded => Verdict::Serves,
        None | Some(Ok(_)) => Verdict::Stale,
        Some(Err(e)) => Verdict::Unknown(format!("{e:#}")),
    }
}

/// The tags of `repo` the store says region `r` serves at the primary's
/// digest: what the audit asks about. Tags the store does not say the
/// region holds are the reconcile's business.
pub fn held(store: &Store, r: RegionId, repo: &str) -> Vec<(String, Digest)> {
    store
        .primary_tags(repo)
        .into_iter()
        .filter(|(tag, t)| {
            store
                .manifest(r, repo, tag)
                .is_some_and(|f| f.digest == t.digest)
        })
        .map(|(tag, t)| (tag, t.digest))
        .collect()
}

impl BackgroundTask for Audit {
    type Report = AuditReport;
    const NAME: &'static str = "audit";

    async fn activate(&self) -> Activation<AuditReport> {
        self.run(&Only::default()).await
    }
}

impl Audit {
    /// One audit of what `only` covers (everything, periodically; one
    /// region or repository when an operator asks, e.g. after a region
    /// was wiped).
    pub async fn run(&self, only: &Only) -> Activation<AuditReport> {
        let started = std::time::Instant::now();
        let regions = (0..self.engine.regions().len())
            .filter(|&r| only.region(self.engine.regions()[r].name()))
            .map(|r| self.audit_region(r, only));
        let found = join_all(regions).await;
        if let Err(e) = self.intake.flush().await {
            tracing::warn!("audit: flushing the store failed: {e:#}");
        }
        let checked = found.iter().map(|f| f.checked).sum();
        let stale = found.iter().map(|f| f.stale).sum();
        let error = found.into_iter().find_map(|f| f.error);
        self.metrics.audits.fetch_add(1, Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(checked, stale, secs, "audit done");
        Activation {
            report: AuditReport { checked, stale },
            error,
        }
    }
}

impl Audit {
    async fn audit_region(&self, r: RegionId, only: &Only) -> Found {
        let region = &self.engine.regions()[r];
        let store = self.engine.store();
        let mut found = Found::default();
        if region.is_unreachable() {
            found.error = Some(format!(
                "region {} ({}) is unreachable: not audited",
                region.name(),
                region.url()
            ));
            return found;
        }
        // Repositories the config no longer selects are left alone, as the
        // reconcile leaves them.
        for repo in store
            .primary_repositories()
            .into_iter()
            .filter(|r| self.filter.allows(r) && only.repository(r))
        {
            let held = held(store, r, &repo);
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
                    let listed = listed.contains(&tag);
                    async move {
                        let head = if listed {
                            Some(
                                region
                                    .head_manifest(repo, &tag, scope)
                                    .await
                                    .map(|h| h.map(|h| h.digest)),
                            )
                        } else {
                            None
                        };
                        let verdict = verdict(&digest, head);
                        (tag, digest, verdict)
                    }
                })
                .buffer_unordered(AUDIT_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut stale: Vec<Change> = Vec::new();
            for (tag, digest, verdict) in asks {
                match verdict {
                    Verdict::Serves => {}
                    Verdict::Stale => {
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
                    Verdict::Unknown(e) => {
                        found.error.get_or_insert_with(|| {
                            format!("checking {repo}:{tag} in region {}: {e}", region.name())
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
            self.engine.distrust(r, &repo);
            found.stale += stale.len();
            self.metrics.regions[r]
                .audit_stale
                .fetch_add(stale.len() as u64, Ordering::Relaxed);
            let n = stale.len();
            if self.intake.any_region() {
                // What a region serves instead may be a push made there:
                // the reconcile lists every region and decides.
                tracing::info!(region = %region.name(), "audit: the next reconcile decides what {n} tag(s) of {repo} should be");
                continue;
            }
            if let Err(e) = self.intake.changes(&mut stale) {
                tracing::warn!("audit: queueing {n} changes failed: {e:#}");
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_stale_when_unlisted_or_served_at_another_digest() {
        let recorded = Digest::sha256_of(b"v1");
        let other = Digest::sha256_of(b"v2");
        let served = |d: &Digest| Some(Ok::<_, String>(Some(d.clone())));
        assert_eq!(verdict(&recorded, served(&recorded)), Verdict::Serves);
        assert_eq!(verdict(&recorded, served(&other)), Verdict::Stale);
        assert_eq!(
            verdict(&recorded, Some(Ok::<_, String>(None))),
            Verdict::Stale,
            "listed, but the manifest is gone"
        );
        assert_eq!(
            verdict(&recorded, None::<Result<_, String>>),
            Verdict::Stale,
            "not in the listing"
        );
        assert_eq!(
            verdict(&recorded, Some(Err::<Option<Digest>, _>("503"))),
            Verdict::Unknown("503".to_owned()),
            "a failed question is no evidence"
        );
    }

    #[test]
    fn only_tags_recorded_at_the_primarys_digest_are_asked_about() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = [("a".to_owned(), "http://127.0.0.1:1".to_owned())];
        let store = Store::open(&dir.path().join("store"), &names).expect("store");
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        for (tag, d) in [("same", &d1), ("moved", &d2), ("never", &d1)] {
            store.record_primary_tag("app", tag, d, None).expect("fact");
        }
        store.record_manifest(0, "app", "same", &d1).expect("fact");
        store.record_manifest(0, "app", "moved", &d1).expect("fact");
        assert_eq!(held(&store, 0, "app"), vec![("same".to_owned(), d1)]);
    }
}
