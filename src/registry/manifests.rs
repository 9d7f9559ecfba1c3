//! Manifests: `HEAD`, verified `GET` (by digest the bytes must hash to
//! it; by tag to the `Docker-Content-Digest`), `PUT` of the exact bytes,
//! and `DELETE` (of manifests and blobs).

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use super::body::{BodyError, read_capped};
use super::error::{RegistryError, display_url};
use super::{Manifest, ManifestHead, Op, Registry, Scope, manifest};
use crate::digest::Digest;

impl Registry {
    fn manifest_url(&self, repository: &str, reference: &str) -> url::Url {
        self.endpoint(&format!("v2/{repository}/manifests/{reference}"))
    }

    fn accept_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        h
    }

    /// `HEAD` a manifest by tag or digest; `None` if absent.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
        scope: &Scope,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.manifest_url(repository, reference);
        let a = self
            .send(
                Op::ManifestHead,
                Method::HEAD,
                url.clone(),
                scope,
                Self::accept_headers(),
                None,
            )
            .await?;
        match a.resp.status() {
            StatusCode::OK => {
                let h = a.resp.headers();
                let digest = h
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                let digest = match digest {
                    Some(d) => d,
                    // Registries that omit the header: the reference is
                    // the digest, or a GET must tell.
                    None => match reference.parse::<Digest>() {
                        Ok(d) => d,
                        Err(_) => {
                            drop(a);
                            let m = self.get_manifest(repository, reference, scope).await?;
                            return Ok(m.map(|m| ManifestHead {
                                size: Some(m.bytes.len() as u64),
                                media_type: Some(m.media_type),
                                digest: m.digest,
                            }));
                        }
                    },
                };
                Ok(Some(ManifestHead {
                    digest,
                    media_type: h
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    size: h
                        .get(CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(a.into_error(Method::HEAD).await),
        }
    }

    /// `GET` a manifest by tag or digest, verified: by digest, the bytes must
    /// hash to it; by tag, they must hash to the `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        scope: &Scope,
    ) -> Result<Option<Manifest>, RegistryError> {
        let url = self.manifest_url(repository, reference);
        self.with_body_retries(&url, || self.get_manifest_once(&url, reference, scope))
            .await
    }

    /// One `GET` of a manifest; errors after the answer's head (reading
    /// or verifying the body) are [`BodyError::Body`].
    async fn get_manifest_once(
        &self,
        url: &url::Url,
        reference: &str,
        scope: &Scope,
    ) -> Result<Option<Manifest>, BodyError> {
        let a = self
            .send(
                Op::ManifestGet,
                Method::GET,
                url.clone(),
                scope,
                Self::accept_headers(),
                None,
            )
            .await?;
        match a.resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(BodyError::Answer(a.into_error(Method::GET).await)),
        }
        let headers = a.resp.headers().clone();
        let bytes = read_capped(a.resp, manifest::MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| BodyError::Body(e.into_registry(Method::GET, url, "the manifest")))?;
        self.stats.read(bytes.len() as u64);
        let claimed = reference.parse::<Digest>().ok().or_else(|| {
            headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        let digest = match claimed {
            Some(expected) => {
                let mut v = crate::digest::Verifier::new(&expected, None);
                let verified = v.update(&bytes).and_then(|()| v.finish());
                if let Err(mismatch) = verified {
                    return Err(BodyError::Body(RegistryError::Corrupt {
                        url: display_url(url),
                        digest: expected,
                        mismatch,
                    }));
                }
                expected
            }
            None => Digest::sha256_of(&bytes),
        };
        let media_type = Manifest::resolve_media_type(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            &bytes,
        );
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// `PUT` a manifest's exact bytes under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), RegistryError> {
        let url = self.manifest_url(repository, reference);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&manifest.media_type).map_err(|_| RegistryError::Protocol {
                method: Method::PUT,
                url: display_url(&url),
                reason: format!("media type {:?} is not a valid header", manifest.media_type),
            })?,
        );
        let a = self
            .send(
                Op::ManifestPut,
                Method::PUT,
                url.clone(),
                &Scope::push(repository),
                h,
                Some(manifest.bytes.clone()),
            )
            .await?;
        if !a.resp.status().is_success() {
            return Err(a.into_error(Method::PUT).await);
        }
        self.stats.written(manifest.bytes.len() as u64);
        let echoed = a
            .resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(d) = echoed
            && d != manifest.digest
        {
            return Err(RegistryError::Protocol {
                method: Method::PUT,
                url: display_url(&url),
                reason: format!(
                    "registry stored the manifest as {d}, not {}: it altered the bytes",
                    manifest.digest
                ),
            });
        }
        Ok(())
    }

    /// `DELETE` a manifest by digest (and with it every tag pointing at
    /// it) or a tag alone (where the registry supports it). `false` if the
    /// registry did not have it.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<bool, RegistryError> {
        let url = self.manifest_url(repository, reference);
        self.delete(Op::ManifestDelete, url, repository).await
    }

    /// `DELETE` a blob from a repository (the registry unlinks it; its
    /// garbage collection frees the space). `false` if it was not there.
    /// Registries with deletes disabled answer 405, an error here.
    pub async fn delete_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let url = self.blob_url(repository, digest);
        self.delete(Op::BlobDelete, url, repository).await
    }

    async fn delete(&self, op: Op, url: url::Url, repository: &str) -> Result<bool, RegistryError> {
        let a = self
            .send(
                op,
                Method::DELETE,
                url,
                &Scope::delete(repository),
                HeaderMap::new(),
                None,
            )
            .await?;
        match a.resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(a.into_error(Method::DELETE).await),
        }
    }
}
