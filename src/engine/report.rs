//! What a sync pass did, per region and per tag, and what failed and why:
//! rendered as an aligned table for people and as JSON for programs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::digest::Digest;
use crate::registry::StatsSnapshot;
use crate::units::table;

#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    /// Nothing was written: the tag, blob, byte and manifest figures are
    /// what a sync would do.
    pub dry_run: bool,
    pub primary: PrimaryReport,
    pub regions: Vec<RegionReport>,
    /// Tags this pass copied or failed to copy, and their state in each
    /// region (tags already in sync everywhere are only counted).
    pub tags: Vec<TagReport>,
    /// Region results for tags beyond the first `MAX_TAG_DETAILS`, counted
    /// in the region totals but not listed.
    pub tags_not_detailed: usize,
    /// Tags a region holds that the primary deleted (the first
    /// `MAX_TAG_DETAILS`; each region's total is in its report).
    pub only_in_region: Vec<OnlyInRegion>,
    pub failures: Vec<Failure>,
    pub elapsed_secs: f64,
    /// Peak resident memory of this process so far, where the OS tells.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time (user + system) of this process so far, where the OS tells.
    pub cpu_secs: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PrimaryReport {
    pub name: String,
    pub url: String,
    pub repositories: usize,
    pub tags: usize,
    pub requests: StatsSnapshot,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RegionReport {
    pub name: String,
    pub url: String,
    /// Tags the primary lists (after the repository filter).
    pub tags_total: usize,
    /// Tags that already pointed at the primary's digest.
    pub tags_in_sync: usize,
    /// Tags created or moved by this pass.
    pub tags_copied: usize,
    pub tags_failed: usize,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_mounted: u64,
    pub manifests_pushed: u64,
    /// Tags the region holds that the primary deleted.
    pub tags_only_in_region: usize,
    /// The region could not be reached at the end of the pass.
    pub unreachable: bool,
    pub requests: StatsSnapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagState {
    /// Already pointed at the primary's digest.
    InSync,
    /// Set by this pass.
    Copied,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct TagReport {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    /// Region name -> state.
    pub regions: BTreeMap<String, TagState>,
}

/// A tag a region holds that the primary deleted.
#[derive(Clone, Debug, Serialize)]
pub struct OnlyInRegion {
    pub region: String,
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    /// When the primary's listing first missed it (RFC 3339).
    pub deleted_on_primary_at: String,
}

/// One thing that did not replicate.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The region, or the primary's name for failures reading the primary.
    pub region: String,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    pub cause: String,
}

impl SyncReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The aligned human summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let headers = if self.dry_run {
            out.push_str("DRY RUN: nothing was written. What a sync would do, per region:\n");
            [
                "REGION",
                "URL",
                "TAGS",
                "IN SYNC",
                "TO COPY",
                "FAILED",
                "UPLOADS",
                "MIB",
                "MOUNTS",
                "MANIFESTS",
                "ONLY IN REGION",
            ]
        } else {
            [
                "REGION",
                "URL",
                "TAGS",
                "IN SYNC",
                "COPIED",
                "FAILED",
                "BLOBS",
                "MIB",
                "MOUNTED",
                "MANIFESTS",
                "ONLY IN REGION",
            ]
        };
        let mut rows: Vec<Vec<String>> = vec![headers.iter().map(|s| s.to_string()).collect()];
        for r in &self.regions {
            let name = if r.unreachable {
                format!("{} (unreachable)", r.name)
            } else {
                r.name.clone()
            };
            rows.push(vec![
                name,
                r.url.clone(),
                r.tags_total.to_string(),
                r.tags_in_sync.to_string(),
                r.tags_copied.to_string(),
                r.tags_failed.to_string(),
                r.blobs_uploaded.to_string(),
                format!("{:.1}", r.bytes_uploaded as f64 / (1024.0 * 1024.0)),
                r.blobs_mounted.to_string(),
                r.manifests_pushed.to_string(),
                r.tags_only_in_region.to_string(),
            ]);
        }
        out.push_str(&table(
            &rows,
            &[
                false, false, true, true, true, true, true, true, true, true, true,
            ],
        ));
        let _ = writeln!(
            out,
            "primary {} ({}): {} repositories, {} tags; {:.1}s",
            self.primary.name,
            self.primary.url,
            self.primary.repositories,
            self.primary.tags,
            self.elapsed_secs
        );
        let only: usize = self.regions.iter().map(|r| r.tags_only_in_region).sum();
        if only > 0 {
            let _ = writeln!(
                out,
                "\n{only} tag(s) only in a region: deleted on the primary, still in the region \
                 (the daemon deletes them under `deletes.policy: propagate`; sync never deletes):"
            );
            for o in &self.only_in_region {
                let _ = writeln!(
                    out,
                    "  {}  {}:{}  {}  deleted on the primary {}",
                    o.region,
                    o.repository,
                    o.tag,
                    o.digest.short(),
                    o.deleted_on_primary_at
                );
            }
            if self.only_in_region.len() < only {
                let _ = writeln!(out, "  … and {} more", only - self.only_in_region.len());
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\n{} failed:", self.failures.len());
            for f in &self.failures {
                let what = match (&f.repository, &f.tag) {
                    (Some(r), Some(t)) => format!("{r}:{t}"),
                    (Some(r), None) => r.clone(),
                    _ => "-".to_owned(),
                };
                let digest = f.digest.as_ref().map(|d| d.short()).unwrap_or("-");
                let _ = writeln!(out, "  {}  {}  {}  {}", f.region, what, digest, f.cause);
            }
        }
        out
    }

    /// Where each tag landed, one line per tag, for the demo.
    pub fn render_tags(&self) -> String {
        let mut rows = vec![{
            let mut h = vec!["TAG".to_owned(), "DIGEST".to_owned()];
            h.extend(self.regions.iter().map(|r| r.name.to_uppercase()));
            h
        }];
        for t in &self.tags {
            let mut row = vec![
                format!("{}:{}", t.repository, t.tag),
                t.digest.short().to_owned(),
            ];
            for r in &self.regions {
                row.push(
                    match t.regions.get(&r.name) {
                        Some(TagState::InSync) => "in sync",
                        Some(TagState::Copied) if self.dry_run => "would copy",
                        Some(TagState::Copied) => "copied",
                        Some(TagState::Failed) => "FAILED",
                        None => "-",
                    }
                    .to_owned(),
                );
            }
            rows.push(row);
        }
        let right = vec![false; rows[0].len()];
        table(&rows, &right)
    }
}
