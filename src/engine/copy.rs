//! Copying one image — a manifest and everything under it — to the regions
//! that lack it, in the order that keeps every region consistent: blobs and
//! child manifests first, the manifest after them, tags last.

use std::collections::BTreeMap;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use tracing::Instrument;

use super::Engine;
use super::cause::Cause;
use super::facts::{RegionId, RepoState};
use super::listing::ImageJob;
use super::pass::Pass;
use super::report::TagState;
use super::source::Source;
use crate::digest::Digest;
use crate::registry::manifest::{Descriptor, Kind};
use crate::registry::{Manifest, Registry, Scope};
use crate::store::now_unix_ms;

/// Indexes of indexes (and subject chains) deeper than this are refused:
/// real images nest two or three levels; a hostile primary could nest more.
pub const MAX_NESTING: usize = 8;

/// What happened to one tag in one region.
#[derive(Clone, Debug)]
pub struct TagOutcome {
    pub region: RegionId,
    pub tag: String,
    pub state: TagState,
    pub failure: Option<Cause>,
}

/// Per region: done, or why not.
pub type RegionResults = BTreeMap<RegionId, Result<(), Cause>>;

impl Engine {
    /// Copies one image to every region (but its source) whose tags differ
    /// from the source's.
    pub async fn copy_image(&self, pass: &Pass, job: &ImageJob) -> Vec<TagOutcome> {
        let regions: Vec<RegionId> = self
            .region_ids()
            .into_iter()
            .filter(|&r| job.source != Source::Region(r))
            .collect();
        self.copy_image_to(pass, job, &regions).await
    }

    /// Copies one image from its source to those of `regions` whose tags
    /// differ.
    pub async fn copy_image_to(
        &self,
        pass: &Pass,
        job: &ImageJob,
        regions: &[RegionId],
    ) -> Vec<TagOutcome> {
        let span = tracing::info_span!("image", digest = %job.digest.short());
        let src = match self.source(job.source) {
            Ok(src) => src,
            Err(cause) => {
                return regions
                    .iter()
                    .flat_map(|&r| job.tags.iter().map(move |t| (r, t)))
                    .map(|(r, t)| failed(r, t.clone(), cause.clone()))
                    .collect();
            }
        };
        // The source may be among them: it holds the content, and gets
        // the tag back if it moved (any-region mode).
        let classes = self.speed_classes(regions);
        let copies = classes
            .iter()
            .map(|c| self.copy_image_inner(pass, src, job, c));
        join_all(copies)
            .instrument(span)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Makes manifest `digest` of `repo` (pushed without a tag) and
    /// everything under it present in each of `regions`.
    pub async fn copy_manifest_to(
        &self,
        pass: &Pass,
        source: Source,
        repo: &str,
        digest: &Digest,
        regions: &[RegionId],
    ) -> RegionResults {
        let span = tracing::info_span!("manifest", digest = %digest.short());
        let src = match self.source(source) {
            Ok(src) => src,
            Err(cause) => return fail_each(regions, &cause),
        };
        async {
            let root = match self.source_manifest(src, repo, digest).await {
                Ok(Some(m)) => m,
                Ok(None) => return fail_each(regions, &gone_from_source(src, digest)),
                Err(cause) => return fail_each(regions, &cause),
            };
            let desc = Descriptor {
                media_type: root.media_type.clone(),
                digest: digest.clone(),
                size: root.bytes.len() as u64,
                urls: Vec::new(),
            };
            let started = now_unix_ms();
            let copy = |regions: Vec<RegionId>| {
                let desc = desc.clone();
                async move {
                    let classes = self.speed_classes(&regions);
                    let copies = classes
                        .iter()
                        .map(|c| self.ensure_manifest(pass, src, repo, desc.clone(), c, 0, false));
                    join_all(copies)
                        .await
                        .into_iter()
                        .flatten()
                        .collect::<RegionResults>()
                }
            };
            let mut results = copy(regions.to_vec()).await;
            // Once more where the store's facts proved stale, as for images.
            let stale: Vec<RegionId> = results
                .iter()
                .filter(|(r, res)| res.is_err() && self.facts.distrusted_since(**r, repo, started))
                .map(|(r, _)| *r)
                .collect();
            if !stale.is_empty() {
                for &r in &stale {
                    self.stale_warning(r, repo);
                }
                results.extend(copy(stale).await);
            }
            results
        }
        .instrument(span)
        .await
    }

    /// [`Engine::copy_image_once`], then once more for each region that
    /// refused a manifest for lacking content the store said it had (see
    /// [`Facts::distrust`](super::facts::Facts::distrust)): the second try
    /// asks the region about everything instead of believing the store.
    async fn copy_image_inner(
        &self,
        pass: &Pass,
        src: &Registry,
        job: &ImageJob,
        regions: &[RegionId],
    ) -> Vec<TagOutcome> {
        let started = now_unix_ms();
        let mut outcomes = self.copy_image_once(pass, src, job, regions).await;
        let stale: Vec<RegionId> = regions
            .iter()
            .copied()
            .filter(|&r| {
                outcomes
                    .iter()
                    .any(|o| o.region == r && o.state == TagState::Failed)
                    && self.facts.distrusted_since(r, &job.repository, started)
            })
            .collect();
        if stale.is_empty() {
            return outcomes;
        }
        for &r in &stale {
            self.stale_warning(r, &job.repository);
        }
        outcomes.retain(|o| !stale.contains(&o.region));
        outcomes.extend(self.copy_image_once(pass, src, job, &stale).await);
        outcomes
    }

    fn stale_warning(&self, r: RegionId, repo: &str) {
        tracing::warn!(
            region = %self.regions[r].name(),
            "{} lacks content of {repo} that georep had recorded as copied (wiped, restored \
             or cleaned by hand?): checking each item of {repo} there again",
            self.regions[r].url()
        );
    }

    async fn copy_image_once(
        &self,
        pass: &Pass,
        src: &Registry,
        job: &ImageJob,
        regions: &[RegionId],
    ) -> Vec<TagOutcome> {
        let repo = &job.repository;
        let mut outcomes = Vec::new();

        // Which regions need which tags: what the store says first, then the
        // region's listing, then a HEAD.
        let checks = regions.iter().copied().flat_map(|r| {
            job.tags.iter().map(move |tag| async move {
                (r, tag.clone(), self.region_tag(pass, r, repo, tag).await)
            })
        });
        let mut needs: BTreeMap<RegionId, Vec<String>> = BTreeMap::new();
        let mut in_sync: BTreeMap<RegionId, Vec<String>> = BTreeMap::new();
        for (r, tag, held) in join_all(checks).await {
            match held {
                Ok(Some(d)) if d == job.digest => in_sync.entry(r).or_default().push(tag),
                Ok(_) => needs.entry(r).or_default().push(tag),
                Err(e) => outcomes.push(failed(r, tag, Cause::of("checking the tag", &e))),
            }
        }
        let verifying = pass.verify();
        let in_sync_outcomes = |outcomes: &mut Vec<TagOutcome>,
                                in_sync: &BTreeMap<RegionId, Vec<String>>,
                                broken: &RegionResults| {
            for (r, tags) in in_sync {
                for t in tags {
                    outcomes.push(match broken.get(r) {
                        Some(Err(cause)) => failed(*r, t.clone(), cause.clone()),
                        _ => TagOutcome {
                            region: *r,
                            tag: t.clone(),
                            state: TagState::InSync,
                            failure: None,
                        },
                    });
                }
            }
        };
        if needs.is_empty() && !verifying {
            in_sync_outcomes(&mut outcomes, &in_sync, &BTreeMap::new());
            return outcomes;
        }

        let fail_all = |outcomes: &mut Vec<TagOutcome>,
                        needs: &BTreeMap<RegionId, Vec<String>>,
                        cause: &Cause| {
            for (r, tags) in needs {
                for t in tags {
                    outcomes.push(failed(*r, t.clone(), cause.clone()));
                }
            }
        };

        let root = match self.source_manifest(src, repo, &job.digest).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(gone_from_source(src, &job.digest)),
            Err(cause) => Err(cause),
        }
        .and_then(|m| {
            m.kind()
                .map(|_| m)
                .map_err(|e| Cause::permanent(e.to_string()))
        });
        let root = match root {
            Ok(m) => m,
            Err(cause) => {
                fail_all(&mut outcomes, &needs, &cause);
                in_sync_outcomes(&mut outcomes, &in_sync, &BTreeMap::new());
                return outcomes;
            }
        };

        // Regions that hold the manifest already (under another tag) only
        // need the tag; the others need its content first. When verifying,
        // the content of every region is checked, in sync or not.
        let regions: Vec<RegionId> = needs.keys().copied().collect();
        let (present, errors) = self
            .manifest_presence(pass, repo, &job.digest, &regions)
            .await;
        let mut ready: RegionResults = errors.into_iter().map(|(r, e)| (r, Err(e))).collect();
        let mut deep: Vec<RegionId> = regions
            .iter()
            .copied()
            .filter(|r| (verifying || !present.contains(r)) && !ready.contains_key(r))
            .collect();
        for r in present {
            ready.entry(r).or_insert(Ok(()));
        }
        if verifying {
            deep.extend(in_sync.keys().copied().filter(|r| !needs.contains_key(r)));
        }
        let checked = self
            .ensure_dependencies(pass, src, repo, &root, &deep, 0)
            .await;
        for (r, res) in &checked {
            if res.is_err() || !ready.contains_key(r) {
                ready.insert(*r, res.clone());
            }
        }
        in_sync_outcomes(&mut outcomes, &in_sync, &checked);

        // Tags last, one region at a time each, all regions at once.
        let tag_puts = needs.iter().map(|(r, tags)| {
            let r = *r;
            let deps = ready
                .get(&r)
                .cloned()
                .unwrap_or_else(|| Err(Cause::permanent("not attempted")));
            let root = &root;
            async move {
                let mut out = Vec::new();
                for tag in tags {
                    let outcome = match &deps {
                        Err(cause) => failed(r, tag.clone(), cause.clone()),
                        Ok(()) => match self.push_manifest(pass, r, repo, tag, root).await {
                            Ok(()) => {
                                let what = if pass.is_dry_run() {
                                    "dry run: would replicate"
                                } else {
                                    "replicated"
                                };
                                tracing::info!(
                                    region = %self.regions[r].name(),
                                    "{what} {repo}:{tag}"
                                );
                                TagOutcome {
                                    region: r,
                                    tag: tag.clone(),
                                    state: TagState::Copied,
                                    failure: None,
                                }
                            }
                            Err(cause) => failed(r, tag.clone(), cause),
                        },
                    };
                    out.push(outcome);
                }
                out
            }
        });
        for o in join_all(tag_puts).await {
            outcomes.extend(o);
        }
        outcomes
    }

    /// The digest region `r` serves under `repo:tag`: from the store if it
    /// knows (and is trusted), else from the region's listing and a HEAD,
    /// whose answer is recorded.
    async fn region_tag(
        &self,
        pass: &Pass,
        r: RegionId,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, crate::registry::RegistryError> {
        if let Some(d) = self.facts.tag(pass, r, repo, tag) {
            return Ok(Some(d));
        }
        let listed = match self.repo_state(r, repo).await {
            RepoState::Absent => false,
            RepoState::Tags(tags) => tags.contains(tag),
            RepoState::Unknown => true,
        };
        let head = if listed {
            self.regions[r]
                .head_manifest(repo, tag, &Scope::push(repo))
                .await?
        } else {
            None
        };
        match &head {
            Some(h) => {
                self.facts.saw_manifest(r, repo, tag, &h.digest);
                self.facts
                    .add_manifest(r, repo, h.digest.as_str(), &h.digest);
            }
            None => self.facts.forget_manifest(r, repo, tag),
        }
        Ok(head.map(|h| h.digest))
    }

    /// Which of `regions` already hold manifest `digest` in `repo`, and
    /// which could not be asked.
    async fn manifest_presence(
        &self,
        pass: &Pass,
        repo: &str,
        digest: &Digest,
        regions: &[RegionId],
    ) -> (Vec<RegionId>, Vec<(RegionId, Cause)>) {
        let checks = regions.iter().map(|&r| async move {
            if self.facts.has_manifest(pass, r, repo, digest) {
                return (r, Ok(true));
            }
            if matches!(self.repo_state(r, repo).await, RepoState::Absent) {
                return (r, Ok(false));
            }
            let head = self.regions[r]
                .head_manifest(repo, digest.as_str(), &Scope::push(repo))
                .await;
            (r, head.map(|h| h.is_some()))
        });
        let mut present = Vec::new();
        let mut errors = Vec::new();
        for (r, res) in join_all(checks).await {
            match res {
                Ok(true) => {
                    self.facts.add_manifest(r, repo, digest.as_str(), digest);
                    present.push(r);
                }
                Ok(false) => self.facts.forget_manifest(r, repo, digest.as_str()),
                Err(e) => {
                    errors.push((r, Cause::of(format_args!("checking manifest {digest}"), &e)))
                }
            }
        }
        (present, errors)
    }

    /// Makes everything `manifest` references present in each of `regions`.
    fn ensure_dependencies<'a>(
        &'a self,
        pass: &'a Pass,
        src: &'a Registry,
        repo: &'a str,
        manifest: &'a Manifest,
        regions: &'a [RegionId],
        depth: usize,
    ) -> BoxFuture<'a, RegionResults> {
        async move {
            let mut results: RegionResults = BTreeMap::new();
            if regions.is_empty() {
                return results;
            }
            let refs = match manifest.references() {
                Ok(r) => r,
                Err(e) => {
                    let cause = Cause::permanent(format!("manifest {}: {e}", manifest.digest));
                    return fail_each(regions, &cause);
                }
            };
            let mut work: Vec<BoxFuture<'a, RegionResults>> = Vec::new();
            for child in refs.manifests {
                work.push(self.ensure_manifest(pass, src, repo, child, regions, depth + 1, false));
            }
            if let Some(subject) = refs.subject {
                work.push(self.ensure_manifest(pass, src, repo, subject, regions, depth + 1, true));
            }
            for blob in refs.blobs {
                if blob.is_foreign() {
                    tracing::debug!(digest = %blob.digest, "foreign layer: not copied");
                    continue;
                }
                work.push(self.ensure_blob(pass, src, repo, blob, regions).boxed());
            }
            for partial in join_all(work).await {
                for (r, res) in partial {
                    let slot = results.entry(r).or_insert(Ok(()));
                    if slot.is_ok() {
                        *slot = res;
                    }
                }
            }
            for &r in regions {
                results.entry(r).or_insert(Ok(()));
            }
            results
        }
        .boxed()
    }

    /// Makes manifest `desc` (a child or a subject) and everything under it
    /// present in each of `regions`, pushed by digest.
    #[allow(clippy::too_many_arguments)]
    fn ensure_manifest<'a>(
        &'a self,
        pass: &'a Pass,
        src: &'a Registry,
        repo: &'a str,
        desc: Descriptor,
        regions: &'a [RegionId],
        depth: usize,
        is_subject: bool,
    ) -> BoxFuture<'a, RegionResults> {
        async move {
            let digest = desc.digest.clone();
            if depth > MAX_NESTING {
                let cause = Cause::permanent(format!(
                    "manifest {digest} is nested deeper than {MAX_NESTING} levels"
                ));
                return fail_each(regions, &cause);
            }
            let _guard = self.manifest_locks.lock((repo.to_owned(), digest.clone())).await;
            let (present, errors) = self.manifest_presence(pass, repo, &digest, regions).await;
            let mut results: RegionResults =
                errors.into_iter().map(|(r, e)| (r, Err(e))).collect();
            let lacking: Vec<RegionId> = regions
                .iter()
                .copied()
                .filter(|r| !present.contains(r) && !results.contains_key(r))
                .collect();
            // Verifying: the content under a present manifest is checked too.
            let deep: Vec<RegionId> = if pass.verify() {
                regions
                    .iter()
                    .copied()
                    .filter(|r| !results.contains_key(r))
                    .collect()
            } else {
                lacking.clone()
            };
            for r in present {
                results.insert(r, Ok(()));
            }
            if deep.is_empty() {
                return results;
            }
            let manifest = match self.source_manifest(src, repo, &digest).await {
                Ok(Some(m)) => Ok(m),
                Ok(None) if is_subject => {
                    // A referrer whose subject is not on the source: there
                    // is nothing to copy, and registries accept it as is.
                    tracing::debug!(%digest, "subject not on the source; copying the referrer alone");
                    results.extend(deep.iter().map(|&r| (r, Ok(()))));
                    return results;
                }
                Ok(None) => Err(Cause::permanent(format!(
                    "child manifest {digest} is missing on {}",
                    describe(src)
                ))),
                Err(cause) => Err(cause),
            }
            .and_then(|m| {
                if m.bytes.len() as u64 != desc.size {
                    return Err(Cause::permanent(format!(
                        "manifest {digest} is {} bytes on {}, its descriptor says {}",
                        m.bytes.len(),
                        describe(src),
                        desc.size
                    )));
                }
                m.kind()
                    .map_err(|e| Cause::permanent(format!("manifest {digest}: {e}")))?;
                Ok(m)
            });
            let manifest = match manifest {
                Ok(m) => m,
                Err(cause) => {
                    results.extend(fail_each(&deep, &cause));
                    return results;
                }
            };
            if manifest.kind().ok() == Some(Kind::Index) {
                tracing::debug!(%digest, "copying index");
            }
            let deps = self
                .ensure_dependencies(pass, src, repo, &manifest, &deep, depth)
                .await;
            let pushes = deps.into_iter().map(|(r, dep)| {
                let manifest = &manifest;
                let digest = &digest;
                let lacks = lacking.contains(&r);
                async move {
                    if dep.is_err() || !lacks {
                        return (r, dep);
                    }
                    let pushed = self
                        .push_manifest(pass, r, repo, digest.as_str(), manifest)
                        .await;
                    (r, pushed)
                }
            });
            results.extend(join_all(pushes).await);
            results
        }
        .boxed()
    }

    /// Manifest `digest` of `repo` as the source serves it (`None`: not
    /// there).
    async fn source_manifest(
        &self,
        src: &Registry,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Manifest>, Cause> {
        src.get_manifest(repo, digest.as_str(), &Scope::pull(repo))
            .await
            .map_err(|e| {
                Cause::of(
                    format_args!("reading manifest {digest} from {}", describe(src)),
                    &e,
                )
            })
    }

    /// Pushes `manifest` to region `r` under `reference` (a tag, or its
    /// digest) and records it; a dry run plans it instead. Everything it
    /// references must be present in the region already (invariant 3).
    async fn push_manifest(
        &self,
        pass: &Pass,
        r: RegionId,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), Cause> {
        let digest = &manifest.digest;
        let by_tag = reference != digest.as_str();
        let count = || {
            self.counters[r]
                .manifests_pushed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
        if let Some(plan) = pass.plan() {
            // A tag is a push of its own each time; content once per region.
            if plan.manifest(r, repo, digest) || by_tag {
                count();
            }
            return Ok(());
        }
        match self.regions[r]
            .put_manifest(repo, reference, manifest)
            .await
        {
            Ok(()) => {
                count();
                self.facts.add_manifest(r, repo, reference, digest);
                if by_tag {
                    self.facts.add_manifest(r, repo, digest.as_str(), digest);
                }
                Ok(())
            }
            Err(e) => {
                if e.lacks_content() {
                    self.facts.distrust(r, repo);
                }
                let what = if by_tag {
                    "pushing the tag".to_owned()
                } else {
                    format!("pushing manifest {digest}")
                };
                Err(Cause::of(what, &e))
            }
        }
    }
}

/// The same failure for each of `regions`.
fn fail_each(regions: &[RegionId], cause: &Cause) -> RegionResults {
    regions.iter().map(|&r| (r, Err(cause.clone()))).collect()
}

fn gone_from_source(src: &Registry, digest: &Digest) -> Cause {
    Cause::gone(format!(
        "manifest {digest} is not on {} (any more)",
        describe(src)
    ))
}

/// How messages name a source: `the primary`, or `region eu`.
fn describe(src: &Registry) -> String {
    if src.is_region() {
        format!("region {}", src.name())
    } else {
        "the primary".to_owned()
    }
}

fn failed(region: RegionId, tag: String, cause: Cause) -> TagOutcome {
    TagOutcome {
        region,
        tag,
        state: TagState::Failed,
        failure: Some(cause),
    }
}
