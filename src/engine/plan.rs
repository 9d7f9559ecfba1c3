//! Listing the primary: repositories (filtered), their tags, and the digest
//! each tag points at, grouped into one job per (repository, digest).

use std::collections::BTreeMap;

use futures::StreamExt;

use super::Engine;
use super::report::Failure;
use crate::digest::Digest;
use crate::registry::{Scope, names};

/// Repositories whose tags are listed at once.
const LIST_CONCURRENCY: usize = 8;

/// One manifest of the primary and the tags that point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageJob {
    pub repository: String,
    pub digest: Digest,
    pub tags: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Listing {
    pub repositories: usize,
    pub tags: usize,
    pub images: Vec<ImageJob>,
    pub failures: Vec<Failure>,
}

impl Engine {
    /// Lists the primary. Failures to list a repository are reported and
    /// that repository is left alone; the others go on.
    pub async fn list_primary(&self) -> Listing {
        let primary_failure =
            |repository: Option<String>, tag: Option<String>, cause: String| Failure {
                region: self.primary.name().to_owned(),
                repository,
                tag,
                digest: None,
                cause,
            };
        let mut listing = Listing::default();
        let repositories = match self.primary.catalog().await {
            Ok(r) => r,
            Err(e) => {
                listing.failures.push(primary_failure(
                    None,
                    None,
                    format!("listing the primary's repositories failed: {e:#}"),
                ));
                return listing;
            }
        };
        let mut wanted = Vec::new();
        for repo in repositories {
            if !self.filter.allows(&repo) {
                continue;
            }
            match names::check_repository(&repo) {
                Ok(()) => wanted.push(repo),
                Err(why) => listing.failures.push(primary_failure(
                    Some(repo),
                    None,
                    format!("skipped: {why}"),
                )),
            }
        }
        listing.repositories = wanted.len();

        let mut per_repo = futures::stream::iter(wanted)
            .map(|repo| async move {
                let tags = self
                    .primary
                    .tags(&repo, &Scope::pull(&repo))
                    .await
                    .map(Option::unwrap_or_default);
                (repo, tags)
            })
            .buffer_unordered(LIST_CONCURRENCY);
        let mut to_resolve = Vec::new();
        while let Some((repo, tags)) = per_repo.next().await {
            match tags {
                Err(e) => listing.failures.push(primary_failure(
                    Some(repo.clone()),
                    None,
                    format!("listing tags failed: {e:#}"),
                )),
                Ok(tags) => {
                    for tag in tags {
                        match names::check_tag(&tag) {
                            Ok(()) => to_resolve.push((repo.clone(), tag)),
                            Err(why) => listing.failures.push(primary_failure(
                                Some(repo.clone()),
                                Some(tag),
                                format!("skipped: {why}"),
                            )),
                        }
                    }
                }
            }
        }
        drop(per_repo);

        let mut resolved = futures::stream::iter(to_resolve)
            .map(|(repo, tag)| async move {
                let head = self
                    .primary
                    .head_manifest(&repo, &tag, &Scope::pull(&repo))
                    .await;
                (repo, tag, head)
            })
            .buffer_unordered(self.primary_request_concurrency());
        let mut groups: BTreeMap<(String, Digest), Vec<String>> = BTreeMap::new();
        while let Some((repo, tag, head)) = resolved.next().await {
            match head {
                Ok(Some(h)) => {
                    listing.tags += 1;
                    groups.entry((repo, h.digest)).or_default().push(tag);
                }
                // Deleted between listing and now: nothing to replicate.
                Ok(None) => {
                    tracing::debug!(repository = %repo, %tag, "tag vanished from the primary")
                }
                Err(e) => listing.failures.push(primary_failure(
                    Some(repo),
                    Some(tag),
                    format!("resolving the tag on the primary failed: {e:#}"),
                )),
            }
        }
        listing.images = groups
            .into_iter()
            .map(|((repository, digest), mut tags)| {
                tags.sort();
                ImageJob {
                    repository,
                    digest,
                    tags,
                }
            })
            .collect();
        listing
    }

    fn primary_request_concurrency(&self) -> usize {
        // Enough to keep the primary's request limit busy without queueing
        // thousands of futures.
        32
    }
}
