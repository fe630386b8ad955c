//! The page in headless Chromium shows the API's figures.

use super::*;

/// Headless Chromium on `url` (the page's size, 15 s of virtual time).
pub(crate) fn chromium_run(
    url: &str,
    profile: &std::path::Path,
    extra: &[String],
) -> impl std::future::Future<Output = std::io::Result<std::process::Output>> {
    let mut extra = extra.to_vec();
    extra.push("--window-size=1400,1900".into());
    let mut cmd = ensemble_tests::chromium(url, profile, 15_000, &extra);
    async move { cmd.output().await }
}

/// The DOM Chromium dumped once the page had loaded everything.
pub(crate) async fn page_dom(
    run: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> String {
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("chromium within 90 s")
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "page finished loading: {}",
        &dom[..dom.len().min(2000)]
    );
    dom
}

/// Headless Chromium (Debian's `chromium`) loads the page with a token; the
/// KPI figures in its DOM are the API's; a screenshot is kept in the target dir.
#[tokio::test]
async fn the_page_in_chromium_shows_the_apis_figures() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_page"));
    load(&store).await;
    let api = serve(&store).await;
    let (_, overview) = api.get("/api/overview", Some(ANALYST)).await;
    let totals = overview["current"]["totals"].clone();

    let (status, page) = api.get("/", None).await;
    assert_eq!(status, 200, "the page holds no data: it asks for the token");
    assert!(
        page.as_str().is_some_and(|p| !p.contains(ANALYST)),
        "and never carries one"
    );
    let url = format!("{}/?token={ANALYST}", api.base);
    let profile = tempfile::tempdir().expect("profile dir");
    let run = |extra: &[String]| chromium_run(&url, profile.path(), extra);
    let dom = page_dom(run(&["--dump-dom".into()])).await;
    let kpi = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("{id} in DOM"))
            + id.len()
            + 6;
        dom[start..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(kpi("kpi-visitors"), totals["visitors"].to_string());
    assert_eq!(kpi("kpi-signups"), totals["signups"].to_string());
    assert_eq!(
        kpi("kpi-scans"),
        totals["events_by_type"]["qr_scan"].to_string()
    );
    assert_eq!(
        kpi("kpi-pageviews"),
        totals["events_by_type"]["page_view"].to_string()
    );
    assert_eq!(
        kpi("kpi-conversion"),
        "100 %",
        "conversion rate 1.0 shown in French"
    );
    assert!(dom.contains("class=\"bar\""), "attribution bars drawn");
    // The conversion paths: each of the API's top paths a row with its
    // counts, each length a bar; the data-driven models in the switch.
    let (_, paths) = api.get("/api/paths?limit=10", Some(ANALYST)).await;
    let lines = paths["paths"].as_array().expect("paths");
    assert!(!lines.is_empty(), "{paths}");
    for p in lines {
        let row = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            p["path"].as_str().unwrap_or_default().replace('>', "&gt;"),
            p["conversions"],
            p["without_signup"]
        );
        assert!(dom.contains(&row), "paths table row {row}");
    }
    for l in paths["lengths"].as_array().expect("lengths") {
        let bar = format!("class=\"length-bar\" data-length=\"{}\"", l["length"]);
        assert!(dom.contains(&bar), "path length bar {bar}");
    }
    for m in ["markov", "shapley"] {
        assert!(
            dom.contains(&format!("value=\"{m}\"")),
            "{m} in the model switch"
        );
    }
    // The KPIs' change against the period before (before the campaign:
    // nothing, so every KPI with something rises).
    assert!(
        dom.contains("id=\"delta-visitors\" data-before=\"0\"> ▲</small>"),
        "visitors' change shown"
    );
    // The scan heatmap: one cell per weekday × hour with the API's count.
    let (_, hours) = api.get("/api/scan-hours", Some(ANALYST)).await;
    for c in hours["cells"].as_array().expect("cells") {
        let cell = format!(
            "data-weekday=\"{}\" data-hour=\"{}\" data-scans=\"{}\"",
            c["weekday"], c["hour"], c["scans"]
        );
        assert!(dom.contains(&cell), "heatmap cell {cell}");
    }
    // The reach report: each placement's row carries the API's counts, and
    // a ratio without a value shows "—".
    let (_, media) = api.get("/api/media", Some(AGENCY)).await;
    let table = &dom[dom.find("id=\"media\"").expect("media table")..];
    for p in media["placements"].as_array().expect("placements") {
        let start = format!(
            "<tr><td>{}</td><td>{}</td>",
            p["code"].as_str().unwrap_or_default(),
            p["channel"].as_str().unwrap_or_default()
        );
        let at = table
            .find(&start)
            .unwrap_or_else(|| panic!("media row {start}"));
        let row = &table[at..at + table[at..].find("</tr>").unwrap_or(0)];
        let counts = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            p["scans"], p["reached_visitors"], p["signups"]
        );
        assert!(row.contains(&counts), "{row} has {counts}");
        if p["cost_per_signup_eur"].is_null() {
            assert!(row.ends_with("<td>—</td>"), "{row}");
        }
    }
    // The device breakdown: each line of the API, in its order.
    let (_, devices) = api.get("/api/devices", Some(ANALYST)).await;
    let table = &dom[dom.find("id=\"devices\"").expect("devices table")..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    let mut from = 0;
    let lines = devices["lines"].as_array().expect("lines");
    assert!(lines.len() >= 4, "{devices}");
    for l in lines {
        let channel = match l["channel"].as_str().unwrap_or_default() {
            "*" => "tous les canaux",
            c => c,
        };
        let row = format!(
            "<tr><td>{channel}</td><td>{}</td><td>{}</td><td>{}</td>",
            l["device_class"].as_str().unwrap_or_default(),
            l["os_family"].as_str().unwrap_or_default(),
            l["visitors"]
        );
        let at = table[from..]
            .find(&row)
            .unwrap_or_else(|| panic!("device row {row} in order"));
        from += at + row.len();
    }
    // The uplift: a row per phase with its counted days; the fixture has
    // nothing before the campaign, so no interval, and the note says why.
    let (_, uplift) = api.get("/api/uplift", Some(ANALYST)).await;
    let table = &dom[dom.find("id=\"uplift\"").expect("uplift table")..];
    for p in uplift["phases"].as_array().expect("phases") {
        assert_eq!(p["reason"], "no_baseline_days", "{p}");
        let row = format!(
            "<tr><td>{}</td><td>{}</td>",
            p["phase"].as_str().unwrap_or_default(),
            p["days"]
        );
        assert!(table.contains(&row), "uplift row {row}");
    }
    assert!(
        dom.contains("Pas d'intervalle : aucun jour de référence"),
        "the uplift note says why there is no interval"
    );
    assert!(
        dom.contains("class=\"phase-band\""),
        "time series with phase bands"
    );

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        run(&[format!("--screenshot={}", shot.display())]),
    )
    .await
    .expect("chromium within 90 s")
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot: {} bytes",
        png.len()
    );
}
