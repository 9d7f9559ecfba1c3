//! Local CNCF distribution registries (`docker-registry serve`), started as
//! child processes on free loopback ports: the registries of `georep demo`,
//! of the integration tests and of the benchmark.
//!
//! Each registry gets its own directory holding its config, its storage and
//! its log. Foreign-layer URLs (`http(s)://`) are allowed, as on registries
//! that hold Windows images; the 2.8 default refuses every such manifest.
//! The log (the log records every request, which tests use to count what
//! reached a replica independently of georep's own counters).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The registry binary, unless `GEOREP_REGISTRY_BIN` names another.
pub const DEFAULT_REGISTRY_BIN: &str = "docker-registry";
/// How long a registry may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The query parameter of [`LocalRegistry::settled_requests`]'s fence.
const FENCE_PARAM: &str = "georep-fence=";

fn count(requests: &[(String, String, u16)], method: &str, path_part: &str) -> usize {
    requests
        .iter()
        .filter(|(m, uri, _)| m == method && uri.contains(path_part))
        .count()
}

/// How the registry authenticates clients.
#[derive(Clone, Debug)]
pub enum LocalAuth {
    /// HTTP basic against an htpasswd file (bcrypt entries).
    Htpasswd { path: PathBuf },
    /// Bearer tokens from a token service, signed by the key of the
    /// certificate in `root_cert_bundle`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert_bundle: PathBuf,
    },
}

/// Where the registry posts its notifications.
#[derive(Clone, Debug)]
pub struct LocalNotify {
    pub url: String,
    /// Sent as the `Authorization` header, if set.
    pub authorization: Option<String>,
}

/// Serve https with this certificate; with `client_ca`, require client
/// certificates it signed (mutual TLS).
#[derive(Clone, Debug)]
pub struct LocalTls {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Ports for the registries a command starts: free ones, or consecutive
/// ones from a base (`--port-base`), so they can be opened in a firewall
/// or found again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ports {
    next: Option<u16>,
}

impl Ports {
    pub fn from_base(base: Option<u16>) -> Ports {
        Ports { next: base }
    }

    /// Options with the next port of the base, or a free one.
    pub fn options(&mut self) -> anyhow::Result<LocalOptions> {
        let port = match self.next {
            None => None,
            Some(p) => {
                self.next = Some(
                    p.checked_add(1)
                        .ok_or_else(|| anyhow::anyhow!("--port-base {p}: no port after {p}"))?,
                );
                if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                    anyhow::bail!(
                        "port {p} (from --port-base) is in use on 127.0.0.1: choose another --port-base, or leave it out to use free ports"
                    );
                }
                Some(p)
            }
        };
        Ok(LocalOptions {
            port,
            ..LocalOptions::default()
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    pub auth: Option<LocalAuth>,
    pub notify: Option<LocalNotify>,
    pub tls: Option<LocalTls>,
    /// Use this port instead of a free one (for restarts).
    pub port: Option<u16>,
}

/// A running registry process, killed when dropped.
pub struct LocalRegistry {
    pub port: u16,
    pub dir: PathBuf,
    options: LocalOptions,
    child: Option<tokio::process::Child>,
}

impl LocalRegistry {
    /// Starts a registry keeping its files in `dir` (created if needed).
    pub async fn start(dir: &Path, options: LocalOptions) -> anyhow::Result<LocalRegistry> {
        std::fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("creating registry directory {}", dir.display()))?;
        let mut last_err = None;
        // A free port can be taken by someone else between our probe and the
        // registry's bind; try a few.
        for _ in 0..5 {
            let port = match options.port {
                Some(p) => p,
                None => free_port()?,
            };
            let mut reg = LocalRegistry {
                port,
                dir: dir.to_owned(),
                options: LocalOptions {
                    port: Some(port),
                    ..options.clone()
                },
                child: None,
            };
            match reg.spawn().await {
                Ok(()) => return Ok(reg),
                Err(e) => last_err = Some(e),
            }
            if options.port.is_some() {
                break;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// CPU seconds (user + system) the registry process has used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        crate::resources::process_cpu_secs(&self.pid()?.to_string())
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Every request the registry logged so far: (method, URI, status).
    /// A request's line is written after its answer went out, so a client
    /// that has just read an answer may not find it yet: counts compared
    /// across a client's requests want [`LocalRegistry::settled_requests`].
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.requests_by_agent()
            .into_iter()
            .map(|(method, uri, status, _)| (method, uri, status))
            .collect()
    }

    /// Every request logged so far with its `User-Agent`: (method, URI,
    /// status, agent).
    pub fn requests_by_agent(&self) -> Vec<(String, String, u16, String)> {
        self.log()
            .lines()
            .filter(|l| l.contains("msg=\"response completed"))
            .filter_map(|l| {
                let method = logfmt_value(l, "http.request.method")?;
                let uri = logfmt_value(l, "http.request.uri")?;
                let status = logfmt_value(l, "http.response.status")?.parse().ok()?;
                let agent = logfmt_value(l, "http.request.useragent").unwrap_or_default();
                Some((method, uri, status, agent))
            })
            .filter(|(_, uri, _, _)| !uri.contains(FENCE_PARAM))
            .collect()
    }

    /// Every request answered before this call, logged: sends a fence
    /// request of its own (left out of every listing) and waits until the
    /// registry has logged it, by which time the lines of requests answered
    /// before it are written too. A registry that cannot be asked (TLS,
    /// stopped) gets a short pause instead.
    pub async fn settled_requests(&self) -> Vec<(String, String, u16)> {
        static FENCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FENCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = format!("{FENCE_PARAM}{}-{n}", std::process::id());
        let mut answered = false;
        if self.options.tls.is_none()
            && self.child.is_some()
            && let Ok(client) = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
        {
            let url = format!("{}/v2/?{marker}", self.url());
            answered = client.get(url).send().await.is_ok();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while answered && !self.log().contains(&marker) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !answered {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.requests()
    }

    /// Requests logged so far with this method whose URI contains
    /// `path_part`.
    pub fn count_requests(&self, method: &str, path_part: &str) -> usize {
        count(&self.requests(), method, path_part)
    }

    /// Requests answered so far with this method whose URI contains
    /// `path_part` (see [`LocalRegistry::settled_requests`]).
    pub async fn count_settled(&self, method: &str, path_part: &str) -> usize {
        count(&self.settled_requests().await, method, path_part)
    }

    fn config_yaml(&self) -> String {
        let data = self.dir.join("data");
        let auth = match &self.options.auth {
            None => String::new(),
            Some(LocalAuth::Htpasswd { path }) => format!(
                "auth:\n  htpasswd:\n    realm: georep-test\n    path: {}\n",
                path.display()
            ),
            Some(LocalAuth::Token {
                realm,
                service,
                issuer,
                root_cert_bundle,
            }) => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert_bundle.display()
            ),
        };
        let notifications = match &self.options.notify {
            None => String::new(),
            Some(n) => {
                let headers = n
                    .authorization
                    .as_ref()
                    .map(|a| format!("      headers:\n        Authorization: [{a:?}]\n"))
                    .unwrap_or_default();
                // A short backoff: a receiver that was down gets the
                // pending events soon after it is back.
                format!(
                    "notifications:\n  endpoints:\n    - name: georep\n      url: {}\n{headers}      timeout: 5s\n      threshold: 3\n      backoff: 250ms\n",
                    n.url
                )
            }
        };
        let tls = match &self.options.tls {
            None => String::new(),
            Some(t) => {
                let cas = t
                    .client_ca
                    .as_ref()
                    .map(|ca| format!("    clientcas:\n      - {}\n", ca.display()))
                    .unwrap_or_default();
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n{cas}",
                    t.certificate.display(),
                    t.key.display()
                )
            }
        };
        format!(
            "version: 0.1\n\
log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n\
storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
http:\n  addr: 127.0.0.1:{}\n  secret: georep-local-registry\n{tls}\
validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n\
{auth}{notifications}",
            data.display(),
            self.port
        )
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("config.yml");
        std::fs::write(&config, self.config_yaml())
            .with_context(|| format!("writing {}", config.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        // Readiness is the registry saying it listens on *our* port, in the
        // part of the log this start writes: an HTTP answer alone could come
        // from another process that took the port first.
        let log_offset = std::fs::metadata(self.log_path())
            .map(|m| m.len())
            .unwrap_or(0);
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let bin = registry_bin();
        let mut child = tokio::process::Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!(
                        "the registry binary {bin:?} was not found: install it with `apt-get install docker-registry` (or set GEOREP_REGISTRY_BIN)"
                    )
                } else {
                    anyhow::anyhow!("starting {bin:?}: {e}")
                }
            })?;
        let url = format!("{}/v2/", self.url());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let tail: String = self
                    .log()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "registry on port {} exited ({status}) during start:\n{tail}",
                    self.port
                );
            }
            let log = std::fs::read(self.log_path()).unwrap_or_default();
            let fresh = String::from_utf8_lossy(log.get(log_offset as usize..).unwrap_or(&[]));
            if fresh.contains(&listening) {
                if self.options.tls.is_some() {
                    // Its certificate (and a client one it may require) is
                    // the caller's business: listening on our port is enough.
                    if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                        .await
                        .is_ok()
                    {
                        break;
                    }
                } else if let Ok(resp) = http.get(&url).send().await {
                    let s = resp.status().as_u16();
                    if s == 200 || s == 401 {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "registry on port {} did not answer within {}s (log: {})",
                    self.port,
                    START_TIMEOUT.as_secs(),
                    self.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Stops and starts again on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn().await
    }

    /// Stops, deletes the stored content, and starts again empty.
    pub async fn wipe(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let data = self.dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        std::fs::create_dir_all(&data)?;
        let _ = std::fs::remove_file(self.log_path());
        self.spawn().await
    }
}

/// The value of `key=` in a logfmt line, quoted or not.
fn logfmt_value(line: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => return Some(out),
                _ => out.push(c),
            }
        }
        None
    } else {
        Some(rest.split(' ').next().unwrap_or("").to_owned())
    }
}

fn registry_bin() -> String {
    std::env::var("GEOREP_REGISTRY_BIN").unwrap_or_else(|_| DEFAULT_REGISTRY_BIN.to_owned())
}

/// The working directory of a command that starts local registries: the
/// one given, or a new `<tmp>/<name>-<pid>` (then `true`: the caller removes
/// it at the end). Created, and made absolute.
pub fn work_dir(given: Option<&Path>, name: &str) -> anyhow::Result<(PathBuf, bool)> {
    let (dir, temporary) = match given {
        Some(d) => (d.to_owned(), false),
        None => (
            std::env::temp_dir().join(format!("{name}-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((std::path::absolute(&dir)?, temporary))
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}
