//! The typed configuration: what the YAML file says, resolved and validated.
//!
//! Two layers. [`file`] holds the serde types that mirror the YAML, with
//! source locations kept on every value a later check may reject; [`load`]
//! reads a file, runs every check and produces the [`Config`] below, in which
//! nothing can be wrong any more: URLs are parsed, passwords are read, globs
//! are compiled, limits are positive. The rest of the crate sees only
//! [`Config`].
//!
//! Relative paths in the file (`state_dir`, `password_file`) are resolved
//! against the directory of the config file, not the current directory, so a
//! config means the same thing whoever starts georep from wherever.

pub mod docker;
pub mod file;
mod load;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{LoadError, load, load_str, load_without_secrets};

/// How many manifest graphs (one repository's tag and everything under it)
/// are copied at once.
pub const DEFAULT_MAX_CONCURRENT_IMAGES: usize = 4;
/// How many blob transfers (one read from the primary, fanned out to every
/// region that lacks the blob) are in flight at once.
pub const DEFAULT_MAX_CONCURRENT_BLOBS: usize = 6;
/// How many HTTP requests may be open to one registry at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 16;
/// Time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Time allowed for a request without a streaming body (manifests, HEADs,
/// listings, tokens) from start to end.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
/// How long a blob stream may make no progress before it is abandoned.
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 60;
/// How many times a request that failed for a transient reason is tried.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

/// Where the daemon's HTTP API listens unless `listen` says otherwise:
/// loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
/// Seconds between the daemon's full reconciles against the primary.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 300;
/// Seconds between the daemon's audits of what the regions really serve.
pub const DEFAULT_AUDIT_INTERVAL_SECS: u64 = 6 * 3600;
/// Seconds in-flight copies get to finish when the daemon is stopped.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// The longest pause between two tries of a failing work item.
pub const DEFAULT_RETRY_MAX_SECS: u64 = 60;
/// Transient failures in a row after which an item is parked (until the
/// next reconcile). Unreachable regions never park: that is an outage.
pub const DEFAULT_PARK_AFTER_ATTEMPTS: u32 = 10;
/// The largest notification envelope accepted (the registry sends one
/// event per request, well under 4 KiB).
pub const DEFAULT_WEBHOOK_MAX_BODY_BYTES: usize = 1 << 20;
/// Manifest deletions propagated per region per hour, at most.
pub const DEFAULT_MAX_DELETES_PER_HOUR: u32 = 100;
/// Time allowed for one outgoing notification.
pub const DEFAULT_NOTIFY_TIMEOUT_SECS: u64 = 10;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    /// Where georep keeps its state (absolute).
    pub state_dir: PathBuf,
    /// Where people push: the primary alone, or every writable region.
    pub mode: Mode,
    /// The registry people push to, in one-way mode; `None` in any-region
    /// mode.
    pub primary: Option<RegistryConfig>,
    pub regions: Vec<RegistryConfig>,
    /// How a conflict between regions is decided (any-region mode).
    pub conflicts: Conflicts,
    pub repositories: RepositoryFilter,
    pub concurrency: Concurrency,
    pub timeouts: Timeouts,
    pub max_attempts: u32,
    /// Bytes per second uploaded to all regions together, at most.
    pub total_max_bytes_per_sec: Option<u64>,
    /// What only `georep run` uses.
    pub daemon: DaemonConfig,
    /// Several instances sharing the work (`None`: this one does it all).
    pub cluster: Option<ClusterConfig>,
}

/// The default lease time to live of a cluster member.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;
/// The default prefix of georep's keys in etcd.
pub const DEFAULT_CLUSTER_PREFIX: &str = "/georep";

/// How this instance takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// etcd's client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// etcd's user and password, when etcd has authentication on.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// For `https` endpoints.
    pub tls: Tls,
    pub prefix: String,
    pub instance_id: String,
    pub advertise_url: String,
    pub lease_ttl: Duration,
}

/// Where people push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// To the primary only; the regions are its replicas.
    OneWay,
    /// To any region that `accepts_pushes`; georep spreads each push to
    /// all the others.
    AnyRegion,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OneWay => "one-way",
            Mode::AnyRegion => "any-region",
        }
    }
}

/// The default clock-skew window between two regions' registries.
pub const DEFAULT_CONFLICT_SKEW_MS: u64 = 100;

/// How a tag changed to different digests in two regions is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflicts {
    /// Region indexes, the one that wins a tie first: every writable
    /// region once.
    pub order: Vec<usize>,
    /// Pushes closer than this (by the registries' event times) are
    /// decided by `order`.
    pub skew: Duration,
}

impl Default for Conflicts {
    fn default() -> Self {
        Conflicts {
            order: Vec::new(),
            skew: Duration::from_millis(DEFAULT_CONFLICT_SKEW_MS),
        }
    }
}

impl Config {
    /// The primary in one-way mode.
    pub fn primary(&self) -> Option<&RegistryConfig> {
        self.primary.as_ref()
    }

    pub fn any_region(&self) -> bool {
        self.mode == Mode::AnyRegion
    }

    /// Every registry georep talks to: the primary (if any), then the
    /// regions.
    pub fn registries(&self) -> impl Iterator<Item = &RegistryConfig> {
        self.primary.iter().chain(self.regions.iter())
    }

    /// The region named `name`.
    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }
}

/// The daemon's settings.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// `host:port` of the HTTP API (webhook, health, status, metrics).
    pub listen: String,
    /// Between full reconciles; `None`: no polling, not even at start.
    pub poll_interval: Option<Duration>,
    /// Between audits of the regions against the store; `None`: never.
    pub audit_interval: Option<Duration>,
    pub shutdown_grace: Duration,
    pub retry_max: Duration,
    pub park_after_attempts: u32,
    pub webhook_max_body_bytes: usize,
    pub webhook_auth: Option<HttpAuth>,
    /// What /v1/status and /metrics require.
    pub api_auth: Option<HttpAuth>,
    pub deletes: DeletePolicy,
    pub max_deletes_per_hour: u32,
    pub deletes_dry_run: bool,
    pub notify: Vec<NotifyTarget>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: DEFAULT_LISTEN.to_owned(),
            poll_interval: Some(Duration::from_secs(DEFAULT_POLL_INTERVAL_SECS)),
            audit_interval: Some(Duration::from_secs(DEFAULT_AUDIT_INTERVAL_SECS)),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            retry_max: Duration::from_secs(DEFAULT_RETRY_MAX_SECS),
            park_after_attempts: DEFAULT_PARK_AFTER_ATTEMPTS,
            webhook_max_body_bytes: DEFAULT_WEBHOOK_MAX_BODY_BYTES,
            webhook_auth: None,
            api_auth: None,
            deletes: DeletePolicy::Ignore,
            max_deletes_per_hour: DEFAULT_MAX_DELETES_PER_HOUR,
            deletes_dry_run: false,
            notify: Vec::new(),
        }
    }
}

/// What a part of the daemon's HTTP API requires of its clients.
#[derive(Clone, Debug)]
pub enum HttpAuth {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl HttpAuth {
    /// The `Authorization` header value a client sends.
    pub fn authorization(&self) -> Secret {
        use base64::Engine as _;
        Secret::new(match self {
            HttpAuth::Bearer(token) => format!("Bearer {}", token.expose()),
            HttpAuth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            ),
        })
    }

    /// The `WWW-Authenticate` challenge for a refusal.
    pub fn challenge(&self) -> &'static str {
        match self {
            HttpAuth::Bearer(_) => "Bearer realm=\"georep\"",
            HttpAuth::Basic { .. } => "Basic realm=\"georep\"",
        }
    }
}

/// What a manifest deleted on the primary does to the regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletePolicy {
    Ignore,
    Propagate,
}

/// An outgoing webhook.
#[derive(Clone, Debug)]
pub struct NotifyTarget {
    /// How the target is called in logs, metrics and `georep notify test`:
    /// its `name`, or the URL's host and path.
    pub name: String,
    pub url: url::Url,
    /// The kinds of event posted.
    pub events: Vec<NotifyEvent>,
    /// Which images it hears about (ACR's webhook scope); `None`: all.
    pub scope: Option<NotifyScope>,
    pub format: NotifyFormat,
    pub bearer_token: Option<Secret>,
    pub timeout: Duration,
}

impl NotifyTarget {
    /// Whether this target wants `event` about `repository` (at `tag`, or
    /// by digest alone).
    pub fn wants(&self, event: NotifyEvent, repository: &str, tag: Option<&str>) -> bool {
        self.events.contains(&event)
            && self
                .scope
                .as_ref()
                .is_none_or(|s| s.matches(repository, tag))
    }
}

/// The kinds of outgoing notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    /// An image pushed to the primary is complete in one region.
    Replicated,
    /// … and in every region.
    Complete,
    /// A delete on the primary was carried out in every region.
    Deleted,
    /// An item was parked in a region (given up on until the next
    /// reconcile), with its reason.
    Failed,
    /// Any-region mode: one tag pushed with different digests in two
    /// regions, and which won.
    Conflict,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::Replicated,
        NotifyEvent::Complete,
        NotifyEvent::Deleted,
        NotifyEvent::Failed,
        NotifyEvent::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Replicated => "replicated",
            NotifyEvent::Complete => "complete",
            NotifyEvent::Deleted => "deleted",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// The body posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyFormat {
    /// georep's own JSON object (README, "Outgoing notifications").
    Georep,
    /// The distribution registry's notification envelope
    /// (`{"events":[…]}`), with the region added.
    Registry,
    /// One event object per POST, as ACR's webhooks send.
    Acr,
}

/// Repository[:tag] patterns, as ACR's webhook scope: `team/app:v1`,
/// `team/*:*`, `team/app` (meaning `team/app:latest`). `*` stays within
/// a path segment of the repository, `**` crosses them.
#[derive(Clone, Debug)]
pub struct NotifyScope {
    patterns: Vec<(globset::GlobMatcher, globset::GlobMatcher)>,
}

impl NotifyScope {
    pub fn new(patterns: Vec<(globset::GlobMatcher, globset::GlobMatcher)>) -> Self {
        NotifyScope { patterns }
    }

    /// Whether `repository:tag` is in scope; content without a tag is in
    /// scope of patterns that take every tag (`repo:*`).
    pub fn matches(&self, repository: &str, tag: Option<&str>) -> bool {
        self.patterns.iter().any(|(repo, t)| {
            repo.is_match(repository)
                && match tag {
                    Some(tag) => t.is_match(tag),
                    None => t.glob().glob() == "*",
                }
        })
    }
}

/// One registry: the primary or a replica region.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The region's name, as the operator calls it (`westeurope`).
    pub name: String,
    /// Base URL of the registry, without a trailing `/` and without userinfo.
    pub url: url::Url,
    pub credentials: Option<Credentials>,
    /// The file configures credentials whose secret this command did not
    /// load (`load_without_secrets`): a refusal is not news.
    pub credentials_withheld: bool,
    /// The credential helper `credentials` came from, to ask again.
    pub credential_helper: Option<CredentialHelper>,
    pub max_concurrent_requests: usize,
    /// Requests per second, at most (all kinds).
    pub max_requests_per_sec: Option<u32>,
    /// Bytes per second read from or written to this registry, at most.
    pub max_bytes_per_sec: Option<u64>,
    /// Plain http to a non-loopback host allowed; https certificates not
    /// verified.
    pub insecure: bool,
    /// People push to it: the primary in one-way mode; in any-region mode
    /// each region unless it says `accepts_pushes: false`.
    pub accepts_pushes: bool,
    /// What its notifications must carry, when it has credentials of its
    /// own (any-region mode); else `webhook.auth` applies.
    pub webhook_auth: Option<HttpAuth>,
    /// A client of its own carrying the registry's TLS settings (extra
    /// trust, a client identity, `insecure` on https), built when the
    /// config loaded (so it is known to build); `None`: the shared client.
    pub client: Option<reqwest::Client>,
}

/// TLS material of one registry, read and checked when the config loads;
/// what is kept of it is the client built with it.
#[derive(Clone, Default)]
pub struct Tls {
    /// PEM certificates trusted besides the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain followed by its private key.
    pub identity_pem: Option<Secret>,
}

impl Tls {
    /// These settings (and `insecure` on an https `url`) for the client
    /// builder.
    pub fn settings<'a>(&'a self, insecure: bool, url: &url::Url) -> crate::http::TlsSettings<'a> {
        crate::http::TlsSettings {
            ca_pem: self.ca_pem.as_deref(),
            identity_pem: self.identity_pem.as_ref().map(|s| s.expose()),
            accept_invalid_certs: insecure && url.scheme() == "https",
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("identity_pem", &self.identity_pem)
            .finish()
    }
}

impl RegistryConfig {
    /// A registry without credentials and with default limits, for tools
    /// and tests that talk to a registry outside any config file.
    pub fn new(name: &str, url: &str) -> Result<RegistryConfig, url::ParseError> {
        Ok(RegistryConfig {
            name: name.to_owned(),
            url: base_url(url::Url::parse(url)?),
            credentials: None,
            credentials_withheld: false,
            credential_helper: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_requests_per_sec: None,
            max_bytes_per_sec: None,
            insecure: false,
            accepts_pushes: false,
            webhook_auth: None,
            client: None,
        })
    }

    /// The URL as printed in messages: scheme, host, port and path, never userinfo.
    pub fn display_url(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }
}

/// `url` with a trailing `/`, so that joining `v2/...` keeps any path prefix.
pub(crate) fn base_url(mut url: url::Url) -> url::Url {
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url
}

/// Parses a size: bytes as a number, or a number with a unit — `B`, `kB`,
/// `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers
/// of 1024), case-insensitive, with an optional `/s`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    if t.starts_with('-') {
        return Err(format!("must be at least 1 byte, not {text}"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1 << 10,
        "mb" | "m" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" | "g" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "tb" | "t" => 1000u64.pow(4),
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size: write e.g. 50MiB, 1GB or 1048576 (bytes)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 50MiB, 1GB or 1048576 (bytes)"))?;
    let bytes = value * unit_factor as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("{text:?} must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// How georep proves who it is to one registry. Every secret is a
/// [`Secret`]: `Debug` shows `<redacted>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A username and password: HTTP basic to the registry, or to its
    /// token service (the `Bearer` challenge's realm).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the
    /// token service with the refresh-token grant for access tokens.
    IdentityToken(Secret),
    /// A registry token sent as is on every request
    /// (`Authorization: Bearer`; Docker's `registrytoken`).
    Bearer(Secret),
}

impl Credentials {
    /// What kind of credentials these are, for messages (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Credentials::Basic { username, .. } => format!("the credentials of user {username:?}"),
            Credentials::IdentityToken(_) => "the identity token".to_owned(),
            Credentials::Bearer(_) => "the bearer token".to_owned(),
        }
    }
}

/// A Docker credential helper that gave a registry its credentials: asked
/// again when the registry refuses them (helpers hand out short-lived
/// tokens, e.g. 12 hours for ECR, and a daemon runs longer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialHelper {
    /// The name after `docker-credential-`.
    pub helper: String,
    /// The server name given to the helper (`host[:port]`).
    pub server: String,
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which repositories of the primary are replicated.
#[derive(Clone, Debug, Default)]
pub struct RepositoryFilter {
    /// If empty, every repository is included.
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl RepositoryFilter {
    pub fn new(include: Option<globset::GlobSet>, exclude: Option<globset::GlobSet>) -> Self {
        RepositoryFilter { include, exclude }
    }

    /// Whether `repository` is replicated: it matches an include pattern (or
    /// there are none) and no exclude pattern.
    pub fn allows(&self, repository: &str) -> bool {
        let included = self.include.as_ref().is_none_or(|g| g.is_match(repository));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|g| g.is_match(repository));
        included && !excluded
    }
}

/// Concurrency bounds (DESIGN invariant 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concurrency {
    pub images: usize,
    pub blobs: usize,
    /// Blob uploads in flight to any one region.
    pub blobs_per_region: usize,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            images: DEFAULT_MAX_CONCURRENT_IMAGES,
            blobs: DEFAULT_MAX_CONCURRENT_BLOBS,
            blobs_per_region: DEFAULT_MAX_CONCURRENT_BLOBS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            request: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            stall: Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS),
        }
    }
}
