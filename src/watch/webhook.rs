//! Registry notifications: parsing the envelope the CNCF distribution
//! registry posts, and deciding what each event means for the regions.
//!
//! Facts measured on registry 2.8: one event per POST, delivered at least
//! once and in order; blob pushes arrive as `push` with media type
//! `application/octet-stream` and no tag; a manifest pushed by tag has both
//! `digest` and `tag`; deleting a manifest gives a `delete` with the digest
//! and then one `delete` per tag that pointed at it, with the tag only;
//! pulls and mounts are reported too. Everything here is pure: no I/O, so
//! the decisions are tested without a registry, and hostile input can at
//! worst produce a rejected event.

use serde::Deserialize;

use crate::config::RepositoryFilter;
use crate::digest::Digest;
use crate::registry::names;
use crate::store::queue::{Action, Change, Origin, WorkItem};

/// The envelope's media type, as the registry sends it.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// Content types accepted on the webhook: the registry's own, and plain
/// JSON for hand-written tests and other senders.
pub fn accepts_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(EVENTS_MEDIA_TYPE)
        || essence.eq_ignore_ascii_case("application/json")
}

#[derive(Debug, Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

/// One event as sent; every field optional so that a strange event is
/// rejected on its own, not with the whole envelope.
#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub target: Option<Target>,
    /// Who made the change (`actor.name`: the account).
    #[serde(default)]
    pub actor: Option<Actor>,
    /// The request that made it (`request.useragent`).
    #[serde(default)]
    pub request: Option<Request>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Actor {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub useragent: Option<String>,
}

impl Event {
    /// Whether georep itself made this change: its user agent, or the
    /// account it writes to that registry with (`account`).
    pub fn by_georep(&self, account: Option<&str>) -> bool {
        let agent = self
            .request
            .as_ref()
            .and_then(|r| r.useragent.as_deref())
            .unwrap_or("");
        let actor = self.actor.as_ref().and_then(|a| a.name.as_deref());
        agent.starts_with("georep/") || (account.is_some() && actor == account)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// Parses an envelope; the error says what is wrong, for the 400.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, String> {
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.events)
        .map_err(|e| format!("not a notification envelope ({{\"events\":[...]}}): {e}"))
}

/// What one event means.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Queue this change for every region (a copy, or a delete).
    Queue { id: String, change: Box<Change> },
    /// Nothing to do (a pull, a blob, a mount, a filtered repository...).
    Ignore(&'static str),
    /// Malformed: logged and counted, never retried by the registry (a
    /// 4xx for one bad event would block every later one forever).
    Reject(String),
}

/// Media types of manifests (anything else pushed is a blob).
fn is_manifest_type(media_type: &str) -> bool {
    use crate::registry::manifest::*;
    matches!(
        media_type,
        DOCKER_MANIFEST
            | DOCKER_MANIFEST_LIST
            | OCI_MANIFEST
            | OCI_INDEX
            | OCI_ARTIFACT_MANIFEST
            | DOCKER_SCHEMA1
            | DOCKER_SCHEMA1_SIGNED
    )
}

/// Decides what `event` asks for. `now_ms` stands in for a missing or
/// unreadable timestamp.
pub fn decide(event: &Event, filter: &RepositoryFilter, now_ms: u64) -> Decision {
    let Some(id) = event
        .id
        .as_deref()
        .filter(|i| !i.is_empty() && i.len() <= 256)
    else {
        return Decision::Reject("event without a usable id".to_owned());
    };
    let action = event.action.as_deref().unwrap_or("");
    let default_target = Target::default();
    let target = event.target.as_ref().unwrap_or(&default_target);
    let action = match action {
        "push" => Action::Copy,
        "delete" => Action::Delete,
        "pull" => return Decision::Ignore("a pull"),
        "mount" => return Decision::Ignore("a mount"),
        _ => return Decision::Reject(format!("event {id}: unknown action {action:?}")),
    };
    let Some(repository) = target.repository.as_deref() else {
        return Decision::Reject(format!("event {id}: no target.repository"));
    };
    if let Err(why) = names::check_repository(repository) {
        return Decision::Reject(format!("event {id}: {why}"));
    }
    if !filter.allows(repository) {
        return Decision::Ignore("a repository the config excludes");
    }
    let tag = match target.tag.as_deref() {
        Some(t) => match names::check_tag(t) {
            Ok(()) => Some(t),
            Err(why) => return Decision::Reject(format!("event {id}: {why}")),
        },
        None => None,
    };
    let digest = match target.digest.as_deref() {
        Some(d) => match d.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(e) => return Decision::Reject(format!("event {id}: {e}")),
        },
        None => None,
    };
    let media_type = target.media_type.clone().filter(|m| !m.is_empty());
    if action == Action::Copy && !media_type.as_deref().is_some_and(is_manifest_type) {
        return Decision::Ignore("a blob or a non-manifest push");
    }
    let event_ns = event
        .timestamp
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| u64::try_from(t.as_nanosecond()).ok())
        .unwrap_or(now_ms.saturating_mul(1_000_000));
    let (reference, digest) = match (action, tag, digest) {
        (Action::Copy, Some(t), Some(d)) => (t.to_owned(), d),
        (Action::Copy, None, Some(d)) => (d.as_str().to_owned(), d),
        (Action::Copy, _, None) => {
            return Decision::Reject(format!("event {id}: a manifest push without a digest"));
        }
        (Action::Delete, None, Some(d)) => (d.as_str().to_owned(), d),
        // A tag removed (with its manifest, on registry 2.8): the event
        // names no digest; the delete goes by tag, and the intake fills in
        // the digest the primary last listed under it, when known.
        (Action::Delete, Some(t), _) => (t.to_owned(), WorkItem::no_digest()),
        (Action::Delete, None, None) => {
            return Decision::Reject(format!("event {id}: a delete without digest or tag"));
        }
    };
    Decision::Queue {
        id: id.to_owned(),
        change: Box::new(Change {
            repository: repository.to_owned(),
            reference,
            item: WorkItem {
                media_type,
                size: target.size,
                ..WorkItem::new(action, digest, Origin::Event, event_ns, now_ms)
            },
            regions: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2d75b5961afe7b0614dc77fe77b59aef06d983feafbc7a705e64e539beb20d9f";

    fn one(json: &str) -> Decision {
        let events = parse(json.as_bytes()).unwrap();
        decide(&events[0], &RepositoryFilter::default(), 1_000)
    }

    #[test]
    fn manifest_push_by_tag_is_queued_with_the_primary_time() {
        let d = one(&format!(
            r#"{{"events":[{{"id":"e1","timestamp":"2026-11-26T18:54:58.940280238Z","action":"push",
            "target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":417,"digest":"{D}","repository":"team/app","tag":"v1"}}}}]}}"#
        ));
        let Decision::Queue { id, change } = d else {
            panic!("{d:?}")
        };
        assert_eq!(id, "e1");
        assert_eq!(
            (change.repository.as_str(), change.reference.as_str()),
            ("team/app", "v1")
        );
        assert_eq!(change.item.digest.as_str(), D);
        assert_eq!(change.item.event_ns, 1_795_719_298_940_280_238);
        assert_eq!(change.item.size, Some(417));
    }

    #[test]
    fn blobs_pulls_and_mounts_are_ignored() {
        let blob = format!(
            r#"{{"events":[{{"id":"e","action":"push","target":{{"mediaType":"application/octet-stream","digest":"{D}","repository":"app"}}}}]}}"#
        );
        assert!(matches!(one(&blob), Decision::Ignore(_)));
        let pull = format!(
            r#"{{"events":[{{"id":"e","action":"pull","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","repository":"app","tag":"v1"}}}}]}}"#
        );
        assert!(matches!(one(&pull), Decision::Ignore(_)));
    }

    #[test]
    fn deletes_by_digest_and_by_tag() {
        let by_digest = format!(
            r#"{{"events":[{{"id":"e","action":"delete","target":{{"digest":"{D}","repository":"app"}}}}]}}"#
        );
        let Decision::Queue { change, .. } = one(&by_digest) else {
            panic!()
        };
        assert_eq!(change.item.action, Action::Delete);
        assert_eq!(change.reference, D);
        let by_tag =
            r#"{"events":[{"id":"e","action":"delete","target":{"repository":"app","tag":"v1"}}]}"#;
        let Decision::Queue { change, .. } = one(by_tag) else {
            panic!()
        };
        assert_eq!(change.reference, "v1");
    }

    #[test]
    fn hostile_names_are_rejected_before_use() {
        for (repo, tag) in [
            ("../etc", "v1"),
            ("app", "../../x"),
            ("App", "v1"),
            ("a//b", "v1"),
        ] {
            let j = format!(
                r#"{{"events":[{{"id":"e","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","repository":"{repo}","tag":"{tag}"}}}}]}}"#
            );
            assert!(matches!(one(&j), Decision::Reject(_)), "{repo}:{tag}");
        }
        let bad_digest = r#"{"events":[{"id":"e","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../x","repository":"app","tag":"v1"}}]}"#;
        assert!(matches!(one(bad_digest), Decision::Reject(_)));
        assert!(parse(b"{").is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"events":{}}"#).is_err());
        let no_id = r#"{"events":[{"action":"push"}]}"#;
        assert!(matches!(one(no_id), Decision::Reject(_)));
    }

    #[test]
    fn content_types() {
        assert!(accepts_content_type(EVENTS_MEDIA_TYPE));
        assert!(accepts_content_type("application/json; charset=utf-8"));
        assert!(!accepts_content_type("text/plain"));
    }
}

/// Property tests (fuzzing) of the webhook: no body makes the parser or
/// the decision panic, and nothing reaches the queue with a name or digest
/// that breaks the distribution grammar (no `..`, no `/` tricks).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::registry::names;

    /// Names built to be hostile: dots, slashes, escapes, long runs.
    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,12}(/[a-z0-9]{1,12}){0,3}",
            "[a-z0-9./_%-]{0,40}",
            Just("../../etc/passwd".to_owned()),
            Just("team/../../x".to_owned()),
            Just("/abs/path".to_owned()),
            Just("a//b".to_owned()),
            Just("a/b/".to_owned()),
            Just("ns%2F..%2Fx".to_owned()),
            Just("a\u{0}b".to_owned()),
            ".{0,40}",
            "[a-z]{200,300}",
        ]
    }

    fn digest() -> impl Strategy<Value = String> {
        prop_oneof![
            "sha256:[0-9a-f]{64}",
            "sha256:[0-9a-f]{0,70}",
            "sha512:[0-9a-f]{128}",
            "[a-z0-9]{0,8}:[0-9a-zA-Z./]{0,70}",
            ".{0,80}",
        ]
    }

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn any_body_parses_or_is_refused_without_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(events) = parse(&body) {
                for e in &events {
                    let _ = decide(e, &RepositoryFilter::default(), 1);
                }
            }
        }

        #[test]
        fn only_valid_names_and_digests_are_queued(
            id in ".{0,20}",
            action in prop_oneof![Just("push"), Just("delete"), Just("pull"), Just("mount"), Just("x")],
            repository in hostile(),
            tag in proptest::option::of(hostile()),
            digest in proptest::option::of(digest()),
            media_type in prop_oneof![
                Just("application/vnd.oci.image.manifest.v1+json".to_owned()),
                Just("application/vnd.oci.image.index.v1+json".to_owned()),
                ".{0,30}",
            ],
            timestamp in prop_oneof![Just("2026-11-26T18:54:58.940280238Z".to_owned()), ".{0,30}"],
        ) {
            let event = serde_json::json!({"events": [{
                "id": id, "timestamp": timestamp, "action": action,
                "target": {"mediaType": media_type, "repository": repository, "tag": tag, "digest": digest},
            }]});
            let events = parse(event.to_string().as_bytes()).unwrap();
            if let Decision::Queue { change, .. } = decide(&events[0], &RepositoryFilter::default(), 1) {
                prop_assert!(names::check_repository(&change.repository).is_ok());
                prop_assert!(!change.repository.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
                let reference = &change.reference;
                prop_assert!(
                    names::check_tag(reference).is_ok() || reference.parse::<Digest>().is_ok(),
                    "{reference:?}"
                );
                prop_assert!(!reference.contains('/'));
            }
        }
    }
}
