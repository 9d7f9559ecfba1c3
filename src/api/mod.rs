//! The daemon's HTTP API (axum): the registry's webhook, health and
//! readiness probes, status, and Prometheus metrics.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/notifications` | registry notification envelopes; 200 once every event is durable |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when the store is usable and the primary answers, else 503 with why |
//! | `GET /v1/status` | per region: queue, lag, in flight, parked items, last success and error |
//! | `GET /metrics` | Prometheus text format |

pub mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Serialize;
use sha2::Digest as _;

use crate::config::{DeletePolicy, HttpAuth};
use crate::daemon::{AuditStatus, ReconcileStatus, Shared};
use crate::store::queue::Action;
use crate::store::{format_unix, now_unix_ms};
use crate::watch::webhook::{self, Decision};
use metrics::{EventResult, RegionGauges};

/// How long a readiness answer about the primary is reused.
const PROBE_TTL: Duration = Duration::from_secs(5);
/// Parked items listed per region in the status (all are counted).
const MAX_PARKED_LISTED: usize = 100;

pub fn router(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            api_auth,
        ));
    Router::new()
        .route("/v1/notifications", post(notifications))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(shared)
}

/// A 401 with the challenge of `auth`.
fn refuse(auth: &HttpAuth, what: &str) -> Response {
    let mut r = plain(
        StatusCode::UNAUTHORIZED,
        format!("missing or wrong credentials for {what}"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(auth.challenge()),
    );
    r
}

/// `/v1/status` and `/metrics` need `api.auth`'s credentials when it is
/// configured.
async fn api_auth(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(auth) = &shared.config.daemon.api_auth
        && !authorized(auth, req.headers().get(header::AUTHORIZATION))
    {
        shared
            .metrics
            .api_unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refuse(auth, "the georep API (see `api.auth` in the config)");
    }
    next.run(req).await
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (status, body).into_response()
}

/// Whether `given` (an `Authorization` header) matches `auth`. Both sides
/// are hashed first so the comparison takes the same time whatever the
/// input, its length included.
fn authorized(auth: &HttpAuth, given: Option<&HeaderValue>) -> bool {
    let expected = auth.authorization();
    let given = given.map(HeaderValue::as_bytes).unwrap_or(b"");
    let a = sha2::Sha256::digest(expected.expose().as_bytes());
    let b = sha2::Sha256::digest(given);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn notifications(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let d = &shared.config.daemon;
    if let Some(auth) = &d.webhook_auth
        && !authorized(auth, headers.get(header::AUTHORIZATION))
    {
        shared
            .metrics
            .webhook_unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refuse(
            auth,
            "the georep webhook (see `webhook.auth` in the config)",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !webhook::accepts_content_type(content_type) {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "content type {content_type:?} is not {} (or application/json)",
                webhook::EVENTS_MEDIA_TYPE
            ),
        );
    }
    let limit = d.webhook_max_body_bytes;
    let too_large = || {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("notification body over {limit} bytes (webhook.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if bytes.len() + c.len() > limit => return too_large(),
            Ok(c) => bytes.extend_from_slice(&c),
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {e}"),
                );
            }
        }
    }
    let events = match webhook::parse(&bytes) {
        Ok(e) => e,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };

    let store = shared.store();
    let mut counts = Counts::default();
    for event in &events {
        let result = match webhook::decide(event, &shared.config.repositories, now_unix_ms()) {
            Decision::Ignore(why) => {
                tracing::debug!(
                    id = event.id.as_deref().unwrap_or(""),
                    "event ignored: {why}"
                );
                EventResult::Ignored
            }
            Decision::Reject(why) => {
                tracing::warn!("notification event rejected: {why}");
                EventResult::Rejected
            }
            Decision::Queue { change, .. }
                if change.item.action == Action::Delete && d.deletes == DeletePolicy::Ignore =>
            {
                tracing::debug!(
                    repository = %change.repository,
                    reference = %change.reference,
                    "deleted on the primary; deletes are ignored by config"
                );
                EventResult::Ignored
            }
            Decision::Queue { id, change } => {
                match store.accept(Some(&id), std::slice::from_ref(&change)) {
                    Ok(crate::store::queue::Accepted::Queued) => {
                        shared
                            .hints
                            .touch_regions(None, &change.repository, &change.reference);
                        tracing::debug!(%id, repository = %change.repository, reference = %change.reference, "event queued");
                        EventResult::Queued
                    }
                    Ok(crate::store::queue::Accepted::Duplicate) => EventResult::Duplicate,
                    Ok(crate::store::queue::Accepted::Stale) => {
                        tracing::debug!(%id, "event older than one already accepted for {}:{}", change.repository, change.reference);
                        EventResult::Stale
                    }
                    Err(e) => {
                        tracing::error!("cannot queue event {id}: {e:#}");
                        return plain(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("cannot record the event (the registry will retry): {e}"),
                        );
                    }
                }
            }
        };
        shared.metrics.event(result);
        counts.add(result);
    }
    // Durable before the 2xx: the registry forgets an event once answered.
    if counts.queued > 0 {
        if let Err(e) = store.flush().await {
            tracing::error!("cannot flush the state store: {e:#}");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot record the event (the registry will retry): {e}"),
            );
        }
        shared.wake.notify_one();
    }
    axum::Json(counts).into_response()
}

/// The webhook's answer: what became of the events.
#[derive(Default, Serialize)]
struct Counts {
    queued: usize,
    duplicate: usize,
    stale: usize,
    ignored: usize,
    rejected: usize,
}

impl Counts {
    fn add(&mut self, r: EventResult) {
        match r {
            EventResult::Queued => self.queued += 1,
            EventResult::Duplicate => self.duplicate += 1,
            EventResult::Stale => self.stale += 1,
            EventResult::Ignored => self.ignored += 1,
            EventResult::Rejected => self.rejected += 1,
        }
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if let Err(e) = shared.store().check() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, format!("state store: {e}"));
    }
    let mut probe = shared.primary_probe.lock().await;
    let fresh = probe
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < PROBE_TTL);
    if !fresh {
        let res = shared
            .engine
            .primary()
            .ping()
            .await
            .map_err(|e| format!("{e:#}"));
        *probe = Some((Instant::now(), res));
    }
    match probe.as_ref().map(|(_, r)| r) {
        Some(Ok(())) | None => plain(StatusCode::OK, "ready"),
        Some(Err(e)) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("primary {} unreachable: {e}", shared.engine.primary().url()),
        ),
    }
}

/// One region in `/v1/status`.
#[derive(Serialize)]
pub struct RegionStatusView {
    pub name: String,
    pub url: String,
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
    pub manifests_pushed: u64,
}

#[derive(Serialize)]
pub struct ParkedView {
    pub repository: String,
    pub reference: String,
    pub digest: String,
    pub attempts: u32,
    pub reason: String,
}

#[derive(Serialize)]
pub struct StatusView {
    pub primary: PrimaryView,
    pub regions: Vec<RegionStatusView>,
    pub reconcile: ReconcileStatus,
    pub audit: AuditStatus,
    pub events_queued: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
}

#[derive(Serialize)]
pub struct PrimaryView {
    pub name: String,
    pub url: String,
}

pub fn status_view(shared: &Shared) -> StatusView {
    let store = shared.store();
    let now = now_unix_ms();
    let regions = shared
        .engine
        .regions()
        .iter()
        .enumerate()
        .map(|(r, reg)| {
            let items = store.queued(r, usize::MAX);
            let in_flight = shared.in_flight_count(r);
            let parked: Vec<_> = items.iter().filter(|q| q.item.parked).collect();
            let oldest = items.iter().map(|q| q.item.since_ms).min();
            let s = store.region_status(r);
            let c = shared.engine.counter_values(r);
            RegionStatusView {
                name: reg.name().to_owned(),
                url: reg.url().to_owned(),
                queue_depth: (items.len() - parked.len()).saturating_sub(in_flight),
                in_flight,
                lag_items: items.len(),
                lag_secs: oldest.map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0),
                parked_count: parked.len(),
                parked: parked
                    .iter()
                    .take(MAX_PARKED_LISTED)
                    .map(|q| ParkedView {
                        repository: q.repository.clone(),
                        reference: q.reference.clone(),
                        digest: q.item.digest.as_str().to_owned(),
                        attempts: q.item.attempts,
                        reason: q.item.last_error.clone().unwrap_or_default(),
                    })
                    .collect(),
                last_success_at: s.last_success_at.map(format_unix),
                last_error: s.last_error,
                last_error_at: s.last_error_at.map(format_unix),
                blobs_copied: c[0],
                bytes_copied: c[1],
                manifests_pushed: c[3],
            }
        })
        .collect();
    let m = &shared.metrics;
    StatusView {
        primary: PrimaryView {
            name: shared.engine.primary().name().to_owned(),
            url: shared.engine.primary().url().to_owned(),
        },
        regions,
        reconcile: shared
            .reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        audit: shared
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        events_queued: m.events(EventResult::Queued),
        events_duplicate: m.events(EventResult::Duplicate),
        events_rejected: m.events(EventResult::Rejected),
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let view = status_view(&shared);
    axum::Json(view).into_response()
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    let view = status_view(&shared);
    let gauges: Vec<RegionGauges<'_>> = view
        .regions
        .iter()
        .enumerate()
        .map(|(r, v)| RegionGauges {
            name: &v.name,
            queue_depth: v.lag_items,
            parked: v.parked_count,
            in_flight: v.in_flight,
            lag_secs: v.lag_secs,
            counters: shared.engine.counter_values(r),
        })
        .collect();
    let text = metrics::render(&shared.metrics, &gauges);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn credentials_compare() {
        let bearer = HttpAuth::Bearer(Secret::new("s3cret"));
        assert!(authorized(
            &bearer,
            Some(&HeaderValue::from_static("Bearer s3cret"))
        ));
        assert!(!authorized(
            &bearer,
            Some(&HeaderValue::from_static("Bearer s3cre"))
        ));
        assert!(!authorized(&bearer, None));
        let basic = HttpAuth::Basic {
            username: "registry".into(),
            password: Secret::new("pw"),
        };
        // base64("registry:pw")
        assert!(authorized(
            &basic,
            Some(&HeaderValue::from_static("Basic cmVnaXN0cnk6cHc="))
        ));
        assert!(!authorized(
            &basic,
            Some(&HeaderValue::from_static("Bearer pw"))
        ));
    }
}
