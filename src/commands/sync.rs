//! `georep sync`: one replication pass, a report, an exit code.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::SyncArgs;
use crate::commands::{EXIT_OK, EXIT_WORK_FAILED, exit};
use crate::config;
use crate::engine::Engine;

pub async fn run(args: &SyncArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(&args.config)?;
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "creating state_dir {} (from {})",
            config.state_dir.display(),
            config.path.display()
        )
    })?;
    let engine = Engine::new(&config);
    let report = engine.sync().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(exit(if report.ok() {
        EXIT_OK
    } else {
        EXIT_WORK_FAILED
    }))
}
