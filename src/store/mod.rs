//! The checkpoint store: what georep knows about the primary and each
//! region, kept on disk (sled) between passes and across crashes.
//!
//! The store is a cache of facts about the registries, which stay the
//! source of truth (DESIGN invariant 4). A fact "region R has X" is written
//! only after R acknowledged X (a 2xx to a PUT or a mount, or a HEAD that
//! found it). Losing facts costs requests, never correctness: what the store
//! does not know is asked again. `georep sync --verify` re-checks every fact,
//! and `--rebuild-state` starts from an empty store.
//!
//! # Key layout (schema version 1)
//!
//! | tree | key | value (JSON) |
//! |---|---|---|
//! | `meta` | `schema_version` | `1` |
//! | `primary` | `repo \0 tag` | [`PrimaryTag`]: digest, media type, seen/deleted times |
//! | `regions` | region name | [`RegionStatus`]: URL, last pass, last success, last error |
//! | `manifests/<region>` | `repo \0 tag-or-digest` | [`ManifestFact`]: digest, time |
//! | `blobs/<region>` | digest | repositories holding it, with the time each was acknowledged (`{"a": ms}`) |
//! | `events`, `latest`, `queue/<region>` | | the daemon's durable work, see [`queue`] |
//! | `outbox` | | outgoing notifications not yet delivered, see [`outbox`] |
//! | `changes`, `conflicts` | | any-region mode's changes since the base and its last conflicts, see [`merge`] |
//!
//! In any-region mode the `primary` tree holds the merge base: per tag, the
//! digest every region last agreed on.
//!
//! A region's facts are bound to its URL: if the config points a region
//! name at another URL, its facts are dropped when the store is opened.
//!
//! sled is used only here; the rest of the crate sees [`Store`].

mod facts;
pub mod merge;
pub mod outbox;
pub mod queue;
pub mod share;
mod summary;
mod time;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::lock::Locked;
pub use summary::QueueFigures;
pub use time::{format_unix, format_unix_ms, now_unix, now_unix_ms};

/// The layout this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// sled's page cache: the store holds small records, and memory must not
/// grow with the number of tags (sled's default is 1 GiB).
const CACHE_BYTES: u64 = 8 << 20;
/// Background flush interval; facts that matter are flushed explicitly.
const FLUSH_EVERY_MS: u64 = 500;

/// Region index, in config order.
pub type RegionId = usize;

/// How long [`Store::open`] waits for a lock that is being let go.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Opens sled at `path`. A store closed a moment ago in this process may
/// still be locked: sled 0.34 releases its file lock from a background
/// thread after the `Db` is dropped (spacejam/sled#1289), so a lock refused
/// is asked again for up to [`LOCK_WAIT`] before the store is called busy.
/// Blocking, like sled's own open; it only waits when the lock is taken.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io)) if io.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Busy {
                        path: path.to_owned(),
                        holder: lock_holder(path),
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(other) => {
                return Err(StoreError::Unreadable {
                    path: path.to_owned(),
                    detail: other.to_string(),
                });
            }
        }
    }
}

/// The process holding the lock on the store at `path` (`pid N: command
/// line`), from Linux's `/proc/locks`; `None` where the system does not tell.
fn lock_holder(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // sled takes an exclusive flock on the `db` file.
        let meta = std::fs::metadata(path.join("db")).ok()?;
        let dev = meta.dev();
        // glibc's encoding of a device number; /proc/locks prints
        // `major:minor:inode`, the first two in hex.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
        let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
        let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let pid = locks.lines().find_map(|line| {
            // Waiters are listed as `N: -> FLOCK ...`: not holders.
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(5) == Some(&want.as_str())).then(|| fields.get(4).map(|p| p.to_string()))?
        })?;
        let command = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|part| !part.is_empty())
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        Some(if command.is_empty() {
            format!("pid {pid}")
        } else {
            format!("pid {pid}: {command}")
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state store {} is in use by another georep process{}: a daemon holds it for as long as it runs — `georep status` asks a running daemon instead, other commands need it stopped first (SIGTERM lets it drain); a `georep sync` lets go when it ends",
        path.display(),
        holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Busy {
        path: PathBuf,
        /// The process holding it (`pid N: command line`), when the system
        /// tells.
        holder: Option<String>,
    },
    #[error(
        "the state store {} has schema version {found}, newer than this georep understands ({SCHEMA_VERSION}): upgrade georep, or run `georep sync --rebuild-state` to start a new store",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: u32 },
    #[error(
        "the state store {} cannot be opened: {detail}; run `georep sync --rebuild-state` to move it aside and rebuild it from the registries",
        path.display()
    )]
    Unreadable { path: PathBuf, detail: String },
    #[error("the state store {} failed: {error}", path.display())]
    Io { path: PathBuf, error: sled::Error },
}

/// The primary's state of one tag, as last listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryTag {
    pub digest: Digest,
    #[serde(default)]
    pub media_type: Option<String>,
    /// When the tag was last seen with this digest (unix seconds).
    pub seen_at: u64,
    /// Set when the tag disappeared from the primary (a tombstone).
    #[serde(default)]
    pub deleted_at: Option<u64>,
}

/// A region holds `digest` under a tag or by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFact {
    pub digest: Digest,
    /// When the region acknowledged it (unix milliseconds).
    pub at_ms: u64,
    /// Only seen there (a `HEAD` found it), not written by georep: in
    /// any-region mode, what people may have pushed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seen: bool,
}

impl ManifestFact {
    /// What georep wrote (or the regions agreed on), not only saw.
    pub fn written(self) -> Option<ManifestFact> {
        (!self.seen).then_some(self)
    }
}

/// A tag a region holds that the primary deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionOnly {
    pub repository: String,
    pub tag: String,
    /// What the region acknowledged under the tag.
    pub digest: Digest,
    /// When the primary's listing first missed it (unix seconds).
    pub deleted_on_primary_at: u64,
}

/// Repository -> when the region acknowledged the blob there (unix ms).
type BlobRepos = BTreeMap<String, u64>;

/// One region's pass history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStatus {
    pub url: String,
    #[serde(default)]
    pub last_pass_at: Option<u64>,
    #[serde(default)]
    pub last_success_at: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<u64>,
    /// When the daemon deleted manifests here in the last hour (unix ms),
    /// for the hourly cap; kept here so a restart does not reset it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletes_ms: Vec<u64>,
}

struct RegionTrees {
    name: String,
    manifests: sled::Tree,
    blobs: sled::Tree,
    queue: sled::Tree,
    /// The queue in figures, kept in step with it ([`summary`]).
    summary: std::sync::Mutex<summary::Summary>,
}

pub struct Store {
    path: PathBuf,
    db: sled::Db,
    primary: sled::Tree,
    statuses: sled::Tree,
    /// Held while a region's status is read, changed and written back, so
    /// that two updates (a delete counted, an error recorded) never lose
    /// one another.
    status_lock: std::sync::Mutex<()>,
    events: sled::Tree,
    latest: sled::Tree,
    outbox: sled::Tree,
    /// Any-region mode: changes since the base, and the last conflicts.
    changes: sled::Tree,
    conflicts: sled::Tree,
    /// Entries in `outbox` (sled's `len` walks the tree).
    outbox_len: std::sync::atomic::AtomicUsize,
    regions: Vec<RegionTrees>,
}

fn key(repository: &str, reference: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(repository.len() + 1 + reference.len());
    k.extend_from_slice(repository.as_bytes());
    k.push(0);
    k.extend_from_slice(reference.as_bytes());
    k
}

fn split_key(k: &[u8]) -> Option<(String, String)> {
    let i = k.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8(k[..i].to_vec()).ok()?,
        String::from_utf8(k[i + 1..].to_vec()).ok()?,
    ))
}

fn decode<T: for<'de> Deserialize<'de>>(v: &[u8]) -> Option<T> {
    // A record that does not decode is treated as unknown: the fact is
    // asked again rather than trusted.
    serde_json::from_slice(v).ok()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data structs always serialize.
    serde_json::to_vec(v).expect("store records serialize")
}

impl Store {
    /// Opens (or creates) the store at `path` for these regions, given as
    /// (name, URL) in config order.
    pub fn open(path: &Path, regions: &[(String, String)]) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Unreadable {
            path: path.to_owned(),
            detail: format!("cannot create the directory: {e}"),
        })?;
        let db = open_sled(path)?;
        Store::on(db, path, regions)
    }

    /// A store that lives in memory and temporary files only, gone when
    /// dropped: for a dry run with no store yet, which must leave nothing
    /// behind.
    pub fn open_temporary(regions: &[(String, String)]) -> Result<Store, StoreError> {
        let path = Path::new("(temporary store)");
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| StoreError::Unreadable {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        Store::on(db, path, regions)
    }

    /// The store on an open sled database.
    fn on(db: sled::Db, path: &Path, regions: &[(String, String)]) -> Result<Store, StoreError> {
        let io = |error| StoreError::Io {
            path: path.to_owned(),
            error,
        };
        let meta = db.open_tree("meta").map_err(io)?;
        match meta.get("schema_version").map_err(io)? {
            None => {
                meta.insert("schema_version", encode(&SCHEMA_VERSION))
                    .map_err(io)?;
            }
            Some(v) => match decode::<u32>(&v) {
                Some(SCHEMA_VERSION) => {}
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: path.to_owned(),
                        found,
                    });
                }
                other => {
                    return Err(StoreError::Unreadable {
                        path: path.to_owned(),
                        detail: format!("unknown schema version {other:?}"),
                    });
                }
            },
        }
        let primary = db.open_tree("primary").map_err(io)?;
        let outbox = db.open_tree("outbox").map_err(io)?;
        let statuses = db.open_tree("regions").map_err(io)?;
        let mut trees = Vec::new();
        for (name, url) in regions {
            let status: Option<RegionStatus> = statuses
                .get(name.as_bytes())
                .map_err(io)?
                .and_then(|v| decode(&v));
            let manifests_name = format!("manifests/{name}");
            let blobs_name = format!("blobs/{name}");
            if let Some(s) = &status
                && s.url != *url
            {
                tracing::info!(
                    region = %name,
                    old = %s.url,
                    new = %url,
                    "region points at another registry now: forgetting what the store knew of it"
                );
                db.drop_tree(manifests_name.as_bytes()).map_err(io)?;
                db.drop_tree(blobs_name.as_bytes()).map_err(io)?;
                statuses.remove(name.as_bytes()).map_err(io)?;
            }
            if status.as_ref().is_none_or(|s| s.url != *url) {
                let fresh = RegionStatus {
                    url: url.clone(),
                    ..RegionStatus::default()
                };
                statuses
                    .insert(name.as_bytes(), encode(&fresh))
                    .map_err(io)?;
            }
            // Queued work outlives a change of URL: the new registry needs
            // it as much as the old one did.
            let queue = db.open_tree(format!("queue/{name}")).map_err(io)?;
            let mut figures = summary::Summary::default();
            for entry in queue.iter() {
                let (k, v) = entry.map_err(io)?;
                if let Some(item) = decode::<queue::WorkItem>(&v) {
                    figures.add(&k, item.entry());
                }
            }
            trees.push(RegionTrees {
                name: name.clone(),
                manifests: db.open_tree(manifests_name).map_err(io)?,
                blobs: db.open_tree(blobs_name).map_err(io)?,
                queue,
                summary: std::sync::Mutex::new(figures),
            });
        }
        Ok(Store {
            path: path.to_owned(),
            events: db.open_tree("events").map_err(io)?,
            latest: db.open_tree("latest").map_err(io)?,
            changes: db.open_tree("changes").map_err(io)?,
            conflicts: db.open_tree("conflicts").map_err(io)?,
            outbox_len: std::sync::atomic::AtomicUsize::new(outbox.len()),
            outbox,
            db,
            primary,
            statuses,
            status_lock: std::sync::Mutex::new(()),
            regions: trees,
        })
    }

    /// Whether the store can be read (for readiness probes).
    pub fn check(&self) -> Result<(), StoreError> {
        self.statuses.get(b"").map(|_| ()).map_err(|e| self.io(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, error: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            error,
        }
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| self.io(e))
    }

    pub fn region_status(&self, r: RegionId) -> RegionStatus {
        self.statuses
            .get(self.regions[r].name.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
            .unwrap_or_default()
    }

    /// Records the end of a pass for region `r`: a success, or its first error.
    pub fn record_pass(&self, r: RegionId, error: Option<&str>) -> Result<(), StoreError> {
        self.record_status(r, error, true)
    }

    /// Records a success or an error in region `r`, and whether it ended a pass.
    fn record_status(
        &self,
        r: RegionId,
        error: Option<&str>,
        pass: bool,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        self.update_status(r, |s| {
            if pass {
                s.last_pass_at = Some(now);
            }
            match error {
                None => s.last_success_at = Some(now),
                Some(e) => {
                    s.last_error = Some(e.to_owned());
                    s.last_error_at = Some(now);
                }
            }
            Some(())
        })?;
        Ok(())
    }

    /// Reads region `r`'s status, lets `f` change it, and writes it back if
    /// `f` returns `Some` — atomically with respect to every other update.
    pub(crate) fn update_status<T>(
        &self,
        r: RegionId,
        f: impl FnOnce(&mut RegionStatus) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let _held = self.status_lock.locked();
        let mut s = self.region_status(r);
        let Some(out) = f(&mut s) else {
            return Ok(None);
        };
        self.statuses
            .insert(self.regions[r].name.as_bytes(), encode(&s))
            .map_err(|e| self.io(e))?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<(String, String)> {
        vec![
            ("eastus".into(), "http://a".into()),
            ("japaneast".into(), "http://b".into()),
        ]
    }

    #[tokio::test]
    async fn facts_survive_reopen_and_follow_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::sha256_of(b"x");
        {
            let s = Store::open(dir.path(), &regions()).unwrap();
            s.record_blob(0, "a", &d).unwrap();
            s.record_blob(0, "b", &d).unwrap();
            s.record_manifest(1, "a", "v1", &d).unwrap();
            s.record_primary_tag("a", "v1", &d, Some("application/x"))
                .unwrap();
            s.record_pass(0, Some("boom")).unwrap();
            s.flush().await.unwrap();
        }
        let s = Store::open(dir.path(), &regions()).unwrap();
        assert!(s.has_blob(0, "a", &d));
        assert_eq!(s.mount_source(0, &d, "a").as_deref(), Some("b"));
        assert_eq!(s.manifest(1, "a", "v1").unwrap().digest, d);
        assert_eq!(s.primary_tags("a").len(), 1);
        assert_eq!(s.region_status(0).last_error.as_deref(), Some("boom"));
        s.forget_blob(0, "a", &d).unwrap();
        s.forget_blob(0, "b", &d).unwrap();
        assert!(!s.has_blob(0, "b", &d));
        drop(s);

        // eastus moved to another registry: its facts are gone.
        let moved = vec![
            ("eastus".into(), "http://elsewhere".into()),
            ("japaneast".into(), "http://b".into()),
        ];
        let s = Store::open(dir.path(), &moved).unwrap();
        s.record_blob(0, "a", &d).unwrap();
        drop(s);
        let s = Store::open(dir.path(), &moved).unwrap();
        assert!(s.has_blob(0, "a", &d));
        assert_eq!(s.region_status(0).url, "http://elsewhere");
        assert!(s.manifest(1, "a", "v1").is_some());
    }

    #[test]
    fn tombstones_hide_tags() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &regions()).unwrap();
        let d = Digest::sha256_of(b"x");
        s.record_primary_tag("r", "a", &d, None).unwrap();
        s.record_primary_tag("r", "b", &d, None).unwrap();
        s.tombstone_primary_tag("r", "a").unwrap();
        assert_eq!(s.primary_tags("r").keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(s.primary_tag("r", "a").unwrap().deleted_at.is_some());
        assert_eq!(s.primary_repositories(), vec!["r".to_owned()]);
    }

    #[test]
    fn only_tags_the_primary_deleted_are_only_in_region() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &regions()).unwrap();
        let d = Digest::sha256_of(b"x");
        for tag in ["gone", "live", "filtered"] {
            s.record_primary_tag(if tag == "filtered" { "f" } else { "r" }, tag, &d, None)
                .unwrap();
        }
        s.tombstone_primary_tag("r", "gone").unwrap();
        s.tombstone_primary_tag("f", "filtered").unwrap();
        for (repo, reference) in [
            ("r", "gone"),
            ("r", "live"),
            ("r", d.as_str()),
            ("f", "filtered"),
            // Copied on an event before any listing: not known to be gone.
            ("r", "unlisted"),
        ] {
            s.record_manifest(0, repo, reference, &d).unwrap();
        }
        let only = s.only_in_region(0, |repo| repo != "f");
        assert_eq!(
            only.iter().map(|o| o.tag.as_str()).collect::<Vec<_>>(),
            vec!["gone"]
        );
        assert_eq!(only[0].digest, d);
        assert!(s.only_in_region(1, |_| true).is_empty());
    }

    /// sled lets go of its lock after the store is dropped, from another
    /// thread: an open right after a close waits for it instead of failing.
    #[tokio::test]
    async fn reopening_at_once_waits_for_the_lock_to_be_let_go() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let s =
                Store::open(dir.path(), &regions()).unwrap_or_else(|e| panic!("open #{i}: {e}"));
            s.record_pass(0, None).unwrap();
            s.flush().await.unwrap();
        }
    }

    #[test]
    fn second_open_is_busy_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &regions()).unwrap();
        let err = Store::open(dir.path(), &regions()).err().unwrap();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        s.db.open_tree("meta")
            .unwrap()
            .insert("schema_version", encode(&(SCHEMA_VERSION + 1)))
            .unwrap();
        s.db.flush().unwrap();
        drop(s);
        let err = Store::open(dir.path(), &regions()).err().unwrap();
        assert!(err.to_string().contains("newer than this georep"), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
