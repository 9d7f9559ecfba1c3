//! What only the cluster's leader does: keep the audit's schedule. Every
//! member runs this task every `audit_interval_secs`; on the member that
//! holds the leader key it audits its own share and asks every other
//! member to audit theirs (`POST /v1/audit`), so the whole cluster is
//! audited once per interval whoever leads, and never twice.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::background::{Activation, BackgroundTask, TaskHandle};
use crate::cluster::Cluster;
use crate::config::HttpAuth;
use crate::watch::audit::AuditReport;

/// Time allowed for a member's audit.
const MEMBER_AUDIT_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone, Default, Serialize)]
pub struct AuditRound {
    /// This instance led the round.
    pub led: bool,
    /// Members that ran their share's audit (this one included).
    pub members_audited: usize,
}

pub struct AuditSchedule {
    pub cluster: Arc<Cluster>,
    pub audit_task: Arc<TaskHandle<AuditReport>>,
    pub http: reqwest::Client,
    /// What the members' API asks for (`api.auth`, the same everywhere).
    pub api_auth: Option<HttpAuth>,
}

impl BackgroundTask for AuditSchedule {
    type Report = AuditRound;
    const NAME: &'static str = "audit schedule";

    async fn activate(&self) -> Activation<AuditRound> {
        if !self.cluster.leads() {
            return Activation {
                report: AuditRound::default(),
                error: None,
            };
        }
        tracing::info!("leader: auditing the cluster, each member its share");
        let me = self.cluster.id().to_owned();
        let asks = self
            .cluster
            .members()
            .into_iter()
            .filter(|m| m.id != me)
            .map(|m| async move {
                let mut req = self
                    .http
                    .post(format!("{}/v1/audit", m.advertise_url))
                    .timeout(MEMBER_AUDIT_TIMEOUT);
                if let Some(auth) = &self.api_auth {
                    req = req.header(
                        reqwest::header::AUTHORIZATION,
                        auth.authorization().expose(),
                    );
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("member {} answered {}", m.id, r.status())),
                    Err(e) => Err(format!("member {}: {e}", m.id)),
                }
            });
        let (own, others) =
            tokio::join!(self.audit_task.run_now(), futures::future::join_all(asks));
        let mut round = AuditRound {
            led: true,
            members_audited: usize::from(own.is_some()),
        };
        let mut errors = Vec::new();
        for o in others {
            match o {
                Ok(()) => round.members_audited += 1,
                Err(e) => errors.push(e),
            }
        }
        Activation {
            report: round,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        }
    }
}
