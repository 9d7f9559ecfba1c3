//! The intake: the one way changes enter the durable queue. The webhook,
//! the reconcile and the audit hand their changes here; the intake records
//! them in the store, makes them durable when the caller's answer depends
//! on it, names the changed keys and rings the workers' doorbell.
//!
//! Nothing here copies anything (STYLE habit 6): the workers pick the work
//! up from the queue, whoever brought it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::doorbell::Doorbell;
use super::merge::{Merge, Noticed};
use super::webhook::{Decision, Event, decide};
use crate::background::{Activation, BackgroundTask};
use crate::config::{DeletePolicy, RepositoryFilter};
use crate::metrics::{EventResult, Metrics};
use crate::store::queue::{Accepted, Action, Change, Origin, WorkItem};
use crate::store::{RegionId, RegionOnly, Store, StoreError, now_unix_ms};

/// Event ids are remembered this long for de-duplication.
pub const EVENT_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Old event ids are forgotten this often.
pub const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// What became of the events of one notification: the webhook's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub queued: usize,
    pub duplicate: usize,
    pub stale: usize,
    pub ignored: usize,
    pub rejected: usize,
    /// georep's own writes notified back (any-region mode).
    #[serde(default)]
    pub echo: usize,
}

impl Counts {
    /// Adds what another instance recorded of the same notification.
    pub fn merge(&mut self, o: Counts) {
        self.queued += o.queued;
        self.duplicate += o.duplicate;
        self.stale += o.stale;
        self.ignored += o.ignored;
        self.rejected += o.rejected;
        self.echo += o.echo;
    }

    fn add(&mut self, r: EventResult) {
        match r {
            EventResult::Queued => self.queued += 1,
            EventResult::Duplicate => self.duplicate += 1,
            EventResult::Stale => self.stale += 1,
            EventResult::Ignored => self.ignored += 1,
            EventResult::Rejected => self.rejected += 1,
            EventResult::Echo => self.echo += 1,
        }
    }
}

/// Events that could not be made durable: the sender must deliver them
/// again (the webhook answers 503).
#[derive(Debug, thiserror::Error)]
#[error("cannot record the event (the registry will retry): {source}")]
pub struct NotRecorded {
    #[source]
    pub source: StoreError,
}

pub struct Intake {
    store: Arc<Store>,
    doorbell: Arc<Doorbell>,
    metrics: Arc<Metrics>,
    filter: RepositoryFilter,
    deletes: DeletePolicy,
    /// Any-region mode: a region's events are decided by the merge.
    merge: Option<Arc<Merge>>,
}

impl Intake {
    pub fn new(
        store: Arc<Store>,
        doorbell: Arc<Doorbell>,
        metrics: Arc<Metrics>,
        filter: RepositoryFilter,
        deletes: DeletePolicy,
        merge: Option<Arc<Merge>>,
    ) -> Intake {
        Intake {
            store,
            doorbell,
            metrics,
            filter,
            deletes,
            merge,
        }
    }

    /// The primary's notification: see [`Intake::events_from`].
    pub async fn events(&self, events: &[Event]) -> Result<Counts, NotRecorded> {
        self.events_from(None, events).await
    }

    /// Decides each of a notification's events — from the primary
    /// (`None`), or from region `region` in any-region mode — and queues
    /// what the regions need; returns once every queued event is durable
    /// (DESIGN invariant 5: the registry forgets an event once answered).
    pub async fn events_from(
        &self,
        region: Option<RegionId>,
        events: &[Event],
    ) -> Result<Counts, NotRecorded> {
        let mut counts = Counts::default();
        for event in events {
            let result = match (region, &self.merge) {
                (Some(r), Some(merge)) => self.region_event(merge, r, event)?,
                _ => self.event(event)?,
            };
            self.metrics.event(result);
            counts.add(result);
        }
        if counts.queued > 0 {
            self.store.flush().await.map_err(|source| {
                tracing::error!("cannot flush the state store: {source:#}");
                NotRecorded { source }
            })?;
            self.doorbell.ring();
        }
        Ok(counts)
    }

    fn event(&self, event: &Event) -> Result<EventResult, NotRecorded> {
        let (id, mut change) = match self.decided(event) {
            Ok(decided) => decided,
            Err(result) => return Ok(result),
        };
        if change.item.action == Action::Delete {
            self.deleted_on_primary(&mut change);
        }
        if change.item.action == Action::Delete && self.deletes == DeletePolicy::Ignore {
            tracing::debug!(
                repository = %change.repository,
                reference = %change.reference,
                "deleted on the primary; deletes are ignored by config"
            );
            return Ok(EventResult::Ignored);
        }
        match self.store.accept(Some(&id), std::slice::from_ref(&change)) {
            Ok(Accepted::Queued) => {
                // The event is the primary's word that it serves the tag
                // at this digest, as a listing would say.
                if change.item.action == Action::Copy
                    && !change.reference.contains(':')
                    && let Err(e) = self.store.record_primary_tag(
                        &change.repository,
                        &change.reference,
                        &change.item.digest,
                        change.item.media_type.as_deref(),
                    )
                {
                    tracing::warn!(
                        "recording the primary's tag {}:{} failed: {e:#}",
                        change.repository,
                        change.reference
                    );
                }
                self.doorbell
                    .hints
                    .touch_regions(None, &change.repository, &change.reference);
                tracing::debug!(%id, repository = %change.repository, reference = %change.reference, "event queued");
                Ok(EventResult::Queued)
            }
            Ok(Accepted::Duplicate) => Ok(EventResult::Duplicate),
            Ok(Accepted::Stale) => {
                tracing::debug!(
                    %id,
                    "event older than one already accepted for {}:{}",
                    change.repository,
                    change.reference
                );
                Ok(EventResult::Stale)
            }
            Err(source) => {
                tracing::error!("cannot queue event {id}: {source:#}");
                Err(NotRecorded { source })
            }
        }
    }

    /// The event's id and change, or what became of it when it asks for
    /// nothing (ignored, logged at debug) or is malformed (rejected,
    /// warned).
    fn decided(&self, event: &Event) -> Result<(String, Change), EventResult> {
        match decide(event, &self.filter, now_unix_ms()) {
            Decision::Ignore(why) => {
                tracing::debug!(
                    id = event.id.as_deref().unwrap_or(""),
                    "event ignored: {why}"
                );
                Err(EventResult::Ignored)
            }
            Decision::Reject(why) => {
                tracing::warn!("notification event rejected: {why}");
                Err(EventResult::Rejected)
            }
            Decision::Queue { id, change } => Ok((id, *change)),
        }
    }

    /// One event of region `r` (any-region mode): georep's own writes are
    /// echoes; people's changes go to the merge, which decides for every
    /// region.
    fn region_event(
        &self,
        merge: &Merge,
        r: RegionId,
        event: &Event,
    ) -> Result<EventResult, NotRecorded> {
        let (id, change) = match self.decided(event) {
            Ok(decided) => decided,
            Err(result) => return Ok(result),
        };
        if self.store.event_seen(&id) {
            return Ok(EventResult::Duplicate);
        }
        let not_recorded = |source: StoreError| {
            tracing::error!("cannot record event {id}: {source:#}");
            NotRecorded { source }
        };
        let noticed = if merge.is_echo(r, event) {
            if change.item.action == Action::Copy && !change.reference.contains(':') {
                merge
                    .echoed(
                        r,
                        &change.repository,
                        &change.reference,
                        &change.item.digest,
                        Some(change.item.event_ns),
                    )
                    .map_err(not_recorded)?;
            }
            Noticed::Echo
        } else {
            let repo = &change.repository;
            let item = &change.item;
            let by_digest = change.reference.contains(':');
            let at = Some(item.event_ns);
            match (item.action, by_digest) {
                (Action::Copy, false) => merge.tag_changed(
                    r,
                    repo,
                    &change.reference,
                    Some(&item.digest),
                    at,
                    Origin::Event,
                ),
                (Action::Copy, true) => {
                    merge.digest_pushed(r, repo, &item.digest, item.event_ns, Origin::Event)
                }
                (Action::Delete, false) => {
                    merge.tag_changed(r, repo, &change.reference, None, at, Origin::Event)
                }
                (Action::Delete, true) => {
                    merge.digest_deleted(r, repo, &item.digest, item.event_ns)
                }
            }
            .map_err(not_recorded)?
        };
        // Recorded after its effect: a crash in between redelivers it, and
        // deciding again is harmless.
        self.store.accept(Some(&id), &[]).map_err(not_recorded)?;
        Ok(match noticed {
            Noticed::Echo => {
                tracing::debug!(%id, repository = %change.repository, reference = %change.reference, "echo of georep's own write");
                EventResult::Echo
            }
            Noticed::Queued => EventResult::Queued,
        })
    }

    /// A delete on the primary is a fact about the primary, whatever the
    /// policy: its tags are tombstoned in the store (so no status counts
    /// them missing in a region), and a delete by tag takes the digest the
    /// primary last listed under the tag, when the store knows it.
    fn deleted_on_primary(&self, change: &mut Change) {
        let repo = &change.repository;
        let result = match change.reference.parse::<crate::digest::Digest>() {
            Ok(d) => self
                .store
                .primary_tags(repo)
                .into_iter()
                .filter(|(_, t)| t.digest == d)
                .try_for_each(|(tag, _)| self.store.tombstone_primary_tag(repo, &tag)),
            Err(_) => {
                if change.item.known_digest().is_none()
                    && let Some(t) = self.store.primary_tag(repo, &change.reference)
                {
                    change.item.digest = t.digest;
                }
                self.store.tombstone_primary_tag(repo, &change.reference)
            }
        };
        if let Err(e) = result {
            tracing::warn!("recording a delete on the primary ({repo}) failed: {e:#}");
        }
    }

    /// Queues changes found by a scan (not yet flushed: see
    /// [`Intake::flush`]), names them to the dispatcher and wakes it.
    /// Returns how many were queued.
    pub fn changes(&self, batch: &mut Vec<Change>) -> Result<usize, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        let accepted = self.store.accept(None, batch);
        for c in batch.iter() {
            self.doorbell
                .hints
                .touch_regions(c.regions.as_deref(), &c.repository, &c.reference);
        }
        batch.clear();
        self.doorbell.ring();
        accepted.map(|_| n)
    }

    /// Whether the regions accept pushes (any-region mode): changes are the
    /// merge's to decide.
    pub fn any_region(&self) -> bool {
        self.merge.is_some()
    }

    /// Whether deletes on the primary are carried to the regions.
    pub fn propagates_deletes(&self) -> bool {
        self.deletes == DeletePolicy::Propagate
    }

    /// Under `deletes.policy: propagate`, queues the deletes still due in
    /// region `r`: tags the primary deleted that the region still holds
    /// (found by a reconcile). A manifest the primary no longer serves
    /// (`on_primary` says `Some(false)`) goes by digest, with every tag on
    /// it; a tag whose manifest the primary still serves goes alone; an
    /// unknown answer (`None`) waits for the next reconcile. Returns how
    /// many were queued.
    pub fn due_deletes(
        &self,
        r: RegionId,
        only: &[RegionOnly],
        on_primary: impl Fn(&str, &crate::digest::Digest) -> Option<bool>,
    ) -> Result<usize, StoreError> {
        if !self.propagates_deletes() || only.is_empty() {
            return Ok(0);
        }
        let now = now_unix_ms();
        let mut batch: Vec<Change> = Vec::new();
        let mut by_digest: Vec<(&str, &crate::digest::Digest)> = Vec::new();
        for o in only {
            let reference = match on_primary(&o.repository, &o.digest) {
                None => continue,
                Some(true) => o.tag.clone(),
                Some(false) if by_digest.contains(&(o.repository.as_str(), &o.digest)) => continue,
                Some(false) => {
                    by_digest.push((&o.repository, &o.digest));
                    o.digest.as_str().to_owned()
                }
            };
            batch.push(Change {
                repository: o.repository.clone(),
                reference,
                item: WorkItem::new(Action::Delete, o.digest.clone(), Origin::Reconcile, 0, now),
                regions: Some(vec![r]),
            });
        }
        self.changes(&mut batch)
    }

    /// Makes what [`Intake::changes`] queued durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// Parked items of region `region` (or all) and `repository` (or
    /// all) are tried again: a reconcile's first step, and an operator's
    /// retry.
    pub fn unpark(
        &self,
        region: Option<RegionId>,
        repository: Option<&str>,
    ) -> Result<usize, StoreError> {
        let n = self.store.unpark(region, repository)?;
        if n > 0 {
            self.doorbell.hints.rescan_all();
        }
        self.doorbell.ring();
        Ok(n)
    }
}

/// Forgets event ids older than [`EVENT_MEMORY`], every [`FORGET_EVERY`].
pub struct ForgetEvents(pub Arc<Store>);

impl BackgroundTask for ForgetEvents {
    /// Event ids forgotten.
    type Report = usize;
    const NAME: &'static str = "forget old event ids";

    async fn activate(&self) -> Activation<usize> {
        let cutoff = now_unix_ms().saturating_sub(EVENT_MEMORY.as_millis() as u64);
        match self.0.prune_events(cutoff) {
            Ok(n) => Activation {
                report: n,
                error: None,
            },
            Err(e) => {
                tracing::warn!("forgetting old event ids failed: {e:#}");
                Activation {
                    report: 0,
                    error: Some(format!("{e:#}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::{Origin, WorkItem};
    use crate::watch::webhook::parse;

    fn intake(deletes: DeletePolicy) -> (tempfile::TempDir, Intake, Arc<Doorbell>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let regions = [
            ("east".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("west".to_owned(), "http://127.0.0.1:2".to_owned()),
        ];
        let store = Arc::new(Store::open(&dir.path().join("store"), &regions).expect("store"));
        let doorbell = Arc::new(Doorbell::new(2));
        let intake = Intake::new(
            store,
            doorbell.clone(),
            Arc::new(Metrics::new(2)),
            RepositoryFilter::default(),
            deletes,
            None,
        );
        (dir, intake, doorbell)
    }

    fn envelope(events: &[(&str, &str, &str)]) -> Vec<Event> {
        let digest = crate::digest::Digest::sha256_of(b"m");
        let events: Vec<String> = events
            .iter()
            .map(|(id, action, tag)| {
                format!(
                    r#"{{"id":"{id}","timestamp":"2026-01-01T00:00:00.000000001Z","action":"{action}",
                        "target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json",
                        "digest":"{digest}","repository":"team/app","tag":"{tag}"}}}}"#
                )
            })
            .collect();
        parse(format!(r#"{{"events":[{}]}}"#, events.join(",")).as_bytes()).expect("envelope")
    }

    #[tokio::test]
    async fn events_are_queued_once_durably_and_wake_the_workers() {
        let (_dir, intake, doorbell) = intake(DeletePolicy::Propagate);
        let counts = intake
            .events(&envelope(&[
                ("e1", "push", "v1"),
                ("e1", "push", "v1"),
                ("e2", "pull", "v1"),
            ]))
            .await
            .expect("recorded");
        assert_eq!(
            counts,
            Counts {
                queued: 1,
                duplicate: 1,
                ignored: 1,
                ..Counts::default()
            }
        );
        assert_eq!(intake.store.queued(0, 10).len(), 1);
        assert_eq!(intake.store.queued(1, 10).len(), 1);
        // The doorbell was rung and both regions were told the key.
        tokio::time::timeout(Duration::from_secs(1), doorbell.rung())
            .await
            .expect("rung");
        for r in 0..2 {
            let hint = doorbell.hints.take(r);
            assert!(
                hint.keys
                    .contains(&("team/app".to_owned(), "v1".to_owned()))
            );
        }
        assert_eq!(intake.metrics.events(EventResult::Duplicate), 1);
    }

    #[tokio::test]
    async fn deletes_follow_the_policy() {
        let (_dir, intake, _) = intake(DeletePolicy::Ignore);
        let counts = intake
            .events(&envelope(&[("d1", "delete", "v1")]))
            .await
            .expect("recorded");
        assert_eq!(counts.ignored, 1);
        assert!(intake.store.queued(0, 10).is_empty());

        let (_dir, intake, _) = self::intake(DeletePolicy::Propagate);
        let counts = intake
            .events(&envelope(&[("d1", "delete", "v1")]))
            .await
            .expect("recorded");
        assert_eq!(counts.queued, 1);
        assert_eq!(intake.store.queued(1, 10)[0].item.action, Action::Delete);
    }

    #[tokio::test]
    async fn scanned_changes_go_to_the_regions_they_name() {
        let (_dir, intake, doorbell) = intake(DeletePolicy::Propagate);
        let digest = crate::digest::Digest::sha256_of(b"m");
        let mut batch = vec![Change {
            repository: "team/app".into(),
            reference: "v2".into(),
            item: WorkItem::new(Action::Copy, digest, Origin::Reconcile, 0, now_unix_ms()),
            regions: Some(vec![1]),
        }];
        assert_eq!(intake.changes(&mut batch).expect("queued"), 1);
        assert!(batch.is_empty());
        assert!(intake.store.queued(0, 10).is_empty());
        assert_eq!(intake.store.queued(1, 10).len(), 1);
        assert!(doorbell.hints.take(0).keys.is_empty());
        assert_eq!(doorbell.hints.take(1).keys.len(), 1);
        assert_eq!(intake.changes(&mut Vec::new()).expect("nothing"), 0);
    }
}
