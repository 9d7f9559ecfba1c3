//! Outgoing notifications waiting to be delivered, kept on disk so a
//! restart does not drop them.
//!
//! | tree | key | value (JSON) |
//! |---|---|---|
//! | `outbox` | sequence number (u64, big-endian: oldest first) | [`Pending`] |
//!
//! One entry per (notification, target), rendered in the target's format
//! when queued. The tree is bounded: past its limit the oldest entries are
//! dropped, and the caller is told whose they were so it can count them.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode, encode};

/// One notification for one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The target's name (config `notify[].name`).
    pub target: String,
    /// The kind of event (`replicated`, `deleted`, …).
    pub event: String,
    /// The body posted, already in the target's format.
    pub body: serde_json::Value,
    /// Deliveries tried so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not tried before this time (unix ms).
    #[serde(default)]
    pub not_before_ms: u64,
    /// When it was queued (unix ms).
    pub queued_ms: u64,
}

impl Store {
    /// Queues `p`; past `limit` entries the oldest are dropped and
    /// returned.
    pub fn outbox_push(&self, p: &Pending, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let id = self.db.generate_id().map_err(|e| self.io(e))?;
        self.outbox
            .insert(id.to_be_bytes(), encode(p))
            .map_err(|e| self.io(e))?;
        self.outbox_len.fetch_add(1, Ordering::SeqCst);
        let mut dropped = Vec::new();
        while self.outbox_len.load(Ordering::SeqCst) > limit {
            match self.outbox.pop_min().map_err(|e| self.io(e))? {
                Some((_, v)) => {
                    self.outbox_len.fetch_sub(1, Ordering::SeqCst);
                    dropped.extend(decode::<Pending>(&v));
                }
                None => break,
            }
        }
        Ok(dropped)
    }

    /// Up to `limit` entries due at `now_ms`, oldest first, with their
    /// keys; and when the next one not yet due is.
    pub fn outbox_due(&self, now_ms: u64, limit: usize) -> (Vec<(u64, Pending)>, Option<u64>) {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for (k, v) in self.outbox.iter().filter_map(Result::ok) {
            let (Ok(k), Some(p)) = (<[u8; 8]>::try_from(&k[..]), decode::<Pending>(&v)) else {
                continue;
            };
            if p.not_before_ms <= now_ms {
                if due.len() < limit {
                    due.push((u64::from_be_bytes(k), p));
                }
            } else {
                next = Some(next.map_or(p.not_before_ms, |n| n.min(p.not_before_ms)));
            }
            if due.len() >= limit && next.is_some() {
                break;
            }
        }
        (due, next)
    }

    /// Entry `id` is done with (delivered, or given up on).
    pub fn outbox_remove(&self, id: u64) -> Result<(), StoreError> {
        if self
            .outbox
            .remove(id.to_be_bytes())
            .map_err(|e| self.io(e))?
            .is_some()
        {
            self.outbox_len.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Entry `id` is tried again later, as `p` says.
    pub fn outbox_retry(&self, id: u64, p: &Pending) -> Result<(), StoreError> {
        // Only if it is still there: an entry dropped meanwhile (the limit)
        // stays dropped.
        let value = encode(p);
        self.outbox
            .update_and_fetch(id.to_be_bytes(), |old| old.map(|_| value.clone()))
            .map(|_| ())
            .map_err(|e| self.io(e))
    }

    /// Entries waiting, per target name.
    pub fn outbox_pending(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (_, v) in self.outbox.iter().filter_map(Result::ok) {
            if let Some(p) = decode::<Pending>(&v) {
                *out.entry(p.target).or_insert(0) += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(target: &str, not_before_ms: u64) -> Pending {
        Pending {
            target: target.to_owned(),
            event: "complete".to_owned(),
            body: serde_json::json!({"n": not_before_ms}),
            attempts: 0,
            not_before_ms,
            queued_ms: 1,
        }
    }

    #[test]
    fn the_outbox_is_bounded_oldest_first_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = Store::open(&path, &[]).unwrap();
            for i in 0..5 {
                let dropped = s.outbox_push(&pending("a", i), 3).unwrap();
                assert_eq!(dropped.len(), usize::from(i >= 3), "push {i}");
            }
            let (due, next) = s.outbox_due(10, 10);
            assert_eq!(
                due.iter().map(|(_, p)| p.not_before_ms).collect::<Vec<_>>(),
                vec![2, 3, 4],
                "the two oldest were dropped"
            );
            assert_eq!(next, None);
            let (id, mut p) = due[0].clone();
            p.not_before_ms = 50;
            s.outbox_retry(id, &p).unwrap();
            s.outbox_remove(due[1].0).unwrap();
        }
        let s = Store::open(&path, &[]).unwrap();
        let (due, next) = s.outbox_due(10, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(next, Some(50));
        assert_eq!(s.outbox_pending().get("a"), Some(&2));
    }
}
