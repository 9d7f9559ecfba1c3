//! Membership through a real etcd (Debian's `etcd-server` 3.4, started by
//! the test): instances see each other, one that dies without leaving
//! leaves by its lease, an instance that cannot renew is fenced before its
//! lease can expire, and the set re-forms when etcd returns.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::DaemonProc;
use common::proxy::{Faults, Proxy};
use common::{client, wait_for};
use georep::cluster::membership::{Membership, Settings};
use georep::cluster::ring;
use georep::digest::Digest;
use georep::lab::corpus::push_image;
use georep::lab::etcd::LocalEtcd;
use georep::registry::Scope;

fn settings(etcd: &LocalEtcd, id: &str, ttl_secs: u64) -> Settings {
    Settings {
        endpoints: etcd.endpoints(),
        prefix: "/georep-test".to_owned(),
        instance_id: id.to_owned(),
        advertise_url: format!("http://{id}.example:9090"),
        lease_ttl: Duration::from_secs(ttl_secs),
        auth: None,
        tls: Default::default(),
    }
}

async fn join(
    etcd: &LocalEtcd,
    id: &str,
    ttl_secs: u64,
) -> (georep::shutdown::Trigger, Membership) {
    let (stop, sig) = georep::shutdown::channel();
    let m = Membership::join(settings(etcd, id, ttl_secs), sig);
    assert!(m.joined(Duration::from_secs(5)).await, "{id} joins");
    (stop, m)
}

fn ids(m: &Membership) -> Vec<String> {
    m.members().into_iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_and_a_dead_one_leaves_by_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(dir.path(), 1).await.unwrap();
    let (stop_a, a) = join(&etcd, "a", 2).await;
    let (stop_b, b) = join(&etcd, "b", 2).await;
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
    let raw = georep::cluster::etcd::Etcd::new(&etcd.endpoints(), reqwest::Client::new());
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
    let mut etcd = LocalEtcd::start(dir.path(), 1).await.unwrap();
    let (_stop, a) = join(&etcd, "a", 3).await;
    assert!(!a.fenced());
    etcd.nodes[0].stop().await;
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
    etcd.nodes[0].spawn().unwrap();
    wait_for("rejoined", Duration::from_secs(15), async || {
        !a.fenced() && ids(&a) == ["a"]
    })
    .await;
    assert!(a.standing().etcd_reachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_leads_and_a_member_set_settles_once_every_member_took_it_in() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(dir.path(), 1).await.unwrap();
    let (stop_a, a) = join(&etcd, "a", 2).await;
    let (stop_b, b) = join(&etcd, "b", 2).await;
    wait_for(
        "one leader, seen by both",
        Duration::from_secs(5),
        async || a.standing().leader.is_some() && a.standing().leader == b.standing().leader,
    )
    .await;
    assert!(a.leads() != b.leads(), "exactly one leads");
    let ab = vec!["a".to_owned(), "b".to_owned()];
    assert!(!a.settled(), "nobody took the set in yet");
    a.acknowledge(ab.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!a.settled(), "b has not taken the set in");
    b.acknowledge(ab.clone());
    wait_for("settled", Duration::from_secs(5), async || {
        a.settled() && b.settled()
    })
    .await;
    // The leader leaves: the other one leads within a renewal.
    let other = if a.leads() {
        stop_a.fire();
        &b
    } else {
        stop_b.fire();
        &a
    };
    wait_for("the other leads", Duration::from_secs(5), async || {
        other.leads()
    })
    .await;
}

// ---- Several daemons sharing a primary and three regions ----

const IDS: [&str; 3] = ["georep-a", "georep-b", "georep-c"];

/// The tests below run three daemons, four registries and etcd each: one
/// at a time on a two-core machine, so their leases are renewed on time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One georep instance: its config, port, and its own proxies in front of
/// the regions (what passes through them is what this instance wrote).
struct Instance {
    id: String,
    port: u16,
    config: PathBuf,
    proxies: Vec<Proxy>,
    daemon: Option<DaemonProc>,
}

impl Instance {
    fn daemon(&self) -> &DaemonProc {
        self.daemon.as_ref().expect("running")
    }

    async fn start(&mut self) {
        self.daemon = Some(DaemonProc::start(&self.config, self.port, &[]).await);
    }

    /// Repositories this instance wrote to in any region: manifests PUT,
    /// blob uploads started, blobs mounted.
    fn repositories_written(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.proxies {
            for (m, path) in p.hits.lock().unwrap().iter() {
                let Some(rest) = path.strip_prefix("/v2/") else {
                    continue;
                };
                let repo = match *m {
                    reqwest::Method::PUT => rest.find("/manifests/").map(|at| &rest[..at]),
                    reqwest::Method::POST => rest.find("/blobs/uploads/").map(|at| &rest[..at]),
                    _ => None,
                };
                out.extend(repo.map(str::to_owned));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// etcd, a primary notifying the first instance, three regions, and three
/// instances (not started).
struct Setup {
    regs: common::Cluster,
    etcd: LocalEtcd,
    instances: Vec<Instance>,
}

impl Setup {
    async fn new(etcd_nodes: usize, lease_ttl_secs: u64) -> Setup {
        let ports: Vec<u16> = IDS
            .iter()
            .map(|_| georep::lab::localreg::free_port().unwrap())
            .collect();
        let regs = common::Cluster::notifying(3, ports[0], None).await;
        let etcd = LocalEtcd::start(&regs.dir.path().join("etcd"), etcd_nodes)
            .await
            .unwrap();
        let mut instances = Vec::new();
        for (i, id) in IDS.iter().enumerate() {
            let mut proxies = Vec::new();
            for r in &regs.replicas {
                proxies.push(Proxy::start(&r.url(), Faults::default()).await);
            }
            let mut yaml = format!(
                "state_dir: ./state-{id}\nprimary:\n  name: westeurope\n  url: {}\nregions:\n",
                regs.primary.url()
            );
            for (r, p) in proxies.iter().enumerate() {
                yaml.push_str(&format!(
                    "  - name: {}\n    url: {}\n",
                    common::REGION_NAMES[r],
                    p.url
                ));
            }
            let endpoints = etcd
                .endpoints()
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", ");
            yaml.push_str(&format!(
                "listen: 127.0.0.1:{port}\npoll_interval_secs: 0\nshutdown_grace_secs: 2\ncluster:\n  etcd:\n    endpoints: [{endpoints}]\n  prefix: /georep-test\n  instance_id: {id}\n  advertise_url: http://127.0.0.1:{port}\n  lease_ttl_secs: {lease_ttl_secs}\n",
                port = ports[i]
            ));
            let config = regs.dir.path().join(format!("{id}.yaml"));
            std::fs::write(&config, yaml).unwrap();
            instances.push(Instance {
                id: id.to_string(),
                port: ports[i],
                config,
                proxies,
                daemon: None,
            });
        }
        Setup {
            regs,
            etcd,
            instances,
        }
    }

    async fn start_all(&mut self) {
        for i in &mut self.instances {
            i.start().await;
        }
        self.wait_members(3).await;
    }

    /// Until every running instance sees `n` members and says it is ready.
    async fn wait_members(&self, n: usize) {
        for i in self.instances.iter().filter(|i| i.daemon.is_some()) {
            let d = i.daemon();
            wait_for(
                &format!("{} sees {n} members and is ready", i.id),
                Duration::from_secs(30),
                async || {
                    let Ok(r) = reqwest::get(d.url("/v1/status?scope=instance")).await else {
                        return false;
                    };
                    let members = r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["cluster"]["members"].as_array().map(Vec::len));
                    let ready = reqwest::get(d.url("/readyz"))
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    members == Some(n) && ready
                },
            )
            .await;
        }
    }

    /// Pushes `repo:tag` (a new image from `seed`) to the primary.
    async fn push(&self, repo: &str, tag: &str, seed: u64) -> Image {
        let m = push_image(
            &client(&self.regs.primary.url()),
            repo,
            tag,
            64 * 1024,
            seed,
        )
        .await
        .unwrap();
        (repo.to_owned(), tag.to_owned(), m.digest)
    }

    /// Until every region serves every image.
    async fn arrived(&self, images: &[Image], limit: Duration) {
        let regions: Vec<_> = self
            .regs
            .replicas
            .iter()
            .map(|r| client(&r.url()))
            .collect();
        wait_for("every image in every region", limit, async || {
            for reg in &regions {
                for (repo, tag, digest) in images {
                    match reg.head_manifest(repo, tag, &Scope::pull(repo)).await {
                        Ok(Some(h)) if h.digest == *digest => {}
                        _ => return false,
                    }
                }
            }
            true
        })
        .await;
    }

    /// Per region, tags whose manifest was PUT more than once.
    async fn pushed_twice(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (r, reg) in self.regs.replicas.iter().enumerate() {
            let mut counts = std::collections::BTreeMap::<String, usize>::new();
            for (method, uri, status) in reg.settled_requests().await {
                if method == "PUT" && uri.contains("/manifests/") && status == 201 {
                    *counts.entry(uri).or_default() += 1;
                }
            }
            out.extend(
                counts
                    .into_iter()
                    .filter(|(_, n)| *n > 1)
                    .map(|(uri, n)| format!("{} {uri} ×{n}", common::REGION_NAMES[r])),
            );
        }
        out
    }
}

/// Repository, tag, digest.
type Image = (String, String, Digest);

fn all_ids() -> Vec<String> {
    IDS.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_a_killed_one_s_share_arrives() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Setup::new(1, 3).await;
    s.start_all().await;

    // A push stream over many repositories, all notified to the first
    // instance: each event reaches the repository's owner.
    let mut images = Vec::new();
    for i in 0..24u64 {
        images.push(s.push(&format!("team/app-{i:02}"), "v1", i).await);
    }
    s.arrived(&images, Duration::from_secs(60)).await;
    let everyone = all_ids();
    for inst in &s.instances {
        let written = inst.repositories_written();
        assert!(!written.is_empty(), "{} copied nothing", inst.id);
        for repo in written {
            assert_eq!(
                ring::owner(&repo, &everyone),
                Some(inst.id.as_str()),
                "{} wrote {repo}, which is not its share",
                inst.id
            );
        }
    }
    // The registries' own logs name the instance that wrote.
    let agents: std::collections::BTreeSet<String> = s.regs.replicas[0]
        .requests_by_agent()
        .into_iter()
        .filter(|(m, uri, _, _)| m == "PUT" && uri.contains("/manifests/"))
        .map(|(_, _, _, agent)| agent)
        .collect();
    for id in IDS {
        assert!(
            agents
                .iter()
                .any(|a| a.starts_with("georep/") && a.ends_with(&format!("(instance {id})"))),
            "{id} in {agents:?}"
        );
    }
    let forwarded = common::daemon::metric(
        &s.instances[0].daemon().metrics().await,
        "georep_events_forwarded_total{instance=\"georep-a\"}",
    );
    assert!(
        forwarded.unwrap_or(0.0) > 0.0,
        "the first instance handed events on"
    );
    // The cluster as any instance shows it.
    let status = s.instances[2].daemon().status().await;
    let members = status["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status:#}");
    assert!(members.iter().all(|m| m["answered"] == true), "{status:#}");
    assert!(status["cluster"]["leader"].is_string());

    // kill -9 one instance in the middle of a stream.
    let victim = 1;
    let mut more = Vec::new();
    let mut killed_at = None;
    for i in 0..24u64 {
        if i == 8 {
            s.instances[victim].daemon.as_mut().unwrap().kill9().await;
            killed_at = Some(Instant::now());
        }
        more.push(s.push(&format!("team/app-{i:02}"), "v2", 100 + i).await);
    }
    s.arrived(&more, Duration::from_secs(90)).await;
    let took = killed_at.unwrap().elapsed();
    eprintln!("kill -9 to the last arrival: {:.1} s", took.as_secs_f64());

    // Back again: the shares move back, and nothing is copied twice.
    s.instances[victim].start().await;
    s.wait_members(3).await;
    let mut last = Vec::new();
    for i in 0..12u64 {
        last.push(
            s.push(&format!("team/app-{:02}", i * 2), "v3", 200 + i)
                .await,
        );
    }
    s.arrived(&last, Duration::from_secs(60)).await;
    let twice = s.pushed_twice().await;
    assert!(twice.is_empty(), "tags pushed more than once: {twice:?}");
    for repo in s.instances[victim].repositories_written() {
        assert_eq!(ring::owner(&repo, &everyone), Some(IDS[victim]), "{repo}");
    }
}

/// Every instance's writes were in its own share.
fn each_wrote_its_share(s: &Setup) {
    let everyone = all_ids();
    for inst in &s.instances {
        for repo in inst.repositories_written() {
            assert_eq!(
                ring::owner(&repo, &everyone),
                Some(inst.id.as_str()),
                "{} wrote {repo}, which is not its share",
                inst.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_gone_for_twenty_seconds_fences_every_instance_and_all_converges_after() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Setup::new(1, 3).await;
    s.start_all().await;
    let mut images = Vec::new();
    for i in 0..6u64 {
        images.push(s.push(&format!("team/app-{i:02}"), "v1", i).await);
    }
    s.arrived(&images, Duration::from_secs(60)).await;

    s.etcd.nodes[0].stop().await;
    let stopped = Instant::now();
    // Within two thirds of the lease every instance stops writing, and
    // says so: /readyz 503, the fenced gauge.
    for inst in &s.instances {
        let d = inst.daemon();
        wait_for(
            &format!("{} fenced", inst.id),
            Duration::from_secs(5),
            async || {
                let ready = reqwest::get(d.url("/readyz"))
                    .await
                    .map(|r| r.status().as_u16());
                let fenced = common::daemon::metric(
                    &d.metrics().await,
                    &format!("georep_cluster_fenced{{instance=\"{}\"}}", inst.id),
                );
                ready.ok() == Some(503) && fenced == Some(1.0)
            },
        )
        .await;
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "fenced before the lease could expire"
    );
    // Pushes go on: the events are recorded (by their owners), not copied.
    let mut during = Vec::new();
    for i in 0..18u64 {
        during.push(s.push(&format!("team/app-{i:02}"), "v2", 100 + i).await);
    }
    let regions: Vec<_> = s.regs.replicas.iter().map(|r| client(&r.url())).collect();
    for (repo, tag, _) in &during {
        for reg in &regions {
            assert!(
                reg.head_manifest(repo, tag, &Scope::pull(repo))
                    .await
                    .unwrap()
                    .is_none(),
                "{repo}:{tag} was written while every instance was fenced"
            );
        }
    }
    let rest = Duration::from_secs(20).saturating_sub(stopped.elapsed());
    tokio::time::sleep(rest).await;
    s.etcd.nodes[0].spawn().unwrap();
    s.etcd.nodes[0]
        .healthy(Duration::from_secs(20))
        .await
        .unwrap();
    s.wait_members(3).await;
    s.arrived(&during, Duration::from_secs(60)).await;
    let twice = s.pushed_twice().await;
    assert!(twice.is_empty(), "tags pushed more than once: {twice:?}");
    each_wrote_its_share(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_etcd_losing_a_node_changes_nothing_visible() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Setup::new(3, 6).await;
    s.start_all().await;
    let leaders = async |s: &Setup| {
        let mut out = Vec::new();
        for inst in &s.instances {
            let st = inst.daemon().status().await;
            out.push(st["cluster"]["leader"].as_str().unwrap_or("").to_owned());
        }
        out
    };
    let before = leaders(&s).await;
    // The node every instance names first goes.
    s.etcd.nodes[0].stop().await;
    let mut images = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(8);
    let mut i = 0u64;
    while Instant::now() < watch_until {
        images.push(
            s.push(&format!("team/app-{:02}", i % 12), &format!("v{i}"), i)
                .await,
        );
        i += 1;
        for inst in &s.instances {
            let d = inst.daemon();
            let m = d.metrics().await;
            let series = |name: &str| {
                common::daemon::metric(&m, &format!("{name}{{instance=\"{}\"}}", inst.id))
            };
            assert_eq!(series("georep_cluster_members"), Some(3.0), "{}", inst.id);
            assert_eq!(series("georep_cluster_fenced"), Some(0.0), "{}", inst.id);
            let ready = reqwest::get(d.url("/readyz")).await.unwrap();
            assert_eq!(
                ready.status(),
                200,
                "{}: {}",
                inst.id,
                ready.text().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.arrived(&images, Duration::from_secs(60)).await;
    assert_eq!(leaders(&s).await, before, "the leader stayed");
    each_wrote_its_share(&s);
    let twice = s.pushed_twice().await;
    assert!(twice.is_empty(), "tags pushed more than once: {twice:?}");
}

/// etcd with `auth enable`: a member signs in with its user (and again when
/// its token is refused); a wrong password or none is a problem that names
/// the user, and the instance stays fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_authentication_a_member_signs_in_and_a_wrong_password_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(dir.path(), 1).await.unwrap();
    let http = reqwest::Client::new();
    let base = etcd.endpoints()[0].clone();
    for (path, body) in [
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": "rootpw"}),
        ),
        ("/v3/auth/role/add", serde_json::json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/enable", serde_json::json!({})),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let with = |password: Option<&str>| {
        let mut s = settings(&etcd, "a", 3);
        s.auth = password.map(|p| georep::cluster::etcd::EtcdAuth {
            username: "root".to_owned(),
            password: georep::config::Secret::new(p),
        });
        s
    };
    let (_stop, sig) = georep::shutdown::channel();
    let good = Membership::join(with(Some("rootpw")), sig);
    assert!(
        good.joined(Duration::from_secs(5)).await,
        "{:?}",
        good.standing()
    );
    assert!(!good.fenced());

    let (_stop_b, sig) = georep::shutdown::channel();
    let wrong = Membership::join(with(Some("nope")), sig);
    wait_for(
        "the wrong password is named",
        Duration::from_secs(5),
        async || {
            wrong
                .standing()
                .problem
                .is_some_and(|p| p.contains("signing in as \"root\""))
        },
    )
    .await;
    assert!(wrong.fenced());
    let (_stop_c, sig) = georep::shutdown::channel();
    let anonymous = Membership::join(with(None), sig);
    wait_for("no user is refused", Duration::from_secs(5), async || {
        anonymous.standing().problem.is_some()
    })
    .await;
    assert!(anonymous.fenced());
    assert_eq!(
        good.members()
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["a"],
        "only the member that signed in joined"
    );
}
