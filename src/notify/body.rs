//! What a notification says, and the bodies posted in each format.
//!
//! Every digest in a notification was read from a registry: the push
//! event's, or the region's answer when georep wrote it. A delete by tag
//! whose digest georep never saw carries no digest at all.

use serde_json::{Value, json};

use crate::config::{NotifyEvent, NotifyFormat};
use crate::digest::Digest;
use crate::store::format_unix_ms;

/// One event, before it is rendered for a target.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Unique; the same for every retry of a delivery, so a receiver can
    /// drop repeats.
    pub id: String,
    pub event: NotifyEvent,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// The region, for `replicated` and `failed`.
    pub region: Option<String>,
    /// Every region, for `complete` and `deleted`.
    pub regions: Vec<String>,
    /// Why an item was parked, for `failed`.
    pub reason: Option<String>,
    /// From the primary's event time to now, for `replicated` and
    /// `complete`.
    pub latency_secs: Option<f64>,
    /// When it happened (unix ms).
    pub at_ms: u64,
    /// The manifest's media type and size, when the push event said.
    pub media_type: Option<String>,
    pub size: Option<u64>,
    /// The registry it happened at (`host[:port]`): the region's, or the
    /// primary's for `complete` and `deleted`.
    pub host: String,
}

impl Notification {
    /// A new event about `repository` (at `tag`, or by digest alone).
    pub fn new(
        event: NotifyEvent,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&Digest>,
        host: String,
    ) -> Notification {
        Notification {
            id: new_id(),
            event,
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.cloned(),
            region: None,
            regions: Vec::new(),
            reason: None,
            latency_secs: None,
            at_ms: crate::store::now_unix_ms(),
            media_type: None,
            size: None,
            host,
        }
    }

    /// What `georep notify test` sends.
    pub fn sample(event: NotifyEvent) -> Notification {
        Notification {
            region: Some("sample-region".to_owned()),
            regions: vec!["sample-region".to_owned()],
            latency_secs: Some(1.5),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".to_owned()),
            size: Some(1234),
            ..Notification::new(
                event,
                "georep/notify-test",
                Some("test"),
                Some(&Digest::sha256_of(b"georep notify test")),
                "georep.invalid".to_owned(),
            )
        }
    }
}

/// 128 random bits in hex.
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The body posted to a target of `format`.
pub fn render(n: &Notification, format: NotifyFormat) -> Value {
    match format {
        NotifyFormat::Georep => georep(n),
        NotifyFormat::Registry => json!({ "events": [registry_event(n)] }),
        NotifyFormat::Acr => registry_event(n),
    }
}

/// georep's own shape (README, "Outgoing notifications").
fn georep(n: &Notification) -> Value {
    let mut v = json!({
        "id": n.id,
        "event": n.event.as_str(),
        "repository": n.repository,
        "timestamp": format_unix_ms(n.at_ms),
    });
    let o = v.as_object_mut().expect("an object");
    if let Some(t) = &n.tag {
        o.insert("tag".into(), json!(t));
    }
    if let Some(d) = &n.digest {
        o.insert("digest".into(), json!(d.as_str()));
    }
    regions_and_reason(o, n);
    if let Some(l) = n.latency_secs {
        o.insert("latency_secs".into(), json!(l));
    }
    v
}

/// One event as the distribution registry (and ACR) post them, with the
/// region added: `action` is `push` for `replicated` and `complete`,
/// `delete` for `deleted`, `failed` for `failed` and `conflict` for
/// `conflict`.
fn registry_event(n: &Notification) -> Value {
    let (action, method) = match n.event {
        NotifyEvent::Replicated | NotifyEvent::Complete => ("push", "PUT"),
        NotifyEvent::Deleted => ("delete", "DELETE"),
        NotifyEvent::Failed => ("failed", "PUT"),
        NotifyEvent::Conflict => ("conflict", "PUT"),
    };
    let mut target = json!({ "repository": n.repository });
    let t = target.as_object_mut().expect("an object");
    if let Some(m) = &n.media_type {
        t.insert("mediaType".into(), json!(m));
    }
    if let Some(s) = n.size {
        t.insert("size".into(), json!(s));
        t.insert("length".into(), json!(s));
    }
    if let Some(d) = &n.digest {
        t.insert("digest".into(), json!(d.as_str()));
    }
    if let Some(tag) = &n.tag {
        t.insert("tag".into(), json!(tag));
    }
    let mut v = json!({
        "id": n.id,
        "timestamp": format_unix_ms(n.at_ms),
        "action": action,
        "target": target,
        "request": {
            "id": n.id,
            "host": n.host,
            "method": method,
            "useragent": concat!("georep/", env!("CARGO_PKG_VERSION")),
        },
        "source": { "addr": n.host },
        "georep": { "event": n.event.as_str() },
    });
    regions_and_reason(v.as_object_mut().expect("an object"), n);
    v
}

/// `region` or `regions`, and `reason`, where the event has them.
fn regions_and_reason(o: &mut serde_json::Map<String, Value>, n: &Notification) {
    if let Some(r) = &n.region {
        o.insert("region".into(), json!(r));
    }
    if !n.regions.is_empty() {
        o.insert("regions".into(), json!(n.regions));
    }
    if let Some(r) = &n.reason {
        o.insert("reason".into(), json!(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_has_its_shape() {
        let mut n = Notification::sample(NotifyEvent::Deleted);
        n.tag = None;
        let g = render(&n, NotifyFormat::Georep);
        assert_eq!(g["event"], "deleted");
        assert!(g.get("tag").is_none(), "no tag, no key: {g}");
        assert_eq!(g["digest"], n.digest.as_ref().unwrap().as_str());
        assert!(g["timestamp"].as_str().unwrap().ends_with('Z'));

        let r = render(&n, NotifyFormat::Registry);
        let e = &r["events"][0];
        assert_eq!(e["action"], "delete");
        assert_eq!(e["request"]["method"], "DELETE");
        assert_eq!(e["target"]["repository"], "georep/notify-test");
        assert_eq!(e["target"]["length"], 1234);
        assert_eq!(e["regions"][0], "sample-region");

        let a = render(&n, NotifyFormat::Acr);
        assert_eq!(&a, e, "ACR posts the event itself, not the envelope");
    }

    #[test]
    fn a_digest_never_seen_is_left_out() {
        let n = Notification::new(
            NotifyEvent::Deleted,
            "app",
            Some("v1"),
            None,
            "h:5000".into(),
        );
        for f in [NotifyFormat::Georep, NotifyFormat::Acr] {
            let v = render(&n, f);
            assert!(!v.to_string().contains("sha256"), "{v}");
        }
    }
}
