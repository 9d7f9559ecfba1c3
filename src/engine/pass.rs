//! One pass's inputs, handed down the copy path as a value: whether the
//! store's facts are trusted, whether writes are only planned, and how
//! urgent the work is. `georep sync` makes one per pass; the daemon one per
//! item group. Nothing about a pass lives on the long-lived [`Engine`], so
//! passes with different modes can run in one process at once, and every
//! function on the copy path shows what it depends on.
//!
//! [`Engine`]: super::Engine

use super::dry;
use crate::store::now_unix_ms;

/// How urgent a pass's work is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A fresh push: it may use the express read and upload slots, so a
    /// long backfill never delays it.
    Fresh,
    /// A reconcile's backfill or a `georep sync` pass.
    Backfill,
}

/// The inputs of one pass.
pub struct Pass {
    /// When the pass started (unix ms): a `--verify` pass believes only
    /// facts recorded at or after it.
    started_ms: u64,
    verify: bool,
    /// A dry run's plan: writes are planned instead of made.
    plan: Option<dry::Plan>,
    priority: Priority,
}

impl Pass {
    /// A pass starting now.
    pub fn new(priority: Priority) -> Pass {
        Pass {
            started_ms: now_unix_ms(),
            verify: false,
            plan: None,
            priority,
        }
    }

    /// Trust nothing recorded before this pass: check every item in every
    /// region, correct the store, copy whatever is missing.
    pub fn verifying(mut self) -> Pass {
        self.verify = true;
        self
    }

    /// Write nothing: plan each write instead and count it as done
    /// ([`dry`]).
    pub fn dry_run(mut self) -> Pass {
        self.plan = Some(dry::Plan::default());
        self
    }

    pub fn verify(&self) -> bool {
        self.verify
    }

    /// Whether a fact acknowledged at `at_ms` may be believed by this pass
    /// (the region's distrust aside, see `Facts`).
    pub fn trusts(&self, at_ms: u64) -> bool {
        !self.verify || at_ms >= self.started_ms
    }

    /// The plan, in a dry run.
    pub fn plan(&self) -> Option<&dry::Plan> {
        self.plan.as_ref()
    }

    pub fn is_dry_run(&self) -> bool {
        self.plan.is_some()
    }

    /// Whether this pass may use the express slots.
    pub fn fresh(&self) -> bool {
        self.priority == Priority::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_verifying_pass_distrusts_what_came_before_it() {
        let normal = Pass::new(Priority::Backfill);
        assert!(normal.trusts(0));
        let verify = Pass::new(Priority::Backfill).verifying();
        assert!(!verify.trusts(0));
        assert!(verify.trusts(now_unix_ms() + 1));
        assert!(!normal.is_dry_run() && !normal.fresh());
        let dry = Pass::new(Priority::Fresh).dry_run();
        assert!(dry.is_dry_run() && dry.fresh() && !dry.verify());
    }
}
