//! Membership through etcd: an instance holds a lease, keeps it alive, and
//! writes its member key under it (`<prefix>/members/<instance_id>`, the
//! value says how to reach it). Every instance watches the member keys, so
//! each knows the live set; a member whose lease expires (kill -9, a long
//! pause, a partition) leaves the set by itself.
//!
//! Fencing: the lease is the instance's right to write. [`Membership::fenced`]
//! turns true once the last renewal etcd confirmed is older than
//! [`FENCE_AT`] of the TTL — before the lease can have expired on etcd's
//! side — so an instance that cannot renew stops moving tags while no other
//! can yet have taken its share.
//!
//! etcd trouble does not end anything: the loops reconnect, grant a new
//! lease when the old one is gone, and write the member key again; the
//! member set re-forms without an operator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::etcd::{Etcd, EtcdError, Event};
use crate::lock::Locked;
use crate::shutdown::Signal;

/// Fenced once this much of the TTL passed without a confirmed renewal.
pub const FENCE_AT: f64 = 2.0 / 3.0;
/// Pause between attempts while etcd cannot be reached.
const RETRY: Duration = Duration::from_millis(500);
/// Time allowed to connect to etcd and for each request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How to take part.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `host:port` or `http://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Every key georep writes starts with this (`/georep`).
    pub prefix: String,
    /// Unique among the instances.
    pub instance_id: String,
    /// Where the other instances reach this one's API.
    pub advertise_url: String,
    /// The lease's time to live.
    pub lease_ttl: Duration,
}

/// A live member, as its key says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub advertise_url: String,
}

/// How this instance's membership stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// etcd answered the last request.
    pub etcd_reachable: bool,
    /// The lease this instance holds, when it holds one.
    pub lease: Option<i64>,
    /// The last problem with etcd, while it lasts.
    pub problem: Option<String>,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
#[error("joining the cluster: {0}")]
pub struct ClusterError(#[from] EtcdError);

struct Shared {
    /// When etcd last confirmed the lease (a grant or a keep-alive answer).
    renewed: Option<Instant>,
    standing: Standing,
}

/// This instance's membership: the live members, and whether it may write.
pub struct Membership {
    settings: Settings,
    members: watch::Receiver<Vec<Member>>,
    shared: Arc<Mutex<Shared>>,
}

impl Membership {
    /// Joins (connects, takes a lease, writes the member key) and keeps the
    /// membership up until `stop`. Fails only when etcd cannot be reached
    /// at all at start: that is the operator's to fix.
    pub async fn join(settings: Settings, stop: Signal) -> Result<Membership, ClusterError> {
        let http = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        // A watch is a long-lived stream: no overall time limit there.
        let streaming = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        let client = Etcd::new(&settings.endpoints, http);
        let watcher = Etcd::new(&settings.endpoints, streaming);
        let sent = Instant::now();
        let lease = grant(&client, &settings).await?;
        let shared = Arc::new(Mutex::new(Shared {
            renewed: Some(sent),
            standing: Standing {
                etcd_reachable: true,
                lease: Some(lease),
                problem: None,
            },
        }));
        let initial = list(&client, &settings).await?;
        let (tx, rx) = watch::channel(initial.1);
        tokio::spawn(keep_alive(
            settings.clone(),
            client.clone(),
            lease,
            shared.clone(),
            stop.clone(),
        ));
        tokio::spawn(follow(
            settings.clone(),
            client,
            watcher,
            initial.0,
            tx,
            stop,
        ));
        Ok(Membership {
            settings,
            members: rx,
            shared,
        })
    }

    /// The live members, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().clone()
    }

    /// The member set as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    pub fn instance_id(&self) -> &str {
        &self.settings.instance_id
    }

    /// Whether this instance must not move tags now: its lease was not
    /// confirmed for [`FENCE_AT`] of its TTL, so it may be about to expire
    /// and its share to go to others.
    pub fn fenced(&self) -> bool {
        let limit = self.settings.lease_ttl.mul_f64(FENCE_AT);
        self.shared
            .locked()
            .renewed
            .is_none_or(|at| at.elapsed() >= limit)
    }

    pub fn standing(&self) -> Standing {
        self.shared.locked().standing.clone()
    }
}

fn member_prefix(settings: &Settings) -> String {
    format!("{}/members/", settings.prefix.trim_end_matches('/'))
}

/// A new lease with the member key written under it.
async fn grant(client: &Etcd, settings: &Settings) -> Result<i64, EtcdError> {
    let lease = client.grant(settings.lease_ttl.as_secs().max(1)).await?;
    let me = Member {
        id: settings.instance_id.clone(),
        advertise_url: settings.advertise_url.clone(),
    };
    let value = serde_json::to_vec(&me).expect("a member serializes");
    client
        .put(
            &format!("{}{}", member_prefix(settings), settings.instance_id),
            &value,
            Some(lease),
        )
        .await?;
    Ok(lease)
}

/// The member keys now, and the revision they were read at.
async fn list(client: &Etcd, settings: &Settings) -> Result<(i64, Vec<Member>), EtcdError> {
    let (revision, kvs) = client.range_prefix(&member_prefix(settings)).await?;
    let mut members: Vec<Member> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((revision, members))
}

/// Renews the lease every third of its TTL; takes a new one when etcd says
/// it is gone; reconnects when etcd cannot be reached.
async fn keep_alive(
    settings: Settings,
    client: Etcd,
    mut lease: i64,
    shared: Arc<Mutex<Shared>>,
    mut stop: Signal,
) {
    let every = settings.lease_ttl / 3;
    let trouble = |why: String| {
        let mut s = shared.locked();
        if s.standing.problem.as_deref() != Some(why.as_str()) {
            tracing::error!(instance = %settings.instance_id, "etcd: {why}; no tag is written once the lease is in doubt");
        }
        s.standing.etcd_reachable = false;
        s.standing.problem = Some(why);
    };
    // The lease's new life counts from when the renewal was sent, not
    // answered: etcd restarted it somewhere in between.
    let confirmed = |lease: i64, sent: Instant| {
        let mut s = shared.locked();
        s.renewed = Some(sent);
        s.standing = Standing {
            etcd_reachable: true,
            lease: Some(lease),
            problem: None,
        };
    };
    loop {
        let sent = Instant::now();
        match client.keep_alive(lease).await {
            Ok(ttl) if ttl > 0 => {
                if shared.locked().standing.problem.is_some() {
                    tracing::info!(instance = %settings.instance_id, "etcd: the lease is renewed again");
                }
                confirmed(lease, sent);
            }
            // The lease is gone (it expired while etcd was away): a new one,
            // and the member key again.
            Ok(_) => match grant(&client, &settings).await {
                Ok(new) => {
                    tracing::warn!(instance = %settings.instance_id, old = lease, new, "etcd: the lease had expired; joined again with a new one");
                    lease = new;
                    confirmed(lease, sent);
                }
                Err(e) => trouble(format!("{e}")),
            },
            Err(e) => trouble(format!("renewing the lease: {e}")),
        }
        let pause = if shared.locked().standing.etcd_reachable {
            every
        } else {
            RETRY
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait() => break,
        }
    }
    // Leaving on purpose: the share moves at once, not after the TTL.
    let _ = client.revoke(lease).await;
}

/// Follows the member keys from `revision` on; lists them again whenever
/// the watch breaks.
async fn follow(
    settings: Settings,
    client: Etcd,
    watcher: Etcd,
    mut revision: i64,
    tx: watch::Sender<Vec<Member>>,
    mut stop: Signal,
) {
    let prefix = member_prefix(&settings);
    loop {
        let watched = async {
            let mut stream = watcher.watch_prefix(&prefix, revision + 1).await?;
            while let Some(events) = stream.next().await? {
                let mut members = tx.borrow().clone();
                for event in events {
                    let (key, put) = match event {
                        Event::Put(kv) => {
                            revision = revision.max(kv.mod_revision);
                            let m = serde_json::from_slice::<Member>(&kv.value).ok();
                            (kv.key, m)
                        }
                        Event::Delete { key, mod_revision } => {
                            revision = revision.max(mod_revision);
                            (key, None)
                        }
                    };
                    let id = key.strip_prefix(prefix.as_str()).unwrap_or("").to_owned();
                    members.retain(|m| m.id != id);
                    members.extend(put);
                }
                members.sort_by(|a, b| a.id.cmp(&b.id));
                tx.send_if_modified(|now| {
                    let changed = *now != members;
                    if changed {
                        tracing::info!(
                            members = %members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(","),
                            "cluster members changed"
                        );
                        *now = members.clone();
                    }
                    changed
                });
            }
            Ok::<_, EtcdError>(())
        };
        tokio::select! {
            result = watched => {
                if let Err(e) = result {
                    tracing::debug!("etcd: watching the members broke: {e}");
                }
            }
            _ = stop.wait() => return,
        }
        // Broken or compacted: list again, then watch from there.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.wait() => return,
            }
            if let Ok((rev, members)) = list(&client, &settings).await {
                revision = rev;
                tx.send_if_modified(|now| {
                    let changed = *now != members;
                    if changed {
                        *now = members;
                    }
                    changed
                });
                break;
            }
        }
    }
}
