//! One file per subcommand. Each returns its [`ExitStatus`], or an error
//! that `main` prints and turns into [`ExitStatus::Error`].

pub mod bench;
pub mod check_config;
pub mod demo;
pub mod health;
pub mod notify;
pub mod run;
pub mod status;
pub mod steer;
pub mod sync;
pub mod wait;

use std::process::ExitCode;

/// How a command ended, as the process's exit code (README, "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything went as asked, or the answer is yes.
    Success,
    /// 1: the command ran, but some work failed or the answer is no (the
    /// output says what).
    Failure,
    /// 2: could not start or was stopped by an error: bad usage,
    /// configuration or setup.
    Error,
    /// A child process's own exit code, passed on unchanged.
    External(u8),
}

impl ExitStatus {
    /// [`ExitStatus::Success`] if `ok`, else [`ExitStatus::Failure`].
    pub fn from_ok(ok: bool) -> ExitStatus {
        if ok {
            ExitStatus::Success
        } else {
            ExitStatus::Failure
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(match status {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Error => 2,
            ExitStatus::External(code) => code,
        })
    }
}

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
