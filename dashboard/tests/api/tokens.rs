//! Tokens, roles and hostile filters.

use super::*;

#[tokio::test]
async fn tokens_and_hostile_filters() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_auth"));
    load(&store).await;
    let api = serve(&store).await;
    assert_eq!(api.get("/api/overview", None).await.0, 401);
    assert_eq!(
        api.get("/api/overview", Some("not-a-token-0123456789"))
            .await
            .0,
        401
    );
    // A token in the URL is not read: it would end up in histories, logs
    // and Referer headers.
    let (status, body) = api
        .get(&format!("/api/overview?token={AGENCY}"), None)
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api
        .get(&format!("/api/overview?token={AGENCY}"), Some(AGENCY))
        .await;
    assert_eq!(
        (status, &body["parameter"]),
        (400, &serde_json::json!("token")),
        "{body}"
    );
    // Answers are not cached and leak no Referer; errors carry a request id.
    let r = api
        .http
        .get(format!("{}/api/overview?from=-262143-01-01", api.base))
        .bearer_auth(ANALYST)
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status().as_u16(),
        400,
        "a year no one means is a 400, not a panic"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let id = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["request_id"], serde_json::json!(id));
    assert_eq!(body["parameter"], "from");
    // source=events audits the figures: the team's tool, not the agency's.
    let (status, body) = api.get("/api/overview?source=events", Some(AGENCY)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        api.get("/api/overview?source=events", Some(ANALYST))
            .await
            .0,
        200
    );
    assert_eq!(api.get("/healthz", None).await.0, 200);
    assert_eq!(api.get("/metrics", None).await.0, 200);

    let hostile = [
        ("from", "2025-01-01' OR 1=1 --"),
        ("to", "2025-02-01'); DROP TABLE events; --"),
        ("phase", "p1' OR '1'='1"),
        ("channel", "metro' OR 1=1 --"),
        ("placement", "M-CHATELET' --"),
        ("device", "mobile\\' OR 1"),
        ("bots", "include'"),
        ("format", "csv' --"),
    ];
    let mut params: HashMap<&str, &str> = HashMap::new();
    for (k, v) in hostile {
        params.clear();
        params.insert(k, v);
        for path in [
            "/api/overview",
            "/api/attribution",
            "/api/channels",
            "/api/placements",
            "/api/funnel",
        ] {
            let r = api
                .http
                .get(format!("{}{path}", api.base))
                .query(&params)
                .bearer_auth(ANALYST)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 400, "{path}?{k}={v}");
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["parameter"], k, "{body}");
        }
    }
    // A parameter an endpoint does not read is refused, never ignored.
    for (path, parameter) in [
        ("/api/devices?limit=5", "query"),
        ("/api/devices?limit=-1", "query"),
        ("/api/overview?model=markov", "query"),
        ("/api/channels?bucket=hour", "query"),
        ("/api/attribution?limit=3", "query"),
        ("/api/funnel?visitor_id=v_fixture_c", "query"),
        ("/api/paths?limit=-1", "limit"),
        ("/api/attribution?model=nope", "model"),
        ("/api/timeseries?metric=events&bucket=week", "bucket"),
    ] {
        let (status, body) = api.get(path, Some(ANALYST)).await;
        assert_eq!(
            (status, body["parameter"].as_str()),
            (400, Some(parameter)),
            "{path}: {body}"
        );
    }
    // model= answers that model alone, with the credits of the full answer.
    let (_, every) = api.get("/api/attribution", Some(ANALYST)).await;
    for model in ["last_touch", "markov"] {
        let (status, one) = api
            .get(&format!("/api/attribution?model={model}"), Some(ANALYST))
            .await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["models"], serde_json::json!([model]));
        assert_eq!(one["conversions"], every["conversions"]);
        for part in [
            "by_channel",
            "intervals",
            "overlapping",
            "by_channel_phase",
            "by_conversion_phase",
        ] {
            let kept: Vec<&String> = one[part]
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert!(kept.iter().all(|k| k.as_str() == model), "{part}: {kept:?}");
            assert_eq!(one[part][model], every[part][model], "{model} {part}");
        }
    }
    let (status, csv) = api
        .get("/api/attribution?model=markov&format=csv", Some(ANALYST))
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap_or_default();
    let lines: Vec<&str> = csv.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("markov,")),
        "{csv}"
    );
    // CSV of the tables.
    for (path, header, line) in [
        (
            "/api/placements?format=csv",
            "code,channel,label,scans,scans_filtered,unique_scanners,visits,signups,rate,cost_per_signup_eur",
            "M-CHATELET,metro,",
        ),
        (
            "/api/channels?format=csv",
            "channel,phase,touches,visitors,visits,signups,conversion_rate,cost_per_signup_eur",
            "site,p3-8-mars,0,2,0,2,1.0,",
        ),
        (
            "/api/funnel?format=csv",
            "channel,touched,visited,signed_up,median_seconds_to_signup",
            "gares,1,0,0,",
        ),
    ] {
        let r = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(AGENCY)
            .send()
            .await
            .expect("csv");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let text = r.text().await.expect("text");
        assert!(
            text.starts_with(&format!("\u{feff}{header}\r\n")),
            "{path}: {text}"
        );
        assert!(text.contains(&format!("\r\n{line}")), "{path}: {text}");
    }
    // The table is still there and the numbers unchanged.
    let (status, overview) = api.get("/api/overview", Some(ANALYST)).await;
    assert_eq!(status, 200);
    assert_eq!(overview["current"]["totals"]["visitors"], 4);
    // Requests are counted by route template and status.
    let r = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics");
    let text = r.text().await.expect("text");
    let n = |series: &str| ensemble_tests::metric_value(&text, series).unwrap_or(0.0);
    assert!(
        n("ensemble_dashboard_requests_total{route=\"/api/overview\",status=\"200\"}") >= 2.0,
        "{text}"
    );
    assert!(
        n("ensemble_dashboard_requests_total{route=\"/api/overview\",status=\"400\"}") >= 8.0,
        "{text}"
    );
    assert!(
        n("ensemble_dashboard_requests_total{route=\"/api/overview\",status=\"401\"}") >= 2.0,
        "{text}"
    );
    // Without a token nothing is read: no campaign, channel or comparison
    // is named in a 400 to a stranger.
    for probe in [
        "/api/overview?campaign=no-such-campaign",
        "/api/channels?compare=next",
        "/api/overview?channel=nope&phase=nope",
    ] {
        let (status, body) = api.get(probe, None).await;
        assert_eq!(status, 401, "{probe}: {body}");
        assert_eq!(body["error"], "unauthorized", "{probe}: {body}");
    }
    // A client that keeps sending wrong tokens waits, whatever it sends next.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            api.get("/api/overview", Some("guess-0123456789abcdef"))
                .await
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(api.get("/api/overview", Some(ANALYST)).await.0, 429);
}
