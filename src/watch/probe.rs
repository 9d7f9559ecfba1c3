//! The probe: every few seconds (run by [`crate::background`]), and once
//! before the daemon copies anything, each registry — the primary and
//! every region — is asked `GET /v2/` with its credentials
//! ([`Registry::check`]). What it finds is each registry's health in the
//! status (reachable, and the one problem about the registry as a whole,
//! with its hint), logged once when it changes rather than once per tag.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::background::{Activation, BackgroundTask};
use crate::lock::Locked;
use crate::registry::Registry;
use crate::registry::check::{Health, Problem, ProblemKind};
use crate::store::{format_unix, now_unix};

/// How often the daemon probes.
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the last probe found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Registries with a problem.
    #[serde(rename = "last_problems")]
    pub problems: usize,
}

/// Each registry's health (primary first, then the regions), as last
/// probed.
#[derive(Default)]
pub struct HealthBook(Mutex<Vec<Health>>);

impl HealthBook {
    pub fn get(&self) -> Vec<Health> {
        self.0.locked().clone()
    }
}

pub struct Probe {
    /// The primary, then the regions.
    pub registries: Vec<Arc<Registry>>,
    pub book: Arc<HealthBook>,
}

/// The health a check's answer makes; `since` carried over from `before`
/// when nothing changed.
pub fn health_of(result: Result<(), Problem>, before: Option<&Health>, at: u64) -> Health {
    let problem = result.err();
    let reachable = !problem
        .as_ref()
        .is_some_and(|p| matches!(p.kind, ProblemKind::Unreachable | ProblemKind::Tls));
    let unchanged = before.is_some_and(|b| {
        b.reachable == Some(reachable)
            && b.problem.as_ref().map(|p| p.kind) == problem.as_ref().map(|p| p.kind)
    });
    Health {
        reachable: Some(reachable),
        problem,
        checked_at: Some(format_unix(at)),
        since: if unchanged {
            before.and_then(|b| b.since.clone())
        } else {
            Some(format_unix(at))
        },
    }
}

impl BackgroundTask for Probe {
    type Report = ProbeReport;
    const NAME: &'static str = "probe";

    async fn activate(&self) -> Activation<ProbeReport> {
        let checks = futures::future::join_all(self.registries.iter().map(|r| r.check())).await;
        let now = now_unix();
        let mut book = self.book.0.locked();
        let first = book.is_empty();
        let mut problems = 0;
        let mut next = Vec::with_capacity(checks.len());
        for (i, (reg, result)) in self.registries.iter().zip(checks).enumerate() {
            let before = book.get(i);
            let h = health_of(result, before, now);
            let was = before.and_then(|b| b.problem.as_ref());
            match (&h.problem, was) {
                (Some(p), None) => tracing::warn!(registry = %reg.name(), "{p}"),
                (Some(p), Some(w)) if p.kind != w.kind => {
                    tracing::warn!(registry = %reg.name(), "{p}")
                }
                (None, Some(_)) => {
                    tracing::info!(registry = %reg.name(), url = %reg.url(), "registry answers again")
                }
                _ if first => tracing::debug!(registry = %reg.name(), "registry answers"),
                _ => {}
            }
            problems += usize::from(h.problem.is_some());
            next.push(h);
        }
        *book = next;
        Activation {
            report: ProbeReport { problems },
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<(), Problem> {
        Err(Problem {
            kind: ProblemKind::Unreachable,
            message: "refused".into(),
        })
    }

    #[test]
    fn since_is_kept_while_the_state_lasts_and_moves_when_it_changes() {
        let down = health_of(refused(), None, 100);
        assert_eq!(down.reachable, Some(false));
        let still = health_of(refused(), Some(&down), 200);
        assert_eq!(still.since, down.since, "still down since the first probe");
        assert_eq!(still.checked_at.as_deref(), Some(format_unix(200).as_str()));
        let up = health_of(Ok(()), Some(&still), 300);
        assert_eq!((up.reachable, up.problem.is_none()), (Some(true), true));
        assert_eq!(up.since.as_deref(), Some(format_unix(300).as_str()));
        let refused_creds = health_of(
            Err(Problem {
                kind: ProblemKind::Credentials,
                message: "no".into(),
            }),
            Some(&up),
            400,
        );
        assert_eq!(
            refused_creds.reachable,
            Some(true),
            "it answers, it refuses"
        );
        assert_eq!(
            refused_creds.since.as_deref(),
            Some(format_unix(400).as_str())
        );
    }
}
