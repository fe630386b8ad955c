//! QR codes from the campaign file, read by a decoder we did not write
//! (`rqrr`): every placement's PNG, every placement's SVG as Chromium draws
//! it, and the files of `ensemble-dashboard qr-codes`, each decodes to that
//! placement's `/r/{code}` URL on the collector; and a scan of that URL
//! through the real collector and processor is counted for the placement.

use std::collections::BTreeMap;
use std::time::Duration;

use ensemble_core::Campaign;
use ensemble_tests::live::live_campaign_toml;
use ensemble_tests::{
    campaign_file, group_progress, poll_until, workspace_binary, Service, Wiring,
};

const AGENCY: &str = "qr-test-agency-token-0123456789";
const ANALYST: &str = "qr-test-analyst-token-0123456789";

/// Grey levels of a PNG: (width, height, pixels).
fn grey(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("png");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("frame");
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let pixels = (0..w * h)
        .map(|i| {
            let p = &buf[i * channels..(i + 1) * channels];
            if channels >= 3 {
                ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8
            } else {
                p[0]
            }
        })
        .collect();
    (w, h, pixels)
}

/// The QR codes `rqrr` finds in the `cell`-pixel square at (`x`, `y`).
fn decode_region(img: &(usize, usize, Vec<u8>), x: usize, y: usize, cell: usize) -> Vec<String> {
    let (w, h, pixels) = img;
    let (cw, ch) = (cell.min(w - x), cell.min(h - y));
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(cw, ch, |px, py| pixels[(y + py) * w + x + px]);
    prepared
        .detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, text)| text))
        .collect()
}

/// Every QR code `rqrr` finds in a PNG.
fn decode_png(bytes: &[u8]) -> Vec<String> {
    let img = grey(bytes);
    let (w, h) = (img.0, img.1);
    decode_region(&img, 0, 0, w.max(h))
}

/// SVGs drawn by headless Chromium, one per 300-pixel cell of a page: the
/// code each cell holds.
async fn decode_svgs(svgs: &[String]) -> Vec<String> {
    const CELL: usize = 300;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian chromium is installed by deploy/local/test");
    let dir = tempfile::tempdir().expect("dir");
    let cells: String = svgs
        .iter()
        .map(|s| format!("<div style=\"padding:30px;width:240px;height:240px\">{s}</div>"))
        .collect();
    let page = dir.path().join("codes.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><html><body style=\"margin:0;background:#fff;display:grid;\
             grid-template-columns:repeat(4,{CELL}px);grid-auto-rows:{CELL}px\">{cells}</body></html>"
        ),
    )
    .expect("page");
    let shot = dir.path().join("codes.png");
    let rows = svgs.len().div_ceil(4);
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--window-size={},{}", 4 * CELL, rows * CELL))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true)
        .output()
        .await
        .expect("chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = grey(&std::fs::read(&shot).expect("screenshot"));
    (0..svgs.len())
        .flat_map(|i| decode_region(&img, (i % 4) * CELL, (i / 4) * CELL, CELL))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_placements_qr_code_decodes_to_its_scan_url_and_a_scan_counts_for_it() {
    // The calendar moved so that today is in a phase: today's scans count.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let text = std::fs::read_to_string(campaign_file()).expect("campaign file");
    let campaign_dir = tempfile::tempdir().expect("dir");
    let campaign_path = campaign_dir.path().join("campaign.toml");
    std::fs::write(
        &campaign_path,
        live_campaign_toml(&text, today).expect("live calendar"),
    )
    .expect("write campaign");
    let campaign = Campaign::load(&campaign_path).expect("campaign");
    let wiring = Wiring::new("qr").await;
    let Wiring {
        brokers,
        topic,
        group,
        ..
    } = &wiring;
    let c = campaign_path.display().to_string();
    let kafka = wiring.kafka_args();
    let ch = wiring.clickhouse_args();
    let mut args = vec![
        "--campaign",
        &c,
        "--contact-secret",
        "qr-test-contact-secret-0123",
    ];
    args.extend(kafka);
    let collector =
        Service::start(&workspace_binary("ensemble-ingest"), &args, &[]).expect("ingest");
    let public = collector.base();
    let mut args = vec!["--campaign", &c, "--group-id", &group];
    args.extend(kafka);
    args.extend(ch);
    let processor =
        Service::start(&workspace_binary("ensemble-processor"), &args, &[]).expect("processor");
    let mut args = vec![
        "--campaign",
        &c,
        "--analyst-tokens",
        ANALYST,
        "--agency-tokens",
        AGENCY,
        "--processor-group",
        &group,
        "--collector-public-url",
        &public,
    ];
    args.extend(kafka);
    args.extend(ch);
    let dashboard =
        Service::start(&workspace_binary("ensemble-dashboard"), &args, &[]).expect("dashboard");
    for (s, name) in [
        (&collector, "ingest"),
        (&processor, "processor"),
        (&dashboard, "dashboard"),
    ] {
        s.wait_ready(name, Duration::from_secs(60)).await;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let fetch = |path: String| {
        let req = http
            .get(format!("{}{path}", dashboard.base()))
            .bearer_auth(AGENCY);
        async move {
            let r = req.send().await.expect("qr");
            assert_eq!(r.status().as_u16(), 200, "{path}");
            (
                r.headers()["content-type"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned(),
                r.bytes().await.expect("bytes").to_vec(),
            )
        }
    };

    let want: BTreeMap<String, String> = campaign
        .placements
        .iter()
        .map(|p| (format!("{public}/r/{}", p.code), p.code.clone()))
        .collect();
    let mut svgs = Vec::new();
    for p in &campaign.placements {
        let (ty, png) = fetch(format!("/api/placements/{}/qr.png?size=400", p.code)).await;
        assert_eq!(ty, "image/png");
        assert_eq!(
            decode_png(&png),
            vec![format!("{public}/r/{}", p.code)],
            "{}",
            p.code
        );
        let (ty, svg) = fetch(format!("/api/placements/{}/qr.svg?size=240", p.code)).await;
        assert_eq!(ty, "image/svg+xml");
        svgs.push(String::from_utf8(svg).expect("svg"));
    }
    let mut from_svg = decode_svgs(&svgs).await;
    from_svg.sort();
    assert_eq!(
        from_svg,
        want.keys().cloned().collect::<Vec<_>>(),
        "every SVG, as Chromium draws it"
    );
    // Refusals say what is wrong.
    for (path, status) in [
        ("/api/placements/NO-SUCH/qr.png", 404),
        ("/api/placements/M-CHATELET/qr.gif", 404),
        ("/api/placements/M-CHATELET/qr.png?size=5", 400),
        ("/api/placements/M-CHATELET/qr.png?margin=99", 400),
    ] {
        let r = http
            .get(format!("{}{path}", dashboard.base()))
            .bearer_auth(AGENCY)
            .send()
            .await
            .expect("req");
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    let r = http
        .get(format!(
            "{}/api/placements/M-CHATELET/qr.png",
            dashboard.base()
        ))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 401, "a token is needed");

    // A phone scans each code: the collector counts it for that placement.
    for url in want.keys() {
        let r = http
            .get(url)
            .header("user-agent", "Mozilla/5.0 (iPhone) Mobile")
            .send()
            .await
            .expect("scan");
        assert_eq!(r.status().as_u16(), 302, "{url}");
    }
    poll_until(
        "the scans to be processed",
        Duration::from_secs(120),
        || async {
            let (done, high) = group_progress(brokers, topic, group).await.ok()?;
            (done == high && high as usize == want.len()).then_some(())
        },
    )
    .await;
    let placements = dashboard.get_json("/api/placements", ANALYST);
    for code in want.values() {
        let row = placements["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["code"] == *code))
            .unwrap_or_else(|| panic!("no row {code}: {placements}"));
        assert_eq!(row["scans"], 1, "{code}: {row}");
    }

    // The command writes the same codes, and the printable sheets.
    // With last year's campaign beside it (one poster of its own): its
    // codes go in a directory of their own.
    let last_path = campaign_dir.path().join("last-year.toml");
    let last_text = text.replace("code = \"M-CHATELET\"", "code = \"M-CHATELET-24\"");
    std::fs::write(
        &last_path,
        ensemble_tests::live::moved_campaign_toml(&last_text, -364, "last-year").expect("move"),
    )
    .expect("write last year");
    let also = format!("{}=last_year", last_path.display());
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(workspace_binary("ensemble-dashboard"))
        .args(["qr-codes", "--out"])
        .arg(dir.path())
        .args([
            "--campaign",
            &c,
            "--also-campaign",
            &also,
            "--collector-public-url",
            &public,
            "--size",
            "300",
        ])
        .env_clear()
        .output()
        .expect("qr-codes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (url, code) in &want {
        let png = std::fs::read(dir.path().join(format!("{code}.png"))).expect("png file");
        assert_eq!(decode_png(&png), vec![url.clone()], "{code}.png");
        assert!(dir.path().join(format!("{code}.svg")).exists());
    }
    let last = dir.path().join("last-year").join("M-CHATELET-24.png");
    let png = std::fs::read(&last).expect("last year's own poster");
    assert_eq!(
        decode_png(&png),
        vec![format!("{}/r/M-CHATELET-24", public.trim_end_matches('/'))],
        "{}",
        last.display()
    );
    assert!(
        !dir.path().join("M-CHATELET-24.png").exists(),
        "not among this year's"
    );
    let sheet = std::fs::read_to_string(dir.path().join("sheet-1.svg")).expect("sheet");
    assert!(sheet.contains("width=\"210mm\""), "an A4 page");
    for p in campaign
        .placements
        .iter()
        .take(ensemble_dashboard::qr::PER_SHEET)
    {
        assert!(
            sheet.contains(&format!(">{}<", p.code)),
            "{} on the sheet",
            p.code
        );
    }
}
