//! Request counters per registry: what a pass cost, for the report, the tests
//! ("a second sync uploads nothing") and the benchmark.

use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of request georep makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Ping,
    Catalog,
    TagsList,
    ManifestHead,
    ManifestGet,
    ManifestPut,
    BlobHead,
    BlobGet,
    BlobMount,
    UploadStart,
    UploadPut,
    UploadCancel,
    ManifestDelete,
    BlobDelete,
    Token,
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::Ping,
        Op::Catalog,
        Op::TagsList,
        Op::ManifestHead,
        Op::ManifestGet,
        Op::ManifestPut,
        Op::BlobHead,
        Op::BlobGet,
        Op::BlobMount,
        Op::UploadStart,
        Op::UploadPut,
        Op::UploadCancel,
        Op::ManifestDelete,
        Op::BlobDelete,
        Op::Token,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Catalog => "catalog",
            Op::TagsList => "tags_list",
            Op::ManifestHead => "manifest_head",
            Op::ManifestGet => "manifest_get",
            Op::ManifestPut => "manifest_put",
            Op::BlobHead => "blob_head",
            Op::BlobGet => "blob_get",
            Op::BlobMount => "blob_mount",
            Op::UploadStart => "upload_start",
            Op::UploadPut => "upload_put",
            Op::UploadCancel => "upload_cancel",
            Op::ManifestDelete => "manifest_delete",
            Op::BlobDelete => "blob_delete",
            Op::Token => "token",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
pub struct Stats {
    requests: [AtomicU64; Op::ALL.len()],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Requests sent, by kind (retries included), only kinds with a count.
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl StatsSnapshot {
    pub fn count(&self, op: Op) -> u64 {
        self.requests.get(op.name()).copied().unwrap_or(0)
    }
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
    /// The counts since `earlier` (counters only grow).
    pub fn minus(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let mut requests = std::collections::BTreeMap::new();
        for (k, v) in &self.requests {
            let d = v.saturating_sub(earlier.requests.get(k).copied().unwrap_or(0));
            if d > 0 {
                requests.insert(*k, d);
            }
        }
        StatsSnapshot {
            requests,
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
        }
    }
}

impl Stats {
    pub fn request(&self, op: Op) {
        self.requests[op.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }
    pub fn written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut requests = std::collections::BTreeMap::new();
        for op in Op::ALL {
            let n = self.requests[op.index()].load(Ordering::Relaxed);
            if n > 0 {
                requests.insert(op.name(), n);
            }
        }
        StatsSnapshot {
            requests,
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}
