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
//! | `POST /v1/reconcile`, `/v1/audit`, `/v1/retry` | steering ([`steer`]); `?region=`, `?repository=` |

pub mod members;
pub mod serve;
pub mod steer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use sha2::Digest as _;

use crate::config::{DaemonConfig, HttpAuth};
use crate::engine::CopyCounts;
use crate::metrics::{Metrics, RegionGauges, TargetGauges};
use crate::registry::Registry;
use crate::status::{Detail, StatusView};
use crate::store::Store;
use crate::watch::intake::Intake;
use crate::watch::webhook;

/// How long a readiness answer about the primary is reused.
const PROBE_TTL: Duration = Duration::from_secs(5);

/// Produces the daemon's status view on demand.
pub type StatusFn = Arc<dyn Fn(Detail) -> StatusView + Send + Sync>;

/// What the API holds: the doors it opens onto the daemon, its own
/// settings and its own small state (the readiness probe's last answer).
pub struct ApiState {
    intake: Arc<Intake>,
    metrics: Arc<Metrics>,
    status: StatusFn,
    /// Readiness: the store is usable and the primary (if any) answers.
    store: Arc<Store>,
    primary: Option<Arc<Registry>>,
    webhook_auth: Option<HttpAuth>,
    /// Any-region mode: each region's door (`/v1/notifications/<name>`);
    /// empty in one-way mode.
    doors: Vec<Door>,
    api_auth: Option<HttpAuth>,
    webhook_max_body_bytes: usize,
    /// The daemon's controls (`POST /v1/reconcile`, …).
    steer: Arc<dyn steer::Steer>,
    /// The last readiness probe of the primary, reused for a few seconds.
    primary_probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// A cluster member: notifications for other members' repositories
    /// are handed to them, and readiness includes the lease.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// For talking to the other members.
    http: reqwest::Client,
}

/// Where one region's notifications come in (any-region mode).
pub struct Door {
    pub name: String,
    /// People push there: its events are changes. Events of a region that
    /// accepts no pushes are refused.
    pub writable: bool,
    /// Its own webhook credentials, else `webhook.auth`.
    pub auth: Option<HttpAuth>,
}

impl Door {
    /// Every region's door, in any-region mode; none in one-way mode.
    pub fn all(config: &crate::config::Config) -> Vec<Door> {
        if !config.any_region() {
            return Vec::new();
        }
        config
            .regions
            .iter()
            .map(|r| Door {
                name: r.name.clone(),
                writable: r.accepts_pushes,
                auth: r.webhook_auth.clone(),
            })
            .collect()
    }
}

impl ApiState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &DaemonConfig,
        intake: Arc<Intake>,
        metrics: Arc<Metrics>,
        status: StatusFn,
        store: Arc<Store>,
        primary: Option<Arc<Registry>>,
        doors: Vec<Door>,
        steer: Arc<dyn steer::Steer>,
    ) -> ApiState {
        ApiState {
            steer,
            intake,
            metrics,
            status,
            store,
            primary,
            doors,
            webhook_auth: config.webhook_auth.clone(),
            api_auth: config.api_auth.clone(),
            webhook_max_body_bytes: config.webhook_max_body_bytes,
            primary_probe: tokio::sync::Mutex::new(None),
            cluster: None,
            http: reqwest::Client::builder()
                .user_agent(crate::http::USER_AGENT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// A cluster member's API.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> ApiState {
        self.cluster = cluster;
        self
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    let guarded = Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/v1/reconcile", post(steer::reconcile))
        .route("/v1/audit", post(steer::audit))
        .route("/v1/retry", post(steer::retry))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api_auth,
        ));
    Router::new()
        .route("/v1/notifications", post(notifications))
        .route("/v1/notifications/{region}", post(region_notifications))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(state)
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
    State(state): State<Arc<ApiState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(auth) = &state.api_auth
        && !authorized(auth, req.headers().get(header::AUTHORIZATION))
    {
        state
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

/// The primary's notifications (one-way mode).
async fn notifications(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.doors.is_empty() {
        let names: Vec<&str> = state.doors.iter().map(|d| d.name.as_str()).collect();
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "any-region mode: each region posts its notifications to /v1/notifications/<region> (one of: {}), so georep knows where a push was made",
                names.join(", ")
            ),
        );
    }
    let auth = state.webhook_auth.clone();
    receive(&state, None, auth.as_ref(), "`webhook.auth`", headers, body).await
}

/// One region's notifications (any-region mode): the path says which
/// region, and only a region that accepts pushes is heard.
async fn region_notifications(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path(region): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if state.doors.is_empty() {
        return plain(
            StatusCode::NOT_FOUND,
            "one-way mode: only the primary notifies georep, at /v1/notifications (set `mode: any-region` to accept pushes in every region)",
        );
    }
    let Some(r) = state.doors.iter().position(|d| d.name == region) else {
        let names: Vec<&str> = state.doors.iter().map(|d| d.name.as_str()).collect();
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "no region named {:?} (regions: {})",
                region.chars().take(64).collect::<String>(),
                names.join(", ")
            ),
        );
    };
    let door = &state.doors[r];
    let (auth, what) = match &door.auth {
        Some(a) => (
            Some(a),
            format!("the `webhook_auth` of region {}", door.name),
        ),
        None => (state.webhook_auth.as_ref(), "`webhook.auth`".to_owned()),
    };
    receive(&state, Some(r), auth, &what, headers, body).await
}

/// A notification body from region `region` (or the primary), checked
/// against `auth` (named `auth_key` in messages) when given; a region that
/// accepts no pushes is refused once its sender proved who it is.
async fn receive(
    state: &ApiState,
    region: Option<usize>,
    auth: Option<&HttpAuth>,
    auth_key: &str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(auth) = auth
        && !authorized(auth, headers.get(header::AUTHORIZATION))
    {
        state
            .metrics
            .webhook_unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refuse(
            auth,
            &format!("the georep webhook (see {auth_key} in the config)"),
        );
    }
    if let Some(door) = region.and_then(|r| state.doors.get(r))
        && !door.writable
    {
        return plain(
            StatusCode::FORBIDDEN,
            format!(
                "region {} does not accept pushes (`accepts_pushes: false`): its notifications are refused; point only writable regions at georep",
                door.name
            ),
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
    let limit = state.webhook_max_body_bytes;
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
    // A sender that stops mid-body holds a connection: it gets a time limit.
    let deadline = tokio::time::Instant::now() + serve::BODY_TIMEOUT;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} s",
                        serve::BODY_TIMEOUT.as_secs()
                    ),
                );
            }
        };
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
    if let Some(cluster) = &state.cluster
        && region.is_none()
    {
        return clustered(state, cluster, &headers, &bytes, events).await;
    }

    match state.intake.events_from(region, &events).await {
        Ok(counts) => axum::Json(counts).into_response(),
        Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A cluster member's notification: its own events are recorded here,
/// the others' handed to their owners; 2xx only when all are durable.
async fn clustered(
    state: &ApiState,
    cluster: &crate::cluster::Cluster,
    headers: &HeaderMap,
    bytes: &[u8],
    events: Vec<webhook::Event>,
) -> Response {
    let unavailable = |why: String| plain(StatusCode::SERVICE_UNAVAILABLE, why);
    if let Some(from) = members::forwarded_by(headers) {
        // Forwarded once, never again: the member sets differ for a moment
        // and the registry delivers again.
        let theirs = events
            .iter()
            .filter_map(|e| e.target.as_ref().and_then(|t| t.repository.as_deref()))
            .find(|repo| !cluster.owns(repo));
        if let Some(repo) = theirs {
            return unavailable(format!(
                "instance {} does not own {repo:?} by the members it sees (forwarded by {from}); the registry will deliver again",
                cluster.id()
            ));
        }
        return match state.intake.events(&events).await {
            Ok(counts) => axum::Json(counts).into_response(),
            Err(e) => unavailable(e.to_string()),
        };
    }
    let split = match members::split(cluster, &events) {
        Ok(s) => s,
        Err(why) => return unavailable(why),
    };
    let raw: Vec<serde_json::Value> = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default();
    if raw.len() != events.len() {
        return plain(
            StatusCode::BAD_REQUEST,
            "the events of the envelope could not be told apart",
        );
    }
    let mut slots: Vec<Option<webhook::Event>> = events.into_iter().map(Some).collect();
    let local: Vec<webhook::Event> = split
        .local
        .iter()
        .filter_map(|&i| slots[i].take())
        .collect();
    let remote = split.remote.iter().map(|(owner, (url, idx))| {
        let events = idx.iter().map(|&i| raw[i].clone()).collect();
        members::post(&state.http, cluster.id(), owner, url, events, headers)
    });
    let forwarded: usize = split.remote.values().map(|(_, idx)| idx.len()).sum();
    let (mine, theirs) = tokio::join!(
        state.intake.events(&local),
        futures::future::join_all(remote)
    );
    let mut counts = match mine {
        Ok(c) => c,
        Err(e) => return unavailable(e.to_string()),
    };
    let mut problems = Vec::new();
    for t in theirs {
        match t {
            Ok(c) => counts.merge(c),
            Err(why) => problems.push(why),
        }
    }
    state
        .metrics
        .events_forwarded
        .fetch_add(forwarded as u64, std::sync::atomic::Ordering::Relaxed);
    if !problems.is_empty() {
        tracing::warn!(
            "handing events to their owners failed: {}",
            problems.join("; ")
        );
        return unavailable(format!(
            "not every event is recorded by its owner; the registry will deliver again: {}",
            problems.join("; ")
        ));
    }
    axum::Json(counts).into_response()
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if let Err(e) = state.store.check() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, format!("state store: {e}"));
    }
    if let Some(why) = state.cluster.as_ref().and_then(|c| c.trouble()) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    // Any-region mode has no one registry it cannot work without: each
    // region's health is in the status.
    let Some(primary) = &state.primary else {
        return plain(StatusCode::OK, "ready");
    };
    let mut probe = state.primary_probe.lock().await;
    let fresh = probe
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < PROBE_TTL);
    if !fresh {
        let res = primary.ping().await.map_err(|e| format!("{e:#}"));
        *probe = Some((Instant::now(), res));
    }
    match probe.as_ref().map(|(_, r)| r) {
        Some(Ok(())) | None => plain(StatusCode::OK, "ready"),
        Some(Err(e)) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("primary {} unreachable: {e}", primary.url()),
        ),
    }
}

/// `?scope=instance`: this instance alone (what members ask each other).
#[derive(serde::Deserialize)]
struct StatusQuery {
    #[serde(default)]
    scope: Option<String>,
}

async fn status(
    State(state): State<Arc<ApiState>>,
    axum::extract::Query(q): axum::extract::Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    let mut view = (state.status)(Detail::Full);
    if q.scope.as_deref() != Some("instance") {
        members::gather(&state.http, &mut view, &headers).await;
    }
    axum::Json(view).into_response()
}

async fn metrics_text(State(state): State<Arc<ApiState>>) -> Response {
    let view = (state.status)(Detail::Gauges);
    let gauges: Vec<RegionGauges<'_>> = view
        .regions
        .iter()
        .map(|v| RegionGauges {
            name: &v.name,
            up: v.health.reachable != Some(false),
            queue_depth: v.queue_depth,
            lag_items: v.lag_items,
            parked: v.parked_count,
            in_flight: v.in_flight,
            lag_secs: v.lag_secs,
            copied: CopyCounts {
                blobs_uploaded: v.blobs_copied,
                bytes_uploaded: v.bytes_copied,
                blobs_mounted: v.blobs_mounted,
                manifests_pushed: v.manifests_pushed,
            },
        })
        .collect();
    let targets: Vec<TargetGauges<'_>> = view
        .notify
        .iter()
        .map(|t| TargetGauges {
            name: &t.name,
            sent: t.sent,
            failed: t.failed,
            dropped: t.dropped,
            pending: t.pending,
        })
        .collect();
    let mut text = crate::metrics::render(&state.metrics, &gauges, &targets);
    if let Some(c) = &state.cluster {
        let standing = c.standing();
        text.push_str(&crate::metrics::render_cluster(
            &crate::metrics::ClusterGauges {
                members: c.members().len(),
                etcd_up: standing.etcd_reachable,
                fenced: c.fenced(),
                leader: c.leads(),
            },
        ));
        text = crate::metrics::with_instance(&text, c.id());
    }
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
