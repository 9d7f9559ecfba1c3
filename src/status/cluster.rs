//! The cluster in the status: which instances are members, which leads,
//! each one's share and work, and every region's work summed over them —
//! what `/v1/status` on any member shows (it asks the others for their
//! own view, `?scope=instance`).

use serde::{Deserialize, Serialize};

use super::{StatusView, one_line};
use crate::units::table;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// The instance that answered.
    pub instance: String,
    pub leader: Option<String>,
    pub etcd_reachable: bool,
    /// The answering instance writes nothing now (its lease is in doubt).
    pub fenced: bool,
    /// etcd trouble, as the answering instance sees it.
    pub problem: Option<String>,
    pub members: Vec<MemberView>,
    /// Each region's work summed over the members that answered.
    pub regions: Vec<ClusterRegion>,
}

/// One member as it answered (or did not).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub url: String,
    /// Its own view arrived.
    pub answered: bool,
    pub problem: Option<String>,
    /// Its share, as its last reconcile listed it.
    pub repositories: Option<usize>,
    pub tags: Option<usize>,
    pub queue_depth: usize,
    pub in_flight: usize,
    pub parked: usize,
    pub lag_items: usize,
    pub lag_secs: f64,
}

/// One region's work over the whole cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterRegion {
    pub name: String,
    pub queue_depth: usize,
    pub in_flight: usize,
    pub parked_count: usize,
    pub lag_items: usize,
    /// The largest of the members'.
    pub lag_secs: f64,
}

impl MemberView {
    /// Member `id` at `url`, from its own status view (or why there is
    /// none).
    pub fn from_view(id: &str, url: &str, view: Result<&StatusView, String>) -> MemberView {
        let mut m = MemberView {
            id: id.to_owned(),
            url: url.to_owned(),
            ..MemberView::default()
        };
        match view {
            Ok(v) => {
                m.answered = true;
                m.problem = v.cluster.as_ref().and_then(|c| c.problem.clone());
                if let Some(r) = v
                    .reconcile
                    .as_ref()
                    .filter(|r| r.last_finished_at.is_some())
                {
                    m.repositories = Some(r.last.repositories);
                    m.tags = Some(r.last.tags);
                }
                for r in &v.regions {
                    m.queue_depth += r.queue_depth;
                    m.in_flight += r.in_flight;
                    m.parked += r.parked_count;
                    m.lag_items += r.lag_items;
                    m.lag_secs = m.lag_secs.max(r.lag_secs);
                }
            }
            Err(why) => m.problem = Some(why),
        }
        m
    }
}

impl ClusterView {
    /// Adds the regions of a member's own view to the sums.
    pub fn add_regions(&mut self, v: &StatusView) {
        for r in &v.regions {
            let i = match self.regions.iter().position(|c| c.name == r.name) {
                Some(i) => i,
                None => {
                    self.regions.push(ClusterRegion {
                        name: r.name.clone(),
                        ..ClusterRegion::default()
                    });
                    self.regions.len() - 1
                }
            };
            let c = &mut self.regions[i];
            c.queue_depth += r.queue_depth;
            c.in_flight += r.in_flight;
            c.parked_count += r.parked_count;
            c.lag_items += r.lag_items;
            c.lag_secs = c.lag_secs.max(r.lag_secs);
        }
    }

    /// The cluster's lines of `georep status`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "cluster: {} member(s), leader {}, answered by {}{}\n",
            self.members.len(),
            self.leader
                .as_deref()
                .map_or("none".to_owned(), |l| one_line(l, 64)),
            one_line(&self.instance, 64),
            match (&self.problem, self.fenced) {
                (Some(p), _) => format!(" — {}", one_line(p, 300)),
                (None, true) => " — FENCED (lease not confirmed)".to_owned(),
                (None, false) => String::new(),
            }
        );
        let mut rows = vec![
            [
                "MEMBER",
                "ANSWERED",
                "REPOSITORIES",
                "TAGS",
                "QUEUED",
                "IN FLIGHT",
                "PARKED",
                "LAG ITEMS",
                "PROBLEM",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ];
        let n = |v: Option<usize>| v.map_or("-".to_owned(), |n| n.to_string());
        for m in &self.members {
            rows.push(vec![
                one_line(&m.id, 64),
                if m.answered { "yes" } else { "NO" }.to_owned(),
                n(m.repositories),
                n(m.tags),
                m.queue_depth.to_string(),
                m.in_flight.to_string(),
                m.parked.to_string(),
                m.lag_items.to_string(),
                m.problem
                    .as_deref()
                    .map_or(String::new(), |p| one_line(p, 120)),
            ]);
        }
        out.push_str(&table(
            &rows,
            &[false, false, true, true, true, true, true, true, false],
        ));
        for r in &self.regions {
            out.push_str(&format!(
                "cluster region {}: {} queued, {} in flight, {} parked, {} behind\n",
                one_line(&r.name, 40),
                r.queue_depth,
                r.in_flight,
                r.parked_count,
                r.lag_items
            ));
        }
        out
    }
}
