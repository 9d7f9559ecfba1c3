//! Any-region mode: a tag to delete in a region that cannot delete a tag
//! alone (distribution 2.x answers 400/405), with no delete of its manifest
//! on the way — a reconcile found the tag deleted in another region, its
//! notifications lost. The tag goes with its manifest, but only when no
//! other tag of the repository points at that manifest there (asked of the
//! region itself, not taken from the store: people push there directly),
//! and within the hourly cap of manifest deletes.

use futures::StreamExt;

use super::workers::Workers;
use crate::digest::Digest;
use crate::engine::cause::{Cause, CauseKind};
use crate::registry::Scope;
use crate::store::{RegionId, now_unix_ms};

/// Tag `HEAD`s in flight while looking for another tag on the manifest.
const HEADS_AT_ONCE: usize = 8;

/// What became of a tag to delete with its manifest.
pub(super) enum LoneTag {
    Deleted,
    Wait { wait_ms: u64, why: String },
    Failed(Cause),
}

pub(super) async fn delete_with_manifest(
    w: &Workers,
    r: RegionId,
    repository: &str,
    tag: &str,
    digest: &Digest,
) -> LoneTag {
    let region = &w.engine().regions()[r];
    let scope = Scope::push(repository);
    let tags = match region.tags(repository, &scope).await {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            return LoneTag::Failed(Cause::of(
                format_args!(
                    "listing the tags of {repository} in region {}",
                    region.name()
                ),
                &e,
            ));
        }
    };
    let others = tags.into_iter().filter(|t| t != tag);
    let mut heads = futures::stream::iter(others)
        .map(|t| {
            let scope = &scope;
            async move {
                let head = region.head_manifest(repository, &t, scope).await;
                (t, head)
            }
        })
        .buffer_unordered(HEADS_AT_ONCE);
    while let Some((other, head)) = heads.next().await {
        match head {
            Ok(Some(h)) if h.digest == *digest => {
                return LoneTag::Failed(Cause {
                    kind: CauseKind::Permanent,
                    message: format!(
                        "region {} cannot delete the tag {repository}:{tag} alone, and its manifest {digest} is also tagged {other} there: left as it is",
                        region.name()
                    ),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return LoneTag::Failed(Cause::of(
                    format_args!("checking {repository}:{other} in region {}", region.name()),
                    &e,
                ));
            }
        }
    }
    drop(heads);
    let cap = w.config().daemon.max_deletes_per_hour;
    match w.engine().store().take_delete(r, cap, now_unix_ms()) {
        Ok(Ok(())) => {}
        Ok(Err(wait_ms)) => {
            return LoneTag::Wait {
                wait_ms,
                why: format!(
                    "delete cap reached ({cap} per hour in region {})",
                    region.name()
                ),
            };
        }
        Err(e) => {
            return LoneTag::Failed(Cause {
                kind: CauseKind::Transient,
                message: format!("recording a delete in the state store failed: {e}"),
            });
        }
    }
    match region.delete_manifest(repository, digest.as_str()).await {
        Ok(_) => {
            if let Err(e) = w
                .engine()
                .store()
                .forget_manifest_and_tags(r, repository, digest)
            {
                tracing::warn!("recording a delete failed: {e:#}");
            }
            tracing::info!(region = %region.name(), "deleted {repository}:{tag} with its manifest {digest} (no other tag points at it there)");
            LoneTag::Deleted
        }
        Err(e) => LoneTag::Failed(Cause::of(
            format_args!("deleting manifest {digest} of {repository}"),
            &e,
        )),
    }
}
