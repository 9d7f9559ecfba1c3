//! How many requests may be open to one registry at once, adapted to its
//! answers: additive increase, multiplicative decrease (as TCP does).
//!
//! The ceiling is `max_concurrent_requests`. Each `429 Too Many Requests`
//! halves the current limit (at most once per [`DECREASE_EVERY`], so one
//! burst of refusals counts once); each [`INCREASE_EVERY`] without a `429`
//! (and with answers coming) gives one slot back. A registry with a quota
//! thus sees georep settle just below it, probing upwards slowly, instead
//! of being hit at the full concurrency again and again.
//!
//! Lowering the limit takes slots out of the semaphore: a background task
//! acquires them as they come free and holds them; raising it releases one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock::Locked;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Refusals closer together than this halve the limit once.
pub const DECREASE_EVERY: Duration = Duration::from_millis(250);
/// A quiet period this long gives one slot back.
pub const INCREASE_EVERY: Duration = Duration::from_secs(5);

pub struct Aimd {
    max: usize,
    permits: Arc<Semaphore>,
    /// Slots taken out of use (the limit is `max` minus these).
    held: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
    /// Slots being taken out (acquisitions in progress).
    pending: Arc<AtomicUsize>,
    /// The last change of the limit (a decrease or an increase).
    last_change: Mutex<Option<Instant>>,
    last_decrease: Mutex<Option<Instant>>,
}

impl Aimd {
    pub fn new(permits: Arc<Semaphore>, max: usize) -> Aimd {
        Aimd {
            max,
            permits,
            held: Arc::default(),
            pending: Arc::default(),
            last_change: Mutex::new(None),
            last_decrease: Mutex::new(None),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        let held = self.held.locked().len();
        self.max - held - self.pending.load(Ordering::Relaxed)
    }

    /// The registry refused for load: halve the limit (not below 1).
    /// Returns the new limit if it changed.
    pub fn refused(&self) -> Option<usize> {
        {
            let mut last = self.last_decrease.locked();
            if last.is_some_and(|t| t.elapsed() < DECREASE_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let limit = self.limit();
        let cut = limit - (limit / 2).max(1);
        if cut == 0 {
            return None;
        }
        *self.last_change.locked() = Some(Instant::now());
        self.pending.fetch_add(cut, Ordering::Relaxed);
        let (permits, held, pending) = (
            self.permits.clone(),
            self.held.clone(),
            self.pending.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..cut {
                // The semaphore is never closed.
                if let Ok(p) = permits.clone().acquire_owned().await {
                    held.locked().push(p);
                }
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        });
        Some(limit - cut)
    }

    /// An answer that was not a refusal: once the limit has held for
    /// [`INCREASE_EVERY`], one slot more. Returns the new limit if it changed.
    pub fn answered(&self) -> Option<usize> {
        {
            let mut last = self.last_change.locked();
            match *last {
                None => return None,
                Some(t) if t.elapsed() < INCREASE_EVERY => return None,
                Some(_) => *last = Some(Instant::now()),
            }
        }
        let released = self.held.locked().pop().is_some();
        released.then(|| self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_refusal_and_creeps_back() {
        let sem = Arc::new(Semaphore::new(16));
        let a = Aimd::new(sem.clone(), 16);
        assert_eq!(a.refused(), Some(8));
        // A second refusal in the same burst does not count.
        assert_eq!(a.refused(), None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sem.available_permits(), 8);
        // Answers soon after change nothing; a quiet period gives one back.
        assert_eq!(a.answered(), None);
        *a.last_change.lock().unwrap() = Some(Instant::now() - INCREASE_EVERY);
        assert_eq!(a.answered(), Some(9));
        assert_eq!(sem.available_permits(), 9);
    }

    #[tokio::test]
    async fn never_below_one() {
        let sem = Arc::new(Semaphore::new(2));
        let a = Aimd::new(sem.clone(), 2);
        assert_eq!(a.refused(), Some(1));
        *a.last_decrease.lock().unwrap() = None;
        assert_eq!(a.refused(), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(sem.available_permits(), 1);
    }
}
