//! `georep health`: is the daemon up? A GET of its `/healthz`, for
//! container health checks and probes that cannot run curl.

use anyhow::Context as _;

use crate::cli::HealthArgs;
use crate::commands::ExitStatus;

pub async fn run(args: &HealthArgs) -> anyhow::Result<ExitStatus> {
    let timeout = super::wait::parse_duration("--timeout", &args.timeout)?;
    let base = match (&args.url, &args.config) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(path)) => {
            let config = crate::config::load_without_secrets(path)?;
            daemon_base(&config)
        }
        (None, None) => anyhow::bail!("give --config or --url"),
    };
    let url = format!("{base}/healthz");
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")?;
    match http.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => {
            println!("{url}: healthy");
            Ok(ExitStatus::Success)
        }
        Ok(resp) => {
            eprintln!("{url}: unhealthy ({})", resp.status());
            Ok(ExitStatus::Failure)
        }
        Err(e) => {
            eprintln!("{url}: no answer: {e}");
            Ok(ExitStatus::Failure)
        }
    }
}

/// The daemon's base URL on this machine, from its `listen` (checked by
/// the loader).
pub fn daemon_base(config: &crate::config::Config) -> String {
    format!("http://{}", local_address(&config.daemon.listen))
}

/// Where to reach a daemon listening on `listen`: a wildcard address
/// (`0.0.0.0`, `[::]`) is reached on loopback.
pub(crate) fn local_address(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        assert_eq!(local_address("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(local_address("[::]:9090"), "[::1]:9090");
        assert_eq!(local_address("127.0.0.1:9091"), "127.0.0.1:9091");
        assert_eq!(local_address("10.1.2.3:80"), "10.1.2.3:80");
    }
}
