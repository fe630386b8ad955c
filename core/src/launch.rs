//! What every `main.rs` does after parsing flags: refuse bad settings with
//! the setting named (exit 2), start the runtime, trip shutdown on SIGINT /
//! SIGTERM, run the service, report how it ended.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::shutdown::Shutdown;

/// Runs `service` with validated settings; `binary` prefixes the messages.
pub fn launch<S, F, Fut, E>(binary: &str, settings: Result<S, ConfigError>, service: F) -> ExitCode
where
    F: FnOnce(S, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{binary}: refusing to start: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        match service(settings, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{binary} stopped on error");
                eprintln!("{binary}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
