//! CSV downloads that Excel opens right: a byte-order mark, the locale's
//! separator and decimal mark, a file name naming campaign, endpoint and
//! filters.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use ensemble_core::Campaign;
use serde::Serialize;
use serde_json::Value;

use crate::filters::{CsvDialect, Filters};

/// How one CSV download is written and named (from the request's filters).
#[derive(Debug, Clone)]
pub struct Export {
    pub dialect: CsvDialect,
    pub file_name: String,
}

impl Export {
    pub fn new(campaign: &Campaign, f: &Filters, endpoint: &str) -> Self {
        Self {
            dialect: f.csv,
            file_name: f.file_name(campaign, endpoint),
        }
    }
}

/// One field: quoted when it holds the separator, a quote or a line break
/// (RFC 4180); a decimal number written with a comma in the French dialect.
fn csv_field(s: &str, d: CsvDialect) -> String {
    let s = if d.decimal_comma && s.contains('.') && s.parse::<f64>().is_ok() {
        s.replace('.', ",")
    } else {
        s.to_owned()
    };
    if s.contains([d.sep, '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV text: a UTF-8 byte-order mark (so Excel reads accents right),
/// the header, the rows, CRLF line ends.
pub fn csv_text(d: CsvDialect, header_row: &[&str], rows: &[Vec<String>]) -> String {
    let sep = d.sep.to_string();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut l = cells.collect::<Vec<_>>().join(&sep);
        l.push_str("\r\n");
        l
    };
    let mut out = String::from("\u{feff}");
    out.push_str(&line(&mut header_row.iter().map(|h| csv_field(h, d))));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(|c| csv_field(c, d))));
    }
    out
}

/// Rows as a CSV download, header first (see [`csv_text`]), named by
/// campaign, endpoint and filters.
pub fn csv(export: &Export, header_row: &[&str], rows: &[Vec<String>]) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", export.file_name);
    let mut resp = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        csv_text(export.dialect, header_row, rows),
    )
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// CSV of serialisable rows: the listed fields of each, in order (null → empty).
pub fn csv_of<T: Serialize>(export: &Export, fields: &[&str], items: &[T]) -> Response {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let v = serde_json::to_value(item).unwrap_or(Value::Null);
            fields
                .iter()
                .map(|k| match &v[*k] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    csv(export, fields, &rows)
}
