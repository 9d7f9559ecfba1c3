//! Membership through a real etcd (Debian's `etcd-server` 3.4, started by
//! the test): instances see each other, one that dies without leaving
//! leaves by its lease, an instance that cannot renew is fenced before its
//! lease can expire, and the set re-forms when etcd returns.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::wait_for;
use georep::cluster::membership::{Membership, Settings};
use georep::cluster::ring;

/// An etcd process on loopback, killed when dropped.
struct Etcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<tokio::process::Child>,
}

impl Etcd {
    async fn start(dir: &Path) -> Etcd {
        let mut etcd = Etcd {
            dir: dir.to_owned(),
            client_port: georep::lab::localreg::free_port().unwrap(),
            peer_port: georep::lab::localreg::free_port().unwrap(),
            child: None,
        };
        etcd.spawn().await;
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = tokio::process::Command::new("etcd")
            .args([
                "--name",
                "test",
                "--data-dir",
                self.dir.join("data").to_str().unwrap(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("test={peer}"),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("etcd runs (Debian package etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{client}/health");
        loop {
            if let Ok(r) = reqwest::get(&health).await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

fn settings(etcd: &Etcd, id: &str, ttl_secs: u64) -> Settings {
    Settings {
        endpoints: vec![etcd.endpoint()],
        prefix: "/georep-test".to_owned(),
        instance_id: id.to_owned(),
        advertise_url: format!("http://{id}.example:9090"),
        lease_ttl: Duration::from_secs(ttl_secs),
    }
}

fn ids(m: &Membership) -> Vec<String> {
    m.members().into_iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_and_a_dead_one_leaves_by_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let (stop_a, sig_a) = georep::shutdown::channel();
    let a = Membership::join(settings(&etcd, "a", 2), sig_a)
        .await
        .unwrap();
    let (stop_b, sig_b) = georep::shutdown::channel();
    let b = Membership::join(settings(&etcd, "b", 2), sig_b)
        .await
        .unwrap();
    wait_for("both see both", Duration::from_secs(5), async || {
        ids(&a) == ["a", "b"] && ids(&b) == ["a", "b"]
    })
    .await;
    assert_eq!(a.members()[1].advertise_url, "http://b.example:9090");
    assert!(!a.fenced() && !b.fenced());
    // Both compute the same owner for every repository.
    let members = ids(&a);
    for k in 0..50 {
        let repo = format!("team/app-{k}");
        assert_eq!(ring::owner(&repo, &members), ring::owner(&repo, &ids(&b)));
    }

    // A member that stops renewing (as after kill -9): its key lives only
    // as long as its lease.
    let raw = georep::cluster::etcd::Etcd::new(&[etcd.endpoint()], reqwest::Client::new());
    let lease = raw.grant(2).await.unwrap();
    raw.put(
        "/georep-test/members/z",
        br#"{"id":"z","advertise_url":"http://z.example:9090"}"#,
        Some(lease),
    )
    .await
    .unwrap();
    wait_for("z seen", Duration::from_secs(5), async || {
        ids(&a).len() == 3
    })
    .await;
    let seen = Instant::now();
    wait_for(
        "z gone with its lease",
        Duration::from_secs(10),
        async || !ids(&a).contains(&"z".to_owned()),
    )
    .await;
    assert!(
        seen.elapsed() >= Duration::from_secs(1),
        "{:?}",
        seen.elapsed()
    );
    // A clean stop revokes: b leaves at once.
    stop_b.fire();
    wait_for("b gone at once", Duration::from_secs(2), async || {
        !ids(&a).contains(&"b".to_owned())
    })
    .await;
    drop(stop_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_an_instance_is_fenced_before_its_lease_expires_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path()).await;
    let (_stop, sig) = georep::shutdown::channel();
    let a = Membership::join(settings(&etcd, "a", 3), sig)
        .await
        .unwrap();
    assert!(!a.fenced());
    etcd.stop().await;
    let stopped = Instant::now();
    wait_for("fenced", Duration::from_secs(5), async || a.fenced()).await;
    // Before the lease could have expired (3 s).
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    assert!(!a.standing().etcd_reachable);
    // etcd back (same data): the instance renews or joins again, and is
    // a member again without anyone's help.
    etcd.spawn().await;
    wait_for("rejoined", Duration::from_secs(15), async || {
        !a.fenced() && ids(&a) == ["a"]
    })
    .await;
    assert!(a.standing().etcd_reachable);
}
