//! Keyed async locks: at most one task works on a given key at a time, and
//! the others wait for it and then see its result (in the registries).
//!
//! The distribution registry's filesystem driver rewrites a repository's
//! blob link by truncating it, so two uploads or mounts of the same blob into
//! the same repository at once can make a concurrent manifest push fail with
//! `MANIFEST_BLOB_UNKNOWN` (DESIGN, registry facts). Blob work is therefore
//! serialised per (region, digest) — a task takes the locks of all its
//! regions in region order, so two tasks never wait for each other in a
//! circle, and copies to disjoint sets of regions never wait at all —
//! and manifest work per (repository, digest).

use crate::lock::Locked;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub struct KeyedLocks<K> {
    map: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Holds the lock for one key; the entry is removed when the last holder
/// or waiter is gone, so the map stays as small as the work in flight.
pub struct KeyGuard<K: Eq + Hash + Clone> {
    key: K,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    map: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: K) -> KeyGuard<K> {
        let mutex = {
            let mut map = self.map.locked();
            map.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            key,
            lock: Some(guard),
            map: self.map.clone(),
        }
    }

    /// Keys currently locked or waited for.
    pub fn len(&self) -> usize {
        self.map.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        let mut map = self.map.locked();
        // Release before checking, under the map lock: a new waiter must get
        // the mutex from the map, which we hold, so the count is stable.
        drop(self.lock.take());
        if let Some(m) = map.get(&self.key)
            && Arc::strong_count(m) == 1
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_holder_per_key_and_map_is_cleaned() {
        let locks = Arc::new(KeyedLocks::<String>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("k".to_owned()).await;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty());
        let _a = locks.lock("a".to_owned()).await;
        let _b = locks.lock("b".to_owned()).await;
        assert_eq!(locks.len(), 2);
    }
}
