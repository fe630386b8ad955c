//! CSV downloads read back by Python's csv and by LibreOffice (French Excel).

use super::*;

/// `soffice` (Debian's LibreOffice), installed by deploy/local/test.
fn soffice() -> &'static str {
    [
        "/usr/bin/soffice",
        "/usr/bin/libreoffice",
        "/usr/lib/libreoffice/program/soffice",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("LibreOffice (libreoffice-calc-nogui) is installed by deploy/local/test")
}

/// Reads a CSV file with Python's `csv` module: every row's cells.
fn python_csv(path: &std::path::Path, delimiter: &str) -> Vec<Vec<String>> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys\n\
             with open(sys.argv[1], encoding='utf-8-sig', newline='') as f:\n\
             \x20   print(json.dumps(list(csv.reader(f, delimiter=sys.argv[2]))))",
        ])
        .arg(path)
        .arg(delimiter)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows")
}

/// Converts `file` with LibreOffice headless into `dir`; the new file.
fn libreoffice(
    file: &std::path::Path,
    to: &str,
    filter: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new(soffice())
        .arg(format!(
            "-env:UserInstallation=file://{}",
            profile.path().display()
        ))
        .args(["--headless", "--norestore"])
        .arg(format!("--infilter={filter}"))
        .args(["--convert-to", to, "--outdir"])
        .arg(dir)
        .arg(file)
        .output()
        .expect("soffice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ext = to.split(':').next().unwrap_or(to);
    let made = dir.join(file.with_extension(ext).file_name().expect("name"));
    assert!(
        made.exists(),
        "{}: {}",
        made.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    made
}

/// A CSV download opens as French Excel opens it: a UTF-8 byte-order mark,
/// `;` between fields and decimal commas with `lang=fr`, a file name that
/// says what it holds. Read back with Python's `csv`, and with LibreOffice
/// (imported as a French user's spreadsheet, saved as .xlsx, exported again
/// as an English CSV): the accented labels survive and the numbers are the
/// numbers of the plain (English) CSV, read as numbers.
#[tokio::test]
async fn csv_downloads_open_in_french_excel() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_csv"));
    load(&store).await;
    let api = serve(&store).await;
    let dir = tempfile::tempdir().expect("dir");
    let (mut accents, mut fractions) = (false, false);
    for endpoint in ["placements", "attribution"] {
        let get = |query: &'static str| {
            let req = api
                .http
                .get(format!("{}/api/{endpoint}?format=csv{query}", api.base))
                .bearer_auth(AGENCY);
            async move {
                let r = req.send().await.expect("csv");
                assert_eq!(r.status().as_u16(), 200);
                let disposition = r.headers()["content-disposition"]
                    .to_str()
                    .expect("header")
                    .to_owned();
                (disposition, r.bytes().await.expect("bytes"))
            }
        };
        let (_, en_bytes) = get("").await;
        let (disposition, fr_bytes) = get("&lang=fr").await;
        assert_eq!(
            disposition,
            format!("attachment; filename=\"vivre-ensemble-2025_{endpoint}.csv\"")
        );
        assert!(
            fr_bytes.starts_with(b"\xef\xbb\xbf"),
            "{endpoint}: a byte-order mark"
        );
        let en_file = dir.path().join(format!("{endpoint}-en.csv"));
        let fr_file = dir.path().join(format!("{endpoint}.csv"));
        std::fs::write(&en_file, &en_bytes).expect("write");
        std::fs::write(&fr_file, &fr_bytes).expect("write");
        let en = python_csv(&en_file, ",");
        assert!(en.len() > 2, "{endpoint}: rows to check");
        // Each cell of the French file against the plain one: the same
        // text, a number with its decimal comma.
        let compare = |other: &[Vec<String>], decimal: char, how: &str| {
            assert_eq!(other.len(), en.len(), "{how}: rows");
            for (a, b) in en.iter().zip(other) {
                assert_eq!(a.len(), b.len(), "{how}: {a:?} vs {b:?}");
                for (x, y) in a.iter().zip(b) {
                    match x.parse::<f64>() {
                        Ok(n) if !x.is_empty() => {
                            let m: f64 = y.replace(decimal, ".").parse().unwrap_or_else(|_| {
                                panic!(
                                    "{how}: `{y}` is not the number {x} written with `{decimal}`"
                                )
                            });
                            assert!((m - n).abs() < 1e-9, "{how}: {y} vs {x}");
                        }
                        _ => assert_eq!(x, y, "{how}"),
                    }
                }
            }
        };
        let fr = python_csv(&fr_file, ";");
        compare(
            &fr,
            ',',
            &format!("{endpoint}: Python csv of the French file"),
        );
        for (a, b) in en.iter().flatten().zip(fr.iter().flatten()) {
            if a.contains('.') && a.parse::<f64>().is_ok() {
                assert!(
                    b.contains(',') && !b.contains('.'),
                    "decimal comma: {a} → {b}"
                );
            }
        }
        accents |= fr.iter().flatten().any(|c| !c.is_ascii());
        fractions |= en
            .iter()
            .flatten()
            .any(|c| c.parse::<f64>().is_ok_and(|n| n.fract() != 0.0));
        // As a French spreadsheet (`;`, UTF-8, French locale 1036), saved as
        // .xlsx, written out again as an English CSV (`,`, 1033): a number
        // LibreOffice had read as text would come back with its comma.
        let xlsx = libreoffice(&fr_file, "xlsx", "CSV:59,34,76,1,,1036", dir.path());
        let back = dir.path().join(format!("{endpoint}-back"));
        std::fs::create_dir_all(&back).expect("dir");
        let again = libreoffice(
            &xlsx,
            "csv:Text - txt - csv (StarCalc):44,34,76,1,,1033",
            "Calc MS Excel 2007 XML",
            &back,
        );
        compare(
            &python_csv(&again, ","),
            '.',
            &format!("{endpoint}: LibreOffice .xlsx"),
        );
    }
    assert!(accents, "accented labels were checked");
    assert!(fractions, "decimal numbers were checked");
}
