//! The page's layout at a phone's width and a laptop's, measured in
//! Chromium rather than looked at in a screenshot.

use super::*;

/// Loads the page (with its token) in an iframe `{WIDTH}` pixels wide and,
/// once it has loaded everything, lists what a reader would stumble on
/// into `#report` as JSON: the page scrolling sideways (a wide table must
/// scroll inside its panel), a word split across two lines (a placement
/// code, a path, a number: "M-CHA / TELET"), a control of the header or a
/// KPI outside the screen. The test serves it beside the page (same
/// origin, so that it may read the page's document).
const HARNESS: &str = r##"<!doctype html>
<html><body style="margin:0">
<iframe id="page" src="/?token={TOKEN}" style="width:{WIDTH}px;height:4000px;border:0"></iframe>
<pre id="report"></pre>
<script>
function name(el) {
  return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.closest("[id]") && !el.id ? " in #" + el.closest("[id]").id : "");
}
let polls = 0;
function check() {
  let d = null;
  try { d = document.getElementById("page").contentDocument; } catch (e) { return done(["cannot read the page: " + e]); }
  if (!d || !d.body || d.body.dataset.loaded !== "true") {
    polls += 1;
    if (polls < 150) return setTimeout(check, 100);
    return done(["the page did not finish loading in 15 s: " + (d ? d.URL + " " + d.readyState : "no document")]);
  }
  const width = d.documentElement.clientWidth;
  const found = [];
  if (d.documentElement.scrollWidth > width + 1) {
    found.push("the page scrolls sideways: " + d.documentElement.scrollWidth + " px for " + width);
  }
  const walker = d.createTreeWalker(d.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest("script, style, option, [hidden]")) continue;
    const words = /\S+/g;
    for (let m = words.exec(n.textContent); m; m = words.exec(n.textContent)) {
      const r = d.createRange();
      r.setStart(n, m.index);
      r.setEnd(n, m.index + m[0].length);
      const lines = new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.bottom)));
      if (lines.size > 1) found.push("\"" + m[0] + "\" split over " + lines.size + " lines in " + name(el));
    }
  }
  for (const el of d.querySelectorAll("header label, header button, header select, header h1, .kpi")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.left < -1 || r.right > width + 1)) {
      found.push(name(el) + " outside the screen: " + Math.round(r.left) + "–" + Math.round(r.right) + " px of " + width);
    }
  }
  done(found.slice(0, 40));
}
function done(found) {
  document.getElementById("report").textContent = JSON.stringify(found);
}
check();
</script>
</body></html>
"##;

/// At 390 px (a phone) and 1 400 px (a laptop): the page never scrolls
/// sideways, no word is split across two lines, the header's controls and
/// the KPIs stay on the screen.
#[tokio::test]
async fn the_page_reads_at_a_phones_and_a_laptops_width() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_layout"));
    load(&store).await;
    let api = serve_app(app(&store, &[]).route(
        "/layout-check/{width}",
        axum::routing::get(
            |axum::extract::Path(width): axum::extract::Path<u32>| async move {
                axum::response::Html(
                    HARNESS
                        .replace("{TOKEN}", ANALYST)
                        .replace("{WIDTH}", &width.to_string()),
                )
            },
        ),
    ))
    .await;
    for width in [390, 1400] {
        let profile = tempfile::tempdir().expect("profile dir");
        let url = format!("{}/layout-check/{width}", api.base);
        let mut cmd = ensemble_tests::chromium(
            &url,
            profile.path(),
            20_000,
            &["--dump-dom".into(), "--window-size=1500,1900".into()],
        );
        let out = tokio::time::timeout(std::time::Duration::from_secs(90), cmd.output())
            .await
            .expect("chromium within 90 s")
            .expect("chromium runs");
        let dom = String::from_utf8_lossy(&out.stdout);
        let report = dom
            .split_once("<pre id=\"report\">")
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(report, _)| {
                report
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&")
            })
            .unwrap_or_default();
        let found: Vec<String> = serde_json::from_str(&report).unwrap_or_else(|e| {
            panic!(
                "{width} px: no report ({e}); the page did not load in the frame: {}",
                &dom[..dom.len().min(2000)]
            )
        });
        assert!(found.is_empty(), "{width} px: {found:#?}");
    }
}
