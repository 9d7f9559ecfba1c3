//! One file per subcommand. Each returns the process exit code, or an error
//! that `main` prints and turns into exit code 2.

pub mod check_config;
pub mod demo;
pub mod status;
pub mod sync;

use std::process::ExitCode;

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// The command ran, but some work failed (the output says what).
pub const EXIT_WORK_FAILED: u8 = 1;
/// Bad configuration or usage, or an error that stopped the command.
pub const EXIT_ERROR: u8 = 2;

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
