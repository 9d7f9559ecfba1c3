//! Several georep instances sharing the work through etcd: etcd's v3 API
//! through its JSON gateway ([`etcd`]), who is a member ([`membership`]),
//! which member owns a repository ([`ring`]), and [`Cluster`], what the
//! rest of the daemon asks: may this instance work on that repository now?
//!
//! Without a `cluster:` section there is no [`Cluster`] and one instance
//! owns everything, as before.

pub mod etcd;
pub mod membership;
pub mod ring;

use std::time::Duration;

use membership::{Member, Membership, Settings, Standing};

use crate::shutdown::Signal;

/// This instance's place in the cluster.
pub struct Cluster {
    membership: Membership,
}

impl Cluster {
    /// Joins (without waiting for etcd: see [`Membership::join`]).
    pub fn join(settings: Settings, stop: Signal) -> Cluster {
        Cluster {
            membership: Membership::join(settings, stop),
        }
    }

    /// Waits (at most `limit`) until this instance is a member.
    pub async fn joined(&self, limit: Duration) -> bool {
        self.membership.joined(limit).await
    }

    pub fn id(&self) -> &str {
        self.membership.instance_id()
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn members(&self) -> Vec<Member> {
        self.membership.members()
    }

    /// The ids of `members`, in order.
    pub fn ids(members: &[Member]) -> Vec<String> {
        members.iter().map(|m| m.id.clone()).collect()
    }

    /// The live member that owns `repository` (`None` while no member is
    /// known).
    pub fn owner(&self, repository: &str) -> Option<Member> {
        let members = self.members();
        let ids = Cluster::ids(&members);
        let id = ring::owner(repository, &ids)?.to_owned();
        members.into_iter().find(|m| m.id == id)
    }

    /// Whether `repository` is this instance's by the member set it sees.
    pub fn owns(&self, repository: &str) -> bool {
        let ids = Cluster::ids(&self.members());
        ring::owner(repository, &ids) == Some(self.id())
    }

    /// Whether this instance may start work now, for many repositories at
    /// one moment (a dispatch round): the member set and the lease read
    /// once. See [`Snapshot::may_start`].
    pub fn snapshot(&self) -> Snapshot {
        let open = !self.membership.fenced() && self.membership.settled();
        Snapshot {
            me: self.id().to_owned(),
            ids: Cluster::ids(&self.members()),
            open,
        }
    }

    pub fn fenced(&self) -> bool {
        self.membership.fenced()
    }

    pub fn leads(&self) -> bool {
        self.membership.leads()
    }

    pub fn standing(&self) -> Standing {
        self.membership.standing()
    }

    /// Why this instance is not ready, if it is not: no lease, etcd
    /// trouble, or fenced.
    pub fn trouble(&self) -> Option<String> {
        let s = self.standing();
        if let Some(p) = s.problem {
            return Some(format!("cluster: {p}"));
        }
        if self.membership.fenced() {
            return Some(
                "cluster: the lease is not confirmed; this instance writes nothing".to_owned(),
            );
        }
        None
    }

    /// Follows the member set (and the members' views) and the fence.
    pub fn watch(&self) -> ClusterWatch {
        ClusterWatch {
            members: self.membership.subscribe(),
            fence: self.membership.fence_changes(),
        }
    }
}

/// The cluster as one dispatch round sees it.
pub struct Snapshot {
    me: String,
    ids: Vec<String>,
    /// The lease is firm and every member took in the member set.
    pub open: bool,
}

impl Snapshot {
    /// Whether `repository` may be started on: this instance owns it, holds
    /// its lease firmly (not fenced), and every live member has taken in
    /// the current member set (so the one that owned it before has let
    /// go).
    pub fn may_start(&self, repository: &str) -> bool {
        self.open && ring::owner(repository, &self.ids) == Some(self.me.as_str())
    }
}

/// Changes of the cluster as one instance sees them.
pub struct ClusterWatch {
    members: tokio::sync::watch::Receiver<Vec<Member>>,
    fence: tokio::sync::watch::Receiver<bool>,
}

impl ClusterWatch {
    /// Resolves at the next change of the member set (or a member's view)
    /// or of the fence, since the last call. Never, once the membership
    /// stopped.
    pub async fn changed(&mut self) {
        tokio::select! {
            r = self.members.changed() => if r.is_err() { std::future::pending::<()>().await },
            r = self.fence.changed() => if r.is_err() { std::future::pending::<()>().await },
        }
    }
}

/// Asks etcd (as `settings` would) for the live members: whether etcd
/// answers with these endpoints and credentials (`check-config --connect`).
pub async fn probe(settings: &Settings) -> Result<Vec<Member>, String> {
    membership::live_members(settings)
        .await
        .map_err(|e| e.to_string())
}

impl Settings {
    /// The settings a `cluster:` section gives.
    pub fn from_config(c: &crate::config::ClusterConfig) -> Settings {
        Settings {
            endpoints: c.endpoints.clone(),
            prefix: c.prefix.clone(),
            instance_id: c.instance_id.clone(),
            advertise_url: c.advertise_url.clone(),
            lease_ttl: c.lease_ttl,
            auth: c.username.clone().map(|username| etcd::EtcdAuth {
                username,
                password: c
                    .password
                    .clone()
                    .unwrap_or_else(|| crate::config::Secret::new("")),
            }),
            tls: c.tls.clone(),
        }
    }
}
