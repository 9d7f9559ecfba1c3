//! The workers: take ready items from every region's durable queue, copy
//! them with the engine, and record the outcome.
//!
//! Each region has `max_concurrent_images` slots. A dispatch round fills
//! each region's free slots with its oldest ready items (fresh pushes
//! before backfill), and items for the same (repository, reference,
//! digest) picked in several regions form one group, copied together so
//! every blob is read once for all of them (DESIGN invariant 8). A region
//! with no free slot is left out of the group and later copies with its
//! own read, so a slow region delays only itself (invariant 6).
//!
//! An item leaves its queue only once done. Failures are classified
//! ([`CauseKind`]): an unreachable region waits with backoff (capped at
//! `retry_max_secs`) and never parks, because that is an outage and its
//! backlog must catch up by itself; transient failures back off and park
//! after `park_after_attempts`; permanent ones park at once. Parked items
//! keep their reason (visible in `/v1/status`) and are retried at the next
//! reconcile. Neither kind blocks the items behind it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::schedule::Schedule;
use crate::cluster::Cluster;
use crate::config::{Config, NotifyEvent};
use crate::digest::Digest;
use crate::engine::cause::{Cause, CauseKind};
use crate::engine::listing::ImageJob;
use crate::engine::{Engine, Pass, Priority, Source};
use crate::lock::Locked;
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier};
use crate::registry::retry::Backoff;
use crate::shutdown::Signal;
use crate::store::queue::{Action, Origin, Queued, WorkItem};
use crate::store::{RegionId, StoreError, now_unix_ms};
use crate::watch::doorbell::Doorbell;
use crate::watch::merge::Merge;
use crate::watch::probe::HealthBook;

/// Slots per region only fresh pushes may use (beyond
/// `max_concurrent_images`).
const EXPRESS_SLOTS: usize = 2;
/// The first pause after a failed item.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// With nothing due, look again this often anyway.
const IDLE_WAKE: Duration = Duration::from_secs(30);
/// A delete by tag that waits for its manifest's delete looks again after
/// this long.
const TAG_DELETE_WAIT: Duration = Duration::from_secs(60);
/// How long a copy from a region that does not answer waits before it is
/// tried again (the probe's interval: the source's return is seen by then).
const SOURCE_WAIT: Duration = Duration::from_secs(5);
/// A copy stopped because the repository moved or the lease wavered is
/// looked at again after this long (by then it has left this queue, or the
/// lease is firm again).
const LOST_WAIT: Duration = Duration::from_secs(1);
/// How long the source's `GET /v2/` may take when a copy from it failed.
const SOURCE_CHECK_WAIT: Duration = Duration::from_secs(3);

/// What became of one item in one region.
#[derive(Debug)]
enum Outcome {
    /// Copied (or found there already).
    Done,
    /// Deleted, or nothing was left to delete; with the digest deleted when
    /// a registry told it.
    Deleted(Option<Digest>),
    /// A dry run's delete: only said.
    WouldDelete,
    Failed(Cause),
    /// Not attempted yet (the delete cap): try again after this long; the
    /// reason is the region's news (logged and in its status) when `told`.
    Deferred {
        wait: Duration,
        why: String,
        told: bool,
    },
}

/// Work items of several regions copied together.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    origin: Origin,
    action: Action,
    repository: String,
    reference: String,
    digest: String,
    /// The region read from (any-region mode); `None`: the primary.
    source: Option<String>,
}

/// A region that could not be reached: its queue is not dispatched to
/// before `until_ms`, then a few items probe it.
#[derive(Debug, Default)]
pub struct Gate {
    until_ms: u64,
    failures: u32,
}

/// Items being worked on: (region, repository, reference), since when.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<(RegionId, String, String), Instant>>);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<(RegionId, String, String), Instant>> {
        self.0.locked()
    }

    /// Items of region `r` being worked on.
    pub fn count(&self, r: RegionId) -> usize {
        self.lock().keys().filter(|(x, _, _)| *x == r).count()
    }

    /// Whether an item of a repository `which` says yes to is in flight.
    pub fn any(&self, which: impl Fn(&str) -> bool) -> bool {
        self.lock().keys().any(|(_, repo, _)| which(repo))
    }
}

/// The workers' state: what they copy with, whom they tell, and the
/// bookkeeping of the work in flight.
pub struct Workers {
    config: Arc<Config>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    doorbell: Arc<Doorbell>,
    notifier: Arc<Notifier>,
    /// Each registry's health (the probe's): a region with a problem as a
    /// whole has it said once there, not once per item here.
    health: Arc<HealthBook>,
    in_flight: Arc<InFlight>,
    /// Held while an item is finished and the other regions are checked.
    completion: Mutex<()>,
    /// Per region: not dispatched to before this time while unreachable.
    gates: Vec<Mutex<Gate>>,
    /// Any-region mode: told when a tag's last item is done.
    merge: Option<Arc<Merge>>,
    /// A cluster member works only on its share, and only while its lease
    /// is firm.
    cluster: Option<Arc<Cluster>>,
}

impl Workers {
    pub fn new(
        config: Arc<Config>,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        doorbell: Arc<Doorbell>,
        notifier: Arc<Notifier>,
        health: Arc<HealthBook>,
        merge: Option<Arc<Merge>>,
    ) -> Workers {
        let regions = config.regions.len();
        Workers {
            config,
            engine,
            metrics,
            doorbell,
            notifier,
            health,
            in_flight: Arc::default(),
            completion: Mutex::new(()),
            gates: (0..regions).map(|_| Mutex::default()).collect(),
            merge,
            cluster: None,
        }
    }

    /// A cluster member's workers.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Workers {
        self.cluster = cluster;
        self
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The work in flight, for the status.
    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    fn gate(&self, r: RegionId) -> MutexGuard<'_, Gate> {
        self.gates[r].locked()
    }
}

/// Runs until `stop`, then drains in-flight groups within the grace
/// period; what is not done stays queued for the next start.
pub async fn run(w: Arc<Workers>, mut stop: Signal) {
    // Retry times and the delete budget lived in the previous process:
    // what is queued is tried again now.
    match w.engine.store().retry_all_now() {
        Ok(0) => {}
        Ok(n) => tracing::info!(items = n, "resuming queued work"),
        Err(e) => tracing::warn!("rescheduling queued work failed: {e:#}"),
    }
    let mut schedule = Schedule::new(w.config.regions.len());
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut cluster = w.cluster.as_ref().map(|c| c.watch());
    loop {
        if stop.is_set() {
            break;
        }
        let next_due = dispatch(&w, &mut schedule, &mut tasks);
        let pause = next_due
            .map(|at| Duration::from_millis(at.saturating_sub(now_unix_ms())))
            .unwrap_or(IDLE_WAKE)
            .min(IDLE_WAKE);
        let cluster_changed = async {
            match cluster.as_mut() {
                Some(c) => c.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = w.doorbell.rung() => {}
            _ = cluster_changed => {}
            _ = tokio::time::sleep(pause) => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!("a copy task failed: {e}");
                }
            }
            _ = stop.wait() => break,
        }
    }
    let grace = w.config.daemon.shutdown_grace;
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "waiting for in-flight copies");
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let left = tasks.len();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::warn!(
            left,
            grace_secs = grace.as_secs(),
            "grace period over: stopped unfinished copies; they stay queued for the next start"
        );
    }
}

/// One dispatch round: fills every region's free slots. Returns when the
/// next item (or gated region) is due.
fn dispatch(w: &Arc<Workers>, schedule: &mut Schedule, tasks: &mut JoinSet<()>) -> Option<u64> {
    let now = now_unix_ms();
    let slots = w.config.concurrency.images;
    let store = w.engine.store();
    let mut next_due: Option<u64> = None;
    let mut due_at = |t: u64| next_due = Some(next_due.map_or(t, |d: u64| d.min(t)));
    let mut groups: BTreeMap<GroupKey, Vec<(RegionId, Queued)>> = BTreeMap::new();
    // A cluster member starts only on its share, and nothing while its
    // lease is in doubt or a member set is being taken in (the cluster's
    // change wakes the loop again).
    let share = w.cluster.as_ref().map(|c| c.snapshot());
    if share.as_ref().is_some_and(|s| !s.open) {
        return None;
    }
    let owned: std::cell::RefCell<HashMap<String, bool>> = Default::default();
    let may_start = |repo: &str| match &share {
        None => true,
        Some(s) => *owned
            .borrow_mut()
            .entry(repo.to_owned())
            .or_insert_with(|| s.may_start(repo)),
    };
    let mut in_flight = w.in_flight.lock();
    for r in 0..w.config.regions.len() {
        schedule.refresh(store, &w.doorbell.hints, r, now);
        let gated = w.gate(r).until_ms;
        if gated > now {
            due_at(gated);
            continue;
        }
        if let Some(d) = schedule.next_due(r) {
            due_at(d);
        }
        let mut busy = in_flight.keys().filter(|(x, _, _)| *x == r).count();
        while let Some(q) = schedule.next(r, |repo, reference| {
            in_flight.contains_key(&(r, repo.to_owned(), reference.to_owned())) || !may_start(repo)
        }) {
            // Fresh pushes may use a few slots beyond the region's own, so
            // a long backfill never holds today's pushes back.
            let cap = match q.item.origin {
                Origin::Event => slots + EXPRESS_SLOTS,
                Origin::Reconcile => slots,
            };
            if busy >= cap {
                schedule.put_back(r, q, now);
                break;
            }
            busy += 1;
            in_flight.insert(
                (r, q.repository.clone(), q.reference.clone()),
                Instant::now(),
            );
            let key = GroupKey {
                origin: q.item.origin,
                action: q.item.action,
                repository: q.repository.clone(),
                reference: q.reference.clone(),
                digest: q.item.digest.as_str().to_owned(),
                source: q.item.source.clone(),
            };
            groups.entry(key).or_default().push((r, q));
        }
    }
    // Regions that have a group's item ready join it even without a free
    // slot (up to twice their slots): one read serves them all, and
    // regions that drifted apart (a retry, a late hint) fall back in step.
    for (key, members) in groups.iter_mut() {
        for r in 0..w.config.regions.len() {
            if members.iter().any(|(m, _)| *m == r)
                || w.gate(r).until_ms > now
                || in_flight.keys().filter(|(x, _, _)| *x == r).count() >= 2 * slots
                || in_flight.contains_key(&(r, key.repository.clone(), key.reference.clone()))
            {
                continue;
            }
            if let Some(q) = schedule.take(r, &key.repository, &key.reference, &key.digest) {
                in_flight.insert(
                    (r, q.repository.clone(), q.reference.clone()),
                    Instant::now(),
                );
                members.push((r, q));
            }
        }
    }
    drop(in_flight);
    tracing::trace!(groups = groups.len(), ?next_due, "dispatch round");
    for (key, members) in groups {
        let w = w.clone();
        // The image is named by each message about it (`replicated
        // team/app:v1`): the span adds only what they do not say.
        let span = tracing::info_span!("item", regions = members.len());
        tasks.spawn(
            async move {
                run_group(&w, &key, members).await;
                w.doorbell.ring();
            }
            .instrument(span),
        );
    }
    next_due
}

async fn run_group(w: &Workers, key: &GroupKey, members: Vec<(RegionId, Queued)>) {
    let regions: Vec<RegionId> = members.iter().map(|(r, _)| *r).collect();
    let digest = members[0].1.item.digest.clone();
    let pass = Pass::new(match key.origin {
        Origin::Event => Priority::Fresh,
        Origin::Reconcile => Priority::Backfill,
    });
    let copied = copy_group(w, &pass, key, &regions, &digest);
    let mut outcomes = match &w.cluster {
        None => copied.await,
        // A member that loses the repository (the member set changed) or
        // the firmness of its lease stops at once: dropping the copy
        // cancels its requests, before anyone else can have started.
        Some(c) => tokio::select! {
            outcomes = copied => outcomes,
            why = lost(c, &key.repository) => {
                // What it wrote before it stopped (a tag's PUT may have
                // landed unanswered) is not in the cached listings: the
                // next attempt asks the regions again.
                w.engine.forget_listing(&key.repository);
                regions
                    .iter()
                    .map(|&r| (r, Outcome::Deferred { wait: LOST_WAIT, why: why.clone(), told: false }))
                    .collect()
            }
        },
    };
    source_outage(w, key, &mut outcomes).await;
    for (r, q) in &members {
        let outcome = outcomes.remove(r).unwrap_or_else(|| {
            Outcome::Failed(Cause {
                kind: CauseKind::Transient,
                message: "the copy gave no answer for this region".to_owned(),
            })
        });
        record(w, *r, q, outcome);
    }
    // Every member's slot frees at once, so the regions of this group pick
    // their next items in the same dispatch round and copy them together.
    let mut in_flight = w.in_flight.lock();
    for (r, q) in &members {
        in_flight.remove(&(*r, q.repository.clone(), q.reference.clone()));
    }
}

/// Resolves once this member may no longer go on with `repository`; why.
async fn lost(c: &Cluster, repository: &str) -> String {
    let mut watch = c.watch();
    loop {
        if c.fenced() {
            tracing::warn!(%repository, "stopped a copy: the lease is not confirmed (etcd unreachable?)");
            return "stopped: this instance's lease was not confirmed; resumed once it is"
                .to_owned();
        }
        if !c.owns(repository) {
            let to = c
                .owner(repository)
                .map_or_else(|| "nobody".to_owned(), |m| m.id);
            tracing::info!(%repository, owner = %to, "stopped a copy: the repository moved to another instance");
            return format!("stopped: the repository moved to instance {to}");
        }
        watch.changed().await;
    }
}

/// Any-region mode: a copy that found no one at the other end may have
/// failed to read its source region, not to write its target. When the
/// source does not answer `GET /v2/`, the targets are not to blame: their
/// items wait for the source (no attempt counted, no gate on the target,
/// which goes on taking copies from other regions).
async fn source_outage(w: &Workers, key: &GroupKey, outcomes: &mut BTreeMap<RegionId, Outcome>) {
    let Some(name) = &key.source else { return };
    let unreachable = |o: &Outcome| {
        matches!(
            o,
            Outcome::Failed(Cause {
                kind: CauseKind::Unreachable,
                ..
            })
        )
    };
    if !outcomes.values().any(unreachable) {
        return;
    }
    let Some(s) = w.config.region_index(name) else {
        return;
    };
    let source = &w.engine.regions()[s];
    let down = match tokio::time::timeout(SOURCE_CHECK_WAIT, source.check()).await {
        Ok(Ok(())) => false,
        Ok(Err(p)) => p.kind == crate::registry::check::ProblemKind::Unreachable,
        Err(_) => true,
    };
    if !down {
        return;
    }
    for (r, o) in outcomes.iter_mut() {
        if *r != s && unreachable(o) {
            *o = Outcome::Deferred {
                wait: SOURCE_WAIT,
                why: format!("waits for region {name}, where it was pushed, to answer again"),
                told: false,
            };
        }
    }
}

/// Copies (or deletes) a group's item in each of its regions.
async fn copy_group(
    w: &Workers,
    pass: &Pass,
    key: &GroupKey,
    regions: &[RegionId],
    digest: &crate::digest::Digest,
) -> BTreeMap<RegionId, Outcome> {
    let mut outcomes: BTreeMap<RegionId, Outcome> = BTreeMap::new();
    let source = match &key.source {
        None => Source::Primary,
        Some(name) => match w.config.region_index(name) {
            Some(r) => Source::Region(r),
            None => {
                let cause = Cause::permanent(format!(
                    "the region {name} this change was to be read from is not in the config any more"
                ));
                for &r in regions {
                    outcomes.insert(r, Outcome::Failed(cause.clone()));
                }
                return outcomes;
            }
        },
    };
    match key.action {
        Action::Copy if key.reference == key.digest => {
            for (r, res) in w
                .engine
                .copy_manifest_to(pass, source, &key.repository, digest, regions)
                .await
            {
                outcomes.insert(r, res.map_or_else(Outcome::Failed, |()| Outcome::Done));
            }
        }
        Action::Copy => {
            let job = ImageJob {
                repository: key.repository.clone(),
                digest: digest.clone(),
                tags: vec![key.reference.clone()],
                source,
            };
            for o in w.engine.copy_image_to(pass, &job, regions).await {
                outcomes.insert(o.region, o.failure.map_or(Outcome::Done, Outcome::Failed));
            }
        }
        Action::Delete => {
            let deletes = regions
                .iter()
                .map(|&r| async move { (r, delete(w, r, &key.repository, &key.reference).await) });
            outcomes.extend(futures::future::join_all(deletes).await);
        }
    }
    outcomes
}

/// Deletes `repository@reference` (a digest, or a tag) in region `r`,
/// within the hourly cap; a dry run only says what it would do.
async fn delete(w: &Workers, r: RegionId, repository: &str, reference: &str) -> Outcome {
    let region = &w.engine.regions()[r];
    // A digest has a ':'; a tag cannot.
    let by_digest = reference.contains(':');
    let what = image_ref(repository, reference);
    if w.config.daemon.deletes_dry_run {
        tracing::info!(
            region = %region.name(),
            "dry run: would delete {what} (deleted on the primary)"
        );
        return Outcome::WouldDelete;
    }
    // The digest the region acknowledged under this reference, when
    // georep wrote it there: what a notification may say was deleted.
    let store = w.engine.store();
    let deleted = match reference.parse::<Digest>() {
        Ok(d) => Some(d),
        Err(_) => store.manifest(r, repository, reference).map(|f| f.digest),
    };
    // The cap counts manifests (content) deleted, durably (a restart does
    // not reset it); removing a tag alone deletes no content and is not
    // capped.
    if by_digest {
        match w
            .engine
            .store()
            .take_delete(r, w.config.daemon.max_deletes_per_hour, now_unix_ms())
        {
            Ok(Ok(())) => {}
            Ok(Err(wait_ms)) => {
                return Outcome::Deferred {
                    wait: Duration::from_millis(wait_ms),
                    why: format!(
                        "delete cap reached ({} per hour in region {})",
                        w.config.daemon.max_deletes_per_hour,
                        region.name()
                    ),
                    told: true,
                };
            }
            Err(e) => {
                return Outcome::Failed(Cause {
                    kind: CauseKind::Transient,
                    message: format!("recording a delete in the state store failed: {e}"),
                });
            }
        }
    }
    match region.delete_manifest(repository, reference).await {
        Ok(found) => {
            let forgotten = match reference.parse::<Digest>() {
                Ok(d) => store.forget_manifest_and_tags(r, repository, &d),
                Err(_) => store.forget_manifest(r, repository, reference),
            };
            if let Err(e) = forgotten {
                tracing::warn!("recording a delete failed: {e:#}");
            }
            if found {
                w.metrics.regions[r]
                    .deletes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(region = %region.name(), "deleted {what}");
            }
            Outcome::Deleted(deleted)
        }
        // Registry 2.x cannot delete a tag alone: it removes a tag with its
        // manifest (the delete by digest the primary sent before this one).
        // Done once the tag is gone; while that delete waits (the cap), so
        // does this one.
        Err(e)
            if !by_digest
                && matches!(
                    e.status(),
                    Some(
                        reqwest::StatusCode::BAD_REQUEST | reqwest::StatusCode::METHOD_NOT_ALLOWED
                    )
                ) =>
        {
            tracing::debug!(region = %region.name(), "the region cannot delete a tag alone: {e:#}");
            let scope = crate::registry::Scope::push(repository);
            match region.head_manifest(repository, reference, &scope).await {
                Ok(None) => {
                    if let Err(e) = store.forget_manifest(r, repository, reference) {
                        tracing::warn!("recording a delete failed: {e:#}");
                    }
                    Outcome::Deleted(deleted)
                }
                Ok(Some(h)) if store.has_item(r, repository, h.digest.as_str()) => {
                    // Looked at again just after that delete is due (it may
                    // be waiting for the cap), at most a minute later.
                    let due_ms = store
                        .queued_item(r, repository, h.digest.as_str())
                        .map_or(0, |q| q.item.not_before_ms);
                    let wait = Duration::from_millis(
                        due_ms.saturating_sub(now_unix_ms()).saturating_add(1_000),
                    )
                    .min(TAG_DELETE_WAIT);
                    Outcome::Deferred {
                        wait,
                        why: format!(
                            "waits for the delete of its manifest {} (region {} cannot delete a tag alone)",
                            h.digest,
                            region.name()
                        ),
                        told: false,
                    }
                }
                // Any-region mode: with its manifest, when nothing else
                // there points at it.
                Ok(Some(h)) if w.merge.is_some() => {
                    match super::lone_tag::delete_with_manifest(
                        w, r, repository, reference, &h.digest,
                    )
                    .await
                    {
                        super::lone_tag::LoneTag::Deleted => Outcome::Deleted(Some(h.digest)),
                        super::lone_tag::LoneTag::Wait { wait_ms, why } => Outcome::Deferred {
                            wait: Duration::from_millis(wait_ms),
                            why,
                            told: true,
                        },
                        super::lone_tag::LoneTag::Failed(cause) => Outcome::Failed(cause),
                    }
                }
                Ok(Some(h)) => Outcome::Failed(Cause {
                    kind: CauseKind::Permanent,
                    message: format!(
                        "region {} cannot delete the tag {what} alone ({}), and its manifest {} is not being deleted",
                        region.name(),
                        e.status().map_or_else(String::new, |s| s.to_string()),
                        h.digest
                    ),
                }),
                Err(e) => Outcome::Failed(Cause::of(
                    format_args!("checking {what} after a delete"),
                    &e,
                )),
            }
        }
        Err(e) => Outcome::Failed(Cause::of(format_args!("deleting {what}"), &e)),
    }
}

/// Records what became of item `q` in region `r`: removed from the queue
/// when done, else rescheduled or parked with its reason.
fn record(w: &Workers, r: RegionId, q: &Queued, outcome: Outcome) {
    record_outcome(w, r, q, outcome);
    // The dispatcher reads this key again: finished, waiting, or changed.
    w.doorbell.hints.touch(r, &q.repository, &q.reference);
}

fn record_outcome(w: &Workers, r: RegionId, q: &Queued, outcome: Outcome) {
    let store = w.engine.store();
    let region = w.engine.regions()[r].name();
    let m = &w.metrics.regions[r];
    let what = image_ref(&q.repository, &q.reference);
    match outcome {
        Outcome::Done
        | Outcome::Deleted(_)
        | Outcome::WouldDelete
        | Outcome::Failed(Cause {
            kind: CauseKind::Gone,
            ..
        }) => {
            if let Outcome::Failed(c) = &outcome {
                tracing::info!(%region, "dropped {what}: {c}");
            }
            m.items_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            open_gate(w, r);
            // One lock for finishing and the all-regions check, so exactly
            // one region's completion announces the image complete.
            let _one = w.completion.locked();
            let removed = match store.finish_item(r, q) {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::warn!(%region, "recording {what} as done failed (it will be checked again): {e:#}");
                    false
                }
            };
            status_recorded(region, store.record_outcome(r, None));
            if !removed {
                // Any-region mode: a newer decision took this region's item
                // away while it was copied (the region pushed the winner
                // itself, say); what the copy just wrote is weighed again.
                if let Some(merge) = &w.merge
                    && q.item.action == Action::Copy
                    && !store.has_item(r, &q.repository, &q.reference)
                    && let Err(e) = merge.wrote(r, &q.repository, &q.reference, &q.item.digest)
                {
                    tracing::warn!("deciding {what} again failed (the next reconcile does): {e:#}");
                }
                return;
            }
            if let Some(merge) = &w.merge
                && let Err(e) = merge.settle(&q.repository, &q.reference)
            {
                tracing::warn!(
                    "recording that the regions agree on {what} failed (the next reconcile does): {e:#}"
                );
            }
            let everywhere = || {
                (0..w.config.regions.len()).all(|x| !store.has_item(x, &q.repository, &q.reference))
            };
            match outcome {
                Outcome::Done if q.item.origin == Origin::Event => {
                    let latency = latency_secs(q.item.event_ns);
                    m.latency.observe(latency);
                    w.notifier.send(&Notification {
                        region: Some(region.to_owned()),
                        latency_secs: Some(latency),
                        ..notification(w, NotifyEvent::Replicated, q, Some(r))
                    });
                    if everywhere() {
                        w.metrics.complete_latency.observe(latency);
                        w.notifier.send(&Notification {
                            regions: region_names(w),
                            latency_secs: Some(latency),
                            ..notification(w, NotifyEvent::Complete, q, None)
                        });
                        tracing::info!(
                            latency_ms = (latency * 1000.0) as u64,
                            "{what} complete in every region"
                        );
                    }
                }
                Outcome::Deleted(digest) if everywhere() => {
                    let mut n = notification(w, NotifyEvent::Deleted, q, None);
                    n.digest = n.digest.or(digest);
                    n.regions = region_names(w);
                    w.notifier.send(&n);
                    tracing::info!("{what} deleted in every region");
                }
                _ => {}
            }
        }
        Outcome::Deferred { wait, why, told } => {
            let item = WorkItem {
                not_before_ms: now_unix_ms() + wait.as_millis() as u64,
                last_error: Some(why.clone()),
                ..q.item.clone()
            };
            if !told {
                tracing::debug!(%region, wait_secs = wait.as_secs(), "{what}: {why}");
            } else if q.item.last_error.as_deref() != Some(why.as_str()) {
                tracing::warn!(%region, wait_secs = wait.as_secs(), "{what}: {why}; waiting");
                status_recorded(
                    region,
                    store.record_outcome(r, Some(&format!("{what}: {why}"))),
                );
            }
            if let Err(e) = store.update_item(r, q, &item) {
                retry_time_lost(w, r, &what, wait, &e);
            }
        }
        Outcome::Failed(cause) if cause.kind == CauseKind::Unreachable => {
            // An outage, not this item's fault: the item stays as it is,
            // the region waits, and a few items probe it later.
            m.error(cause.kind);
            let mut gate = w.gate(r);
            gate.failures = gate.failures.saturating_add(1);
            // Waiting longer than the breaker's own probing interval would
            // only delay noticing that the region is back.
            let delay = retry_backoff(w)
                .delay(gate.failures, None)
                .min(crate::registry::breaker::MAX_COOLDOWN);
            gate.until_ms = now_unix_ms() + delay.as_millis() as u64;
            if gate.failures == 1 {
                tracing::warn!(%region, "region unreachable; its queue waits (it keeps its backlog): {cause}");
            } else {
                tracing::debug!(%region, failures = gate.failures, retry_in_ms = delay.as_millis() as u64, "region still unreachable: {cause}");
            }
            // Not the region's last error: an outage is its health (the
            // probe's, in the status), and it ends by itself; an error
            // kept here would outlive it.
            drop(gate);
        }
        Outcome::Failed(cause) => {
            m.error(cause.kind);
            let attempts = q.item.attempts.saturating_add(1);
            let park = match cause.kind {
                CauseKind::Permanent => true,
                CauseKind::Transient => attempts >= w.config.daemon.park_after_attempts,
                CauseKind::Unreachable | CauseKind::Gone => false,
            };
            let delay = retry_backoff(w).delay(attempts, None);
            // A `failed` notification goes out once per item, at its first
            // park (a reconcile wakes parked items; parking again is no
            // news).
            let tell = park && !q.item.failure_told;
            let item = WorkItem {
                attempts,
                not_before_ms: now_unix_ms() + delay.as_millis() as u64,
                last_error: Some(cause.message.clone()),
                parked: park,
                failure_told: q.item.failure_told || tell,
                ..q.item.clone()
            };
            if tell {
                w.notifier.send(&Notification {
                    region: Some(region.to_owned()),
                    reason: Some(cause.message.clone()),
                    ..notification(w, NotifyEvent::Failed, q, Some(r))
                });
            }
            // The region's own problem (credentials, TLS) is logged once by
            // the probe; each item failing for it is detail.
            let first = usize::from(w.engine.primary().is_some());
            let region_problem = w
                .health
                .get()
                .get(first + r)
                .is_some_and(|h| h.problem.is_some());
            if region_problem {
                tracing::debug!(%region, attempts, parked = park, "{what} failed: {cause}");
            } else if park {
                tracing::warn!(%region, attempts, "parked {what} until the next reconcile: {cause}");
            } else {
                tracing::info!(%region, attempts, retry_in_ms = delay.as_millis() as u64, "{what} failed, will retry: {cause}");
            }
            status_recorded(region, store.record_outcome(r, Some(&cause.message)));
            if let Err(e) = store.update_item(r, q, &item) {
                retry_time_lost(w, r, &what, delay, &e);
            }
        }
    }
}

/// A region's last success or error could not be recorded: said, and
/// otherwise harmless (the next outcome records it again).
fn status_recorded(region: &str, result: Result<(), StoreError>) {
    if let Err(e) = result {
        tracing::warn!(%region, "recording the region's last outcome failed: {e:#}");
    }
}

/// An item's new retry time (or park) could not be recorded, so the store
/// still says it is due now: the region pauses for the wait the item was
/// given, instead of taking it again at once in a loop.
fn retry_time_lost(w: &Workers, r: RegionId, what: &str, wait: Duration, e: &StoreError) {
    let region = w.engine.regions()[r].name();
    tracing::warn!(
        %region,
        wait_ms = wait.as_millis() as u64,
        "recording the retry time of {what} failed; the region pauses instead: {e:#}"
    );
    let mut gate = w.gate(r);
    gate.until_ms = gate.until_ms.max(now_unix_ms() + wait.as_millis() as u64);
}

/// A notification about item `q`, at region `r` (or the primary).
fn notification(w: &Workers, event: NotifyEvent, q: &Queued, r: Option<RegionId>) -> Notification {
    let tag = (!q.reference.contains(':')).then_some(q.reference.as_str());
    let host = match (r, w.engine.primary()) {
        (Some(r), _) => w.engine.regions()[r].host(),
        (None, Some(p)) => p.host(),
        // Any-region mode: the region the change was made in.
        (None, None) => q
            .item
            .source
            .as_deref()
            .and_then(|name| w.engine.regions().iter().find(|x| x.name() == name))
            .map(|x| x.host())
            .unwrap_or_default(),
    };
    Notification {
        media_type: q.item.media_type.clone(),
        size: q.item.size,
        ..Notification::new(event, &q.repository, tag, q.item.known_digest(), host)
    }
}

fn region_names(w: &Workers) -> Vec<String> {
    w.engine
        .regions()
        .iter()
        .map(|r| r.name().to_owned())
        .collect()
}

/// `repo:tag` or `repo@digest`, for messages.
fn image_ref(repository: &str, reference: &str) -> String {
    let sep = if reference.contains(':') { '@' } else { ':' };
    format!("{repository}{sep}{reference}")
}

fn retry_backoff(w: &Workers) -> Backoff {
    Backoff {
        base: RETRY_BASE,
        max: w.config.daemon.retry_max,
        max_attempts: u32::MAX,
    }
}

/// Region `r` answered: lift its gate.
fn open_gate(w: &Workers, r: RegionId) {
    let mut gate = w.gate(r);
    if gate.failures > 0 {
        tracing::info!(region = %w.engine.regions()[r].name(), "region reachable again; catching up");
        *gate = Gate::default();
    }
}

/// Seconds from the primary's event time to now (0 if the clocks disagree).
fn latency_secs(event_ns: u64) -> f64 {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now_ns.saturating_sub(event_ns) as f64 / 1e9
}
