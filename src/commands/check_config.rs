//! `georep check-config`: load and validate a config, print a summary.

use crate::cli::CheckConfigArgs;
use crate::commands::ExitStatus;
use crate::config;

pub fn run(args: &CheckConfigArgs) -> anyhow::Result<ExitStatus> {
    let c = config::load(&args.config)?;
    println!(
        "{}: ok — primary {} ({}), {} region{}: {}",
        args.config.display(),
        c.primary.name,
        c.primary.display_url(),
        c.regions.len(),
        if c.regions.len() == 1 { "" } else { "s" },
        c.regions
            .iter()
            .map(|r| format!("{} ({})", r.name, r.display_url()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitStatus::Success)
}
