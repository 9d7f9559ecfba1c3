//! Delivering the outbox: a few POSTs at a time, retried with backoff while
//! the target fails for a reason that may pass (a connection, a 5xx, a 429),
//! given up on when it refuses (another 4xx) or after [`ATTEMPTS`] tries.
//! Delivery is at least once: an entry being posted when the daemon stops
//! is posted again at the next start (with the same `id`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::Notifier;
use crate::config::NotifyTarget;
use crate::lock::Locked;
use crate::registry::retry::Backoff;
use crate::shutdown::Signal;
use crate::store::now_unix_ms;
use crate::store::outbox::Pending;

/// Posted at once.
const CONCURRENCY: usize = 8;
/// Entries read from the outbox per round.
const BATCH: usize = 64;
/// Tries per notification and target (about 40 minutes of retrying).
pub const ATTEMPTS: u32 = 15;
/// With nothing due, look again this often anyway.
const IDLE: Duration = Duration::from_secs(30);

/// What became of one POST.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The target refused it (a 4xx other than 429): not tried again.
    Refused(String),
    /// It may work later.
    Failed(String),
}

fn backoff() -> Backoff {
    Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
        max_attempts: ATTEMPTS,
    }
}

/// POSTs `body` to target `t` once.
pub async fn post(http: &reqwest::Client, t: &NotifyTarget, body: &Value) -> Delivery {
    let mut req = http.post(t.url.clone()).timeout(t.timeout).json(body);
    if let Some(token) = &t.bearer_token {
        req = req.bearer_auth(token.expose());
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Delivery::Sent,
        Ok(resp)
            if resp.status().is_client_error()
                && resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS
                && resp.status() != reqwest::StatusCode::REQUEST_TIMEOUT =>
        {
            Delivery::Refused(format!("{} answered HTTP {}", t.url, resp.status()))
        }
        Ok(resp) => Delivery::Failed(format!("{} answered HTTP {}", t.url, resp.status())),
        Err(e) => {
            let cause = crate::registry::error::root_cause(&e);
            Delivery::Failed(if cause.is_empty() {
                format!("posting to {}: {e}", t.url)
            } else {
                format!("posting to {}: {e}: {cause}", t.url)
            })
        }
    }
}

/// Delivers the outbox until `stop`.
pub async fn run(n: Arc<Notifier>, mut stop: Signal) {
    let http = reqwest::Client::new();
    loop {
        if stop.is_set() {
            return;
        }
        let (due, next) = n.store.outbox_due(now_unix_ms(), BATCH);
        if due.is_empty() {
            let pause = next
                .map(|at| Duration::from_millis(at.saturating_sub(now_unix_ms())))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = n.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait() => return,
            }
            continue;
        }
        let round = futures::stream::iter(due)
            .map(|(id, p)| {
                let n = &n;
                let http = &http;
                async move { one(n, http, id, p).await }
            })
            .buffer_unordered(CONCURRENCY)
            .for_each(|()| async {});
        tokio::select! {
            () = round => {}
            _ = stop.wait() => return,
        }
    }
}

/// Delivers outbox entry `id` and records what became of it.
async fn one(n: &Notifier, http: &reqwest::Client, id: u64, mut p: Pending) {
    let done = |what: &str| {
        if let Err(e) = n.store.outbox_remove(id) {
            tracing::warn!(target = %p.target, "removing a {what} notification from the outbox failed: {e:#}");
        }
    };
    let Some(i) = n.index(&p.target) else {
        tracing::info!(target = %p.target, "dropping a {} notification for a target no longer configured", p.event);
        done("stale");
        return;
    };
    let t = &n.targets[i];
    p.attempts = p.attempts.saturating_add(1);
    match post(http, t, &p.body).await {
        Delivery::Sent => {
            n.counts[i].sent.fetch_add(1, Ordering::Relaxed);
            done("delivered");
        }
        Delivery::Refused(why) => {
            tracing::warn!(target = %t.name, event = %p.event, "notification refused; not retried: {why}");
            n.failure(Some(i), why);
            done("refused");
        }
        Delivery::Failed(why) if p.attempts >= ATTEMPTS => {
            tracing::warn!(target = %t.name, event = %p.event, attempts = p.attempts, "notification not delivered, giving up: {why}");
            n.failure(Some(i), why);
            done("undeliverable");
        }
        Delivery::Failed(why) => {
            let wait = backoff().delay(p.attempts, None);
            tracing::debug!(target = %t.name, attempts = p.attempts, retry_in_ms = wait.as_millis() as u64, "notification failed, will retry: {why}");
            *n.counts[i].last_failure.locked() = Some((why, now_unix_ms()));
            p.not_before_ms = now_unix_ms() + wait.as_millis() as u64;
            if let Err(e) = n.store.outbox_retry(id, &p) {
                tracing::warn!(target = %t.name, "recording a notification's retry failed: {e:#}");
            }
        }
    }
}
