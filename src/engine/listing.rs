//! Listing the primary: repositories (filtered), their tags, and the digest
//! each tag points at, grouped into one job per (repository, digest).
//!
//! Jobs are handed over as soon as their repository is resolved, through a
//! bounded queue, so copying starts while the rest of a large registry is
//! still being listed, and a slow copy slows the listing down rather than
//! letting jobs pile up in memory.

use std::collections::BTreeMap;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::Engine;
use super::report::Failure;
use super::source::Source;
use crate::digest::Digest;
use crate::registry::{Registry, Scope, names};

/// Repositories listed at once.
const LIST_CONCURRENCY: usize = 4;
/// Tag HEADs in flight per repository being listed.
const RESOLVE_CONCURRENCY: usize = 8;

/// One manifest of a source (the primary, or a region a change came
/// from) and the tags that point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageJob {
    pub repository: String,
    pub digest: Digest,
    pub tags: Vec<String>,
    /// Where it is read from.
    pub source: Source,
}

/// What listing found, apart from the jobs themselves.
#[derive(Debug, Default)]
pub struct Listing {
    pub repositories: usize,
    pub tags: usize,
    pub failures: Vec<Failure>,
}

impl Engine {
    /// Lists the primary, sending a job per image to `jobs` as each
    /// repository is resolved. Failures to list a repository or resolve a
    /// tag are reported and that item is left alone; the others go on.
    pub async fn list_primary(&self, jobs: mpsc::Sender<ImageJob>) -> Listing {
        self.list_primary_in(None, &|_| true, jobs).await
    }

    /// [`Engine::list_primary`], of one repository only when `only` names
    /// it (its catalog is not asked: a repository gone from the primary
    /// lists no tags, and its known tags are tombstoned), else of the
    /// repositories `within` says yes to (a cluster member's handover:
    /// the share it just gained).
    pub async fn list_primary_in(
        &self,
        only: Option<&str>,
        within: &(dyn Fn(&str) -> bool + Sync),
        jobs: mpsc::Sender<ImageJob>,
    ) -> Listing {
        let mut listing = Listing::default();
        let Some(primary) = self.primary.clone() else {
            listing.failures.push(self.primary_failure(
                None,
                None,
                "there is no primary to list (any-region mode)".to_owned(),
            ));
            return listing;
        };
        let primary = &primary;
        if let Some(repo) = only {
            listing.repositories = 1;
            let (tags, failures) = self.list_repository(primary, repo.to_owned(), jobs).await;
            listing.tags = tags;
            listing.failures = failures;
            return listing;
        }
        let repositories = match primary.catalog().await {
            Ok(r) => r,
            Err(e) => {
                listing.failures.push(self.primary_failure(
                    None,
                    None,
                    format!("listing the primary's repositories failed: {e:#}"),
                ));
                return listing;
            }
        };
        // Repositories gone from the catalog: their tags are tombstoned.
        for gone in self.facts.store().primary_repositories() {
            if self.filter.allows(&gone) && self.in_share(&gone) && !repositories.contains(&gone) {
                for tag in self.facts.primary_tags(&gone) {
                    self.facts.primary_tag_gone(&gone, &tag);
                }
            }
        }
        let mut wanted = self.wanted(repositories, &mut listing, primary.name());
        wanted.retain(|r| within(r));
        listing.repositories = wanted.len();

        let mut per_repo = futures::stream::iter(wanted)
            .map(|repo| {
                let jobs = jobs.clone();
                async move { self.list_repository(primary, repo, jobs).await }
            })
            .buffer_unordered(LIST_CONCURRENCY);
        while let Some((tags, failures)) = per_repo.next().await {
            listing.tags += tags;
            listing.failures.extend(failures);
        }
        listing
    }

    /// Lists and resolves one repository; sends its jobs. Returns the number
    /// of tags resolved and the failures.
    async fn list_repository(
        &self,
        primary: &Registry,
        repo: String,
        jobs: mpsc::Sender<ImageJob>,
    ) -> (usize, Vec<Failure>) {
        let mut failures = Vec::new();
        let tags = match primary.tags(&repo, &Scope::pull(&repo)).await {
            Ok(t) => {
                let t = t.unwrap_or_default();
                for known in self.facts.primary_tags(&repo) {
                    if !t.contains(&known) {
                        self.facts.primary_tag_gone(&repo, &known);
                    }
                }
                t
            }
            Err(e) => {
                failures.push(self.primary_failure(
                    Some(repo),
                    None,
                    format!("listing tags failed: {e:#}"),
                ));
                return (0, failures);
            }
        };
        let mut valid = Vec::new();
        for tag in tags {
            match names::check_tag(&tag) {
                Ok(()) => valid.push(tag),
                Err(why) => failures.push(self.primary_failure(
                    Some(repo.clone()),
                    Some(tag),
                    format!("skipped: {why}"),
                )),
            }
        }
        let repo_ref = &repo;
        let mut resolved = futures::stream::iter(valid)
            .map(|tag| async move {
                let head = primary
                    .head_manifest(repo_ref, &tag, &Scope::pull(repo_ref))
                    .await;
                (tag, head)
            })
            .buffer_unordered(RESOLVE_CONCURRENCY);
        let mut groups: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        let mut count = 0;
        while let Some((tag, head)) = resolved.next().await {
            match head {
                Ok(Some(h)) => {
                    count += 1;
                    self.facts
                        .primary_tag(&repo, &tag, &h.digest, h.media_type.as_deref());
                    groups.entry(h.digest).or_default().push(tag);
                }
                // Deleted between listing and now: nothing to replicate.
                Ok(None) => {
                    tracing::debug!(repository = %repo, %tag, "tag vanished from the primary");
                    self.facts.primary_tag_gone(&repo, &tag);
                }
                Err(e) => failures.push(self.primary_failure(
                    Some(repo.clone()),
                    Some(tag),
                    format!("resolving the tag on the primary failed: {e:#}"),
                )),
            }
        }
        drop(resolved);
        for (digest, mut tags) in groups {
            tags.sort();
            let job = ImageJob {
                repository: repo.clone(),
                digest,
                tags,
                source: Source::Primary,
            };
            // The receiver lives as long as the pass.
            if jobs.send(job).await.is_err() {
                break;
            }
        }
        (count, failures)
    }

    /// The repositories of `listed` the config selects and whose names are
    /// valid (an invalid one is a failure of `source`, and skipped);
    /// counted in `listing`.
    pub(super) fn wanted(
        &self,
        listed: impl IntoIterator<Item = String>,
        listing: &mut Listing,
        source: &str,
    ) -> Vec<String> {
        let mut wanted = Vec::new();
        for repo in listed {
            if !self.filter.allows(&repo) || !self.in_share(&repo) {
                continue;
            }
            match names::check_repository(&repo) {
                Ok(()) => wanted.push(repo),
                Err(why) => listing.failures.push(Failure {
                    region: source.to_owned(),
                    repository: Some(repo),
                    tag: None,
                    digest: None,
                    cause: format!("skipped: {why}"),
                }),
            }
        }
        listing.repositories = wanted.len();
        wanted
    }

    fn primary_failure(
        &self,
        repository: Option<String>,
        tag: Option<String>,
        cause: String,
    ) -> Failure {
        Failure {
            region: self
                .primary
                .as_ref()
                .map_or("primary", |p| p.name())
                .to_owned(),
            repository,
            tag,
            digest: None,
            cause,
        }
    }
}
