//! The daemon under test, and a client for its API: the real `georep run`
//! as a child process (for kill -9, signals and exit codes), or the same
//! daemon built and run in this process on a listener the test bound
//! first (no port is picked and hoped to stay free), as mini-redis's tests
//! run their server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running daemon: a child process (killed when dropped) or a thread of
/// this process (stopped when dropped).
pub struct DaemonProc {
    pub port: u16,
    run: Run,
}

enum Run {
    Process {
        log: PathBuf,
        child: Option<tokio::process::Child>,
    },
    InProcess {
        log: Arc<Mutex<Vec<u8>>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    },
}

/// A loopback listener on a port of the system's choosing, and its port:
/// bound before the registries are told where to notify, held until the
/// daemon serves on it.
pub fn bound() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = l.local_addr().expect("bound").port();
    (l, port)
}

/// Port `port` bound again (for a daemon started again where the
/// registries already send their notifications); retried briefly while
/// the previous listener's socket is let go.
pub fn rebind(port: u16) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("port {port} not free yet ({e}); retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("port {port} stays taken: {e}"),
        }
    }
}

/// The in-process daemon's log lines go here.
#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl DaemonProc {
    /// Starts `georep run --config config` and waits for `/healthz`.
    pub async fn start(config: &Path, port: u16, envs: &[(&str, &str)]) -> DaemonProc {
        let log = config.with_file_name(format!("daemon-{port}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_georep"));
        cmd.args(["run", "--config", config.to_str().unwrap()])
            .env("GEOREP_LOG", "georep=debug,warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("georep run starts");
        let mut d = DaemonProc {
            port,
            run: Run::Process {
                log,
                child: Some(child),
            },
        };
        d.wait_healthy().await;
        d
    }

    /// Builds and runs the daemon of `config` in this process, serving on
    /// `listener` (see [`bound`]), on a thread and runtime of its own with
    /// its own log (`georep=debug`); `envs` are what the config's `*_env`
    /// keys read, besides the process's.
    pub async fn in_process(
        config: &Path,
        listener: std::net::TcpListener,
        envs: &[(&str, &str)],
    ) -> DaemonProc {
        let port = listener.local_addr().unwrap().port();
        let path = config.to_owned();
        let text = std::fs::read_to_string(config).unwrap();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sink = LogSink(log.clone());
        let thread = std::thread::spawn(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("georep=debug,warn"))
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .with_target(false)
                .finish();
            let dispatch = tracing::Dispatch::new(subscriber);
            // The daemon's own runtime, as `georep run` has one: every
            // thread of it (workers, blocking pool) and this one log to this
            // daemon's log alone, apart from other tests' daemons.
            let _log = tracing::dispatcher::set_default(&dispatch);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || {
                    // For the thread's whole life: it serves this runtime only.
                    std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                })
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let env = |name: &str| {
                    envs.iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .or_else(|| std::env::var(name).ok())
                };
                let config =
                    georep::config::load_str(&path, &text, &env).map_err(|e| format!("{e}"))?;
                std::fs::create_dir_all(&config.state_dir).map_err(|e| e.to_string())?;
                listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                let listener =
                    tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                let daemon = georep::daemon::Daemon::build_on(config, listener)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                daemon
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
        });
        let mut d = DaemonProc {
            port,
            run: Run::InProcess {
                log,
                stop: Some(stop),
                thread: Some(thread),
            },
        };
        d.wait_healthy().await;
        d
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(self.url("/healthz")).await
                && r.status() == 200
            {
                return;
            }
            let ended = match &mut self.run {
                Run::Process { child, .. } => child
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .unwrap()
                    .map(|s| s.to_string()),
                Run::InProcess { thread, .. } => {
                    if thread.as_ref().is_some_and(|t| t.is_finished()) {
                        let outcome = thread.take().unwrap().join();
                        Some(format!("{outcome:?}"))
                    } else {
                        None
                    }
                }
            };
            if let Some(how) = ended {
                panic!(
                    "the daemon ended during start ({how}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        match &self.run {
            Run::Process { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
            Run::InProcess { log, .. } => {
                String::from_utf8_lossy(&log.lock().unwrap()).into_owned()
            }
        }
    }

    fn child(&mut self) -> &mut Option<tokio::process::Child> {
        match &mut self.run {
            Run::Process { child, .. } => child,
            Run::InProcess { .. } => panic!("an in-process daemon has no process of its own"),
        }
    }

    pub fn pid(&mut self) -> u32 {
        self.child().as_ref().and_then(|c| c.id()).expect("running")
    }

    /// SIGKILL, at once.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM (or, in process, the same shutdown signal), then waits for
    /// the end; returns the exit code (0 for an in-process daemon that
    /// drained without error).
    pub async fn terminate(&mut self, within: Duration) -> Option<i32> {
        if let Run::InProcess { stop, thread, .. } = &mut self.run {
            let _ = stop.take()?.send(());
            let thread = thread.take()?;
            let deadline = Instant::now() + within;
            while !thread.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "daemon stops within the grace period"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return match thread.join() {
                Ok(Ok(())) => Some(0),
                Ok(Err(e)) => {
                    eprintln!("the daemon ended with an error: {e}");
                    Some(2)
                }
                Err(_) => None,
            };
        }
        let pid = self.pid();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        let mut c = self.child().take()?;
        let status = tokio::time::timeout(within, c.wait())
            .await
            .expect("daemon exits within the grace period")
            .expect("wait");
        status.code()
    }

    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(self.url("/v1/status"))
            .await
            .expect("status answers")
            .json()
            .await
            .expect("status is JSON")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap()
    }

    /// Posts a notification body; returns status and body text.
    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
        authorization: Option<&str>,
    ) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .post(self.url("/v1/notifications"))
            .header("content-type", content_type)
            .body(body);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("webhook answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

/// A metric's value from the text exposition (first series that matches).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One push event as registry 2.8 sends it.
pub fn push_event(
    id: &str,
    timestamp: &str,
    repository: &str,
    tag: &str,
    digest: &str,
    size: usize,
) -> String {
    format!(
        r#"{{"events":[{{"id":"{id}","timestamp":"{timestamp}","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":{size},"digest":"{digest}","length":{size},"repository":"{repository}","url":"http://x/v2/{repository}/manifests/{digest}","tag":"{tag}"}},"request":{{"id":"r","addr":"127.0.0.1","host":"x","method":"PUT","useragent":"test"}},"actor":{{}},"source":{{"addr":"x","instanceID":"i"}}}}]}}"#
    )
}

pub const EVENTS: &str = "application/vnd.docker.distribution.events.v1+json";

impl Drop for DaemonProc {
    fn drop(&mut self) {
        // A failing test shows what the daemon said.
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log (tail, the probe's lines left out):\n{}",
                super::tail(
                    &self
                        .log_text()
                        .lines()
                        .filter(|l| !l.contains("task=\"probe\""))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    80
                )
            );
        }
        // An in-process daemon is told to stop; its thread ends by itself
        // (it is not joined here: a drop must not wait out the grace).
        if let Run::InProcess { stop, .. } = &mut self.run
            && let Some(stop) = stop.take()
        {
            let _ = stop.send(());
        }
    }
}

/// Outgoing notifications received by a test endpoint.
pub async fn notification_sink() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    notification_sink_on(l)
}

/// A notification sink on `l`.
pub fn notification_sink_on(
    l: tokio::net::TcpListener,
) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |axum::Json(v): axum::Json<serde_json::Value>| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(v);
                    "ok"
                }
            }
        }),
    );
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}
