//! The daemon's status as one typed view: what `/v1/status` serves, what
//! `/metrics` reads its gauges from, and what `georep status` reads back
//! when a daemon holds the store.

use serde::{Deserialize, Serialize};

use crate::background::TaskStatus;
use crate::watch::audit::AuditReport;
use crate::watch::poller::ReconcileReport;

/// Parked items listed per region in the status (all are counted).
pub const MAX_PARKED_LISTED: usize = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub primary: PrimaryView,
    pub regions: Vec<RegionStatusView>,
    pub reconcile: TaskStatus<ReconcileReport>,
    pub audit: TaskStatus<AuditReport>,
    pub events_queued: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
    /// Outgoing notification targets: what waits and what was delivered.
    #[serde(default)]
    pub notify: Vec<crate::notify::TargetView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrimaryView {
    pub name: String,
    pub url: String,
}

/// One region in `/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegionStatusView {
    pub name: String,
    pub url: String,
    /// The region answers (its circuit breaker is not open).
    #[serde(default = "reachable_by_default")]
    pub reachable: bool,
    /// Items waiting (parked ones not included).
    pub queue_depth: usize,
    pub in_flight: usize,
    /// Everything the region still lacks: queued, in flight and parked.
    pub lag_items: usize,
    /// Age of the oldest change the region lacks.
    pub lag_secs: f64,
    pub parked_count: usize,
    pub parked: Vec<ParkedView>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    #[serde(default)]
    pub blobs_mounted: u64,
    pub manifests_pushed: u64,
}

/// A daemon of a version before `reachable` did not say otherwise.
fn reachable_by_default() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParkedView {
    pub repository: String,
    pub reference: String,
    /// Absent for a delete by tag whose digest georep never saw.
    pub digest: Option<String>,
    pub attempts: u32,
    pub reason: String,
}
