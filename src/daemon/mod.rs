//! `georep run`: the daemon. The webhook ([`crate::api`]), the reconcile and
//! the audit ([`crate::watch`], run by [`crate::background`]) hand changes
//! to the intake, which records them in the durable queue
//! ([`crate::store::queue`]) and rings the doorbell; per-region workers
//! ([`workers`]) copy them with the engine; outgoing notifications
//! ([`crate::notify`]) tell the outside world when an image has landed.
//!
//! Start is two-phase: [`Daemon::build`] validates everything that can be
//! wrong (the store opens, the port binds) and wires the parts, each with
//! only what it needs, before anything runs; then [`Daemon::run`] spawns
//! the tasks and returns after a graceful drain.

mod handover;
mod lead;
mod lone_tag;
pub mod schedule;
pub mod status;
pub mod steer;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::ApiState;
use crate::background::{self, BackgroundTask, Period};
use crate::cluster::Cluster;
use crate::cluster::membership::Settings;
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::shutdown;
use crate::watch::audit::Audit;
use crate::watch::doorbell::Doorbell;
use crate::watch::intake::{FORGET_EVERY, ForgetEvents, Intake};
use crate::watch::merge::Merge;
use crate::watch::poller::Reconcile;
use crate::watch::probe::{HealthBook, PROBE_EVERY, Probe};
use workers::Workers;

/// How long the first probe of the registries may hold the start.
const FIRST_PROBE_WAIT: Duration = Duration::from_secs(10);

/// A built daemon: store open, port bound, parts wired, nothing running.
pub struct Daemon {
    config: Arc<Config>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    doorbell: Arc<Doorbell>,
    intake: Arc<Intake>,
    notifier: Arc<Notifier>,
    /// Any-region mode's decisions.
    merge: Option<Arc<Merge>>,
    /// A cluster member's place in the cluster, and what ends its
    /// membership (after the workers drained: leaving earlier would let
    /// another member start on what this one still copies).
    cluster: Option<(Arc<Cluster>, shutdown::Trigger)>,
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
        // The store first: a second georep on the same state is the likelier
        // mistake, and its message is the clearer one.
        let store = Engine::open_store(&config)?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (`listen` in {}): is another georep or another service using it?",
                config.path.display()
            )
        })?;
        Daemon::wire(config, store, listener)
    }

    /// As [`Daemon::build`], serving on `listener` (already bound: a test
    /// binds `127.0.0.1:0` and reads the port back) instead of `listen`.
    pub async fn build_on(
        config: Config,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Daemon> {
        let store = Engine::open_store(&config)?;
        Daemon::wire(config, store, listener)
    }

    /// Gives each part of the daemon what it needs.
    fn wire(
        config: Config,
        store: Arc<crate::store::Store>,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Daemon> {
        let regions = config.regions.len();
        let cluster = config.cluster.as_ref().map(|c| {
            let (trigger, signal) = shutdown::channel();
            let cluster = Arc::new(Cluster::join(Settings::from_config(c), signal));
            (cluster, trigger)
        });
        let mut engine = Engine::new(&config, store.clone());
        if let Some((c, _)) = &cluster {
            let c = c.clone();
            engine = engine.with_share(Arc::new(move |repo: &str| c.owns(repo)));
        }
        let engine = Arc::new(engine);
        let metrics = Arc::new(Metrics::new(regions));
        let doorbell = Arc::new(Doorbell::new(regions));
        let notifier = Arc::new(Notifier::new(&config, store.clone()));
        let merge = config.any_region().then(|| {
            Arc::new(Merge::new(
                &config,
                store.clone(),
                doorbell.clone(),
                metrics.clone(),
                notifier.clone(),
                engine.rules().clone(),
            ))
        });
        let intake = Arc::new(Intake::new(
            store,
            doorbell.clone(),
            metrics.clone(),
            config.repositories.clone(),
            config.daemon.deletes,
            merge.clone(),
        ));
        Ok(Daemon {
            config: Arc::new(config),
            engine,
            metrics,
            doorbell,
            intake,
            notifier,
            merge,
            cluster,
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
        let Daemon {
            config,
            engine,
            metrics,
            doorbell,
            intake,
            notifier,
            merge,
            cluster,
            listener,
        } = self;
        let (cluster, cluster_stop) = match cluster {
            Some((c, t)) => (Some(c), Some(t)),
            None => (None, None),
        };
        let (trigger, signal) = shutdown::channel();
        let addr = listener.local_addr()?;
        let d = &config.daemon;
        let every =
            |p: Option<Duration>| p.map_or("off".to_owned(), |d| format!("{}s", d.as_secs()));
        tracing::info!(
            %addr,
            version = env!("CARGO_PKG_VERSION"),
            mode = config.mode.as_str(),
            primary = %config.primary().map_or_else(|| "none".to_owned(), |p| p.display_url()),
            regions = %config.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(","),
            poll_interval = %every(d.poll_interval),
            audit_interval = %every(d.audit_interval),
            deletes = match (d.deletes, d.deletes_dry_run) {
                (crate::config::DeletePolicy::Ignore, _) => "ignore",
                (crate::config::DeletePolicy::Propagate, false) => "propagate",
                (crate::config::DeletePolicy::Propagate, true) => "propagate (dry run)",
            },
            cluster = %cluster.as_ref().map_or_else(|| "off".to_owned(), |c| format!("instance {}", c.id())),
            notify = %if d.notify.is_empty() {
                "none".to_owned()
            } else {
                d.notify.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(",")
            },
            "georep daemon listening"
        );
        warn_if_open(&config, addr);

        // Every registry is asked once before anything is copied: each
        // problem (credentials, TLS, unreachable) is said once, up front.
        let health = Arc::new(HealthBook::default());
        let probe = Probe {
            registries: engine.registries().cloned().collect(),
            book: health.clone(),
        };
        let first = tokio::time::timeout(FIRST_PROBE_WAIT, probe.activate()).await;
        if first.is_err() {
            tracing::warn!(
                "the registries did not all answer within {} s; starting anyway",
                FIRST_PROBE_WAIT.as_secs()
            );
        }
        let probe = background::spawn(
            probe,
            Some(Period {
                every: PROBE_EVERY,
                at_start: false,
            }),
            signal.clone(),
        );
        if let Some(merge) = &merge {
            match merge.redecide_all() {
                Ok(0) => {}
                Ok(n) => tracing::info!(tags = n, "decided again the tags not yet agreed"),
                Err(e) => tracing::warn!("deciding the tags not yet agreed failed: {e:#}"),
            }
        }
        if let Some(c) = &cluster {
            if c.joined(FIRST_PROBE_WAIT).await {
                tracing::info!(members = c.members().len(), "a cluster member");
            } else {
                tracing::error!(
                    "not a cluster member yet ({}): copying nothing until etcd answers",
                    c.trouble().unwrap_or_default()
                );
            }
        }
        let workers = Arc::new(
            Workers::new(
                config.clone(),
                engine.clone(),
                metrics.clone(),
                doorbell,
                notifier.clone(),
                health.clone(),
                merge.clone(),
            )
            .with_cluster(cluster.clone()),
        );
        if config.daemon.poll_interval.is_none() {
            tracing::info!(
                "polling is off (poll_interval_secs: 0): only notifications bring changes"
            );
        }
        if config.daemon.audit_interval.is_none() {
            tracing::info!("audits are off (audit_interval_secs: 0)");
        }
        let reconcile_task = Reconcile {
            engine: engine.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            filter: config.repositories.clone(),
            merge: merge.clone(),
        };
        // A cluster member's first reconcile is its handover's, once it
        // knows its share.
        let reconcile = Arc::new(background::spawn(
            reconcile_task.clone(),
            config.daemon.poll_interval.map(|every| Period {
                every,
                at_start: cluster.is_none(),
            }),
            signal.clone(),
        ));
        let audit_task = Audit {
            engine: engine.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            filter: config.repositories.clone(),
        };
        // In a cluster the leader keeps the audit's schedule ([`lead`]).
        let audit = Arc::new(background::spawn(
            audit_task.clone(),
            config
                .daemon
                .audit_interval
                .filter(|_| cluster.is_none())
                .map(|every| Period {
                    every,
                    at_start: false,
                }),
            signal.clone(),
        ));
        let schedule = cluster.as_ref().map(|c| {
            background::spawn(
                lead::AuditSchedule {
                    cluster: c.clone(),
                    audit_task: audit.clone(),
                    http: reqwest::Client::builder()
                        .user_agent(crate::http::USER_AGENT)
                        .build()
                        .unwrap_or_default(),
                    api_auth: config.daemon.api_auth.clone(),
                },
                config.daemon.audit_interval.map(|every| Period {
                    every,
                    at_start: false,
                }),
                signal.clone(),
            )
        });
        let handover = cluster.as_ref().map(|c| {
            tokio::spawn(
                handover::Handover {
                    cluster: c.clone(),
                    store: engine.store().clone(),
                    in_flight: workers.in_flight(),
                    reconcile: reconcile_task.clone(),
                    reconcile_task: reconcile.clone(),
                }
                .run(signal.clone()),
            )
        });
        let steering = Arc::new(steer::Steering {
            regions: config.regions.iter().map(|r| r.name.clone()).collect(),
            reconcile: reconcile_task,
            reconcile_task: reconcile.clone(),
            audit: audit_task,
            audit_task: audit.clone(),
            intake: intake.clone(),
        });
        let forget = background::spawn(
            ForgetEvents(engine.store().clone()),
            Some(Period {
                every: FORGET_EVERY,
                at_start: true,
            }),
            signal.clone(),
        );
        let sources = status::Sources {
            config: config.clone(),
            engine: engine.clone(),
            in_flight: workers.in_flight(),
            metrics: metrics.clone(),
            reconcile: reconcile.clone(),
            audit: audit.clone(),
            notifier: notifier.clone(),
            health: health.clone(),
            cluster: cluster.clone(),
            counted: Default::default(),
        };
        let api = {
            let signal = signal.clone();
            let state = ApiState::new(
                &config.daemon,
                intake,
                metrics.clone(),
                Arc::new(move |detail| sources.view(detail)),
                engine.store().clone(),
                engine.primary().cloned(),
                crate::api::Door::all(&config),
                steering,
            )
            .with_cluster(cluster.clone());
            let app = crate::api::router(Arc::new(state));
            tokio::spawn(crate::api::serve::serve(
                listener,
                app,
                crate::api::serve::Limits::default(),
                signal,
            ))
        };
        let workers = tokio::spawn(workers::run(workers, signal.clone()));
        let notifier = notifier.spawn(signal.clone());

        stop.await;
        tracing::info!(
            grace_secs = config.daemon.shutdown_grace.as_secs(),
            "shutting down: no new work; letting in-flight copies finish"
        );
        trigger.fire();
        reconcile.stop().await;
        audit.stop().await;
        if let Some(s) = &schedule {
            s.stop().await;
        }
        if let Some(h) = handover {
            h.abort();
        }
        probe.stop().await;
        forget.stop().await;
        match api.await {
            Ok(()) => {}
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::warn!("the HTTP API task failed: {e}"),
        }
        if let Err(e) = workers.await {
            tracing::warn!("the workers ended abnormally: {e}");
        }
        // Nothing is copied any more: the membership ends (the lease is
        // revoked, and the share moves at once).
        if let (Some(t), Some(c)) = (cluster_stop, &cluster) {
            t.fire();
            c.membership().left(Duration::from_secs(3)).await;
        }
        // Notifications being posted get a moment, not the whole grace;
        // the rest wait in the store's outbox for the next start.
        let _ = tokio::time::timeout(Duration::from_secs(2), notifier).await;
        engine
            .store()
            .flush()
            .await
            .context("flushing the state store on shutdown")?;
        tracing::info!("georep daemon stopped");
        Ok(())
    }
}

/// A daemon listening beyond loopback warns about what it leaves open.
fn warn_if_open(config: &Config, addr: SocketAddr) {
    if addr.ip().is_loopback() {
        return;
    }
    let d = &config.daemon;
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
