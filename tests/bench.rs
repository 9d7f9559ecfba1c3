//! `georep bench` end to end, on a tiny corpus: local registries it starts
//! itself, an operator's registries (only its prefix touched, cleaned up
//! afterwards), a region that serves corrupted bytes (the run is reported
//! as failed, not as fast), and bad usage.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::proxy::Faults;
use common::{Cluster, client, georep};
use georep::lab::corpus::{Corpus, CorpusSpec, Preset, bench_repositories};
use georep::registry::Scope;
use serde_json::Value;

/// The corpus knobs of these tests (a few MiB).
const TINY: [&str; 14] = [
    "--repositories",
    "2",
    "--tags",
    "2",
    "--layers",
    "1",
    "--layer-size",
    "64KiB..256KiB",
    "--base-layers",
    "1",
    "--base-layer-size",
    "1MiB",
    "--big-layers",
    "0",
];

/// The corpus `TINY` generates (seed 1).
fn tiny_spec() -> CorpusSpec {
    let mut spec = CorpusSpec::preset(Preset::Small, 1);
    spec.repositories = bench_repositories(2);
    spec.tags_per_repository = 2;
    spec.layers_per_image = 1;
    spec.layer_bytes = (64 << 10, 256 << 10);
    spec.base_layers = 1;
    spec.base_layer_bytes = (1 << 20, 1 << 20);
    spec.big_layers = 0;
    spec
}

async fn bench(extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["bench", "--json", "--progress", "plain"];
    args.extend(TINY);
    args.extend(extra);
    let out = georep(&args, &[]).await;
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn runs<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn local_bench_runs_every_peer_verified_and_charts_them() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let (code, report, stderr) = bench(&[
        "--regions",
        "2",
        "--skopeo",
        "always",
        "--svg",
        svg.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["corpus"]["repositories"], 2);
    // v1, v2 and latest in each.
    assert_eq!(report["corpus"]["tags"], 6);
    assert_eq!(report["regions"].as_array().unwrap().len(), 2);
    for kind in ["raw", "georep", "georep_noop", "skopeo"] {
        let r = runs(&report, kind);
        assert_eq!(r.len(), 1, "{kind}");
        let r = r[0];
        assert_eq!(r["verified"], true, "{kind}: {r}");
        assert!(r["error"].is_null(), "{kind}: {r}");
        assert_eq!(r["requests"]["source"], "registry logs");
        assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0, "{kind}");
        assert!(r["cpu_secs"].as_f64().is_some(), "{kind}");
        if kind != "georep_noop" {
            assert!(r["mib_per_sec"].as_f64().unwrap() > 0.0, "{kind}");
        }
    }
    // The raw baseline: one GET per unique blob, one upload per blob and region.
    let blobs = report["corpus"]["unique_blobs"].as_u64().unwrap();
    let raw = runs(&report, "raw")[0];
    assert_eq!(raw["requests"]["primary"]["blob_get"], blobs);
    assert_eq!(raw["requests"]["replicas"]["upload_put"], 2 * blobs);
    // georep reads each blob once for both regions.
    let cold = runs(&report, "georep")[0];
    assert_eq!(cold["requests"]["primary"]["blob_get"], blobs);
    assert!(cold["ratio_to_raw"].as_f64().unwrap() > 0.0);
    assert!(cold["ratio_to_skopeo"].as_f64().unwrap() > 0.0);
    // The no-op: nothing at all sent to the regions.
    let noop = runs(&report, "georep_noop")[0];
    assert_eq!(noop["requests"]["replicas"], serde_json::json!({}));
    assert_eq!(report["summary"]["noop_replica_requests"], 0);
    assert_eq!(report["summary"]["all_verified"], true);
    assert!(report["summary"]["georep_vs_skopeo"].as_f64().is_some());
    assert_eq!(
        report["summary"]["georep_vs_raw"].as_array().unwrap().len(),
        1
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"), "{chart:.200}");
    for label in ["raw", "georep", "skopeo", "MiB/s"] {
        assert!(chart.contains(label), "chart lacks {label}");
    }
    // Plain progress lines, one outcome per run.
    assert!(stderr.contains("[bench] raw c=6 #1:"), "{stderr}");
    assert!(
        stderr.contains("[bench] georep no-op c=6: 0 requests to the regions"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sweep_runs_each_level_and_table_says_so() {
    let mut args = vec![
        "bench",
        "--regions",
        "1",
        "--skopeo",
        "never",
        "--sweep",
        "1,3",
        "--quick-verify",
        "--progress",
        "none",
    ];
    args.extend(TINY);
    let out = georep(&args, &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("georep / raw at 1 blobs in flight"),
        "{table}"
    );
    assert!(
        table.contains("georep / raw at 3 blobs in flight"),
        "{table}"
    );
    assert!(
        table.contains("no-op sync: 0 requests to the regions"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("georep no-op"))
            .count(),
        2,
        "{table}"
    );
}

#[tokio::test]
async fn config_mode_writes_only_its_prefix_and_cleans_up() {
    let cluster = Cluster::start(2).await;
    // The operator's own content, on the primary and in one region.
    let p = client(&cluster.primary.url());
    let theirs = georep::lab::corpus::push_image(&p, "team/app", "1", 100_000, 7)
        .await
        .unwrap();
    georep::lab::corpus::push_image(
        &client(&cluster.replicas[0].url()),
        "team/app",
        "1",
        100_000,
        7,
    )
    .await
    .unwrap();
    let config = cluster.default_config();
    let (code, report, stderr) =
        bench(&["--config", config.to_str().unwrap(), "--skopeo", "never"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["target"], config.to_str().unwrap());
    // Without registry logs the client's counts are used.
    let noop = runs(&report, "georep_noop")[0];
    assert_eq!(noop["requests"]["source"], "client");
    assert_eq!(report["summary"]["noop_replica_requests"], 0);
    assert_eq!(report["summary"]["all_verified"], true);

    // The benchmark's repositories are gone everywhere...
    let corpus = Corpus::generate(&tiny_spec()).await;
    for url in std::iter::once(cluster.primary.url()).chain(cluster.replica_urls()) {
        let r = client(&url);
        for t in &corpus.tags {
            let repo = &t.repository;
            let head = r
                .head_manifest(repo, &t.tag, &Scope::pull(repo))
                .await
                .unwrap();
            assert!(head.is_none(), "{url} still has {repo}:{}", t.tag);
        }
        for (repo, blobs) in &corpus.blobs {
            for d in blobs.keys() {
                let b = r.head_blob(repo, d, &Scope::pull(repo)).await.unwrap();
                assert!(b.is_none(), "{url} still has blob {repo}@{d}");
            }
        }
    }
    // ...and the operator's content is untouched, and was not copied.
    let scope = Scope::pull("team/app");
    let head = p.head_manifest("team/app", "1", &scope).await.unwrap();
    assert_eq!(head.map(|h| h.digest), Some(theirs.digest.clone()));
    let r0 = client(&cluster.replicas[0].url());
    assert!(
        r0.head_manifest("team/app", "1", &scope)
            .await
            .unwrap()
            .is_some()
    );
    let r1 = client(&cluster.replicas[1].url());
    assert!(
        r1.head_manifest("team/app", "1", &scope)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_region_serving_corrupt_bytes_fails_the_run() {
    let cluster = Cluster::start(2).await;
    let corpus = Corpus::generate(&tiny_spec()).await;
    let blob = corpus
        .blobs
        .values()
        .next()
        .unwrap()
        .values()
        .next()
        .unwrap();
    // Region 1 flips a byte of this blob whenever it is read back.
    let (_proxy, config) = cluster
        .config_with_faulty_region(
            1,
            Faults {
                tamper_blob: Some(blob.digest.clone()),
                ..Faults::default()
            },
        )
        .await;
    let (code, report, stderr) =
        bench(&["--config", config.to_str().unwrap(), "--skopeo", "never"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["summary"]["all_verified"], false);
    for kind in ["raw", "georep"] {
        let r = runs(&report, kind)[0];
        assert_eq!(r["verified"], false, "{kind}");
        assert!(
            r["mib_per_sec"].is_null(),
            "{kind}: a failed run has no throughput"
        );
        assert!(r["ratio_to_raw"].is_null(), "{kind}");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.contains("japaneast") && e.contains(blob.digest.as_str()),
            "{e}"
        );
        assert!(e.contains("digest mismatch"), "{e}");
    }
    assert!(
        report["summary"]["georep_vs_raw"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_usage_exits_2_and_names_the_problem() {
    for (args, needle) in [
        (
            vec!["bench", "--config", "/nonexistent/georep.yaml"],
            "/nonexistent/georep.yaml",
        ),
        (vec!["bench", "--preset", "test"], "small, medium or large"),
        (
            vec!["bench", "--layer-size", "lots"],
            "--layer-size \"lots\"",
        ),
        (
            vec!["bench", "--big-layer-size", "2MiB..1MiB"],
            "maximum is below the minimum",
        ),
        (vec!["bench", "--sweep", "1,0"], "at least 1"),
        (
            vec!["bench", "--sweep", "1,2", "--concurrency", "4"],
            "cannot be used with",
        ),
    ] {
        let out = georep(&args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
