//! Change sources of the daemon and the one door they use. None copies
//! anything: the webhook ([`webhook`], served by [`crate::api`]), the
//! reconcile ([`poller`]) and the audit ([`audit`]) hand what changed to
//! the [`intake`], which records it in the durable queue and rings the
//! workers' [`doorbell`].

pub mod audit;
pub mod doorbell;
pub mod intake;
pub mod merge;
pub mod poll_regions;
pub mod poller;
pub mod probe;
pub mod webhook;

use serde::{Deserialize, Serialize};

/// What one run of the reconcile or the audit covers, when an operator
/// asks for less than everything (`POST /v1/reconcile?region=…`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Only {
    /// A region's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// A cluster member's handover: only repositories owned, under the
    /// member set `before`, by another member than `me` (what `me` gained).
    #[serde(skip)]
    pub moved_in: Option<MovedIn>,
}

/// The repositories a member gained when the member set changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedIn {
    pub before: Vec<String>,
    pub me: String,
}

impl MovedIn {
    /// Whether `repository` was someone else's under `before`.
    pub fn covers(&self, repository: &str) -> bool {
        crate::cluster::ring::owner(repository, &self.before) != Some(self.me.as_str())
    }
}

impl Only {
    /// Whether region `name` is covered.
    pub fn region(&self, name: &str) -> bool {
        self.region.as_deref().is_none_or(|r| r == name)
    }

    /// Whether `repository` is covered.
    pub fn repository(&self, repository: &str) -> bool {
        self.repository.as_deref().is_none_or(|r| r == repository)
            && self.moved_in.as_ref().is_none_or(|m| m.covers(repository))
    }
}
