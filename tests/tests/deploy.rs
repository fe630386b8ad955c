//! `deploy/compose.yaml` and the Prometheus files, checked against what the
//! binaries actually read (no Docker engine runs here). For each ensemble
//! service, the compose environment (with the Dockerfile's ENV and the
//! campaign volume) is turned into the flags those variables stand for and
//! parsed and validated by the service's own `Config`, so a renamed or
//! missing variable, a bad address or an unreadable campaign fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml::Value;

fn repo() -> PathBuf {
    ensemble_tests::repo_root()
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v.apply_merge().expect("merge keys");
    v
}

fn compose() -> Value {
    yaml(&repo().join("deploy/compose.yaml"))
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"]
        .get(name)
        .unwrap_or_else(|| panic!("compose.yaml has no service `{name}`"))
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `${VAR:?msg}` / `${VAR:-default}` / `${VAR}` with `vars` (a test's values
/// for what the operator exports).
fn interpolate(s: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("closing brace") + i;
        let expr = &rest[i + 2..end];
        let (name, fallback) = match expr.find([':', '-', '?']) {
            Some(k) => {
                let op = expr[k..].trim_start_matches(':');
                let fallback = op.strip_prefix('-').map(str::to_owned);
                (&expr[..k], fallback)
            }
            None => (expr, None),
        };
        let value = vars
            .get(name)
            .map(|v| (*v).to_owned())
            .or(fallback)
            .unwrap_or_else(|| panic!("compose needs `{name}` set and the test gives none"));
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// What the operator exports before `docker compose up`.
fn operator_env() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            "ENSEMBLE_CONTACT_SECRET",
            "compose-contact-secret-0123456789",
        ),
        ("ENSEMBLE_IMPORT_TOKEN", "compose-import-token-0123456789"),
        (
            "ENSEMBLE_ANALYST_TOKENS",
            "compose-analyst-token-0123456789",
        ),
        (
            "ENSEMBLE_ANALYST_SQL_PASSWORD",
            "compose-analyst-sql-password",
        ),
    ])
}

/// The environment a service's container sees: the Dockerfile's ENV, then
/// the compose `environment`.
fn container_env(svc: &Value) -> BTreeMap<String, String> {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let mut env = BTreeMap::new();
    let runtime = dockerfile.split("\nFROM ").last().expect("a runtime stage");
    let joined = runtime.replace("\\\n", " ");
    for line in joined.lines().filter_map(|l| l.trim().strip_prefix("ENV ")) {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV k=v");
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    let vars = operator_env();
    for (k, v) in svc["environment"].as_mapping().expect("environment map") {
        let k = k.as_str().expect("key").to_owned();
        let v = match v {
            Value::String(s) => interpolate(s, &vars),
            other => panic!("{k}: quote environment values in compose.yaml ({other:?})"),
        };
        env.insert(k, v);
    }
    env
}

/// Container path → host path, from the service's bind mounts.
fn host_path(svc: &Value, container: &str) -> Option<PathBuf> {
    str_list(&svc["volumes"]).iter().find_map(|m| {
        let mut parts = m.split(':');
        let (host, inside) = (parts.next()?, parts.next()?);
        (inside == container && host.starts_with("./")).then(|| repo().join("deploy").join(host))
    })
}

/// The flags an environment stands for, by the binary's own clap definition.
/// Panics on an ENSEMBLE_* variable the binary does not read.
fn flags_from_env(
    cmd: &clap::Command,
    bin: &str,
    svc: &Value,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut by_env = BTreeMap::new();
    let mut all = vec![cmd.clone()];
    all.extend(cmd.get_subcommands().cloned());
    for c in &all {
        for a in c.get_arguments() {
            if let (Some(e), Some(long)) = (a.get_env(), a.get_long()) {
                let takes_value = !matches!(
                    a.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                );
                by_env.insert(
                    e.to_string_lossy().into_owned(),
                    (long.to_owned(), takes_value),
                );
            }
        }
    }
    let mut flags = Vec::new();
    for (k, v) in env {
        if !k.starts_with("ENSEMBLE_") {
            continue;
        }
        let (long, takes_value) = by_env.get(k).unwrap_or_else(|| {
            panic!("{bin} reads no `{k}` (set in compose.yaml or the Dockerfile)")
        });
        let v = if long == "campaign" {
            host_path(svc, v)
                .unwrap_or_else(|| panic!("{bin}: campaign {v} is not mounted from the repository"))
                .display()
                .to_string()
        } else {
            v.clone()
        };
        if *takes_value {
            flags.push(format!("--{long}={v}"));
        } else if v == "true" {
            flags.push(format!("--{long}"));
        } else {
            assert_eq!(v, "false", "{k}: a flag is \"true\" or \"false\"");
        }
    }
    flags
}

fn args_for(svc: &Value, cmd: &clap::Command, bin: &str) -> Vec<String> {
    let command = str_list(&svc["command"]);
    assert_eq!(command.first().map(String::as_str), Some(bin), "{svc:?}");
    let env = container_env(svc);
    let mut args = command;
    args.extend(flags_from_env(cmd, bin, svc, &env));
    args
}

fn listen_port(env: &BTreeMap<String, String>, var: &str) -> u16 {
    let listen = env.get(var).unwrap_or_else(|| panic!("{var} is set"));
    assert!(
        listen.starts_with("0.0.0.0:"),
        "{var}={listen}: a container must listen on all interfaces"
    );
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn container_ports(svc: &Value) -> Vec<u16> {
    let mut ports: Vec<u16> = str_list(&svc["ports"])
        .iter()
        .filter_map(|p| p.rsplit(':').next()?.parse().ok())
        .collect();
    ports.extend(
        str_list(&svc["expose"])
            .iter()
            .filter_map(|p| p.parse::<u16>().ok()),
    );
    ports
}

#[test]
fn every_service_the_pipeline_needs_is_there() {
    let c = compose();
    for name in [
        "kafka",
        "kafka-init",
        "clickhouse",
        "migrate",
        "ingest",
        "processor",
        "dashboard",
        "prometheus",
        "alertmanager",
    ] {
        service(&c, name);
    }
    // KRaft: no ZooKeeper anywhere.
    let kafka = &service(&c, "kafka")["environment"];
    assert!(kafka["KAFKA_PROCESS_ROLES"]
        .as_str()
        .is_some_and(|r| r.contains("controller")));
    assert!(c["services"].get("zookeeper").is_none());
    // The three services are built from the multi-stage Dockerfile, which
    // builds and copies every binary a command names.
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.matches("\nFROM ").count() >= 1
            && dockerfile.starts_with("# syntax")
            && dockerfile.contains(" AS build")
    );
    for name in ["migrate", "ingest", "processor", "dashboard"] {
        let svc = service(&c, name);
        assert_eq!(
            svc["build"]["dockerfile"].as_str(),
            Some("deploy/Dockerfile")
        );
        assert_eq!(svc["build"]["context"].as_str(), Some(".."));
        let bin = str_list(&svc["command"])[0].clone();
        assert!(
            dockerfile.contains(&format!("-p {bin}")),
            "Dockerfile builds {bin}"
        );
        assert!(
            dockerfile.contains(&format!("/out/{bin}")),
            "Dockerfile copies {bin}"
        );
    }
}

#[test]
fn the_services_accept_their_compose_configuration() {
    let c = compose();
    let ingest = args_for(
        service(&c, "ingest"),
        &ensemble_ingest::Config::command(),
        "ensemble-ingest",
    );
    <ensemble_ingest::Config as clap::Parser>::try_parse_from(&ingest)
        .unwrap_or_else(|e| panic!("{ingest:?}: {e}"))
        .validate()
        .unwrap_or_else(|e| panic!("ingest: {e}"));

    for name in ["processor", "migrate"] {
        let svc = service(&c, name);
        let args = args_for(
            svc,
            &ensemble_processor::Config::command(),
            "ensemble-processor",
        );
        let cfg = <ensemble_processor::Config as clap::Parser>::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(str_list(&service(&c, "migrate")["command"])[1], "migrate");

    let dash = args_for(
        service(&c, "dashboard"),
        &ensemble_dashboard::Config::command(),
        "ensemble-dashboard",
    );
    <ensemble_dashboard::Config as clap::Parser>::try_parse_from(&dash)
        .unwrap_or_else(|e| panic!("{dash:?}: {e}"))
        .validate()
        .unwrap_or_else(|e| panic!("dashboard: {e}"));
}

#[test]
fn addresses_topics_and_credentials_agree_across_services() {
    let c = compose();
    let env = |name: &str| container_env(service(&c, name));
    let kafka = &service(&c, "kafka")["environment"];
    let advertised = kafka["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .expect("advertised");
    let broker = advertised.trim_start_matches("PLAINTEXT://");
    let init = str_list(&service(&c, "kafka-init")["command"]).join(" ");
    let ch = &service(&c, "clickhouse")["environment"];
    let ch_user = ch["CLICKHOUSE_USER"].as_str().expect("user");
    let ch_password = interpolate(
        ch["CLICKHOUSE_PASSWORD"].as_str().expect("password"),
        &operator_env(),
    );
    for name in ["ingest", "processor", "dashboard"] {
        let e = env(name);
        assert_eq!(
            e["ENSEMBLE_KAFKA_BROKERS"], broker,
            "{name} talks to the advertised listener"
        );
        let topic = &e["ENSEMBLE_KAFKA_TOPIC"];
        assert!(
            init.contains(&format!("--topic {topic} --partitions 3")),
            "{name}: {topic} is created with 3 partitions"
        );
    }
    let dlq = &env("processor")["ENSEMBLE_KAFKA_DLQ_TOPIC"];
    assert!(
        init.contains(&format!("--topic {dlq} ")),
        "the dead-letter topic is created"
    );
    assert_eq!(
        env("processor")["ENSEMBLE_PROCESSOR_GROUP"],
        env("dashboard")["ENSEMBLE_PROCESSOR_GROUP"],
        "the dashboard reads the processor's group for its freshness figure"
    );
    // The dashboard reads as the read-only user of the file mounted into
    // the server's users.d, with the password the server is given.
    let dash_password = interpolate(
        ch["ENSEMBLE_DASHBOARD_CLICKHOUSE_PASSWORD"]
            .as_str()
            .expect("dashboard password"),
        &operator_env(),
    );
    let users_file = host_path(
        service(&c, "clickhouse"),
        "/etc/clickhouse-server/users.d/ensemble-dashboard.xml",
    )
    .expect("the dashboard's user is mounted");
    let users = std::fs::read_to_string(&users_file).expect("users file");
    assert!(users.contains("<ensemble_dashboard>") && users.contains("<readonly>2</readonly>"));
    assert!(users.contains("from_env=\"ENSEMBLE_DASHBOARD_CLICKHOUSE_PASSWORD\""));
    // The analysts' SQL user: mounted, read-only for good, the analysts'
    // database only, its password given to the server by the operator.
    let analyst_file = host_path(
        service(&c, "clickhouse"),
        "/etc/clickhouse-server/users.d/ensemble-analyst.xml",
    )
    .expect("the analysts' user is mounted");
    let analyst = std::fs::read_to_string(&analyst_file).expect("analyst users file");
    assert!(analyst.contains("<ensemble_analyst>") && analyst.contains("<readonly>1</readonly>"));
    assert!(analyst.contains("<database>ensemble_sql</database>"));
    assert!(analyst.contains("from_env=\"ENSEMBLE_ANALYST_SQL_PASSWORD\""));
    assert_eq!(
        interpolate(
            ch["ENSEMBLE_ANALYST_SQL_PASSWORD"]
                .as_str()
                .expect("analyst password"),
            &operator_env()
        ),
        "compose-analyst-sql-password"
    );
    for name in ["migrate", "processor", "dashboard"] {
        let e = env(name);
        let url = url::Url::parse(&e["ENSEMBLE_CLICKHOUSE_URL"]).expect("url");
        assert_eq!(url.host_str(), Some("clickhouse"), "{name}");
        assert_eq!(url.port(), Some(8123), "{name}");
        let (user, password) = if name == "dashboard" {
            ("ensemble_dashboard", dash_password.as_str())
        } else {
            (ch_user, ch_password.as_str())
        };
        assert_eq!(e["ENSEMBLE_CLICKHOUSE_USER"], user, "{name}");
        assert_eq!(e["ENSEMBLE_CLICKHOUSE_PASSWORD"], password, "{name}");
        assert_eq!(
            e["ENSEMBLE_CLICKHOUSE_DATABASE"],
            env("migrate")["ENSEMBLE_CLICKHOUSE_DATABASE"],
            "{name}"
        );
    }
    // The processor waits for the schema and the topics; the collector for the topics.
    assert_eq!(
        service(&c, "processor")["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert_eq!(
        service(&c, "ingest")["depends_on"]["kafka-init"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
}

#[test]
fn prometheus_scrapes_each_service_on_the_port_it_listens_on() {
    let c = compose();
    let prom = yaml(&repo().join("deploy/prometheus/prometheus.compose.yml"));
    let targets: BTreeMap<String, String> = prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|j| {
            (
                j["job_name"].as_str().expect("job").to_owned(),
                j["static_configs"][0]["targets"][0]
                    .as_str()
                    .expect("target")
                    .to_owned(),
            )
        })
        .collect();
    // The collector and the dashboard serve their ops routes apart from
    // the public port, which publishes no /metrics.
    for (name, var, public) in [
        (
            "ingest",
            "ENSEMBLE_INGEST_OPS_LISTEN",
            Some("ENSEMBLE_INGEST_LISTEN"),
        ),
        ("processor", "ENSEMBLE_PROCESSOR_LISTEN", None),
        (
            "dashboard",
            "ENSEMBLE_DASHBOARD_OPS_LISTEN",
            Some("ENSEMBLE_DASHBOARD_LISTEN"),
        ),
    ] {
        let svc = service(&c, name);
        let port = listen_port(&container_env(svc), var);
        assert!(
            container_ports(svc).contains(&port),
            "{name} publishes or exposes {port}"
        );
        let published = str_list(&svc["ports"]);
        assert!(
            !published.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "{name}: the ops port {port} is not published"
        );
        if let Some(public) = public {
            assert_ne!(listen_port(&container_env(svc), public), port);
        }
        assert_eq!(
            targets[&format!("ensemble-{name}")],
            format!("{name}:{port}")
        );
    }
    // The alert rules are mounted where the config says, and alerts go to the alertmanager service.
    let p = service(&c, "prometheus");
    let mounts = str_list(&p["volumes"]);
    assert!(mounts.contains(&"./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro".to_owned()));
    assert!(mounts.iter().any(
        |m| m.starts_with("./prometheus/prometheus.compose.yml:/etc/prometheus/prometheus.yml")
    ));
    assert_eq!(str_list(&prom["rule_files"]), ["alerts.yml"]);
    let am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .expect("alertmanager");
    let (host, port) = am.split_once(':').expect("host:port");
    assert!(container_ports(service(&c, host)).contains(&port.parse().expect("port")));
    for m in str_list(&service(&c, "alertmanager")["volumes"])
        .iter()
        .chain(&mounts)
    {
        let host = m.split(':').next().expect("host path");
        if host.starts_with("./") {
            assert!(repo().join("deploy").join(host).exists(), "{host} exists");
        }
    }
    // The local config scrapes the same jobs.
    let local = yaml(&repo().join("deploy/prometheus/prometheus.yml"));
    let mut jobs: Vec<&str> = local["scrape_configs"]
        .as_sequence()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    jobs.sort_unstable();
    assert_eq!(jobs, targets.keys().map(String::as_str).collect::<Vec<_>>());
}

/// The `ensemble_*` metric names in `text` that no service registers.
fn unexported_metrics(text: &str) -> (usize, Vec<String>) {
    let mut sources = String::new();
    for f in [
        "ingest/src/metrics.rs",
        "processor/src/metrics.rs",
        "dashboard/src/watch.rs",
        "dashboard/src/lib.rs",
    ] {
        sources.push_str(&std::fs::read_to_string(repo().join(f)).expect("source"));
    }
    let mut names: Vec<&str> = text
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .filter(|w| w.starts_with("ensemble_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    let missing = names
        .iter()
        .filter(|n| !sources.contains(&format!("\"{}\"", n.trim_end_matches("_bucket"))))
        .map(|n| (*n).to_owned())
        .collect();
    (names.len(), missing)
}

#[test]
fn the_alert_rules_read_metrics_the_services_export() {
    // Every ensemble_* name in the rules is one a service registers.
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).expect("rules");
    let (n, missing) = unexported_metrics(&rules);
    assert!(n >= 8, "{n} metrics");
    assert!(
        missing.is_empty(),
        "not exported by any service: {missing:?}"
    );
}

#[test]
fn every_alert_links_its_row_of_the_runbook() {
    let rules = yaml(&repo().join("deploy/prometheus/alerts.yml"));
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).expect("runbook");
    let mut n = 0;
    for rule in rules["groups"][0]["rules"].as_sequence().expect("rules") {
        let name = rule["alert"].as_str().expect("alert name");
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = format!("alert-{}", name.to_lowercase());
        assert!(
            url.ends_with(&format!("/docs/runbook.md#{anchor}")),
            "{name}: {url}"
        );
        assert!(
            runbook.contains(&format!("<a id=\"{anchor}\"></a>`{name}`")),
            "docs/runbook.md has no row for {name}"
        );
        n += 1;
    }
    assert!(n >= 13, "{n} alerts");
}

#[test]
fn the_grafana_dashboard_reads_metrics_the_services_export() {
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/ensemble.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = String::new();
    for p in panels {
        let title = p["title"].as_str().expect("title");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            assert!(e.contains("ensemble_"), "{title}: {e}");
            exprs.push_str(e);
            exprs.push('\n');
        }
    }
    // What ops asked for, each on a panel.
    for metric in [
        "ensemble_ingest_requests_total",
        "ensemble_ingest_produce_duration_seconds_bucket",
        "ensemble_processor_rows_inserted_total",
        "ensemble_processor_consumer_lag_messages",
        "ensemble_processor_insert_duration_seconds_bucket",
        "ensemble_processor_insert_failures_total",
        "ensemble_processor_messages_dead_lettered_total",
        "ensemble_processor_event_delay_seconds_bucket",
        "ensemble_dashboard_request_duration_seconds_bucket",
    ] {
        assert!(exprs.contains(metric), "no panel shows {metric}");
    }
    let (n, missing) = unexported_metrics(&exprs);
    assert!(n >= 15, "{n} metrics");
    assert!(
        missing.is_empty(),
        "not exported by any service: {missing:?}"
    );
}

/// The shipped Alertmanager configuration routes a firing alert, with its
/// runbook link, to its receiver: here a local webhook standing for the
/// team's chat bridge (the file's URL swapped for it, and group_wait
/// shortened from 30 s).
#[tokio::test]
async fn a_firing_alert_reaches_the_receiver() {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sink_url = format!(
        "http://{}/ensemble-alerts",
        sink.local_addr().expect("addr")
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<serde_json::Value>(8);
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/ensemble-alerts",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(v).await;
                    "ok"
                }
            }),
        );
        axum::serve(sink, app).await.expect("sink");
    });
    let shipped = std::fs::read_to_string(repo().join("deploy/prometheus/alertmanager.yml"))
        .expect("alertmanager.yml");
    assert!(shipped.contains("url: http://127.0.0.1:9095/ensemble-alerts"));
    let config = shipped
        .replace("http://127.0.0.1:9095/ensemble-alerts", &sink_url)
        .replace("group_wait: 30s", "group_wait: 1s");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("alertmanager.yml"), config).expect("write");
    let port = ensemble_tests::free_port();
    let _am = KillOnDrop(
        std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian's prometheus-alertmanager, installed by deploy/local/test)"),
    );
    ensemble_tests::poll_until(
        "Alertmanager to be ready",
        std::time::Duration::from_secs(30),
        || async { ensemble_tests::http_get(port, "/-/ready").filter(|(c, _)| *c == 200) },
    )
    .await;
    // The alert as Prometheus sends it: the rule's labels and annotations.
    let rules = yaml(&repo().join("deploy/prometheus/alerts.yml"));
    let rule = rules["groups"][0]["rules"]
        .as_sequence()
        .and_then(|r| {
            r.iter()
                .find(|r| r["alert"].as_str() == Some("EnsembleServiceDown"))
        })
        .expect("rule");
    let runbook = rule["annotations"]["runbook_url"]
        .as_str()
        .expect("runbook")
        .to_owned();
    let alert = serde_json::json!([{
        "labels": {"alertname": "EnsembleServiceDown", "severity": "page", "job": "ensemble-ingest", "instance": "ingest:8080"},
        "annotations": {"summary": "ensemble-ingest on ingest:8080 does not answer /metrics", "runbook_url": runbook},
    }]);
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .expect("post alert");
    assert!(r.status().is_success(), "{}", r.status());
    let got = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .expect("the webhook within 60 s")
        .expect("payload");
    assert_eq!(got["receiver"], "ops", "{got}");
    assert_eq!(got["status"], "firing", "{got}");
    assert_eq!(
        got["alerts"][0]["labels"]["alertname"],
        "EnsembleServiceDown"
    );
    assert_eq!(
        got["alerts"][0]["annotations"]["runbook_url"],
        runbook.as_str()
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
