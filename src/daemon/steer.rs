//! The daemon's side of steering ([`crate::api::steer::Steer`]): an
//! operator's reconcile or audit of everything runs as the periodic task's
//! next run (so two never overlap and the status shows it); one of a
//! region or repository runs at once on its own; a retry wakes parked
//! items.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::api::steer::{AuditAnswer, ReconcileAnswer, RetryAnswer, Steer};
use crate::background::{Activation, TaskHandle};
use crate::watch::Only;
use crate::watch::audit::{Audit, AuditReport};
use crate::watch::intake::Intake;
use crate::watch::poller::{Reconcile, ReconcileReport};

pub struct Steering {
    pub regions: Vec<String>,
    pub reconcile: Reconcile,
    pub reconcile_task: Arc<TaskHandle<ReconcileReport>>,
    pub audit: Audit,
    pub audit_task: Arc<TaskHandle<AuditReport>>,
    pub intake: Arc<Intake>,
}

/// The periodic task's next run, or a run of `only` alone.
async fn run<R: Clone>(
    only: &Only,
    task: &TaskHandle<R>,
    scoped: impl std::future::Future<Output = Activation<R>>,
) -> Result<Activation<R>, String> {
    if only == &Only::default() {
        let s = task
            .run_now()
            .await
            .ok_or_else(|| "the daemon is stopping".to_owned())?;
        Ok(Activation {
            report: s.last,
            error: s.last_error,
        })
    } else {
        Ok(scoped.await)
    }
}

impl Steer for Steering {
    fn regions(&self) -> Vec<String> {
        self.regions.clone()
    }

    fn reconcile(&self, only: Only) -> BoxFuture<'_, Result<ReconcileAnswer, String>> {
        async move {
            tracing::info!(?only, "reconcile asked for through the API");
            let a = run(&only, &self.reconcile_task, self.reconcile.run(&only)).await?;
            Ok(ReconcileAnswer {
                scope: only,
                tags: a.report.tags,
                queued: a.report.queued,
                only_in_region: a.report.only_in_region,
                deletes_queued: a.report.deletes_queued,
                error: a.error,
            })
        }
        .boxed()
    }

    fn audit(&self, only: Only) -> BoxFuture<'_, Result<AuditAnswer, String>> {
        async move {
            tracing::info!(?only, "audit asked for through the API");
            let a = run(&only, &self.audit_task, self.audit.run(&only)).await?;
            Ok(AuditAnswer {
                scope: only,
                checked: a.report.checked,
                queued: a.report.stale,
                error: a.error,
            })
        }
        .boxed()
    }

    fn retry(&self, only: Only) -> Result<RetryAnswer, String> {
        let region = only
            .region
            .as_deref()
            .and_then(|name| self.regions.iter().position(|r| r == name));
        let requeued = self
            .intake
            .unpark(region, only.repository.as_deref())
            .map_err(|e| format!("waking parked items failed: {e}"))?;
        tracing::info!(
            ?only,
            requeued,
            "retry of parked items asked for through the API"
        );
        Ok(RetryAnswer {
            scope: only,
            requeued,
        })
    }
}
