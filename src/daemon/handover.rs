//! A cluster member taking in a new member set (issue 16's handover).
//!
//! Each time the set of live members changes, this instance:
//! 1. stops what it was copying in repositories it no longer owns (the
//!    workers' copies watch the set themselves) and waits until none is
//!    in flight;
//! 2. lets go of those repositories' queued work and tag facts
//!    ([`crate::store::Store::let_go`]);
//! 3. says so in its member key ([`Membership::acknowledge`]), which is
//!    what lets the new owners start;
//! 4. once every live member has done the same, reconciles the
//!    repositories it gained: pushes a dead member acknowledged but never
//!    copied are found there, because the registries are the truth.
//!
//! A member set this instance is not part of (its lease ran out) is not
//! taken in: nothing is started meanwhile, and what it still holds is let
//! go of when it joins again and takes in that set.
//!
//! [`Membership::acknowledge`]: crate::cluster::membership::Membership::acknowledge

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workers::InFlight;
use crate::background::TaskHandle;
use crate::cluster::Cluster;
use crate::shutdown::Signal;
use crate::store::Store;
use crate::watch::poller::{Reconcile, ReconcileReport};
use crate::watch::{MovedIn, Only};

/// How long to wait for stopped copies to wind down before letting go.
const WIND_DOWN: Duration = Duration::from_secs(30);
/// Waiting for the others to take in a member set is said this often.
const SETTLE_NOTE: Duration = Duration::from_secs(10);

pub struct Handover {
    pub cluster: Arc<Cluster>,
    pub store: Arc<Store>,
    pub in_flight: Arc<InFlight>,
    pub reconcile: Reconcile,
    /// The periodic reconcile: on joining, the whole share is its first
    /// run (so the status shows it).
    pub reconcile_task: Arc<TaskHandle<ReconcileReport>>,
}

impl Handover {
    /// Takes in every member set until `stop`.
    pub async fn run(self, mut stop: Signal) {
        let me = self.cluster.id().to_owned();
        let mut watch = self.cluster.watch();
        let mut applied: Option<Vec<String>> = None;
        loop {
            let ids = Cluster::ids(&self.cluster.members());
            if ids.contains(&me) && applied.as_ref() != Some(&ids) {
                self.take_in(&ids).await;
                let gain = match applied.replace(ids) {
                    None => Gain::Everything(self.reconcile_task.clone()),
                    Some(before) => Gain::MovedIn(Box::new((
                        self.reconcile.clone(),
                        Only {
                            moved_in: Some(MovedIn {
                                before,
                                me: me.clone(),
                            }),
                            ..Only::default()
                        },
                    ))),
                };
                tokio::spawn(gained(self.cluster.clone(), gain, stop.clone()));
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = stop.wait() => return,
            }
        }
    }

    /// Steps 1 to 3 for the member set `ids`.
    async fn take_in(&self, ids: &[String]) {
        let cluster = &self.cluster;
        let started = Instant::now();
        while self.in_flight.any(|repo| !cluster.owns(repo)) && started.elapsed() < WIND_DOWN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let store = self.store.clone();
        let c = cluster.clone();
        let let_go = tokio::task::spawn_blocking(move || store.let_go(|repo| c.owns(repo))).await;
        match let_go {
            Ok(Ok(out)) if out.items + out.facts > 0 => tracing::info!(
                items = out.items,
                facts = out.facts,
                "let go of the repositories other instances now own"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("letting go of moved repositories failed: {e:#}"),
            Err(e) => tracing::warn!("letting go of moved repositories failed: {e}"),
        }
        cluster.membership().acknowledge(ids.to_vec());
    }
}

/// What a member set gave this instance.
enum Gain {
    /// Its first member set: its whole share.
    Everything(Arc<TaskHandle<ReconcileReport>>),
    /// What moved in from other members.
    MovedIn(Box<(Reconcile, Only)>),
}

/// Step 4: once every member has taken in the set, reconciles what this
/// instance gained.
async fn gained(cluster: Arc<Cluster>, gain: Gain, mut stop: Signal) {
    let mut watch = cluster.watch();
    let mut noted = Instant::now();
    while !cluster.membership().settled() {
        if noted.elapsed() >= SETTLE_NOTE {
            let waiting: Vec<String> = {
                let members = cluster.members();
                let ids = Cluster::ids(&members);
                members
                    .into_iter()
                    .filter(|m| m.view != ids)
                    .map(|m| m.id)
                    .collect()
            };
            tracing::warn!(waiting = %waiting.join(","), "waiting for members to take in the member set before starting on the repositories gained");
            noted = Instant::now();
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait() => return,
        }
    }
    let started = Instant::now();
    let report = match gain {
        Gain::Everything(task) => match task.run_now().await {
            Some(s) => s.last,
            None => return,
        },
        Gain::MovedIn(moved) => moved.0.run(&moved.1).await.report,
    };
    tracing::info!(
        repositories = report.repositories,
        tags = report.tags,
        queued = report.queued,
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "reconciled the repositories this instance gained"
    );
}
