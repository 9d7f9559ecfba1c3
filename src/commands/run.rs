//! `georep run`: build the daemon (a bad config, an unusable store or a
//! taken port fail here, before anything runs, with exit code 2), then run
//! it until SIGTERM or SIGINT and drain.

use crate::cli::RunArgs;
use crate::commands::ExitStatus;
use crate::daemon::Daemon;

pub async fn run(args: &RunArgs) -> anyhow::Result<ExitStatus> {
    let config = super::load_with_state_dir(&args.config)?;
    // Handlers first: a SIGTERM as soon as the port answers must drain,
    // not kill.
    let stop = crate::shutdown::os_signal();
    let daemon = Daemon::build(config).await?;
    daemon.run(stop).await?;
    Ok(ExitStatus::Success)
}
