//! The reconcile in any-region mode: every region that accepts pushes is
//! listed once (the engine's [`list_regions`]), and each tag any of them
//! lists, or the base holds, goes to the merge with what every region
//! serves under it. Nothing else is sent: a tag every region serves at its
//! base digest costs no write, and no request beyond the listings.
//!
//! [`list_regions`]: crate::engine::Engine::list_regions

use std::collections::BTreeSet;

use tokio::sync::mpsc;

use super::Only;
use super::merge::Merge;
use super::poller::{Reconcile, ReconcileReport};
use crate::background::Activation;
use crate::store::now_unix_ms;

impl Reconcile {
    /// One reconcile of every writable region (of one repository when
    /// `only` names it; a region scope still lists every region, since
    /// each decision weighs them all).
    pub(super) async fn run_regions(
        &self,
        merge: &Merge,
        only: &Only,
    ) -> Activation<ReconcileReport> {
        self.begin(only);
        let store = self.engine.store();
        let started = now_unix_ms();
        let (tx, mut rx) = mpsc::channel(8);
        let listing = self.engine.list_regions(only.repository.as_deref(), tx);
        let deciding = async {
            let mut queued = 0usize;
            while let Some(repo) = rx.recv().await {
                // A tag of the base that no region lists any more is
                // decided too (deleted everywhere, or by some).
                let mut tags: BTreeSet<String> = repo.tags().into_iter().cloned().collect();
                tags.extend(store.primary_tags(&repo.repository).into_keys());
                for tag in tags {
                    let listed = repo.listed(&tag);
                    if listed.iter().all(Option::is_none) {
                        continue;
                    }
                    match merge.observed(&repo.repository, &tag, &listed, started) {
                        Ok(true) => queued += 1,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            "reconcile: deciding {}:{tag} failed (the next reconcile does): {e:#}",
                            repo.repository
                        ),
                    }
                }
            }
            queued
        };
        let (listing, queued) = tokio::join!(listing, deciding);
        let error = self.conclude(&listing, queued, "the regions").await;
        Activation {
            report: ReconcileReport {
                tags: listing.tags,
                queued,
                ..ReconcileReport::default()
            },
            error,
        }
    }
}
