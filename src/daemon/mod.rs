//! `georep run`: the daemon. Webhook, poller and audit ([`crate::watch`])
//! record changes in the durable queue ([`crate::store::queue`]); per-region
//! workers ([`workers`]) copy them with the engine; the HTTP API
//! ([`crate::api`]) serves the webhook, health, status and metrics; outgoing
//! notifications ([`notify`]) tell the outside world when an image has
//! landed.
//!
//! Start is two-phase: [`Daemon::build`] validates everything that can be
//! wrong (the store opens, the port binds) before anything runs, then
//! [`Daemon::run`] spawns the tasks and returns after a graceful drain.

pub mod notify;
pub mod schedule;
pub mod workers;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::Notify;

use crate::api::metrics::Metrics;
use crate::config::Config;
use crate::engine::Engine;
use crate::shutdown;
use crate::store::{RegionId, Store};

/// What every task of the daemon shares.
pub struct Shared {
    pub config: Config,
    pub engine: Engine,
    pub metrics: Metrics,
    /// Woken when work is queued or finished, or a retry time may have come.
    pub wake: Notify,
    /// Items being worked on: (region, repository, reference).
    pub in_flight: Mutex<HashMap<(RegionId, String, String), Instant>>,
    pub notifier: notify::Notifier,
    pub reconcile: Mutex<ReconcileStatus>,
    pub audit: Mutex<AuditStatus>,
    /// The last readiness probe of the primary, reused for a few seconds.
    pub primary_probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// Held while an item is finished and the other regions are checked.
    pub completion: Mutex<()>,
    /// Queue keys changed since the dispatcher last looked.
    pub hints: schedule::Hints,
    /// Per region: not dispatched to before this time while unreachable.
    pub gates: Vec<Mutex<workers::Gate>>,
}

/// The reconciles so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconcileStatus {
    pub running: bool,
    pub count: u64,
    pub last_started_at: Option<u64>,
    pub last_finished_at: Option<u64>,
    /// Tags listed on the primary by the last reconcile.
    pub last_tags: usize,
    /// Items it queued (regions found behind).
    pub last_queued: usize,
    pub last_error: Option<String>,
}

/// The audits so far ([`crate::watch::audit`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditStatus {
    pub running: bool,
    pub count: u64,
    pub last_started_at: Option<u64>,
    pub last_finished_at: Option<u64>,
    /// (region, tag) pairs the last audit asked about.
    pub last_checked: usize,
    /// Of those, the ones a region did not serve as recorded (queued again).
    pub last_stale: usize,
    /// How long the last audit took.
    pub last_secs: f64,
    /// Regions or repositories the last audit could not ask about.
    pub last_error: Option<String>,
}

impl Shared {
    pub fn store(&self) -> &Arc<Store> {
        self.engine.store()
    }

    pub fn in_flight_count(&self, r: RegionId) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(region, _, _)| *region == r)
            .count()
    }
}

/// A built daemon: store open, port bound, nothing running yet.
pub struct Daemon {
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
}

impl Daemon {
    /// Opens the store and binds the API's port: every error here is the
    /// operator's to fix, reported before anything starts.
    pub async fn build(config: Config) -> anyhow::Result<Daemon> {
        let addr: SocketAddr = config.daemon.listen.parse().with_context(|| {
            format!(
                "listen address {:?} in {}",
                config.daemon.listen,
                config.path.display()
            )
        })?;
        let store = Engine::open_store(&config)?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (`listen` in {}): is another georep or another service using it?",
                config.path.display()
            )
        })?;
        let engine = Engine::new(&config, store);
        let regions = config.regions.len();
        let metrics = Metrics::new(config.regions.len());
        let notifier = notify::Notifier::new(&config);
        Ok(Daemon {
            shared: Arc::new(Shared {
                config,
                engine,
                metrics,
                wake: Notify::new(),
                in_flight: Mutex::new(HashMap::new()),
                notifier,
                reconcile: Mutex::new(ReconcileStatus::default()),
                audit: Mutex::new(AuditStatus::default()),
                primary_probe: tokio::sync::Mutex::new(None),
                completion: Mutex::new(()),
                hints: schedule::Hints::new(regions),
                gates: (0..regions).map(|_| Mutex::default()).collect(),
            }),
            listener,
        })
    }

    /// Where the API listens (the real port when the config said 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `stop` resolves, then drains: the API stops accepting,
    /// in-flight copies get the grace period, the rest stays queued.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let shared = self.shared;
        let (trigger, signal) = shutdown::channel();
        let addr = self.listener.local_addr()?;
        tracing::info!(
            %addr,
            regions = shared.config.regions.len(),
            poll_interval_secs = shared.config.daemon.poll_interval.map(|d| d.as_secs()),
            audit_interval_secs = shared.config.daemon.audit_interval.map(|d| d.as_secs()),
            "georep daemon listening"
        );
        if !addr.ip().is_loopback() {
            let d = &shared.config.daemon;
            let open: Vec<&str> = [
                (d.webhook_auth.is_none(), "the webhook (set webhook.auth)"),
                (
                    d.api_auth.is_none(),
                    "/v1/status and /metrics (set api.auth)",
                ),
            ]
            .into_iter()
            .filter_map(|(open, what)| open.then_some(what))
            .collect();
            if !open.is_empty() {
                tracing::warn!(
                    %addr,
                    "reachable from the network without credentials: {}",
                    open.join(", ")
                );
            }
        }

        let api = {
            let mut signal = signal.clone();
            let app = crate::api::router(shared.clone());
            let listener = self.listener;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { signal.wait().await })
                    .await
            })
        };
        let workers = tokio::spawn(workers::run(shared.clone(), signal.clone()));
        let poller = tokio::spawn(crate::watch::poller::run(shared.clone(), signal.clone()));
        let audit = tokio::spawn(crate::watch::audit::run(shared.clone(), signal.clone()));
        let notifier = shared.notifier.spawn(shared.clone(), signal.clone());

        stop.await;
        tracing::info!(
            grace_secs = shared.config.daemon.shutdown_grace.as_secs(),
            "shutting down: no new work; letting in-flight copies finish"
        );
        trigger.fire();
        poller.abort();
        audit.abort();
        let _ = poller.await;
        let _ = audit.await;
        match api.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the HTTP API ended with an error: {e}"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::warn!("the HTTP API task failed: {e}"),
        }
        if let Err(e) = workers.await {
            tracing::warn!("the workers ended abnormally: {e}");
        }
        // Notifications already queued get a moment, not the whole grace.
        let _ = tokio::time::timeout(Duration::from_secs(2), notifier).await;
        shared
            .store()
            .flush()
            .await
            .context("flushing the state store on shutdown")?;
        tracing::info!("georep daemon stopped");
        Ok(())
    }
}
