//! Outgoing notifications: when an image pushed to the primary is complete
//! in a region (`replicated`) and in every region (`complete`), when a
//! delete was carried out everywhere (`deleted`), and when an item is
//! parked (`failed`), POST an event to each configured target that wants
//! it (its `events` and `scope`), in the target's `format`.
//!
//! A notification is written to the store's outbox first ([`Notifier::send`]
//! never waits on the network), one entry per target, and a sender task
//! delivers the outbox with retries and backoff, across restarts. The
//! outbox is bounded: when full, the oldest entries are dropped and counted
//! per target. `georep wait` stays the gate that never misses, because it
//! asks the registries.

mod body;
mod deliver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub use body::{Notification, render};
pub use deliver::{Delivery, post};

use crate::config::{Config, NotifyTarget};
use crate::lock::Locked;
use crate::store::outbox::Pending;
use crate::store::{Store, format_unix_ms, now_unix_ms};

/// Notifications waiting in the store's outbox, at most (all targets).
pub const OUTBOX_LIMIT: usize = 10_000;

/// A target's delivery figures since the daemon started, and what waits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    pub name: String,
    /// The URL without credentials or query.
    pub url: String,
    pub events: Vec<String>,
    pub format: String,
    /// Waiting in the outbox (retries included).
    pub pending: usize,
    pub sent: u64,
    /// Given up on (refused, or still failing after every retry).
    pub failed: u64,
    /// Dropped unsent because the outbox was full.
    pub dropped: u64,
    pub last_failure: Option<String>,
    /// RFC 3339.
    pub last_failure_at: Option<String>,
}

/// One target's counters.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_failure: std::sync::Mutex<Option<(String, u64)>>,
}

pub struct Notifier {
    targets: Vec<NotifyTarget>,
    counts: Vec<Counts>,
    store: Arc<Store>,
    /// Rung when something was queued.
    wake: tokio::sync::Notify,
}

impl Notifier {
    pub fn new(config: &Config, store: Arc<Store>) -> Notifier {
        let targets = config.daemon.notify.clone();
        Notifier {
            counts: targets.iter().map(|_| Counts::default()).collect(),
            targets,
            store,
            wake: tokio::sync::Notify::new(),
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }

    /// Queues `n` for every target that wants it; never waits on the
    /// network.
    pub fn send(&self, n: &Notification) {
        let mut queued = false;
        for t in &self.targets {
            if !t.wants(n.event, &n.repository, n.tag.as_deref()) {
                continue;
            }
            let pending = Pending {
                target: t.name.clone(),
                event: n.event.as_str().to_owned(),
                body: render(n, t.format),
                attempts: 0,
                not_before_ms: 0,
                queued_ms: now_unix_ms(),
            };
            match self.store.outbox_push(&pending, OUTBOX_LIMIT) {
                Ok(dropped) => {
                    queued = true;
                    for d in dropped {
                        self.dropped(&d);
                    }
                }
                Err(e) => {
                    tracing::warn!(target = %t.name, "a {} notification could not be queued: {e:#}", n.event.as_str());
                    self.failure(self.index(&t.name), format!("could not be queued: {e}"));
                }
            }
        }
        if queued {
            self.wake.notify_one();
        }
    }

    fn dropped(&self, p: &Pending) {
        tracing::warn!(
            target = %p.target,
            limit = OUTBOX_LIMIT,
            "notification outbox full: dropped the oldest ({})",
            p.event
        );
        if let Some(i) = self.index(&p.target) {
            self.counts[i].dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn failure(&self, i: Option<usize>, message: String) {
        if let Some(i) = i {
            self.counts[i].failed.fetch_add(1, Ordering::Relaxed);
            *self.counts[i].last_failure.locked() = Some((message, now_unix_ms()));
        }
    }

    /// Every target's figures, for the status.
    pub fn view(&self) -> Vec<TargetView> {
        let pending: BTreeMap<String, usize> = if self.targets.is_empty() {
            BTreeMap::new()
        } else {
            self.store.outbox_pending()
        };
        self.targets
            .iter()
            .zip(&self.counts)
            .map(|(t, c)| {
                let last = c.last_failure.locked().clone();
                TargetView {
                    name: t.name.clone(),
                    url: display_url(&t.url),
                    events: t.events.iter().map(|e| e.as_str().to_owned()).collect(),
                    format: format!("{:?}", t.format).to_lowercase(),
                    pending: pending.get(&t.name).copied().unwrap_or(0),
                    sent: c.sent.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    last_failure_at: last.as_ref().map(|(_, at)| format_unix_ms(*at)),
                    last_failure: last.map(|(m, _)| m),
                }
            })
            .collect()
    }

    /// Starts the sender task. Entries left by targets no longer in the
    /// config are dropped (said once).
    pub fn spawn(self: &Arc<Self>, stop: crate::shutdown::Signal) -> tokio::task::JoinHandle<()> {
        let notifier = self.clone();
        tokio::spawn(deliver::run(notifier, stop))
    }
}

/// `scheme://host[:port]/path`, without credentials or query.
pub fn display_url(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}
