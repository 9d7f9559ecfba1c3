//! The real `georep run` as a child process, and a client for its API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A running daemon, killed when dropped.
pub struct DaemonProc {
    pub port: u16,
    pub log: PathBuf,
    child: Option<tokio::process::Child>,
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
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(d.url("/healthz")).await
                && r.status() == 200
            {
                break;
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "georep run exited during start ({status}):\n{}",
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// SIGKILL, at once.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub async fn terminate(&mut self, within: Duration) -> Option<i32> {
        let pid = self.pid();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        let mut c = self.child.take()?;
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
                "--- daemon log (tail):\n{}",
                super::tail(&self.log_text(), 60)
            );
        }
    }
}
