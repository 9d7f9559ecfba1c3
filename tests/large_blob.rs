//! A large blob through a throttled link: the transfer takes several times
//! the request timeout and still completes (blob streams have an idle
//! timeout, not a whole-request one), the first upload dies midway and is
//! retried, the region ends up byte-identical, and georep's memory stays
//! flat — far below the blob's size.
//!
//! `GEOREP_LARGE_BLOB_MIB` sets the size (default 256; the soak in
//! README.md uses 2048) and the link is throttled so the upload takes about
//! `GEOREP_LARGE_BLOB_SECS` (default 6) seconds.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Faults, Proxy};
use common::*;
use georep::lab::corpus::{Corpus, CorpusSpec, Preset};
use reqwest::Method;

const MIB: u64 = 1 << 20;
/// georep's peak RSS must stay under this, whatever the blob's size.
const MAX_RSS: u64 = 128 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_through_a_slow_link_completes_with_flat_memory() {
    let size = env_or("GEOREP_LARGE_BLOB_MIB", 256u64) * MIB;
    let secs = env_or("GEOREP_LARGE_BLOB_SECS", 6u64);
    let cluster = Cluster::start(1).await;
    let spec = CorpusSpec {
        repositories: vec!["big/blob".to_owned()],
        tags_per_repository: 1,
        layers_per_image: 1,
        layer_bytes: (1024, 1025),
        base_layers: 0,
        big_layers: 1,
        big_layer_bytes: (size, size + 1),
        multi_arch_every: 0,
        exotic: false,
        ..CorpusSpec::preset(Preset::Test, 77)
    };
    let corpus = Corpus::generate(&spec).await;
    corpus
        .push(&client(&cluster.primary.url()))
        .await
        .expect("push the large blob");
    let big = corpus.blobs["big/blob"]
        .values()
        .max_by_key(|b| b.size)
        .unwrap()
        .clone();
    assert!(big.size >= size);

    let rate = size / secs;
    let proxy = Proxy::start(
        &cluster.replicas[0].url(),
        Faults {
            slow_uploads: Some(rate),
            cut_upload: Some(big.digest.clone()),
            cut_upload_times: Some(1),
            ..Faults::default()
        },
    )
    .await;
    // A request timeout far shorter than the transfer; an idle timeout
    // that a progressing transfer never reaches.
    let config = cluster.config(
        &cluster.primary.url(),
        std::slice::from_ref(&proxy.url),
        "timeouts:\n  connect_secs: 2\n  request_secs: 2\n  stall_secs: 3\n",
    );
    let usage = cluster.dir.path().join("usage.json");
    let started = Instant::now();
    let out = georep(
        &[
            "bench-exec",
            "--out",
            usage.to_str().unwrap(),
            "--",
            env!("CARGO_BIN_EXE_georep"),
            "sync",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
        &[],
    )
    .await;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
    let usage: serde_json::Value = serde_json::from_slice(&std::fs::read(&usage).unwrap()).unwrap();
    let rss = usage["peak_rss_bytes"].as_u64().unwrap();

    // The first upload was cut, a second one completed.
    let puts: Vec<u16> = proxy
        .traffic
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, m, p, _)| *m == Method::PUT && p.contains(big.digest.hex()))
        .map(|(_, _, _, s)| *s)
        .collect();
    let (bytes, upload_rate) = proxy.traffic.lock().unwrap().upload_rate();
    eprintln!(
        "{} MiB blob at {:.1} MiB/s: sync {:.1}s, peak RSS {:.1} MiB, {} PUTs, {} MiB through the link",
        size / MIB,
        upload_rate / MIB as f64,
        took.as_secs_f64(),
        rss as f64 / MIB as f64,
        proxy.count(&Method::PUT, big.digest.hex()),
        bytes / MIB
    );
    let attempts = proxy.count(&Method::PUT, big.digest.hex());
    assert!(
        attempts >= 2 && puts.last() == Some(&201),
        "the cut upload was not retried: {attempts} attempts, answered {puts:?}"
    );
    assert!(
        took > Duration::from_secs(4),
        "the transfer should outlast the 2 s request timeout"
    );
    assert!(
        rss < MAX_RSS,
        "peak RSS {rss} for a {size}-byte blob: not flat"
    );
    assert_identical(&cluster.replicas[0].url(), &corpus).await;
}
