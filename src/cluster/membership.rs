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
//! Handover: each member's key also says which member set it has taken in
//! (`view`): it writes the set back once it let go of what it no longer
//! owns. A member set is [`Membership::settled`] when every live member's
//! key names it; only then does a member start on repositories it gained
//! from a member that is still alive, so two never copy the same one.
//!
//! Leadership: every renewal also tries to create `<prefix>/leader` under
//! the lease (etcd's election by create revision); who holds it is the
//! leader until its lease ends.
//!
//! etcd trouble does not end anything: joining does not wait for etcd, the
//! loops reconnect, grant a new lease when the old one is gone, and write
//! the member key again; the member set re-forms without an operator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::etcd::{Etcd, EtcdAuth, EtcdError, Event};
use crate::lock::Locked;
use crate::shutdown::Signal;

/// Fenced once this much of the TTL passed without a confirmed renewal.
pub const FENCE_AT: f64 = 2.0 / 3.0;
/// Pause between attempts while etcd cannot be reached.
const RETRY: Duration = Duration::from_millis(500);
/// Time allowed to connect to etcd and for each request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the fence is looked at.
const FENCE_TICK: Duration = Duration::from_millis(50);

/// How to take part.
#[derive(Clone)]
pub struct Settings {
    /// `host:port` or `http(s)://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Every key georep writes starts with this (`/georep`).
    pub prefix: String,
    /// Unique among the instances.
    pub instance_id: String,
    /// Where the other instances reach this one's API.
    pub advertise_url: String,
    /// The lease's time to live.
    pub lease_ttl: Duration,
    /// etcd's user, when etcd has authentication on.
    pub auth: Option<EtcdAuth>,
    /// TLS material for `https` endpoints.
    pub tls: crate::config::Tls,
}

/// A live member, as its key says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub advertise_url: String,
    /// The member ids whose set this member has taken in.
    #[serde(default)]
    pub view: Vec<String>,
}

/// How this instance's membership stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// etcd answered the last request.
    pub etcd_reachable: bool,
    /// The lease this instance holds, when it holds one.
    pub lease: Option<i64>,
    /// The member that holds the leader key, as last read.
    pub leader: Option<String>,
    /// The last problem with etcd, while it lasts.
    pub problem: Option<String>,
}

struct Shared {
    /// When etcd last confirmed the lease (a grant or a keep-alive answer).
    renewed: Option<Instant>,
    standing: Standing,
    /// The member set this instance has taken in, and whether its key says
    /// so yet.
    view: Vec<String>,
    view_written: bool,
}

/// This instance's membership: the live members, and whether it may write.
pub struct Membership {
    settings: Settings,
    members: watch::Receiver<Vec<Member>>,
    fenced: watch::Receiver<bool>,
    shared: Arc<Mutex<Shared>>,
    /// Wakes the lease loop to write the member key again.
    rewrite: Arc<Notify>,
    /// Turns true once the lease loop ended (the lease revoked).
    left: watch::Receiver<bool>,
}

impl Membership {
    /// Joins and keeps the membership up until `stop`. Does not wait for
    /// etcd: until it answers, the instance has no lease, is fenced, and
    /// says why in [`Membership::standing`].
    pub fn join(settings: Settings, stop: Signal) -> Membership {
        let (http, streaming) = clients(&settings);
        let client = Etcd::new(&settings.endpoints, http).with_auth(settings.auth.clone());
        let watcher = Etcd::new(&settings.endpoints, streaming).with_auth(settings.auth.clone());
        let shared = Arc::new(Mutex::new(Shared {
            renewed: None,
            standing: Standing {
                problem: Some("not joined yet".to_owned()),
                ..Standing::default()
            },
            view: Vec::new(),
            view_written: false,
        }));
        let (members_tx, members) = watch::channel(Vec::new());
        let (fenced_tx, fenced) = watch::channel(true);
        let rewrite = Arc::new(Notify::new());
        let (left_tx, left) = watch::channel(false);
        let lease_loop = keep_alive(
            settings.clone(),
            client.clone(),
            shared.clone(),
            rewrite.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            lease_loop.await;
            let _ = left_tx.send(true);
        });
        tokio::spawn(follow(
            settings.clone(),
            client,
            watcher,
            members_tx,
            stop.clone(),
        ));
        tokio::spawn(fence_clock(
            settings.lease_ttl.mul_f64(FENCE_AT),
            shared.clone(),
            fenced_tx,
            stop,
        ));
        Membership {
            settings,
            members,
            fenced,
            shared,
            rewrite,
            left,
        }
    }

    /// Waits (at most `limit`) until the membership ended after its stop
    /// signal: the lease is revoked, so the share moves at once.
    pub async fn left(&self, limit: Duration) {
        let mut left = self.left.clone();
        let _ = tokio::time::timeout(limit, left.wait_for(|l| *l)).await;
    }

    /// Waits until this instance holds a lease and has read the members
    /// (at most `limit`); whether it does.
    pub async fn joined(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.shared.locked().standing.lease.is_some()
                && self
                    .members()
                    .iter()
                    .any(|m| m.id == self.settings.instance_id)
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The live members, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().clone()
    }

    /// The member set as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    /// The fence as it changes (`true`: fenced).
    pub fn fence_changes(&self) -> watch::Receiver<bool> {
        self.fenced.clone()
    }

    pub fn instance_id(&self) -> &str {
        &self.settings.instance_id
    }

    /// Whether this instance must not write now: its lease was not
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

    /// Whether this instance leads (holds the leader key, not fenced).
    pub fn leads(&self) -> bool {
        !self.fenced()
            && self.shared.locked().standing.leader.as_deref()
                == Some(self.settings.instance_id.as_str())
    }

    /// Says (in this member's key) that this instance has taken in the
    /// member set `ids`: it no longer works on what that set gives others.
    pub fn acknowledge(&self, ids: Vec<String>) {
        let mut s = self.shared.locked();
        if s.view != ids {
            s.view = ids;
            s.view_written = false;
            drop(s);
            self.rewrite.notify_one();
        }
    }

    /// Whether every live member, this one included, has taken in the
    /// member set as this instance sees it now.
    pub fn settled(&self) -> bool {
        let members = self.members.borrow();
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        members
            .iter()
            .all(|m| m.view.iter().map(String::as_str).eq(ids.iter().copied()))
    }
}

/// The live members as etcd has them now (one request).
pub async fn live_members(settings: &Settings) -> Result<Vec<Member>, EtcdError> {
    let (http, _) = clients(settings);
    let client = Etcd::new(&settings.endpoints, http).with_auth(settings.auth.clone());
    list(&client, settings).await.map(|(_, m)| m)
}

/// The client for requests (with a time limit) and the one for watches (a
/// long-lived stream: no overall limit).
fn clients(settings: &Settings) -> (reqwest::Client, reqwest::Client) {
    let build = |limit: bool| {
        let mut b = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(crate::http::USER_AGENT);
        if limit {
            b = b.timeout(REQUEST_TIMEOUT);
        }
        if let Some(pem) = &settings.tls.ca_pem
            && let Ok(certs) = reqwest::Certificate::from_pem_bundle(pem)
        {
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(pem) = &settings.tls.identity_pem
            && let Ok(id) = reqwest::Identity::from_pem(pem.expose().as_bytes())
        {
            b = b.identity(id);
        }
        // The material was checked when the config loaded.
        b.build().unwrap_or_default()
    };
    (build(true), build(false))
}

fn member_prefix(settings: &Settings) -> String {
    format!("{}/members/", settings.prefix.trim_end_matches('/'))
}

fn leader_key(settings: &Settings) -> String {
    format!("{}/leader", settings.prefix.trim_end_matches('/'))
}

/// Writes this instance's member key under `lease`, with `view`.
async fn write_member(
    client: &Etcd,
    settings: &Settings,
    lease: i64,
    view: Vec<String>,
) -> Result<(), EtcdError> {
    let me = Member {
        id: settings.instance_id.clone(),
        advertise_url: settings.advertise_url.clone(),
        view,
    };
    let value = serde_json::to_vec(&me).expect("a member serializes");
    client
        .put(
            &format!("{}{}", member_prefix(settings), settings.instance_id),
            &value,
            Some(lease),
        )
        .await
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

/// Takes a lease (and writes the member key), renews it every third of its
/// TTL, takes a new one when etcd says it is gone, reconnects when etcd
/// cannot be reached; after each renewal, stands for leader and writes the
/// member key again when its view changed.
async fn keep_alive(
    settings: Settings,
    client: Etcd,
    shared: Arc<Mutex<Shared>>,
    rewrite: Arc<Notify>,
    mut stop: Signal,
) {
    let every = settings.lease_ttl / 3;
    let id = settings.instance_id.clone();
    let trouble = |why: String| {
        let mut s = shared.locked();
        if s.standing.problem.as_deref() != Some(why.as_str()) {
            tracing::error!(instance = %id, "etcd: {why}; no tag is written while the lease is in doubt");
        }
        s.standing.etcd_reachable = false;
        s.standing.problem = Some(why);
    };
    // The lease's new life counts from when the renewal was sent, not
    // answered: etcd restarted it somewhere in between.
    let confirmed = |lease: i64, sent: Instant| {
        let mut s = shared.locked();
        if s.standing.problem.is_some() && s.standing.lease.is_some() {
            tracing::info!(instance = %id, "etcd: the lease is renewed again");
        }
        s.renewed = Some(sent);
        s.standing.etcd_reachable = true;
        s.standing.lease = Some(lease);
        s.standing.problem = None;
    };
    let mut lease: Option<i64> = None;
    loop {
        let sent = Instant::now();
        // The next renewal is due a third of the TTL after this one was
        // sent, whatever the requests after it (leader, member key) take.
        let next = tokio::time::Instant::from_std(sent) + every;
        let renewed = match lease {
            Some(l) => client.keep_alive(l).await.map(|ttl| (ttl > 0).then_some(l)),
            None => Ok(None),
        };
        match renewed {
            Ok(Some(l)) => confirmed(l, sent),
            // No lease yet, or it is gone (it expired while etcd was away):
            // a new one, and the member key again.
            Ok(None) => {
                let sent = Instant::now();
                let view = shared.locked().view.clone();
                let granted = async {
                    let l = client.grant(settings.lease_ttl.as_secs().max(1)).await?;
                    write_member(&client, &settings, l, view).await?;
                    Ok::<_, EtcdError>(l)
                };
                match granted.await {
                    Ok(new) => {
                        match lease {
                            Some(old) => {
                                tracing::warn!(instance = %id, old, new, "etcd: the lease had expired; joined again with a new one")
                            }
                            None => {
                                tracing::info!(instance = %id, lease = new, "joined the cluster")
                            }
                        }
                        lease = Some(new);
                        shared.locked().view_written = true;
                        confirmed(new, sent);
                    }
                    Err(e) => trouble(format!("{e}")),
                }
            }
            Err(e) => trouble(format!("renewing the lease: {e}")),
        }
        if let Some(l) = lease
            && shared.locked().standing.etcd_reachable
        {
            campaign(&client, &settings, l, &shared).await;
            let (view, written) = {
                let s = shared.locked();
                (s.view.clone(), s.view_written)
            };
            if !written {
                match write_member(&client, &settings, l, view.clone()).await {
                    Ok(()) => {
                        let mut s = shared.locked();
                        s.view_written = s.view == view;
                    }
                    Err(e) => trouble(format!("writing the member key: {e}")),
                }
            }
        }
        let wake = {
            let s = shared.locked();
            if !s.standing.etcd_reachable {
                tokio::time::Instant::now() + RETRY
            } else if !s.view_written {
                tokio::time::Instant::now()
            } else {
                next
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = rewrite.notified() => {}
            _ = stop.wait() => break,
        }
    }
    // Leaving on purpose: the share moves at once, not after the TTL.
    if let Some(l) = lease {
        let _ = client.revoke(l).await;
    }
}

/// Stands for leader: the leader key is created under `lease` unless some
/// member holds it; who holds it is recorded.
async fn campaign(client: &Etcd, settings: &Settings, lease: i64, shared: &Mutex<Shared>) {
    let me = settings.instance_id.as_bytes();
    let leader = match client
        .create_if_absent(&leader_key(settings), me, lease)
        .await
    {
        Ok(None) => Some(settings.instance_id.clone()),
        Ok(Some(holder)) => Some(String::from_utf8_lossy(&holder.value).into_owned()),
        Err(e) => {
            tracing::debug!("etcd: reading the leader key failed: {e}");
            return;
        }
    };
    let mut s = shared.locked();
    if s.standing.leader != leader {
        if leader.as_deref() == Some(settings.instance_id.as_str()) {
            tracing::info!(instance = %settings.instance_id, "this instance leads the cluster (audits, cluster status)");
        }
        s.standing.leader = leader;
    }
}

/// Turns the fence on once `limit` passed since the last confirmed
/// renewal, off when a renewal comes.
async fn fence_clock(
    limit: Duration,
    shared: Arc<Mutex<Shared>>,
    tx: watch::Sender<bool>,
    mut stop: Signal,
) {
    loop {
        let fenced = shared
            .locked()
            .renewed
            .is_none_or(|at| at.elapsed() >= limit);
        tx.send_if_modified(|now| {
            let changed = *now != fenced;
            *now = fenced;
            changed
        });
        tokio::select! {
            _ = tokio::time::sleep(FENCE_TICK) => {}
            _ = stop.wait() => return,
        }
    }
}

/// Publishes `members` when they differ from what subscribers have.
fn publish(tx: &watch::Sender<Vec<Member>>, members: Vec<Member>) {
    tx.send_if_modified(|now| {
        let ids = |m: &[Member]| m.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        if ids(now) != ids(&members) {
            tracing::info!(
                members = %ids(&members).join(","),
                "cluster members changed"
            );
        }
        let changed = *now != members;
        if changed {
            *now = members;
        }
        changed
    });
}

/// Lists the member keys, then follows them from there; lists them again
/// whenever the watch breaks.
async fn follow(
    settings: Settings,
    client: Etcd,
    watcher: Etcd,
    tx: watch::Sender<Vec<Member>>,
    mut stop: Signal,
) {
    let prefix = member_prefix(&settings);
    loop {
        // (Re)list: the state now, and the revision to watch from.
        let mut revision = loop {
            match list(&client, &settings).await {
                Ok((rev, members)) => {
                    publish(&tx, members);
                    break rev;
                }
                Err(e) => tracing::debug!("etcd: listing the members failed: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.wait() => return,
            }
        };
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
                publish(&tx, members);
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
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.wait() => return,
        }
    }
}
