//! Making one blob present in a repository of several regions: HEAD first,
//! a cross-repository mount when the region holds the blob elsewhere, and a
//! streamed copy (one read, fanned out) for the rest.
//!
//! Work on a digest is serialised ([`super::locks`]): the first task copies,
//! later ones for other repositories find it in the region and mount it.
//!
//! Uploads run in rounds. Each round reads the blob from the source once
//! for every region that lacks it and has a free upload slot; a region whose
//! slots are all busy (a slow region) does not hold the others back but
//! waits for a later round with a read of its own. A region that failed for
//! a transient reason is retried, with backoff, up to `max_attempts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::join_all;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::Engine;
use super::cause::Cause;
use super::copy::RegionResults;
use super::dry::BlobPlan;
use super::facts::{RegionId, RepoState};
use super::fanout::{Target, fan_out};
use super::pass::Pass;
use crate::registry::manifest::Descriptor;
use crate::registry::retry::Backoff;
use crate::registry::{Mount, Registry, RegistryError, Scope, UploadSession};

impl Engine {
    pub async fn ensure_blob(
        &self,
        pass: &Pass,
        src: &Registry,
        repo: &str,
        desc: Descriptor,
        regions: &[RegionId],
    ) -> RegionResults {
        let span = tracing::debug_span!(
            "blob",
            repository = %repo,
            digest = %desc.digest.short(),
            size = desc.size
        );
        self.ensure_blob_inner(pass, src, repo, &desc, regions)
            .instrument(span)
            .await
    }

    async fn ensure_blob_inner(
        &self,
        pass: &Pass,
        src: &Registry,
        repo: &str,
        desc: &Descriptor,
        regions: &[RegionId],
    ) -> RegionResults {
        let digest = &desc.digest;
        let mut results: RegionResults = BTreeMap::new();
        // In region order: see `locks`.
        let mut ordered = regions.to_vec();
        ordered.sort_unstable();
        ordered.dedup();
        let mut _guards = Vec::with_capacity(ordered.len());
        for &r in &ordered {
            _guards.push(self.blob_locks.lock((r, digest.clone())).await);
        }

        // Present already? The store may know; a region that does not know
        // the repository at all is not asked (see the mount below).
        let heads = regions.iter().map(|&r| async move {
            if self.facts.has_blob(pass, r, repo, digest) {
                return (r, Ok(Presence::Present));
            }
            if matches!(self.repo_state(r, repo).await, RepoState::Absent) {
                return (r, Ok(Presence::Unasked));
            }
            let head = self.regions[r]
                .head_blob(repo, digest, &Scope::push(repo))
                .await;
            (
                r,
                head.map(|h| match h {
                    Some(_) => Presence::Present,
                    None => Presence::Absent,
                }),
            )
        });
        let mut pending: Vec<RegionId> = Vec::new();
        let mut unasked: Vec<RegionId> = Vec::new();
        for (r, head) in join_all(heads).await {
            match head {
                Ok(Presence::Present) => {
                    self.facts.add_blob(r, repo, digest);
                    results.insert(r, Ok(()));
                }
                Ok(Presence::Absent) => {
                    self.facts.forget_blob(r, repo, digest);
                    pending.push(r);
                }
                Ok(Presence::Unasked) => {
                    pending.push(r);
                    unasked.push(r);
                }
                Err(e) => {
                    results.insert(r, Err(blob_cause(desc, "checking", &e)));
                }
            }
        }
        if pending.is_empty() {
            return results;
        }
        if let Some(plan) = pass.plan() {
            for r in pending {
                let c = &self.counters[r];
                match plan.blob(r, repo, digest) {
                    BlobPlan::Planned => {}
                    BlobPlan::New if self.facts.mount_source(r, digest, repo).is_none() => {
                        c.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
                        c.bytes_uploaded.fetch_add(desc.size, Ordering::Relaxed);
                    }
                    BlobPlan::New | BlobPlan::Mount => {
                        c.blobs_mounted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                results.insert(r, Ok(()));
            }
            return results;
        }

        // Mount where the region holds it in another repository. Where the
        // region was not asked, a mount from the repository itself asks and
        // opens the upload session in one request: `201` means the blob is
        // there already (e.g. uploaded before a crash, with no tag yet),
        // `202` hands over the session the upload needs anyway.
        let mounts = pending.iter().map(|&r| {
            let unasked = unasked.contains(&r);
            async move {
                let from = match self.facts.mount_source(r, digest, repo) {
                    Some(other) => other,
                    None if unasked => repo.to_owned(),
                    None => return (r, None),
                };
                match self.regions[r].mount_blob(repo, digest, &from).await {
                    Ok(Mount::Mounted) => (r, Some(Ok(from != repo))),
                    Ok(Mount::Session(s)) => (r, Some(Err(Some(s)))),
                    Err(e) => {
                        tracing::debug!(region = %self.regions[r].name(), %from, "mount failed, uploading instead: {e:#}");
                        (r, Some(Err(None)))
                    }
                }
            }
        });
        let mut sessions: BTreeMap<RegionId, UploadSession> = BTreeMap::new();
        let mut still = Vec::new();
        for (r, outcome) in join_all(mounts).await {
            match outcome {
                Some(Ok(mounted)) => {
                    if mounted {
                        self.counters[r]
                            .blobs_mounted
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    self.facts.add_blob(r, repo, digest);
                    results.insert(r, Ok(()));
                }
                Some(Err(Some(session))) => {
                    sessions.insert(r, session);
                    still.push(r);
                }
                _ => still.push(r),
            }
        }
        pending = still;

        // Upload rounds.
        let backoff = Backoff::new(self.max_attempts);
        let mut attempts: BTreeMap<RegionId, u32> = BTreeMap::new();
        while !pending.is_empty() {
            let mut round: Vec<(RegionId, Result<(), RegistryError>)> = Vec::new();
            // Sessions first, outside any slot: opening one costs a round
            // trip, and the read slot (the scarce one) should be held only
            // while bytes move.
            let opens = pending
                .iter()
                .copied()
                .filter(|r| !sessions.contains_key(r))
                .map(|r| async move { (r, self.regions[r].start_upload(repo).await) })
                .collect::<Vec<_>>();
            for (r, opened) in join_all(opens).await {
                match opened {
                    Ok(s) => {
                        sessions.insert(r, s);
                    }
                    Err(e) => round.push((r, Err(e))),
                }
            }
            pending.retain(|r| sessions.contains_key(r));

            let read_permit = self.read_slot(pass).await;
            let mut targets = Vec::new();
            let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
            if !pending.is_empty() {
                for (r, permit) in self.take_upload_slots(pass, &pending).await {
                    permits.push(permit);
                    pending.retain(|p| *p != r);
                    if let Some(session) = sessions.remove(&r) {
                        targets.push(Target {
                            region: r,
                            registry: self.regions[r].clone(),
                            session,
                        });
                    }
                }
            }
            if !targets.is_empty() {
                let regions = targets.len();
                let started = std::time::Instant::now();
                tracing::debug!(regions, source = %src.name(), "streaming blob");
                round.extend(
                    fan_out(
                        src,
                        repo,
                        desc,
                        targets,
                        self.timeouts.stall,
                        self.timeouts.request,
                    )
                    .await,
                );
                tracing::debug!(
                    regions,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "blob stream ended"
                );
            }
            drop(permits);
            drop(read_permit);

            let mut retry_delay = None;
            let mut uploaded = false;
            for (r, res) in round {
                match res {
                    Ok(()) => {
                        self.counters[r]
                            .blobs_uploaded
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters[r]
                            .bytes_uploaded
                            .fetch_add(desc.size, Ordering::Relaxed);
                        self.facts.add_blob(r, repo, digest);
                        uploaded = true;
                        results.insert(r, Ok(()));
                    }
                    Err(RegistryError::Lagging { .. }) => {
                        // Not a failure: this region copies the blob in a
                        // later round, alone or with other slow ones.
                        pending.push(r);
                    }
                    Err(e) => {
                        let n = attempts.entry(r).or_insert(0);
                        *n += 1;
                        let retryable = (e.is_transient()
                            || e.status() == Some(reqwest::StatusCode::UNAUTHORIZED))
                            && !self.regions[r].is_unreachable();
                        if retryable && *n < self.max_attempts {
                            tracing::debug!(
                                region = %self.regions[r].name(),
                                attempt = *n,
                                "blob upload failed, will retry: {e:#}"
                            );
                            let d = backoff.delay(*n, e.retry_after());
                            retry_delay =
                                Some(retry_delay.map_or(d, |x: std::time::Duration| x.max(d)));
                            pending.push(r);
                        } else {
                            results.insert(r, Err(blob_cause(desc, "copying", &e)));
                        }
                    }
                }
            }
            if uploaded {
                // Bytes were moved: make the fact durable now, so a crash
                // does not send them again.
                self.facts.flush().await;
            }
            if let Some(d) = retry_delay {
                tokio::time::sleep(d).await;
            }
        }
        // Sessions opened by mounts that were never used.
        for (r, s) in sessions {
            self.regions[r].cancel_upload(&s).await;
        }
        results
    }

    /// A slot to read a blob from the primary: a regular one, or for fresh
    /// work whichever of a regular and an express one is free first.
    async fn read_slot(&self, pass: &Pass) -> OwnedSemaphorePermit {
        // The semaphores are never closed.
        if pass.fresh() {
            tokio::select! {
                p = self.blob_reads.clone().acquire_owned() => p.expect("blob semaphore is never closed"),
                p = self.express_reads.clone().acquire_owned() => p.expect("blob semaphore is never closed"),
            }
        } else {
            self.blob_reads
                .clone()
                .acquire_owned()
                .await
                .expect("blob semaphore is never closed")
        }
    }

    /// Upload slots for as many of `pending` as have one free now; if none
    /// has, waits for the first region to free one.
    async fn take_upload_slots(
        &self,
        pass: &Pass,
        pending: &[RegionId],
    ) -> Vec<(RegionId, OwnedSemaphorePermit)> {
        // Fresh work may also take a region's express slots.
        let pools = |r: RegionId| -> Vec<Arc<tokio::sync::Semaphore>> {
            if pass.fresh() {
                vec![
                    self.region_uploads[r].clone(),
                    self.express_uploads[r].clone(),
                ]
            } else {
                vec![self.region_uploads[r].clone()]
            }
        };
        let mut got = Vec::new();
        for &r in pending {
            if let Some(p) = pools(r)
                .into_iter()
                .find_map(|s| s.try_acquire_owned().ok())
            {
                got.push((r, p));
            }
        }
        if got.is_empty() {
            let waits = pending.iter().flat_map(|&r| {
                pools(r)
                    .into_iter()
                    .map(move |sem| Box::pin(async move { (r, sem.acquire_owned().await) }))
            });
            let ((r, permit), _, _) = futures::future::select_all(waits).await;
            if let Ok(p) = permit {
                got.push((r, p));
            }
        }
        got
    }
}

/// What the pass knows of a blob in one region before copying it.
enum Presence {
    Present,
    Absent,
    /// The region does not know the repository; not asked.
    Unasked,
}

fn blob_cause(desc: &Descriptor, what: &str, e: &RegistryError) -> Cause {
    Cause::of(
        format_args!(
            "{what} blob {} ({})",
            desc.digest,
            crate::units::human_bytes(desc.size)
        ),
        e,
    )
}
