//! What georep knows of each region, and how far to trust it this pass.
//!
//! [`Facts`] wraps the checkpoint store with the pass's policy: in a normal
//! pass a recorded fact is believed (no request is made to confirm it); in a
//! `--verify` pass nothing recorded before the pass is believed, every item
//! is asked again, and the answers rewrite the store (a fact that is no
//! longer true is forgotten). Facts acknowledged during the pass itself are
//! believed either way: asking again would mean writing the same blob link
//! twice, which the distribution registry does not survive under a
//! concurrent manifest push. Facts are written only after the region acknowledged them.
//! The store is a cache: a failed write is logged and costs a request later,
//! never a wrong answer.
//!
//! A region can lose what the store recorded (wiped, restored from an old
//! backup, cleaned by hand). When it refuses a manifest for lacking content
//! the store vouched for, or an audit finds a tag gone, that region's facts
//! of that repository are [distrusted](Facts::distrust): everything recorded
//! before is asked again (a read; nothing present is written twice), and a
//! refused copy is tried once more at once.
//!
//! [`RegionRepos`] holds, for one pass, each region's tag listing of each
//! repository, fetched only when the store cannot answer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::pass::Pass;
use crate::digest::Digest;
use crate::lock::Locked;
pub use crate::store::RegionId;
use crate::store::{Store, StoreError, now_unix_ms};

pub struct Facts {
    store: Arc<Store>,
    write_failed: AtomicBool,
    /// (region, repository) → unix ms before which its facts are not
    /// believed: the region refused a manifest for lacking content.
    distrusted: Mutex<HashMap<(RegionId, String), u64>>,
}

impl Facts {
    pub fn new(store: Arc<Store>) -> Facts {
        Facts {
            store,
            write_failed: AtomicBool::new(false),
            distrusted: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether a fact of region `r` about `repo` acknowledged at `at_ms`
    /// may be believed by `pass`.
    fn trusted(&self, pass: &Pass, r: RegionId, repo: &str, at_ms: u64) -> bool {
        if !pass.trusts(at_ms) {
            return false;
        }
        self.distrusted_at(r, repo)
            .is_none_or(|since| at_ms >= since)
    }

    fn distrusted_at(&self, r: RegionId, repo: &str) -> Option<u64> {
        let map = self.distrusted.locked();
        if map.is_empty() {
            return None;
        }
        map.get(&(r, repo.to_owned())).copied()
    }

    /// Region `r` refused a manifest of `repo` for lacking content the
    /// store recorded as present: nothing recorded of `r` and `repo` until
    /// now is believed any more (each item is asked again and the answers
    /// rewrite the store).
    pub fn distrust(&self, r: RegionId, repo: &str) {
        self.distrusted
            .locked()
            .insert((r, repo.to_owned()), now_unix_ms());
    }

    /// Whether [`Facts::distrust`] was called for `r` and `repo` at or
    /// after `since_ms`.
    pub fn distrusted_since(&self, r: RegionId, repo: &str, since_ms: u64) -> bool {
        self.distrusted_at(r, repo).is_some_and(|at| at >= since_ms)
    }

    /// The digest region `r` serves under `repo:tag`, if recorded and trusted.
    pub fn tag(&self, pass: &Pass, r: RegionId, repo: &str, tag: &str) -> Option<Digest> {
        self.store
            .manifest(r, repo, tag)
            .filter(|f| self.trusted(pass, r, repo, f.at_ms))
            .map(|f| f.digest)
    }

    pub fn has_manifest(&self, pass: &Pass, r: RegionId, repo: &str, digest: &Digest) -> bool {
        self.store
            .manifest(r, repo, digest.as_str())
            .is_some_and(|f| self.trusted(pass, r, repo, f.at_ms))
    }

    pub fn has_blob(&self, pass: &Pass, r: RegionId, repo: &str, digest: &Digest) -> bool {
        self.store
            .blob(r, repo, digest)
            .is_some_and(|at| self.trusted(pass, r, repo, at))
    }

    /// Another repository of `r` recorded to hold `digest`. Used even when
    /// verifying: a mount from a repository that lost the blob just fails
    /// and the blob is uploaded instead.
    pub fn mount_source(&self, r: RegionId, digest: &Digest, repo: &str) -> Option<String> {
        self.store.mount_source(r, digest, repo)
    }

    fn write(&self, what: &str, result: Result<(), StoreError>) {
        if let Err(e) = result {
            if self.write_failed.swap(true, Ordering::Relaxed) {
                tracing::debug!("recording {what} failed: {e:#}");
            } else {
                tracing::warn!(
                    "recording {what} failed (the pass goes on; the fact will be checked again next time): {e:#}"
                );
            }
        }
    }

    /// Region `r` acknowledged `digest` under `reference` (a tag or the digest).
    pub fn add_manifest(&self, r: RegionId, repo: &str, reference: &str, digest: &Digest) {
        self.write(
            "a manifest",
            self.store.record_manifest(r, repo, reference, digest),
        );
    }

    /// Region `r` was found holding `digest` under `reference` (a `HEAD`).
    pub fn saw_manifest(&self, r: RegionId, repo: &str, reference: &str, digest: &Digest) {
        self.write(
            "a manifest",
            self.store.record_manifest_seen(r, repo, reference, digest),
        );
    }

    pub fn forget_manifest(&self, r: RegionId, repo: &str, reference: &str) {
        self.write("a manifest", self.store.forget_manifest(r, repo, reference));
    }

    pub fn add_blob(&self, r: RegionId, repo: &str, digest: &Digest) {
        self.write("a blob", self.store.record_blob(r, repo, digest));
    }

    pub fn forget_blob(&self, r: RegionId, repo: &str, digest: &Digest) {
        self.write("a blob", self.store.forget_blob(r, repo, digest));
    }

    /// The primary lists `repo:tag` at `digest`.
    pub fn primary_tag(&self, repo: &str, tag: &str, digest: &Digest, media_type: Option<&str>) {
        let unchanged = self
            .store
            .primary_tag(repo, tag)
            .is_some_and(|t| t.deleted_at.is_none() && t.digest == *digest);
        if !unchanged {
            self.write(
                "the primary's tag",
                self.store.record_primary_tag(repo, tag, digest, media_type),
            );
        }
    }

    /// `repo:tag` is gone from the primary: keep it as a tombstone.
    pub fn primary_tag_gone(&self, repo: &str, tag: &str) {
        self.write("a deleted tag", self.store.tombstone_primary_tag(repo, tag));
    }

    /// Tags of `repo` the store believes the primary has.
    pub fn primary_tags(&self, repo: &str) -> Vec<String> {
        self.store.primary_tags(repo).into_keys().collect()
    }

    /// Makes the facts so far durable: called after each uploaded blob (so a
    /// crash does not cost the bytes again) and at the end of a pass.
    pub async fn flush(&self) {
        let r = self.store.flush().await;
        self.write("the store to disk", r);
    }

    /// Whether any store write failed during this process.
    pub fn had_write_errors(&self) -> bool {
        self.write_failed.load(Ordering::Relaxed)
    }
}

/// What a region's tag listing said about a repository when this pass
/// first looked.
#[derive(Clone, Debug)]
pub enum RepoState {
    /// The region does not know the repository: it holds none of its
    /// blobs or manifests, except what georep put there since (recorded
    /// in [`Known`]). No need to ask about each one.
    Absent,
    /// The repository exists with these tags.
    Tags(Arc<HashSet<String>>),
    /// The listing failed: ask about each item.
    Unknown,
}

/// Per pass: each region's view of each repository, listed once (the
/// first task to need it lists; the others wait for that answer).
/// One region's listing of one repository, filled by the first asker.
type Listing = Arc<OnceCell<RepoState>>;

#[derive(Default)]
pub struct RegionRepos {
    map: Mutex<HashMap<(RegionId, String), Listing>>,
}

impl RegionRepos {
    pub async fn get(
        &self,
        region: RegionId,
        repository: &str,
        list: impl std::future::Future<Output = RepoState>,
    ) -> RepoState {
        let cell = {
            let mut map = self.map.locked();
            map.entry((region, repository.to_owned()))
                .or_default()
                .clone()
        };
        cell.get_or_init(|| list).await.clone()
    }

    /// Forgets every listing: a new pass lists again.
    pub fn clear(&self) {
        self.map.locked().clear();
    }

    /// Forgets every region's listing of `repository`.
    pub fn forget(&self, repository: &str) {
        self.map.locked().retain(|(_, repo), _| repo != repository);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_repository_s_listings_are_forgotten_in_every_region_and_no_other() {
        let repos = RegionRepos::default();
        for (r, repo) in [(0, "a"), (1, "a"), (0, "b")] {
            repos.get(r, repo, async { RepoState::Absent }).await;
        }
        repos.forget("a");
        let tags = || RepoState::Tags(Arc::new(["v1".to_owned()].into_iter().collect()));
        for r in [0, 1] {
            let again = repos.get(r, "a", async { tags() }).await;
            assert!(matches!(again, RepoState::Tags(_)), "listed again");
        }
        let kept = repos.get(0, "b", async { tags() }).await;
        assert!(matches!(kept, RepoState::Absent), "b's listing stays");
    }

    /// Distrust covers one region and one repository, and only what was
    /// recorded before it: what the region acknowledges after is believed.
    #[test]
    fn distrust_is_per_region_and_repository_and_ends_with_new_facts() {
        let dir = tempfile::tempdir().unwrap();
        let regions = vec![
            ("eastus".to_owned(), "http://a".to_owned()),
            ("japaneast".to_owned(), "http://b".to_owned()),
        ];
        let facts = Facts::new(Arc::new(Store::open(dir.path(), &regions).unwrap()));
        let d = Digest::sha256_of(b"layer");
        for (r, repo) in [(0, "a"), (0, "b"), (1, "a")] {
            facts.add_blob(r, repo, &d);
            facts.add_manifest(r, repo, "v1", &d);
        }
        let pass = Pass::new(super::super::pass::Priority::Backfill);
        let before = now_unix_ms();
        std::thread::sleep(std::time::Duration::from_millis(2));
        facts.distrust(0, "a");
        assert!(facts.distrusted_since(0, "a", before));
        assert!(!facts.distrusted_since(0, "a", now_unix_ms() + 1));
        assert!(!facts.has_blob(&pass, 0, "a", &d));
        assert!(!facts.has_manifest(&pass, 0, "a", &d));
        assert_eq!(facts.tag(&pass, 0, "a", "v1"), None);
        // Other repositories of the region, and other regions, are believed.
        assert!(facts.has_blob(&pass, 0, "b", &d) && facts.has_blob(&pass, 1, "a", &d));
        assert_eq!(facts.tag(&pass, 1, "a", "v1"), Some(d.clone()));
        assert!(!facts.distrusted_since(1, "a", 0));
        // Acknowledged again: believed again.
        std::thread::sleep(std::time::Duration::from_millis(2));
        facts.add_blob(0, "a", &d);
        assert!(facts.has_blob(&pass, 0, "a", &d));
    }
}
