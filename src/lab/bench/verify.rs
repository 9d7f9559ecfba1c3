//! After every benchmark run: is each region byte-identical to the
//! primary? A run that fails this is reported as failed, not as fast.
//!
//! The corpus is what was pushed to the primary, so it is the reference:
//! every tag must resolve to the corpus digest, every manifest (children
//! of indexes included) must be served with the same bytes and media type,
//! every blob must be linked in each repository that needs it with its
//! size, and — unless only a quick check is asked — every unique blob is
//! read back from each region and hashed: content addressing makes a
//! matching digest a byte-for-byte match.

use std::collections::HashSet;

use futures::StreamExt;

use crate::digest::{Digest, Verifier};
use crate::lab::corpus::Corpus;
use crate::registry::{Registry, Scope};

/// Blobs read back at once per region.
const READS: usize = 4;

/// What a run was supposed to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Tags, manifests and blobs (georep, skopeo).
    Images,
    /// Each unique blob in the first repository holding it (the raw
    /// baseline copies nothing else).
    Blobs,
}

/// Checks `region` against `corpus`; the first difference as an error.
pub async fn region(
    region: &Registry,
    corpus: &Corpus,
    expect: Expect,
    read_content: bool,
) -> Result<(), String> {
    let at = |what: &str| format!("{} ({}): {what}", region.name(), region.url());
    let mut to_read: Vec<(String, Digest, u64)> = Vec::new();
    match expect {
        Expect::Images => {
            for t in &corpus.tags {
                let repo = &t.repository;
                let head = region
                    .head_manifest(repo, &t.tag, &Scope::pull(repo))
                    .await
                    .map_err(|e| at(&format!("{repo}:{}: {e:#}", t.tag)))?;
                match head {
                    Some(h) if h.digest == t.digest => {}
                    Some(h) => {
                        return Err(at(&format!(
                            "{repo}:{} points at {}, the primary at {}",
                            t.tag, h.digest, t.digest
                        )));
                    }
                    None => return Err(at(&format!("{repo}:{} is missing", t.tag))),
                }
            }
            for (repo, manifests) in &corpus.manifests {
                for want in manifests {
                    let got = region
                        .get_manifest(repo, want.digest.as_str(), &Scope::pull(repo))
                        .await
                        .map_err(|e| at(&format!("{repo}@{}: {e:#}", want.digest)))?
                        .ok_or_else(|| {
                            at(&format!("manifest {repo}@{} is missing", want.digest))
                        })?;
                    if got.bytes != want.bytes || got.media_type != want.media_type {
                        return Err(at(&format!(
                            "manifest {repo}@{} differs from the primary's ({} bytes of {}, expected {} bytes of {})",
                            want.digest,
                            got.bytes.len(),
                            got.media_type,
                            want.bytes.len(),
                            want.media_type
                        )));
                    }
                }
            }
            let mut read = HashSet::new();
            for (repo, blobs) in &corpus.blobs {
                for b in blobs.values() {
                    check_blob(region, repo, &b.digest, b.size)
                        .await
                        .map_err(|e| at(&e))?;
                    if read.insert(b.digest.clone()) {
                        to_read.push((repo.clone(), b.digest.clone(), b.size));
                    }
                }
            }
        }
        Expect::Blobs => {
            for b in super::unique_blobs(corpus) {
                check_blob(region, &b.repository, &b.digest, b.size)
                    .await
                    .map_err(|e| at(&e))?;
                to_read.push((b.repository, b.digest, b.size));
            }
        }
    }
    if read_content {
        let mut reads = futures::stream::iter(to_read)
            .map(
                |(repo, digest, size)| async move { read_blob(region, &repo, &digest, size).await },
            )
            .buffer_unordered(READS);
        while let Some(r) = reads.next().await {
            r.map_err(|e| at(&e))?;
        }
    }
    Ok(())
}

async fn check_blob(
    region: &Registry,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), String> {
    match region.head_blob(repo, digest, &Scope::pull(repo)).await {
        Ok(Some(s)) if s == size => Ok(()),
        Ok(Some(s)) => Err(format!(
            "blob {repo}@{digest} has {s} bytes, the primary's {size}"
        )),
        Ok(None) => Err(format!("blob {repo}@{digest} is missing")),
        Err(e) => Err(format!("blob {repo}@{digest}: {e:#}")),
    }
}

/// Reads the blob and checks its digest and size.
async fn read_blob(
    region: &Registry,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), String> {
    let mut stream = region
        .get_blob(repo, digest)
        .await
        .map_err(|e| format!("reading blob {repo}@{digest}: {e:#}"))?;
    let mut verifier = Verifier::new(digest, Some(size));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading blob {repo}@{digest}: {e:#}"))?;
        verifier
            .update(&chunk)
            .map_err(|e| format!("blob {repo}@{digest}: {e}"))?;
    }
    verifier
        .finish()
        .map_err(|e| format!("blob {repo}@{digest}: {e}"))
}
