//! Faults everywhere: the primary and every region behind a proxy that
//! faults 10 % of the requests on a seeded schedule (5xx, 429 with
//! Retry-After, resets mid-body, truncated bodies, stalls longer than the
//! timeouts, flipped bytes in downloads). `georep sync` and the daemon must
//! converge to regions identical to the primary; after every pass no region
//! serves a dangling tag and every fact in the state store is true.
//!
//! `GEOREP_CHAOS_SEED` picks the schedule (default 1), `GEOREP_CHAOS_RATE`
//! the share faulted (default 0.1): the soak in README.md runs many seeds.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::daemon::{DaemonProc, bound};
use common::proxy::{Chaos, FAULTS, Fault, Faults, Proxy};
use common::*;
use georep::lab::bench::verify::{self, Expect};

/// Short timeouts, so that stalls (3 s) outlast them and tests stay quick.
const TIMEOUTS: &str =
    "timeouts:\n  connect_secs: 2\n  request_secs: 2\n  stall_secs: 1\nmax_attempts: 6\n";
/// Passes `georep sync` may need before every region is complete.
const MAX_PASSES: usize = 12;

fn seed() -> u64 {
    env_or("GEOREP_CHAOS_SEED", 1)
}

fn chaos(seed: u64) -> Faults {
    chaos_at(seed, env_or("GEOREP_CHAOS_RATE", 0.1))
}

fn chaos_at(seed: u64, rate: f64) -> Faults {
    Faults {
        chaos: Some(Chaos {
            seed,
            rate,
            stall: Duration::from_secs(3),
        }),
        // Every run sees a corrupt blob, whatever the schedule.
        first: Some(("/blobs/sha256:".to_owned(), Fault::Flip)),
        ..Faults::default()
    }
}

/// Requests through all proxies.
fn requests(proxies: &[&Proxy]) -> usize {
    proxies.iter().map(|p| p.hits.lock().unwrap().len()).sum()
}

/// Faults injected by all proxies, by kind.
fn fault_counts(proxies: &[&Proxy]) -> BTreeMap<Fault, usize> {
    let mut all = BTreeMap::new();
    for p in proxies {
        for (k, n) in p.traffic.lock().unwrap().fault_counts() {
            *all.entry(k).or_default() += n;
        }
    }
    all
}

/// The chaos cluster: proxies in front of the primary and each region, and
/// a config (with the daemon's `extra`) that reaches everything through them.
struct Chaotic {
    cluster: Cluster,
    primary: Proxy,
    regions: Vec<Proxy>,
    config: std::path::PathBuf,
}

impl Chaotic {
    async fn start(regions: usize, seed: u64, extra: &str) -> Chaotic {
        let cluster = Cluster::start(regions).await;
        let primary = Proxy::start(&cluster.primary.url(), chaos(seed)).await;
        let mut proxies = Vec::new();
        for (i, r) in cluster.replicas.iter().enumerate() {
            proxies.push(Proxy::start(&r.url(), chaos(seed + 1 + i as u64)).await);
        }
        let urls: Vec<String> = proxies.iter().map(|p| p.url.clone()).collect();
        let config = cluster.config(&primary.url, &urls, &format!("{TIMEOUTS}{extra}"));
        Chaotic {
            cluster,
            primary,
            regions: proxies,
            config,
        }
    }

    fn proxies(&self) -> Vec<&Proxy> {
        std::iter::once(&self.primary)
            .chain(&self.regions)
            .collect()
    }

    /// Tags served: none dangling in any region.
    async fn tags_served(&self, corpus: &georep::lab::corpus::Corpus) -> usize {
        let mut tags = 0;
        for r in &self.cluster.replicas {
            tags += no_dangling_tags(&r.url(), corpus)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        tags
    }

    /// Store facts checked: every one true (the store must be free).
    async fn store_facts(&self, corpus: &georep::lab::corpus::Corpus) -> usize {
        let names: Vec<(String, String)> = self
            .regions
            .iter()
            .enumerate()
            .map(|(i, p)| (REGION_NAMES[i].to_owned(), p.url.clone()))
            .collect();
        store_facts_hold(
            &self.cluster.dir.path().join("state").join("store"),
            &names,
            &self.cluster.replica_urls(),
            corpus,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Each region, read back blob by blob, equals the corpus.
    async fn assert_identical(&self, corpus: &georep::lab::corpus::Corpus) {
        for r in &self.cluster.replicas {
            assert_identical(&r.url(), corpus).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_converges_through_ten_percent_faults_everywhere() {
    let seed = seed();
    let c = Chaotic::start(2, seed, "").await;
    let corpus = push_corpus(&c.cluster.primary.url(), &quick_spec(seed + 40)).await;

    let mut passes = Vec::new();
    loop {
        let (code, report) = sync_json(&c.config, &[]).await;
        let failed: u64 = report["regions"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["tags_failed"].as_u64()).sum())
            .unwrap_or(0);
        let tags = c.tags_served(&corpus).await;
        let facts = c.store_facts(&corpus).await;
        passes.push((code, failed, tags, facts));
        if code != 0 {
            for f in report["failures"].as_array().into_iter().flatten() {
                eprintln!("pass {}: {}", passes.len(), f["cause"]);
            }
        }
        if code == 0 {
            break;
        }
        assert_eq!(code, 1, "{report:#}");
        assert!(
            passes.len() < MAX_PASSES,
            "no convergence after {MAX_PASSES} passes: {passes:?}\n{report:#}"
        );
    }
    c.assert_identical(&corpus).await;
    let faults = fault_counts(&c.proxies());
    eprintln!(
        "seed {seed}: {} passes (exit, failed tags, tags served, store facts checked) {passes:?}; {} requests, faults {faults:?}",
        passes.len(),
        requests(&c.proxies())
    );
    // The schedule did inject every kind, corrupt downloads included.
    for kind in FAULTS {
        assert!(
            faults.get(&kind).is_some_and(|n| *n > 0),
            "no {kind:?}: {faults:?}"
        );
    }
    let flipped_blobs = c
        .primary
        .traffic
        .lock()
        .unwrap()
        .faults
        .iter()
        .filter(|(f, _, p)| *f == Fault::Flip && p.contains("/blobs/"))
        .count();
    assert!(flipped_blobs > 0, "no blob download was corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_converges_through_ten_percent_faults_everywhere() {
    let seed = seed() + 100;
    let (listener, port) = bound();
    let c = Chaotic::start(
        2,
        seed,
        &format!("listen: 127.0.0.1:{port}\npoll_interval_secs: 2\nretry_max_secs: 1\n"),
    )
    .await;
    let mut daemon = DaemonProc::in_process(&c.config, listener, &[]).await;
    // Pushed while the daemon runs: polling (through the faulty proxy)
    // finds them.
    let corpus = push_corpus(&c.cluster.primary.url(), &quick_spec(seed)).await;
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let mut complete = true;
        for r in &c.cluster.replicas {
            complete &= verify::region(&client(&r.url()), &corpus, Expect::Images, false)
                .await
                .is_ok();
        }
        let tags = c.tags_served(&corpus).await;
        if complete {
            eprintln!(
                "seed {seed}: daemon converged in {:.1}s, {tags} tags served; {} requests, faults {:?}",
                started.elapsed().as_secs_f64(),
                requests(&c.proxies()),
                fault_counts(&c.proxies())
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not converge: {:#}\n{}",
            daemon.status().await,
            tail(&daemon.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.assert_identical(&corpus).await;
    daemon.terminate(Duration::from_secs(20)).await;
    let facts = c.store_facts(&corpus).await;
    assert!(facts > 0);
}

/// The token service of a token-auth primary faults too — a third of its
/// answers, and its tokens live 2 s so that they are fetched often: token
/// fetches are retried like any request, and the sync converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_converges_through_a_faulty_token_service() {
    use common::token::{self, TokenServer};
    use georep::lab::localreg::{LocalAuth, LocalOptions};
    let seed = seed() + 200;
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start_with(dir.path(), "georep", "Tok-pw-77", None, 2).await;
    let base = tokens.realm.trim_end_matches("/token").to_owned();
    let token_proxy = Proxy::start(&base, chaos_at(seed, 0.33)).await;
    let cluster = Cluster::start_with(
        1,
        LocalOptions {
            auth: Some(LocalAuth::Token {
                realm: format!("{}/token", token_proxy.url),
                service: token::SERVICE.into(),
                issuer: token::ISSUER.into(),
                root_cert_bundle: tokens.cert_path.clone(),
            }),
            ..LocalOptions::default()
        },
        |_| LocalOptions::default(),
    )
    .await;
    let pusher = client_as(&cluster.primary.url(), "Tok-pw-77");
    let corpus = georep::lab::corpus::Corpus::generate(&quick_spec(seed)).await;
    corpus
        .push(&pusher)
        .await
        .expect("push through the faulty token service");
    let config = cluster.config(&cluster.primary.url(), &cluster.replica_urls(), TIMEOUTS);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("  url: {}\n", cluster.primary.url()),
        &format!(
            "  url: {}\n  credentials:\n    username: georep\n    password_env: TOKEN_PW\n",
            cluster.primary.url()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut passes = 0;
    loop {
        passes += 1;
        let (code, report) = sync_json(&config, &[("TOKEN_PW", "Tok-pw-77")]).await;
        if code == 0 {
            break;
        }
        assert!(passes < MAX_PASSES, "no convergence: {report:#}");
    }
    assert_identical(&cluster.replicas[0].url(), &corpus).await;
    let faults = fault_counts(&[&token_proxy]);
    eprintln!(
        "seed {seed}: {passes} passes; {} token requests, faults {faults:?}",
        requests(&[&token_proxy])
    );
    assert!(
        faults.values().sum::<usize>() > 0,
        "no token request was faulted"
    );
}
