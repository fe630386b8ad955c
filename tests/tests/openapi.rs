//! The OpenAPI 3.1 descriptions of the collector (`/openapi.json`) and the
//! dashboard (`/api/openapi.json`): they list exactly the routes the code
//! registers (a route added without its description fails here), an
//! independent validator (PyPI `openapi-spec-validator`) accepts them, and
//! a schema-driven fuzzer (PyPI `schemathesis`) run against the real
//! services finds no 5xx and no answer that departs from them (status,
//! content type, headers, body schema).
//!
//! The Python tools come from the virtualenv `deploy/local/test` makes
//! (`ENSEMBLE_API_VENV`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ensemble_core::{Campaign, StoreConfig};
use ensemble_tests::{
    campaign_file, clickhouse_url, create_topic, kafka_brokers, repo_root, unique,
    workspace_binary, Service,
};

const ANALYST: &str = "openapi-analyst-token-0123456789";
const IMPORT: &str = "openapi-import-token-0123456789";

/// (path, method) pairs a service's code registers: every `.route("…",
/// get(…)|post(…))` of its sources.
fn routes(files: &[&str]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(repo_root().join(f)).expect("source");
        // The service's code, not its unit tests' routers.
        let mut rest = text.split("#[cfg(test)]").next().unwrap_or_default();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + 7..];
            let Some(start) = rest.find('"') else { break };
            let after = &rest[start + 1..];
            let Some(end) = after.find('"') else { break };
            let path = after[..end].to_owned();
            let call = &after[end..after.find(')').map_or(after.len(), |p| p + 1)];
            for method in ["get", "post"] {
                if call.contains(&format!("{method}(")) {
                    out.insert((path.clone(), method.to_owned()));
                }
            }
        }
    }
    out
}

/// (path, method) pairs a description lists.
fn described(spec: &serde_json::Value) -> BTreeSet<(String, String)> {
    spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect()
}

fn spec(file: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join(file)).expect("spec"))
        .expect("JSON")
}

#[test]
fn the_descriptions_list_exactly_the_routes_the_code_registers() {
    for (spec_file, sources) in [
        (
            "ingest/assets/openapi.json",
            &["ingest/src/lib.rs", "core/src/service.rs"][..],
        ),
        (
            "dashboard/assets/openapi.json",
            &["dashboard/src/lib.rs", "core/src/service.rs"][..],
        ),
    ] {
        let code = routes(sources);
        let doc = described(&spec(spec_file));
        assert!(code.len() >= 8, "{spec_file}: {code:?}");
        let missing: Vec<_> = code.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&code).collect();
        assert!(
            missing.is_empty(),
            "{spec_file} does not describe {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "{spec_file} describes routes the code lacks: {extra:?}"
        );
    }
}

fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var("ENSEMBLE_API_VENV").expect(
        "ENSEMBLE_API_VENV is not set: run the tests with deploy/local/test, which creates the virtualenv with schemathesis and openapi-spec-validator",
    );
    PathBuf::from(venv).join("bin").join(name)
}

/// Runs a tool of the virtualenv; panics with its output unless it succeeds.
async fn run(tool: &str, args: &[String]) -> String {
    // schemathesis keeps a `.schemathesis/` state directory in the working
    // directory; a scratch one keeps it out of the checkout.
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(venv_bin(tool))
            .args(args)
            .current_dir(scratch.path())
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", "")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} within 10 min"))
    .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// Fuzzes the service at `base` from the description it serves at `path`.
async fn fuzz(base: &str, path: &str, token: &str) -> String {
    let args: Vec<String> = [
        "run",
        &format!("{base}{path}"),
        "--url",
        base,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        "--header",
        &format!("Authorization: Bearer {token}"),
        "--max-examples",
        "40",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-redirects",
        "0",
        "--workers",
        "2",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    run("schemathesis", &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_keep_to_their_descriptions_under_a_fuzzer() {
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let store = StoreConfig::new(clickhouse_url(), unique("it_openapi"));
    ensemble_tests::bench::dashboard::load(&store, &campaign, 1)
        .await
        .expect("simulated events");
    let brokers = kafka_brokers();
    let topic = unique("openapi");
    create_topic(&brokers, &topic, 3).await.expect("topic");
    let c = campaign_file().display().to_string();
    let collector = Service::start(
        &workspace_binary("ensemble-ingest"),
        &[
            "--campaign",
            &c,
            "--contact-secret",
            "openapi-contact-secret-0123456789",
            "--import-token",
            IMPORT,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &topic,
        ],
        &[],
    )
    .expect("collector");
    let dashboard = Service::start(
        &workspace_binary("ensemble-dashboard"),
        &[
            "--campaign",
            &c,
            "--analyst-tokens",
            ANALYST,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &topic,
            "--clickhouse-url",
            &store.url,
            "--clickhouse-database",
            &store.database,
        ],
        &[],
    )
    .expect("dashboard");
    collector
        .wait_ready("collector", Duration::from_secs(60))
        .await;
    dashboard
        .wait_ready("dashboard", Duration::from_secs(60))
        .await;

    // The served descriptions are the files, and a validator we did not
    // write accepts them as OpenAPI 3.1.
    let dir = tempfile::tempdir().expect("dir");
    let mut files = Vec::new();
    for (svc, path, file) in [
        (&collector, "/openapi.json", "ingest/assets/openapi.json"),
        (
            &dashboard,
            "/api/openapi.json",
            "dashboard/assets/openapi.json",
        ),
    ] {
        let (status, body) = svc.get(path).expect("description");
        assert_eq!(status, 200, "{path}");
        let served: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert!(
            served == spec(file),
            "{path} does not serve {file} as it is now: rebuild the binaries (cargo build --workspace)"
        );
        assert_eq!(served["openapi"], "3.1.0");
        let local = dir.path().join(file.replace('/', "_"));
        std::fs::write(&local, body).expect("write");
        files.push(local.display().to_string());
    }
    let out = run("openapi-spec-validator", &files).await;
    assert_eq!(out.matches(": OK").count(), 2, "{out}");

    let report = fuzz(&collector.base(), "/openapi.json", IMPORT).await;
    eprintln!(
        "collector: {}",
        report
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let report = fuzz(&dashboard.base(), "/api/openapi.json", ANALYST).await;
    eprintln!(
        "dashboard: {}",
        report
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .join(" | ")
    );
}
