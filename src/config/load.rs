//! Reading and validating a config file: every mistake is reported with the
//! file, line and column it came from, and all of them at once.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_saphyr::{Location, Spanned};

use super::file::{FileConfig, FileCredentials, FileHttpAuth, FileRegistry, FileSize, FileTls};
use super::{
    Concurrency, Config, Credentials, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_NOTIFY_TIMEOUT_SECS, DaemonConfig, DeletePolicy, HttpAuth, NotifyTarget,
    RegistryConfig, RepositoryFilter, Secret, Timeouts, Tls,
};

/// A loopback host (`localhost`, 127.0.0.0/8, `::1`): plain http to it
/// never leaves the machine.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

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
    /// Not YAML, an unknown key, a wrong type: rendered by the parser with a
    /// snippet of the file.
    #[error("invalid config {}:\n{rendered}", path.display())]
    Parse { path: PathBuf, rendered: String },
    /// Well-formed YAML with values that cannot work.
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

/// Loads a config from `text`, as if read from `path`; environment variables
/// are looked up with `env` (so tests need not touch the process environment).
pub fn load_str(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, LoadError> {
    let source_name = path.display().to_string();
    let file: FileConfig = serde_saphyr::from_str(text).map_err(|e| LoadError::Parse {
        path: path.to_owned(),
        rendered: e.render_with_options(serde_saphyr::render_options! {
            source_name: Some(&source_name),
        }),
    })?;
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
        issues: Vec::new(),
        default_requests_per_sec: None,
        default_bytes_per_sec: None,
        connect_timeout: Timeouts::default().connect,
        docker: None,
    };
    let config = v.config(path, file);
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
        let primary = self.registry(&file.primary, "primary");
        let mut regions = Vec::new();
        if file.regions.value.is_empty() {
            self.issue(
                file.regions.referenced,
                "regions is empty: list at least one replica region",
            );
        }
        let mut seen_names: HashMap<String, Location> = HashMap::new();
        let mut seen_urls: HashMap<String, (String, Location)> = HashMap::new();
        seen_names.insert(
            file.primary.name.value.clone(),
            file.primary.name.referenced,
        );
        if let Some(p) = &primary {
            seen_urls.insert(
                url_identity(&p.url),
                (
                    format!("the primary {:?}", p.name),
                    file.primary.url.referenced,
                ),
            );
        }
        for r in &file.regions.value {
            let name = &r.name.value;
            if let Some(first) = seen_names.get(name) {
                let what = if *name == file.primary.name.value {
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
            if let Some(reg) = self.registry(r, "region") {
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
                regions.push(reg);
            }
        }

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

        Some(Config {
            path: path.to_owned(),
            state_dir,
            primary: primary?,
            regions,
            repositories: RepositoryFilter::new(include, exclude),
            concurrency,
            timeouts,
            max_attempts,
            total_max_bytes_per_sec,
            daemon,
        })
    }

    fn registry(&mut self, r: &FileRegistry, role: &str) -> Option<RegistryConfig> {
        let name = r.name.value.trim();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            self.issue(
                r.name.referenced,
                format!(
                    "{role} name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                    r.name.value
                ),
            );
        }
        let url = self.url(&r.url);
        let (credentials, credential_helper) = match (&r.credentials, &url) {
            (Some(c), _) => (self.credentials(c), None),
            (None, Some(u)) => match self.docker_credentials(name, u) {
                Some(found) => (Some(found.credentials), found.helper),
                None => (None, None),
            },
            (None, None) => (None, None),
        };
        let max_concurrent_requests = self.positive(
            &r.max_concurrent_requests,
            "max_concurrent_requests",
            DEFAULT_MAX_CONCURRENT_REQUESTS,
        );
        let max_requests_per_sec = match &r.max_requests_per_sec {
            Some(_) => Some(self.positive(&r.max_requests_per_sec, "max_requests_per_sec", 1)),
            None => self.default_requests_per_sec,
        };
        let max_bytes_per_sec = match &r.max_bytes_per_sec {
            Some(v) => self.size(v, "max_bytes_per_sec"),
            None => self.default_bytes_per_sec,
        };
        let insecure = r.insecure.as_ref().is_some_and(|i| i.value);
        let tls = r.tls.as_ref().and_then(|t| self.tls(t)).unwrap_or_default();
        let url = url?;
        if url.scheme() == "http" {
            if let Some(t) = &r.tls {
                self.issue(
                    t.referenced,
                    format!(
                        "tls settings need an https:// URL, not {}",
                        r.url.value.trim()
                    ),
                );
            }
            if !insecure && !is_loopback(&url) {
                self.issue(
                    r.url.referenced,
                    format!(
                        "{} is plain http to a host that is not loopback: credentials and images would cross the network in clear text; use https://, or set `insecure: true` on this registry if that is really meant",
                        r.url.value.trim()
                    ),
                );
            }
        }
        // The client must build with this material (a key that does not
        // match its certificate, say): find out now, with a line number,
        // and keep it.
        let client = match crate::http::client_with_tls(
            tls.settings(insecure, &url),
            self.connect_timeout,
        ) {
            Ok(client) => client,
            Err(e) => {
                let at = r.tls.as_ref().map_or(r.url.referenced, |t| t.referenced);
                self.issue(at, format!("TLS settings of {role} {name:?}: {e}"));
                return None;
            }
        };
        Some(RegistryConfig {
            name: name.to_owned(),
            url,
            credentials,
            credential_helper,
            max_concurrent_requests,
            max_requests_per_sec,
            max_bytes_per_sec,
            tls,
            insecure,
            client,
        })
    }

    /// Credentials for a registry with none in this file, from the Docker
    /// config (`docker::DockerConfig`); problems there are warnings.
    fn docker_credentials(&mut self, name: &str, url: &url::Url) -> Option<super::docker::Found> {
        if self.docker.is_none() {
            let loaded = match super::docker::location(self.env) {
                Some(path) => super::docker::DockerConfig::load(&path),
                None => Ok(None),
            };
            self.docker = Some(loaded.unwrap_or_else(|e| {
                tracing::warn!("ignoring the Docker config: {e}");
                None
            }));
        }
        let docker = self.docker.as_ref()?.as_ref()?;
        match docker.credentials(url) {
            Ok(Some(found)) => {
                tracing::debug!(registry = name, "credentials from {}", found.from);
                Some(found)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    registry = name,
                    "no credentials from the Docker config: {e}"
                );
                None
            }
        }
    }

    /// Reads and checks the files of a `tls:` block.
    fn tls(&mut self, t: &Spanned<FileTls>) -> Option<Tls> {
        let mut out = Tls::default();
        let read = |this: &mut Self, f: &Spanned<PathBuf>, key: &str| {
            let p = this.absolute(&f.value);
            match std::fs::read(&p) {
                Ok(b) => Some(b),
                Err(e) => {
                    this.issue(
                        f.referenced,
                        format!("cannot read {key} {}: {e}", p.display()),
                    );
                    None
                }
            }
        };
        if let Some(f) = &t.value.ca_file {
            let pem = read(self, f, "ca_file")?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => out.ca_pem = Some(pem),
                Ok(_) => {
                    self.issue(f.referenced, "ca_file holds no PEM certificate");
                    return None;
                }
                Err(e) => {
                    self.issue(
                        f.referenced,
                        format!("ca_file is not a PEM certificate bundle: {e}"),
                    );
                    return None;
                }
            }
        }
        match (&t.value.client_cert_file, &t.value.client_key_file) {
            (Some(c), Some(k)) => {
                let mut pem = read(self, c, "client_cert_file")?;
                let key = read(self, k, "client_key_file")?;
                pem.push(b'\n');
                pem.extend_from_slice(&key);
                if let Err(e) = reqwest::Identity::from_pem(&pem) {
                    self.issue(
                        c.referenced,
                        format!("client_cert_file and client_key_file do not form a client identity: {e}"),
                    );
                    return None;
                }
                out.identity_pem = Some(Secret::new(String::from_utf8_lossy(&pem).into_owned()));
            }
            (Some(c), None) => {
                self.issue(c.referenced, "client_cert_file needs client_key_file");
                return None;
            }
            (None, Some(k)) => {
                self.issue(k.referenced, "client_key_file needs client_cert_file");
                return None;
            }
            (None, None) => {}
        }
        Some(out)
    }

    fn url(&mut self, s: &Spanned<String>) -> Option<url::Url> {
        let raw = s.value.trim();
        let url = match url::Url::parse(raw) {
            Ok(u) => u,
            Err(e) => {
                self.issue(
                    s.referenced,
                    format!(
                        "invalid URL {raw:?}: {e} (expected e.g. https://registry.example.com)"
                    ),
                );
                return None;
            }
        };
        if url.scheme() != "http" && url.scheme() != "https" {
            self.issue(
                s.referenced,
                format!("URL {raw:?} must start with http:// or https://"),
            );
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Do not echo the URL: it holds a secret.
            self.issue(
                s.referenced,
                "a registry URL must not contain a username or password: use `credentials` with password_env or password_file",
            );
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.issue(
                s.referenced,
                format!("URL {raw:?} must not have a query or fragment"),
            );
            return None;
        }
        if url.host_str().is_none() {
            self.issue(s.referenced, format!("URL {raw:?} has no host"));
            return None;
        }
        Some(super::base_url(url))
    }

    /// `webhook.auth` or `api.auth` (`what`): a bearer token, or a username
    /// with a password.
    fn http_auth(&mut self, a: &Spanned<FileHttpAuth>, what: &str) -> Option<HttpAuth> {
        let at = a.referenced;
        let a = &a.value;
        let bearer = a.bearer_token_env.is_some() || a.bearer_token_file.is_some();
        match (&a.username, bearer) {
            (Some(_), true) => {
                self.issue(
                    at,
                    format!(
                        "{what}: give either a bearer token or a username and password, not both"
                    ),
                );
                None
            }
            (Some(username), false) => {
                let password = self.secret(
                    &a.password_env,
                    &a.password_file,
                    at,
                    &format!("{what} with a username"),
                    "password",
                )?;
                Some(HttpAuth::Basic {
                    username: username.clone(),
                    password,
                })
            }
            (None, _) => {
                if let Some(p) = a
                    .password_env
                    .as_ref()
                    .map(|p| p.referenced)
                    .or(a.password_file.as_ref().map(|p| p.referenced))
                {
                    self.issue(p, format!("{what}: a password needs a username"));
                    return None;
                }
                self.secret(
                    &a.bearer_token_env,
                    &a.bearer_token_file,
                    at,
                    what,
                    "bearer_token",
                )
                .map(HttpAuth::Bearer)
            }
        }
    }

    /// Exactly one of: `username` with a password, a bearer `token_*`, an
    /// `identity_token_*`.
    fn credentials(&mut self, c: &Spanned<FileCredentials>) -> Option<Credentials> {
        let at = c.referenced;
        let c = &c.value;
        let token = c.token_env.is_some() || c.token_file.is_some();
        let identity = c.identity_token_env.is_some() || c.identity_token_file.is_some();
        let password = c.password_env.is_some() || c.password_file.is_some();
        let basic = c.username.is_some() || password;
        if [basic, token, identity].iter().filter(|k| **k).count() != 1 {
            self.issue(
                at,
                "credentials need exactly one of: username with password_env or password_file; token_env or token_file (a bearer token); identity_token_env or identity_token_file (an OAuth2 refresh token)",
            );
            return None;
        }
        if token {
            let t = self.secret(&c.token_env, &c.token_file, at, "a bearer token", "token")?;
            return Some(Credentials::Bearer(t));
        }
        if identity {
            let t = self.secret(
                &c.identity_token_env,
                &c.identity_token_file,
                at,
                "an identity token",
                "identity_token",
            )?;
            return Some(Credentials::IdentityToken(t));
        }
        let Some(username) = &c.username else {
            self.issue(at, "credentials with a password need a username");
            return None;
        };
        let what = format!("credentials for {:?}", username.value);
        let password = self.secret(&c.password_env, &c.password_file, at, &what, "password")?;
        if username.value.is_empty() {
            self.issue(
                username.referenced,
                "credentials.username must not be empty",
            );
            return None;
        }
        Some(Credentials::Basic {
            username: username.value.clone(),
            password,
        })
    }

    /// A secret from exactly one of `<name>_env` (a variable) and
    /// `<name>_file` (a file, trailing newline removed).
    fn secret(
        &mut self,
        env: &Option<Spanned<String>>,
        file: &Option<Spanned<PathBuf>>,
        at: Location,
        what: &str,
        name: &str,
    ) -> Option<Secret> {
        match (env, file) {
            (Some(_), Some(f)) => {
                self.issue(
                    f.referenced,
                    format!("give either {name}_env or {name}_file, not both"),
                );
                None
            }
            (None, None) => {
                self.issue(at, format!("{what} need {name}_env or {name}_file"));
                None
            }
            (Some(var), None) => match (self.env)(&var.value) {
                Some(p) => Some(Secret::new(p)),
                None => {
                    self.issue(
                        var.referenced,
                        format!("environment variable {} is not set", var.value),
                    );
                    None
                }
            },
            (None, Some(file)) => {
                let p = self.absolute(&file.value);
                match std::fs::read_to_string(&p) {
                    Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
                    Err(e) => {
                        self.issue(
                            file.referenced,
                            format!("cannot read {name}_file {}: {e}", p.display()),
                        );
                        None
                    }
                }
            }
        }
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
        let mut notify = Vec::new();
        for n in &file.notify {
            let url = self.url(&n.url);
            let mut on_replicated = false;
            let mut on_complete = false;
            for e in &n.events {
                match e.value.as_str() {
                    "replicated" => on_replicated = true,
                    "complete" => on_complete = true,
                    other => self.issue(
                        e.referenced,
                        format!("notify events are `replicated` and `complete`, not {other:?}"),
                    ),
                }
            }
            if n.events.is_empty() {
                on_complete = true;
            }
            let bearer_token =
                n.bearer_token_env
                    .as_ref()
                    .and_then(|var| match (self.env)(&var.value) {
                        Some(t) => Some(Secret::new(t)),
                        None => {
                            self.issue(
                                var.referenced,
                                format!("environment variable {} is not set", var.value),
                            );
                            None
                        }
                    });
            let timeout = Duration::from_secs(self.positive(
                &n.timeout_secs,
                "timeout_secs",
                DEFAULT_NOTIFY_TIMEOUT_SECS,
            ));
            if let Some(mut url) = url {
                // `url()` adds the trailing slash a registry base needs; a
                // webhook is posted to exactly as written.
                if !n.url.value.trim().ends_with('/') && url.path() != "/" {
                    let p = url.path().trim_end_matches('/').to_owned();
                    url.set_path(&p);
                }
                notify.push(NotifyTarget {
                    url,
                    on_replicated,
                    on_complete,
                    bearer_token,
                    timeout,
                });
            }
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

/// Two URLs name the same registry when scheme, host, port and path agree.
fn url_identity(u: &url::Url) -> String {
    format!(
        "{}://{}:{}{}",
        u.scheme(),
        u.host_str().unwrap_or("").to_ascii_lowercase(),
        u.port_or_known_default().unwrap_or(0),
        u.path().trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
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

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_err(text: &str) -> String {
        load_str(Path::new("/etc/georep.yaml"), text, &no_env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = load_str(Path::new("/etc/georep/georep.yaml"), MINIMAL, &no_env).unwrap();
        assert_eq!(c.primary.name, "westeurope");
        assert_eq!(c.primary.display_url(), "http://127.0.0.1:5000");
        assert_eq!(c.regions.len(), 2);
        assert_eq!(c.state_dir, PathBuf::from("/etc/georep/georep-state"));
        assert_eq!(c.concurrency, Concurrency::default());
        assert!(c.repositories.allows("anything/at/all"));
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
    fn url_with_password_is_refused_without_echo() {
        let text = MINIMAL.replace("http://127.0.0.1:5001", "http://bob:hunter2@127.0.0.1:5001");
        let err = load_err(&text);
        assert!(err.contains(":7:10:"), "{err}");
        assert!(!err.contains("hunter2") || err.contains("| "), "{err}");
        let message_line = err.lines().find(|l| l.contains(":7:10:")).unwrap();
        assert!(!message_line.contains("hunter2"), "{message_line}");
    }

    #[test]
    fn credentials_from_env_and_missing_env() {
        let text = MINIMAL.replace(
            "  url: http://127.0.0.1:5000\n",
            "  url: http://127.0.0.1:5000\n  credentials:\n    username: bob\n    password_env: PRIMARY_PW\n",
        );
        let env = |k: &str| (k == "PRIMARY_PW").then(|| "s3cret".to_owned());
        let c = load_str(Path::new("c.yaml"), &text, &env).unwrap();
        let creds = c.primary.credentials.unwrap();
        assert_eq!(
            creds,
            Credentials::Basic {
                username: "bob".into(),
                password: Secret::new("s3cret")
            }
        );
        assert!(!format!("{creds:?}").contains("s3cret"));

        let err = load_err(&text);
        assert!(
            err.contains(":7:19: environment variable PRIMARY_PW is not set"),
            "{err}"
        );
    }

    #[test]
    fn token_credentials_and_their_mistakes() {
        let with = |creds: &str| {
            MINIMAL.replace(
                "  url: http://127.0.0.1:5000\n",
                &format!("  url: http://127.0.0.1:5000\n  credentials:\n{creds}"),
            )
        };
        let env = |k: &str| (k == "TOK").then(|| "t0k".to_owned());
        let load = |creds: &str| {
            load_str(Path::new("c.yaml"), &with(creds), &env).map(|c| c.primary.credentials)
        };
        assert_eq!(
            load("    token_env: TOK\n").unwrap(),
            Some(Credentials::Bearer(Secret::new("t0k")))
        );
        assert_eq!(
            load("    identity_token_env: TOK\n").unwrap(),
            Some(Credentials::IdentityToken(Secret::new("t0k")))
        );
        for (creds, message) in [
            ("    username: bob\n    token_env: TOK\n", "exactly one of"),
            (
                "    token_env: TOK\n    identity_token_env: TOK\n",
                "exactly one of",
            ),
            ("    password_env: TOK\n", "need a username"),
            ("    username: bob\n", "need password_env or password_file"),
            (
                "    token_env: TOK\n    token_file: t\n",
                "either token_env or token_file",
            ),
            ("    identity_token_env: NOPE\n", "NOPE is not set"),
        ] {
            let err = load(creds).unwrap_err().to_string();
            assert!(
                err.contains("c.yaml:") && err.contains(message),
                "{creds}: {err}"
            );
        }
    }

    #[test]
    fn limits_take_human_sizes_and_refuse_others() {
        let text = format!(
            "{MINIMAL}limits:\n  max_bytes_per_sec: 50MiB\n  total_max_bytes_per_sec: 1GB\n  max_requests_per_sec: 20\n"
        );
        let c = load_str(Path::new("c.yaml"), &text, &no_env).unwrap();
        assert_eq!(c.primary.max_bytes_per_sec, Some(50 << 20));
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
