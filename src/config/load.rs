//! Reading and validating a config file: every mistake is reported with the
//! file, line and column it came from, and all of them at once.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_saphyr::{Location, Spanned};

use super::file::{FileConfig, FileNotify, FileSize};
mod access;
mod cluster;
mod parse;

use access::url_identity;

use super::{
    Concurrency, Config, Conflicts, DEFAULT_MAX_ATTEMPTS, DEFAULT_NOTIFY_TIMEOUT_SECS,
    DaemonConfig, DeletePolicy, Mode, NotifyEvent, NotifyFormat, NotifyScope, NotifyTarget,
    RegistryConfig, RepositoryFilter, Timeouts,
};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The cause is in the message (and not a `source`, which `{:#}` would
    // print a second time).
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not YAML, an unknown key, a wrong type, values that cannot work:
    /// every problem with its place.
    #[error("{}", render_issues(path, issues))]
    Invalid { path: PathBuf, issues: Vec<Issue> },
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The offending line of the file, for display.
    pub source_line: String,
}

fn render_issues(path: &Path, issues: &[Issue]) -> String {
    let mut out = format!(
        "invalid config {}: {} problem{}",
        path.display(),
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for issue in issues {
        out.push_str(&format!(
            "\n{}:{}:{}: {}",
            path.display(),
            issue.line,
            issue.column,
            issue.message
        ));
        if !issue.source_line.is_empty() {
            let caret_pad = " ".repeat(issue.column.saturating_sub(1) as usize);
            out.push_str(&format!(
                "\n  {:>4} | {}\n       | {}^",
                issue.line, issue.source_line, caret_pad
            ));
        }
    }
    out
}

/// Loads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    load_str(path, &text, &|name| std::env::var(name).ok())
}

/// Loads a config for the commands that only ask a daemon or read the
/// store (`status`, `health`, `reconcile`, `audit`, `retry`): a secret that
/// is not available (an unset variable, an unreadable file) is left out
/// instead of refused, so these commands need no registry passwords.
/// Everything else is checked as [`load`] checks it.
pub fn load_without_secrets(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    load_with(path, &text, &|name| std::env::var(name).ok(), false)
}

/// Loads a config from `text`, as if read from `path`; environment variables
/// are looked up with `env` (so tests need not touch the process environment).
pub fn load_str(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, LoadError> {
    load_with(path, text, env, true)
}

/// [`load_str`], with missing secrets refused or left out.
fn load_with(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets_required: bool,
) -> Result<Config, LoadError> {
    let (file, parse_issues) = parse::parse(text);
    let Some(file) = file else {
        return Err(LoadError::Invalid {
            path: path.to_owned(),
            issues: parse_issues,
        });
    };
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let mut v = Validator {
        text,
        base_dir,
        env,
        secrets_required,
        issues: Vec::new(),
        default_requests_per_sec: None,
        default_bytes_per_sec: None,
        connect_timeout: Timeouts::default().connect,
        docker: None,
    };
    let config = v.config(path, file);
    // What the parser refused comes first, then what the checks found in
    // the rest; in the order of the file.
    let mut parse_issues = parse_issues;
    parse_issues.append(&mut v.issues);
    v.issues = parse_issues;
    v.issues.sort_by_key(|i| (i.line, i.column));
    if v.issues.is_empty() {
        // `config` is always Some when no issue was recorded.
        config.ok_or_else(|| LoadError::Invalid {
            path: path.to_owned(),
            issues: Vec::new(),
        })
    } else {
        Err(LoadError::Invalid {
            path: path.to_owned(),
            issues: v.issues,
        })
    }
}

struct Validator<'a> {
    text: &'a str,
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// A secret that cannot be read is an issue (else it is left out).
    secrets_required: bool,
    issues: Vec<Issue>,
    /// The Docker config, once looked up (`Some(None)`: there is none).
    docker: Option<Option<super::docker::DockerConfig>>,
    /// `limits:` defaults, applied to registries that set none.
    default_requests_per_sec: Option<u32>,
    default_bytes_per_sec: Option<u64>,
    /// `timeouts.connect_secs`, for the registries' own clients.
    connect_timeout: Duration,
}

impl Validator<'_> {
    fn issue(&mut self, at: Location, message: impl Into<String>) {
        let line = at.line();
        let source_line = self
            .text
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .unwrap_or("")
            .to_owned();
        self.issues.push(Issue {
            line,
            column: at.column(),
            message: message.into(),
            source_line,
        });
    }

    fn absolute(&self, p: &Path) -> PathBuf {
        let joined = if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        };
        std::path::absolute(&joined).unwrap_or(joined)
    }

    fn positive<T: Copy + PartialOrd + Default + fmt::Display>(
        &mut self,
        value: &Option<Spanned<T>>,
        key: &str,
        default: T,
    ) -> T {
        match value {
            None => default,
            Some(s) if s.value > T::default() => s.value,
            Some(s) => {
                self.issue(
                    s.referenced,
                    format!("{key} must be at least 1, not {}", s.value),
                );
                default
            }
        }
    }

    fn config(&mut self, path: &Path, file: FileConfig) -> Option<Config> {
        let state_dir = self.absolute(&file.state_dir.value);
        if file.state_dir.value.as_os_str().is_empty() {
            self.issue(file.state_dir.referenced, "state_dir must not be empty");
        }

        let l = &file.limits;
        self.default_requests_per_sec = l
            .max_requests_per_sec
            .is_some()
            .then(|| self.positive(&l.max_requests_per_sec, "max_requests_per_sec", 1));
        self.default_bytes_per_sec = l
            .max_bytes_per_sec
            .as_ref()
            .and_then(|v| self.size(v, "max_bytes_per_sec"));
        let total_max_bytes_per_sec = l
            .total_max_bytes_per_sec
            .as_ref()
            .and_then(|v| self.size(v, "total_max_bytes_per_sec"));
        let t = &file.timeouts;
        let dt = Timeouts::default();
        let timeouts = Timeouts {
            connect: Duration::from_secs(self.positive(
                &t.connect_secs,
                "connect_secs",
                dt.connect.as_secs(),
            )),
            request: Duration::from_secs(self.positive(
                &t.request_secs,
                "request_secs",
                dt.request.as_secs(),
            )),
            stall: Duration::from_secs(self.positive(
                &t.stall_secs,
                "stall_secs",
                dt.stall.as_secs(),
            )),
        };
        self.connect_timeout = timeouts.connect;
        let mode = self.mode(&file);
        // `Some(None)`: no primary, as any-region mode wants; `None`: the
        // primary was invalid (its issues are recorded).
        let primary: Option<Option<RegistryConfig>> = match (&file.primary, mode) {
            (Some(p), Mode::OneWay) => self.registry(p, "primary").map(|mut r| {
                r.accepts_pushes = true;
                Some(r)
            }),
            (Some(p), Mode::AnyRegion) => {
                self.issue(
                    p.name.referenced,
                    format!(
                        "any-region mode has no primary: move {:?} under `regions:` (every region accepts pushes there)",
                        p.name.value
                    ),
                );
                None
            }
            (None, Mode::OneWay) => {
                self.issue(
                    file.regions.referenced,
                    "no `primary:`: one-way mode (the default) replicates the primary to the regions; \
                     add `primary:`, or set `mode: any-region` to accept pushes in every region",
                );
                None
            }
            (None, Mode::AnyRegion) => Some(None),
        };
        let mut regions = Vec::new();
        if file.regions.value.is_empty() {
            self.issue(
                file.regions.referenced,
                "regions is empty: list at least one replica region",
            );
        } else if mode == Mode::AnyRegion && file.regions.value.len() < 2 {
            self.issue(
                file.regions.referenced,
                "any-region mode needs at least two regions to replicate between",
            );
        }
        let mut seen_names: HashMap<String, Location> = HashMap::new();
        let mut seen_urls: HashMap<String, (String, Location)> = HashMap::new();
        let primary_name = file.primary.as_ref().map(|p| p.name.value.clone());
        if let Some(fp) = &file.primary {
            seen_names.insert(fp.name.value.clone(), fp.name.referenced);
            if let Some(Some(p)) = &primary {
                seen_urls.insert(
                    url_identity(&p.url),
                    (format!("the primary {:?}", p.name), fp.url.referenced),
                );
            }
        }
        for r in &file.regions.value {
            let name = &r.name.value;
            if let Some(first) = seen_names.get(name) {
                let what = if Some(name) == primary_name.as_ref() {
                    "the primary's name".to_owned()
                } else {
                    format!("the name of another region (line {})", first.line())
                };
                self.issue(
                    r.name.referenced,
                    format!("duplicate region name {name:?}: it is already {what}"),
                );
            } else {
                seen_names.insert(name.clone(), r.name.referenced);
            }
            if mode == Mode::OneWay {
                if let Some(a) = &r.accepts_pushes {
                    self.issue(
                        a.referenced,
                        "accepts_pushes applies in any-region mode only: in one-way mode people push to the primary alone; \
                         set `mode: any-region` at the top level to accept pushes in every region",
                    );
                }
                if let Some(a) = &r.webhook_auth {
                    self.issue(
                        a.referenced,
                        "webhook_auth of a region applies in any-region mode only: in one-way mode only the primary notifies georep (see `webhook.auth`)",
                    );
                }
            }
            if let Some(mut reg) = self.registry(r, "region") {
                let id = url_identity(&reg.url);
                if let Some((owner, at)) = seen_urls.get(&id) {
                    let msg = format!(
                        "region {:?} has the same URL {} as {owner} (line {}): a region must be a different registry",
                        reg.name,
                        reg.display_url(),
                        at.line()
                    );
                    self.issue(r.url.referenced, msg);
                } else {
                    seen_urls.insert(id, (format!("region {:?}", reg.name), r.url.referenced));
                }
                reg.accepts_pushes =
                    mode == Mode::AnyRegion && r.accepts_pushes.as_ref().is_none_or(|a| a.value);
                regions.push(reg);
            }
        }
        let conflicts = self.conflicts(&file, mode, &regions);

        let include = self.globs(&file.repositories.include, "include");
        let exclude = self.globs(&file.repositories.exclude, "exclude");

        let c = &file.concurrency;
        let defaults = Concurrency::default();
        let blobs = self.positive(
            &c.max_concurrent_blobs,
            "max_concurrent_blobs",
            defaults.blobs,
        );
        let concurrency = Concurrency {
            images: self.positive(
                &c.max_concurrent_images,
                "max_concurrent_images",
                defaults.images,
            ),
            blobs,
            blobs_per_region: self.positive(
                &c.max_concurrent_blobs_per_region,
                "max_concurrent_blobs_per_region",
                blobs,
            ),
        };
        let max_attempts = self.positive(&file.max_attempts, "max_attempts", DEFAULT_MAX_ATTEMPTS);
        let daemon = self.daemon(&file);
        let cluster = match &file.cluster {
            Some(c) => Some(self.cluster(c, mode, &daemon.listen)?),
            None => None,
        };

        Some(Config {
            path: path.to_owned(),
            state_dir,
            mode,
            primary: primary?,
            regions,
            conflicts: conflicts?,
            repositories: RepositoryFilter::new(include, exclude),
            concurrency,
            timeouts,
            max_attempts,
            total_max_bytes_per_sec,
            daemon,
            cluster,
        })
    }

    /// `mode:`, one-way unless it says otherwise.
    fn mode(&mut self, file: &FileConfig) -> Mode {
        match &file.mode {
            None => Mode::OneWay,
            Some(m) => match m.value.trim() {
                "one-way" => Mode::OneWay,
                "any-region" => Mode::AnyRegion,
                other => {
                    self.issue(
                        m.referenced,
                        format!("mode {other:?} is not a mode: write `one-way` (pushes go to the primary) or `any-region` (every region accepts pushes)"),
                    );
                    Mode::OneWay
                }
            },
        }
    }

    /// `conflicts:` (any-region mode only): the tie-break order names every
    /// writable region once; by default, config order. `None`: an issue was
    /// recorded.
    fn conflicts(
        &mut self,
        file: &FileConfig,
        mode: Mode,
        regions: &[RegistryConfig],
    ) -> Option<Conflicts> {
        let writable: Vec<usize> = (0..regions.len())
            .filter(|&i| regions[i].accepts_pushes)
            .collect();
        let Some(c) = &file.conflicts else {
            if mode == Mode::AnyRegion && writable.is_empty() && !regions.is_empty() {
                self.issue(
                    file.regions.referenced,
                    "no region accepts pushes: in any-region mode at least one region must (`accepts_pushes: true` is the default)",
                );
                return None;
            }
            return Some(Conflicts {
                order: writable,
                ..Conflicts::default()
            });
        };
        if mode == Mode::OneWay {
            self.issue(
                c.referenced,
                "conflicts applies in any-region mode only: in one-way mode the primary alone is written by people, so there is nothing to decide; set `mode: any-region` to use it",
            );
            return None;
        }
        let mut ok = true;
        let skew = match &c.value.skew_ms {
            None => Duration::from_millis(super::DEFAULT_CONFLICT_SKEW_MS),
            Some(s) if s.value <= 600_000 => Duration::from_millis(s.value),
            Some(s) => {
                self.issue(
                    s.referenced,
                    format!("skew_ms {} is more than 10 minutes: clocks that far apart would decide every conflict by order; fix the clocks (NTP) and keep this small", s.value),
                );
                ok = false;
                Duration::ZERO
            }
        };
        let mut order: Vec<usize> = Vec::new();
        for name in &c.value.order {
            let n = name.value.trim();
            match regions.iter().position(|r| r.name == n) {
                None => {
                    let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
                    self.issue(
                        name.referenced,
                        format!(
                            "conflicts.order names {n:?}, which is not a region (regions: {})",
                            known.join(", ")
                        ),
                    );
                    ok = false;
                }
                Some(i) if !regions[i].accepts_pushes => {
                    self.issue(
                        name.referenced,
                        format!("region {n:?} does not accept pushes (`accepts_pushes: false`): it can never be in a conflict"),
                    );
                    ok = false;
                }
                Some(i) if order.contains(&i) => {
                    self.issue(
                        name.referenced,
                        format!("conflicts.order names {n:?} twice"),
                    );
                    ok = false;
                }
                Some(i) => order.push(i),
            }
        }
        if c.value.order.is_empty() {
            order = writable.clone();
        } else if ok {
            let missing: Vec<&str> = writable
                .iter()
                .filter(|i| !order.contains(i))
                .map(|&i| regions[i].name.as_str())
                .collect();
            if !missing.is_empty() {
                self.issue(
                    c.referenced,
                    format!(
                        "conflicts.order must name every region that accepts pushes, the one that wins a tie first; missing: {}",
                        missing.join(", ")
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(Conflicts { order, skew })
    }

    /// A size in bytes from a number or text like `50MiB`.
    fn size(&mut self, v: &Spanned<FileSize>, key: &str) -> Option<u64> {
        let parsed = match &v.value {
            FileSize::Bytes(0) => Err(format!("{key} must be at least 1 byte")),
            FileSize::Bytes(n) => Ok(*n),
            FileSize::Text(t) => super::parse_size(t).map_err(|e| format!("{key} {e}")),
        };
        match parsed {
            Ok(n) => Some(n),
            Err(e) => {
                self.issue(v.referenced, e);
                None
            }
        }
    }

    fn daemon(&mut self, file: &FileConfig) -> DaemonConfig {
        let d = DaemonConfig::default();
        let listen = match &file.listen {
            None => d.listen.clone(),
            Some(l) => {
                let v = l.value.trim();
                if v.parse::<std::net::SocketAddr>().is_err() {
                    self.issue(
                        l.referenced,
                        format!(
                            "listen {v:?} must be an IP address and port, e.g. 127.0.0.1:9090 (or 0.0.0.0:9090 for every interface)"
                        ),
                    );
                }
                v.to_owned()
            }
        };
        let every = |secs: &Option<Spanned<u64>>, default: Option<Duration>| match secs {
            None => default,
            Some(s) if s.value == 0 => None,
            Some(s) => Some(Duration::from_secs(s.value)),
        };
        let poll_interval = every(&file.poll_interval_secs, d.poll_interval);
        let audit_interval = every(&file.audit_interval_secs, d.audit_interval);
        let shutdown_grace = match &file.shutdown_grace_secs {
            None => d.shutdown_grace,
            Some(s) => Duration::from_secs(s.value),
        };
        let retry_max = Duration::from_secs(self.positive(
            &file.retry_max_secs,
            "retry_max_secs",
            d.retry_max.as_secs(),
        ));
        let park_after_attempts = self.positive(
            &file.park_after_attempts,
            "park_after_attempts",
            d.park_after_attempts,
        );
        let webhook_max_body_bytes = self.positive(
            &file.webhook.max_body_bytes,
            "max_body_bytes",
            d.webhook_max_body_bytes,
        );
        let webhook_auth = file
            .webhook
            .auth
            .as_ref()
            .and_then(|a| self.http_auth(a, "webhook.auth"));
        let api_auth = file
            .api
            .auth
            .as_ref()
            .and_then(|a| self.http_auth(a, "api.auth"));
        let deletes = match &file.deletes.policy {
            None => DeletePolicy::Ignore,
            Some(p) => match p.value.as_str() {
                "ignore" => DeletePolicy::Ignore,
                "propagate" => DeletePolicy::Propagate,
                other => {
                    self.issue(
                        p.referenced,
                        format!("deletes.policy must be `ignore` or `propagate`, not {other:?}"),
                    );
                    DeletePolicy::Ignore
                }
            },
        };
        let max_deletes_per_hour = self.positive(
            &file.deletes.max_per_hour,
            "max_per_hour",
            d.max_deletes_per_hour,
        );
        let mut notify: Vec<NotifyTarget> = Vec::new();
        for n in &file.notify {
            let Some(t) = self.notify_target(n) else {
                continue;
            };
            if notify.iter().any(|o| o.name == t.name) {
                let at = n.name.as_ref().map_or(n.url.referenced, |n| n.referenced);
                self.issue(
                    at,
                    format!(
                        "two notify targets are called {:?}: give each a different `name`",
                        t.name
                    ),
                );
            }
            notify.push(t);
        }
        DaemonConfig {
            listen,
            poll_interval,
            audit_interval,
            shutdown_grace,
            retry_max,
            park_after_attempts,
            webhook_max_body_bytes,
            webhook_auth,
            api_auth,
            deletes,
            max_deletes_per_hour,
            deletes_dry_run: file.deletes.dry_run,
            notify,
        }
    }

    /// One outgoing webhook; `None` when its URL is wrong (said).
    fn notify_target(&mut self, n: &FileNotify) -> Option<NotifyTarget> {
        let url = self.url(&n.url);
        let mut events = Vec::new();
        for e in &n.events {
            match NotifyEvent::parse(&e.value) {
                Some(ev) if !events.contains(&ev) => events.push(ev),
                Some(_) => {}
                None => self.issue(
                    e.referenced,
                    format!(
                        "notify events are {}, not {:?}",
                        NotifyEvent::ALL
                            .map(|e| format!("`{}`", e.as_str()))
                            .join(", "),
                        e.value
                    ),
                ),
            }
        }
        if n.events.is_empty() {
            events.push(NotifyEvent::Complete);
        }
        let format = match n.format.as_ref().map(|f| (f.value.as_str(), f.referenced)) {
            None | Some(("georep", _)) => NotifyFormat::Georep,
            Some(("registry", _)) => NotifyFormat::Registry,
            Some(("acr", _)) => NotifyFormat::Acr,
            Some((other, at)) => {
                self.issue(
                    at,
                    format!("notify format is `georep`, `registry` or `acr`, not {other:?}"),
                );
                NotifyFormat::Georep
            }
        };
        let scope = self.notify_scope(&n.scope);
        let bearer_token = n.bearer_token_env.as_ref().and_then(|var| {
            self.secret(
                &n.bearer_token_env,
                &None,
                var.referenced,
                "a notify target's token",
                "bearer_token",
            )
        });
        let timeout = Duration::from_secs(self.positive(
            &n.timeout_secs,
            "timeout_secs",
            DEFAULT_NOTIFY_TIMEOUT_SECS,
        ));
        let mut url = url?;
        // `url()` adds the trailing slash a registry base needs; a
        // webhook is posted to exactly as written.
        if !n.url.value.trim().ends_with('/') && url.path() != "/" {
            let p = url.path().trim_end_matches('/').to_owned();
            url.set_path(&p);
        }
        let name = match &n.name {
            Some(name) if name.value.trim().is_empty() => {
                self.issue(name.referenced, "a notify target's name must not be empty");
                name.value.clone()
            }
            Some(name) => name.value.clone(),
            None => format!(
                "{}{}",
                url.host_str().unwrap_or(""),
                url.path().trim_end_matches('/')
            ),
        };
        Some(NotifyTarget {
            name,
            url,
            events,
            scope,
            format,
            bearer_token,
            timeout,
        })
    }

    /// A notify target's `scope`: `repository[:tag]` globs, as ACR's.
    fn notify_scope(&mut self, patterns: &[Spanned<String>]) -> Option<NotifyScope> {
        if patterns.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for p in patterns {
            // A repository name has no ':', so the tag follows the last.
            let (repo, tag) = match p.value.rsplit_once(':') {
                Some((r, t)) => (r, t),
                None => (p.value.as_str(), "latest"),
            };
            let glob = |g: &str, sep: bool| {
                GlobBuilder::new(g)
                    .literal_separator(sep)
                    .build()
                    .map(|g| g.compile_matcher())
            };
            match (glob(repo, true), glob(tag, false)) {
                (Ok(r), Ok(t)) if !repo.is_empty() && !tag.is_empty() => out.push((r, t)),
                (Err(e), _) | (_, Err(e)) => self.issue(
                    p.referenced,
                    format!("notify scope {:?} is not a valid pattern: {e}", p.value),
                ),
                _ => self.issue(
                    p.referenced,
                    format!(
                        "notify scope {:?} needs a repository and, after ':', a tag (`team/*:*` for every tag)",
                        p.value
                    ),
                ),
            }
        }
        Some(NotifyScope::new(out))
    }

    fn globs(&mut self, patterns: &[Spanned<String>], what: &str) -> Option<GlobSet> {
        if patterns.is_empty() {
            return None;
        }
        let mut set = GlobSetBuilder::new();
        for p in patterns {
            match GlobBuilder::new(&p.value).literal_separator(true).build() {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => self.issue(
                    p.referenced,
                    format!("invalid {what} pattern {:?}: {}", p.value, e.kind()),
                ),
            }
        }
        set.build().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = "\
state_dir: ./georep-state
primary:
  name: westeurope
  url: http://127.0.0.1:5000
regions:
  - name: eastus
    url: http://127.0.0.1:5001
  - name: japaneast
    url: http://127.0.0.1:5002
";

    pub(super) fn no_env(_: &str) -> Option<String> {
        None
    }

    pub(super) fn load_err(text: &str) -> String {
        load_str(Path::new("/etc/georep.yaml"), text, &no_env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = load_str(Path::new("/etc/georep/georep.yaml"), MINIMAL, &no_env).unwrap();
        assert_eq!(c.primary().unwrap().name, "westeurope");
        assert_eq!(c.primary().unwrap().display_url(), "http://127.0.0.1:5000");
        assert_eq!(c.regions.len(), 2);
        assert_eq!(c.state_dir, PathBuf::from("/etc/georep/georep-state"));
        assert_eq!(c.concurrency, Concurrency::default());
        assert!(c.repositories.allows("anything/at/all"));
    }

    pub(super) const ANY_REGION: &str = "\
state_dir: ./s
mode: any-region
regions:
  - name: us
    url: http://127.0.0.1:5000
  - name: eu
    url: http://127.0.0.1:5001
  - name: edge
    url: http://127.0.0.1:5002
    accepts_pushes: false
";

    #[test]
    fn any_region_mode_loads_with_its_order_and_window() {
        let c = load_str(Path::new("/g.yaml"), ANY_REGION, &no_env).unwrap();
        assert_eq!(c.mode, Mode::AnyRegion);
        assert!(c.primary().is_none());
        let writable: Vec<bool> = c.regions.iter().map(|r| r.accepts_pushes).collect();
        assert_eq!(writable, [true, true, false]);
        assert_eq!(c.conflicts.order, [0, 1], "config order by default");
        let text = format!("{ANY_REGION}conflicts:\n  order: [eu, us]\n  skew_ms: 20\n");
        let c = load_str(Path::new("/g.yaml"), &text, &no_env).unwrap();
        assert_eq!(c.conflicts.order, [1, 0]);
        assert_eq!(c.conflicts.skew, Duration::from_millis(20));
        // One-way: the primary alone accepts pushes.
        let c = load_str(Path::new("/g.yaml"), MINIMAL, &no_env).unwrap();
        assert_eq!(c.mode, Mode::OneWay);
        assert!(c.primary().unwrap().accepts_pushes);
        assert!(c.regions.iter().all(|r| !r.accepts_pushes));
    }

    #[test]
    fn a_wrong_mix_of_modes_is_explained_with_its_line() {
        let with_primary = ANY_REGION.replace(
            "regions:\n",
            "primary:\n  name: home\n  url: http://127.0.0.1:5009\nregions:\n",
        );
        let err = load_err(&with_primary);
        assert!(
            err.contains(":4:9: any-region mode has no primary: move \"home\""),
            "{err}"
        );
        let pushes_one_way = MINIMAL.replace(
            "    url: http://127.0.0.1:5001\n",
            "    url: http://127.0.0.1:5001\n    accepts_pushes: true\n",
        );
        let err = load_err(&pushes_one_way);
        assert!(
            err.contains(":8:21: accepts_pushes applies in any-region mode only"),
            "{err}"
        );
        let conflicts_one_way = format!("{MINIMAL}conflicts:\n  order: [eastus]\n");
        let err = load_err(&conflicts_one_way);
        assert!(
            err.contains("conflicts applies in any-region mode only"),
            "{err}"
        );
        let no_primary = MINIMAL.replace(
            "primary:\n  name: westeurope\n  url: http://127.0.0.1:5000\n",
            "",
        );
        let err = load_err(&no_primary);
        assert!(err.contains("or set `mode: any-region`"), "{err}");
        let bad_mode = ANY_REGION.replace("any-region", "anywhere");
        assert!(load_err(&bad_mode).contains(":2:7: mode \"anywhere\" is not a mode"));
        let lonely = "state_dir: s\nmode: any-region\nregions:\n  - name: us\n    url: http://127.0.0.1:5000\n";
        assert!(load_err(lonely).contains("at least two regions"));
    }

    #[test]
    fn the_conflict_order_names_every_writable_region_once() {
        let order = |o: &str| load_err(&format!("{ANY_REGION}conflicts:\n  order: {o}\n"));
        let err = order("[us, eu, mars]");
        assert!(
            err.contains(":12:19: conflicts.order names \"mars\", which is not a region"),
            "{err}"
        );
        let err = order("[us, edge, eu]");
        assert!(
            err.contains("region \"edge\" does not accept pushes"),
            "{err}"
        );
        let err = order("[us, us, eu]");
        assert!(err.contains("names \"us\" twice"), "{err}");
        let err = order("[eu]");
        assert!(err.contains("missing: us"), "{err}");
        let err = load_err(&format!("{ANY_REGION}conflicts:\n  skew_ms: 900000\n"));
        assert!(
            err.contains("skew_ms 900000 is more than 10 minutes"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = MINIMAL.replace("- name: eastus\n", "- name: eastus\n    colour: blue\n");
        let err = load_err(&text);
        assert!(err.contains("/etc/georep.yaml:7:5"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let text = format!("{MINIMAL}concurrency:\n  max_concurrent_blobs: lots\n");
        let err = load_err(&text);
        assert!(err.contains("/etc/georep.yaml:11:"), "{err}");
    }

    #[test]
    fn duplicate_region_and_region_equal_to_primary() {
        let text = format!(
            "{MINIMAL}  - name: eastus\n    url: http://127.0.0.1:5003\n  - name: copy\n    url: http://127.0.0.1:5000/\n"
        );
        let err = load_err(&text);
        assert!(err.contains("2 problems"), "{err}");
        assert!(
            err.contains("/etc/georep.yaml:10:11: duplicate region name \"eastus\""),
            "{err}"
        );
        assert!(err.contains("/etc/georep.yaml:13:10:"), "{err}");
        assert!(
            err.contains("same URL http://127.0.0.1:5000 as the primary"),
            "{err}"
        );
    }

    #[test]
    fn region_named_like_primary() {
        let text = MINIMAL.replace("name: japaneast", "name: westeurope");
        let err = load_err(&text);
        assert!(
            err.contains(
                ":8:11: duplicate region name \"westeurope\": it is already the primary's name"
            ),
            "{err}"
        );
    }

    #[test]
    fn limits_take_human_sizes_and_refuse_others() {
        let text = format!(
            "{MINIMAL}limits:\n  max_bytes_per_sec: 50MiB\n  total_max_bytes_per_sec: 1GB\n  max_requests_per_sec: 20\n"
        );
        let c = load_str(Path::new("c.yaml"), &text, &no_env).unwrap();
        assert_eq!(c.primary().unwrap().max_bytes_per_sec, Some(50 << 20));
        assert_eq!(c.regions[1].max_requests_per_sec, Some(20));
        assert_eq!(c.total_max_bytes_per_sec, Some(1_000_000_000));
        let bad = MINIMAL.replace(
            "    url: http://127.0.0.1:5001\n",
            "    url: http://127.0.0.1:5001\n    max_bytes_per_sec: fast\n",
        );
        let err = load_str(Path::new("c.yaml"), &bad, &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml:8:24") && err.contains("\"fast\" is not a size"),
            "{err}"
        );
        assert_eq!(super::super::parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(super::super::parse_size("8MiB/s"), Ok(8 << 20));
        assert_eq!(super::super::parse_size("1048576"), Ok(1 << 20));
        assert!(super::super::parse_size("0MB").is_err());
        assert!(super::super::parse_size("-1MB").is_err());
        assert!(super::super::parse_size("5 parsecs").is_err());
    }

    #[test]
    fn globs_filter_repositories() {
        let text = format!(
            "{MINIMAL}repositories:\n  include: [\"team/**\", \"base\"]\n  exclude: [\"team/*/tmp-*\"]\n"
        );
        let c = load_str(Path::new("c.yaml"), &text, &no_env).unwrap();
        assert!(c.repositories.allows("team/app/api"));
        assert!(c.repositories.allows("base"));
        assert!(!c.repositories.allows("other"));
        assert!(!c.repositories.allows("team/app/tmp-1"));

        let bad = format!("{MINIMAL}repositories:\n  include: [\"team/[\"]\n");
        let err = load_err(&bad);
        assert!(err.contains(":11:13: invalid include pattern"), "{err}");
    }

    #[test]
    fn zero_limits_are_refused() {
        let text = format!("{MINIMAL}concurrency:\n  max_concurrent_blobs: 0\n");
        let err = load_err(&text);
        assert!(
            err.contains(":11:25: max_concurrent_blobs must be at least 1"),
            "{err}"
        );
    }
}

/// Property tests (fuzzing) of the config loader: any text, and valid
/// configs with lines dropped, doubled or garbled, load or fail with
/// messages, never a panic; alias bombs are refused.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const FULL: &str = include_str!("../../config/example.yaml");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    proptest! {
        #![proptest_config(crate::fuzz_config())]
        #[test]
        fn any_text(text in ".{0,400}") {
            let _ = load_str(Path::new("fuzz.yaml"), &text, &no_env);
        }

        #[test]
        fn mangled_configs(
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..4, ".{0,12}"), 1..6),
        ) {
            let mut lines: Vec<String> = FULL.lines().map(str::to_owned).collect();
            for (at, how, junk) in edits {
                let i = at.index(lines.len());
                match how {
                    0 => { lines.remove(i); }
                    1 => { let l = lines[i].clone(); lines.insert(i, l); }
                    2 => lines[i] = lines[i].trim_start_matches('#').trim_start().to_owned(),
                    _ => lines[i].push_str(&junk),
                }
                if lines.is_empty() {
                    break;
                }
            }
            let _ = load_str(Path::new("fuzz.yaml"), &lines.join("\n"), &no_env);
        }
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let err = load_str(Path::new("bomb.yaml"), &text, &no_env).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(err.to_string().contains("bomb.yaml"), "{err}");
    }
}
