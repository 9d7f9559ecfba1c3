//! The daemon's status view ([`crate::status::StatusView`]), put together
//! from the store, the work in flight, the engine's counters and the
//! background tasks' last runs.

use std::sync::Arc;

use super::workers::InFlight;
use crate::background::TaskHandle;
use crate::engine::Engine;
use crate::metrics::{EventResult, Metrics};
use crate::notify::Notifier;
use crate::status::{MAX_PARKED_LISTED, ParkedView, PrimaryView, RegionStatusView, StatusView};
use crate::store::{format_unix, now_unix_ms};
use crate::watch::audit::AuditReport;
use crate::watch::poller::ReconcileReport;

/// Everything the view is read from.
pub struct Sources {
    pub engine: Arc<Engine>,
    pub in_flight: Arc<InFlight>,
    pub metrics: Arc<Metrics>,
    pub reconcile: Arc<TaskHandle<ReconcileReport>>,
    pub audit: Arc<TaskHandle<AuditReport>>,
    pub notifier: Arc<Notifier>,
}

impl Sources {
    pub fn view(&self) -> StatusView {
        let store = self.engine.store();
        let now = now_unix_ms();
        let regions = self
            .engine
            .regions()
            .iter()
            .enumerate()
            .map(|(r, reg)| {
                // Figures kept in memory: O(regions) per request, whatever
                // the backlog.
                let queue = store.queue_figures(r);
                let in_flight = self.in_flight.count(r);
                let s = store.region_status(r);
                let c = self.engine.copied(r);
                RegionStatusView {
                    name: reg.name().to_owned(),
                    url: reg.url().to_owned(),
                    reachable: !reg.is_unreachable(),
                    queue_depth: (queue.len - queue.parked).saturating_sub(in_flight),
                    in_flight,
                    lag_items: queue.len,
                    lag_secs: queue
                        .oldest_since_ms
                        .map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0),
                    parked_count: queue.parked,
                    parked: store
                        .parked_items(r, MAX_PARKED_LISTED)
                        .iter()
                        .map(|q| ParkedView {
                            repository: q.repository.clone(),
                            reference: q.reference.clone(),
                            digest: q.item.known_digest().map(|d| d.as_str().to_owned()),
                            attempts: q.item.attempts,
                            reason: q.item.last_error.clone().unwrap_or_default(),
                        })
                        .collect(),
                    last_success_at: s.last_success_at.map(format_unix),
                    last_error: s.last_error,
                    last_error_at: s.last_error_at.map(format_unix),
                    blobs_copied: c.blobs_uploaded,
                    bytes_copied: c.bytes_uploaded,
                    blobs_mounted: c.blobs_mounted,
                    manifests_pushed: c.manifests_pushed,
                }
            })
            .collect();
        let m = &self.metrics;
        StatusView {
            primary: PrimaryView {
                name: self.engine.primary().name().to_owned(),
                url: self.engine.primary().url().to_owned(),
            },
            regions,
            reconcile: self.reconcile.status(),
            audit: self.audit.status(),
            events_queued: m.events(EventResult::Queued),
            events_duplicate: m.events(EventResult::Duplicate),
            events_rejected: m.events(EventResult::Rejected),
            notify: self.notifier.view(),
        }
    }
}
