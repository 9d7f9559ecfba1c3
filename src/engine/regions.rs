//! Any-region mode's listing: every region that accepts pushes is listed
//! (catalog, tags, a `HEAD` per tag for its digest), once, and each
//! repository is handed over with what every region serves in it. The
//! daemon's reconcile gives these to the merge; `georep sync` decides on
//! them here ([`Engine::jobs_of`]) and copies.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::Engine;
use super::listing::{ImageJob, Listing};
use super::report::Failure;
use super::source::Source;
use crate::digest::Digest;
use crate::merge::{Change, Rules, Site, Verdict, decide};
use crate::registry::{Registry, Scope, names};

/// Repositories listed at once.
const LIST_CONCURRENCY: usize = 4;
/// Tag HEADs in flight per repository and region.
const RESOLVE_CONCURRENCY: usize = 8;

/// One repository as every region lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoListing {
    pub repository: String,
    /// Per region: its tags and the digest of each, or `None` where it was
    /// not listed (it accepts no pushes, or listing it failed).
    pub regions: Vec<Option<BTreeMap<String, Digest>>>,
}

impl RepoListing {
    /// Every tag any region lists.
    pub fn tags(&self) -> BTreeSet<&String> {
        self.regions
            .iter()
            .flatten()
            .flat_map(|m| m.keys())
            .collect()
    }

    /// Per region, what it serves under `tag` (`Some(None)`: not there),
    /// or `None` where it was not listed.
    pub fn listed(&self, tag: &str) -> Vec<Option<Option<Digest>>> {
        self.regions
            .iter()
            .map(|m| m.as_ref().map(|m| m.get(tag).cloned()))
            .collect()
    }
}

impl Engine {
    /// Lists every region that accepts pushes (of repository `only`, when
    /// given), sending one [`RepoListing`] per repository as each is
    /// resolved. A repository a region failed to list is sent with that
    /// region as not listed, and the failure reported.
    pub async fn list_regions(
        &self,
        only: Option<&str>,
        out: mpsc::Sender<RepoListing>,
    ) -> Listing {
        let mut listing = Listing::default();
        let writable: Vec<usize> = (0..self.regions.len())
            .filter(|&r| self.writable[r])
            .collect();
        let mut repositories: BTreeSet<String> = BTreeSet::new();
        // A region whose catalog failed is not listed at all this time.
        let mut listed_regions = Vec::new();
        match only {
            Some(repo) => {
                repositories.insert(repo.to_owned());
                listed_regions = writable.clone();
            }
            None => {
                // Repositories of the base too: one gone from every
                // catalog had its tags deleted everywhere.
                repositories.extend(self.facts.store().primary_repositories());
                let catalogs =
                    futures::future::join_all(writable.iter().map(|&r| self.regions[r].catalog()))
                        .await;
                for (&r, catalog) in writable.iter().zip(catalogs) {
                    match catalog {
                        Ok(repos) => {
                            listed_regions.push(r);
                            repositories.extend(repos);
                        }
                        Err(e) => listing.failures.push(failure(
                            &self.regions[r],
                            None,
                            format!("listing the region's repositories failed: {e:#}"),
                        )),
                    }
                }
            }
        }
        let wanted = self.wanted(repositories, &mut listing, "regions");
        let listed_regions = &listed_regions;
        let mut per_repo = futures::stream::iter(wanted)
            .map(|repo| async move { self.list_repository_everywhere(repo, listed_regions).await })
            .buffer_unordered(LIST_CONCURRENCY);
        while let Some((repo, failures)) = per_repo.next().await {
            listing.tags += repo.tags().len();
            listing.failures.extend(failures);
            if out.send(repo).await.is_err() {
                break;
            }
        }
        listing
    }

    async fn list_repository_everywhere(
        &self,
        repo: String,
        listed: &[usize],
    ) -> (RepoListing, Vec<Failure>) {
        let mut out = RepoListing {
            repository: repo.clone(),
            regions: vec![None; self.regions.len()],
        };
        let mut failures = Vec::new();
        let results =
            futures::future::join_all(listed.iter().map(|&r| list_tags(&self.regions[r], &repo)))
                .await;
        for (&r, result) in listed.iter().zip(results) {
            match result {
                Ok((tags, skipped)) => {
                    failures.extend(skipped);
                    out.regions[r] = Some(tags);
                }
                Err(f) => failures.push(f),
            }
        }
        (out, failures)
    }

    /// `georep sync` in any-region mode: what one repository's listing
    /// asks for, as image jobs (each read from the region whose digest
    /// wins). A pass sees states, not pushes: what differs from the base
    /// and from what georep wrote is a change, and a conflict is decided
    /// by the configured order. Tags every region agrees on become the
    /// base. Deletes are left to the daemon.
    pub fn jobs_of(&self, repo: &RepoListing, rules: &Rules) -> Vec<ImageJob> {
        let store = self.facts.store();
        let mut jobs: BTreeMap<(Digest, usize), Vec<String>> = BTreeMap::new();
        for tag in repo.tags() {
            let listed = repo.listed(tag);
            if listed.iter().all(Option::is_none) {
                continue;
            }
            let base = store
                .primary_tag(&repo.repository, tag)
                .filter(|t| t.deleted_at.is_none())
                .map(|t| t.digest);
            let sites: Vec<Site> = listed
                .iter()
                .enumerate()
                .map(|(r, l)| {
                    let wrote = store
                        .manifest(r, &repo.repository, tag)
                        .and_then(|f| f.written())
                        .map(|f| f.digest);
                    match l {
                        // No tag where georep never knew the region to
                        // hold it is a region behind, not a delete.
                        Some(now) => Site {
                            current: now.clone(),
                            change: (*now != base
                                && *now != wrote
                                && (now.is_some() || wrote.is_some()))
                            .then(|| Change {
                                digest: now.clone(),
                                at_ns: None,
                            }),
                        },
                        None => Site {
                            current: wrote.or_else(|| base.clone()),
                            change: None,
                        },
                    }
                })
                .collect();
            let rules = Rules {
                propagate_deletes: false,
                ..rules.clone()
            };
            match decide(base.as_ref(), &sites, &rules) {
                Verdict::Agreed(d) => {
                    // The new base; and what each region holds is known.
                    let recorded = match &d {
                        Some(d) => (0..listed.len())
                            .filter(|&r| {
                                store
                                    .manifest(r, &repo.repository, tag)
                                    .map(|f| f.digest)
                                    .as_ref()
                                    != Some(d)
                            })
                            .try_for_each(|r| store.record_manifest(r, &repo.repository, tag, d))
                            .and_then(|()| {
                                store.record_primary_tag(&repo.repository, tag, d, None)
                            }),
                        None => store.tombstone_primary_tag(&repo.repository, tag),
                    };
                    if let Err(e) = recorded {
                        tracing::warn!("recording {}:{tag} failed: {e:#}", repo.repository);
                    }
                }
                Verdict::Copy {
                    digest,
                    source,
                    conflict,
                    ..
                } => {
                    if let Some(c) = conflict {
                        let losers: Vec<String> = c
                            .losers
                            .iter()
                            .map(|p| {
                                format!("{} holds {}", self.regions[p.region].name(), p.digest)
                            })
                            .collect();
                        tracing::warn!(
                            "conflict on {}:{tag}: {} holds {}; {}; {} wins by conflicts.order",
                            repo.repository,
                            self.regions[source].name(),
                            digest,
                            losers.join("; "),
                            self.regions[source].name()
                        );
                    }
                    jobs.entry((digest, source)).or_default().push(tag.clone());
                }
                Verdict::Delete { .. } => {}
            }
        }
        jobs.into_iter()
            .map(|((digest, source), tags)| ImageJob {
                repository: repo.repository.clone(),
                digest,
                tags,
                source: Source::Region(source),
            })
            .collect()
    }
}

/// One region's tags of `repo` and the digest of each; tags with invalid
/// names are reported and left out.
async fn list_tags(
    reg: &Registry,
    repo: &str,
) -> Result<(BTreeMap<String, Digest>, Vec<Failure>), Failure> {
    let scope = Scope::pull(repo);
    let tags = reg
        .tags(repo, &scope)
        .await
        .map_err(|e| failure(reg, Some(repo), format!("listing tags failed: {e:#}")))?
        .unwrap_or_default();
    let mut skipped = Vec::new();
    let mut valid = Vec::new();
    for tag in tags {
        match names::check_tag(&tag) {
            Ok(()) => valid.push(tag),
            Err(why) => skipped.push(Failure {
                tag: Some(tag),
                ..failure(reg, Some(repo), format!("skipped: {why}"))
            }),
        }
    }
    let scope = &scope;
    let mut heads = futures::stream::iter(valid)
        .map(|tag| async move {
            let head = reg.head_manifest(repo, &tag, scope).await;
            (tag, head)
        })
        .buffer_unordered(RESOLVE_CONCURRENCY);
    let mut out = BTreeMap::new();
    while let Some((tag, head)) = heads.next().await {
        match head {
            Ok(Some(h)) => {
                out.insert(tag, h.digest);
            }
            // Deleted between the listing and the HEAD.
            Ok(None) => {}
            // One tag unknown makes the whole repository unknown here: a
            // tag missing from a listing would read as deleted.
            Err(e) => {
                return Err(failure(
                    reg,
                    Some(repo),
                    format!("resolving {repo}:{tag} failed: {e:#}"),
                ));
            }
        }
    }
    Ok((out, skipped))
}

fn failure(reg: &Registry, repository: Option<&str>, cause: String) -> Failure {
    Failure {
        region: reg.name().to_owned(),
        repository: repository.map(str::to_owned),
        tag: None,
        digest: None,
        cause,
    }
}
