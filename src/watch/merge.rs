//! Any-region mode's bookkeeping around [`crate::merge::decide`]: what
//! people changed in each region since the regions last agreed (from
//! notifications and reconciles), the decision, and the queue it asks for.
//!
//! Every change of a tag goes through [`Merge`] under one lock: record the
//! region's change, decide with what is known of every region, and assign
//! each region's queue item for the tag (the winner's digest, read from the
//! region that has it; nothing where it is held already). A worker that
//! finishes the last item of a tag calls [`Merge::settle`]: the decision is
//! carried out everywhere, and its outcome becomes the new base.
//!
//! georep's own writes notify too. They are echoes, not changes: an event
//! made with georep's user agent or account, or naming the digest the store
//! says georep holds there, is counted and dropped.

use std::sync::{Arc, Mutex};

use super::doorbell::Doorbell;
use super::webhook::Event;
use crate::config::{Config, NotifyEvent};
use crate::digest::Digest;
use crate::lock::Locked;
use crate::merge::{Change, Conflict, DecidedBy, Push, Rules, Site, Verdict, decide};
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier};
use crate::store::merge::{Changes, ConflictRecord, PushRecord, RegionChange, Target};
use crate::store::queue::{Action, Origin, WorkItem};
use crate::store::{RegionId, Store, StoreError, format_unix_ms, now_unix_ms};

/// What became of one change brought to the merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noticed {
    /// Decided; the regions' queues say what is left to do.
    Queued,
    /// georep's own write, seen again.
    Echo,
}

/// One registry in the merge.
struct Member {
    name: String,
    host: String,
    /// People push there.
    writable: bool,
    /// The account georep writes there with (its events are echoes).
    account: Option<String>,
}

pub struct Merge {
    store: Arc<Store>,
    doorbell: Arc<Doorbell>,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
    members: Vec<Member>,
    rules: Rules,
    /// Held from reading a tag's changes to writing its queue items.
    lock: Mutex<()>,
}

impl Merge {
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        doorbell: Arc<Doorbell>,
        metrics: Arc<Metrics>,
        notifier: Arc<Notifier>,
        rules: Rules,
    ) -> Merge {
        let members = config
            .regions
            .iter()
            .map(|r| Member {
                name: r.name.clone(),
                host: host_of(&r.url),
                writable: r.accepts_pushes,
                account: match &r.credentials {
                    Some(crate::config::Credentials::Basic { username, .. }) => {
                        Some(username.clone())
                    }
                    _ => None,
                },
            })
            .collect();
        Merge {
            store,
            doorbell,
            metrics,
            notifier,
            members,
            rules,
            lock: Mutex::new(()),
        }
    }

    /// Whether `event` from region `r` is georep's own write.
    pub fn is_echo(&self, r: RegionId, event: &Event) -> bool {
        event.by_georep(self.members[r].account.as_deref())
    }

    /// People pushed `digest` (or deleted, `None`) under `repository:tag`
    /// in region `r` at `at_ns` (the registry's time).
    pub fn tag_changed(
        &self,
        r: RegionId,
        repository: &str,
        tag: &str,
        digest: Option<&Digest>,
        at_ns: Option<u64>,
        origin: Origin,
    ) -> Result<Noticed, StoreError> {
        let _one = self.lock.locked();
        let mut changes = self.store.changes(repository, tag);
        let name = &self.members[r].name;
        // The digest georep holds there: its own write, notified back.
        if let Some(d) = digest
            && changes
                .regions
                .get(name)
                .is_none_or(|c| c.digest.as_ref() == Some(d))
            && self
                .store
                .manifest(r, repository, tag)
                .and_then(|f| f.written())
                .is_some_and(|f| f.digest == *d)
        {
            self.echoed_locked(r, repository, tag, d, at_ns)?;
            return Ok(Noticed::Echo);
        }
        // Events of one region arrive in order; one older than the change
        // recorded is stale.
        if let (Some(old), Some(at)) = (changes.regions.get(name), at_ns)
            && old.at_ns.is_some_and(|t| t > at)
        {
            return Ok(Noticed::Queued);
        }
        // What georep knew the region to hold there is history now: a copy
        // of the old digest must not be taken as done.
        self.store.forget_manifest(r, repository, tag)?;
        changes.regions.insert(
            name.clone(),
            RegionChange {
                digest: digest.cloned(),
                at_ns,
                seen_ms: now_unix_ms(),
                overwritten: None,
            },
        );
        self.decide_and_assign(repository, tag, changes, origin)?;
        Ok(Noticed::Queued)
    }

    /// georep's own write of `digest` under `repository:tag` in region `r`,
    /// notified back (at `at_ns`, by the region's clock). If it landed
    /// after a change people made there — a copy of an earlier decision
    /// finishing after a newer push — the region serves it now, not what
    /// was pushed, and the tag is decided again.
    pub fn echoed(
        &self,
        r: RegionId,
        repository: &str,
        tag: &str,
        digest: &Digest,
        at_ns: Option<u64>,
    ) -> Result<(), StoreError> {
        let _one = self.lock.locked();
        self.echoed_locked(r, repository, tag, digest, at_ns)
    }

    /// A worker wrote `digest` under `repository:tag` in region `r`, and a
    /// newer decision had taken its item away meanwhile: as
    /// [`Merge::echoed`], without the region's time (a change recorded
    /// before the write finished is taken as overwritten; if it was not,
    /// the region only gets its own digest written again).
    pub fn wrote(
        &self,
        r: RegionId,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        if tag.contains(':') {
            return Ok(());
        }
        self.echoed(r, repository, tag, digest, None)
    }

    fn echoed_locked(
        &self,
        r: RegionId,
        repository: &str,
        tag: &str,
        digest: &Digest,
        at_ns: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut changes = self.store.changes(repository, tag);
        // Agreed: nothing to weigh it against.
        if changes.regions.is_empty() && changes.target.is_none() {
            return Ok(());
        }
        match changes.regions.get_mut(&self.members[r].name) {
            Some(c) => {
                if c.digest.as_ref() == Some(digest) || c.overwritten.as_ref() == Some(digest) {
                    return Ok(());
                }
                // The region's own clock orders its push and georep's write.
                if let (Some(pushed), Some(written)) = (c.at_ns, at_ns)
                    && written <= pushed
                {
                    return Ok(());
                }
                c.overwritten = Some(digest.clone());
                tracing::debug!(region = %self.members[r].name, %repository, %tag, %digest, "georep's copy landed after a push there; deciding again");
            }
            // No push there: what georep wrote is what it knows the region
            // holds (the store's fact), weighed against the decision now.
            None if changes.target.as_ref().and_then(|t| t.digest.as_ref()) == Some(digest) => {
                return Ok(());
            }
            None => {}
        }
        self.decide_and_assign(repository, tag, changes, Origin::Event)
    }

    /// People pushed manifest `digest` of `repository` without a tag in
    /// region `r` (a referrer, a child by digest): it is copied by digest
    /// to every other region that is not known to hold it. No conflict is
    /// possible: the digest is the content.
    pub fn digest_pushed(
        &self,
        r: RegionId,
        repository: &str,
        digest: &Digest,
        at_ns: u64,
        origin: Origin,
    ) -> Result<Noticed, StoreError> {
        let _one = self.lock.locked();
        if self.store.has_manifest(r, repository, digest) {
            return Ok(Noticed::Echo);
        }
        let now = now_unix_ms();
        let items: Vec<Option<WorkItem>> = (0..self.members.len())
            .map(|x| {
                (x != r && !self.store.has_manifest(x, repository, digest)).then(|| WorkItem {
                    source: Some(self.members[r].name.clone()),
                    ..WorkItem::new(Action::Copy, digest.clone(), origin, at_ns, now)
                })
            })
            .collect();
        self.assign(repository, digest.as_str(), &items)?;
        Ok(Noticed::Queued)
    }

    /// People deleted manifest `digest` of `repository` in region `r`:
    /// under `propagate` it is deleted by digest in every other region
    /// (its tags follow as tag deletes); else nothing (the tags' own
    /// events copy them back).
    pub fn digest_deleted(
        &self,
        r: RegionId,
        repository: &str,
        digest: &Digest,
        at_ns: u64,
    ) -> Result<Noticed, StoreError> {
        let _one = self.lock.locked();
        // Gone there, with its tags: whatever georep knew of them.
        self.store.forget_manifest_and_tags(r, repository, digest)?;
        if !self.rules.propagate_deletes {
            return Ok(Noticed::Queued);
        }
        let now = now_unix_ms();
        let items: Vec<Option<WorkItem>> = (0..self.members.len())
            .map(|x| {
                (x != r).then(|| {
                    WorkItem::new(Action::Delete, digest.clone(), Origin::Event, at_ns, now)
                })
            })
            .collect();
        self.assign(repository, digest.as_str(), &items)?;
        Ok(Noticed::Queued)
    }

    /// A reconcile listed `repository:tag`: `listed[r]` is what region `r`
    /// serves under it (`Some(None)`: no such tag), or `None` where it was
    /// not listed (it accepts no pushes, or its listing failed). The
    /// listings started at `started_ms`: a change recorded after that is
    /// newer than what they show. Returns whether work was queued.
    pub fn observed(
        &self,
        repository: &str,
        tag: &str,
        listed: &[Option<Option<Digest>>],
        started_ms: u64,
    ) -> Result<bool, StoreError> {
        let _one = self.lock.locked();
        let mut changes = self.store.changes(repository, tag);
        let base = self.store.primary_tag(repository, tag).and_then(live);
        for (r, l) in listed.iter().enumerate() {
            let Some(now) = l else { continue };
            if !self.members[r].writable {
                continue;
            }
            let name = &self.members[r].name;
            let wrote = self
                .store
                .manifest(r, repository, tag)
                .and_then(|f| f.written())
                .map(|f| f.digest);
            // What is there is georep's own doing: a digest it wrote
            // there, or no tag where it was deleting it. No tag where
            // georep never knew the region to hold one (a region added
            // since, say) is a region behind, not a delete.
            let own = match now {
                Some(d) => wrote.as_ref() == Some(d),
                None => wrote.is_none() || matches!(changes.target, Some(Target { digest: None })),
            };
            let known = changes.regions.get(name);
            match known {
                // The listing may predate it.
                Some(c) if c.seen_ms >= started_ms => continue,
                // The known change stands (a push that lost, say).
                _ if own => continue,
                _ => {}
            }
            if *now == base {
                // Changed back, or never changed.
                changes.regions.remove(name);
                continue;
            }
            let at_ns = known.filter(|c| c.digest == *now).and_then(|c| c.at_ns);
            if wrote.is_some() {
                self.store.forget_manifest(r, repository, tag)?;
            }
            changes.regions.insert(
                name.clone(),
                RegionChange {
                    digest: now.clone(),
                    at_ns,
                    seen_ms: now_unix_ms(),
                    overwritten: None,
                },
            );
        }
        let sites = self.sites(repository, tag, &changes, base.as_ref(), Some(listed));
        let verdict = decide(base.as_ref(), &sites, &self.rules);
        if verdict == Verdict::Agreed(base.clone())
            && changes.regions.is_empty()
            && changes.target.is_none()
        {
            // Nothing changed: nothing is written.
            return Ok(false);
        }
        let queued = !matches!(verdict, Verdict::Agreed(_));
        self.apply(repository, tag, changes, &sites, verdict, Origin::Reconcile)?;
        Ok(queued)
    }

    /// A worker finished region `r`'s item on `repository:reference`: once
    /// no region has work left on it, the decision is carried out and its
    /// outcome is the new base.
    pub fn settle(&self, repository: &str, reference: &str) -> Result<(), StoreError> {
        if reference.contains(':') {
            return Ok(());
        }
        let _one = self.lock.locked();
        if self.store.queued_anywhere(repository, reference) {
            return Ok(());
        }
        let changes = self.store.changes(repository, reference);
        if let Some(target) = changes.target {
            self.agree(repository, reference, target.digest.as_ref())?;
            tracing::debug!(%repository, tag = %reference, digest = ?target.digest, "every region agrees");
        }
        Ok(())
    }

    /// Decides again every tag whose changes are not settled (at start:
    /// a crash may have fallen between recording a change and queueing).
    pub fn redecide_all(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for (repository, tag) in self.store.changed_tags() {
            let _one = self.lock.locked();
            let changes = self.store.changes(&repository, &tag);
            self.decide_and_assign(&repository, &tag, changes, Origin::Reconcile)?;
            n += 1;
        }
        if n > 0 {
            self.doorbell.ring();
        }
        Ok(n)
    }

    fn decide_and_assign(
        &self,
        repository: &str,
        tag: &str,
        changes: Changes,
        origin: Origin,
    ) -> Result<(), StoreError> {
        let base = self.store.primary_tag(repository, tag).and_then(live);
        let sites = self.sites(repository, tag, &changes, base.as_ref(), None);
        let verdict = decide(base.as_ref(), &sites, &self.rules);
        self.apply(repository, tag, changes, &sites, verdict, origin)
    }

    /// Each region's side of `repository:tag`: what it holds (the listing's
    /// word when there is one; else the newer of its recorded change and
    /// what georep knows it holds; else the base) and its change.
    fn sites(
        &self,
        repository: &str,
        tag: &str,
        changes: &Changes,
        base: Option<&Digest>,
        listed: Option<&[Option<Option<Digest>>]>,
    ) -> Vec<Site> {
        (0..self.members.len())
            .map(|r| {
                let change = changes.regions.get(&self.members[r].name);
                let fact = self.store.manifest(r, repository, tag);
                let listed_now = listed.and_then(|l| l.get(r).cloned().flatten());
                let current = match (listed_now, change, fact) {
                    (Some(now), _, _) => now,
                    (None, Some(c), _) => c.overwritten.clone().or_else(|| c.digest.clone()),
                    (None, None, Some(f)) => Some(f.digest),
                    (None, None, None) => base.cloned(),
                };
                Site {
                    current,
                    change: change.map(|c| Change {
                        digest: c.digest.clone(),
                        at_ns: c.at_ns,
                    }),
                }
            })
            .collect()
    }

    /// Carries out `verdict`: the queue items, the conflict told, the
    /// target recorded (or the base, when the regions agree).
    fn apply(
        &self,
        repository: &str,
        tag: &str,
        mut changes: Changes,
        sites: &[Site],
        verdict: Verdict,
        origin: Origin,
    ) -> Result<(), StoreError> {
        let now = now_unix_ms();
        // The newest change's time orders the items it makes.
        let event_ns = changes
            .regions
            .values()
            .filter_map(|c| c.at_ns)
            .max()
            .unwrap_or(now.saturating_mul(1_000_000));
        let items: Vec<Option<WorkItem>> = match &verdict {
            Verdict::Agreed(d) => {
                self.agree(repository, tag, d.as_ref())?;
                let none = vec![None; self.members.len()];
                self.assign(repository, tag, &none)?;
                return Ok(());
            }
            Verdict::Copy {
                digest,
                source,
                to,
                conflict,
            } => {
                if let Some(c) = conflict {
                    self.conflict(repository, tag, c, &mut changes);
                }
                changes.target = Some(Target {
                    digest: Some(digest.clone()),
                });
                (0..self.members.len())
                    .map(|r| {
                        to.contains(&r).then(|| WorkItem {
                            source: Some(self.members[*source].name.clone()),
                            ..WorkItem::new(Action::Copy, digest.clone(), origin, event_ns, now)
                        })
                    })
                    .collect()
            }
            Verdict::Delete { from } => {
                changes.target = Some(Target { digest: None });
                (0..self.members.len())
                    .map(|r| {
                        from.contains(&r).then(|| {
                            let held = sites[r].current.clone().unwrap_or_else(WorkItem::no_digest);
                            WorkItem::new(Action::Delete, held, origin, event_ns, now)
                        })
                    })
                    .collect()
            }
        };
        self.store.set_changes(repository, tag, &changes)?;
        self.assign(repository, tag, &items)
    }

    /// The regions agree on `digest` (or on no tag): the new base; what
    /// each region holds is known.
    fn agree(
        &self,
        repository: &str,
        tag: &str,
        digest: Option<&Digest>,
    ) -> Result<(), StoreError> {
        for r in 0..self.members.len() {
            let fact = self.store.manifest(r, repository, tag).map(|f| f.digest);
            match digest {
                Some(d) if fact.as_ref() != Some(d) => {
                    self.store.record_manifest(r, repository, tag, d)?
                }
                None if fact.is_some() => self.store.forget_manifest(r, repository, tag)?,
                _ => {}
            }
        }
        self.store.agree(repository, tag, digest)
    }

    fn assign(
        &self,
        repository: &str,
        reference: &str,
        items: &[Option<WorkItem>],
    ) -> Result<(), StoreError> {
        let changed = self.store.assign(repository, reference, items)?;
        for r in changed {
            self.doorbell.hints.touch(r, repository, reference);
        }
        self.doorbell.ring();
        Ok(())
    }

    /// A conflict, told once per set of digests: logged, counted,
    /// recorded for the status, and notified.
    fn conflict(&self, repository: &str, tag: &str, c: &Conflict, changes: &mut Changes) {
        let mut digests: Vec<Digest> = std::iter::once(&c.winner)
            .chain(&c.losers)
            .map(|p| p.digest.clone())
            .collect();
        digests.sort();
        digests.dedup();
        if digests.iter().all(|d| changes.reported.contains(d)) {
            return;
        }
        changes.reported.extend(digests);
        changes.reported.sort();
        changes.reported.dedup();
        let record = |p: &Push| PushRecord {
            region: self.members[p.region].name.clone(),
            digest: p.digest.clone(),
            at: p.at_ns.map(|ns| format_unix_ms(ns / 1_000_000)),
        };
        let rec = ConflictRecord {
            decided_at: format_unix_ms(now_unix_ms()),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            winner: record(&c.winner),
            losers: c.losers.iter().map(record).collect(),
            decided_by: c.decided_by,
        };
        let describe = |p: &PushRecord| {
            format!(
                "{} pushed {} at {}",
                p.region,
                p.digest,
                p.at.as_deref()
                    .unwrap_or("an unknown time (found by polling)")
            )
        };
        let by = match c.decided_by {
            DecidedBy::Time => "it was pushed last".to_owned(),
            DecidedBy::Order => format!(
                "the pushes were within {} ms of each other or a time was unknown, and conflicts.order puts {} first",
                self.rules.skew_ns / 1_000_000,
                rec.winner.region
            ),
        };
        let losers: Vec<String> = rec.losers.iter().map(describe).collect();
        tracing::warn!(
            repository,
            tag,
            winner = %rec.winner.digest,
            "conflict on {repository}:{tag}: {}; {}; {} wins because {by} (the other manifests stay reachable by digest where they were pushed)",
            describe(&rec.winner),
            losers.join("; "),
            rec.winner.region,
        );
        self.metrics
            .conflicts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.store.record_conflict(&rec) {
            tracing::warn!("recording the conflict on {repository}:{tag} failed: {e:#}");
        }
        let mut n = Notification::new(
            NotifyEvent::Conflict,
            repository,
            Some(tag),
            Some(&c.winner.digest),
            self.members[c.winner.region].host.clone(),
        );
        n.region = Some(rec.winner.region.clone());
        n.regions = std::iter::once(&rec.winner)
            .chain(&rec.losers)
            .map(|p| p.region.clone())
            .collect();
        n.reason = Some(format!(
            "{}; {}; {} wins because {by}",
            describe(&rec.winner),
            losers.join("; "),
            rec.winner.region
        ));
        self.notifier.send(&n);
    }
}

/// A base tag that is live (not a tombstone).
fn live(t: crate::store::PrimaryTag) -> Option<Digest> {
    t.deleted_at.is_none().then_some(t.digest)
}

fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::Action;

    fn merge(deletes: &str) -> (tempfile::TempDir, Merge, Arc<Store>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = format!(
            "state_dir: ./s\nmode: any-region\ndeletes:\n  policy: {deletes}\nregions:\n  - name: a\n    url: http://127.0.0.1:1\n  - name: b\n    url: http://127.0.0.1:2\n  - name: c\n    url: http://127.0.0.1:3\n"
        );
        let config =
            crate::config::load_str(&dir.path().join("g.yaml"), &yaml, &|_| None).expect("config");
        let names: Vec<(String, String)> = config
            .regions
            .iter()
            .map(|r| (r.name.clone(), r.display_url()))
            .collect();
        let store = Arc::new(Store::open(&dir.path().join("store"), &names).expect("store"));
        let rules = Rules {
            order: config.conflicts.order.clone(),
            skew_ns: 0,
            propagate_deletes: deletes == "propagate",
        };
        let merge = Merge::new(
            &config,
            store.clone(),
            Arc::new(Doorbell::new(3)),
            Arc::new(Metrics::new(3)),
            Arc::new(Notifier::new(&config, store.clone())),
            rules,
        );
        (dir, merge, store)
    }

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn a_region_that_never_held_a_tag_is_behind_not_a_delete() {
        let (_dir, merge, store) = merge("propagate");
        // a and b agreed on d(1); c was added since and holds nothing.
        for r in 0..2 {
            store.record_manifest(r, "app", "v1", &d(1)).expect("fact");
        }
        store.agree("app", "v1", Some(&d(1))).expect("base");
        let listed = [Some(Some(d(1))), Some(Some(d(1))), Some(None)];
        assert!(merge.observed("app", "v1", &listed, 0).expect("decided"));
        let item = store
            .queued_item(2, "app", "v1")
            .expect("c gets the tag")
            .item;
        assert_eq!(
            (item.action, item.digest, item.source.as_deref()),
            (Action::Copy, d(1), Some("a"))
        );
        assert!(!store.has_item(0, "app", "v1") && !store.has_item(1, "app", "v1"));

        // b's tag gone where georep knew it: people deleted it, and the
        // delete goes everywhere.
        let listed = [Some(Some(d(1))), Some(None), Some(None)];
        assert!(merge.observed("app", "v1", &listed, 0).expect("decided"));
        let item = store.queued_item(0, "app", "v1").expect("a deletes").item;
        assert_eq!(item.action, Action::Delete);
        assert!(
            !store.has_item(1, "app", "v1"),
            "b has nothing left to delete"
        );
    }

    #[test]
    fn echoes_are_known_by_the_written_digest_and_nothing_new_writes_nothing() {
        let (_dir, merge, store) = merge("ignore");
        store.record_manifest(1, "app", "v1", &d(1)).expect("fact");
        let echo = merge
            .tag_changed(1, "app", "v1", Some(&d(1)), Some(5), Origin::Event)
            .expect("noticed");
        assert_eq!(echo, Noticed::Echo);
        // A digest georep only saw there (a HEAD) is no proof of its own
        // write: people's push of it is a change.
        store
            .record_manifest_seen(2, "app", "v2", &d(2))
            .expect("seen");
        let push = merge
            .tag_changed(2, "app", "v2", Some(&d(2)), Some(6), Origin::Event)
            .expect("noticed");
        assert_eq!(push, Noticed::Queued);
        assert!(store.has_item(0, "app", "v2") && store.has_item(1, "app", "v2"));
        // Everyone agreeing on the base: a reconcile writes nothing.
        for r in 0..3 {
            store.record_manifest(r, "app", "v3", &d(3)).expect("fact");
        }
        store.agree("app", "v3", Some(&d(3))).expect("base");
        let listed = [Some(Some(d(3))), Some(Some(d(3))), Some(Some(d(3)))];
        assert!(!merge.observed("app", "v3", &listed, 0).expect("decided"));
        assert!(store.changed_tags().iter().all(|(_, t)| t != "v3"));
    }
}
