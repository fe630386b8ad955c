//! Starting the collector in-process for integration tests.

use clap::Parser;
use ensemble_core::Shutdown;
use ensemble_ingest::{serve_on, Collector, Config};

/// Parses `args` as the binary would, serves the collector on a free
/// loopback port, and returns its base URL and the token that stops it.
#[allow(dead_code)] // not every test binary uses it
pub async fn serve(args: &[&str]) -> (String, Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    serve_on_listener(listener, args).await
}

/// As [`serve`], on a listener the test bound (its address known beforehand).
#[allow(dead_code)] // not every test binary uses it
pub async fn serve_on_listener(
    listener: tokio::net::TcpListener,
    args: &[&str],
) -> (String, Shutdown) {
    let settings =
        Config::try_parse_from(std::iter::once("ensemble-ingest").chain(args.iter().copied()))
            .expect("flags")
            .validate()
            .expect("settings");
    let collector = Collector::new(&settings).expect("collector");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    tokio::spawn(serve_on(
        listener,
        collector,
        settings.kafka.clone(),
        shutdown.clone(),
    ));
    (base, shutdown)
}
