//! ClickHouse is real: migrations apply once on a fresh database (on the
//! 18.16 server and on the current engine), rows round-trip through the
//! `clickhouse` crate.

use chrono::{DateTime, TimeZone, Utc};
use clickhouse::Row;
use ensemble_core::event::{
    Consent, Enrichment, EventMessage, EventType, TinderAction, Utm, SCHEMA_VERSION,
};
use ensemble_core::migrate::{migrate, migrations};
use ensemble_core::{EventRow, StoreConfig};
use ensemble_tests::{clickhouse_url, unique, ChdbServer};
use serde::Deserialize;
use uuid::Uuid;

fn all_versions() -> Vec<u32> {
    migrations()
        .expect("migrations")
        .iter()
        .map(|m| m.version)
        .collect()
}

#[derive(Debug, Row, Deserialize, PartialEq)]
struct Column {
    table: String,
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// Every column of the database. 18.16 annotates a view's computed DateTime
/// with the server zone (`DateTime('Etc/UTC')`); the stored value (UTC
/// seconds) is the same, so the annotation is left out of the comparison.
async fn schema(store: &StoreConfig) -> Vec<Column> {
    let mut columns: Vec<Column> = store
        .client()
        .query(
            "SELECT table, name, type FROM system.columns WHERE database = ? ORDER BY table, name",
        )
        .bind(&store.database)
        .fetch_all()
        .await
        .expect("read schema");
    for c in &mut columns {
        if c.ty.starts_with("DateTime('") {
            c.ty = "DateTime".into();
        }
    }
    columns
}

/// Migrates `store` twice: all applied the first time, nothing the second.
async fn migrate_twice(store: &StoreConfig) {
    let first = migrate(store).await.expect("first migrate");
    assert_eq!(first.applied, all_versions());
    assert!(first.already_applied.is_empty());
    let second = migrate(store).await.expect("second migrate");
    assert!(
        second.applied.is_empty(),
        "second run must be a no-op: {second:?}"
    );
    assert_eq!(second.already_applied, all_versions());
}

fn message(i: u32, ts: DateTime<Utc>) -> EventMessage {
    let even = i.is_multiple_of(2);
    EventMessage {
        v: SCHEMA_VERSION,
        event_id: Uuid::new_v4(),
        event_type: if even {
            EventType::TinderCard
        } else {
            EventType::Signup
        },
        ts,
        received_at: ts + chrono::Duration::seconds(1),
        ts_clamped: i == 3,
        imported: even,
        visitor_id: format!("visitor-{i:04}"),
        placement: Some("T-VOEUX".into()),
        utm: Utm {
            source: Some("tinder".into()),
            content: Some("t-voeux".into()),
            ..Utm::default()
        },
        url: Some("https://vivre-ensemble.example.org/barometre".into()),
        referrer_host: None,
        user_agent: Some("Mozilla/5.0 (iPhone)".into()),
        bot: false,
        repeat: false,
        action: even.then_some(TinderAction::Click),
        contact_hash: (!even).then(|| format!("{i:064x}")),
        consent: (!even).then_some(Consent {
            results: true,
            newsletter: i.is_multiple_of(3),
        }),
        custom_name: None,
        props: [("k".to_owned(), "v é ü".to_owned())].into_iter().collect(),
    }
}

/// A run killed after a migration's ALTER and before it was recorded: the
/// next run applies it again over the columns already there (or already
/// gone). Here the records of every migration since the last one that
/// dropped a column (0012: 0007's view read it, so the ones before cannot
/// run over its schema) are gone: each runs again over its own schema.
#[tokio::test]
async fn migrations_run_again_over_a_schema_they_already_made() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_migrate_rerun"));
    migrate(&store).await.expect("first migrate");
    let columns = |store: StoreConfig| async move {
        let names: Vec<String> = store
            .server_client()
            .query("SELECT concat(table, '.', name) FROM system.columns WHERE database = ? ORDER BY table, name")
            .bind(&store.database)
            .fetch_all()
            .await
            .expect("columns");
        names
    };
    let before = columns(store.clone()).await;
    assert!(before.iter().any(|c| c == "ledger.ev_os"), "{before:?}");
    let since = 12;
    let forgotten: Vec<u32> = all_versions().into_iter().filter(|v| *v >= since).collect();
    store
        .client()
        .query("ALTER TABLE schema_migrations DELETE WHERE version >= ?")
        .bind(since)
        .execute()
        .await
        .expect("forget the records");
    ensemble_tests::poll_until(
        "the records' delete",
        std::time::Duration::from_secs(10),
        || async {
            let left: u64 = store
                .client()
                .query("SELECT count() FROM schema_migrations WHERE version >= ?")
                .bind(since)
                .fetch_one()
                .await
                .expect("count");
            (left == 0).then_some(())
        },
    )
    .await;
    let again = migrate(&store)
        .await
        .expect("a migration run again over its own columns");
    assert_eq!(again.applied, forgotten);
    assert_eq!(columns(store.clone()).await, before, "the same schema");
}

/// A proxy to ClickHouse that, the first time a request holds each of
/// `needles`, passes the request on but closes the connection instead of
/// passing its answer back: a query that ran (or not) whose answer was
/// lost, as when a pooled connection dies. Returns the port and how many
/// answers it lost.
async fn answer_losing_proxy(
    upstream: String,
    needles: &'static [&'static [u8]],
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("port").port();
    let lost = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(Mutex::new(needles.to_vec()));
    let counter = lost.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (pending, lost) = (pending.clone(), counter.clone());
            tokio::spawn(async move {
                let lose = AtomicBool::new(false);
                let (mut client_read, mut client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let up = async {
                    let mut buf = vec![0_u8; 64 * 1024];
                    let mut seen: Vec<u8> = Vec::new();
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        {
                            let mut pending = pending.lock().expect("needles");
                            if let Some(i) = pending
                                .iter()
                                .position(|nd| seen.windows(nd.len()).any(|w| w == *nd))
                            {
                                pending.remove(i);
                                lose.store(true, Ordering::SeqCst);
                            }
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let keep = seen.len().saturating_sub(4096);
                        seen.drain(..keep);
                    }
                };
                let down = async {
                    let mut buf = vec![0_u8; 64 * 1024];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if lose.load(Ordering::SeqCst) {
                            lost.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                // The first to end closes the connection both ways.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (port, lost)
}

/// A migration run whose answers are lost (an ALTER that ran, a lookup of
/// the migrator's own) runs again by itself and ends with the schema a
/// run without faults makes, every migration recorded once.
#[tokio::test]
async fn a_migration_run_that_loses_its_answers_ends_with_the_same_schema() {
    let direct = StoreConfig::new(clickhouse_url(), unique("it_migrate_direct"));
    migrate(&direct).await.expect("migrate directly");
    let upstream = clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (port, lost) = answer_losing_proxy(upstream, &[b"ADD COLUMN", b"system.tables"]).await;
    let database = unique("it_migrate_lost");
    let proxied = StoreConfig::new(format!("http://127.0.0.1:{port}"), database.clone());
    let report = migrate(&proxied)
        .await
        .expect("migrate through lost answers");
    assert_eq!(
        lost.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "both answers lost"
    );
    assert_eq!(
        report.applied,
        all_versions(),
        "each applied once: {report:?}"
    );
    let same_server = StoreConfig::new(clickhouse_url(), database);
    assert_eq!(schema(&same_server).await, schema(&direct).await);
    let recorded: Vec<u32> = same_server
        .client()
        .query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .expect("records");
    assert_eq!(recorded, all_versions(), "each migration recorded once");
}

#[tokio::test]
async fn migrate_twice_then_rows_round_trip_on_the_server() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_migrate"));
    migrate_twice(&store).await;

    let ts = Utc
        .with_ymd_and_hms(2025, 2, 14, 8, 30, 0)
        .single()
        .expect("ts")
        + chrono::Duration::milliseconds(250);
    let processed = Utc
        .with_ymd_and_hms(2025, 2, 14, 8, 31, 0)
        .single()
        .expect("ts");
    let rows: Vec<EventRow> = (0..5)
        .map(|i| {
            EventRow::new(
                &message(i, ts + chrono::Duration::minutes(i64::from(i))),
                Enrichment {
                    channel: "tinder".into(),
                    phase: "p2-saint-valentin".into(),
                    device_class: "mobile".into(),
                    os_family: "iOS".into(),
                    is_bot: i == 4,
                },
                processed,
            )
        })
        .collect();
    let client = store.client();
    let mut insert = client.insert::<EventRow>("events").await.expect("insert");
    for r in &rows {
        insert.write(r).await.expect("write row");
    }
    insert.end().await.expect("insert end");

    let back: Vec<EventRow> = client
        .query("SELECT ?fields FROM events ORDER BY visitor_id")
        .fetch_all()
        .await
        .expect("read back");
    assert_eq!(back, rows);

    drop_database(&store).await;
}

#[tokio::test]
async fn migrations_give_the_same_schema_on_current_clickhouse() {
    // The 18.16 server …
    let old = StoreConfig::new(clickhouse_url(), unique("it_schema"));
    migrate(&old).await.expect("migrate on 18.16");
    // … and the current engine (chdb-core) behind the same client.
    let chdb = ChdbServer::start().expect("chdb-core shim (see deploy/local/test)");
    let current = StoreConfig::new(&chdb.url, "ensemble");
    migrate_twice(&current).await;

    let (a, b) = (schema(&old).await, schema(&current).await);
    assert!(a
        .iter()
        .any(|c| c.table == "events" && c.name == "event_id"));
    let only_old: Vec<_> = a.iter().filter(|c| !b.contains(c)).collect();
    let only_new: Vec<_> = b.iter().filter(|c| !a.contains(c)).collect();
    assert!(
        only_old.is_empty() && only_new.is_empty(),
        "every column has the same name and type on both engines; \
         only on 18.16: {only_old:?}; only on current: {only_new:?}"
    );
    drop_database(&old).await;
}

/// `compact::compact` (after a rebuild or a refill, and `ensemble-processor
/// compact`) leaves a figures
/// table in one part, its rows summed: two INSERTs of the same figure
/// value are two parts and two rows before, one part and one row after.
#[tokio::test]
async fn compacting_a_figures_table_leaves_one_part_and_one_row_per_value() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_compact"));
    migrate(&store).await.expect("migrate");
    let client = store.client();
    // No background merge meanwhile: the two parts stay two until compacted.
    let merges = |what: &str| format!("SYSTEM {what} MERGES {}.figures", store.database);
    client
        .query(&merges("STOP"))
        .execute()
        .await
        .expect("stop merges");
    for n in [2, 3] {
        client
            .query(&format!(
                "INSERT INTO figures (figure, bots, device_filter, placement_filter, first_day, \
                 last_day, channel, n, credit) VALUES ('visitors', 0, '*', '*', '2025-02-10', \
                 '2025-02-10', 'metro', {n}, 0)"
            ))
            .execute()
            .await
            .expect("insert");
    }
    let parts_and_rows = || async {
        let parts: u64 = client
            .query(
                "SELECT count() FROM system.parts WHERE database = ? AND table = 'figures' AND active",
            )
            .bind(&store.database)
            .fetch_one()
            .await
            .expect("parts");
        let rows: Vec<i64> = client
            .query("SELECT n FROM figures")
            .fetch_all()
            .await
            .expect("rows");
        (parts, rows)
    };
    let (parts, mut rows) = parts_and_rows().await;
    rows.sort_unstable();
    assert_eq!((parts, rows), (2, vec![2, 3]), "two INSERTs, two parts");
    client
        .query(&merges("START"))
        .execute()
        .await
        .expect("start merges");
    assert!(ensemble_core::compact::compact(&store, "figures")
        .await
        .expect("compact"));
    assert_eq!(parts_and_rows().await, (1, vec![5]), "one part, summed");
    drop_database(&store).await;
}

/// What a [`cutting_proxy`] keeps of a request (its bytes, where its body
/// starts): how many bytes.
type Cut = fn(&[u8], usize) -> usize;

/// A proxy to ClickHouse that holds each request until its chunked body
/// has ended, then passes on only what `cut` keeps of it (given the
/// request's bytes and where its body starts) and closes its side: a
/// sender killed in the middle of its INSERT. Returns the port.
async fn cutting_proxy(upstream: String, cut: Cut) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("port").port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = vec![0_u8; 64 * 1024];
                while !request.ends_with(b"\r\n0\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let Some(head) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return;
                };
                let keep = cut(&request, head + 4).min(request.len());
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = server.write_all(&request[..keep]).await;
                    let _ = server.shutdown().await;
                    // What the server answers goes back (to a sender that
                    // is no more, when cut), until it closes its side.
                    while let Ok(n) = server.read(&mut buf).await {
                        if n == 0 || client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    port
}

/// The boundaries of the compressed blocks in a chunked request body
/// starting at `body` (ClickHouse's framing: a 16-byte checksum, then a
/// method byte and the block's compressed size, header included), as
/// offsets in `request`; the end of the last block last.
fn block_ends(request: &[u8], body: usize) -> Vec<usize> {
    // The chunks' data, and where each of its bytes sits in the request.
    let mut data: Vec<(u8, usize)> = Vec::new();
    let mut at = body;
    while let Some(line) = request[at..].windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&request[at..at + line])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        at += line + 2;
        if size == 0 {
            break;
        }
        data.extend((at..at + size).map(|i| (request[i], i)));
        at += size + 2;
    }
    let mut ends = Vec::new();
    let mut block = 0;
    while block + 25 <= data.len() {
        let size = u32::from_le_bytes([
            data[block + 17].0,
            data[block + 18].0,
            data[block + 19].0,
            data[block + 20].0,
        ]) as usize;
        block += 16 + size;
        if let Some((_, i)) = data.get(block.min(data.len()) - 1) {
            ends.push(i + 1);
        }
    }
    ends
}

/// A ledger INSERT cut anywhere on its way lands whole or not at all. A
/// processor killed while it sends one leaves the server a body cut short;
/// ClickHouse 18.16 takes a plain body cut at a row's end as complete,
/// which would land the batch's head row (all its change) without the rest
/// of its events, and their retry would count them twice. The INSERT is
/// one compressed block with its checksum: cut inside it, at its end
/// (the chunked body's last, empty chunk lost), or in the middle, the
/// server lands every row or none. Checked at each block's end too, so
/// that an INSERT sent in several blocks (a cut between two of them lands
/// the first) fails here.
#[tokio::test]
async fn a_ledger_insert_cut_on_its_way_lands_whole_or_not_at_all() {
    use ensemble_core::ledger::{Carried, Writer};
    use ensemble_model::figures::Event;
    let store = ensemble_tests::migrated_database("it_cut_insert").await;
    let campaign =
        ensemble_core::Campaign::load(&ensemble_tests::campaign_file()).expect("campaign");
    let upstream = clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let event = |i: u128| Event {
        event_id: Uuid::from_u128(i),
        ms: 1_737_190_800_000 + i as u64,
        event_type: "page_view".into(),
        action: Default::default(),
        channel: "metro".into(),
        placement: Default::default(),
        phase: "p1-lancement".into(),
        device: "mobile".into(),
        os: "iOS".into(),
        bot: false,
        contact: Default::default(),
    };
    const ROWS: u64 = 2_000;
    let cuts: [(&str, Cut); 7] = [
        ("nothing cut", |r, _| r.len()),
        ("the last, empty chunk lost", |r, _| r.len() - 5),
        ("the block's last byte lost", |r, b| {
            block_ends(r, b).last().copied().unwrap_or(0) - 1
        }),
        ("half the body", |r, b| b + (r.len() - b) / 2),
        ("only the block's first bytes", |_, b| b + 40),
        ("the first block whole", |r, b| {
            block_ends(r, b).first().copied().unwrap_or(0)
        }),
        ("the next to last block whole", |r, b| {
            let ends = block_ends(r, b);
            ends.len()
                .checked_sub(2)
                .map_or_else(|| ends.last().copied().unwrap_or(0), |i| ends[i])
        }),
    ];
    for (i, (what, cut)) in cuts.into_iter().enumerate() {
        let port = cutting_proxy(upstream.clone(), cut).await;
        let via = StoreConfig::new(format!("http://127.0.0.1:{port}"), store.database.clone());
        let written_ms = 1_800_000_000_000 + i as u64;
        let mut writer = Writer::new(&campaign, Carried::default());
        for n in 0..ROWS {
            let e = event(u128::from(n) + (i as u128) * 1_000_000);
            writer.push(&format!("v_{n:05}"), written_ms, Some(&e));
        }
        let insert = writer.into_insert().expect("rows");
        let sent = insert.execute(&via.client()).await;
        // The server may still be reading or writing what it got.
        let client = store.client();
        ensemble_tests::poll_until(
            "the cut INSERT to end on the server",
            std::time::Duration::from_secs(10),
            || async {
                let running: u64 = client
                    .query("SELECT count() FROM system.processes WHERE query_id = ?")
                    .bind(insert.marker.query_id())
                    .fetch_one()
                    .await
                    .expect("processes");
                (running == 0).then_some(())
            },
        )
        .await;
        let landed: u64 = client
            .query("SELECT count() FROM ledger WHERE written_ms = ?")
            .bind(written_ms)
            .fetch_one()
            .await
            .expect("count");
        assert!(
            landed == 0 || landed == ROWS,
            "{what}: {landed} of {ROWS} rows landed ({sent:?})"
        );
        if i == 0 {
            assert!(sent.is_ok(), "{sent:?}");
            assert_eq!(landed, ROWS, "{what}");
        }
        if what.contains("byte lost") || what.contains("half") || what.contains("first bytes") {
            assert_eq!(landed, 0, "{what}: cut inside the block");
        }
    }
}

/// The tables the migrations make hold the figures' columns as the model's
/// catalogue declares them (`figures::COLUMNS`: names and types); the
/// ledger carries its sets as text; the paths' delays' table and the
/// analysts' journeys hold the columns of the sets the ledger carries to
/// them, with their types.
#[tokio::test]
async fn the_figures_tables_hold_the_catalogues_columns() {
    let store = ensemble_tests::migrated_database("it_catalogue").await;
    let columns = |table: &'static str| {
        let client = store.client();
        let db = store.database.clone();
        async move {
            let mut got: Vec<(String, String)> = client
                .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                .bind(db)
                .bind(table)
                .fetch_all()
                .await
                .expect("columns");
            got.sort();
            got
        }
    };
    let mut want: Vec<(String, String)> = ensemble_model::figures::COLUMNS
        .iter()
        .map(|c| (c.name.to_owned(), c.sql_type.to_owned()))
        .collect();
    want.sort();
    assert_eq!(columns("figures").await, want, "figures");
    assert_eq!(columns("figures_ranges").await, want, "figures_ranges");
    // The ledger carries each set as text (`ledger::carried`).
    let ledger = columns("ledger").await;
    for set in ensemble_core::ledger::carried::names() {
        assert!(
            ledger.contains(&(set.to_owned(), "String".to_owned())),
            "ledger.{set}: {ledger:?}"
        );
    }
    assert!(
        !ledger.iter().any(|(n, _)| n.contains('.')),
        "no arrays left"
    );
    let typed = |declared: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = declared
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        columns("paths_delays_ranges").await,
        typed(&ensemble_core::ledger::DELAY_COLUMNS),
        "paths_delays_ranges"
    );
    // The analysts' journeys: the carried columns but the contact.
    let journeys: Vec<(&str, &str)> = ensemble_core::ledger::JOURNEY_COLUMNS
        .into_iter()
        .filter(|(n, _)| *n != "contact")
        .collect();
    let got: Vec<(String, String)> = {
        let mut got: Vec<(String, String)> = store
            .client()
            .query(
                "SELECT name, type FROM system.columns WHERE database = ? AND table = 'journeys'",
            )
            .bind(store.sql_database())
            .fetch_all()
            .await
            .expect("columns");
        got.sort();
        got
    };
    assert_eq!(got, typed(&journeys), "journeys");
}

/// A batch's history is read in one query of up to 20 000 visitor ids
/// (`ledger::read`), past ClickHouse's default 256 KiB `max_query_size`:
/// the visitors the ledger has come back, the others do not.
#[tokio::test]
async fn a_batchs_history_is_read_for_twenty_thousand_visitors_at_once() {
    let store = ensemble_tests::migrated_database("it_history_read").await;
    let client = store.client();
    let campaign =
        ensemble_core::Campaign::load(&ensemble_tests::campaign_file()).expect("campaign");
    let ts = Utc
        .with_ymd_and_hms(2025, 2, 14, 8, 30, 0)
        .single()
        .expect("ts");
    let rows: Vec<EventRow> = (0..4)
        .map(|i| EventRow::new(&message(i, ts), Default::default(), ts))
        .collect();
    ensemble_core::ledger::account(&client, &campaign, &rows)
        .await
        .expect("account");
    // Long ids, as hashed visitor ids are: the query text is ~1.2 MB.
    let mut ids: Vec<String> = (0..20_000)
        .map(|i| format!("absent-visitor-{i:06}-{}", "x".repeat(40)))
        .collect();
    ids.extend(rows.iter().map(|r| r.visitor_id.clone()));
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let read = ensemble_core::ledger::read(&client, &ids)
        .await
        .expect("one read of 20 004 ids");
    let mut found: Vec<&str> = read.keys().map(String::as_str).collect();
    found.sort_unstable();
    assert_eq!(
        found,
        [
            "visitor-0000",
            "visitor-0001",
            "visitor-0002",
            "visitor-0003"
        ]
    );
    assert!(read.values().all(|events| events.len() == 1));
    drop_database(&store).await;
}

/// Drops a test's database once it is done with it.
async fn drop_database(store: &StoreConfig) {
    store
        .server_client()
        .query(&format!("DROP DATABASE {}", store.database))
        .execute()
        .await
        .expect("drop test database");
}
