//! Maintenance: erasure takes a person's rows and nobody else's, in every
//! campaign; retention drops old months; rebuilds give the same figures.

use super::*;

#[tokio::test]
async fn erasure_removes_a_contacts_visitors_and_retention_drops_old_months() {
    let s = setup(migrated_database("it_proc_erase").await).await;
    let hasher = ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let mut messages: Vec<_> = (0..400).map(|i| message(5, i)).collect();
    // Visitor v_visitor_00004 (no other sign-up) signs up as jeanne; all of that visitor's rows must go.
    let target = "v_visitor_00004";
    let mut signup = message(5, 100_000);
    signup.event_type = EventType::Signup;
    signup.visitor_id = target.into();
    signup.contact_hash = Some(hasher.contact_hash("Jeanne.Dupont@example.fr"));
    signup.action = None;
    signup.placement = None;
    messages.push(signup);
    // One old event for retention.
    let mut old = message(5, 100_001);
    old.ts = Utc
        .with_ymd_and_hms(2020, 3, 1, 12, 0, 0)
        .single()
        .expect("ts");
    messages.push(old);
    produce_raw(&s.brokers, &s.topic, &encoded(&messages))
        .await
        .expect("produce");
    {
        // Stopped with SIGTERM: it leaves the group, so the processor
        // started for the later batch gets the partitions at once (a
        // killed member stays in tansu's group until the survivors'
        // 30 s watchdog).
        let mut p = s.start(&[]);
        s.wait_for(402).await;
        p.terminate(Duration::from_secs(10));
    }
    let targets_rows = messages.iter().filter(|m| m.visitor_id == target).count() as u64;
    assert!(targets_rows > 1);

    let common = [
        "--campaign",
        &campaign_file().display().to_string(),
        "--clickhouse-url",
        &s.store.url,
        "--clickhouse-database",
        &s.store.database,
    ]
    .map(str::to_owned);
    let mut args: Vec<&str> = vec!["erase", "--email", " jeanne.dupont@EXAMPLE.fr "];
    args.extend(common.iter().map(String::as_str));
    let (code, stderr) = run_binary(BIN, &args, &[]);
    assert_eq!(
        code,
        Some(2),
        "erase without the secret is refused: {stderr}"
    );
    assert!(stderr.contains("--contact-secret"));
    let out = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .env("ENSEMBLE_CONTACT_SECRET", SECRET)
        .output()
        .expect("erase");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 visitors (1 only theirs"), "{stdout}");
    assert!(
        stdout.contains(&format!("{targets_rows} rows deleted")),
        "{stdout}"
    );
    let sql = format!("SELECT count() FROM events WHERE visitor_id = '{target}'");
    assert_eq!(s.count(&sql).await, 0);
    // Nothing of the person anywhere: not their visitor id, not their
    // contact, in whatever column or array of whatever row.
    let hash = messages
        .iter()
        .find_map(|m| m.contact_hash.clone().filter(|_| m.visitor_id == target))
        .expect("the sign-up's contact");
    for value in [target, hash.as_str()] {
        assert_eq!(
            s.columns_holding(value).await,
            Vec::<String>::new(),
            "{value}"
        );
    }
    assert_eq!(s.uniq_events().await, 402 - targets_rows);

    // Keep everything since 2024-01-01, whatever today is: 2025 stays, March 2020 goes.
    let days = (Utc::now().date_naive()
        - chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"))
    .num_days()
    .to_string();
    let mut args: Vec<&str> = vec!["retention", "--days", &days];
    args.extend(common.iter().map(String::as_str));
    let (code, _) = run_binary(BIN, &["retention", "--days", "0"], &[]);
    assert_eq!(code, Some(2), "zero days refused");
    // More days than the calendar holds (it panicked): nothing is that old.
    let mut ages: Vec<&str> = vec!["retention", "--days", "4000000000"];
    ages.extend(common.iter().map(String::as_str));
    let (code, stderr) = run_binary(BIN, &ages, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        s.count("SELECT count() FROM events WHERE toYear(ts) = 2020")
            .await,
        1
    );
    // The analysts' journeys hold the old event's rows (its touch).
    let journeys = |cond: &str| {
        format!(
            "SELECT count() FROM {}.journeys WHERE {cond}",
            s.store.sql_database()
        )
    };
    let old_rows = journeys(
        "(kind = 'placement_day' AND day < '2024-01-01') \
         OR (kind != 'placement_day' AND ms < 1704067200000)",
    );
    assert!(
        s.count(&old_rows).await > 0,
        "the old event's journeys rows"
    );
    let out = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .output()
        .expect("retention");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("dropped events partition 202003: 1 rows"),
        "{stdout}"
    );
    assert_eq!(
        s.count("SELECT count() FROM events WHERE toYear(ts) = 2020")
            .await,
        0
    );
    assert_eq!(s.uniq_events().await, 401 - targets_rows);
    // Nor in the journeys once retention returns: the old event's rows
    // go, not only their sums (withdrawn, they would stay until ClickHouse
    // merged them), nor in the arrays other ledger rows carried.
    assert_eq!(s.count(&old_rows).await, 0, "old journeys rows deleted");
    let journey = ensemble_core::ledger::carried::set("journey");
    let carried_old = format!(
        "SELECT count() FROM ledger WHERE {}",
        journey.any_sql(&format!(
            "{ms} > 0 AND {ms} < 1704067200000",
            ms = journey.field_sql("ms", "r")
        ))
    );
    assert_eq!(s.count(&carried_old).await, 0, "nor carried");
    // Only what summed to zero went: the figures and journeys equal those
    // rebuilt from the events left.
    let retained = stored_snapshot(&s.store).await;
    // The subcommand's old name still works (ops scripts may use it).
    let mut args: Vec<&str> = vec!["rebuild-facts"];
    args.extend(common.iter().map(String::as_str));
    let (code, stderr) = run_binary(BIN, &args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stored_snapshot(&s.store).await,
        retained,
        "as rebuilt from the events"
    );

    // `compact` (daily): each figures table in one part, the figures as
    // they were, and the arrays the ledger's rows carried to the figures
    // (those of a batch accounted after the retention's) emptied.
    let later: Vec<_> = (0..20).map(|i| message(6, i)).collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&later))
        .await
        .expect("produce");
    {
        let _p = s.start(&[]);
        s.wait_for(421 - targets_rows).await;
    }
    let carried = "SELECT count() FROM ledger WHERE change != '' OR journey != ''";
    assert!(
        s.count(carried).await > 0,
        "the new batch's rows carry arrays"
    );
    let before = stored_snapshot(&s.store).await;
    let mut args: Vec<&str> = vec!["compact"];
    args.extend(common.iter().map(String::as_str));
    let out = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .output()
        .expect("compact");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for table in ensemble_core::compact::FIGURES_TABLES {
        assert!(
            stdout.contains(&format!("{table} merged into one part")),
            "{stdout}"
        );
        let sql = format!(
            "SELECT count() FROM system.parts WHERE database = '{}' AND table = '{table}' AND active",
            s.store.database
        );
        // One part, or none for a table without rows (no sign-up of
        // these events has a path with a delay).
        let rows = s.count(&format!("SELECT count() FROM {table}")).await;
        assert_eq!(
            s.count(&sql).await,
            u64::from(rows > 0),
            "{table}: {rows} rows"
        );
        if table == ensemble_core::ranges::DELAYS_TABLE {
            // Its rows but the batch markers (rounding 0).
            let rows = s
                .count(&format!("SELECT count() FROM {table} WHERE rounding != 0"))
                .await;
            let delays = s
                .count("SELECT count() FROM figures_ranges WHERE figure = 'paths_delays'")
                .await;
            assert_eq!(rows > 0, delays > 0, "{rows} rows for {delays} delays");
        }
    }
    assert!(stdout.contains("ledger's carried sets emptied"), "{stdout}");
    assert_eq!(s.count(carried).await, 0, "no array left in the ledger");
    assert_eq!(stored_snapshot(&s.store).await, before, "the same figures");
}

/// One event of a person in the erasure tests: `kind` by `visitor` at
/// `at` (a QR scan of M-CHATELET), a sign-up with `contact_hash` and its
/// consent when given.
fn person_event(
    id: u32,
    visitor: &str,
    kind: EventType,
    contact_hash: Option<String>,
    at: DateTime<Utc>,
) -> EventMessage {
    let mut m = message(12, id);
    m.visitor_id = visitor.into();
    m.event_type = kind;
    m.ts = at;
    m.received_at = at;
    m.placement = (kind == EventType::QrScan).then(|| "M-CHATELET".into());
    m.utm = Utm::default();
    m.action = None;
    m.consent = contact_hash.as_ref().map(|_| Consent {
        results: true,
        newsletter: false,
    });
    m.contact_hash = contact_hash;
    m
}

/// Erasure takes a person's rows and nobody else's: the visitor ids only
/// they used lose everything; a hashed id several people share behind one
/// network (same phone model, same day) and a device someone else also
/// signed up from lose only that person's rows. A person whose events
/// retention already dropped is still found through the contact pairs.
/// Run twice, nothing more changes; the figures equal a rebuild from what
/// is left.
#[tokio::test]
async fn erasure_takes_the_persons_rows_and_nobody_elses() {
    use ensemble_processor::maintenance;
    let s = setup(migrated_database("it_proc_erase_people").await).await;
    let campaign = ensemble_core::Campaign::load(&campaign_file()).expect("campaign");
    let hasher = ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let mut n = 0u32;
    let mut ev = |visitor: &str, kind: EventType, contact: Option<&str>, minutes: i64| {
        n += 1;
        let at = Utc
            .with_ymd_and_hms(2025, 2, 10, 9, 0, 0)
            .single()
            .expect("ts")
            + chrono::Duration::minutes(minutes);
        person_event(
            200_000 + n,
            visitor,
            kind,
            contact.map(|c| hasher.contact_hash(c)),
            at,
        )
    };
    let nat = "h_0123456789abcdef0123456789abcd"; // one phone model, one carrier address, one day
    let mut people = vec![
        // Alice: her own phone, and a sign-up from the shared hashed id.
        ev("v_alice_phone_001", EventType::QrScan, None, 0),
        ev("v_alice_phone_001", EventType::PageView, None, 1),
        ev(
            "v_alice_phone_001",
            EventType::Signup,
            Some("alice@exemple.fr"),
            2,
        ),
        ev(nat, EventType::PageView, None, 10),
        ev(nat, EventType::Signup, Some("alice@exemple.fr"), 11),
        // Bob, behind the same network with the same phone model.
        ev(nat, EventType::QrScan, None, 20),
        ev(nat, EventType::Signup, Some("bob@exemple.fr"), 21),
        // Chloé and Dan on one family tablet.
        ev("v_family_tablet_01", EventType::PageView, None, 30),
        ev(
            "v_family_tablet_01",
            EventType::Signup,
            Some("chloe@exemple.fr"),
            31,
        ),
        ev(
            "v_family_tablet_01",
            EventType::Signup,
            Some("dan@exemple.fr"),
            32,
        ),
    ];
    // Eve signed up in 2020: retention drops her month, her contact pairs stay.
    let mut old = ev(
        "v_eve_laptop_0001",
        EventType::Signup,
        Some("eve@exemple.fr"),
        0,
    );
    old.ts = Utc
        .with_ymd_and_hms(2020, 3, 1, 12, 0, 0)
        .single()
        .expect("ts");
    old.received_at = old.ts;
    people.push(old);
    let crowd: Vec<_> = (0..300).map(|i| message(12, i)).collect();
    let all: Vec<_> = crowd.iter().chain(&people).cloned().collect();
    produce_raw(&s.brokers, &s.topic, &encoded(&all))
        .await
        .expect("produce");
    {
        let _p = s.start(&[]);
        s.wait_for(all.len() as u64).await;
    }
    // The processor made the view that sums the figures by range on this
    // empty database at start: it holds every value, summed per range.
    let summed = |when: &'static str| {
        let store = s.store.clone();
        let campaign = campaign.clone();
        async move {
            let n = ensemble_tests::summed_ranges_agree(&store, &campaign)
                .await
                .unwrap_or_else(|e| panic!("{when}: figures_ranges disagrees with figures: {e}"));
            assert!(n > 100, "{when}: only {n} values compared");
        }
    };
    assert_eq!(
        ensemble_core::ranges::state(&s.store.client())
            .await
            .expect("state")
            .map(|(_, whole)| whole),
        Some(true),
        "made whole at the processor's start"
    );
    summed("accounted").await;
    let days = (Utc::now().date_naive()
        - chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"))
    .num_days() as u32;
    maintenance::retention(&s.store, &campaign, days, WAIT)
        .await
        .expect("retention");
    let pairs = |contact: &str| {
        let hash = hasher.contact_hash(contact);
        let store = s.store.clone();
        async move {
            store
                .client()
                .query("SELECT (SELECT count() FROM contact_visitors WHERE contact_hash = ?) + (SELECT count() FROM shared_contacts WHERE contact_hash = ?)")
                .bind(&hash)
                .bind(&hash)
                .fetch_one::<u64>()
                .await
                .expect("pairs")
        }
    };
    assert!(
        pairs("eve@exemple.fr").await > 0,
        "retention left Eve's contact pairs"
    );
    // Alice signed up on her phone, then behind the shared id: the
    // analysts' views count her once, at her phone's sign-up, and no table
    // they read holds a contact hash.
    let sql_db = s.store.sql_database();
    let signups_of = |who: &str| {
        let sql = format!(
            "SELECT toString(event_id) FROM events WHERE contact_hash = '{}' ORDER BY ts",
            hasher.contact_hash(who)
        );
        let client = s.store.client();
        async move {
            client
                .query(&sql)
                .fetch_all::<String>()
                .await
                .expect("sign-ups")
        }
    };
    let alice = signups_of("alice@exemple.fr").await;
    assert_eq!(alice.len(), 2);
    let converted: Vec<String> = s
        .store
        .client()
        .query(&format!(
            "SELECT toString(signup_event_id) FROM {sql_db}.conversions \
             WHERE toString(signup_event_id) IN ('{}', '{}')",
            alice[0], alice[1]
        ))
        .fetch_all()
        .await
        .expect("conversions");
    assert_eq!(converted, [alice[0].clone()], "one conversion, her first");
    assert!(
        stored_snapshot(&s.store)
            .await
            .keys()
            .any(|k| k.starts_with("later_conversions|") && k.ends_with(&alice[1])),
        "her second sign-up is a later conversion"
    );
    let credited = s
        .count(&format!(
            "SELECT uniqExact(signup_event_id) FROM {sql_db}.credits \
             WHERE toString(signup_event_id) IN ('{}', '{}')",
            alice[0], alice[1]
        ))
        .await;
    assert_eq!(credited, 1, "credited once");
    let columns: Vec<String> = s
        .store
        .client()
        .query(&format!(
            "SELECT concat(table, '.', name) FROM system.columns WHERE database = '{sql_db}' \
             AND name LIKE '%contact%'"
        ))
        .fetch_all()
        .await
        .expect("columns");
    assert!(columns.is_empty(), "the analysts' tables hold {columns:?}");
    let mut erased_signups: BTreeMap<&str, String> = BTreeMap::new();
    for who in ["alice@exemple.fr", "chloe@exemple.fr", "eve@exemple.fr"] {
        // Eve's sign-up went with retention: none.
        let ids: Vec<String> = signups_of(who)
            .await
            .iter()
            .map(String::as_str)
            .chain(["ffffffff-ffff-ffff-ffff-ffffffffffff"])
            .map(|id| format!("toUUID('{id}')"))
            .collect();
        erased_signups.insert(who, ids.join(","));
    }
    let erase = |email: &'static str| {
        let databases = ensemble_core::CampaignDatabases::one(campaign.clone(), s.store.clone());
        let hasher = hasher.clone();
        async move {
            maintenance::erase(&databases, &hasher, email, Duration::from_secs(120))
                .await
                .expect("erase")
        }
    };

    let eve = erase("eve@exemple.fr").await;
    assert_eq!(eve.own_visitors, vec!["v_eve_laptop_0001".to_owned()]);
    assert_eq!(
        pairs("eve@exemple.fr").await,
        0,
        "found after retention, pairs gone"
    );

    let alice = erase("alice@exemple.fr").await;
    assert_eq!(alice.own_visitors, vec!["v_alice_phone_001".to_owned()]);
    assert_eq!(alice.shared_visitors, vec![nat.to_owned()]);
    assert_eq!(
        alice.rows_deleted, 4,
        "her phone's three rows and her sign-up behind the NAT"
    );
    let chloe = erase("chloe@exemple.fr").await;
    assert!(chloe.own_visitors.is_empty());
    assert_eq!(chloe.shared_visitors, vec!["v_family_tablet_01".to_owned()]);
    assert_eq!(chloe.rows_deleted, 1);

    let count = |sql: &'static str| s.count(sql);
    assert_eq!(
        count("SELECT count() FROM events WHERE visitor_id = 'v_alice_phone_001'").await,
        0
    );
    let sql = format!(
        "SELECT count() FROM {}.journeys WHERE visitor_id = 'v_alice_phone_001'",
        s.store.sql_database()
    );
    assert_eq!(s.count(&sql).await, 0, "her phone's journeys rows gone");
    // Bob's conversion stays, behind the shared id.
    let sql = format!(
        "SELECT count() FROM {}.conversions WHERE visitor_id = '{nat}'",
        s.store.sql_database()
    );
    assert_eq!(s.count(&sql).await, 1, "Bob's conversion stays");
    let gone = ["alice@exemple.fr", "chloe@exemple.fr", "eve@exemple.fr"];
    for who in gone {
        let h = hasher.contact_hash(who);
        let sql = format!(
            "SELECT (SELECT count() FROM events WHERE contact_hash = '{h}') + \
             (SELECT count() FROM ledger WHERE ev_contact = '{h}') + \
             (SELECT count() FROM contact_visitors WHERE contact_hash = '{h}') + \
             (SELECT count() FROM shared_contacts WHERE contact_hash = '{h}') + \
             (SELECT count() FROM {sql}.journeys WHERE event_id IN ({signups})) + \
             (SELECT count() FROM {sql}.later_conversions WHERE event_id IN ({signups}))",
            sql = s.store.sql_database(),
            signups = erased_signups[who]
        );
        assert_eq!(s.count(&sql).await, 0, "{who}: nothing left anywhere");
    }
    // Nobody else's rows went: Bob's and Dan's sign-ups, the shared ids' views.
    for who in ["bob@exemple.fr", "dan@exemple.fr"] {
        let h = hasher.contact_hash(who);
        let sql = format!("SELECT count() FROM events WHERE contact_hash = '{h}'");
        assert_eq!(s.count(&sql).await, 1, "{who}'s sign-up stays");
        assert!(pairs(who).await > 0, "{who}'s contact pair stays");
    }
    let sql = format!("SELECT uniqExact(event_id) FROM events WHERE visitor_id = '{nat}'");
    assert_eq!(
        s.count(&sql).await,
        3,
        "the shared id keeps Bob's scan and sign-up and the view"
    );
    assert_eq!(
        count("SELECT uniqExact(event_id) FROM events WHERE visitor_id = 'v_family_tablet_01'")
            .await,
        2
    );
    let crowd_ids = s.uniq_events().await;
    assert_eq!(crowd_ids, 300 + 5, "the crowd untouched");
    s.assert_figures_match_events().await;

    // Again: nothing more to do, nothing changes.
    let figures = stored_snapshot(&s.store).await;
    let again = erase("alice@exemple.fr").await;
    assert_eq!(again.rows_deleted, 0, "{again:?}");
    assert_eq!(
        stored_snapshot(&s.store).await,
        figures,
        "a second run changes no figure"
    );
    summed("erased").await;
    // And the figures are what a rebuild from the rows left gives.
    ensemble_core::rebuild::rebuild(&s.store, &campaign, |_| {})
        .await
        .expect("rebuild");
    assert_eq!(
        stored_snapshot(&s.store).await,
        figures,
        "withdrawn exactly"
    );
    summed("rebuilt").await;
    // Summed anew from the figures as they are (`rebuild-ranges`).
    assert_eq!(
        ensemble_core::ranges::refill(&s.store, &campaign)
            .await
            .expect("refill"),
        ensemble_core::ranges::Status::Whole
    );
    summed("refilled").await;
}

/// With last year's campaign beside this year's, in its own database:
/// Alice signed up last year and came back this year without signing up
/// again (the same phone). Erasing her e-mail removes her rows from both
/// databases — this year's found through last year's sign-up — and leaves
/// Bob's, in both, as they were.
#[tokio::test]
async fn erasure_covers_every_campaign_and_nobody_elses() {
    use ensemble_processor::maintenance;
    let s = setup(migrated_database("it_proc_erase_years").await).await;
    let last_store = migrated_database("it_proc_erase_years_last").await;
    let dir = tempfile::tempdir().expect("dir");
    let last_file = dir.path().join("2024.toml");
    let text = std::fs::read_to_string(campaign_file()).expect("campaign");
    std::fs::write(
        &last_file,
        ensemble_tests::live::moved_campaign_toml(&text, -364, "vivre-ensemble-2024")
            .expect("last year"),
    )
    .expect("write");
    let also = format!("{}={}", last_file.display(), last_store.database);
    let hasher = ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let mut n = 0u32;
    let mut ev = |visitor: &str, kind: EventType, contact: Option<&str>, year: i32| {
        n += 1;
        let at = Utc
            .with_ymd_and_hms(year, 2, 12, 9, 0, 0)
            .single()
            .expect("ts")
            + chrono::Duration::minutes(i64::from(n));
        person_event(
            300_000 + n,
            visitor,
            kind,
            contact.map(|c| hasher.contact_hash(c)),
            at,
        )
    };
    let people = vec![
        ev("v_alice_phone_001", EventType::QrScan, None, 2024),
        ev(
            "v_alice_phone_001",
            EventType::Signup,
            Some("alice@exemple.fr"),
            2024,
        ),
        ev("v_alice_phone_001", EventType::QrScan, None, 2025),
        ev("v_alice_phone_001", EventType::PageView, None, 2025),
        ev("v_bob_phone_00001", EventType::QrScan, None, 2024),
        ev("v_bob_phone_00001", EventType::QrScan, None, 2025),
        ev(
            "v_bob_phone_00001",
            EventType::Signup,
            Some("bob@exemple.fr"),
            2025,
        ),
    ];
    produce_raw(&s.brokers, &s.topic, &encoded(&people))
        .await
        .expect("produce");
    let rows = |store: StoreConfig, visitor: &'static str| async move {
        // A tombstone (no event, no contact) marks where her ledger ended.
        let sql = "SELECT (SELECT count() FROM events WHERE visitor_id = ?) \
                   + (SELECT count() FROM ledger WHERE visitor_id = ? AND tombstone = 0)";
        store
            .client()
            .query(sql)
            .bind(visitor)
            .bind(visitor)
            .fetch_one::<u64>()
            .await
            .expect("count")
    };
    {
        let _p = s.start(&["--also-campaign", &also]);
        poll_until("both years' events in their databases", WAIT, || async {
            let now = rows(s.store.clone(), "v_alice_phone_001").await;
            let then = rows(last_store.clone(), "v_alice_phone_001").await;
            // Each event once in `events` and once in the ledger.
            (now == 4 && then == 4).then_some(())
        })
        .await;
        poll_until("Bob's too", WAIT, || async {
            let now = rows(s.store.clone(), "v_bob_phone_00001").await;
            let then = rows(last_store.clone(), "v_bob_phone_00001").await;
            (now == 4 && then == 2).then_some(())
        })
        .await;
    }
    let databases = ensemble_core::CampaignDatabases::load(
        &campaign_file(),
        &s.store,
        std::slice::from_ref(&also),
    )
    .expect("databases");
    let report = maintenance::erase(&databases, &hasher, "alice@exemple.fr", WAIT)
        .await
        .expect("erase");
    assert_eq!(report.own_visitors, vec!["v_alice_phone_001".to_owned()]);
    // The ledger's rows before her tombstone go by a mutation (reads skip
    // them meanwhile).
    poll_until("Alice gone from both years", WAIT, || async {
        let now = rows(s.store.clone(), "v_alice_phone_001").await;
        let then = rows(last_store.clone(), "v_alice_phone_001").await;
        (now == 0 && then == 0).then_some(())
    })
    .await;
    assert_eq!(rows(s.store.clone(), "v_bob_phone_00001").await, 4);
    assert_eq!(rows(last_store.clone(), "v_bob_phone_00001").await, 2);
}

/// Retention and erasure remove what this version stores, where it stores
/// it: on a database `migrate` has not brought up to this version (here
/// 0013's record forgotten: before it, an hourly rollup held every event
/// id again) they refuse, say which migrations and what to run, and touch
/// nothing; once migrated, they run.
#[tokio::test]
async fn retention_and_erasure_refuse_a_database_not_migrated() {
    let store = migrated_database("it_proc_unmigrated").await;
    let pending = || async {
        ensemble_core::migrate::pending(&store)
            .await
            .expect("pending")
    };
    assert_eq!(pending().await, Vec::<u32>::new());
    store
        .client()
        .query("ALTER TABLE schema_migrations DELETE WHERE version = 13")
        .execute()
        .await
        .expect("forget 0013");
    poll_until("0013's record deleted", WAIT, || async {
        (pending().await == vec![13]).then_some(())
    })
    .await;
    let common = [
        "--campaign",
        &campaign_file().display().to_string(),
        "--clickhouse-url",
        &store.url,
        "--clickhouse-database",
        &store.database,
    ]
    .map(str::to_owned);
    let run = |command: &[&str]| {
        let mut args = command.to_vec();
        args.extend(common.iter().map(String::as_str));
        run_binary(BIN, &args, &[("ENSEMBLE_CONTACT_SECRET", SECRET)])
    };
    for command in [
        &["retention", "--days", "30"][..],
        &["erase", "--email", "jeanne.dupont@example.fr"][..],
    ] {
        let (code, stderr) = run(command);
        assert_ne!(code, Some(0), "{command:?}: {stderr}");
        assert!(
            stderr.contains("migrations [13] are not applied")
                && stderr.contains("run `ensemble-processor migrate` first"),
            "{command:?}: {stderr}"
        );
    }
    ensemble_core::migrate::migrate(&store)
        .await
        .expect("migrate");
    assert_eq!(pending().await, Vec::<u32>::new());
    let (code, stderr) = run(&["retention", "--days", "30"]);
    assert_eq!(code, Some(0), "{stderr}");
}
