//! The daemon's status view ([`crate::status::StatusView`]): the store's
//! view ([`crate::status::build`]) with what only the daemon knows — the
//! registries' health from the probe, the work in flight, the engine's
//! counters, the background tasks' last runs and the notification targets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::workers::InFlight;
use crate::background::TaskHandle;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::engine::Engine;
use crate::lock::Locked;
use crate::metrics::{EventResult, Metrics};
use crate::notify::Notifier;
use crate::status::{ClusterView, Detail, Live, MemberView, StatusView, TagCounts};
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
    /// The last count of the tags, reused while fresh ([`Sources::counts`]).
    pub counted: Mutex<Option<Counted>>,
}

/// A count of the tags, and what it cost.
pub struct Counted {
    at: Instant,
    took: Duration,
    counts: Arc<TagCounts>,
}

/// A count is reused for this many times what it took to make: the share
/// of a core that status requests can spend counting stays under
/// 1 / (1 + REUSE) however often they come and however many tags there
/// are.
const REUSE: u32 = 10;
/// A count quicker than this is made afresh every time.
const CHEAP: Duration = Duration::from_millis(50);

/// Whether a count that took `took` to make may still serve at `age`.
fn reusable(took: Duration, age: Duration) -> bool {
    took >= CHEAP && age < took * REUSE
}

impl Sources {
    /// The tags counted, or the last count while it is younger than
    /// [`REUSE`] times what it took, when that was not [`CHEAP`] (callers
    /// at the same moment share one count).
    fn counts(&self) -> Arc<TagCounts> {
        let mut counted = self.counted.locked();
        if let Some(c) = counted.as_ref()
            && reusable(c.took, c.at.elapsed())
        {
            return c.counts.clone();
        }
        let at = Instant::now();
        let counts = Arc::new(crate::status::tag_counts(&self.config, self.engine.store()));
        *counted = Some(Counted {
            at,
            took: at.elapsed(),
            counts: counts.clone(),
        });
        counts
    }

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
        let tag_counts = (detail == Detail::Full).then(|| self.counts());
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
            tag_counts,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_expensive_count_is_reused_and_for_ten_times_its_cost() {
        let ms = Duration::from_millis;
        assert!(
            !reusable(ms(5), ms(0)),
            "a small store is counted every time"
        );
        assert!(reusable(ms(100), ms(999)));
        assert!(!reusable(ms(100), ms(1000)));
        assert!(reusable(ms(1500), ms(14_000)), "about 15 s at 100,000 tags");
    }
}
