//! Reading answer bodies: whole ones capped (a manifest, a listing page, a
//! token answer: over the cap is an error, never a truncation) and error
//! bodies limited (the rest is dropped), and how a request with a body to
//! read failed ([`BodyError`], which decides whether it is asked again).

use bytes::Bytes;
use futures::StreamExt;
use reqwest::Method;

use super::error::{RegistryError, display_url};

/// Why a body that must be whole was not read.
pub(crate) enum ReadError {
    Transport(reqwest::Error),
    /// More than the reader takes: refused, not truncated.
    TooLarge {
        max: usize,
    },
}

/// Reads a whole body that must be complete (a manifest, a listing page, a
/// token answer): more than `max` bytes is an error, never a truncation.
pub(crate) async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|len| len > max as u64) {
        // Read nothing: dropping the answer closes it.
        return Err(ReadError::TooLarge { max });
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Transport)?;
        if out.len() + chunk.len() > max {
            return Err(ReadError::TooLarge { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

impl ReadError {
    /// As a registry error for `method url`: a transport failure (worth
    /// retrying), or a protocol error naming the limit.
    pub(crate) fn into_registry(self, method: Method, url: &url::Url, what: &str) -> RegistryError {
        match self {
            ReadError::Transport(e) => RegistryError::transport(method, url, e),
            ReadError::TooLarge { max } => RegistryError::Protocol {
                method,
                url: display_url(url),
                reason: format!("{what} is larger than {max} bytes; refused"),
            },
        }
    }
}

/// Reads at most `max` bytes of a body whose end does not matter (an
/// error message): the rest is dropped.
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    max: usize,
) -> Result<Bytes, reqwest::Error> {
    if let Some(len) = resp.content_length()
        && len as usize > max
    {
        // Read nothing: the body is not wanted. Dropping closes it.
        return Ok(Bytes::new());
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > max {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// How a request with a body to read failed.
pub(crate) enum BodyError {
    /// Before or with the answer's head (`send` retried what it could).
    Answer(RegistryError),
    /// Reading or checking the body (retried when transient).
    Body(RegistryError),
    /// A body that arrived whole but makes no sense, as bytes damaged in
    /// transit would (retried; the last one's error is reported).
    Garbled(RegistryError),
}

impl From<RegistryError> for BodyError {
    fn from(e: RegistryError) -> Self {
        BodyError::Answer(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn whole_bodies_over_their_limit_are_refused_not_cut() {
        let answer = |body: &'static str, declared: bool| {
            let mut r = axum::http::Response::new(body);
            if declared {
                r.headers_mut()
                    .insert(reqwest::header::CONTENT_LENGTH, body.len().into());
            }
            reqwest::Response::from(r)
        };
        for declared in [true, false] {
            assert!(matches!(
                read_capped(answer("0123456789", declared), 5).await,
                Err(ReadError::TooLarge { max: 5 })
            ));
            assert_eq!(
                read_capped(answer("01234", declared), 5)
                    .await
                    .ok()
                    .unwrap(),
                "01234"
            );
        }
        assert_eq!(
            read_limited(answer("0123456789", false), 5).await.unwrap(),
            ""
        );
        let e = ReadError::TooLarge { max: 5 }.into_registry(
            Method::GET,
            &url::Url::parse("http://h/v2/a/manifests/b").unwrap(),
            "the manifest",
        );
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "GET http://h/v2/a/manifests/b: the manifest is larger than 5 bytes; refused"
        );
    }
}
