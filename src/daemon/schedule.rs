//! Which queued items each region works on next, without reading its whole
//! queue every time a slot frees up.
//!
//! The queue on disk is the truth; [`Schedule`] keeps, per region, an
//! in-memory view of part of it: items ready now, in priority order (fresh
//! pushes before backfill, oldest first), and items waiting for a retry
//! time. The view is built by one scan at start (and after a reconcile), and
//! kept current by [`Hints`]: whoever changes an item (the webhook, the
//! poller, a finished copy) names its key, and the dispatcher reads just
//! that key again. A backlog of N items thus costs O(N) reads in all, not
//! O(N) per completed item, and an unreachable region's backlog is not
//! re-read while the region is gated.
//!
//! Both maps are bounded ([`MAX_TRACKED`]); what does not fit is found by a
//! later scan once the view runs dry.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::store::queue::{Origin, Queued};
use crate::store::{RegionId, Store};
use crate::watch::doorbell::Hints;

/// Items held in memory per region and map, at most.
pub const MAX_TRACKED: usize = 10_000;

type Key = (String, String);
type Priority = (Origin, u64, String, String);

/// The dispatcher's view of every region's queue.
pub struct Schedule {
    regions: Vec<RegionView>,
}

#[derive(Default)]
struct RegionView {
    ready: BTreeMap<Priority, Queued>,
    waiting: BTreeSet<(u64, String, String)>,
    /// Where each tracked key is, to replace it when it changes.
    index: HashMap<Key, Slot>,
    /// Some items are not tracked (the queue or a map was larger than
    /// [`MAX_TRACKED`]): scan again when the view runs dry.
    incomplete: bool,
    scanned: bool,
}

#[derive(Clone)]
enum Slot {
    Ready(Priority),
    Waiting(u64),
}

impl Schedule {
    pub fn new(regions: usize) -> Schedule {
        Schedule {
            regions: (0..regions).map(|_| RegionView::default()).collect(),
        }
    }

    /// Brings region `r`'s view up to date: hinted keys, items whose retry
    /// time has come, a scan when needed.
    pub fn refresh(&mut self, store: &Store, hints: &Hints, r: RegionId, now_ms: u64) {
        let view = &mut self.regions[r];
        let hint = hints.take(r);
        let dry = view.ready.is_empty() && view.waiting.is_empty();
        if hint.rescan || !view.scanned || (dry && view.incomplete) {
            view.scan(store, r, now_ms);
            return;
        }
        for (repo, reference) in hint.keys {
            let q = store.queued_item(r, &repo, &reference);
            view.forget(&(repo, reference));
            if let Some(q) = q {
                view.place(q, now_ms);
            }
        }
        while let Some((due, repo, reference)) = view.waiting.first().cloned() {
            if due > now_ms {
                break;
            }
            let key = (repo, reference);
            view.forget(&key);
            if let Some(q) = store.queued_item(r, &key.0, &key.1) {
                view.place(q, now_ms);
            }
        }
    }

    /// The most urgent ready item of region `r` not in `busy`, taken out
    /// of the view.
    pub fn next(&mut self, r: RegionId, busy: impl Fn(&str, &str) -> bool) -> Option<Queued> {
        let view = &mut self.regions[r];
        let priority = view
            .ready
            .iter()
            .find(|(_, q)| !busy(&q.repository, &q.reference))
            .map(|(p, _)| p.clone())?;
        let q = view.ready.remove(&priority)?;
        view.index
            .remove(&(q.repository.clone(), q.reference.clone()));
        Some(q)
    }

    /// Takes region `r`'s item on `repository:reference` out of the view
    /// if it is ready and carries `digest`.
    pub fn take(
        &mut self,
        r: RegionId,
        repository: &str,
        reference: &str,
        digest: &str,
    ) -> Option<Queued> {
        let view = &mut self.regions[r];
        let key = (repository.to_owned(), reference.to_owned());
        let Some(Slot::Ready(p)) = view.index.get(&key).cloned() else {
            return None;
        };
        if view.ready.get(&p)?.item.digest.as_str() != digest {
            return None;
        }
        view.index.remove(&key);
        view.ready.remove(&p)
    }

    /// Returns an item taken with [`Schedule::next`] but not dispatched.
    pub fn put_back(&mut self, r: RegionId, q: Queued, now_ms: u64) {
        self.regions[r].place(q, now_ms);
    }

    /// When the earliest waiting item of region `r` is due.
    pub fn next_due(&self, r: RegionId) -> Option<u64> {
        self.regions[r].waiting.first().map(|(due, _, _)| *due)
    }
}

impl RegionView {
    fn scan(&mut self, store: &Store, r: RegionId, now_ms: u64) {
        *self = RegionView {
            scanned: true,
            ..RegionView::default()
        };
        let items = store.queued(r, MAX_TRACKED + 1);
        if items.len() > MAX_TRACKED {
            self.incomplete = true;
        }
        for q in items.into_iter().take(MAX_TRACKED) {
            self.place(q, now_ms);
        }
    }

    fn forget(&mut self, key: &Key) {
        match self.index.remove(key) {
            Some(Slot::Ready(p)) => {
                self.ready.remove(&p);
            }
            Some(Slot::Waiting(due)) => {
                self.waiting.remove(&(due, key.0.clone(), key.1.clone()));
            }
            None => {}
        }
    }

    fn place(&mut self, q: Queued, now_ms: u64) {
        if q.item.parked {
            return;
        }
        let key = (q.repository.clone(), q.reference.clone());
        if q.item.not_before_ms > now_ms {
            let due = q.item.not_before_ms;
            self.waiting.insert((due, key.0.clone(), key.1.clone()));
            self.index.insert(key, Slot::Waiting(due));
            if self.waiting.len() > MAX_TRACKED
                && let Some((_, a, b)) = self.waiting.pop_last()
            {
                self.index.remove(&(a, b));
                self.incomplete = true;
            }
        } else {
            let p = (q.item.origin, q.item.since_ms, key.0.clone(), key.1.clone());
            self.ready.insert(p.clone(), q);
            self.index.insert(key, Slot::Ready(p));
            if self.ready.len() > MAX_TRACKED
                && let Some(((_, _, a, b), _)) = self.ready.pop_last()
            {
                self.index.remove(&(a, b));
                self.incomplete = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::{Action, Change, WorkItem};

    fn change(tag: &str, origin: Origin, since: u64) -> Change {
        Change {
            repository: "app".into(),
            reference: tag.into(),
            item: WorkItem::new(
                Action::Copy,
                format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
                origin,
                since,
                since,
            ),
            regions: None,
        }
    }

    #[test]
    fn fresh_work_first_and_hints_keep_the_view_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[("a".into(), "http://a".into())]).unwrap();
        let hints = Hints::new(1);
        let mut s = Schedule::new(1);
        store
            .accept(None, &[change("old", Origin::Reconcile, 1)])
            .unwrap();
        s.refresh(&store, &hints, 0, 100);
        // A push arrives after the scan: only its hint makes it known.
        store
            .accept(Some("e"), &[change("new", Origin::Event, 50)])
            .unwrap();
        hints.touch(0, "app", "new");
        s.refresh(&store, &hints, 0, 100);
        let first = s.next(0, |_, _| false).unwrap();
        assert_eq!(first.reference, "new");
        // A busy key is skipped, not lost.
        assert!(s.next(0, |_, r| r == "old").is_none());
        let second = s.next(0, |_, _| false).unwrap();
        assert_eq!(second.reference, "old");

        // A failed item comes back when its retry time is due.
        let waiting = WorkItem {
            not_before_ms: 200,
            ..second.item.clone()
        };
        store.update_item(0, &second, &waiting).unwrap();
        hints.touch(0, "app", "old");
        s.refresh(&store, &hints, 0, 100);
        assert_eq!(s.next_due(0), Some(200));
        assert!(s.next(0, |_, _| false).is_none());
        s.refresh(&store, &hints, 0, 250);
        assert_eq!(s.next(0, |_, _| false).unwrap().reference, "old");
    }
}
