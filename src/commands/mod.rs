//! One file per subcommand. Each returns the process exit code, or an error
//! that `main` prints and turns into exit code 2.

pub mod bench;
pub mod check_config;
pub mod demo;
pub mod health;
pub mod run;
pub mod status;
pub mod sync;
mod sync_progress;
pub mod wait;

use std::process::ExitCode;

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// The command ran, but some work failed (the output says what).
pub const EXIT_WORK_FAILED: u8 = 1;
/// Bad configuration or usage, or an error that stopped the command.
pub const EXIT_ERROR: u8 = 2;

/// Loads the config at `path` and makes sure its state directory exists.
pub fn load_with_state_dir(path: &std::path::Path) -> anyhow::Result<crate::config::Config> {
    use anyhow::Context;
    let config = crate::config::load(path)?;
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "creating state_dir {} (from {})",
            config.state_dir.display(),
            config.path.display()
        )
    })?;
    Ok(config)
}

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
