//! Any-region mode's records: the changes people made to each tag since
//! the regions last agreed (the merge base lives in the `primary` tree,
//! which in this mode holds the digest every region last agreed on), the
//! queue assignments a decision makes, and the last conflicts.
//!
//! | tree | key | value (JSON) |
//! |---|---|---|
//! | `changes` | `repo \0 tag` | [`Changes`]: per region the change since the base |
//! | `conflicts` | sequence (u64, big-endian) | [`ConflictRecord`], the last [`CONFLICTS_KEPT`] |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::queue::WorkItem;
use super::{RegionId, Store, StoreError, decode, encode, key, split_key};
use crate::digest::Digest;
use crate::lock::Locked;

/// Conflicts kept for the status.
pub const CONFLICTS_KEPT: usize = 100;

/// One region's change to a tag since the base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionChange {
    /// The digest pushed; `None`: the tag was deleted there.
    pub digest: Option<Digest>,
    /// The registry's time of the change (unix ns), when an event said.
    #[serde(default)]
    pub at_ns: Option<u64>,
    /// When georep learnt of it (unix ms).
    pub seen_ms: u64,
    /// A digest georep wrote there after this change (a copy of an earlier
    /// decision landing after the push): what the region serves now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwritten: Option<Digest>,
}

/// The changes made to one tag since the regions last agreed on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// By region name.
    pub regions: BTreeMap<String, RegionChange>,
    /// Digests already reported as conflicting (each conflict is told
    /// once, not at every decision).
    #[serde(default)]
    pub reported: Vec<Digest>,
    /// What the last decision asked every region to hold: once no region
    /// has work left on the tag, the new base.
    #[serde(default)]
    pub target: Option<Target>,
}

/// A decision's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The digest every region holds; `None`: no region holds the tag.
    pub digest: Option<Digest>,
}

/// One push in a recorded conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    pub region: String,
    pub digest: Digest,
    /// RFC 3339, when the registry said.
    #[serde(default)]
    pub at: Option<String>,
}

/// A conflict as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// When georep decided it (RFC 3339).
    pub decided_at: String,
    pub repository: String,
    pub tag: String,
    pub winner: PushRecord,
    pub losers: Vec<PushRecord>,
    /// `time` or `order`.
    pub decided_by: crate::merge::DecidedBy,
}

impl Store {
    /// The changes recorded for `repository:tag` since the base.
    pub fn changes(&self, repository: &str, tag: &str) -> Changes {
        self.changes
            .get(key(repository, tag))
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
            .unwrap_or_default()
    }

    /// Replaces the changes of `repository:tag` (removed when empty).
    pub fn set_changes(
        &self,
        repository: &str,
        tag: &str,
        changes: &Changes,
    ) -> Result<(), StoreError> {
        let k = key(repository, tag);
        if changes.regions.is_empty() && changes.target.is_none() {
            self.changes.remove(k).map_err(|e| self.io(e))?;
        } else {
            self.changes
                .insert(k, encode(changes))
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Every tag with changes not yet agreed: (repository, tag).
    pub fn changed_tags(&self) -> Vec<(String, String)> {
        self.changes
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| split_key(&k))
            .collect()
    }

    /// The regions agree on `digest` (or on no tag) for `repository:tag`:
    /// it is the new base, and the changes are settled.
    pub fn agree(
        &self,
        repository: &str,
        tag: &str,
        digest: Option<&Digest>,
    ) -> Result<(), StoreError> {
        match digest {
            Some(d) => {
                let media_type = self
                    .primary_tag(repository, tag)
                    .and_then(|t| (t.digest == *d).then_some(t.media_type).flatten());
                self.record_primary_tag(repository, tag, d, media_type.as_deref())?
            }
            None => self.tombstone_primary_tag(repository, tag)?,
        }
        self.changes
            .remove(key(repository, tag))
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Sets the queue of every region for `repository:reference` at once:
    /// `items[r]` is region `r`'s item, or `None` for no work there. An
    /// item replacing another keeps the older one's `since_ms` (the lag)
    /// when it asks for the same digest, and its attempts; a region left
    /// with nothing has its item removed. Returns the regions whose queue
    /// changed.
    pub fn assign(
        &self,
        repository: &str,
        reference: &str,
        items: &[Option<WorkItem>],
    ) -> Result<Vec<RegionId>, StoreError> {
        let trees: Vec<&sled::Tree> = self.regions.iter().map(|r| &r.queue).collect();
        let mut summaries: Vec<_> = self.regions.iter().map(|r| r.summary.locked()).collect();
        let k = key(repository, reference);
        type Written = (
            RegionId,
            Option<super::summary::Entry>,
            Option<super::summary::Entry>,
        );
        let written: std::cell::RefCell<Vec<Written>> = std::cell::RefCell::new(Vec::new());
        let result = trees.as_slice().transaction(|t| {
            written.borrow_mut().clear();
            for (r, q) in t.iter().enumerate() {
                let want = items.get(r).cloned().flatten();
                let old = q.get(&k)?.and_then(|v| decode::<WorkItem>(&v));
                let new = match (&old, want) {
                    (None, None) => continue,
                    (Some(_), None) => None,
                    (Some(o), Some(w)) if o.digest == w.digest && o.action == w.action => {
                        Some(WorkItem {
                            since_ms: o.since_ms.min(w.since_ms),
                            attempts: o.attempts,
                            not_before_ms: o.not_before_ms.min(w.not_before_ms),
                            last_error: o.last_error.clone(),
                            failure_told: o.failure_told,
                            ..w
                        })
                    }
                    (Some(o), Some(w)) => Some(WorkItem {
                        since_ms: o.since_ms.min(w.since_ms),
                        ..w
                    }),
                    (None, Some(w)) => Some(w),
                };
                if old.as_ref() == new.as_ref() {
                    continue;
                }
                match &new {
                    Some(item) => {
                        q.insert(k.clone(), encode(item))?;
                    }
                    None => {
                        q.remove(k.clone())?;
                    }
                }
                written.borrow_mut().push((
                    r,
                    old.as_ref().map(WorkItem::entry),
                    new.as_ref().map(WorkItem::entry),
                ));
            }
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => {
                let written = written.into_inner();
                for (r, old, new) in &written {
                    summaries[*r].replace(&k, *old, *new);
                }
                Ok(written.into_iter().map(|(r, _, _)| r).collect())
            }
            Err(TransactionError::Storage(e)) => Err(self.io(e)),
            Err(TransactionError::Abort(())) => Err(self.io(sled::Error::ReportableBug(
                "queue transaction aborted".to_owned(),
            ))),
        }
    }

    /// Whether any region has work queued on `repository:reference`.
    pub fn queued_anywhere(&self, repository: &str, reference: &str) -> bool {
        (0..self.regions.len()).any(|r| self.has_item(r, repository, reference))
    }

    /// Records a conflict; the oldest beyond [`CONFLICTS_KEPT`] go.
    pub fn record_conflict(&self, c: &ConflictRecord) -> Result<(), StoreError> {
        let next = self
            .conflicts
            .last()
            .map_err(|e| self.io(e))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, |k| u64::from_be_bytes(k) + 1);
        self.conflicts
            .insert(next.to_be_bytes(), encode(c))
            .map_err(|e| self.io(e))?;
        while self.conflicts.len() > CONFLICTS_KEPT {
            if self.conflicts.pop_min().map_err(|e| self.io(e))?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// The last `n` conflicts, newest first.
    pub fn conflicts(&self, n: usize) -> Vec<ConflictRecord> {
        self.conflicts
            .iter()
            .rev()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| decode(&v))
            .take(n)
            .collect()
    }
}
