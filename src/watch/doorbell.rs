//! The doorbell between whoever changes the durable queue and the workers
//! that drain it: a wake-up, and per region the keys that changed
//! ([`Hints`]), so the dispatcher reads just those keys again instead of
//! the whole queue (see [`crate::daemon::schedule`]).

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::lock::Locked;
use crate::store::RegionId;

/// Keys remembered per region between two dispatch rounds; beyond, the
/// region is scanned again instead.
const MAX_HINTS: usize = 4096;

/// Rung by the intake and by finished copies; answered by the workers.
pub struct Doorbell {
    wake: Notify,
    pub hints: Hints,
}

impl Doorbell {
    pub fn new(regions: usize) -> Doorbell {
        Doorbell {
            wake: Notify::new(),
            hints: Hints::new(regions),
        }
    }

    /// Wakes the dispatcher (a wake-up while it is busy is kept).
    pub fn ring(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next ring.
    pub async fn rung(&self) {
        self.wake.notified().await;
    }
}

/// Keys whose items changed, per region, for the dispatcher to read again.
pub struct Hints {
    regions: Vec<Mutex<Hint>>,
}

/// What changed in one region since the dispatcher last looked.
#[derive(Default)]
pub struct Hint {
    /// (repository, reference) of the items that changed.
    pub keys: HashSet<(String, String)>,
    /// Too much changed to name: read the whole queue again.
    pub rescan: bool,
}

impl Hints {
    pub fn new(regions: usize) -> Hints {
        Hints {
            regions: (0..regions).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, r: RegionId) -> std::sync::MutexGuard<'_, Hint> {
        self.regions[r].locked()
    }

    /// The item `repository:reference` of region `r` changed.
    pub fn touch(&self, r: RegionId, repository: &str, reference: &str) {
        let mut h = self.lock(r);
        if h.rescan {
            return;
        }
        if h.keys.len() >= MAX_HINTS {
            h.keys.clear();
            h.rescan = true;
        } else {
            h.keys.insert((repository.to_owned(), reference.to_owned()));
        }
    }

    /// The item changed in `regions` (all when `None`).
    pub fn touch_regions(&self, regions: Option<&[RegionId]>, repository: &str, reference: &str) {
        for r in 0..self.regions.len() {
            if regions.is_none_or(|only| only.contains(&r)) {
                self.touch(r, repository, reference);
            }
        }
    }

    /// Many items changed: read every region's queue again.
    pub fn rescan_all(&self) {
        for r in 0..self.regions.len() {
            let mut h = self.lock(r);
            h.keys.clear();
            h.rescan = true;
        }
    }

    /// Takes what changed in region `r` since the last call.
    pub fn take(&self, r: RegionId) -> Hint {
        std::mem::take(&mut *self.lock(r))
    }
}
