//! `georep sync` against real registries: a primary and replicas started as
//! `docker-registry` processes, the real binary, independent checks.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::proxy::{Fault, Faults, Proxy};
use common::*;
use georep::lab::localreg::{LocalAuth, LocalOptions};
use georep::registry::Scope;

/// Every shape is copied verbatim to every region; a second pass uploads
/// nothing and pushes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_every_shape_verbatim_then_second_pass_writes_nothing() {
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &test_spec(11)).await;
    let config = cluster.default_config();

    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "first sync failed: {report:#}");
    for r in &cluster.replicas {
        verify_region(&cluster.primary.url(), &r.url(), &corpus)
            .await
            .unwrap();
    }
    // One read per blob, fanned out: the primary served each unique blob
    // (including the 64 MiB one) about once, not once per region.
    let blob_gets = cluster.primary.count_requests("GET", "/blobs/sha256:");
    let uploads = report["regions"][0]["blobs_uploaded"].as_u64().unwrap() as usize;
    assert!(uploads > 0);
    assert!(
        blob_gets <= uploads,
        "{blob_gets} blob reads for {uploads} uploads per region: not fanned out"
    );

    // An independent client sees the same bytes under every tag.
    for t in &corpus.tags {
        for r in &cluster.replicas {
            let raw = skopeo_raw(&format!("{}/{}:{}", r.host(), t.repository, t.tag))
                .await
                .unwrap();
            assert_eq!(
                georep::digest::Digest::sha256_of(&raw),
                t.digest,
                "skopeo sees other bytes for {}:{} in {}",
                t.repository,
                t.tag,
                r.url()
            );
        }
    }

    let writes_before = futures::future::join_all(cluster.replicas.iter().map(writes)).await;
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "second sync failed: {report:#}");
    for (i, r) in cluster.replicas.iter().enumerate() {
        let region = &report["regions"][i];
        assert_eq!(region["blobs_uploaded"], 0, "{region:#}");
        assert_eq!(region["manifests_pushed"], 0, "{region:#}");
        assert_eq!(region["tags_copied"], 0, "{region:#}");
        assert_eq!(region["tags_in_sync"], corpus.tags.len(), "{region:#}");
        assert_eq!(
            writes(r).await,
            writes_before[i],
            "the second pass changed {}",
            r.url()
        );
    }
}

/// A blob corrupted on the way is refused: its upload is aborted, the
/// manifest that needs it is not pushed, the rest replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blob_is_refused_and_its_manifest_not_pushed() {
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(12)).await;
    let (repo, tag) = ("team/app/api", "v1");
    let bad = unique_layer(&corpus, repo, tag);
    let (_proxy, config) = cluster
        .config_with_faulty_primary(Faults {
            tamper_blob: Some(bad.clone()),
            ..Faults::default()
        })
        .await;

    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let failures = report["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    for f in failures {
        assert_eq!(f["repository"], repo, "{f:#}");
        assert_eq!(f["tag"], tag, "{f:#}");
        let cause = f["cause"].as_str().unwrap();
        assert!(
            cause.contains("digest mismatch") && cause.contains(bad.as_str()),
            "{cause}"
        );
    }
    let bad_digest = tag_digest(&corpus, repo, tag);
    for r in &cluster.replicas {
        let c = client(&r.url());
        assert_eq!(
            c.head_blob(repo, &bad, &Scope::pull(repo)).await.unwrap(),
            None,
            "corrupt blob committed in {}",
            r.url()
        );
        assert_eq!(
            c.head_manifest(repo, tag, &Scope::pull(repo))
                .await
                .unwrap(),
            None,
            "tag pointing at missing content in {}",
            r.url()
        );
        verify_tags(&cluster.primary.url(), &r.url(), &corpus, |t| {
            t.digest != bad_digest
        })
        .await
        .unwrap();
    }
}

/// A stopped region fails alone, named in the summary; the others complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_replica_fails_alone() {
    let mut cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(13)).await;
    cluster.replicas[1].stop().await;
    let config = cluster.default_config();

    let out = georep(&["sync", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("japaneast (unreachable)"), "{stdout}");
    assert!(stdout.contains(&cluster.replicas[1].url()), "{stdout}");
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(':'))
    {
        assert!(
            line.trim_start().starts_with("japaneast"),
            "failure outside japaneast: {line}"
        );
    }
    verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
        .await
        .unwrap();

    // When it comes back, the next pass completes it.
    cluster.replicas[1].restart().await.unwrap();
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["regions"][0]["blobs_uploaded"], 0);
    verify_region(&cluster.primary.url(), &cluster.replicas[1].url(), &corpus)
        .await
        .unwrap();
}

/// A region whose upload breaks mid-stream fails that blob alone: the
/// other region, fed by the same read, completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_failing_mid_stream_does_not_break_the_others() {
    let cluster = Cluster::start(2).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(17)).await;
    let (repo, tag) = ("team/app/web", "v2");
    let cut = unique_layer(&corpus, repo, tag);
    let (proxy, config) = cluster
        .config_with_faulty_region(
            1,
            Faults {
                cut_upload: Some(cut.clone()),
                ..Faults::default()
            },
        )
        .await;
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    for f in report["failures"].as_array().unwrap() {
        assert_eq!(f["region"], "japaneast", "{f:#}");
        assert_eq!(
            (f["repository"].as_str(), f["tag"].as_str()),
            (Some(repo), Some(tag))
        );
        assert!(f["cause"].as_str().unwrap().contains(cut.as_str()), "{f:#}");
    }
    verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
        .await
        .unwrap();
    let bad = tag_digest(&corpus, repo, tag);
    verify_tags(
        &cluster.primary.url(),
        &cluster.replicas[1].url(),
        &corpus,
        |t| t.digest != bad,
    )
    .await
    .unwrap();
    // The blob was read from the primary once for both regions, then again
    // only for the failing region's retries.
    let reads = cluster
        .primary
        .count_settled("GET", &format!("/blobs/{cut}"))
        .await;
    let attempts = proxy.count(&axum::http::Method::PUT, cut.hex());
    assert_eq!(reads, attempts, "one read per attempt, shared on the first");
}

/// A schema1 manifest on the primary is a clear error for that tag only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema1_tag_is_a_clear_error_and_the_rest_goes_on() {
    let cluster = Cluster::start(1).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(14)).await;
    let (_proxy, config) = cluster
        .config_with_faulty_primary(Faults {
            schema1_tag: Some(("library/base".into(), "v2".into())),
            ..Faults::default()
        })
        .await;
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report:#}");
    assert_eq!(failures[0]["tag"], "v2");
    assert!(
        failures[0]["cause"].as_str().unwrap().contains("schema1"),
        "{report:#}"
    );
    verify_tags(
        &cluster.primary.url(),
        &cluster.replicas[0].url(),
        &corpus,
        |t| !(t.repository == "library/base" && t.tag == "v2"),
    )
    .await
    .unwrap();
}

/// A primary that lists hostile repository names and tags: each is skipped
/// with a failure naming it, none reaches a URL (of the primary or the
/// region), and every valid image is replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_from_the_primary_are_refused_before_any_url() {
    let cluster = Cluster::start(1).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(16)).await;
    let repositories: Vec<String> = [
        "../../etc",
        "team/../../x",
        "UPPER/case",
        "a//b",
        "trailing/",
        "ns%2F..%2Fx",
        "é/app",
        "sp ace",
    ]
    .map(String::from)
    .to_vec();
    let tags: Vec<String> = [
        "../x",
        "a/b",
        "ÀB",
        ".hidden",
        "-dash",
        "x?y=1",
        &"t".repeat(129),
    ]
    .map(String::from)
    .to_vec();
    let (proxy, config) = cluster
        .config_with_faulty_primary(Faults {
            inject_names: Some((repositories.clone(), tags.clone())),
            ..Faults::default()
        })
        .await;
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let failures = report["failures"].as_array().unwrap();
    let repos_in_corpus: std::collections::BTreeSet<&str> =
        corpus.tags.iter().map(|t| t.repository.as_str()).collect();
    // One failure per hostile repository, one per hostile tag per real one.
    assert_eq!(
        failures.len(),
        repositories.len() + tags.len() * repos_in_corpus.len(),
        "{report:#}"
    );
    for f in failures {
        assert!(f["cause"].as_str().unwrap().contains("skipped"), "{f:#}");
        let named = f["tag"].as_str().or(f["repository"].as_str()).unwrap();
        assert!(
            repositories.iter().any(|r| r == named) || tags.iter().any(|t| t == named),
            "{f:#}"
        );
    }
    verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
        .await
        .unwrap();
    // No hostile name went into a request, on either side.
    let mut paths: Vec<String> = proxy
        .hits
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    paths.extend(
        cluster.replicas[0]
            .requests()
            .into_iter()
            .map(|(_, p, _)| p),
    );
    for p in &paths {
        let decoded = p.replace("%2F", "/").replace("%2f", "/");
        assert!(
            !decoded.contains("..") && !decoded.contains("UPPER") && !decoded.contains("//"),
            "{p}"
        );
    }
}

/// A manifest or listing body damaged once (flipped, cut short, stalled)
/// is read again within the pass: one pass completes the region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_damaged_once_is_read_again_in_the_same_pass() {
    let mut cluster = Cluster::start(1).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(17)).await;
    for (fragment, fault) in [
        ("/manifests/sha256:", Fault::Flip),
        ("/manifests/", Fault::Truncate),
        ("/manifests/", Fault::StallBody),
        ("/tags/list", Fault::Flip),
        ("/_catalog", Fault::Reset),
    ] {
        cluster.replicas[0].wipe().await.unwrap();
        let _ = std::fs::remove_dir_all(cluster.dir.path().join("state"));
        let proxy = Proxy::start(
            &cluster.primary.url(),
            Faults {
                first: Some((fragment.to_owned(), fault)),
                ..Faults::default()
            },
        )
        .await;
        let config = cluster.config(
            &proxy.url,
            &cluster.replica_urls(),
            "timeouts:\n  request_secs: 2\n  stall_secs: 1\n",
        );
        let (code, report) = sync_json(&config, &[]).await;
        assert_eq!(code, 0, "{fragment} {fault:?}: {report:#}");
        let injected = proxy.traffic.lock().unwrap().fault_counts();
        assert_eq!(injected.get(&fault), Some(&1), "{fragment} {fault:?}");
        verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
            .await
            .unwrap();
    }
}

/// Listings are followed across pages (`Link` headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_catalog_and_tag_pagination() {
    let cluster = Cluster::start(1).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(15)).await;
    let (proxy, config) = cluster
        .config_with_faulty_primary(Faults {
            page_size: Some(2),
            ..Faults::default()
        })
        .await;
    let (code, report) = sync_json(&config, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert!(proxy.count(&axum::http::Method::GET, "/v2/_catalog") >= 2);
    assert_eq!(report["primary"]["tags"], corpus.tags.len());
    verify_region(&cluster.primary.url(), &cluster.replicas[0].url(), &corpus)
        .await
        .unwrap();
}

/// A primary behind bearer-token auth and a region behind htpasswd basic
/// auth: scopes are requested per repository (and for the catalog), tokens
/// are cached, and everything replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_primary_and_basic_auth_region() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = common::token::TokenServer::start(dir.path(), "georep", "tokenpass").await;
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash_with_result("basicpass", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&htpasswd, format!("georep:{hash}\n")).unwrap();

    let token_auth = LocalAuth::Token {
        realm: tokens.realm.clone(),
        service: common::token::SERVICE.into(),
        issuer: common::token::ISSUER.into(),
        root_cert_bundle: tokens.cert_path.clone(),
    };
    let cluster = Cluster::start_with(
        1,
        LocalOptions {
            auth: Some(token_auth),
            ..LocalOptions::default()
        },
        |_| LocalOptions {
            auth: Some(LocalAuth::Htpasswd {
                path: htpasswd.clone(),
            }),
            ..LocalOptions::default()
        },
    )
    .await;

    // Push through an authenticated client.
    let corpus = georep::lab::corpus::Corpus::generate(&quick_spec(16)).await;
    corpus
        .push(&client_as(&cluster.primary.url(), "tokenpass"))
        .await
        .unwrap();

    let pw_file = dir.path().join("region-password");
    std::fs::write(&pw_file, "basicpass\n").unwrap();
    let extra = String::new();
    let mut yaml = format!(
        "state_dir: ./state\nprimary:\n  name: westeurope\n  url: {}\n  credentials:\n    username: georep\n    password_env: GEOREP_TEST_PRIMARY_PASSWORD\nregions:\n  - name: eastus\n    url: {}\n    credentials:\n      username: georep\n      password_file: {}\n",
        cluster.primary.url(),
        cluster.replicas[0].url(),
        pw_file.display()
    );
    yaml.push_str(&extra);
    let config = dir.path().join("georep.yaml");
    std::fs::write(&config, yaml).unwrap();

    let out = georep(
        &["sync", "--config", config.to_str().unwrap(), "--json"],
        &[("GEOREP_TEST_PRIMARY_PASSWORD", "tokenpass")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("tokenpass") && !stderr.contains("basicpass"));
    let requested: Vec<Vec<String>> = tokens.requests.lock().unwrap().clone();
    assert!(
        requested
            .iter()
            .any(|s| s == &vec!["registry:catalog:*".to_owned()])
    );
    assert!(
        requested
            .iter()
            .any(|s| s == &vec!["repository:team/app/api:pull".to_owned()]),
        "{requested:?}"
    );
    // Tokens are cached: far fewer token requests than registry requests.
    let registry_requests = cluster.primary.requests().len();
    assert!(
        requested.len() * 4 < registry_requests,
        "{} token requests for {registry_requests} registry requests",
        requested.len()
    );

    // Check the region through an authenticated client.
    let region = client_as(&cluster.replicas[0].url(), "basicpass");
    for t in &corpus.tags {
        let h = region
            .head_manifest(&t.repository, &t.tag, &Scope::pull(&t.repository))
            .await
            .unwrap();
        assert_eq!(
            h.map(|h| h.digest),
            Some(t.digest.clone()),
            "{}:{}",
            t.repository,
            t.tag
        );
    }

    // Wrong credentials: a clear error naming the registry, exit 1.
    let out = georep(
        &["sync", "--config", config.to_str().unwrap()],
        &[("GEOREP_TEST_PRIMARY_PASSWORD", "wrong")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("credentials of user \"georep\" refused"),
        "{stdout}"
    );
    let _ = Duration::ZERO;
}
