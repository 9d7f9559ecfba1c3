//! The daemon's counters and the Prometheus text exposition of them.
//!
//! A handful of fixed series, so plain atomics and a small writer are
//! enough; gauges that live elsewhere (queue depth in the store, in-flight
//! work in the workers, bytes in the engine) are read when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::CopyCounts;
use crate::engine::cause::CauseKind;

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// A cumulative histogram of durations.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let secs = secs.max(0.0);
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braced} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braced} {count}");
    }
}

/// What happened to an incoming event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventResult {
    Queued,
    Duplicate,
    Stale,
    Ignored,
    Rejected,
    /// georep's own write notified back (any-region mode).
    Echo,
}

impl EventResult {
    const ALL: [EventResult; 6] = [
        EventResult::Queued,
        EventResult::Duplicate,
        EventResult::Stale,
        EventResult::Ignored,
        EventResult::Rejected,
        EventResult::Echo,
    ];
    fn name(self) -> &'static str {
        match self {
            EventResult::Queued => "queued",
            EventResult::Duplicate => "duplicate",
            EventResult::Stale => "stale",
            EventResult::Ignored => "ignored",
            EventResult::Rejected => "rejected",
            EventResult::Echo => "echo",
        }
    }
}

const KINDS: [CauseKind; 4] = [
    CauseKind::Unreachable,
    CauseKind::Transient,
    CauseKind::Gone,
    CauseKind::Permanent,
];

#[derive(Default)]
pub struct RegionMetrics {
    errors: [AtomicU64; KINDS.len()],
    pub items_done: AtomicU64,
    pub deletes: AtomicU64,
    /// Tags an audit found missing or different in the region.
    pub audit_stale: AtomicU64,
    /// From the primary's event time to the item done in this region.
    pub latency: Histogram,
}

impl RegionMetrics {
    pub fn error(&self, kind: CauseKind) {
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter of the daemon.
pub struct Metrics {
    pub regions: Vec<RegionMetrics>,
    events: [AtomicU64; EventResult::ALL.len()],
    pub webhook_unauthorized: AtomicU64,
    /// Status and metrics requests refused (`api.auth`).
    pub api_unauthorized: AtomicU64,
    pub reconciles: AtomicU64,
    pub reconcile_failures: AtomicU64,
    pub audits: AtomicU64,
    /// Any-region mode: tags pushed with different digests in two regions.
    pub conflicts: AtomicU64,
    /// A cluster member: events handed to the member owning their
    /// repository.
    pub events_forwarded: AtomicU64,
    /// From the primary's event time to the last region done.
    pub complete_latency: Histogram,
}

impl Metrics {
    pub fn new(regions: usize) -> Metrics {
        Metrics {
            regions: (0..regions).map(|_| RegionMetrics::default()).collect(),
            events: Default::default(),
            webhook_unauthorized: AtomicU64::new(0),
            api_unauthorized: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
            reconcile_failures: AtomicU64::new(0),
            audits: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            events_forwarded: AtomicU64::new(0),
            complete_latency: Histogram::default(),
        }
    }

    pub fn event(&self, result: EventResult) {
        let i = EventResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.events[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn events(&self, result: EventResult) -> u64 {
        let i = EventResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.events[i].load(Ordering::Relaxed)
    }
}

/// Per-region values read at scrape time.
pub struct RegionGauges<'a> {
    pub name: &'a str,
    /// The region answers (its circuit breaker is not open).
    pub up: bool,
    pub queue_depth: usize,
    pub lag_items: usize,
    pub parked: usize,
    pub in_flight: usize,
    pub lag_secs: f64,
    pub copied: CopyCounts,
}

/// One outgoing notification target's figures, read at scrape time.
pub struct TargetGauges<'a> {
    pub name: &'a str,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub pending: usize,
}

/// A label value, escaped as the text format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A per-region series: name, type, help, and how to read its value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RegionGauges<'_>, &RegionMetrics) -> f64,
);

/// The Prometheus text format (version 0.0.4) of everything.
pub fn render(m: &Metrics, regions: &[RegionGauges<'_>], targets: &[TargetGauges<'_>]) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "georep_build_info",
        "gauge",
        "The running georep's version (always 1).",
    );
    let _ = writeln!(
        out,
        "georep_build_info{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
    let per_region: [Series; 13] = [
        (
            "georep_region_up",
            "gauge",
            "1 while the region answers, 0 while it is unreachable (its circuit breaker is open).",
            |g, _| if g.up { 1.0 } else { 0.0 },
        ),
        (
            "georep_blobs_copied_total",
            "counter",
            "Blobs uploaded to the region.",
            |g, _| g.copied.blobs_uploaded as f64,
        ),
        (
            "georep_bytes_copied_total",
            "counter",
            "Blob bytes uploaded to the region.",
            |g, _| g.copied.bytes_uploaded as f64,
        ),
        (
            "georep_blobs_mounted_total",
            "counter",
            "Blobs mounted from another repository of the region.",
            |g, _| g.copied.blobs_mounted as f64,
        ),
        (
            "georep_manifests_pushed_total",
            "counter",
            "Manifests pushed to the region (by tag or digest).",
            |g, _| g.copied.manifests_pushed as f64,
        ),
        (
            "georep_queue_depth",
            "gauge",
            "Work items waiting their turn in the region's queue (not in flight, not parked): queue_depth in /v1/status.",
            |g, _| g.queue_depth as f64,
        ),
        (
            "georep_lag_items",
            "gauge",
            "Everything the region still lacks: queued, in flight and parked (lag_items in /v1/status).",
            |g, _| g.lag_items as f64,
        ),
        (
            "georep_parked_items",
            "gauge",
            "Work items given up on until the next reconcile.",
            |g, _| g.parked as f64,
        ),
        (
            "georep_in_flight",
            "gauge",
            "Work items being copied to the region now.",
            |g, _| g.in_flight as f64,
        ),
        (
            "georep_lag_seconds",
            "gauge",
            "Age of the oldest change the region has not got yet.",
            |g, _| g.lag_secs,
        ),
        (
            "georep_items_done_total",
            "counter",
            "Work items completed in the region.",
            |_, m| m.items_done.load(Ordering::Relaxed) as f64,
        ),
        (
            "georep_deletes_total",
            "counter",
            "Manifests deleted in the region because they were deleted on the primary.",
            |_, m| m.deletes.load(Ordering::Relaxed) as f64,
        ),
        (
            "georep_audit_stale_total",
            "counter",
            "Tags georep had copied that an audit found missing or different in the region.",
            |_, m| m.audit_stale.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, value) in per_region {
        header(&mut out, name, kind, help);
        for (g, rm) in regions.iter().zip(&m.regions) {
            let _ = writeln!(
                out,
                "{name}{{region=\"{}\"}} {}",
                label(g.name),
                value(g, rm)
            );
        }
    }
    header(
        &mut out,
        "georep_errors_total",
        "counter",
        "Failed attempts at a work item, by kind.",
    );
    for (g, rm) in regions.iter().zip(&m.regions) {
        for (i, kind) in KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "georep_errors_total{{region=\"{}\",kind=\"{}\"}} {}",
                label(g.name),
                kind.as_str(),
                rm.errors[i].load(Ordering::Relaxed)
            );
        }
    }
    header(
        &mut out,
        "georep_replication_latency_seconds",
        "histogram",
        "From the primary's event timestamp to the image complete in the region.",
    );
    for (g, rm) in regions.iter().zip(&m.regions) {
        rm.latency.write(
            &mut out,
            "georep_replication_latency_seconds",
            &format!("region=\"{}\"", label(g.name)),
        );
    }
    header(
        &mut out,
        "georep_replication_complete_latency_seconds",
        "histogram",
        "From the primary's event timestamp to the image complete in the last region.",
    );
    m.complete_latency
        .write(&mut out, "georep_replication_complete_latency_seconds", "");
    header(
        &mut out,
        "georep_events_total",
        "counter",
        "Registry events received, by what became of them.",
    );
    for r in EventResult::ALL {
        let _ = writeln!(
            out,
            "georep_events_total{{result=\"{}\"}} {}",
            r.name(),
            m.events(r)
        );
    }
    let plain: [(&str, &str, &AtomicU64); 7] = [
        (
            "georep_webhook_unauthorized_total",
            "Webhook requests refused for missing or wrong credentials.",
            &m.webhook_unauthorized,
        ),
        (
            "georep_api_unauthorized_total",
            "Status and metrics requests refused for missing or wrong credentials.",
            &m.api_unauthorized,
        ),
        (
            "georep_reconciles_total",
            "Full reconciles against the primary's listing.",
            &m.reconciles,
        ),
        (
            "georep_reconcile_failures_total",
            "Reconciles that could not list the primary completely.",
            &m.reconcile_failures,
        ),
        (
            "georep_audits_total",
            "Audits of what the regions serve against what georep recorded.",
            &m.audits,
        ),
        (
            "georep_conflicts_total",
            "Any-region mode: tags changed to different digests in two regions before they agreed (each decided by time or conflicts.order).",
            &m.conflicts,
        ),
        (
            "georep_events_forwarded_total",
            "A cluster member: webhook events handed to the instance that owns their repository.",
            &m.events_forwarded,
        ),
    ];
    for (name, help, v) in plain {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    type TargetSeries = (
        &'static str,
        &'static str,
        &'static str,
        fn(&TargetGauges<'_>) -> f64,
    );
    let per_target: [TargetSeries; 4] = [
        (
            "georep_notifications_sent_total",
            "counter",
            "Outgoing notifications delivered, per target.",
            |t| t.sent as f64,
        ),
        (
            "georep_notifications_failed_total",
            "counter",
            "Outgoing notifications given up on (refused, or failing after every retry).",
            |t| t.failed as f64,
        ),
        (
            "georep_notifications_dropped_total",
            "counter",
            "Outgoing notifications dropped unsent because the outbox was full.",
            |t| t.dropped as f64,
        ),
        (
            "georep_notifications_pending",
            "gauge",
            "Outgoing notifications waiting in the outbox (retries included).",
            |t| t.pending as f64,
        ),
    ];
    for (name, kind, help, value) in per_target {
        if targets.is_empty() {
            break;
        }
        header(&mut out, name, kind, help);
        for t in targets {
            let _ = writeln!(out, "{name}{{target=\"{}\"}} {}", label(t.name), value(t));
        }
    }
    out
}

/// A cluster member's standing, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterGauges {
    pub members: usize,
    pub etcd_up: bool,
    pub fenced: bool,
    pub leader: bool,
}

/// The cluster's series (appended to [`render`]'s on a member).
pub fn render_cluster(g: &ClusterGauges) -> String {
    let mut out = String::new();
    let series: [(&str, &str, f64); 4] = [
        (
            "georep_cluster_members",
            "Live cluster members, as this instance sees them.",
            g.members as f64,
        ),
        (
            "georep_cluster_etcd_up",
            "1 while etcd answers this instance, else 0.",
            f64::from(u8::from(g.etcd_up)),
        ),
        (
            "georep_cluster_fenced",
            "1 while this instance writes nothing because its lease is not confirmed.",
            f64::from(u8::from(g.fenced)),
        ),
        (
            "georep_cluster_leader",
            "1 on the instance that leads (runs the audit schedule).",
            f64::from(u8::from(g.leader)),
        ),
    ];
    for (name, help, v) in series {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

/// Every sample of `text` with an `instance` label first (a cluster
/// member's series, told apart when one Prometheus scrapes them all
/// through one service).
pub fn with_instance(text: &str, instance: &str) -> String {
    let tag = format!("instance=\"{}\"", label(instance));
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some(brace) = line
            .find('{')
            .filter(|&b| b < line.find(' ').unwrap_or(usize::MAX))
        {
            let rest = &line[brace + 1..];
            out.push_str(&line[..=brace]);
            out.push_str(&tag);
            if !rest.starts_with('}') {
                out.push(',');
            }
            out.push_str(rest);
        } else if let Some(space) = line.find(' ') {
            out.push_str(&line[..space]);
            out.push('{');
            out.push_str(&tag);
            out.push('}');
            out.push_str(&line[space..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_s_series_carry_its_instance() {
        let text = "# HELP a x\n# TYPE a gauge\na 1\nb{region=\"r\"} 2\nc{} 3\n";
        let out = with_instance(text, "georep-0");
        assert_eq!(
            out,
            "# HELP a x\n# TYPE a gauge\na{instance=\"georep-0\"} 1\nb{instance=\"georep-0\",region=\"r\"} 2\nc{instance=\"georep-0\"} 3\n"
        );
        let g = render_cluster(&ClusterGauges {
            members: 3,
            etcd_up: true,
            fenced: false,
            leader: true,
        });
        assert!(g.contains("georep_cluster_members 3\n"));
        assert!(g.contains("georep_cluster_leader 1\n"));
    }

    #[test]
    fn exposition_has_labelled_series_and_cumulative_buckets() {
        let m = Metrics::new(1);
        m.regions[0].latency.observe(0.3);
        m.regions[0].latency.observe(2.0);
        m.regions[0].error(CauseKind::Transient);
        m.event(EventResult::Duplicate);
        let text = render(
            &m,
            &[RegionGauges {
                name: "east\"us",
                up: false,
                queue_depth: 3,
                lag_items: 6,
                parked: 1,
                in_flight: 2,
                lag_secs: 1.5,
                copied: CopyCounts {
                    blobs_uploaded: 1,
                    bytes_uploaded: 2,
                    blobs_mounted: 3,
                    manifests_pushed: 4,
                },
            }],
            &[TargetGauges {
                name: "chat",
                sent: 5,
                failed: 1,
                dropped: 0,
                pending: 2,
            }],
        );
        assert!(text.contains("georep_notifications_sent_total{target=\"chat\"} 5"));
        assert!(text.contains("georep_notifications_pending{target=\"chat\"} 2"));
        assert!(text.contains("georep_queue_depth{region=\"east\\\"us\"} 3"));
        assert!(text.contains("georep_region_up{region=\"east\\\"us\"} 0"));
        assert!(text.contains(&format!(
            "georep_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains(
            "georep_replication_latency_seconds_bucket{region=\"east\\\"us\",le=\"0.5\"} 1"
        ));
        assert!(text.contains(
            "georep_replication_latency_seconds_bucket{region=\"east\\\"us\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("georep_errors_total{region=\"east\\\"us\",kind=\"transient\"} 1"));
        assert!(text.contains("georep_events_total{result=\"duplicate\"} 1"));
        assert!(text.contains("georep_bytes_copied_total{region=\"east\\\"us\"} 2"));
    }
}
