//! The status as one typed view, whoever answers: what `/v1/status` serves,
//! what `/metrics` reads its gauges from, what `georep status --json`
//! prints, and the one table `georep status` shows — from a running daemon,
//! or from the state store when no daemon holds it.
//!
//! [`build`] makes the view from the store; the daemon adds what only it
//! knows (work in flight, copy counters, its background tasks, outgoing
//! notifications) through [`Live`]. Every time is RFC 3339 (UTC).

mod cluster;

use serde::{Deserialize, Serialize};

use crate::background::TaskStatus;
use crate::config::{Config, DeletePolicy};
use crate::notify::TargetView;
pub use crate::registry::check::Health;
use crate::store::merge::ConflictRecord;
use crate::store::{Store, format_unix, format_unix_ms, now_unix_ms};
use crate::units::table;
use crate::watch::audit::AuditReport;
use crate::watch::poller::ReconcileReport;
pub use cluster::{ClusterRegion, ClusterView, MemberView};

/// Parked items listed per region in the status (all are counted).
pub const MAX_PARKED_LISTED: usize = 100;
/// Conflicts listed in the status (the store keeps more).
pub const CONFLICTS_LISTED: usize = 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// `daemon` (a running daemon answered) or `store` (read from the
    /// state store; no daemon holds it).
    pub source: String,
    /// When the view was made.
    pub at: String,
    pub state_store: String,
    /// `one-way` or `any-region`.
    #[serde(default)]
    pub mode: String,
    /// The primary; absent in any-region mode.
    pub primary: Option<RegistryView>,
    pub regions: Vec<RegionStatusView>,
    /// Any-region mode: the last conflicts, newest first.
    #[serde(default)]
    pub conflicts: Vec<ConflictRecord>,
    /// The daemon's last reconcile and audit; absent from the store.
    pub reconcile: Option<TaskStatus<ReconcileReport>>,
    pub audit: Option<TaskStatus<AuditReport>>,
    pub events_queued: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
    /// georep's own writes notified back (any-region mode).
    #[serde(default)]
    pub events_echo: u64,
    /// Outgoing notification targets: what waits and what was delivered.
    #[serde(default)]
    pub notify: Vec<TargetView>,
    /// When the tag counts (`tags_*`) were made; absent where tags were
    /// not counted (`/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_counted_at: Option<String>,
    /// A cluster member: the members, their shares, and the regions' work
    /// summed over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistryView {
    pub name: String,
    pub url: String,
    #[serde(flatten)]
    pub health: Health,
}

/// One region.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RegionStatusView {
    pub name: String,
    pub url: String,
    #[serde(flatten)]
    pub health: Health,
    /// People push there (any-region mode).
    #[serde(default)]
    pub accepts_pushes: bool,
    /// Live tags of the primary — in any-region mode, of the base: the
    /// tags every region last agreed on — (after the repository filter);
    /// `None` where tags were not counted (`/metrics`).
    pub tags_total: Option<usize>,
    /// Tags the region is recorded to serve at the primary's digest.
    pub tags_in_sync: Option<usize>,
    /// Tags the region is not recorded to serve.
    pub tags_missing: Option<usize>,
    /// Tags the region serves at another digest.
    pub tags_differ: Option<usize>,
    /// Tags the region holds that the primary deleted.
    pub tags_only_in_region: Option<usize>,
    /// Items waiting their turn (not in flight, not parked). The same
    /// number as `georep_queue_depth`.
    pub queue_depth: usize,
    pub in_flight: usize,
    pub parked_count: usize,
    /// Everything the region still lacks: queued, in flight and parked.
    pub lag_items: usize,
    /// Age of the oldest change the region lacks.
    pub lag_secs: f64,
    pub parked: Vec<ParkedView>,
    pub last_pass_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The last error came after the last success: it is the region's
    /// state now, not history.
    pub error_current: bool,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub blobs_mounted: u64,
    pub manifests_pushed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParkedView {
    pub repository: String,
    pub reference: String,
    /// Absent for a delete by tag whose digest georep never saw.
    pub digest: Option<String>,
    pub attempts: u32,
    pub reason: String,
}

/// What only a running daemon knows, per region and overall.
#[derive(Default)]
pub struct Live {
    pub in_flight: Vec<usize>,
    pub copied: Vec<crate::engine::CopyCounts>,
    pub reconcile: Option<TaskStatus<ReconcileReport>>,
    pub audit: Option<TaskStatus<AuditReport>>,
    /// Events queued, duplicate, rejected, echoes.
    pub events: [u64; 4],
    pub notify: Vec<TargetView>,
    /// Tags counted a moment ago (the daemon reuses a count for a while
    /// when counting is expensive); `None`: count them now.
    pub tag_counts: Option<std::sync::Arc<TagCounts>>,
}

/// How much to work out: tags are counted by reading every primary tag's
/// facts (O(tags × regions)), which `/metrics` does not need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    Full,
    Gauges,
}

/// The view from the store, with the registries' `health` (primary first,
/// then the regions) and what a daemon adds.
pub fn build(
    config: &Config,
    store: &Store,
    health: Vec<Health>,
    live: Live,
    detail: Detail,
) -> StatusView {
    let now_ms = now_unix_ms();
    let mut health = health.into_iter();
    let primary = config.primary().map(|p| RegistryView {
        name: p.name.clone(),
        url: p.display_url(),
        health: health.next().unwrap_or_default(),
    });
    let mut regions: Vec<RegionStatusView> = config
        .regions
        .iter()
        .enumerate()
        .map(|(r, reg)| {
            let queue = store.queue_figures(r);
            let in_flight = live.in_flight.get(r).copied().unwrap_or(0);
            let s = store.region_status(r);
            let c = live.copied.get(r).copied().unwrap_or_default();
            let error_current = match (s.last_error_at, s.last_success_at) {
                (Some(e), Some(ok)) => e >= ok,
                (Some(_), None) => true,
                _ => false,
            };
            RegionStatusView {
                name: reg.name.clone(),
                url: reg.display_url(),
                health: health.next().unwrap_or_default(),
                accepts_pushes: reg.accepts_pushes,
                queue_depth: (queue.len - queue.parked).saturating_sub(in_flight),
                in_flight,
                lag_items: queue.len,
                lag_secs: queue
                    .oldest_since_ms
                    .map_or(0.0, |o| now_ms.saturating_sub(o) as f64 / 1000.0),
                parked_count: queue.parked,
                parked: store
                    .parked_items(r, MAX_PARKED_LISTED)
                    .iter()
                    .map(|q| ParkedView {
                        repository: q.repository.clone(),
                        reference: q.reference.clone(),
                        digest: q.item.known_digest().map(|d| d.as_str().to_owned()),
                        attempts: q.item.attempts,
                        reason: q.item.last_error.clone().unwrap_or_default(),
                    })
                    .collect(),
                last_pass_at: s.last_pass_at.map(format_unix),
                last_success_at: s.last_success_at.map(format_unix),
                last_error: s.last_error,
                last_error_at: s.last_error_at.map(format_unix),
                error_current,
                blobs_copied: c.blobs_uploaded,
                bytes_copied: c.bytes_uploaded,
                blobs_mounted: c.blobs_mounted,
                manifests_pushed: c.manifests_pushed,
                ..RegionStatusView::default()
            }
        })
        .collect();
    let mut tags_counted_at = None;
    if detail == Detail::Full {
        let counts = match &live.tag_counts {
            Some(c) => c.clone(),
            None => std::sync::Arc::new(tag_counts(config, store)),
        };
        apply_tag_counts(&counts, &mut regions, now_ms);
        tags_counted_at = Some(format_unix_ms(counts.at_ms));
    }
    StatusView {
        source: if live.reconcile.is_some() {
            "daemon"
        } else {
            "store"
        }
        .to_owned(),
        at: format_unix_ms(now_ms),
        state_store: store.path().display().to_string(),
        mode: config.mode.as_str().to_owned(),
        primary,
        regions,
        conflicts: if config.any_region() {
            store.conflicts(CONFLICTS_LISTED)
        } else {
            Vec::new()
        },
        reconcile: live.reconcile,
        audit: live.audit,
        events_queued: live.events[0],
        events_duplicate: live.events[1],
        events_rejected: live.events[2],
        events_echo: live.events[3],
        notify: live.notify,
        tags_counted_at,
        cluster: None,
    }
}

/// Each region's tags against the primary's, as the store knows them; a
/// tag the region lacks makes its lag at least as old as the tag.
/// Every region's tags counted against the primary's (or the base's):
/// O(tags × regions) reads of the store.
#[derive(Clone, Debug, Default)]
pub struct TagCounts {
    /// When they were counted (unix ms).
    pub at_ms: u64,
    regions: Vec<RegionTagCounts>,
}

#[derive(Clone, Debug, Default)]
struct RegionTagCounts {
    total: usize,
    in_sync: usize,
    missing: usize,
    differ: usize,
    only_in_region: usize,
    /// When the primary's listing first saw the oldest tag the region
    /// lacks (unix seconds).
    oldest_missing: Option<u64>,
}

/// Counts every region's tags (see [`TagCounts`]).
pub fn tag_counts(config: &Config, store: &Store) -> TagCounts {
    let mut regions = vec![RegionTagCounts::default(); config.regions.len()];
    for (repo, tag, t) in store.all_primary_tags() {
        if t.deleted_at.is_some() || !config.repositories.allows(&repo) {
            continue;
        }
        for (r, c) in regions.iter_mut().enumerate() {
            c.total += 1;
            let lacks = match store.manifest(r, &repo, &tag) {
                Some(f) if f.digest == t.digest => {
                    c.in_sync += 1;
                    false
                }
                Some(_) => {
                    c.differ += 1;
                    true
                }
                None => {
                    c.missing += 1;
                    true
                }
            };
            if lacks {
                c.oldest_missing = Some(c.oldest_missing.map_or(t.seen_at, |o| o.min(t.seen_at)));
            }
        }
    }
    for (r, c) in regions.iter_mut().enumerate() {
        c.only_in_region = store
            .only_in_region(r, |repo| config.repositories.allows(repo))
            .len();
    }
    TagCounts {
        at_ms: now_unix_ms(),
        regions,
    }
}

fn apply_tag_counts(counts: &TagCounts, regions: &mut [RegionStatusView], now_ms: u64) {
    for (v, c) in regions.iter_mut().zip(&counts.regions) {
        v.tags_total = Some(c.total);
        v.tags_in_sync = Some(c.in_sync);
        v.tags_missing = Some(c.missing);
        v.tags_differ = Some(c.differ);
        v.tags_only_in_region = Some(c.only_in_region);
        if let Some(seen) = c.oldest_missing {
            let age = now_ms.saturating_sub(seen * 1000) as f64 / 1000.0;
            v.lag_secs = v.lag_secs.max(age);
        }
    }
}

/// Whether the view says everything is where it should be: the primary
/// and every region reachable (when checked), every listed tag in every
/// region, nothing queued or parked, and no delete still due.
pub fn all_in_sync(view: &StatusView, deletes: DeletePolicy) -> bool {
    view.primary
        .as_ref()
        .is_none_or(|p| p.health.reachable != Some(false))
        && view.regions.iter().all(|r| {
            r.health.reachable != Some(false)
                && r.tags_in_sync == r.tags_total
                && r.lag_items == 0
                && (deletes == DeletePolicy::Ignore || r.tags_only_in_region.unwrap_or(0) == 0)
        })
}

/// The one table `georep status` prints, whoever answered.
pub fn render(view: &StatusView) -> String {
    let mut out = String::new();
    match &view.primary {
        Some(p) => out.push_str(&format!(
            "primary {} ({}): {}\n",
            p.name,
            p.url,
            health_text(&p.health)
        )),
        None => {
            let writable: Vec<String> = view
                .regions
                .iter()
                .filter(|r| r.accepts_pushes)
                .map(|r| one_line(&r.name, 40))
                .collect();
            out.push_str(&format!(
                "any-region mode: pushes accepted in {}; IN SYNC counts the tags every region last agreed on\n",
                writable.join(", ")
            ));
        }
    }
    let mut rows = vec![
        [
            "REGION",
            "REACHABLE",
            "IN SYNC",
            "MISSING",
            "DIFFER",
            "ONLY HERE",
            "QUEUED",
            "IN FLIGHT",
            "PARKED",
            "LAG",
            "LAST SUCCESS",
            "ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    let count = |v: Option<usize>| v.map_or("-".to_owned(), |n| n.to_string());
    for r in &view.regions {
        let reachable = match r.health.reachable {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        rows.push(vec![
            one_line(&r.name, 40),
            reachable.to_owned(),
            match (r.tags_in_sync, r.tags_total) {
                (Some(i), Some(t)) => format!("{i}/{t}"),
                _ => "-".to_owned(),
            },
            count(r.tags_missing),
            count(r.tags_differ),
            count(r.tags_only_in_region),
            r.queue_depth.to_string(),
            r.in_flight.to_string(),
            r.parked_count.to_string(),
            ago_secs(r.lag_secs),
            r.last_success_at
                .clone()
                .unwrap_or_else(|| "never".to_owned()),
            error_text(r),
        ]);
    }
    out.push_str(&table(
        &rows,
        &[
            false, false, true, true, true, true, true, true, true, true, false, false,
        ],
    ));
    for r in &view.regions {
        if let Some(problem) = &r.health.problem {
            out.push_str(&format!(
                "{}: {}\n",
                one_line(&r.name, 40),
                one_line(&problem.message, 300)
            ));
        }
        for q in r.parked.iter().take(5) {
            out.push_str(&format!(
                "{}: parked {}{}{} after {} attempt(s): {}\n",
                one_line(&r.name, 40),
                one_line(&q.repository, 200),
                if q.reference.contains(':') { "@" } else { ":" },
                one_line(&q.reference, 200),
                q.attempts,
                one_line(&q.reason, 300)
            ));
        }
        if r.parked_count > 5 {
            out.push_str(&format!(
                "{}: … and {} more parked (`georep status --json` lists {MAX_PARKED_LISTED})\n",
                one_line(&r.name, 40),
                r.parked_count - 5
            ));
        }
    }
    if let Some(c) = &view.cluster {
        out.push_str(&c.render());
    }
    for c in view.conflicts.iter().take(5) {
        let push = |p: &crate::store::merge::PushRecord| {
            format!(
                "{} {} at {}",
                one_line(&p.region, 40),
                p.digest.short(),
                p.at.as_deref().unwrap_or("?")
            )
        };
        let losers: Vec<String> = c.losers.iter().map(push).collect();
        out.push_str(&format!(
            "conflict {}:{} ({}): {} won by {} over {}\n",
            one_line(&c.repository, 200),
            one_line(&c.tag, 128),
            c.decided_at,
            push(&c.winner),
            match c.decided_by {
                crate::merge::DecidedBy::Time => "time",
                crate::merge::DecidedBy::Order => "conflicts.order",
            },
            losers.join(", ")
        ));
    }
    for t in &view.notify {
        if t.pending > 0 || t.failed > 0 || t.dropped > 0 {
            out.push_str(&format!(
                "notify {}: {} pending, {} sent, {} failed, {} dropped{}\n",
                one_line(&t.name, 80),
                t.pending,
                t.sent,
                t.failed,
                t.dropped,
                match (&t.last_failure, &t.last_failure_at) {
                    (Some(m), Some(at)) => format!("; last failure {at}: {}", one_line(m, 200)),
                    _ => String::new(),
                }
            ));
        }
    }
    out.push_str(&match view.source.as_str() {
        "daemon" => format!("from the running daemon, at {}\n", view.at),
        _ => format!(
            "from the state store {} (no daemon holds it), at {}\n",
            view.state_store, view.at
        ),
    });
    out
}

fn health_text(h: &Health) -> String {
    let since = h
        .since
        .as_deref()
        .map(|s| format!(" since {s}"))
        .unwrap_or_default();
    match (h.reachable, &h.problem) {
        (None, _) => "not checked".to_owned(),
        (Some(true), None) => format!("reachable{since}"),
        (Some(true), Some(p)) => format!("reachable, but {}{since}", one_line(&p.message, 300)),
        (Some(false), Some(p)) => format!("UNREACHABLE{since}: {}", one_line(&p.message, 300)),
        (Some(false), None) => format!("UNREACHABLE{since}"),
    }
}

/// The region's error with its time; an error older than the last
/// success is history and is not shown.
fn error_text(r: &RegionStatusView) -> String {
    match (&r.last_error, &r.last_error_at) {
        (Some(e), Some(at)) if r.error_current => format!("{at} {}", one_line(e, 160)),
        _ => "-".to_owned(),
    }
}

/// `s` on one line, at most `max` characters (names come from registries
/// and configs: no line breaks get through).
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        flat.chars().take(max - 1).collect::<String>() + "…"
    } else {
        flat
    }
}

fn ago_secs(secs: f64) -> String {
    let secs = secs as u64;
    match secs {
        0 => "-".to_owned(),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The unix time (seconds) of `rfc3339`, if it parses.
pub fn unix_secs(rfc3339: &str) -> Option<u64> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    u64::try_from(t.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> RegionStatusView {
        RegionStatusView {
            name: name.to_owned(),
            tags_total: Some(2),
            tags_in_sync: Some(2),
            tags_missing: Some(0),
            tags_differ: Some(0),
            tags_only_in_region: Some(0),
            health: Health {
                reachable: Some(true),
                ..Health::default()
            },
            ..RegionStatusView::default()
        }
    }

    fn view(regions: Vec<RegionStatusView>) -> StatusView {
        StatusView {
            source: "store".into(),
            at: "2026-12-03T10:00:00.000Z".into(),
            state_store: "/s".into(),
            mode: "one-way".into(),
            primary: Some(RegistryView {
                name: "p".into(),
                url: "http://p".into(),
                health: Health {
                    reachable: Some(true),
                    ..Health::default()
                },
            }),
            regions,
            conflicts: Vec::new(),
            reconcile: None,
            audit: None,
            events_queued: 0,
            events_duplicate: 0,
            events_rejected: 0,
            events_echo: 0,
            notify: Vec::new(),
            tags_counted_at: None,
            cluster: None,
        }
    }

    #[test]
    fn in_sync_means_reachable_complete_and_nothing_waiting() {
        let ok = view(vec![region("a")]);
        assert!(all_in_sync(&ok, DeletePolicy::Propagate));
        let mut down = ok.clone();
        down.primary.as_mut().expect("a primary").health.reachable = Some(false);
        assert!(!all_in_sync(&down, DeletePolicy::Ignore), "primary down");
        let mut extra = ok.clone();
        extra.regions[0].tags_only_in_region = Some(1);
        assert!(all_in_sync(&extra, DeletePolicy::Ignore), "kept by policy");
        assert!(
            !all_in_sync(&extra, DeletePolicy::Propagate),
            "a delete due"
        );
        let mut queued = ok;
        queued.regions[0].lag_items = 1;
        assert!(!all_in_sync(&queued, DeletePolicy::Ignore));
    }

    #[test]
    fn old_errors_are_not_shown_and_names_stay_on_one_line() {
        let mut r = region("evil\nname");
        r.last_error = Some("boom".into());
        r.last_error_at = Some("2026-12-03T09:00:00Z".into());
        let text = render(&view(vec![r.clone()]));
        assert!(!text.contains("boom"), "{text}");
        assert!(text.contains("evil name"), "{text}");
        r.error_current = true;
        let text = render(&view(vec![r]));
        assert!(text.contains("2026-12-03T09:00:00Z boom"), "{text}");
        assert!(
            text.starts_with("primary p (http://p): reachable"),
            "{text}"
        );
    }
}
