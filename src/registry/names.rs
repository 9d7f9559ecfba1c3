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
