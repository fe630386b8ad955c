//! Two campaigns side by side, each with its own figures.

use super::*;

/// Two campaigns side by side: last year's (the shipped file 52 weeks
/// earlier, in its own database, holding the fixture moved 52 weeks
/// earlier) beside the shipped one. Each answers its own hand-computed
/// numbers when named by `campaign=`, `/api/years` aligns them phase by
/// phase, and the page shows a campaign switch and the year-over-year
/// table with the API's numbers.
#[tokio::test]
async fn two_campaigns_answer_their_own_figures_and_side_by_side() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_years"));
    load(&store).await;
    let text = std::fs::read_to_string(campaign_file()).expect("campaign file");
    let dir = tempfile::tempdir().expect("dir");
    let last_file = dir.path().join("2024.toml");
    std::fs::write(
        &last_file,
        ensemble_tests::live::moved_campaign_toml(&text, -364, "vivre-ensemble-2024")
            .expect("last year"),
    )
    .expect("write");
    let last = Campaign::load(&last_file).expect("last year's campaign");
    let last_store = StoreConfig::new(clickhouse_url(), unique("it_dash_years_last"));
    let moved: Vec<EventRow> = fixture()
        .into_iter()
        .map(|mut r| {
            r.ts -= chrono::Duration::days(364);
            r.received_at -= chrono::Duration::days(364);
            r
        })
        .collect();
    // Last year's store also holds the days just before this year's
    // campaign (they follow its calendar): four sign-ups from 01-14 to
    // 01-16, the baseline of this year's uplift.
    let mut moved = moved;
    moved.extend(enrich(
        &[
            ("v_before_1", "2025-01-14T10:00:00Z"),
            ("v_before_2", "2025-01-15T09:00:00Z"),
            ("v_before_3", "2025-01-15T16:00:00Z"),
            ("v_before_4", "2025-01-16T11:00:00Z"),
        ]
        .iter()
        .enumerate()
        .map(|(i, (visitor, ts))| Ev {
            contact: Some(["b1", "b2", "b3", "b4"][i]),
            ..ev(900 + i as u128, visitor, ts, EventType::Signup)
        })
        .collect::<Vec<_>>(),
    ));
    load_rows_of(&last_store, &last, moved).await;
    let api = serve_with(
        &store,
        &[format!("{}={}", last_file.display(), last_store.database)],
    )
    .await;

    // Each campaign its own figures: the hand-computed ones, both years.
    for q in [
        "",
        "?campaign=vivre-ensemble-2025",
        "?campaign=vivre-ensemble-2024",
    ] {
        let (s1, overview) = api.get(&format!("/api/overview{q}"), Some(ANALYST)).await;
        let (s2, attribution) = api.get(&format!("/api/attribution{q}"), Some(AGENCY)).await;
        assert_eq!((s1, s2), (200, 200), "{q}: {overview} {attribution}");
        check(&overview, &attribution);
    }
    // This year's uplift reads its baseline where those days are stored;
    // its own store starts on 01-20.
    let (status, uplift) = api.get("/api/uplift", Some(ANALYST)).await;
    assert_eq!(status, 200, "{uplift}");
    let base = &uplift["baseline"];
    assert_eq!(base["first_day"], "2025-01-14", "{uplift}");
    let values: Vec<&Value> = base["daily"]
        .as_array()
        .expect("daily")
        .iter()
        .map(|d| &d["value"])
        .collect();
    assert_eq!(values, [1, 2, 1], "{uplift}");
    assert!(uplift["phases"][0]["low_95"].is_number(), "{uplift}");
    let (_, y2024) = api
        .get(
            "/api/timeseries?metric=signups&bucket=day&campaign=vivre-ensemble-2024",
            Some(ANALYST),
        )
        .await;
    assert_eq!(
        y2024["phases"][0]["starts_at"], "2024-01-18T23:00:00Z",
        "{y2024}"
    );
    // Phase ids and placement codes are the campaign's own.
    let (status, body) = api.get("/api/overview?campaign=nope", Some(ANALYST)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["parameter"], "campaign", "{body}");
    let (status, _) = api
        .get("/api/years?phase=p1-lancement", Some(ANALYST))
        .await;
    assert_eq!(status, 400, "years takes no phase");
    let (status, _) = api.get("/api/campaigns", None).await;
    assert_eq!(status, 401, "the list needs a token too");

    let (_, list) = api.get("/api/campaigns", Some(ANALYST)).await;
    assert_eq!(list[0]["id"], "vivre-ensemble-2024", "{list}");
    assert_eq!(
        list[1]["current"], true,
        "the last one started answers by default"
    );
    let (_, years) = api.get("/api/years", Some(AGENCY)).await;
    assert_eq!(
        years["campaigns"],
        serde_json::json!(["vivre-ensemble-2024", "vivre-ensemble-2025"])
    );
    let phases = years["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3);
    let mut signups = 0;
    for a in phases {
        let (y0, y1) = (&a["by_campaign"][0], &a["by_campaign"][1]);
        assert_eq!(y0["phase"], y1["phase"], "the same phase, a year apart");
        assert_eq!(y0["totals"], y1["totals"], "the same fixture, a year apart");
        signups += y1["totals"]["signups"].as_u64().unwrap_or(0);
    }
    assert_eq!(signups, 4, "the fixture's sign-ups, phase by phase");
    let (status, csv) = api.get("/api/years?format=csv", Some(ANALYST)).await;
    assert_eq!(status, 200);
    let csv = csv
        .as_str()
        .expect("csv text")
        .trim_start_matches('\u{feff}');
    assert!(
        csv.starts_with("phase_index,campaign,phase,metric,value\r\n")
            && csv.contains("1,vivre-ensemble-2024,p1-lancement,signups,"),
        "{csv}"
    );

    // The page: the switch lists both, this year selected; the table puts
    // each phase of each year with the API's numbers and the change.
    let url = format!("{}/?token={ANALYST}", api.base);
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = page_dom(chromium_run(&url, profile.path(), &["--dump-dom".into()])).await;
    assert!(
        dom.contains("<label id=\"campaign-box\">"),
        "the switch is shown"
    );
    assert!(
        dom.contains("<option value=\"vivre-ensemble-2024\">")
            && dom.contains("<option value=\"vivre-ensemble-2025\" selected=\"\">"),
        "both campaigns, this year selected"
    );
    let table = &dom[dom.find("id=\"years\"").expect("years table")..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    for a in phases {
        for (i, y) in a["by_campaign"]
            .as_array()
            .expect("years")
            .iter()
            .enumerate()
        {
            let t = &y["totals"];
            // The same sign-ups as the year before: "=" (none either
            // year) or "= 0 %".
            let change = match (i, t["signups"].as_u64()) {
                (0, _) => "",
                (_, Some(0)) => "=",
                _ => "= 0 %",
            };
            let row = format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                a["index"],
                y["campaign"].as_str().unwrap_or_default(),
                y["phase"].as_str().unwrap_or_default(),
                t["visitors"],
                t["signups"]
            );
            let at = table
                .find(&row)
                .unwrap_or_else(|| panic!("years row {row} in {table}"));
            let line = &table[at..at + table[at..].find("</tr>").unwrap_or(0)];
            assert!(line.ends_with(&format!("<td>{change}</td>")), "{line}");
        }
    }
}
