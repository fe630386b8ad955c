//! A recording HTTP proxy in front of ClickHouse, and the replay of what it
//! recorded: the processor bench's floor.
//!
//! The processor talks to ClickHouse through [`Recorder`], which forwards
//! every request as it comes and writes each INSERT (its query string,
//! headers and body, byte for byte) to a file. [`replay`] then sends those
//! same INSERTs, in the order they were made, one at a time, to a fresh
//! database with the same schema: ClickHouse alone doing exactly the writes
//! the processor asked of it (materialised views included), without the
//! reading, accounting, batching and Kafka around them. Reads are forwarded
//! but not recorded: they are the processor's work, not the floor's.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

/// What a recorder saw, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recorded {
    /// INSERT requests recorded.
    pub inserts: u64,
    /// Their bodies' bytes as sent (LZ4 where the client compresses).
    pub body_bytes: u64,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    file: Mutex<BufWriter<std::fs::File>>,
    sums: Mutex<Recorded>,
}

/// The proxy, listening on 127.0.0.1 until dropped.
pub struct Recorder {
    pub url: String,
    path: PathBuf,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// Headers that say how to read a request's body and whose it is.
const KEPT_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "authorization",
    "x-clickhouse-user",
    "x-clickhouse-key",
];

/// Headers that describe one connection, not the answer.
const HOP_HEADERS: [&str; 4] = [
    "transfer-encoding",
    "content-length",
    "connection",
    "keep-alive",
];

impl Recorder {
    /// Starts a proxy to `upstream` (a ClickHouse HTTP URL) recording into `file`.
    pub async fn start(upstream: &str, file: &Path) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().build()?,
            file: Mutex::new(BufWriter::new(std::fs::File::create(file)?)),
            sums: Mutex::new(Recorded::default()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            path: file.to_owned(),
            shared,
            server,
        })
    }

    /// Stops recording; what was recorded, and the file holding it.
    pub fn finish(self) -> anyhow::Result<(Recorded, PathBuf)> {
        self.server.abort();
        self.shared
            .file
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder file lock poisoned"))?
            .flush()?;
        let sums = *self
            .shared
            .sums
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder lock poisoned"))?;
        Ok((sums, self.path.clone()))
    }
}

/// The SQL a request runs: its `query` parameter, else the start of its
/// body when the body is not compressed data.
fn is_insert(query: &str, body: &[u8]) -> bool {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let sql = params.iter().find(|(k, _)| k == "query").map(|(_, v)| v);
    let starts_insert = |s: &[u8]| {
        let s = s.trim_ascii_start();
        s.len() >= 6 && s[..6].eq_ignore_ascii_case(b"INSERT")
    };
    match sql {
        Some(sql) => starts_insert(sql.as_bytes()),
        None => !compressed(&params) && starts_insert(&body[..body.len().min(64)]),
    }
}

/// The client sent an LZ4 body (`decompress=1`).
fn compressed(params: &[(String, String)]) -> bool {
    params.iter().any(|(k, v)| k == "decompress" && v == "1")
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match relay(&shared, request).await {
        Ok(r) => r,
        Err(e) => Response::builder()
            .status(502)
            .body(Body::from(format!("recorder: {e:#}")))
            .unwrap_or_default(),
    }
}

async fn relay(shared: &Shared, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let query = parts.uri.query().unwrap_or("");
    let headers: Vec<(String, Vec<u8>)> = KEPT_HEADERS
        .iter()
        .filter_map(|h| {
            parts
                .headers
                .get(*h)
                .map(|v| ((*h).to_owned(), v.as_bytes().to_vec()))
        })
        .collect();
    // Each statement the processor sends is logged by the server
    // (`system.query_log`, where its config keeps one): the bench reads
    // ClickHouse's CPU per statement from it. Not recorded for the replay.
    let logged = if path_and_query.contains('?') {
        format!("{path_and_query}&log_queries=1")
    } else {
        format!("{path_and_query}?log_queries=1")
    };
    let mut out = shared
        .http
        .request(parts.method.clone(), format!("{}{logged}", shared.upstream));
    for (k, v) in &headers {
        out = out.header(k, v.as_slice());
    }
    let answer = out.body(body.clone()).send().await?;
    let status = answer.status();
    if status.is_success() && is_insert(query, &body) {
        let mut file = shared
            .file
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder file lock poisoned"))?;
        write_frame(&mut *file, &path_and_query, &headers, &body)?;
        let mut sums = shared
            .sums
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder lock poisoned"))?;
        sums.inserts += 1;
        sums.body_bytes += body.len() as u64;
    }
    let mut response = Response::builder().status(status.as_u16());
    for (k, v) in answer.headers() {
        // Hop-by-hop and length headers are the proxy's own to set: the
        // body goes back whole, not in the upstream's chunks.
        if !HOP_HEADERS.contains(&k.as_str()) {
            response = response.header(k, v);
        }
    }
    Ok(response.body(Body::from(answer.bytes().await?))?)
}

fn put(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)
}

fn write_frame(
    out: &mut impl Write,
    path_and_query: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> std::io::Result<()> {
    put(out, path_and_query.as_bytes())?;
    out.write_all(&(headers.len() as u64).to_le_bytes())?;
    for (k, v) in headers {
        put(out, k.as_bytes())?;
        put(out, v)?;
    }
    put(out, body)
}

/// One recorded request.
struct Frame {
    path_and_query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn get(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut bytes = vec![0u8; u64::from_le_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

fn read_frame(input: &mut impl Read) -> anyhow::Result<Option<Frame>> {
    let Some(path) = get(input)? else {
        return Ok(None);
    };
    let truncated = || anyhow::anyhow!("recording truncated");
    let mut n = [0u8; 8];
    input.read_exact(&mut n)?;
    let mut headers = Vec::new();
    for _ in 0..u64::from_le_bytes(n) {
        let k = get(input)?.ok_or_else(truncated)?;
        let v = get(input)?.ok_or_else(truncated)?;
        headers.push((String::from_utf8(k)?, v));
    }
    let body = get(input)?.ok_or_else(truncated)?;
    Ok(Some(Frame {
        path_and_query: String::from_utf8(path)?,
        headers,
        body,
    }))
}

/// `bytes` with every `from` replaced by `to`.
fn replace_bytes(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Sends every recorded INSERT, in order and one at a time, to `upstream`
/// with database `from` renamed `to` (in the query string, and in a body
/// that is SQL text). Returns the seconds ClickHouse took for all of them.
pub async fn replay(file: &Path, upstream: &str, from: &str, to: &str) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let mut input = BufReader::new(std::fs::File::open(file)?);
    let upstream = upstream.trim_end_matches('/');
    let mut frames = Vec::new();
    while let Some(f) = read_frame(&mut input)? {
        frames.push(f);
    }
    let started = Instant::now();
    for f in frames {
        let path = f.path_and_query.replace(from, to);
        let params: Vec<(String, String)> = url::form_urlencoded::parse(
            path.split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .as_bytes(),
        )
        .into_owned()
        .collect();
        let body = if compressed(&params) {
            f.body
        } else {
            replace_bytes(&f.body, from.as_bytes(), to.as_bytes())
        };
        let mut request = http.post(format!("{upstream}{path}"));
        for (k, v) in &f.headers {
            request = request.header(k, v.as_slice());
        }
        let answer = request.body(body).send().await?;
        let status = answer.status();
        anyhow::ensure!(
            status.is_success(),
            "replayed INSERT refused ({status}): {}",
            answer.text().await.unwrap_or_default()
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Through the proxy, the clickhouse crate reads and inserts as
    /// directly; the INSERT alone is recorded, and its replay into another
    /// database writes the same rows.
    #[tokio::test]
    async fn an_insert_through_the_proxy_replays_into_another_database() {
        let url = crate::clickhouse_url();
        let (a, b) = (crate::unique("it_rec_a"), crate::unique("it_rec_b"));
        let server = ensemble_core::StoreConfig::new(&url, &a).server_client();
        for db in [&a, &b] {
            server
                .query(&format!("CREATE DATABASE {db}"))
                .execute()
                .await
                .unwrap();
            server
                .query(&format!(
                    "CREATE TABLE {db}.t (x UInt32, s String) ENGINE = MergeTree ORDER BY x"
                ))
                .execute()
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(&url, &dir.path().join("r.bin"))
            .await
            .unwrap();
        let via = ensemble_core::StoreConfig::new(&recorder.url, &a)
            .client()
            .with_compression(clickhouse::Compression::Lz4);
        #[derive(clickhouse::Row, serde::Serialize)]
        struct T {
            x: u32,
            s: String,
        }
        let mut insert = via.insert::<T>("t").await.unwrap();
        for x in 0..1000u32 {
            insert
                .write(&T {
                    x,
                    s: format!("row {x}"),
                })
                .await
                .unwrap();
        }
        insert.end().await.unwrap();
        via.query(&format!("INSERT INTO {a}.t SELECT 5000, 'sql'"))
            .execute()
            .await
            .unwrap();
        let read: u64 = via
            .query("SELECT count() FROM t")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(read, 1001);
        let (recorded, file) = recorder.finish().unwrap();
        assert_eq!(recorded.inserts, 2, "the SELECT is not recorded");
        replay(&file, &url, &a, &b).await.unwrap();
        let sum = |db: String| {
            let server = server.clone();
            async move {
                server
                    .query(&format!("SELECT count(), sum(x), max(s) FROM {db}.t"))
                    .fetch_one::<(u64, u64, String)>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(sum(b.clone()).await, sum(a.clone()).await);
        assert_eq!(sum(b.clone()).await.0, 1001);
        for db in [a, b] {
            server
                .query(&format!("DROP DATABASE {db}"))
                .execute()
                .await
                .unwrap();
        }
    }

    #[test]
    fn inserts_are_told_from_reads_by_their_sql() {
        assert!(is_insert(
            "query=INSERT+INTO+events+FORMAT+RowBinary&decompress=1",
            b"\x00\x01"
        ));
        assert!(!is_insert("query=SELECT+1", b""));
        assert!(is_insert("database=x", b"  insert into ledger VALUES"));
        assert!(!is_insert("database=x", b"SELECT * FROM ledger"));
        // A compressed body is data, never read as SQL.
        assert!(!is_insert("database=x&decompress=1", b"INSERT"));
    }

    #[test]
    fn a_recording_reads_back_as_written() {
        let mut buf = Vec::new();
        let headers = vec![("content-type".to_owned(), b"text/plain".to_vec())];
        write_frame(
            &mut buf,
            "/?database=a",
            &headers,
            b"INSERT INTO a_sql.t VALUES",
        )
        .unwrap();
        write_frame(&mut buf, "/?x=1", &[], b"").unwrap();
        let mut r = buf.as_slice();
        let one = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(one.path_and_query, "/?database=a");
        assert_eq!(one.headers, headers);
        assert_eq!(one.body, b"INSERT INTO a_sql.t VALUES");
        let two = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((two.path_and_query.as_str(), two.body.len()), ("/?x=1", 0));
        assert!(read_frame(&mut r).unwrap().is_none());
        assert_eq!(
            replace_bytes(b"INSERT INTO a_sql.t", b"a_sql", b"bb_sql"),
            b"INSERT INTO bb_sql.t"
        );
    }
}
