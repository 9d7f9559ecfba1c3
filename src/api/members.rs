//! Talking to the other cluster members: handing them their events, and
//! asking them for their status.
//!
//! The webhook in a cluster: the primary's notifications may reach any
//! instance (a load balancer, or several endpoints). Each event goes to the
//! instance that owns its repository: this one records its own share; the
//! rest is posted to each owner's `/v1/notifications`, marked as forwarded
//! so it is never passed on again. The registry gets a 2xx only once every
//! owner answered that it recorded its events durably; otherwise a 503, and
//! the registry delivers the envelope again (events already recorded are
//! then duplicates, recognised by their ids).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::status::{MemberView, StatusView};
use crate::watch::intake::Counts;
use crate::watch::webhook::{EVENTS_MEDIA_TYPE, Event};

/// The header a forwarded notification carries: the instance it came from.
pub const FORWARDED_BY: &str = "georep-forwarded-by";
/// Time allowed for an owner to record forwarded events.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Events split by the member that owns their repository.
pub struct Split {
    /// Indexes of the events this instance records.
    pub local: Vec<usize>,
    /// Owner id → (its URL, indexes of its events).
    pub remote: BTreeMap<String, (String, Vec<usize>)>,
}

/// Which member owns each event's repository. Events without a repository
/// stay here (they are ignored or refused like any other).
pub fn split(cluster: &Cluster, events: &[Event]) -> Result<Split, String> {
    let members = cluster.members();
    let ids = Cluster::ids(&members);
    if !ids.iter().any(|i| i == cluster.id()) {
        return Err(format!(
            "instance {} is not a cluster member right now ({}); deliver again",
            cluster.id(),
            cluster.trouble().unwrap_or_else(|| "joining".to_owned())
        ));
    }
    let mut out = Split {
        local: Vec::new(),
        remote: BTreeMap::new(),
    };
    for (i, e) in events.iter().enumerate() {
        let repo = e.target.as_ref().and_then(|t| t.repository.as_deref());
        let owner = repo.and_then(|r| crate::cluster::ring::owner(r, &ids));
        match owner {
            Some(o) if o != cluster.id() => {
                let url = members
                    .iter()
                    .find(|m| m.id == o)
                    .map(|m| m.advertise_url.clone())
                    .unwrap_or_default();
                out.remote
                    .entry(o.to_owned())
                    .or_insert((url, Vec::new()))
                    .1
                    .push(i);
            }
            _ => out.local.push(i),
        }
    }
    Ok(out)
}

/// Posts `events` (as sent, JSON) to the owner at `url`, with the
/// registry's own `Authorization`; what it recorded, or why not.
pub async fn post(
    http: &reqwest::Client,
    me: &str,
    owner: &str,
    url: &str,
    events: Vec<Value>,
    incoming: &HeaderMap,
) -> Result<Counts, String> {
    let mut req = http
        .post(format!("{url}/v1/notifications"))
        .timeout(FORWARD_TIMEOUT)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static(EVENTS_MEDIA_TYPE),
        )
        .header(FORWARDED_BY, me)
        .json(&serde_json::json!({ "events": events }));
    if let Some(auth) = incoming.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth.clone());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("instance {owner} at {url} did not take its events: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "instance {owner} at {url} answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    resp.json::<Counts>()
        .await
        .map_err(|e| format!("instance {owner} at {url} answered something unexpected: {e}"))
}

/// Whether a request was forwarded by another instance.
pub fn forwarded_by(headers: &HeaderMap) -> Option<String> {
    headers
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(64).collect())
}

/// Time allowed for a member's own status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Fills `view`'s cluster part: each other member's own status (asked
/// with the caller's `Authorization`), its share and work, and every
/// region's work summed over the members that answered.
pub async fn gather(http: &reqwest::Client, view: &mut StatusView, incoming: &HeaderMap) {
    let Some(cluster) = view.cluster.take() else {
        return;
    };
    let mut cluster = cluster;
    let asks = cluster.members.iter().map(|m| {
        let mine = m.id == cluster.instance;
        let url = m.url.clone();
        async move {
            if mine {
                return None;
            }
            let mut req = http
                .get(format!("{url}/v1/status?scope=instance"))
                .timeout(STATUS_TIMEOUT);
            if let Some(auth) = incoming.get(header::AUTHORIZATION) {
                req = req.header(header::AUTHORIZATION, auth.clone());
            }
            let answer = match req.send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<StatusView>()
                    .await
                    .map_err(|e| format!("its status did not read: {e}")),
                Ok(r) => Err(format!("its status answered {}", r.status())),
                Err(e) => Err(format!("unreachable at {url}: {e}")),
            };
            Some(answer)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let own = view.clone();
    let mut members = std::mem::take(&mut cluster.members);
    for (m, answer) in members.iter_mut().zip(answers) {
        let answer = answer.unwrap_or_else(|| Ok(own.clone()));
        let (id, url) = (m.id.clone(), m.url.clone());
        *m = MemberView::from_view(&id, &url, answer.as_ref().map_err(Clone::clone));
        if let Ok(v) = &answer {
            cluster.add_regions(v);
        }
    }
    cluster.members = members;
    view.cluster = Some(cluster);
}
