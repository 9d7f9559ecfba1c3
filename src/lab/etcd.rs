//! Local etcd processes on loopback (Debian's `etcd-server`, 3.4): one
//! node, or a cluster of several, each in its own data directory, killed
//! when dropped. For the cluster tests and benchmark.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::localreg::free_port;

/// The etcd binary (`GEOREP_ETCD_BIN` overrides it).
fn etcd_bin() -> String {
    std::env::var("GEOREP_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

/// One etcd node.
pub struct EtcdNode {
    pub name: String,
    dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// `name=peer-url,…` of every node, as the cluster was formed.
    initial_cluster: String,
    child: Option<tokio::process::Child>,
}

impl EtcdNode {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Starts the node (again, on its data when it ran before); does not
    /// wait for it.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .context("etcd log")?;
        let client = self.endpoint();
        let peer = self.peer();
        let child = tokio::process::Command::new(etcd_bin())
            .args([
                "--name",
                &self.name,
                "--data-dir",
                &self.dir.join("data").to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                "new",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (Debian package etcd-server)", etcd_bin()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the node (as a crash would).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Waits until the node answers `/health` as healthy.
    pub async fn healthy(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let url = format!("{}/health", self.endpoint());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
                && r.text().await.is_ok_and(|t| t.contains("true"))
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd {} did not become healthy within {} s (log: {})",
                self.name,
                limit.as_secs(),
                self.dir.join("etcd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An etcd cluster of one or more nodes.
pub struct LocalEtcd {
    pub nodes: Vec<EtcdNode>,
}

impl LocalEtcd {
    /// Starts `n` nodes under `dir` and waits until they serve.
    pub async fn start(dir: &Path, n: usize) -> anyhow::Result<LocalEtcd> {
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("etcd{i}");
            let node_dir = dir.join(&name);
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(EtcdNode {
                name,
                dir: node_dir,
                client_port: free_port()?,
                peer_port: free_port()?,
                initial_cluster: String::new(),
                child: None,
            });
        }
        let initial = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer()))
            .collect::<Vec<_>>()
            .join(",");
        for n in &mut nodes {
            n.initial_cluster = initial.clone();
            n.spawn()?;
        }
        for n in &nodes {
            n.healthy(Duration::from_secs(30)).await?;
        }
        Ok(LocalEtcd { nodes })
    }

    /// Every node's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(EtcdNode::endpoint).collect()
    }
}
