//! Facts learnt during this process about what each region holds: a blob is
//! in these repositories, a manifest is in that one. Written only after the
//! region acknowledged the fact (a 2xx on PUT or mount, or a HEAD that found
//! it), so it never lies (DESIGN invariant 4); used to skip repeated HEADs
//! and to pick a source repository for cross-repository mounts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::digest::Digest;

/// Region index, in config order.
pub type RegionId = usize;

#[derive(Default)]
pub struct Known {
    blobs: Mutex<HashMap<(RegionId, Digest), Vec<String>>>,
    manifests: Mutex<HashSet<(RegionId, String, Digest)>>,
}

impl Known {
    pub fn has_blob(&self, region: RegionId, repository: &str, digest: &Digest) -> bool {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs
            .get(&(region, digest.clone()))
            .is_some_and(|repos| repos.iter().any(|r| r == repository))
    }

    pub fn add_blob(&self, region: RegionId, repository: &str, digest: &Digest) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let repos = blobs.entry((region, digest.clone())).or_default();
        if !repos.iter().any(|r| r == repository) {
            repos.push(repository.to_owned());
        }
    }

    /// Forgets a blob in one repository, after the region said it is not
    /// there after all.
    pub fn forget_blob(&self, region: RegionId, repository: &str, digest: &Digest) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(repos) = blobs.get_mut(&(region, digest.clone())) {
            repos.retain(|r| r != repository);
        }
    }

    /// Another repository of `region` known to hold `digest`, to mount from.
    pub fn mount_source(
        &self,
        region: RegionId,
        digest: &Digest,
        repository: &str,
    ) -> Option<String> {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs
            .get(&(region, digest.clone()))?
            .iter()
            .find(|r| *r != repository)
            .cloned()
    }

    pub fn has_manifest(&self, region: RegionId, repository: &str, digest: &Digest) -> bool {
        let m = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        m.contains(&(region, repository.to_owned(), digest.clone()))
    }

    pub fn add_manifest(&self, region: RegionId, repository: &str, digest: &Digest) {
        let mut m = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((region, repository.to_owned(), digest.clone()));
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
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry((region, repository.to_owned()))
                .or_default()
                .clone()
        };
        cell.get_or_init(|| list).await.clone()
    }

    /// Forgets every listing: a new pass lists again.
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_source_is_another_repository() {
        let k = Known::default();
        let d = Digest::sha256_of(b"x");
        assert_eq!(k.mount_source(0, &d, "a"), None);
        k.add_blob(0, "a", &d);
        assert!(k.has_blob(0, "a", &d));
        assert!(!k.has_blob(1, "a", &d));
        assert_eq!(k.mount_source(0, &d, "a"), None);
        assert_eq!(k.mount_source(0, &d, "b"), Some("a".into()));
        k.forget_blob(0, "a", &d);
        assert_eq!(k.mount_source(0, &d, "b"), None);
    }
}
