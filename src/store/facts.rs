//! The facts the store keeps: what the primary lists (tags and the digest
//! each points at, tombstones for tags gone) and what each region
//! acknowledged (manifests by reference, blobs by repository). Written only
//! after the registry said so (DESIGN invariant 4); read by the engine's
//! `Facts`, which decides how far a pass trusts them.

use std::collections::BTreeMap;

use super::{
    BlobRepos, ManifestFact, PrimaryTag, RegionId, RegionOnly, Store, StoreError, decode, encode,
    key, now_unix, now_unix_ms, split_key,
};
use crate::digest::Digest;

impl Store {
    // --- the primary -------------------------------------------------------

    pub fn primary_tag(&self, repository: &str, tag: &str) -> Option<PrimaryTag> {
        self.primary
            .get(key(repository, tag))
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// Records that the primary lists `repository:tag` at `digest`.
    pub fn record_primary_tag(
        &self,
        repository: &str,
        tag: &str,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<(), StoreError> {
        let rec = PrimaryTag {
            digest: digest.clone(),
            media_type: media_type.map(str::to_owned),
            seen_at: now_unix(),
            deleted_at: None,
        };
        self.primary
            .insert(key(repository, tag), encode(&rec))
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Tags of `repository` the store knows on the primary (live ones).
    pub fn primary_tags(&self, repository: &str) -> BTreeMap<String, PrimaryTag> {
        let mut prefix = repository.as_bytes().to_vec();
        prefix.push(0);
        self.primary
            .scan_prefix(&prefix)
            .filter_map(Result::ok)
            .filter_map(|(k, v)| Some((split_key(&k)?.1, decode::<PrimaryTag>(&v)?)))
            .filter(|(_, t)| t.deleted_at.is_none())
            .collect()
    }

    /// Repositories with at least one live tag on the primary.
    pub fn primary_repositories(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, v) in self.primary.iter().filter_map(Result::ok) {
            let Some((repo, _)) = split_key(&k) else {
                continue;
            };
            let live = decode::<PrimaryTag>(&v).is_some_and(|t| t.deleted_at.is_none());
            if live && out.last() != Some(&repo) {
                out.push(repo);
            }
        }
        out
    }

    /// Marks a tag as gone from the primary (kept as a tombstone).
    pub fn tombstone_primary_tag(&self, repository: &str, tag: &str) -> Result<(), StoreError> {
        if let Some(mut t) = self.primary_tag(repository, tag)
            && t.deleted_at.is_none()
        {
            t.deleted_at = Some(now_unix());
            self.primary
                .insert(key(repository, tag), encode(&t))
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Every tag the primary had at the last listing, tombstones included.
    pub fn all_primary_tags(&self) -> impl Iterator<Item = (String, String, PrimaryTag)> + '_ {
        self.primary
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let (repo, tag) = split_key(&k)?;
                Some((repo, tag, decode(&v)?))
            })
    }

    // --- regions -----------------------------------------------------------

    pub fn region_name(&self, r: RegionId) -> &str {
        &self.regions[r].name
    }

    /// What region `r` holds under `reference` (a tag or a digest).
    pub fn manifest(&self, r: RegionId, repository: &str, reference: &str) -> Option<ManifestFact> {
        self.regions[r]
            .manifests
            .get(key(repository, reference))
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// The diff of one listed tag: the regions of `0..regions` that the
    /// store does not say hold `digest` under `repository:tag`.
    pub fn regions_behind(
        &self,
        regions: usize,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Vec<RegionId> {
        (0..regions)
            .filter(|&r| {
                self.manifest(r, repository, tag)
                    .is_none_or(|f| &f.digest != digest)
            })
            .collect()
    }

    pub fn has_manifest(&self, r: RegionId, repository: &str, digest: &Digest) -> bool {
        self.manifest(r, repository, digest.as_str()).is_some()
    }

    /// Records that region `r` acknowledged `digest` under `reference`.
    pub fn record_manifest(
        &self,
        r: RegionId,
        repository: &str,
        reference: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.record_manifest_as(r, repository, reference, digest, false)
    }

    /// Records that region `r` was found holding `digest` under
    /// `reference` (a `HEAD`), which georep did not write.
    pub fn record_manifest_seen(
        &self,
        r: RegionId,
        repository: &str,
        reference: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.record_manifest_as(r, repository, reference, digest, true)
    }

    fn record_manifest_as(
        &self,
        r: RegionId,
        repository: &str,
        reference: &str,
        digest: &Digest,
        seen: bool,
    ) -> Result<(), StoreError> {
        let fact = ManifestFact {
            digest: digest.clone(),
            at_ms: now_unix_ms(),
            seen,
        };
        self.regions[r]
            .manifests
            .insert(key(repository, reference), encode(&fact))
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Forgets what region `r` was thought to hold under `reference`.
    pub fn forget_manifest(
        &self,
        r: RegionId,
        repository: &str,
        reference: &str,
    ) -> Result<(), StoreError> {
        self.regions[r]
            .manifests
            .remove(key(repository, reference))
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Forgets manifest `digest` of `repository` in region `r`, by digest
    /// and under every tag recorded to point at it (it was deleted there).
    pub fn forget_manifest_and_tags(
        &self,
        r: RegionId,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let tree = &self.regions[r].manifests;
        for entry in tree.scan_prefix(key(repository, "")) {
            let (k, v) = entry.map_err(|e| self.io(e))?;
            if decode::<ManifestFact>(&v).is_none_or(|f| f.digest == *digest) {
                tree.remove(k).map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }

    /// Every (repository, reference, fact) of region `r`.
    pub fn region_manifests(
        &self,
        r: RegionId,
    ) -> impl Iterator<Item = (String, String, ManifestFact)> + '_ {
        self.regions[r]
            .manifests
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let (repo, reference) = split_key(&k)?;
                Some((repo, reference, decode(&v)?))
            })
    }

    /// Tags region `r` holds (as georep recorded) that the primary deleted
    /// since (its listing tombstoned them), of repositories `wanted`
    /// allows: what a delete held back (policy `ignore`, a dry run, a
    /// daemon that was down) left behind.
    pub fn only_in_region(&self, r: RegionId, wanted: impl Fn(&str) -> bool) -> Vec<RegionOnly> {
        self.region_manifests(r)
            .filter(|(repo, reference, _)| !reference.contains(':') && wanted(repo))
            .filter_map(|(repository, tag, fact)| {
                let deleted_at = self.primary_tag(&repository, &tag)?.deleted_at?;
                Some(RegionOnly {
                    repository,
                    tag,
                    digest: fact.digest,
                    deleted_on_primary_at: deleted_at,
                })
            })
            .collect()
    }

    fn blob_repos(&self, r: RegionId, digest: &Digest) -> BlobRepos {
        self.regions[r]
            .blobs
            .get(digest.as_str())
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
            .unwrap_or_default()
    }

    /// When region `r` acknowledged `digest` in `repository` (unix ms), if it did.
    pub fn blob(&self, r: RegionId, repository: &str, digest: &Digest) -> Option<u64> {
        self.blob_repos(r, digest).get(repository).copied()
    }

    pub fn has_blob(&self, r: RegionId, repository: &str, digest: &Digest) -> bool {
        self.blob(r, repository, digest).is_some()
    }

    /// Another repository of region `r` holding `digest`, to mount from.
    pub fn mount_source(&self, r: RegionId, digest: &Digest, repository: &str) -> Option<String> {
        self.blob_repos(r, digest)
            .into_keys()
            .find(|x| x != repository)
    }

    fn update_blob(
        &self,
        r: RegionId,
        digest: &Digest,
        f: impl Fn(&mut BlobRepos),
    ) -> Result<(), StoreError> {
        self.regions[r]
            .blobs
            .fetch_and_update(digest.as_str(), |old| {
                let mut repos: BlobRepos = old.and_then(decode).unwrap_or_default();
                f(&mut repos);
                if repos.is_empty() {
                    None
                } else {
                    Some(encode(&repos))
                }
            })
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Records that region `r` holds `digest` in `repository`.
    pub fn record_blob(
        &self,
        r: RegionId,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let now = now_unix_ms();
        self.update_blob(r, digest, |repos| {
            repos.insert(repository.to_owned(), now);
        })
    }

    /// Forgets `digest` in `repository` of region `r`.
    pub fn forget_blob(
        &self,
        r: RegionId,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.update_blob(r, digest, |repos| {
            repos.remove(repository);
        })
    }
}
