//! Outgoing notifications: when an image pushed to the primary is complete
//! in a region (`replicated`) and in every region (`complete`), POST a JSON
//! event to each configured URL, with retries, so a team can post to a chat
//! channel or gate a rollout on it.
//!
//! Notifications wait in a bounded in-memory queue and are sent by one
//! task, a few at a time. They are not durable: if the queue is full or
//! the daemon stops, some are dropped (and counted); `georep wait` is the
//! gate that never misses, because it asks the registries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{Config, NotifyTarget};
use crate::lock::Locked;
use crate::metrics::Metrics;
use crate::registry::retry::Backoff;
use crate::shutdown::Signal;
use crate::store::queue::Queued;

/// Notifications waiting to be sent, at most.
const QUEUE: usize = 1024;
/// Sent at once.
const CONCURRENCY: usize = 8;
/// Tries per notification and target.
const ATTEMPTS: u32 = 5;

/// The JSON body posted.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// `replicated` or `complete`.
    pub event: &'static str,
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    /// The region, for `replicated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Every region, for `complete`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// From the primary's event time to now.
    pub latency_secs: f64,
    /// When georep sent it (RFC 3339).
    pub timestamp: String,
}

impl Notification {
    fn new(event: &'static str, q: &Queued, latency_secs: f64) -> Notification {
        let tag = (q.reference != q.item.digest.as_str()).then(|| q.reference.clone());
        Notification {
            event,
            repository: q.repository.clone(),
            tag,
            digest: q.item.digest.as_str().to_owned(),
            region: None,
            regions: Vec::new(),
            latency_secs,
            timestamp: jiff::Timestamp::now().to_string(),
        }
    }

    /// `q` is in `region`.
    pub fn replicated(region: &str, q: &Queued, latency_secs: f64) -> Notification {
        Notification {
            region: Some(region.to_owned()),
            ..Notification::new("replicated", q, latency_secs)
        }
    }

    /// `q` is in every one of `regions`.
    pub fn complete(regions: Vec<String>, q: &Queued, latency_secs: f64) -> Notification {
        Notification {
            regions,
            ..Notification::new("complete", q, latency_secs)
        }
    }
}

pub struct Notifier {
    targets: Vec<NotifyTarget>,
    tx: mpsc::Sender<Notification>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Notification>>>,
}

impl Notifier {
    pub fn new(config: &Config) -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE);
        Notifier {
            targets: config.daemon.notify.clone(),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Queues `n` for every target that wants it; never waits.
    pub fn send(&self, n: Notification) {
        let wanted = self.targets.iter().any(|t| wants(t, n.event));
        if wanted && self.tx.try_send(n).is_err() {
            tracing::warn!("outgoing notification queue full: dropping one");
        }
    }

    /// Starts the sender task (once).
    pub fn spawn(
        self: &Arc<Self>,
        metrics: Arc<Metrics>,
        mut stop: Signal,
    ) -> tokio::task::JoinHandle<()> {
        let rx = self.rx.locked().take();
        let notifier = self.clone();
        tokio::spawn(async move {
            let Some(rx) = rx else { return };
            let http = reqwest::Client::new();
            let stream =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|n| (n, rx)) },
                );
            let sending = stream
                .map(|n| {
                    let notifier = notifier.clone();
                    let metrics = metrics.clone();
                    let http = http.clone();
                    async move {
                        for t in &notifier.targets {
                            if wants(t, n.event) {
                                deliver(&metrics, &http, t, &n).await;
                            }
                        }
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .for_each(|()| async {});
            tokio::select! {
                _ = sending => {}
                _ = stop.wait() => {}
            }
        })
    }
}

/// Whether target `t` asked for notifications of kind `event`.
fn wants(t: &NotifyTarget, event: &str) -> bool {
    match event {
        "replicated" => t.on_replicated,
        _ => t.on_complete,
    }
}

async fn deliver(metrics: &Metrics, http: &reqwest::Client, t: &NotifyTarget, n: &Notification) {
    let backoff = Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(30),
        max_attempts: ATTEMPTS,
    };
    for attempt in 1..=ATTEMPTS {
        let mut req = http.post(t.url.clone()).timeout(t.timeout).json(n);
        if let Some(token) = &t.bearer_token {
            req = req.bearer_auth(token.expose());
        }
        let failure = match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                metrics.notifications_sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(resp) if resp.status().is_client_error() && resp.status() != 429 => {
                tracing::warn!(url = %t.url, status = %resp.status(), "notification refused; not retried");
                metrics.notifications_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(e) => format!("{e}"),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(url = %t.url, attempts = ATTEMPTS, "notification not delivered: {failure}");
            metrics.notifications_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tracing::debug!(url = %t.url, attempt, "notification failed, will retry: {failure}");
        tokio::time::sleep(backoff.delay(attempt, None)).await;
    }
}
