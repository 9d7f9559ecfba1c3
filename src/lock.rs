//! Mutexes whose poisoning is ignored: everything georep keeps behind a
//! `std::sync::Mutex` is plain bookkeeping (counters, sets, small maps)
//! that stays consistent between statements, so a task that panicked while
//! holding one leaves it usable, and the daemon must go on serving.

use std::sync::{Mutex, MutexGuard};

pub trait Locked<T> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
