//! `cluster:` as the loader validates it: etcd's endpoints and how to sign
//! in, this instance's id and the URL the others reach it at, the lease.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::Validator;
use crate::config::file::FileCluster;
use crate::config::{ClusterConfig, DEFAULT_CLUSTER_PREFIX, DEFAULT_LEASE_TTL_SECS, Mode, Tls};

/// The shortest and longest lease a member may hold: below 2 s a renewal
/// every third of it is a busy loop; above 5 min a dead member's share
/// waits too long.
const LEASE_TTL_SECS: std::ops::RangeInclusive<u64> = 2..=300;

/// This machine's host name (a StatefulSet pod's is its stable name).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// An instance id: what a DNS label and an etcd key both take.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Validator<'_> {
    pub(super) fn cluster(
        &mut self,
        c: &Spanned<FileCluster>,
        mode: Mode,
        listen: &str,
    ) -> Option<ClusterConfig> {
        let at = c.referenced;
        let c = &c.value;
        let mut ok = true;
        if mode == Mode::AnyRegion {
            self.issue(
                at,
                "cluster: several instances work in one-way mode only for now (any-region mode keeps each tag's merge base in one instance's store)",
            );
            ok = false;
        }
        let etcd = &c.etcd.value;
        let mut endpoints = Vec::new();
        if etcd.endpoints.value.is_empty() {
            self.issue(
                etcd.endpoints.referenced,
                "cluster.etcd.endpoints: name at least one etcd client URL, e.g. http://etcd-0:2379",
            );
            ok = false;
        }
        for e in &etcd.endpoints.value {
            let text = e.value.trim();
            let full = if text.contains("://") {
                text.to_owned()
            } else {
                format!("http://{text}")
            };
            match url::Url::parse(&full) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && u.username().is_empty() =>
                {
                    endpoints.push(full.trim_end_matches('/').to_owned());
                }
                _ => {
                    self.issue(
                        e.referenced,
                        format!("etcd endpoint {text:?} is not an etcd client URL (http://host:port or https://host:port, no path, no user)"),
                    );
                    ok = false;
                }
            }
        }
        let password = etcd.password_env.is_some() || etcd.password_file.is_some();
        let (username, password) = match (&etcd.username, password) {
            (None, false) => (None, None),
            (Some(u), true) if !u.value.is_empty() => {
                let what = format!("cluster.etcd for user {:?}", u.value);
                let p = self.secret(
                    &etcd.password_env,
                    &etcd.password_file,
                    u.referenced,
                    &what,
                    "password",
                );
                (Some(u.value.clone()), p)
            }
            (Some(u), _) => {
                self.issue(
                    u.referenced,
                    "cluster.etcd.username needs a non-empty name and password_env or password_file",
                );
                ok = false;
                (None, None)
            }
            (None, true) => {
                self.issue(
                    c.etcd.referenced,
                    "cluster.etcd: a password needs a username",
                );
                ok = false;
                (None, None)
            }
        };
        let tls = match &etcd.tls {
            Some(t) => self.tls(t).unwrap_or_else(|| {
                ok = false;
                Tls::default()
            }),
            None => Tls::default(),
        };
        let prefix = match &c.prefix {
            None => DEFAULT_CLUSTER_PREFIX.to_owned(),
            Some(p) if p.value.starts_with('/') && p.value.len() > 1 => {
                p.value.trim_end_matches('/').to_owned()
            }
            Some(p) => {
                self.issue(
                    p.referenced,
                    format!(
                        "cluster.prefix {:?} must start with / and name something, e.g. /georep",
                        p.value
                    ),
                );
                ok = false;
                String::new()
            }
        };
        let instance_id = match &c.instance_id {
            Some(i) if valid_id(i.value.trim()) => i.value.trim().to_owned(),
            Some(i) => {
                self.issue(
                    i.referenced,
                    format!(
                        "cluster.instance_id {:?} must be 1 to 63 letters, digits, '-', '_' or '.'",
                        i.value
                    ),
                );
                ok = false;
                String::new()
            }
            None => match host_name().filter(|h| valid_id(h)) {
                Some(h) => h,
                None => {
                    self.issue(
                        at,
                        "cluster.instance_id is not set and this machine's host name cannot be one: set it",
                    );
                    ok = false;
                    String::new()
                }
            },
        };
        let port = listen
            .parse::<std::net::SocketAddr>()
            .map(|a| a.port())
            .unwrap_or(9090);
        let (advertise_url, where_) = match &c.advertise_url {
            Some(a) => (
                a.value.trim().replace("{instance_id}", &instance_id),
                Some(a.referenced),
            ),
            None => (format!("http://{instance_id}:{port}"), None),
        };
        match url::Url::parse(&advertise_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                self.issue(
                    where_.unwrap_or(at),
                    format!("cluster.advertise_url {advertise_url:?} must be an http(s) URL the other instances reach this one's API at, e.g. http://{{instance_id}}.georep:9090"),
                );
                ok = false;
            }
        }
        let lease_ttl = match &c.lease_ttl_secs {
            None => DEFAULT_LEASE_TTL_SECS,
            Some(t) if LEASE_TTL_SECS.contains(&t.value) => t.value,
            Some(t) => {
                self.issue(
                    t.referenced,
                    format!(
                        "cluster.lease_ttl_secs {} must be from {} to {}",
                        t.value,
                        LEASE_TTL_SECS.start(),
                        LEASE_TTL_SECS.end()
                    ),
                );
                ok = false;
                DEFAULT_LEASE_TTL_SECS
            }
        };
        ok.then(|| ClusterConfig {
            endpoints,
            username,
            password,
            tls,
            prefix,
            instance_id,
            advertise_url: advertise_url.trim_end_matches('/').to_owned(),
            lease_ttl: Duration::from_secs(lease_ttl),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::load_str;
    use super::super::tests::{load_err, no_env};
    use crate::config::load::tests::{ANY_REGION, MINIMAL};

    #[test]
    fn a_cluster_section_loads_with_its_defaults() {
        let text = format!(
            "{MINIMAL}listen: 0.0.0.0:9191\ncluster:\n  etcd:\n    endpoints: [etcd-0:2379, \"https://etcd-1:2379/\"]\n  instance_id: georep-1\n"
        );
        let c = load_str(Path::new("/etc/georep.yaml"), &text, &no_env)
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.endpoints, ["http://etcd-0:2379", "https://etcd-1:2379"]);
        assert_eq!(c.prefix, "/georep");
        assert_eq!(c.advertise_url, "http://georep-1:9191");
        assert_eq!(c.lease_ttl.as_secs(), 10);
        let templated = text.replace(
            "  instance_id: georep-1\n",
            "  instance_id: georep-1\n  advertise_url: http://{instance_id}.georep.ns:9191/\n  prefix: /prod/georep/\n  lease_ttl_secs: 5\n",
        );
        let c = load_str(Path::new("/etc/georep.yaml"), &templated, &no_env)
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.advertise_url, "http://georep-1.georep.ns:9191");
        assert_eq!(c.prefix, "/prod/georep");
        assert_eq!(c.lease_ttl.as_secs(), 5);
    }

    #[test]
    fn every_cluster_mistake_is_named_with_its_line() {
        let text = format!(
            "{MINIMAL}cluster:\n  etcd:\n    endpoints: [\"ftp://etcd:2379\"]\n    password_env: ETCD_PW\n  instance_id: \"no spaces\"\n  advertise_url: \"not a url\"\n  lease_ttl_secs: 1\n  prefix: georep\n"
        );
        let err = load_err(&text);
        let base = MINIMAL.lines().count();
        for (line, what) in [
            (
                base + 3,
                "etcd endpoint \"ftp://etcd:2379\" is not an etcd client URL",
            ),
            (base + 2, "cluster.etcd: a password needs a username"),
            (base + 5, "cluster.instance_id \"no spaces\" must be"),
            (base + 6, "cluster.advertise_url \"not a url\""),
            (base + 7, "cluster.lease_ttl_secs 1 must be from 2 to 300"),
            (base + 8, "cluster.prefix \"georep\" must start with /"),
        ] {
            assert!(
                err.contains(&format!(":{line}:")) && err.contains(what),
                "{what} at line {line}:\n{err}"
            );
        }
        let empty = format!("{MINIMAL}cluster:\n  etcd:\n    endpoints: []\n");
        assert!(load_err(&empty).contains("name at least one etcd client URL"));
        let any_region = format!(
            "{ANY_REGION}cluster:\n  etcd:\n    endpoints: [etcd:2379]\n  instance_id: a\n"
        );
        assert!(load_err(&any_region).contains("one-way mode only for now"));
    }
}
