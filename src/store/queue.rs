//! The daemon's durable work: accepted events, the newest change seen per
//! reference, and one queue of work items per region.
//!
//! | tree | key | value (JSON) |
//! |---|---|---|
//! | `events` | event id | when it was accepted (unix ms) |
//! | `latest` | `repo \0 reference` | primary time of the newest change accepted (unix ns) |
//! | `queue/<region>` | `repo \0 reference` | [`WorkItem`] |
//!
//! A reference is a tag, or a digest for content pushed without one.
//! Accepting an event writes its id and its items in one transaction, and
//! the caller flushes before answering: an event that got a 2xx is on disk
//! (DESIGN invariant 5). Work on the same (region, repository, reference)
//! coalesces into one item carrying the newest digest; a change older than
//! one already accepted for that reference is dropped, so events that
//! arrive out of order cannot move a tag back.
//!
//! An item leaves its queue only through [`Store::finish_item`], which
//! removes it if it is still the version that was copied: a newer change
//! that arrived meanwhile stays queued.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use std::cell::RefCell;

use super::summary::{Entry, QueueFigures};
use super::{RegionId, Store, StoreError, decode, encode, key, now_unix_ms, split_key};
use crate::digest::Digest;
use crate::lock::Locked;

/// What a work item asks of its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Make the region hold `digest` under the reference.
    Copy,
    /// Delete manifest `digest` from the region.
    Delete,
}

/// Where a change came from; fresh pushes go ahead of backfill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A registry notification.
    Event,
    /// A full reconcile against the primary's listing.
    Reconcile,
}

/// One region's pending work on one (repository, reference).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    pub action: Action,
    pub digest: Digest,
    #[serde(default)]
    pub media_type: Option<String>,
    /// Size of the manifest, when the event said.
    #[serde(default)]
    pub size: Option<u64>,
    pub origin: Origin,
    /// The primary's time of the change (unix ns), 0 when unknown.
    pub event_ns: u64,
    /// When georep accepted the oldest change folded into this item that
    /// is not done yet (unix ms): the region's lag.
    pub since_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    /// Not tried again before this time (unix ms).
    #[serde(default)]
    pub not_before_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Given up on until the next reconcile.
    #[serde(default)]
    pub parked: bool,
    /// A `failed` notification went out for this item.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure_told: bool,
    /// Any-region mode: the region the change is read from (by name);
    /// `None`: the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The digest of a delete by tag whose digest georep never saw (the
/// registry's tag-delete event carries none): the empty input's, a
/// placeholder that no message may show.
const NO_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl WorkItem {
    /// What the queue's summary counts of this item.
    pub(super) fn entry(&self) -> Entry {
        Entry {
            since_ms: self.since_ms,
            parked: self.parked,
        }
    }

    /// The item's digest, unless it is a delete by tag whose digest is
    /// unknown.
    pub fn known_digest(&self) -> Option<&Digest> {
        (self.digest.as_str() != NO_DIGEST).then_some(&self.digest)
    }

    /// The placeholder digest of a delete by tag (see [`known_digest`]).
    ///
    /// [`known_digest`]: WorkItem::known_digest
    pub fn no_digest() -> Digest {
        Digest::sha256_of(b"")
    }

    /// A new item: ready now, never tried.
    pub fn new(
        action: Action,
        digest: Digest,
        origin: Origin,
        event_ns: u64,
        since_ms: u64,
    ) -> Self {
        WorkItem {
            action,
            digest,
            media_type: None,
            size: None,
            origin,
            event_ns,
            since_ms,
            attempts: 0,
            not_before_ms: 0,
            last_error: None,
            parked: false,
            failure_told: false,
            source: None,
        }
    }
}

/// One change to queue, for every region or some.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub repository: String,
    pub reference: String,
    pub item: WorkItem,
    /// Only these regions (a reconcile found only them behind); `None`: all.
    pub regions: Option<Vec<RegionId>>,
}

/// What accepting an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// New: its changes are queued.
    Queued,
    /// This event id was accepted before.
    Duplicate,
    /// Every change was older than one already accepted.
    Stale,
}

/// A queued item as read, with the bytes it was read as (what
/// [`Store::finish_item`] compares against).
#[derive(Clone, Debug)]
pub struct Queued {
    pub repository: String,
    pub reference: String,
    pub item: WorkItem,
    pub(super) raw: Vec<u8>,
}

/// One item an accepted transaction wrote: region, key, what the key held
/// before (if anything), what it holds now.
type Written = (RegionId, Vec<u8>, Option<Entry>, Entry);

impl Store {
    /// Records event `id` (if any) and queues `changes` for every region,
    /// atomically. Not durable until [`Store::flush`].
    pub fn accept(&self, id: Option<&str>, changes: &[Change]) -> Result<Accepted, StoreError> {
        let mut trees: Vec<&sled::Tree> = vec![&self.events, &self.latest];
        trees.extend(self.regions.iter().map(|r| &r.queue));
        let now = now_unix_ms();
        // Every region's summary is held from before the transaction until
        // its figures are applied (in region order; an item swap holds one),
        // so no swap of an item this writes can fall in between.
        let mut summaries: Vec<_> = self.regions.iter().map(|r| r.summary.locked()).collect();
        // What the transaction wrote, for the summaries once it commits
        // (its closure may run more than once).
        let written: RefCell<Vec<Written>> = RefCell::new(Vec::new());
        let result = trees.as_slice().transaction(|t| {
            written.borrow_mut().clear();
            if let Some(id) = id {
                if t[0].get(id.as_bytes())?.is_some() {
                    return Ok(Accepted::Duplicate);
                }
                t[0].insert(id.as_bytes(), encode(&now))?;
            }
            let mut queued = false;
            for c in changes {
                let k = key(&c.repository, &c.reference);
                if c.item.origin == Origin::Event {
                    let newest = t[1].get(&k)?.and_then(|v| decode::<u64>(&v));
                    if newest.is_some_and(|n| n > c.item.event_ns) {
                        continue;
                    }
                    t[1].insert(k.clone(), encode(&c.item.event_ns))?;
                }
                for (r, q) in t[2..].iter().enumerate() {
                    if c.regions.as_ref().is_some_and(|only| !only.contains(&r)) {
                        continue;
                    }
                    let old = q.get(&k)?.and_then(|v| decode::<WorkItem>(&v));
                    let old_entry = old.as_ref().map(WorkItem::entry);
                    let merged = match old {
                        None => c.item.clone(),
                        // A reconcile does not override pending work that
                        // came from an event, nor older work it only
                        // re-discovered: it only wakes parked items.
                        Some(o) if c.item.origin == Origin::Reconcile => {
                            if !o.parked && o.digest == c.item.digest {
                                continue;
                            }
                            if o.origin == Origin::Event && o.digest != c.item.digest && !o.parked {
                                continue;
                            }
                            WorkItem {
                                since_ms: o.since_ms.min(c.item.since_ms),
                                ..c.item.clone()
                            }
                        }
                        Some(o) => WorkItem {
                            since_ms: o.since_ms.min(c.item.since_ms),
                            origin: o.origin.min(c.item.origin),
                            ..c.item.clone()
                        },
                    };
                    q.insert(k.clone(), encode(&merged))?;
                    written
                        .borrow_mut()
                        .push((r, k.clone(), old_entry, merged.entry()));
                    queued = true;
                }
            }
            Ok::<_, ConflictableTransactionError<()>>(if queued || changes.is_empty() {
                Accepted::Queued
            } else {
                Accepted::Stale
            })
        });
        if result.is_ok() {
            for (r, k, old, new) in written.into_inner() {
                summaries[r].replace(&k, old, Some(new));
            }
        }
        result.map_err(|e| match e {
            TransactionError::Storage(e) => self.io(e),
            TransactionError::Abort(()) => self.io(sled::Error::ReportableBug(
                "queue transaction aborted".to_owned(),
            )),
        })
    }

    /// Whether event `id` was accepted before.
    pub fn event_seen(&self, id: &str) -> bool {
        self.events.contains_key(id.as_bytes()).unwrap_or(false)
    }

    /// Region `r`'s queue, in key order, at most `limit` items.
    pub fn queued(&self, r: RegionId, limit: usize) -> Vec<Queued> {
        self.regions[r]
            .queue
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let (repository, reference) = split_key(&k)?;
                let item = decode::<WorkItem>(&v)?;
                Some(Queued {
                    repository,
                    reference,
                    item,
                    raw: v.to_vec(),
                })
            })
            .take(limit)
            .collect()
    }

    /// Region `r`'s item on `repository:reference`, if queued.
    pub fn queued_item(&self, r: RegionId, repository: &str, reference: &str) -> Option<Queued> {
        let v = self.regions[r]
            .queue
            .get(key(repository, reference))
            .ok()
            .flatten()?;
        Some(Queued {
            repository: repository.to_owned(),
            reference: reference.to_owned(),
            item: decode(&v)?,
            raw: v.to_vec(),
        })
    }

    /// A pass found region `r` holding `digest` under `repository:tag`: a
    /// queued copy of exactly that is done (a daemon left it behind) and
    /// leaves the queue. Returns whether one did.
    pub fn finish_if_held(
        &self,
        r: RegionId,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        if self.queue_figures(r).len == 0 {
            return Ok(false);
        }
        match self.queued_item(r, repository, tag) {
            Some(q) if q.item.action == Action::Copy && q.item.digest == *digest => {
                self.finish_item(r, &q)
            }
            _ => Ok(false),
        }
    }

    /// Whether region `r` has work queued on `repository:reference`.
    pub fn has_item(&self, r: RegionId, repository: &str, reference: &str) -> bool {
        self.regions[r]
            .queue
            .contains_key(key(repository, reference))
            .unwrap_or(false)
    }

    /// Removes `done` from region `r`'s queue unless it changed since it
    /// was read. Returns whether it was removed.
    pub fn finish_item(&self, r: RegionId, done: &Queued) -> Result<bool, StoreError> {
        self.replace_item(r, done, None)
    }

    /// Region `r`'s queue in figures (kept in memory: no item is read).
    pub fn queue_figures(&self, r: RegionId) -> QueueFigures {
        self.regions[r].summary.locked().figures()
    }

    /// Region `r`'s first `limit` parked items, in key order.
    pub fn parked_items(&self, r: RegionId, limit: usize) -> Vec<Queued> {
        let keys = self.regions[r].summary.locked().parked_keys(limit);
        keys.iter()
            .filter_map(|k| {
                let (repository, reference) = split_key(k)?;
                self.queued_item(r, &repository, &reference)
            })
            .collect()
    }

    /// Replaces `old` with `new` (a retry time, an error, parked) unless a
    /// newer change replaced it meanwhile.
    pub fn update_item(
        &self,
        r: RegionId,
        old: &Queued,
        new: &WorkItem,
    ) -> Result<bool, StoreError> {
        self.replace_item(r, old, Some(new))
    }

    fn replace_item(
        &self,
        r: RegionId,
        old: &Queued,
        new: Option<&WorkItem>,
    ) -> Result<bool, StoreError> {
        let k = key(&old.repository, &old.reference);
        let region = &self.regions[r];
        // The summary's lock spans the swap, and an accept holds it over
        // its whole transaction: the figures change in the order the queue
        // does.
        let mut summary = region.summary.locked();
        let swapped = region
            .queue
            .compare_and_swap(&k, Some(old.raw.as_slice()), new.map(encode))
            .map_err(|e| self.io(e))?;
        if swapped.is_ok() {
            summary.replace(&k, Some(old.item.entry()), new.map(WorkItem::entry));
        }
        Ok(swapped.is_ok())
    }

    /// Makes the parked items of region `region` (or every region) and of
    /// `repository` (or every repository) ready again, with a fresh count
    /// of attempts: an operator's retry.
    pub fn unpark(
        &self,
        region: Option<RegionId>,
        repository: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.make_ready(
            |r, q| {
                q.item.parked
                    && region.is_none_or(|x| x == r)
                    && repository.is_none_or(|x| x == q.repository)
            },
            0,
        )
    }

    /// Makes every waiting (not parked) item ready now, keeping its count
    /// of attempts: for a daemon that starts over.
    pub fn retry_all_now(&self) -> Result<usize, StoreError> {
        self.make_ready(|_, q| !q.item.parked && q.item.not_before_ms > 0, u32::MAX)
    }

    /// Items matching `which` become ready now; `attempts` is set to the
    /// smaller of itself and `cap`.
    fn make_ready(
        &self,
        which: impl Fn(RegionId, &Queued) -> bool,
        cap: u32,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in 0..self.regions.len() {
            for q in self.queued(r, usize::MAX) {
                if which(r, &q) {
                    let item = WorkItem {
                        parked: false,
                        attempts: q.item.attempts.min(cap),
                        not_before_ms: 0,
                        ..q.item.clone()
                    };
                    if self.update_item(r, &q, &item)? {
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Forgets event ids accepted before `before_ms`: the registry does not
    /// redeliver that late.
    /// The newest-change clock of references untouched since then goes
    /// too: no event that old can still arrive to be ordered against it.
    pub fn prune_events(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        let before_ns = before_ms.saturating_mul(1_000_000);
        for (tree, cutoff) in [(&self.events, before_ms), (&self.latest, before_ns)] {
            for entry in tree.iter() {
                let (k, v) = entry.map_err(|e| self.io(e))?;
                if decode::<u64>(&v).is_none_or(|at| at < cutoff) {
                    tree.remove(k).map_err(|e| self.io(e))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Takes one of region `r`'s `max_per_hour` manifest deletions, or says
    /// how long until one is free (ms).
    pub fn take_delete(
        &self,
        r: RegionId,
        max_per_hour: u32,
        now_ms: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        const HOUR_MS: u64 = 3_600_000;
        let mut wait_ms = 0;
        let taken = self.update_status(r, |s| {
            s.deletes_ms.retain(|t| now_ms.saturating_sub(*t) < HOUR_MS);
            if s.deletes_ms.len() >= max_per_hour as usize {
                let oldest = s.deletes_ms.iter().copied().min().unwrap_or(now_ms);
                wait_ms = (oldest + HOUR_MS).saturating_sub(now_ms);
                return None;
            }
            s.deletes_ms.push(now_ms);
            Some(())
        })?;
        Ok(taken.ok_or(wait_ms))
    }

    /// Records an outcome of the daemon's work in region `r`.
    pub fn record_outcome(&self, r: RegionId, error: Option<&str>) -> Result<(), StoreError> {
        self.record_status(r, error, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(
            dir,
            &[
                ("a".into(), "http://a".into()),
                ("b".into(), "http://b".into()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_delete_cap_holds_under_concurrent_deletes_and_status_updates() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(dir.path()));
        let now = 1_000_000;
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut taken = 0;
                    for _ in 0..5 {
                        if s.take_delete(0, 10, now).unwrap().is_ok() {
                            taken += 1;
                        }
                        s.record_outcome(0, Some(&format!("error {i}"))).unwrap();
                        s.record_outcome(0, None).unwrap();
                    }
                    taken
                })
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 10);
        assert_eq!(s.region_status(0).deletes_ms.len(), 10);
        assert!(s.take_delete(0, 10, now).unwrap().is_err());
    }

    fn change(tag: &str, digest: char, ns: u64, origin: Origin) -> Change {
        Change {
            repository: "app".into(),
            reference: tag.into(),
            item: WorkItem::new(
                Action::Copy,
                format!("sha256:{}", digest.to_string().repeat(64))
                    .parse()
                    .unwrap(),
                origin,
                ns,
                ns,
            ),
            regions: None,
        }
    }

    #[test]
    fn events_are_once_newest_wins_and_coalesce() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let e = Origin::Event;
        assert_eq!(
            s.accept(Some("1"), &[change("v1", 'a', 10, e)]).unwrap(),
            Accepted::Queued
        );
        assert_eq!(
            s.accept(Some("1"), &[change("v1", 'a', 10, e)]).unwrap(),
            Accepted::Duplicate
        );
        // Newer push of the same tag: one item, newest digest, oldest lag.
        assert_eq!(
            s.accept(Some("2"), &[change("v1", 'b', 20, e)]).unwrap(),
            Accepted::Queued
        );
        // An older event arriving late changes nothing.
        assert_eq!(
            s.accept(Some("3"), &[change("v1", 'c', 15, e)]).unwrap(),
            Accepted::Stale
        );
        for r in 0..2 {
            let q = s.queued(r, 10);
            assert_eq!(q.len(), 1);
            assert!(q[0].item.digest.as_str().ends_with('b'));
            assert_eq!(q[0].item.since_ms, 10);
        }
    }

    #[test]
    fn the_delete_cap_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(dir.path());
            assert_eq!(s.take_delete(0, 2, 1_000).unwrap(), Ok(()));
            assert_eq!(s.take_delete(0, 2, 2_000).unwrap(), Ok(()));
            assert_eq!(s.take_delete(0, 2, 3_000).unwrap(), Err(3_598_000));
            assert_eq!(s.take_delete(1, 2, 3_000).unwrap(), Ok(()));
        }
        let s = store(dir.path());
        assert!(s.take_delete(0, 2, 4_000).unwrap().is_err());
        assert_eq!(s.take_delete(0, 2, 3_601_000).unwrap(), Ok(()));
    }

    #[test]
    fn finishing_keeps_a_newer_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.accept(Some("1"), &[change("v1", 'a', 10, Origin::Event)])
            .unwrap();
        let read = s.queued(0, 10).remove(0);
        s.accept(Some("2"), &[change("v1", 'b', 20, Origin::Event)])
            .unwrap();
        assert!(!s.finish_item(0, &read).unwrap());
        assert_eq!(s.queued(0, usize::MAX).len(), 1);
        let read = s.queued(0, 10).remove(0);
        assert!(s.finish_item(0, &read).unwrap());
        assert_eq!(s.queued(0, usize::MAX).len(), 0);
        assert_eq!(s.queued(1, usize::MAX).len(), 1);
    }

    #[test]
    fn reconcile_wakes_parked_and_leaves_event_work() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.accept(Some("1"), &[change("v1", 'a', 10, Origin::Event)])
            .unwrap();
        let read = s.queued(0, 10).remove(0);
        let parked = WorkItem {
            parked: true,
            attempts: 3,
            ..read.item.clone()
        };
        assert!(s.update_item(0, &read, &parked).unwrap());
        assert_eq!(s.unpark(None, None).unwrap(), 1);
        let q = s.queued(0, 10).remove(0);
        assert!(!q.item.parked);
        assert_eq!(q.item.attempts, 0);
        // A listing that saw another digest does not override pending
        // event work.
        s.accept(None, &[change("v1", 'f', 5, Origin::Reconcile)])
            .unwrap();
        assert!(s.queued(1, 10)[0].item.digest.as_str().ends_with('a'));
    }

    /// The in-memory figures agree with a full read of the queue after
    /// every kind of write, and after a reopen.
    #[test]
    fn figures_follow_every_write_of_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let check = |s: &Store| {
            for r in 0..2 {
                let items = s.queued(r, usize::MAX);
                let parked: Vec<&Queued> = items.iter().filter(|q| q.item.parked).collect();
                assert_eq!(
                    s.queue_figures(r),
                    QueueFigures {
                        len: items.len(),
                        parked: parked.len(),
                        oldest_since_ms: items.iter().map(|q| q.item.since_ms).min(),
                    },
                    "region {r}"
                );
                let listed: Vec<String> = s
                    .parked_items(r, 100)
                    .into_iter()
                    .map(|q| q.reference)
                    .collect();
                let expected: Vec<String> = parked.iter().map(|q| q.reference.clone()).collect();
                assert_eq!(listed, expected, "region {r}");
            }
        };
        {
            let s = store(dir.path());
            check(&s);
            for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
                let id = i.to_string();
                s.accept(Some(&id), &[change(tag, 'a', 10 + i as u64, Origin::Event)])
                    .unwrap();
            }
            // Coalesced into v1's item: no new item, the oldest lag kept.
            s.accept(Some("x"), &[change("v1", 'b', 30, Origin::Event)])
                .unwrap();
            // Only region b.
            let mut only_b = change("v4", 'c', 5, Origin::Reconcile);
            only_b.regions = Some(vec![1]);
            s.accept(None, &[only_b]).unwrap();
            check(&s);
            let v2 = s.queued_item(0, "app", "v2").unwrap();
            let parked = WorkItem {
                parked: true,
                ..v2.item.clone()
            };
            assert!(s.update_item(0, &v2, &parked).unwrap());
            check(&s);
            let v1 = s.queued_item(1, "app", "v1").unwrap();
            assert!(s.finish_item(1, &v1).unwrap());
            // A stale read changes nothing.
            assert!(!s.finish_item(1, &v1).unwrap());
            check(&s);
            assert_eq!(s.unpark(None, None).unwrap(), 1);
            check(&s);
            assert!(
                s.update_item(0, &s.queued_item(0, "app", "v2").unwrap(), &parked)
                    .unwrap()
            );
        }
        let s = store(dir.path());
        check(&s);
        assert_eq!(s.queue_figures(0).parked, 1);
    }
}
