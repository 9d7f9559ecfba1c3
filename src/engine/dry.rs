//! `georep sync --dry-run`: the pass runs as usual — the listing, the diff
//! against the store, the HEADs that ask the regions (reads only) — but each
//! write is replaced by an entry in the plan, and counted as the write it
//! stands for. What a dry run learns by reading is true and is remembered
//! in an existing store; nothing else is recorded (not even that a pass
//! ran), and with no store yet it plans on a temporary one, so no state
//! directory is created.
//!
//! The plan also stands in for the facts a real pass would have gained: a
//! blob planned for a repository is not counted again for the next image,
//! and one planned in another repository of the region would be mounted.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::digest::Digest;
use crate::lock::Locked;
use crate::store::RegionId;

/// What one dry run has planned so far (see [`super::pass::Pass`]).
#[derive(Default)]
pub struct Plan {
    sets: Mutex<Sets>,
}

#[derive(Default)]
struct Sets {
    blobs: HashSet<(RegionId, String, Digest)>,
    digests: HashSet<(RegionId, Digest)>,
    manifests: HashSet<(RegionId, String, Digest)>,
}

/// What a planned blob would cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPlan {
    /// Planned already for this repository.
    Planned,
    /// Planned in another repository of the region: a mount.
    Mount,
    /// New to the region: an upload (or a mount, if the store knows
    /// another repository holding it).
    New,
}

impl Plan {
    pub fn blob(&self, r: RegionId, repo: &str, digest: &Digest) -> BlobPlan {
        let mut s = self.sets.locked();
        if !s.blobs.insert((r, repo.to_owned(), digest.clone())) {
            BlobPlan::Planned
        } else if !s.digests.insert((r, digest.clone())) {
            BlobPlan::Mount
        } else {
            BlobPlan::New
        }
    }

    /// Plans manifest `digest` in `repo` of region `r`; `false` if it was
    /// planned already.
    pub fn manifest(&self, r: RegionId, repo: &str, digest: &Digest) -> bool {
        let mut s = self.sets.locked();
        s.manifests.insert((r, repo.to_owned(), digest.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_uploaded_once_per_region_then_mounted() {
        let p = Plan::default();
        let d = Digest::sha256_of(b"x");
        assert_eq!(p.blob(0, "a", &d), BlobPlan::New);
        assert_eq!(p.blob(0, "a", &d), BlobPlan::Planned);
        assert_eq!(p.blob(0, "b", &d), BlobPlan::Mount);
        assert_eq!(p.blob(1, "b", &d), BlobPlan::New);
        assert!(p.manifest(0, "a", &d));
        assert!(!p.manifest(0, "a", &d));
    }
}
