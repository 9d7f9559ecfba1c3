//! Manifests as georep sees them: opaque bytes with a media type and a
//! digest, plus the list of what they reference.
//!
//! A manifest is never re-serialized (DESIGN invariant 1): the bytes the
//! primary served are the bytes every region receives. Parsing here only
//! extracts descriptors, leniently, so unknown fields, artifact types and
//! annotations pass through untouched.

use bytes::Bytes;
use oci_client::manifest::{
    IMAGE_LAYER_NONDISTRIBUTABLE_GZIP_MEDIA_TYPE, IMAGE_LAYER_NONDISTRIBUTABLE_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use serde::Deserialize;

use crate::digest::Digest;

pub const DOCKER_MANIFEST: &str = IMAGE_MANIFEST_MEDIA_TYPE;
pub const DOCKER_MANIFEST_LIST: &str = IMAGE_MANIFEST_LIST_MEDIA_TYPE;
pub const OCI_MANIFEST: &str = OCI_IMAGE_MEDIA_TYPE;
pub const OCI_INDEX: &str = OCI_IMAGE_INDEX_MEDIA_TYPE;
/// The short-lived OCI 1.1 release-candidate artifact manifest.
pub const OCI_ARTIFACT_MANIFEST: &str = "application/vnd.oci.artifact.manifest.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Sent on every manifest GET and HEAD. Without the OCI types the
/// distribution registry answers 404 for OCI indexes, and without the Docker
/// v2 types it down-converts Docker manifests to schema1. Schema1 is listed
/// last so that a schema1-only manifest comes back as itself and can be
/// reported clearly.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.artifact.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5, \
application/vnd.docker.distribution.manifest.v1+json;q=0.5";

/// Manifests larger than this are refused (registries cap them at 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A manifest exactly as the registry served it.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// What a manifest is, for the copy order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// References blobs (and perhaps a subject).
    Image,
    /// References other manifests.
    Index,
    /// Docker schema1: georep does not copy these.
    Schema1,
}

/// A content descriptor, as much of it as the copy needs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A layer that clients download from its `urls`, which registries do
    /// not store and georep does not upload.
    pub fn is_foreign(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            DOCKER_FOREIGN_LAYER
                | IMAGE_LAYER_NONDISTRIBUTABLE_MEDIA_TYPE
                | IMAGE_LAYER_NONDISTRIBUTABLE_GZIP_MEDIA_TYPE
                | OCI_NONDISTRIBUTABLE_ZSTD
        )
    }
}

/// Everything a manifest points at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Child manifests (index entries).
    pub manifests: Vec<Descriptor>,
    /// Config, layers and artifact blobs, in manifest order.
    pub blobs: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parsed {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    blobs: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

/// Why a manifest's references could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(
        "schema1 manifest ({media_type}) is not supported: push it again as a schema2 or OCI manifest"
    )]
    Schema1 { media_type: String },
    #[error("manifest is not valid JSON for media type {media_type}: {error}")]
    Json {
        media_type: String,
        error: serde_json::Error,
    },
    #[error("unsupported manifest media type {media_type:?}")]
    Unsupported { media_type: String },
}

impl Manifest {
    /// The media type to trust: the registry's `Content-Type`, unless it is
    /// missing or generic, then the manifest's own `mediaType` field, then the
    /// shape of the document.
    pub fn resolve_media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
        let ct = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
        if let Some(ct) = ct {
            return ct;
        }
        if let Ok(p) = serde_json::from_slice::<Parsed>(bytes) {
            if let Some(mt) = p.media_type.filter(|m| !m.is_empty()) {
                return mt;
            }
            if p.schema_version == Some(1) {
                return DOCKER_SCHEMA1_SIGNED.to_owned();
            }
            if p.manifests.is_some() {
                return OCI_INDEX.to_owned();
            }
            if p.config.is_some() {
                return OCI_MANIFEST.to_owned();
            }
        }
        content_type
            .unwrap_or("application/octet-stream")
            .to_owned()
    }

    pub fn kind(&self) -> Result<Kind, ParseError> {
        kind_of(&self.media_type)
    }

    /// The descriptors this manifest references.
    pub fn references(&self) -> Result<References, ParseError> {
        let kind = self.kind()?;
        let p: Parsed = serde_json::from_slice(&self.bytes).map_err(|error| ParseError::Json {
            media_type: self.media_type.clone(),
            error,
        })?;
        let mut refs = References {
            subject: p.subject,
            ..References::default()
        };
        match kind {
            Kind::Schema1 => unreachable!("kind_of returns Err for schema1"),
            Kind::Index => refs.manifests = p.manifests.unwrap_or_default(),
            Kind::Image => {
                refs.blobs.extend(p.config);
                refs.blobs.extend(p.layers.unwrap_or_default());
                refs.blobs.extend(p.blobs.unwrap_or_default());
            }
        }
        Ok(refs)
    }
}

pub fn kind_of(media_type: &str) -> Result<Kind, ParseError> {
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST | OCI_ARTIFACT_MANIFEST => Ok(Kind::Image),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(ParseError::Schema1 {
            media_type: media_type.to_owned(),
        }),
        other => Err(ParseError::Unsupported {
            media_type: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(media_type: &str, json: &str) -> Manifest {
        Manifest {
            bytes: Bytes::copy_from_slice(json.as_bytes()),
            media_type: media_type.to_owned(),
            digest: Digest::sha256_of(json.as_bytes()),
        }
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn image_references_config_layers_and_subject() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig",
            "config":{{"mediaType":"application/x-custom","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"{DOCKER_FOREIGN_LAYER}","digest":"{D2}","size":10,"urls":["http://x/y"]}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D3}","size":5}},
            "annotations":{{"a":"b"}}}}"#
        );
        let r = m(OCI_MANIFEST, &json).references().unwrap();
        assert_eq!(r.blobs.len(), 2);
        assert_eq!(r.blobs[0].media_type, "application/x-custom");
        assert!(r.blobs[1].is_foreign());
        assert_eq!(r.subject.unwrap().digest.as_str(), D3);
        assert!(r.manifests.is_empty());
    }

    #[test]
    fn index_references_children() {
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_INDEX}","digest":"{D1}","size":3,"platform":{{"os":"linux"}}}}]}}"#
        );
        let r = m(OCI_INDEX, &json).references().unwrap();
        assert_eq!(r.manifests.len(), 1);
        assert_eq!(r.manifests[0].media_type, OCI_INDEX);
    }

    #[test]
    fn schema1_and_unknown_are_clear_errors() {
        let e = m(DOCKER_SCHEMA1_SIGNED, "{}").references().unwrap_err();
        assert!(e.to_string().contains("schema1"), "{e}");
        let e = m("text/html", "{}").references().unwrap_err();
        assert!(e.to_string().contains("text/html"), "{e}");
    }

    #[test]
    fn media_type_resolution() {
        assert_eq!(
            Manifest::resolve_media_type(
                Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
                b"{}"
            ),
            OCI_INDEX
        );
        assert_eq!(
            Manifest::resolve_media_type(Some("application/json"), br#"{"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(
            Manifest::resolve_media_type(None, br#"{"schemaVersion":1}"#),
            DOCKER_SCHEMA1_SIGNED
        );
    }
}

/// Property tests (fuzzing) of manifest and index parsing: any bytes under
/// any media type parse or fail cleanly, and every digest a parsed
/// manifest yields is well-formed (safe in a URL path).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn media_type() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(DOCKER_MANIFEST.to_owned()),
            Just(DOCKER_MANIFEST_LIST.to_owned()),
            Just(OCI_MANIFEST.to_owned()),
            Just(OCI_INDEX.to_owned()),
            Just(OCI_ARTIFACT_MANIFEST.to_owned()),
            Just(DOCKER_SCHEMA1_SIGNED.to_owned()),
            ".{0,40}",
        ]
    }

    fn descriptor() -> impl Strategy<Value = serde_json::Value> {
        (
            prop_oneof!["sha256:[0-9a-f]{64}", "sha256:[0-9a-f./]{0,66}", ".{0,70}"],
            any::<u64>(),
            ".{0,30}",
        )
            .prop_map(|(digest, size, mt)| serde_json::json!({"mediaType": mt, "digest": digest, "size": size}))
    }

    fn check(m: &Manifest) -> Result<(), TestCaseError> {
        if let Ok(refs) = m.references() {
            for d in refs.blobs.iter().chain(&refs.manifests).map(|d| &d.digest) {
                prop_assert!(d.as_str().parse::<Digest>().is_ok());
                prop_assert!(!d.as_str().contains('/'));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn any_bytes_under_any_media_type(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
            mt in media_type(),
            ct in proptest::option::of(".{0,40}"),
        ) {
            let _ = Manifest::resolve_media_type(ct.as_deref(), &bytes);
            let m = Manifest {
                digest: Digest::sha256_of(&bytes),
                bytes: Bytes::from(bytes),
                media_type: mt,
            };
            check(&m)?;
        }

        #[test]
        fn structured_manifests_and_indexes(
            mt in media_type(),
            config in proptest::option::of(descriptor()),
            layers in proptest::option::of(proptest::collection::vec(descriptor(), 0..5)),
            manifests in proptest::option::of(proptest::collection::vec(descriptor(), 0..5)),
            schema in prop_oneof![Just(serde_json::json!(2)), Just(serde_json::json!(1)), Just(serde_json::json!("x"))],
        ) {
            let doc = serde_json::json!({
                "schemaVersion": schema, "mediaType": mt,
                "config": config, "layers": layers, "manifests": manifests,
            });
            let bytes = doc.to_string().into_bytes();
            let m = Manifest {
                media_type: Manifest::resolve_media_type(None, &bytes),
                digest: Digest::sha256_of(&bytes),
                bytes: Bytes::from(bytes),
            };
            check(&m)?;
        }
    }
}
