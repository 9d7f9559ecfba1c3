//! The daemon's status view ([`crate::status::StatusView`]): the store's
//! view ([`crate::status::build`]) with what only the daemon knows — the
//! registries' health from the probe, the work in flight, the engine's
//! counters, the background tasks' last runs and the notification targets.

use std::sync::Arc;

use super::workers::InFlight;
use crate::background::TaskHandle;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::{EventResult, Metrics};
use crate::notify::Notifier;
use crate::status::{ClusterView, Detail, Live, MemberView, StatusView};
use crate::watch::audit::AuditReport;
use crate::watch::poller::ReconcileReport;
use crate::watch::probe::HealthBook;

/// Everything the view is read from.
pub struct Sources {
    pub config: Arc<Config>,
    pub engine: Arc<Engine>,
    pub in_flight: Arc<InFlight>,
    pub metrics: Arc<Metrics>,
    pub reconcile: Arc<TaskHandle<ReconcileReport>>,
    pub audit: Arc<TaskHandle<AuditReport>>,
    pub notifier: Arc<Notifier>,
    pub health: Arc<HealthBook>,
    pub cluster: Option<Arc<Cluster>>,
}

impl Sources {
    pub fn view(&self, detail: Detail) -> StatusView {
        let regions = self.engine.regions();
        let mut health = self.health.get();
        // A region whose breaker is open is unreachable now, whatever the
        // last probe said; one that has succeeded since the probe found it
        // down is back.
        // The primary's health comes first, when there is one.
        let first = usize::from(self.engine.primary().is_some());
        for (i, reg) in regions.iter().enumerate() {
            let Some(h) = health.get_mut(first + i) else {
                continue;
            };
            if reg.is_unreachable() {
                h.reachable = Some(false);
            } else if h.reachable == Some(false) {
                let checked = h.checked_at.as_deref().and_then(crate::status::unix_secs);
                let success = self.engine.store().region_status(i).last_success_at;
                if let (Some(c), Some(s)) = (checked, success)
                    && s > c
                {
                    h.reachable = Some(true);
                    h.problem = None;
                }
            }
        }
        let m = &self.metrics;
        let live = Live {
            in_flight: (0..regions.len())
                .map(|r| self.in_flight.count(r))
                .collect(),
            copied: (0..regions.len()).map(|r| self.engine.copied(r)).collect(),
            reconcile: Some(self.reconcile.status()),
            audit: Some(self.audit.status()),
            events: [
                m.events(EventResult::Queued),
                m.events(EventResult::Duplicate),
                m.events(EventResult::Rejected),
                m.events(EventResult::Echo),
            ],
            notify: self.notifier.view(),
        };
        let mut view =
            crate::status::build(&self.config, self.engine.store(), health, live, detail);
        view.cluster = self.cluster.as_ref().map(|c| {
            let standing = c.standing();
            ClusterView {
                instance: c.id().to_owned(),
                leader: standing.leader,
                etcd_reachable: standing.etcd_reachable,
                fenced: c.fenced(),
                problem: c.trouble(),
                members: c
                    .members()
                    .into_iter()
                    .map(|m| MemberView {
                        id: m.id,
                        url: m.advertise_url,
                        ..MemberView::default()
                    })
                    .collect(),
                regions: Vec::new(),
            }
        });
        view
    }
}
