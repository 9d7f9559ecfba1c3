//! What the status and the metrics need of each region's queue — how many
//! items, how many parked (and which), the oldest change — kept in memory
//! beside the queue, so that a scrape costs O(regions), not a decode of
//! every queued item.
//!
//! Built by one scan when the store opens (before anything writes), then
//! kept in step by every write of the queue: [`Store::accept`] hands over
//! what its transaction committed, and a replaced item names its old and
//! new versions. Only this process writes the store (it holds sled's lock).
//!
//! [`Store::accept`]: super::Store::accept

use std::collections::{BTreeMap, BTreeSet};

/// What the summary needs of one queued item.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub since_ms: u64,
    pub parked: bool,
}

/// One region's queue in figures.
#[derive(Debug, Default)]
pub(super) struct Summary {
    len: usize,
    /// `since_ms` of the queued items → how many: the oldest is the first.
    since: BTreeMap<u64, usize>,
    /// Keys of the parked items.
    parked: BTreeSet<Vec<u8>>,
}

/// What [`Summary`] tells, as a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueFigures {
    /// Items queued, parked ones included.
    pub len: usize,
    pub parked: usize,
    /// When the oldest change a queued item carries was accepted (unix ms).
    pub oldest_since_ms: Option<u64>,
}

impl Summary {
    pub(super) fn add(&mut self, key: &[u8], item: Entry) {
        self.len += 1;
        *self.since.entry(item.since_ms).or_default() += 1;
        if item.parked {
            self.parked.insert(key.to_vec());
        }
    }

    pub(super) fn remove(&mut self, key: &[u8], item: Entry) {
        self.len = self.len.saturating_sub(1);
        if let Some(n) = self.since.get_mut(&item.since_ms) {
            *n -= 1;
            if *n == 0 {
                self.since.remove(&item.since_ms);
            }
        }
        if item.parked {
            self.parked.remove(key);
        }
    }

    /// `old` (if it was queued) replaced by `new` (if it stays queued).
    pub(super) fn replace(&mut self, key: &[u8], old: Option<Entry>, new: Option<Entry>) {
        if let Some(old) = old {
            self.remove(key, old);
        }
        if let Some(new) = new {
            self.add(key, new);
        }
    }

    pub(super) fn figures(&self) -> QueueFigures {
        QueueFigures {
            len: self.len,
            parked: self.parked.len(),
            oldest_since_ms: self.since.keys().next().copied(),
        }
    }

    /// The first `limit` parked keys, in key order.
    pub(super) fn parked_keys(&self, limit: usize) -> Vec<Vec<u8>> {
        self.parked.iter().take(limit).cloned().collect()
    }
}
