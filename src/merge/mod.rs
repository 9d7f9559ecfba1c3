//! Any-region mode's one decision: given what each region holds under one
//! tag, what changed there since the regions last agreed (the merge base),
//! and when, which digest every region must hold, and where it is read
//! from.
//!
//! Pure: no I/O, no clock. The webhook path, the reconcile and `georep sync`
//! all ask it, with what they know, so they reach the same answer; a
//! property test (below) holds it to its promises.
//!
//! The rules:
//! 1. Every region holds the same thing (a digest, or no tag), and no push
//!    says otherwise: they agree, and that is the new base. Several regions
//!    that changed to the same digest agree too.
//! 2. Some regions pushed (changed the tag to a digest): one digest among
//!    those pushed wins — a push stands until the regions agree on the
//!    winner, even where a copy of an older decision covered it since. Pushes of the same digest are one push. Two or more
//!    different digests are a conflict: the latest push wins when every
//!    push has a known time (the registries' event timestamps) and no other
//!    push is within `skew` of it; otherwise `order` decides among the
//!    pushes within `skew` of the latest (all pushes, when a time is
//!    unknown). A push beats a delete: nothing is lost by a race.
//! 3. Only deletes: with deletes propagated, the tag is deleted where it is
//!    still held; else the base is copied back where it is missing.
//! 4. Nothing changed, but the regions differ (a region that accepts no
//!    pushes is behind, or one was added): the base, or failing that the
//!    best-ordered region's digest, is copied to the rest.
//!
//! The winner is always a digest some region holds: a pusher holds what it
//! pushed (by digest, even after its tag moved), and rules 3 and 4 read
//! from a region that holds it now.

use crate::digest::Digest;

/// A region, by its index in the config.
pub type RegionId = usize;

/// How conflicts are decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Regions, the one that wins a tie first. Regions not listed (those
    /// that accept no pushes) come after, by index.
    pub order: Vec<RegionId>,
    /// Pushes closer than this (ns) are decided by `order`.
    pub skew_ns: u64,
    /// A delete in one region deletes the tag in the others.
    pub propagate_deletes: bool,
}

impl Rules {
    /// Lower is preferred.
    fn rank(&self, r: RegionId) -> (usize, RegionId) {
        (
            self.order
                .iter()
                .position(|&x| x == r)
                .unwrap_or(self.order.len()),
            r,
        )
    }
}

/// What one region changed since the base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The digest pushed, or `None`: the tag was deleted there.
    pub digest: Option<Digest>,
    /// The registry's time of the change (unix ns), when known (an event
    /// says; a listing does not).
    pub at_ns: Option<u64>,
}

/// One region's side of a tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Site {
    /// What it holds now under the tag, as best known.
    pub current: Option<Digest>,
    /// What people changed there since the base, if anything.
    pub change: Option<Change>,
}

/// Why a conflict went the way it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The latest push, by more than the skew window.
    Time,
    /// The configured region order (pushes within the window, or a time
    /// unknown).
    Order,
}

/// One push in a conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub region: RegionId,
    pub digest: Digest,
    pub at_ns: Option<u64>,
}

/// Two or more regions pushed different digests under one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub winner: Push,
    /// The other pushes, best-ordered first. Their manifests are not
    /// deleted: they stay reachable by digest where they were pushed.
    pub losers: Vec<Push>,
    pub decided_by: DecidedBy,
}

/// What every region must do about one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every region holds this (or no region holds the tag): the new base.
    Agreed(Option<Digest>),
    /// Copy `digest` from `source` to `to` (every region that holds
    /// something else or nothing).
    Copy {
        digest: Digest,
        source: RegionId,
        to: Vec<RegionId>,
        conflict: Option<Conflict>,
    },
    /// Delete the tag in `from` (every region still holding it).
    Delete { from: Vec<RegionId> },
}

/// The decision for one tag: `sites[r]` is region `r`'s side.
pub fn decide(base: Option<&Digest>, sites: &[Site], rules: &Rules) -> Verdict {
    let first = sites.first().and_then(|s| s.current.as_ref());
    let all_hold = |d: Option<&Digest>| sites.iter().all(|s| s.current.as_ref() == d);
    // Rule 2: pushes. A push stands until the regions agree, even where
    // georep's copy of an older decision has since covered it.
    let pushes: Vec<Push> = sites
        .iter()
        .enumerate()
        .filter_map(|(r, s)| {
            let c = s.change.as_ref()?;
            Some(Push {
                region: r,
                digest: c.digest.clone()?,
                at_ns: c.at_ns,
            })
        })
        .collect();
    if !pushes.is_empty() {
        let (winner, conflict) = winner(pushes, rules);
        if all_hold(Some(&winner.digest)) {
            return Verdict::Agreed(Some(winner.digest));
        }
        return copy(sites, winner.digest.clone(), winner.region, conflict);
    }
    // Rule 1: no push, and every region holds the same.
    if all_hold(first) {
        return Verdict::Agreed(first.cloned());
    }
    // Rule 3: only deletes.
    let deleted = sites
        .iter()
        .any(|s| s.change.as_ref().is_some_and(|c| c.digest.is_none()));
    if deleted && rules.propagate_deletes {
        let from: Vec<RegionId> = (0..sites.len())
            .filter(|&r| sites[r].current.is_some())
            .collect();
        return Verdict::Delete { from };
    }
    // Rules 3 (deletes ignored) and 4: the base where a region holds it,
    // else the best-ordered region's digest.
    let holder = |d: &Digest| {
        (0..sites.len())
            .filter(|&r| sites[r].current.as_ref() == Some(d))
            .min_by_key(|&r| rules.rank(r))
    };
    if let Some(b) = base
        && let Some(source) = holder(b)
    {
        return copy(sites, b.clone(), source, None);
    }
    let source = (0..sites.len())
        .filter(|&r| sites[r].current.is_some())
        .min_by_key(|&r| rules.rank(r));
    match source.and_then(|r| sites[r].current.clone().map(|d| (r, d))) {
        Some((source, digest)) => copy(sites, digest, source, None),
        // Unreachable: not all equal means some region holds a digest.
        None => Verdict::Agreed(None),
    }
}

/// `digest`, read from `source`, to every region that holds anything else
/// under the tag — the source too, when its tag moved since it pushed
/// (georep's copy of an earlier decision can land after a newer push
/// there): it holds the manifest by digest, and only the tag is written.
fn copy(sites: &[Site], digest: Digest, source: RegionId, conflict: Option<Conflict>) -> Verdict {
    let to = (0..sites.len())
        .filter(|&r| sites[r].current.as_ref() != Some(&digest))
        .collect();
    Verdict::Copy {
        digest,
        source,
        to,
        conflict,
    }
}

/// The winning push, and the conflict when there were different digests.
fn winner(mut pushes: Vec<Push>, rules: &Rules) -> (Push, Option<Conflict>) {
    // Best-ordered first: among pushes of one digest, the best-ordered
    // pusher is its source, and ties go to the order.
    pushes.sort_by_key(|p| rules.rank(p.region));
    let distinct = {
        let mut d: Vec<&Digest> = pushes.iter().map(|p| &p.digest).collect();
        d.sort();
        d.dedup();
        d.len()
    };
    if distinct == 1 {
        return (pushes[0].clone(), None);
    }
    let all_timed = pushes.iter().all(|p| p.at_ns.is_some());
    let latest = pushes.iter().filter_map(|p| p.at_ns).max().unwrap_or(0);
    let contenders: Vec<&Push> = if all_timed {
        pushes
            .iter()
            .filter(|p| p.at_ns.unwrap_or(0).saturating_add(rules.skew_ns) >= latest)
            .collect()
    } else {
        pushes.iter().collect()
    };
    let win = contenders[0].clone();
    // By time when the window held one digest alone.
    let decided_by = if all_timed && contenders.iter().all(|p| p.digest == win.digest) {
        DecidedBy::Time
    } else {
        DecidedBy::Order
    };
    let losers: Vec<Push> = pushes
        .iter()
        .filter(|p| p.digest != win.digest)
        .cloned()
        .collect();
    let conflict = Conflict {
        winner: win.clone(),
        losers,
        decided_by,
    };
    (win, Some(conflict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn rules(order: &[RegionId]) -> Rules {
        Rules {
            order: order.to_vec(),
            skew_ns: 10,
            propagate_deletes: false,
        }
    }

    fn pushed(digest: u8, at: Option<u64>) -> Site {
        Site {
            current: Some(d(digest)),
            change: Some(Change {
                digest: Some(d(digest)),
                at_ns: at,
            }),
        }
    }

    fn held(digest: Option<u8>) -> Site {
        Site {
            current: digest.map(d),
            change: None,
        }
    }

    #[test]
    fn a_push_in_one_region_goes_to_the_others() {
        let v = decide(
            Some(&d(0)),
            &[held(Some(0)), pushed(1, Some(5)), held(None)],
            &rules(&[0, 1, 2]),
        );
        assert_eq!(
            v,
            Verdict::Copy {
                digest: d(1),
                source: 1,
                to: vec![0, 2],
                conflict: None
            }
        );
    }

    #[test]
    fn the_later_push_wins_unless_within_the_window() {
        let sites = [pushed(1, Some(100)), pushed(2, Some(200)), held(Some(0))];
        let Verdict::Copy {
            digest, conflict, ..
        } = decide(Some(&d(0)), &sites, &rules(&[0, 1, 2]))
        else {
            panic!()
        };
        assert_eq!(digest, d(2));
        let c = conflict.expect("a conflict");
        assert_eq!(c.decided_by, DecidedBy::Time);
        assert_eq!((c.winner.region, c.losers[0].region), (1, 0));
        // 5 ns apart, window 10: the order decides, region 0 first.
        let close = [pushed(1, Some(195)), pushed(2, Some(200)), held(Some(0))];
        let Verdict::Copy {
            digest, conflict, ..
        } = decide(Some(&d(0)), &close, &rules(&[0, 1, 2]))
        else {
            panic!()
        };
        assert_eq!(digest, d(1));
        assert_eq!(conflict.expect("conflict").decided_by, DecidedBy::Order);
        // An unknown time: the order decides.
        let polled = [pushed(1, None), pushed(2, Some(200)), held(Some(0))];
        let Verdict::Copy { digest, .. } = decide(Some(&d(0)), &polled, &rules(&[2, 1, 0])) else {
            panic!()
        };
        assert_eq!(digest, d(2));
    }

    #[test]
    fn deletes_follow_the_policy_and_a_push_beats_a_delete() {
        let deleted = Site {
            current: None,
            change: Some(Change {
                digest: None,
                at_ns: Some(9),
            }),
        };
        let sites = [deleted.clone(), held(Some(0)), held(Some(0))];
        let ignore = decide(Some(&d(0)), &sites, &rules(&[0, 1, 2]));
        assert_eq!(
            ignore,
            Verdict::Copy {
                digest: d(0),
                source: 1,
                to: vec![0],
                conflict: None
            }
        );
        let propagate = Rules {
            propagate_deletes: true,
            ..rules(&[0, 1, 2])
        };
        assert_eq!(
            decide(Some(&d(0)), &sites, &propagate),
            Verdict::Delete { from: vec![1, 2] }
        );
        let raced = [deleted, pushed(3, Some(1)), held(Some(0))];
        let Verdict::Copy { digest, to, .. } = decide(Some(&d(0)), &raced, &propagate) else {
            panic!()
        };
        assert_eq!((digest, to), (d(3), vec![0, 2]));
    }

    #[test]
    fn a_covered_winning_push_is_not_agreed_away() {
        // eu pushed 2 after us pushed 1; georep's copy of 1 covered eu's 2
        // before the decision turned: every region holds 1, but 2 wins.
        let covered = Site {
            current: Some(d(1)),
            change: Some(Change {
                digest: Some(d(2)),
                at_ns: Some(200),
            }),
        };
        let sites = [pushed(1, Some(100)), covered, held(Some(1))];
        let Verdict::Copy {
            digest, source, to, ..
        } = decide(Some(&d(0)), &sites, &rules(&[0, 1, 2]))
        else {
            panic!()
        };
        assert_eq!((digest, source, to), (d(2), 1, vec![0, 1, 2]));
    }

    #[test]
    fn regions_that_changed_to_the_same_digest_agree() {
        let sites = [pushed(4, None), pushed(4, Some(3)), held(Some(4))];
        assert_eq!(
            decide(Some(&d(0)), &sites, &rules(&[0, 1, 2])),
            Verdict::Agreed(Some(d(4)))
        );
        assert_eq!(
            decide(None, &[held(None), held(None)], &rules(&[0, 1])),
            Verdict::Agreed(None)
        );
    }

    fn site() -> impl Strategy<Value = Site> {
        let digest = proptest::option::of(0u8..4);
        let change = proptest::option::of((
            proptest::option::of(0u8..4),
            proptest::option::of(0u64..100),
        ));
        (digest, change).prop_map(|(current, change)| {
            let change = change.map(|(digest, at)| Change {
                digest: digest.map(d),
                at_ns: at,
            });
            // A region holds what it pushed, by digest at least; as its
            // current digest, unless georep overwrote it since.
            Site {
                current: current.map(d),
                change,
            }
        })
    }

    proptest! {
        /// The winner is a digest some region holds (its source holds it,
        /// now or as its push); the verdict does not depend on how the
        /// regions are numbered, only on the order given; every region
        /// ends up holding the winner.
        #[test]
        fn the_decision_is_sound_and_the_same_everywhere(
            sites in proptest::collection::vec(site(), 1..6),
            base in proptest::option::of(0u8..4),
            skew in 0u64..30,
            propagate in any::<bool>(),
            rotate in 0usize..6,
        ) {
            let n = sites.len();
            let order: Vec<RegionId> = (0..n).rev().collect();
            let rules = Rules { order: order.clone(), skew_ns: skew, propagate_deletes: propagate };
            let base = base.map(d);
            let verdict = decide(base.as_ref(), &sites, &rules);
            match &verdict {
                Verdict::Copy { digest, source, to, .. } => {
                    let s = &sites[*source];
                    let holds = s.current.as_ref() == Some(digest)
                        || s.change.as_ref().and_then(|c| c.digest.as_ref()) == Some(digest);
                    prop_assert!(holds, "source {} does not hold {}", source, digest);
                    for (r, s) in sites.iter().enumerate() {
                        prop_assert_eq!(to.contains(&r), s.current.as_ref() != Some(digest));
                    }
                }
                Verdict::Agreed(x) => {
                    for s in &sites {
                        prop_assert_eq!(s.current.as_ref(), x.as_ref());
                    }
                    // A push is never agreed away: the agreed digest is one
                    // that was pushed, when any was.
                    let pushed: Vec<&Digest> = sites
                        .iter()
                        .filter_map(|s| s.change.as_ref().and_then(|c| c.digest.as_ref()))
                        .collect();
                    if !pushed.is_empty() {
                        prop_assert!(x.as_ref().is_some_and(|d| pushed.contains(&d)));
                    }
                }
                Verdict::Delete { from } => {
                    prop_assert!(propagate);
                    for (r, s) in sites.iter().enumerate() {
                        prop_assert_eq!(from.contains(&r), s.current.is_some());
                    }
                }
            }
            // Renumber the regions (a rotation), keeping each one's place
            // in the order: the same digest wins, from the same region.
            let k = rotate % n;
            let renamed = |r: RegionId| (r + k) % n;
            let mut moved = vec![Site::default(); n];
            for (r, s) in sites.iter().enumerate() {
                moved[renamed(r)] = s.clone();
            }
            let moved_rules = Rules {
                order: order.iter().map(|&r| renamed(r)).collect(),
                ..rules.clone()
            };
            let again = decide(base.as_ref(), &moved, &moved_rules);
            match (&verdict, &again) {
                (Verdict::Copy { digest: a, source: sa, .. }, Verdict::Copy { digest: b, source: sb, .. }) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(renamed(*sa), *sb);
                }
                (Verdict::Agreed(a), Verdict::Agreed(b)) => prop_assert_eq!(a, b),
                (Verdict::Delete { from: a }, Verdict::Delete { from: b }) => {
                    let mut a: Vec<RegionId> = a.iter().map(|&r| renamed(r)).collect();
                    a.sort();
                    prop_assert_eq!(&a, b);
                }
                (a, b) => prop_assert!(false, "{:?} became {:?}", a, b),
            }
        }
    }
}
