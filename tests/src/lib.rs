//! Test harness for ensemble: where the local stack is, unique topic and
//! database names so tests run in parallel, polling with a deadline, and
//! private broker / embedded-ClickHouse processes for tests that must kill
//! or swap the real thing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

pub mod bench;
pub mod hold;
pub mod live;
pub mod sim;
pub mod truth;

/// Bootstrap brokers of the local stack (`deploy/local/stack env`).
pub fn kafka_brokers() -> String {
    std::env::var("ENSEMBLE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// ClickHouse HTTP URL of the local stack.
pub fn clickhouse_url() -> String {
    std::env::var("ENSEMBLE_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses: safe as a topic, group or
/// database name (`[a-z0-9_]`).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Calls `probe` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a topic (plain Kafka CreateTopics) and waits until its metadata shows all partitions.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        if let Err((name, code)) = r {
            anyhow::bail!("cannot create topic {name}: {code}");
        }
    }
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    poll_until("topic metadata", Duration::from_secs(20), || {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                use rdkafka::consumer::{BaseConsumer, Consumer};
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()
                    .ok()?;
                let md = c
                    .fetch_metadata(Some(&topic), Duration::from_secs(3))
                    .ok()?;
                let t = md.topics().first()?;
                (t.error().is_none() && t.partitions().len() == partitions as usize).then_some(())
            })
            .await
            .ok()
            .flatten()
        }
    })
    .await;
    Ok(())
}

/// A free TCP port on loopback (bound then released), never handed out
/// twice in ten minutes by this function, in this process or another:
/// each is claimed by a file in `$TMPDIR/ensemble-test-ports`. The kernel
/// may give a just-released port again, and two services of one test (or
/// of two tests running side by side) then raced for it: the loser exited
/// and the test talked to the winner (a collector's import answered 404
/// by a dashboard).
pub fn free_port() -> u16 {
    let claims = std::env::temp_dir().join("ensemble-test-ports");
    let _ = std::fs::create_dir_all(&claims);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let claim = claims.join(port.to_string());
        let stale = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if stale {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
            .is_ok()
        {
            return port;
        }
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The tansu binary `deploy/local/stack` installs.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENSEMBLE_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let tools = std::env::var("ENSEMBLE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("ensemble/tools")
        });
    tools.join("bin/tansu")
}

/// A private tansu broker with its own SQLite file, for tests that stop and
/// restart the broker without disturbing the shared one.
pub struct PrivateBroker {
    pub port: u16,
    storage: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Durable SQLite storage, as the local stack runs.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_storage("sqlite://data/tansu.db")
    }

    /// Any tansu storage engine, e.g. `memory://tansu/` for benchmarks that
    /// separate the pipeline's cost from the durable broker's.
    pub fn start_with_storage(storage: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut b = Self {
            port: free_port(),
            storage: storage.to_owned(),
            dir,
            child: None,
        };
        b.spawn()?;
        Ok(b)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id while it runs (for its CPU in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = tansu_bin();
        anyhow::ensure!(
            bin.exists(),
            "tansu not found at {} — run deploy/local/stack install",
            bin.display()
        );
        std::fs::create_dir_all(self.dir.path().join("data"))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))?;
        // tansu prepends the working directory to the SQLite path: relative path, cwd = dir.
        let child = Command::new(bin)
            .current_dir(self.dir.path())
            .args(["broker", "--kafka-cluster-id", "ensemble-test"])
            .args([
                "--kafka-listener-url",
                &url,
                "--kafka-advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_open(self.port) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "private tansu did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// What the broker logged (for diagnosing a failed test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kills the broker without warning (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The current ClickHouse engine (chdb-core) behind a ClickHouse HTTP
/// endpoint (`tests/chdb/chdb_http.py`). Needs `ENSEMBLE_CHDB_PYTHON`: the
/// Python of the virtualenv `deploy/local/test` creates.
pub struct ChdbServer {
    pub url: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl ChdbServer {
    pub fn start() -> anyhow::Result<Self> {
        use std::io::BufRead;
        let python = std::env::var("ENSEMBLE_CHDB_PYTHON").map_err(|_| {
            anyhow::anyhow!(
                "ENSEMBLE_CHDB_PYTHON is not set: run the tests with deploy/local/test, which creates the chdb-core virtualenv"
            )
        })?;
        let dir = tempfile::tempdir()?;
        let script = repo_root().join("tests/chdb/chdb_http.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.path().join("chdb"))
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout from chdb shim"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("chdb shim did not start: {line:?}"))?;
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            child,
        })
    }
}

impl Drop for ChdbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped campaign file.
pub fn campaign_file() -> PathBuf {
    repo_root().join("deploy/campaign.toml")
}

/// Runs a service binary with only the given environment (nothing inherited
/// from the caller's `ENSEMBLE_*`) and returns its exit code and stderr.
/// For start-up checks: the binary is expected to exit by itself.
pub fn run_binary(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Headless Chromium (Debian's `chromium`, which deploy/local/test
/// installs) opening `url` in a fresh profile in `profile`, with
/// `virtual_ms` of virtual time for the page's scripts and `extra` flags
/// (`--dump-dom`, `--screenshot=…`); killed when dropped.
pub fn chromium(
    url: &str,
    profile: &std::path::Path,
    virtual_ms: u32,
    extra: &[String],
) -> tokio::process::Command {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian chromium is installed by deploy/local/test");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--virtual-time-budget={virtual_ms}"))
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    cmd
}

/// Asserts that `bin` refuses to start (exit 2) with a message naming
/// `setting`; returns that message.
pub fn assert_refuses(bin: &str, args: &[&str], env: &[(&str, &str)], setting: &str) -> String {
    let (code, stderr) = run_binary(bin, args, env);
    assert_eq!(
        code,
        Some(2),
        "expected exit 2 naming {setting}, got {code:?}: {stderr}"
    );
    assert!(
        stderr.contains("refusing to start") && stderr.contains(setting),
        "stderr should name {setting}: {stderr}"
    );
    stderr
}

/// A workspace binary in `target/debug`, which `cargo test --workspace`
/// (deploy/local/test) builds first; `cargo test -p ensemble-tests` alone
/// may run stale ones.
pub fn workspace_binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo test --workspace` (deploy/local/test)",
        path.display()
    );
    path.display().to_string()
}

/// A service binary running as a child process, stopped with SIGTERM on drop.
pub struct Service {
    pub port: u16,
    child: Child,
}

impl Service {
    /// Starts `bin` with `--listen 127.0.0.1:<free port>` and only the given environment.
    pub fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .args(args)
            .args(["--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(Self {
            port,
            child: cmd.spawn()?,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id (for its peak memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// GET `path`; `None` while nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// Waits up to `within` until `/readyz` answers 200 (every dependency
    /// reachable); returns its body. Panics, naming `name`, on timeout.
    pub async fn wait_ready(&self, name: &str, within: Duration) -> String {
        poll_until(&format!("{name} /readyz to answer 200"), within, || {
            let r = self.get("/readyz");
            async move { r.filter(|(code, _)| *code == 200).map(|(_, b)| b) }
        })
        .await
    }

    /// GET `path` with `Authorization: Bearer <token>`, expecting 200 and JSON.
    pub fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        let (code, body) = http_get_with(
            self.port,
            path,
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .unwrap_or_else(|| panic!("nothing answers {path}"));
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Sends SIGTERM and waits up to `within` for the exit status.
    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(within)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET on loopback: status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[])
}

/// [`http_get`] with extra request headers.
pub fn http_get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    // Generous: an on-demand answer on a loaded 2-core machine can take a while.
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Starts `bin`, waits until `/readyz` answers 200 (its dependencies are
/// reachable), checks `/healthz` and `/metrics`, then stops it with SIGTERM
/// and expects a clean exit within 10 s.
pub async fn assert_ready_then_clean_exit(bin: &str, args: &[&str], env: &[(&str, &str)]) {
    let mut svc = Service::start(bin, args, env).expect("start service");
    let body = svc.wait_ready(bin, Duration::from_secs(60)).await;
    assert!(
        body.contains("true"),
        "readiness lists its components: {body}"
    );
    assert_eq!(svc.get("/healthz").map(|(c, _)| c), Some(200));
    assert_eq!(svc.get("/metrics").map(|(c, _)| c), Some(200));
    let status = svc
        .terminate(Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// A fresh database with every migration applied, on the local ClickHouse.
pub async fn migrated_database(prefix: &str) -> ensemble_core::StoreConfig {
    let store = ensemble_core::StoreConfig::new(clickhouse_url(), unique(prefix));
    ensemble_core::migrate::migrate(&store)
        .await
        .expect("migrate a fresh database");
    store
}

/// Checks `figures_ranges` against `figures`: for each of the campaign's
/// summed ranges, every value of every figure (the rows of `figures` whose
/// days fit the range, summed) equals the range's summed row; and
/// `paths_delays_ranges` against `figures_ranges`' paths' delays, rounded
/// each way. The number of values compared, or the first difference.
pub async fn summed_ranges_agree(
    store: &ensemble_core::StoreConfig,
    campaign: &ensemble_core::Campaign,
) -> Result<usize, String> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Value {
        key: String,
        n: i64,
        credit: f64,
    }
    // Every column but the days and the values (the catalogue's).
    use ensemble_model::figures::{columns_of, Role};
    let key: Vec<String> = columns_of(&[Role::Figure, Role::Scope, Role::Dimension])
        .map(|c| format!("toString({c})"))
        .collect();
    let key = format!("concat({})", key.join(", '|', "));
    let client = store.client();
    let fetch = |sql: String| {
        let client = client.clone();
        async move {
            client
                .query(&sql)
                .fetch_all::<Value>()
                .await
                .map_err(|e| e.to_string())
        }
    };
    let read = |table: &str, days: String| {
        fetch(format!(
            "SELECT {key} AS key, sum(n) AS n, sum(credit) AS credit FROM {table} WHERE {days} \
             GROUP BY key HAVING n != 0 OR abs(credit) > 1e-9 ORDER BY key"
        ))
    };
    let mut compared = 0;
    for (a, b) in ensemble_model::figures::summed_ranges(campaign) {
        let (a, b) = (
            ensemble_model::figures::date_of(a),
            ensemble_model::figures::date_of(b),
        );
        let base = read(
            "figures",
            format!("first_day >= toDate('{a}') AND last_day <= toDate('{b}')"),
        )
        .await?;
        let summed = read(
            ensemble_core::ranges::TABLE,
            format!("first_day = toDate('{a}') AND last_day = toDate('{b}')"),
        )
        .await?;
        if base.len() != summed.len() {
            return Err(format!(
                "{a}..{b}: {} values in figures, {} in figures_ranges",
                base.len(),
                summed.len()
            ));
        }
        for (x, y) in base.iter().zip(&summed) {
            if x.key != y.key || x.n != y.n || (x.credit - y.credit).abs() > 1e-6 {
                return Err(format!(
                    "{a}..{b}: figures has {} = ({}, {}), figures_ranges {} = ({}, {})",
                    x.key, x.n, x.credit, y.key, y.n, y.credit
                ));
            }
        }
        compared += base.len();
        // The paths' delays again, by each rounding (`paths_delays_ranges`).
        for rounding in ensemble_core::ranges::DELAY_ROUNDINGS {
            let days = format!("first_day = toDate('{a}') AND last_day = toDate('{b}')");
            let delay = format!("toUInt32(intDiv(delay_seconds, {rounding}) * {rounding})");
            let of = |table: &str, rows: String, delay: &str| {
                format!(
                    "SELECT concat(toString(bots), '|', device_filter, '|', placement_filter, '|', \
                     path, '|', toString({delay})) AS key, sum(n) AS n, toFloat64(0) AS credit \
                     FROM {table} WHERE {rows} GROUP BY key HAVING n != 0 ORDER BY key"
                )
            };
            let base = fetch(of(
                ensemble_core::ranges::TABLE,
                format!("{days} AND figure = 'paths_delays'"),
                &delay,
            ))
            .await?;
            let kept = fetch(of(
                ensemble_core::ranges::DELAYS_TABLE,
                format!("{days} AND rounding = {rounding}"),
                "delay_seconds",
            ))
            .await?;
            let pairs = |v: &[Value]| -> Vec<(String, i64)> {
                v.iter().map(|x| (x.key.clone(), x.n)).collect()
            };
            if pairs(&base) != pairs(&kept) {
                return Err(format!(
                    "{a}..{b}: the paths' delays by {rounding} s: {} values in figures_ranges, \
                     {} in paths_delays_ranges, or different ones",
                    base.len(),
                    kept.len()
                ));
            }
            compared += kept.len();
        }
    }
    Ok(compared)
}

/// Every stored figure as it stands, by table and key: `figures`,
/// `figures_ranges`, `paths_delays_ranges` and the analysts' `journeys`,
/// each key with a non-zero sum (credit in millionths). Batch markers
/// (`ensemble_core::batches`) are left out: a rebuild writes other
/// batches. Two databases with the same events give the same snapshot.
pub async fn figures_snapshot(
    store: &ensemble_core::StoreConfig,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Row {
        key: String,
        n: i64,
        credit: f64,
    }
    // Every column but the values (the catalogue's).
    let figure_key: Vec<String> = ensemble_model::figures::columns_of(&[
        ensemble_model::figures::Role::Figure,
        ensemble_model::figures::Role::Scope,
        ensemble_model::figures::Role::Days,
        ensemble_model::figures::Role::Dimension,
    ])
    .map(|c| format!("toString({c})"))
    .collect();
    let figure_key = format!("concat({})", figure_key.join(", '|', "));
    let marker = ensemble_core::batches::MARKER;
    let mut queries = Vec::new();
    for table in ["figures", ensemble_core::ranges::TABLE] {
        queries.push(format!(
            "SELECT concat('{table}|', {figure_key}) AS key, sum(n) AS n, sum(credit) AS credit FROM {table} \
             WHERE figure != '{marker}' GROUP BY key HAVING n != 0 OR abs(credit) > 1e-9 ORDER BY key"
        ));
    }
    queries.push(format!(
        "SELECT concat('{t}|', toString(bots), '|', device_filter, '|', placement_filter, '|', toString(first_day), \
         '|', toString(last_day), '|', toString(rounding), '|', path, '|', toString(delay_seconds)) AS key, \
         sum(n) AS n, toFloat64(0) AS credit FROM {t} WHERE rounding != {r} GROUP BY key HAVING n != 0 ORDER BY key",
        t = ensemble_core::ranges::DELAYS_TABLE,
        r = ensemble_core::batches::MARKER_ROUNDING
    ));
    queries.push(format!(
        "SELECT concat('journeys|', k, '|', toString(e), '|', toString(x), '|', toString(sc), '|', \
         toString(vi), '|', toString(si)) AS key, n, credit FROM (SELECT concat(kind, '|', visitor_id, '|', \
         toString(ms), '|', toString(event_id), '|', toString(day), '|', phase, '|', channel, '|', placement, '|', \
         device, '|', credits) AS k, sum(n) AS n, sum(n_events) AS e, \
         sum(n_exposures) AS x, sum(n_scans) AS sc, sum(n_visits) AS vi, sum(n_signups) AS si, \
         toFloat64(0) AS credit FROM {}.journeys WHERE kind != '{marker}' GROUP BY k \
         HAVING n != 0 OR e != 0 OR x != 0 OR sc != 0 OR vi != 0 OR si != 0) ORDER BY key",
        store.sql_database()
    ));
    queries.push(format!(
        "SELECT concat('later_conversions|', visitor_id, '|', toString(event_id)) AS key, sum(n) AS n, \
         toFloat64(0) AS credit FROM {}.later_conversions GROUP BY key HAVING n != 0 ORDER BY key",
        store.sql_database()
    ));
    let mut out = std::collections::BTreeMap::new();
    for sql in queries {
        let rows: Vec<Row> = store
            .client()
            .query(&sql)
            .fetch_all()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        out.extend(
            rows.into_iter()
                .map(|r| (r.key, (r.n, (r.credit * 1e6).round() as i64))),
        );
    }
    out
}

/// What one test's collector, processor and dashboard share: a fresh
/// topic (3 partitions) and its dead-letter topic on the local broker, a
/// migrated database and a consumer group name, all named after `name`.
pub struct Wiring {
    pub brokers: String,
    pub topic: String,
    pub dlq: String,
    pub group: String,
    pub store: ensemble_core::StoreConfig,
}

impl Wiring {
    pub async fn new(name: &str) -> Self {
        Self::with_store(name, migrated_database(&format!("it_{name}")).await).await
    }

    /// The same around a database the test has migrated itself.
    pub async fn with_store(name: &str, store: ensemble_core::StoreConfig) -> Self {
        let brokers = kafka_brokers();
        let topic = unique(name);
        let dlq = format!("{topic}.dlq");
        create_topic(&brokers, &topic, 3).await.expect("topic");
        create_topic(&brokers, &dlq, 1).await.expect("dlq");
        Self {
            store,
            group: unique(&format!("g_{name}")),
            brokers,
            topic,
            dlq,
        }
    }

    /// `--kafka-brokers`, `--kafka-topic`, `--kafka-dlq-topic`.
    pub fn kafka_args(&self) -> [&str; 6] {
        [
            "--kafka-brokers",
            &self.brokers,
            "--kafka-topic",
            &self.topic,
            "--kafka-dlq-topic",
            &self.dlq,
        ]
    }

    /// `--clickhouse-url`, `--clickhouse-database`.
    pub fn clickhouse_args(&self) -> [&str; 4] {
        [
            "--clickhouse-url",
            &self.store.url,
            "--clickhouse-database",
            &self.store.database,
        ]
    }
}

impl Service {
    /// Kills the process without warning (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private ClickHouse server (same Debian package as the stack, own ports
/// and data dir) for tests that stop and restart it.
pub struct PrivateClickHouse {
    pub http_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateClickHouse {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(free_port(), "")
    }

    /// A server on native port `tcp_port` with `extra` XML added to its
    /// config (cluster, ZooKeeper, macros).
    pub fn start_with(tcp_port: u16, extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ch = Self {
            http_port: free_port(),
            dir,
            child: None,
        };
        let template =
            std::fs::read_to_string(repo_root().join("deploy/local/clickhouse-config.xml.in"))?;
        let root = ch.dir.path().display().to_string();
        for sub in ["data/tmp", "data/user_files", "conf", "logs"] {
            std::fs::create_dir_all(ch.dir.path().join(sub))?;
        }
        let config = template
            .replace("@LOG_DIR@", &format!("{root}/logs"))
            .replace("@DATA_DIR@", &format!("{root}/data"))
            .replace("@CONF_DIR@", &format!("{root}/conf"))
            .replace("@HTTP_PORT@", &ch.http_port.to_string())
            .replace("@TCP_PORT@", &tcp_port.to_string())
            .replace("@INTERSERVER_PORT@", &free_port().to_string())
            .replace("</yandex>", &format!("{extra}\n</yandex>"));
        std::fs::write(ch.dir.path().join("conf/config.xml"), config)?;
        std::fs::copy(
            repo_root().join("deploy/local/clickhouse-users.xml"),
            ch.dir.path().join("conf/users.xml"),
        )?;
        ch.spawn()?;
        Ok(ch)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("logs/stdout.log"))?;
        let child = Command::new("clickhouse-server")
            .current_dir(self.dir.path())
            .arg(format!(
                "--config-file={}/conf/config.xml",
                self.dir.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(self.http_port, "/ping").is_none_or(|(code, _)| code != 200) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "private clickhouse did not answer in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops the server (SIGKILL) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A ZooKeeper of its own (Debian's `zookeeper` package), for replicated
/// tables and ON CLUSTER DDL; stopped on drop.
pub struct PrivateZooKeeper {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl PrivateZooKeeper {
    pub fn start() -> anyhow::Result<Self> {
        let script = Path::new("/usr/share/zookeeper/bin/zkServer.sh");
        anyhow::ensure!(
            script.exists(),
            "{} missing: deploy/local/test installs Debian's zookeeper package",
            script.display()
        );
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let root = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("data"))?;
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={root}/data\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("zookeeper.log"))?;
        let child = Command::new(script)
            .arg("start-foreground")
            .arg(&cfg)
            .env("ZOO_LOG_DIR", &root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let zk = Self {
            port,
            _dir: dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zk.ruok() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "private zookeeper did not answer in 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(zk)
    }

    fn ruok(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut answer = String::new();
        s.write_all(b"ruok").is_ok()
            && s.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer == "imok"
    }
}

impl Drop for PrivateZooKeeper {
    fn drop(&mut self) {
        // zkServer.sh execs java: the child is the server.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ClickHouse servers on loopback forming cluster `name`: one shard each
/// (macros `{shard}` = 01, 02, …, `{replica}` = r1), with a private ZooKeeper
/// for the replicated tables and ON CLUSTER DDL.
pub struct ClickHouseCluster {
    pub name: String,
    pub nodes: Vec<PrivateClickHouse>,
    _zookeeper: PrivateZooKeeper,
}

impl ClickHouseCluster {
    pub fn start(shards: usize) -> anyhow::Result<Self> {
        let zookeeper = PrivateZooKeeper::start()?;
        let name = "ensemble_test".to_owned();
        let tcp: Vec<u16> = (0..shards).map(|_| free_port()).collect();
        let remote: String = tcp
            .iter()
            .map(|p| {
                format!("<shard><internal_replication>true</internal_replication><replica><host>127.0.0.1</host><port>{p}</port></replica></shard>")
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, port) in tcp.iter().enumerate() {
            let extra = format!(
                "<remote_servers><{name}>{remote}</{name}></remote_servers>\n\
                 <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node></zookeeper>\n\
                 <macros><shard>{shard:02}</shard><replica>r1</replica></macros>\n\
                 <interserver_http_host>127.0.0.1</interserver_http_host>\n\
                 <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>",
                zk = zookeeper.port,
                shard = i + 1,
            );
            nodes.push(PrivateClickHouse::start_with(*port, &extra)?);
        }
        Ok(Self {
            name,
            nodes,
            _zookeeper: zookeeper,
        })
    }
}

/// Produces already-encoded payloads (key, bytes) and waits for every report.
pub async fn produce_raw(
    brokers: &str,
    topic: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let producer: rdkafka::producer::FutureProducer =
        ensemble_core::KafkaConfig::new(brokers, topic)
            .producer_config(30_000)
            .create()?;
    send_all(&producer, topic, messages).await
}

/// Enqueues every message on `producer` (waiting when its queue is full),
/// then waits for every delivery report.
pub async fn send_all(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    use rdkafka::producer::FutureRecord;
    let mut pending = Vec::with_capacity(messages.len());
    for (key, payload) in messages {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                // Queue full: let deliveries drain.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The value of one series in a Prometheus text exposition: `series` is the
/// metric name with its labels as printed, e.g. `x_total{reason="a"}`.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// (sum of committed offsets of `group`, sum of high watermarks) over the
/// topic's partitions: equal when the group has caught up.
pub async fn group_progress(brokers: &str, topic: &str, group: &str) -> anyhow::Result<(i64, i64)> {
    let lag =
        ensemble_core::kafka::group_lag(brokers, topic, group, Duration::from_secs(5)).await?;
    Ok((lag.committed(), lag.end()))
}

/// `INSERT INTO events … VALUES …` text for `rows`: loads the same fixture
/// into the 18.16 server and the embedded current engine (which takes no
/// RowBinary body through the test shim).
pub fn insert_values_sql(rows: &[ensemble_core::EventRow]) -> String {
    fn s(v: &str) -> String {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
    fn t(v: chrono::DateTime<chrono::Utc>) -> String {
        format!("'{}'", v.format("%Y-%m-%d %H:%M:%S"))
    }
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            [
                s(&r.event_id.to_string()),
                s(&r.event_type),
                s(&r.action),
                t(r.ts),
                r.ts_ms.to_string(),
                t(r.received_at),
                t(r.processed_at),
                s(&r.visitor_id),
                s(&r.channel),
                s(&r.placement),
                s(&r.phase),
                s(&r.utm_source),
                s(&r.utm_medium),
                s(&r.utm_campaign),
                s(&r.utm_content),
                s(&r.utm_term),
                s(&r.url),
                s(&r.referrer_host),
                s(&r.device_class),
                s(&r.os_family),
                r.is_bot.to_string(),
                s(&r.contact_hash),
                r.consent_results.to_string(),
                r.consent_newsletter.to_string(),
                s(&r.custom_name),
                s(&r.props),
                r.ts_clamped.to_string(),
                r.imported.to_string(),
            ]
            .join(", ")
        })
        .map(|v| format!("({v})"))
        .collect();
    format!(
        "INSERT INTO events (event_id, event_type, action, ts, ts_ms, received_at, processed_at, visitor_id, \
         channel, placement, phase, utm_source, utm_medium, utm_campaign, utm_content, utm_term, url, \
         referrer_host, device_class, os_family, is_bot, contact_hash, consent_results, consent_newsletter, \
         custom_name, props, ts_clamped, imported) VALUES {}",
        values.join(", ")
    )
}

/// JSON equal, numbers within 1e-9 (credits summed in another order).
pub fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

/// Every byte a topic holds: each message's key, payload and header names
/// and values, read from the first offset of every partition to its end.
pub async fn topic_bytes(brokers: &str, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        let c: BaseConsumer = ensemble_core::KafkaConfig::new(&brokers, &topic)
            .consumer_config(&unique("g_read_all"))
            .create()?;
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let parts: Vec<i32> = md
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut ends = std::collections::HashMap::new();
        for p in &parts {
            let (low, high) = c.fetch_watermarks(&topic, *p, Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(&topic, *p, rdkafka::Offset::Offset(low))?;
                ends.insert(*p, high);
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Ok(out);
        }
        c.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ends.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "topic {topic} not read to its end in 120 s"
            );
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m?;
            let mut bytes = m.key().unwrap_or_default().to_vec();
            bytes.push(b'\n');
            bytes.extend_from_slice(m.payload().unwrap_or_default());
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    bytes.push(b'\n');
                    bytes.extend_from_slice(hd.key.as_bytes());
                    bytes.push(b'=');
                    bytes.extend_from_slice(hd.value.unwrap_or_default());
                }
            }
            out.push(bytes);
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
        }
        Ok(out)
    })
    .await?
}

/// Every table of a database as text (`SELECT *`, TabSeparated): what any
/// reader of the database can see.
pub async fn database_text(store: &ensemble_core::StoreConfig) -> anyhow::Result<String> {
    let client = store.server_client();
    // The main database and the analysts' one.
    let tables: Vec<(String, String)> = client
        .query("SELECT database, name FROM system.tables WHERE database IN (?, ?) AND engine NOT LIKE '%View' ORDER BY database, name")
        .bind(&store.database)
        .bind(store.sql_database())
        .fetch_all()
        .await?;
    let mut text = String::new();
    for (db, t) in tables {
        let mut cursor = client
            .query(&format!("SELECT * FROM {db}.{t}"))
            .fetch_bytes("TabSeparated")?;
        if db == store.database {
            text.push_str(&format!("== {t}\n"));
        } else {
            text.push_str(&format!("== {db}.{t}\n"));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = cursor.next().await? {
            bytes.extend_from_slice(&chunk);
        }
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    Ok(text)
}

/// The Markov model of PyPI's `channelattribution` (an independent,
/// simulation-based implementation) over a paths CSV the dashboard
/// exported: channel → credited conversions. Needs
/// `ENSEMBLE_ATTRIBUTION_PYTHON` (deploy/local/test creates its virtualenv).
pub fn channelattribution_markov(
    paths_csv: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let python = std::env::var("ENSEMBLE_ATTRIBUTION_PYTHON").map_err(|_| {
        anyhow::anyhow!(
            "ENSEMBLE_ATTRIBUTION_PYTHON is not set: run the tests with deploy/local/test, which creates the channelattribution virtualenv"
        )
    })?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("paths.csv");
    std::fs::write(&file, paths_csv)?;
    let script = repo_root().join("tests/attribution/markov_check.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{python} {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
