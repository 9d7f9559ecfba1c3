//! The registry client against a real registry: mounts (both answers),
//! upload sessions, manifests by tag and digest, listings.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use georep::registry::{Mount, Scope};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_answers_created_or_opens_a_session_to_use_or_cancel() {
    let cluster = Cluster::start(0).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(21)).await;
    let reg = client(&cluster.primary.url());
    let (repo, blob) = corpus
        .blobs
        .iter()
        .find_map(|(r, b)| b.keys().next().map(|d| (r.clone(), d.clone())))
        .unwrap();

    // From a repository that holds it: mounted.
    match reg.mount_blob("elsewhere/a", &blob, &repo).await.unwrap() {
        Mount::Mounted => {}
        other => panic!("expected a mount, got {other:?}"),
    }
    assert!(
        reg.head_blob("elsewhere/a", &blob, &Scope::pull("elsewhere/a"))
            .await
            .unwrap()
            .is_some()
    );

    // From a repository that does not exist: the registry opens an upload
    // session instead, which can be cancelled.
    match reg
        .mount_blob("elsewhere/b", &blob, "no/such/repo")
        .await
        .unwrap()
    {
        Mount::Session(s) => {
            reg.cancel_upload(&s).await;
            assert!(
                cluster
                    .primary
                    .count_settled("DELETE", "/v2/elsewhere/b/blobs/uploads/")
                    .await
                    == 1
            );
        }
        Mount::Mounted => panic!("mounted from a repository that does not exist"),
    }
    assert!(
        reg.head_blob("elsewhere/b", &blob, &Scope::pull("elsewhere/b"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_come_back_verbatim_and_listings_are_complete() {
    let cluster = Cluster::start(0).await;
    let corpus = push_corpus(&cluster.primary.url(), &quick_spec(22)).await;
    let reg = client(&cluster.primary.url());

    let mut repos = reg.catalog().await.unwrap();
    repos.sort();
    let mut want: Vec<String> = corpus.manifests.keys().cloned().collect();
    want.sort();
    assert_eq!(repos, want);

    for t in &corpus.tags {
        let m = reg
            .get_manifest(&t.repository, &t.tag, &Scope::pull(&t.repository))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.digest, t.digest);
        assert_eq!(m.media_type, t.media_type);
        let pushed = corpus.manifests[&t.repository]
            .iter()
            .find(|p| p.digest == t.digest)
            .unwrap();
        assert_eq!(
            m.bytes, pushed.bytes,
            "{}:{} not verbatim",
            t.repository, t.tag
        );
    }
    assert_eq!(
        reg.tags("no/such/repo", &Scope::pull("no/such/repo"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        reg.head_manifest("library/base", "no-such-tag", &Scope::pull("library/base"))
            .await
            .unwrap(),
        None
    );
}
