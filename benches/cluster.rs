//! Several georep instances sharing the work through etcd (issue 16),
//! measured in one run against a real etcd (Debian's `etcd-server`) and
//! real registries.
//!
//! `cargo bench --bench cluster` runs two parts:
//!
//! 1. **Share of the work.** The same corpus (`GEOREP_CLUSTER_REPOS` (60)
//!    repositories of `GEOREP_CLUSTER_TAGS` (5) tags) copied to 3 empty
//!    regions by 1 instance, then by 3 (each run from empty regions and
//!    stores): wall time from the start until every instance has
//!    reconciled its share and no region lacks anything, the ratio of the
//!    two, and per instance the repositories it owned and the requests it
//!    sent to the primary and to the regions (counted in the registries'
//!    own logs by its `User-Agent`, which names the instance). On a
//!    2-core machine the wall time need not improve; the share must.
//! 2. **Failover.** 3 instances with the shortest lease
//!    (`GEOREP_CLUSTER_TTL`, 2 s), the primary notifying the first. Each of
//!    `GEOREP_CLUSTER_TRIALS` (10) trials kills (-9) another instance,
//!    pushes an image to a repository that instance owns, and times from
//!    the kill to the image in every region; then restarts it and waits
//!    until the cluster has settled again. p50, p99 and max, beside the
//!    lease TTL (the floor).
//! 3. **One instance's checkpoint at scale.** `GEOREP_CLUSTER_SCALE_TAGS`
//!    (10,000; the figure is 100,000) tags in a tenth as many
//!    repositories, copied to 2 regions by `georep sync`; then a cluster
//!    member (alone in its cluster) on that store: its no-op reconcile
//!    beside the primary's listing alone, its peak RSS, and the time
//!    `/v1/status` and `/metrics` take with an empty queue and with every
//!    tag queued for a third, unreachable region.
// A benchmark: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use georep::cluster::ring;
use georep::lab::bench::{client, env_u64, percentile};
use georep::lab::corpus::{Corpus, CorpusSpec, push_image};
use georep::lab::etcd::LocalEtcd;
use georep::lab::localreg::{LocalNotify, LocalOptions, LocalRegistry, free_port};
use georep::registry::Scope;

const REGIONS: [&str; 3] = ["eastus", "japaneast", "brazilsouth"];

/// Whether to run part `name` (`GEOREP_CLUSTER_ONLY=share|failover|scale`
/// runs one).
fn part(name: &str) -> bool {
    std::env::var("GEOREP_CLUSTER_ONLY").map_or(true, |only| only == name)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if part("share") {
            share().await;
        }
        if part("failover") {
            failover().await;
        }
        if part("scale") {
            scale().await;
        }
    });
}

/// One `georep run` process, killed when dropped.
struct Instance {
    id: String,
    port: u16,
    config: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Instance {
    /// Writes the config of instance `id` (its state under `dir`).
    fn new(
        dir: &Path,
        id: &str,
        primary: &str,
        regions: &[String],
        etcd: &LocalEtcd,
        prefix: &str,
        ttl: u64,
    ) -> Instance {
        let port = free_port().unwrap();
        let mut yaml = format!(
            "state_dir: ./state-{id}\nprimary:\n  name: westeurope\n  url: {primary}\nregions:\n"
        );
        for (name, url) in REGIONS.iter().zip(regions) {
            yaml.push_str(&format!("  - name: {name}\n    url: {url}\n"));
        }
        let endpoints: Vec<String> = etcd
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        yaml.push_str(&format!(
            "listen: 127.0.0.1:{port}\npoll_interval_secs: 0\naudit_interval_secs: 0\nshutdown_grace_secs: 1\ncluster:\n  etcd:\n    endpoints: [{}]\n  prefix: {prefix}\n  instance_id: {id}\n  advertise_url: http://127.0.0.1:{port}\n  lease_ttl_secs: {ttl}\n",
            endpoints.join(", ")
        ));
        let config = dir.join(format!("{id}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        Instance {
            id: id.to_owned(),
            port,
            config,
            child: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
            .args(["run", "--config", self.config.to_str().unwrap()])
            .env("GEOREP_LOG", "georep=info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    async fn status(&self) -> Option<serde_json::Value> {
        let r = reqwest::get(self.url("/v1/status?scope=instance"))
            .await
            .ok()?;
        r.json().await.ok()
    }
}

async fn until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until every instance sees `n` members and is ready.
async fn settled(instances: &[Instance], n: usize) {
    for i in instances {
        until(
            &format!("{} settles", i.id),
            Duration::from_secs(60),
            async || {
                let members = i
                    .status()
                    .await
                    .and_then(|v| v["cluster"]["members"].as_array().map(Vec::len));
                let ready = reqwest::get(i.url("/readyz"))
                    .await
                    .is_ok_and(|r| r.status() == 200);
                members == Some(n) && ready
            },
        )
        .await;
    }
}

/// Whether an instance has reconciled its share and no region lacks
/// anything it knows of.
fn done(v: &serde_json::Value) -> bool {
    let reconciled = v["reconcile"]["last_finished_at"].is_string();
    let idle = v["regions"].as_array().is_some_and(|rs| {
        rs.iter()
            .all(|r| r["queue_depth"] == 0 && r["in_flight"] == 0 && r["lag_items"] == 0)
    });
    reconciled && idle
}

/// Requests each instance sent to `reg`, by the instance its agent names.
fn by_instance(reg: &LocalRegistry) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, _, _, agent) in reg.requests_by_agent() {
        if let Some(id) = agent
            .split("(instance ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
        {
            *out.entry(id.to_owned()).or_default() += 1;
        }
    }
    out
}

async fn share() {
    let dir = tempfile::tempdir().unwrap();
    let repos = env_u64("GEOREP_CLUSTER_REPOS", 60) as usize;
    let tags = env_u64("GEOREP_CLUSTER_TAGS", 5) as usize;
    let primary = LocalRegistry::start(&dir.path().join("primary"), LocalOptions::default())
        .await
        .unwrap();
    let corpus = Corpus::generate(&CorpusSpec::scale(repos, tags, 7)).await;
    corpus.push(&client(&primary.url()).unwrap()).await.unwrap();
    let total_tags = corpus.tags.len();
    let etcd = LocalEtcd::start(&dir.path().join("etcd"), 1).await.unwrap();
    println!(
        "share of the work: {repos} repositories, {total_tags} tags, 3 regions (GEOREP_CLUSTER_REPOS, GEOREP_CLUSTER_TAGS)"
    );
    println!(
        "{:<11} {:>7} {:>8}  per instance: repositories, requests to the primary / to the regions",
        "instances", "wall s", "ratio"
    );
    let mut baseline = None;
    for n in [1usize, 3] {
        let run_dir = dir.path().join(format!("run-{n}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let mut regions = Vec::new();
        for name in REGIONS {
            regions.push(
                LocalRegistry::start(&run_dir.join(name), LocalOptions::default())
                    .await
                    .unwrap(),
            );
        }
        let urls: Vec<String> = regions.iter().map(|r| r.url()).collect();
        let primary_before = by_instance(&primary);
        let mut instances: Vec<Instance> = (0..n)
            .map(|i| {
                Instance::new(
                    &run_dir,
                    &format!("georep-{i}"),
                    &primary.url(),
                    &urls,
                    &etcd,
                    &format!("/bench-share-{n}"),
                    10,
                )
            })
            .collect();
        let started = Instant::now();
        for i in &mut instances {
            i.start();
        }
        until("every share copied", Duration::from_secs(600), async || {
            for i in &instances {
                match i.status().await {
                    Some(v) if done(&v) => {}
                    _ => return false,
                }
            }
            true
        })
        .await;
        let wall = started.elapsed().as_secs_f64();
        // Checked, not timed: every region holds every tag.
        for reg in &regions {
            let c = client(&reg.url()).unwrap();
            for t in &corpus.tags {
                let head = c
                    .head_manifest(&t.repository, &t.tag, &Scope::pull(&t.repository))
                    .await
                    .unwrap();
                assert_eq!(
                    head.map(|h| h.digest),
                    Some(t.digest.clone()),
                    "{}:{} in {}",
                    t.repository,
                    t.tag,
                    reg.url()
                );
            }
        }
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let mut primary_now = by_instance(&primary);
        for (k, v) in primary_before {
            *primary_now.entry(k).or_default() -= v;
        }
        let mut region_requests: BTreeMap<String, usize> = BTreeMap::new();
        for reg in &regions {
            for (k, v) in by_instance(reg) {
                *region_requests.entry(k).or_default() += v;
            }
        }
        let per: Vec<String> = ids
            .iter()
            .map(|id| {
                let owned = corpus
                    .manifests
                    .keys()
                    .map(String::as_str)
                    .filter(|r| ring::owner(r, &ids) == Some(id.as_str()))
                    .count();
                format!(
                    "{id}: {owned}, {} / {}",
                    primary_now.get(id).copied().unwrap_or(0),
                    region_requests.get(id).copied().unwrap_or(0)
                )
            })
            .collect();
        let base = *baseline.get_or_insert(wall);
        println!(
            "{:<11} {:>7.2} {:>7.2}x  {}",
            n,
            wall,
            base / wall,
            per.join("; ")
        );
        for i in &mut instances {
            i.kill9().await;
        }
    }
}

async fn failover() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = env_u64("GEOREP_CLUSTER_TTL", 2);
    let trials = env_u64("GEOREP_CLUSTER_TRIALS", 10) as usize;
    let etcd = LocalEtcd::start(&dir.path().join("etcd"), 1).await.unwrap();
    let receiver_port = free_port().unwrap();
    let primary = LocalRegistry::start(
        &dir.path().join("primary"),
        LocalOptions {
            notify: Some(LocalNotify {
                url: format!("http://127.0.0.1:{receiver_port}/v1/notifications"),
                authorization: None,
            }),
            ..LocalOptions::default()
        },
    )
    .await
    .unwrap();
    let mut regions = Vec::new();
    for name in REGIONS {
        regions.push(
            LocalRegistry::start(&dir.path().join(name), LocalOptions::default())
                .await
                .unwrap(),
        );
    }
    let urls: Vec<String> = regions.iter().map(|r| r.url()).collect();
    let mut instances: Vec<Instance> = (0..3)
        .map(|i| {
            Instance::new(
                dir.path(),
                &format!("georep-{i}"),
                &primary.url(),
                &urls,
                &etcd,
                "/bench-failover",
                ttl,
            )
        })
        .collect();
    instances[0].port = receiver_port;
    let config0 = std::fs::read_to_string(&instances[0].config).unwrap();
    let first_port = config0
        .lines()
        .find_map(|l| l.strip_prefix("listen: 127.0.0.1:"))
        .unwrap()
        .to_owned();
    std::fs::write(
        &instances[0].config,
        config0.replace(&format!(":{first_port}"), &format!(":{receiver_port}")),
    )
    .unwrap();
    for i in &mut instances {
        i.start();
    }
    settled(&instances, 3).await;
    let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    let region_clients: Vec<_> = urls.iter().map(|u| client(u).unwrap()).collect();
    let pusher = client(&primary.url()).unwrap();
    let mut secs = Vec::new();
    for t in 0..trials {
        let victim = 1 + t % 2;
        let repo = (0..)
            .map(|i| format!("failover/t{t}-{i}"))
            .find(|r| ring::owner(r, &ids) == Some(ids[victim].as_str()))
            .unwrap();
        instances[victim].kill9().await;
        let killed = Instant::now();
        let m = push_image(&pusher, &repo, "v1", 64 * 1024, t as u64)
            .await
            .unwrap();
        until(
            "the image in every region",
            Duration::from_secs(120),
            async || {
                for c in &region_clients {
                    match c.head_manifest(&repo, "v1", &Scope::pull(&repo)).await {
                        Ok(Some(h)) if h.digest == m.digest => {}
                        _ => return false,
                    }
                }
                true
            },
        )
        .await;
        secs.push(killed.elapsed().as_secs_f64());
        instances[victim].start();
        settled(&instances, 3).await;
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "failover after kill -9 ({trials} trials, lease TTL {ttl} s): p50 {:.2} s, p99 {:.2} s, max {:.2} s (the floor is the TTL; GEOREP_CLUSTER_TTL, GEOREP_CLUSTER_TRIALS)",
        percentile(&secs, 50.0),
        percentile(&secs, 99.0),
        secs.last().copied().unwrap_or(f64::NAN)
    );
}

/// The daemon's peak RSS (`VmHWM`), bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Median seconds of `n` GETs of `url`.
async fn median_get(url: &str, n: usize) -> f64 {
    let http = reqwest::Client::new();
    let mut secs = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.unwrap();
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    percentile(&secs, 50.0)
}

async fn scale() {
    // Pushing and first copying 100,000 tags takes most of an hour: a
    // directory named by GEOREP_CLUSTER_SCALE_DIR keeps them for the next
    // run (the registries come back on the same ports, so the store's
    // facts, bound to the regions' URLs, stay valid).
    let temp = tempfile::tempdir().unwrap();
    let base = std::env::var("GEOREP_CLUSTER_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| temp.path().to_owned());
    std::fs::create_dir_all(&base).unwrap();
    let ports_file = base.join("prepared-ports");
    let prepared: Option<Vec<u16>> = std::fs::read_to_string(&ports_file).ok().map(|t| {
        t.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    });
    let port = |i: usize| prepared.as_ref().and_then(|p| p.get(i).copied());
    let tags = env_u64("GEOREP_CLUSTER_SCALE_TAGS", 10_000) as usize;
    let repos = (tags / 10).max(1);
    let mut registries = Vec::new();
    for (i, name) in ["primary", REGIONS[0], REGIONS[1]].iter().enumerate() {
        let options = LocalOptions {
            port: port(i),
            ..LocalOptions::default()
        };
        registries.push(
            LocalRegistry::start(&base.join(name), options)
                .await
                .unwrap(),
        );
    }
    let regions = registries.split_off(1);
    let primary = registries.pop().unwrap();
    let etcd = LocalEtcd::start(&base.join(format!("etcd-{}", std::process::id())), 1)
        .await
        .unwrap();
    let urls: Vec<String> = regions.iter().map(|r| r.url()).collect();
    let mut member = Instance::new(
        &base,
        "georep-0",
        &primary.url(),
        &urls,
        &etcd,
        "/bench-scale",
        10,
    );
    if prepared.is_none() {
        let corpus = Corpus::generate(&CorpusSpec::scale(repos, 10, 3)).await;
        let t = Instant::now();
        corpus.push(&client(&primary.url()).unwrap()).await.unwrap();
        eprintln!(
            "pushed {} tags in {repos} repositories in {:.0} s",
            corpus.tags.len(),
            t.elapsed().as_secs_f64()
        );
        // The first copy by a one-shot pass (the daemon would do the same).
        let t = Instant::now();
        let config = member.config.to_str().unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"))
            .args(["sync", "--config", config, "--progress", "none"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        eprintln!(
            "cold sync to 2 regions in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let ports = [primary.port, regions[0].port, regions[1].port].map(|p| p.to_string());
        std::fs::write(&ports_file, ports.join(" ")).unwrap();
    }

    // The member's first reconcile is its handover's, over its whole share.
    member.start();
    settled(std::slice::from_ref(&member), 1).await;
    until(
        "the first reconcile",
        Duration::from_secs(1800),
        async || member.status().await.is_some_and(|v| done(&v)),
    )
    .await;
    let http = reqwest::Client::new();
    let t = Instant::now();
    let r = http.post(member.url("/v1/reconcile")).send().await.unwrap();
    assert!(r.status().is_success());
    let answer: serde_json::Value = r.json().await.unwrap();
    let noop = t.elapsed().as_secs_f64();
    assert_eq!(answer["queued"], 0, "a no-op: {answer}");
    let pid = member.child.as_ref().and_then(|c| c.id()).unwrap();
    let rss = peak_rss(pid);
    // The primary's listing alone, as warm as the reconciles had it (its
    // registry's files in the page cache): the better of two.
    let mut listing = f64::INFINITY;
    let mut listed = 0;
    for _ in 0..2 {
        let (secs, n) = georep::lab::bench::listing_alone(&primary.url())
            .await
            .unwrap();
        listing = listing.min(secs);
        listed = n;
    }
    let status_empty = median_get(&member.url("/v1/status?scope=instance"), 10).await;
    let metrics_empty = median_get(&member.url("/metrics"), 10).await;
    member.kill9().await;

    // A third region nobody can reach: every tag queued for it.
    let unreachable = format!("http://127.0.0.1:{}", free_port().unwrap());
    let text = std::fs::read_to_string(&member.config).unwrap();
    let third = format!("  - name: {}\n    url: {unreachable}\nlisten:", REGIONS[2]);
    std::fs::write(&member.config, text.replacen("listen:", &third, 1)).unwrap();
    member.start();
    settled(std::slice::from_ref(&member), 1).await;
    until(
        "every tag queued for the third region",
        Duration::from_secs(1800),
        async || {
            member.status().await.is_some_and(|v| {
                v["reconcile"]["last_finished_at"].is_string()
                    && v["regions"][2]["lag_items"].as_u64().unwrap_or(0) as usize >= listed
            })
        },
    )
    .await;
    let status_full = median_get(&member.url("/v1/status?scope=instance"), 10).await;
    let metrics_full = median_get(&member.url("/metrics"), 10).await;
    let rss_queued = peak_rss(member.child.as_ref().and_then(|c| c.id()).unwrap());
    member.kill9().await;

    println!(
        "one member's checkpoint: {listed} tags in {repos} repositories, 2 regions (GEOREP_CLUSTER_SCALE_TAGS)"
    );
    println!(
        "  no-op reconcile {noop:.2} s; the primary's listing alone {listing:.2} s; beyond it {:.2} s",
        noop - listing
    );
    println!(
        "  peak RSS {} after the reconciles; {} with {listed} items queued",
        georep::units::human_bytes(rss),
        georep::units::human_bytes(rss_queued)
    );
    println!(
        "  /v1/status {:.1} ms, /metrics {:.1} ms with an empty queue; {:.1} ms and {:.1} ms with {listed} items queued (median of 10)",
        status_empty * 1e3,
        metrics_empty * 1e3,
        status_full * 1e3,
        metrics_full * 1e3
    );
}
