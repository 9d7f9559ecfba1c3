//! Repository and tag names, checked against the distribution reference
//! grammar (oci-client's `Reference` parser) before they go into a URL path.
//!
//! Names come from the primary's catalog and tag listings, which georep does
//! not control: a name that is not valid is skipped with a clear error
//! rather than turned into a request to some other path.

use oci_client::Reference;

/// A placeholder host that makes the parser treat the whole name as a path.
const HOST: &str = "georep.invalid";

/// Whether `repository` is a valid repository name (`team/app/api`).
pub fn check_repository(repository: &str) -> Result<(), String> {
    match format!("{HOST}/{repository}").parse::<Reference>() {
        Ok(r) if r.repository() == repository && r.tag() == Some("latest") => Ok(()),
        Ok(_) => Err(format!("repository name {repository:?} is not valid")),
        Err(e) => Err(format!("repository name {repository:?} is not valid: {e}")),
    }
}

/// Whether `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn check_tag(tag: &str) -> Result<(), String> {
    // The reference parser's `\w` would take any Unicode letter.
    if !tag.is_ascii() {
        return Err(format!("tag {tag:?} is not valid: not ASCII"));
    }
    match format!("{HOST}/x:{tag}").parse::<Reference>() {
        Ok(r) if r.tag() == Some(tag) && r.digest().is_none() => Ok(()),
        Ok(_) => Err(format!("tag {tag:?} is not valid")),
        Err(e) => Err(format!("tag {tag:?} is not valid: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        for ok in ["a", "library/hello", "team/app/api", "a-b_c.d/e__f"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/../b", "a//b", "/a", "a/", "a:b", "a@b", "a b", "a?b", "-a",
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "sha256-abc", "A_b-c.d"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in ["", ".a", "-a", "a/b", "a:b", "a@b", &long] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}

/// Property tests (fuzzing): what passes the checks follows the
/// distribution spec's grammar, checked here by a separate reading of it.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
    fn grammar_repository(s: &str) -> bool {
        s.split('/').all(|c| {
            let b = c.as_bytes();
            let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
            if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if alnum(&b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(&b[i]) {
                    i += 1;
                }
                let sep = &c[start..i];
                if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                    return false;
                }
            }
            true
        })
    }

    fn grammar_tag(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
    }

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn accepted_repositories_follow_the_grammar(s in "[a-zA-Z0-9._/%:@-]{0,60}|.{0,60}") {
            if check_repository(&s).is_ok() {
                prop_assert!(grammar_repository(&s), "{s:?}");
            }
        }

        #[test]
        fn grammatical_repositories_are_accepted(
            s in "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}((\\.|_|-)[a-z0-9]{1,8}){0,2}){0,3}"
        ) {
            prop_assert!(check_repository(&s).is_ok(), "{s:?}");
        }

        #[test]
        fn accepted_tags_follow_the_grammar(s in "[a-zA-Z0-9._/:@-]{0,130}|.{0,40}") {
            prop_assert_eq!(check_tag(&s).is_ok(), grammar_tag(&s), "{:?}", s);
        }
    }
}
