//! Listings: `GET /v2/` (is this a registry), the catalog and a
//! repository's tags, following `Link` pagination with bounded pages.

use reqwest::header::{HeaderMap, LINK};
use reqwest::{Method, StatusCode};

use super::body::{BodyError, read_capped};
use super::error::{RegistryError, display_url};
use super::{Op, Registry, Scope};

/// Page size for `_catalog` and `tags/list`; the distribution registry
/// rejects `n` above 1000.
pub const LIST_PAGE_SIZE: usize = 1000;
/// A listing longer than this many pages is assumed to loop.
const MAX_LIST_PAGES: usize = 100_000;
/// Listing pages larger than this are refused.
const MAX_LIST_BODY_BYTES: usize = 16 << 20;

impl Registry {
    /// `GET /v2/`: is this a registry, and can we authenticate?
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.endpoint("v2/");
        let a = self
            .send(
                Op::Ping,
                Method::GET,
                url,
                &Scope::none(),
                HeaderMap::new(),
                None,
            )
            .await?;
        // With bearer auth `/v2/` answers 401 even with a valid scope-less
        // token on some registries; reaching it at all is what counts.
        if a.resp.status().is_success() || a.resp.status() == StatusCode::UNAUTHORIZED {
            Ok(())
        } else {
            Err(a.into_error(Method::GET).await)
        }
    }

    /// Every repository in the catalog, following `Link` pagination.
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let first = self.endpoint(&format!("v2/_catalog?n={LIST_PAGE_SIZE}"));
        self.paginate(Op::Catalog, first, &Scope::catalog(), |b| {
            serde_json::from_slice::<Page>(b).map(|p| p.repositories.unwrap_or_default())
        })
        .await
    }

    /// Every tag of `repository`, or `None` if the registry does not know
    /// the repository (`404`).
    pub async fn tags(
        &self,
        repository: &str,
        scope: &Scope,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let first = self.endpoint(&format!("v2/{repository}/tags/list?n={LIST_PAGE_SIZE}"));
        match self
            .paginate(Op::TagsList, first, scope, |b| {
                serde_json::from_slice::<Page>(b).map(|p| p.tags.unwrap_or_default())
            })
            .await
        {
            Ok(tags) => Ok(Some(tags)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn paginate(
        &self,
        op: Op,
        first: url::Url,
        scope: &Scope,
        parse: impl Fn(&[u8]) -> Result<Vec<String>, serde_json::Error>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_LIST_PAGES {
                return Err(RegistryError::Protocol {
                    method: Method::GET,
                    url: display_url(&url),
                    reason: format!("listing did not end after {MAX_LIST_PAGES} pages"),
                });
            }
            let (link, items) = self
                .with_body_retries(&url, || async {
                    let a = self
                        .send(op, Method::GET, url.clone(), scope, HeaderMap::new(), None)
                        .await?;
                    if a.resp.status() != StatusCode::OK {
                        return Err(BodyError::Answer(a.into_error(Method::GET).await));
                    }
                    let link = a
                        .resp
                        .headers()
                        .get(LINK)
                        .and_then(|v| v.to_str().ok())
                        .and_then(next_link)
                        .and_then(|l| url.join(&l).ok());
                    let body = read_capped(a.resp, MAX_LIST_BODY_BYTES)
                        .await
                        .map_err(|e| {
                            BodyError::Body(e.into_registry(Method::GET, &url, "the listing page"))
                        })?;
                    let items = parse(&body).map_err(|e| {
                        BodyError::Garbled(RegistryError::Protocol {
                            method: Method::GET,
                            url: display_url(&url),
                            reason: format!("listing is not valid JSON: {e}"),
                        })
                    })?;
                    Ok((link, items))
                })
                .await?;
            let empty = items.is_empty();
            out.extend(items);
            // A registry that sends a `next` link with an empty page would
            // loop forever; an empty page ends the listing.
            if !empty && link.as_ref() != Some(&url) {
                next = link;
            }
        }
        Ok(out)
    }
}

/// The target of a `Link: <...>; rel="next"` header.
fn next_link(header: &str) -> Option<String> {
    for part in header.split(',') {
        let part = part.trim();
        let Some(end) = part.find('>') else { continue };
        if !part.starts_with('<') {
            continue;
        }
        let target = &part[1..end];
        let params = &part[end + 1..];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            return Some(target.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2".into())
        );
        assert_eq!(
            next_link(r#"<http://h/x>; rel="prev", </v2/t?last=z>; rel=next"#),
            Some("/v2/t?last=z".into())
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}

/// Property tests (fuzzing) of the `Link` header parser.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::next_link;

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn any_link_header_without_panic(h in ".{0,300}") {
            let _ = next_link(&h);
        }

        #[test]
        fn the_next_target_is_found_among_others(
            target in "/v2/[a-z0-9/_.?=&-]{0,80}",
            other in "/[a-z0-9/_.?=&-]{0,40}",
            next_first in any::<bool>(),
            quoted in any::<bool>(),
        ) {
            let rel = if quoted { "rel=\"next\"" } else { "rel=next" };
            let next = format!("<{target}>; {rel}");
            let prev = format!("<{other}>; rel=\"prev\"");
            let h = if next_first { format!("{next}, {prev}") } else { format!("{prev}, {next}") };
            prop_assert_eq!(next_link(&h), Some(target));
        }
    }
}
