//! Steering a running daemon: `POST /v1/reconcile`, `POST /v1/audit` and
//! `POST /v1/retry`, each optionally for one region (`?region=`) and/or one
//! repository (`?repository=`), behind `api.auth`. Each answers once its
//! work is queued, with what it queued.
//!
//! The routes only parse and check; the daemon does the work through
//! [`Steer`] (the API knows no task or queue).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{ApiState, plain};
use crate::watch::Only;

/// What a reconcile asked for by an operator found and queued.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileAnswer {
    pub scope: Only,
    /// Tags listed on the primary.
    pub tags: usize,
    /// Items queued (regions found behind).
    pub queued: usize,
    /// Per region: tags it holds that the primary deleted.
    pub only_in_region: BTreeMap<String, usize>,
    /// Deletes queued for those (`deletes.policy: propagate`).
    pub deletes_queued: usize,
    /// What could not be listed, if anything.
    pub error: Option<String>,
}

/// What an audit asked for by an operator found and queued.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditAnswer {
    pub scope: Only,
    /// (region, tag) pairs asked about.
    pub checked: usize,
    /// Of those, the ones a region did not serve as recorded: queued again.
    pub queued: usize,
    pub error: Option<String>,
}

/// Parked items made ready again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryAnswer {
    pub scope: Only,
    pub requeued: usize,
}

/// The daemon's side of steering.
pub trait Steer: Send + Sync {
    /// The regions' names, to check `?region=`.
    fn regions(&self) -> Vec<String>;
    fn reconcile(&self, only: Only) -> BoxFuture<'_, Result<ReconcileAnswer, String>>;
    fn audit(&self, only: Only) -> BoxFuture<'_, Result<AuditAnswer, String>>;
    fn retry(&self, only: Only) -> Result<RetryAnswer, String>;
}

/// `only` if its region exists, else why not (the regions there are).
fn checked(state: &ApiState, only: Only) -> Result<Only, String> {
    let regions = state.steer.regions();
    match &only.region {
        Some(r) if !regions.contains(r) => Err(format!(
            "no region named {r:?}; the regions are: {}",
            regions.join(", ")
        )),
        _ => Ok(only),
    }
}

fn answer<T: Serialize>(result: Result<T, String>) -> Response {
    match result {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

fn bad_request(why: String) -> Response {
    plain(StatusCode::BAD_REQUEST, why)
}

pub async fn reconcile(State(state): State<Arc<ApiState>>, Query(only): Query<Only>) -> Response {
    match checked(&state, only) {
        Ok(only) => answer(state.steer.reconcile(only).await),
        Err(why) => bad_request(why),
    }
}

pub async fn audit(State(state): State<Arc<ApiState>>, Query(only): Query<Only>) -> Response {
    match checked(&state, only) {
        Ok(only) => answer(state.steer.audit(only).await),
        Err(why) => bad_request(why),
    }
}

pub async fn retry(State(state): State<Arc<ApiState>>, Query(only): Query<Only>) -> Response {
    match checked(&state, only) {
        Ok(only) => answer(state.steer.retry(only)),
        Err(why) => bad_request(why),
    }
}
