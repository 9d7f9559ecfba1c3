//! Which instance owns a repository: rendezvous (highest-random-weight)
//! hashing over the live members. Every instance computes the same owner
//! from the same member set, with no coordination; a member joining takes
//! only the keys it now wins, and one leaving gives away only its own.

use sha2::{Digest as _, Sha256};

/// The weight of `member` for `key`: the first 8 bytes of
/// SHA-256(member ‖ 0 ‖ key). A fixed hash, the same in every build and on
/// every machine (a `std` hasher is neither).
fn weight(member: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

/// The member of `members` that owns `key` (`None` without members). Ties
/// (never seen in practice) go to the smaller member id, so the answer
/// does not depend on the order of `members`.
pub fn owner<'a>(key: &str, members: &'a [String]) -> Option<&'a str> {
    members
        .iter()
        .max_by(|a, b| weight(a, key).cmp(&weight(b, key)).then_with(|| b.cmp(a)))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("georep-{i}")).collect()
    }

    #[test]
    fn shares_are_even_and_the_order_of_members_does_not_matter() {
        let members = ids(3);
        let mut counts = [0usize; 3];
        for k in 0..3000 {
            let o = owner(&format!("team/app-{k}"), &members).unwrap();
            counts[members.iter().position(|m| m == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        let mut reversed = members.clone();
        reversed.reverse();
        for k in 0..100 {
            let key = format!("r{k}");
            assert_eq!(owner(&key, &members), owner(&key, &reversed));
        }
        assert_eq!(owner("x", &[]), None);
    }

    proptest! {
        /// A member leaving moves only the keys it owned; one joining takes
        /// only keys, never moves them between the others.
        #[test]
        fn only_the_leaving_member_s_share_moves(
            n in 2usize..7,
            gone in 0usize..7,
            keys in proptest::collection::vec("[a-z0-9/]{1,20}", 1..50),
        ) {
            let members = ids(n);
            let gone = gone % n;
            let rest: Vec<String> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, m)| m.clone())
                .collect();
            for k in &keys {
                let before = owner(k, &members).unwrap();
                let after = owner(k, &rest).unwrap();
                if before != members[gone] {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
