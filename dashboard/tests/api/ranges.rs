//! The figures summed by range: read only when whole, an upgrade that adds
//! a table, and wide visitors on every range.

use super::*;

/// The default questions (the campaign, a phase) read `figures_ranges`
/// while its state says it is whole for the dashboard's campaign, and
/// `figures` otherwise: shown here by emptying one table at a time, each
/// dashboard started afresh (it checks the state at most every 10 s).
#[tokio::test]
async fn default_questions_read_the_figures_summed_by_range_only_when_whole() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_ranges"));
    load(&store).await;
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    assert!(
        ensemble_tests::summed_ranges_agree(&store, &campaign)
            .await
            .expect("agree")
            > 50
    );
    let signups = |api: &Api, query: &'static str| {
        let (base, http) = (api.base.clone(), api.http.clone());
        async move {
            let r = http
                .get(format!("{base}/api/overview{query}"))
                .bearer_auth(ANALYST)
                .send()
                .await
                .expect("overview");
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.expect("json");
            v["current"]["totals"]["signups"].as_u64().expect("signups")
        }
    };
    // Hand-computed (`fixture`): 4 sign-ups, 2 of them in phase 3;
    // phases 2 and 3 together are no summed range.
    let api = serve(&store).await;
    assert_eq!(signups(&api, "").await, 4);
    assert_eq!(signups(&api, "?phase=p3-8-mars").await, 2);
    let custom = signups(&api, "?from=2025-02-08&to=2025-03-16").await;
    assert_eq!(custom, 4);
    drop(api);
    let client = store.client();
    // `figures` emptied: the summed ranges still answer, other ranges not.
    client
        .query("TRUNCATE TABLE figures")
        .execute()
        .await
        .expect("truncate");
    let api = serve(&store).await;
    assert_eq!(
        signups(&api, "").await,
        4,
        "the campaign from figures_ranges"
    );
    assert_eq!(
        signups(&api, "?phase=p3-8-mars").await,
        2,
        "a phase from figures_ranges"
    );
    assert_eq!(
        signups(&api, "?from=2025-02-08&to=2025-03-16").await,
        0,
        "any other range from figures"
    );
    drop(api);
    // Not whole (as after an upgrade, before rebuild-ranges): `figures`.
    client
        .query("INSERT INTO figures_ranges_state (written_ms, ranges, whole, note) SELECT max(written_ms) + 1, any(ranges), 0, 'test' FROM figures_ranges_state")
        .execute()
        .await
        .expect("state");
    let api = serve(&store).await;
    assert_eq!(
        signups(&api, "").await,
        0,
        "figures_ranges unused while partial"
    );
}

/// The paths' delays table made anew, empty, on a database summed by
/// range (as migrations 0009 and 0012 do: they record the summed tables
/// partial, `migrate::RESUMMED`): the paths are answered from `figures`
/// until `rebuild-ranges`, which fills the new table; the hand-computed
/// paths and medians hold at each step, and the new table agrees with
/// `figures_ranges` after.
#[tokio::test]
async fn a_paths_delays_table_made_anew_reads_figures_until_rebuild_ranges() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_delays"));
    load(&store).await;
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let client = store.client();
    let delay_rows = || async {
        store
            .client()
            .query("SELECT count() FROM paths_delays_ranges")
            .fetch_one::<u64>()
            .await
            .expect("count")
    };
    assert!(delay_rows().await > 0, "filled by its view");
    let api = serve(&store).await;
    check_paths(&api).await;
    drop(api);
    // As a migration leaves it: no view, the table made again, empty.
    let views: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = ? AND startsWith(name, 'paths_delays_ranges_mv_')")
        .bind(&store.database)
        .fetch_all()
        .await
        .expect("views");
    assert_eq!(views.len(), 1, "{views:?}");
    let made: String = client
        .query("SHOW CREATE TABLE paths_delays_ranges")
        .fetch_one()
        .await
        .expect("its DDL");
    for sql in [
        format!("DROP TABLE {}", views[0]),
        "DROP TABLE paths_delays_ranges".to_owned(),
        made,
    ] {
        client.query(&sql).execute().await.expect(&sql);
    }
    ensemble_core::ranges::outdated(&client, "the paths' delays table made anew")
        .await
        .expect("recorded partial");
    assert!(!ensemble_core::ranges::usable(&client, &campaign)
        .await
        .expect("usable"));
    assert_eq!(delay_rows().await, 0);
    // The processor at start makes the view, and says what to run.
    assert_eq!(
        ensemble_core::ranges::ensure(&store, &campaign)
            .await
            .expect("ensure"),
        ensemble_core::ranges::Status::Partial
    );
    let api = serve(&store).await;
    check_paths(&api).await;
    drop(api);
    assert_eq!(
        ensemble_core::ranges::refill(&store, &campaign)
            .await
            .expect("refill"),
        ensemble_core::ranges::Status::Whole
    );
    assert!(delay_rows().await > 0, "filled by rebuild-ranges");
    ensemble_tests::summed_ranges_agree(&store, &campaign)
        .await
        .expect("agree after the refill");
    let api = serve(&store).await;
    check_paths(&api).await;
}

/// Visitors active on many days are stored over whole phases: the stored
/// answers for phases and the campaign, and for ranges that cut a phase
/// (the dashboard recomputes the wide visitors there), equal the events'.
#[tokio::test]
async fn wide_visitors_answer_every_range_exactly() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_wide"));
    load_rows(&store, wide_fixture()).await;
    let listed: u64 = store
        .client()
        .query("SELECT uniqExact(visitor_id) FROM wide_visitors")
        .fetch_one()
        .await
        .expect("wide visitors");
    assert_eq!(listed, 2, "W and the bot Y are wide, X is not");
    let api = serve(&store).await;
    compare_with_events(
        &api,
        &[
            "",
            "bots=include",
            "phase=p1-lancement",
            "phase=p2-saint-valentin&bots=include",
            // Cutting phase 1, phase 2, both; before X's sign-up; W's second.
            "from=2025-02-03&to=2025-02-12",
            "from=2025-02-01&to=2025-02-07&bots=include",
            "from=2025-02-09&to=2025-02-21",
            "from=2025-01-31&to=2025-02-11&phase=p2-saint-valentin",
            "from=2025-02-05&to=2025-02-24&device=mobile",
            "placement=M-REPUBLIQUE&from=2025-02-02&to=2025-02-10&bots=include",
            "channel=metro&from=2025-02-04&to=2025-02-16",
        ],
    )
    .await;
    let (status, overview) = api
        .get("/api/overview?from=2025-02-09&to=2025-02-21", Some(ANALYST))
        .await;
    assert_eq!(status, 200, "{overview}");
    let totals = &overview["current"]["totals"];
    assert_eq!(
        (&totals["visitors"], &totals["signups"]),
        (&serde_json::json!(2), &serde_json::json!(1)),
        "W and X (Y is a bot); three sign-ups of one contact: {overview}"
    );
}
