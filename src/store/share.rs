//! A cluster member letting go of repositories another member now owns:
//! their queued work leaves this store (the new owner finds it again by
//! reconciling what it gained; the registries are the truth), and so do
//! their tag facts, so that a repository that comes back later is learned
//! anew instead of trusted from a time when someone else looked after it.
//! Blob facts stay: they are indexed by digest, a blob a region served is
//! still a good mount source, and a wrong one costs a failed mount, never
//! a wrong copy.

use super::queue::Queued;
use super::{Store, StoreError, decode, split_key};

/// What [`Store::let_go`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LetGo {
    /// Queued items, over every region.
    pub items: usize,
    /// Tag facts (the primary's and the regions').
    pub facts: usize,
}

impl Store {
    /// Removes the queued items and tag facts of every repository `keep`
    /// says no to. One scan of the trees: a member change is rare and a
    /// third of the repositories may move.
    pub fn let_go(&self, keep: impl Fn(&str) -> bool) -> Result<LetGo, StoreError> {
        let mut out = LetGo::default();
        let gone = |k: &[u8]| split_key(k).is_some_and(|(repo, _)| !keep(&repo));
        for r in 0..self.regions.len() {
            let queued: Vec<Queued> = self.regions[r]
                .queue
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| gone(k))
                .filter_map(|(k, v)| {
                    let (repository, reference) = split_key(&k)?;
                    Some(Queued {
                        repository,
                        reference,
                        item: decode(&v)?,
                        raw: v.to_vec(),
                    })
                })
                .collect();
            for q in &queued {
                if self.finish_item(r, q)? {
                    out.items += 1;
                }
            }
        }
        let trees = std::iter::once(&self.primary).chain(self.regions.iter().map(|t| &t.manifests));
        for tree in trees {
            let keys: Vec<sled::IVec> = tree
                .iter()
                .keys()
                .filter_map(Result::ok)
                .filter(|k| gone(k))
                .collect();
            for k in keys {
                tree.remove(k).map_err(|e| self.io(e))?;
                out.facts += 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::store::queue::{Action, Change, Origin, WorkItem};

    #[test]
    fn only_the_repositories_let_go_leave_the_queue_and_the_facts() {
        let names = [
            ("a".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("b".to_owned(), "http://127.0.0.1:2".to_owned()),
        ];
        let store = Store::open_temporary(&names).unwrap();
        let d = Digest::sha256_of(b"x");
        let change = |repo: &str| Change {
            repository: repo.to_owned(),
            reference: "v1".to_owned(),
            item: WorkItem::new(Action::Copy, d.clone(), Origin::Event, 1, 1),
            regions: None,
        };
        store
            .accept(Some("e1"), &[change("mine"), change("theirs")])
            .unwrap();
        for repo in ["mine", "theirs"] {
            store.record_primary_tag(repo, "v0", &d, None).unwrap();
            store.record_manifest(1, repo, "v0", &d).unwrap();
        }
        let out = store.let_go(|repo| repo == "mine").unwrap();
        assert_eq!(out, LetGo { items: 2, facts: 2 });
        for r in 0..2 {
            assert!(store.has_item(r, "mine", "v1"));
            assert!(!store.has_item(r, "theirs", "v1"));
            assert_eq!(store.queue_figures(r).len, 1, "the figures follow");
        }
        assert!(store.primary_tag("theirs", "v0").is_none());
        assert!(store.manifest(1, "theirs", "v0").is_none());
        assert!(store.manifest(1, "mine", "v0").is_some());
    }
}
