//! Background readiness probes: keep a [`Readiness`] component up to date by
//! asking a dependency every few seconds until shutdown.

use std::future::Future;
use std::time::Duration;

use crate::service::Readiness;
use crate::shutdown::Shutdown;

/// Runs `check` now and then every `every`, recording its answer as `component`.
pub fn spawn<F, Fut>(
    readiness: Readiness,
    component: &'static str,
    every: Duration,
    shutdown: Shutdown,
    check: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    readiness.set(component, false);
    tokio::spawn(async move {
        loop {
            let ok = check().await;
            readiness.set(component, ok);
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}
