//! QR codes of the placements, from the campaign file: each encodes the
//! collector's public `/r/{code}` URL at error-correction level H (30 % of
//! the symbol may be dirty, torn or covered — a poster in a metro
//! corridor), with a quiet zone, as SVG (for print: scales without loss) or
//! PNG; and printable A4 sheets of every placement's code with its label.

use std::fmt::Write as _;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ensemble_core::Campaign;
use ensemble_model::campaign::Placement;
use qrcode::{Color, EcLevel, QrCode};

use crate::error::ApiError;
use crate::filters::FilterError;
use crate::state::Shared;

/// How a code is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawing {
    /// Width and height of the image in pixels (PNG), or its nominal size
    /// (SVG, which scales).
    pub size_px: u32,
    /// Quiet zone around the symbol, in modules (the standard asks for 4).
    pub margin: u32,
}

impl Default for Drawing {
    fn default() -> Self {
        Self {
            size_px: 512,
            margin: 4,
        }
    }
}

/// Why a code could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    #[error("`size` is a number of pixels from 64 to 4096")]
    Size,
    #[error("`margin` is a number of modules from 0 to 16 (4 is the standard quiet zone)")]
    Margin,
    #[error("the URL is too long for a QR code")]
    TooLong,
}

impl Drawing {
    /// Checks the `size` and `margin` query parameters.
    pub fn parse(size: Option<&str>, margin: Option<&str>) -> Result<Self, QrError> {
        let d = Self::default();
        let size_px = match size {
            None => d.size_px,
            Some(s) => s
                .parse()
                .ok()
                .filter(|n| (64..=4096).contains(n))
                .ok_or(QrError::Size)?,
        };
        let margin = match margin {
            None => d.margin,
            Some(s) => s.parse().ok().filter(|n| *n <= 16).ok_or(QrError::Margin)?,
        };
        Ok(Self { size_px, margin })
    }
}

/// What a placement's QR code opens: `<collector>/r/<code>`.
pub fn scan_url(collector: &url::Url, code: &str) -> String {
    let base = collector.as_str().trim_end_matches('/');
    format!("{base}/r/{code}")
}

/// The symbol's modules, row by row (true = dark), and its width.
pub fn modules(text: &str) -> Result<(usize, Vec<bool>), QrError> {
    let code =
        QrCode::with_error_correction_level(text, EcLevel::H).map_err(|_| QrError::TooLong)?;
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    Ok((code.width(), dark))
}

/// The SVG of `text`'s code: one path of dark modules on a white square,
/// `shape-rendering="crispEdges"` so printers do not blur the edges.
pub fn svg(text: &str, d: Drawing) -> Result<String, QrError> {
    let (width, dark) = modules(text)?;
    let total = width as u32 + 2 * d.margin;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{s}\" height=\"{s}\" viewBox=\"0 0 {total} {total}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{total}\" height=\"{total}\" fill=\"#fff\"/><path fill=\"#000\" d=\"",
        s = d.size_px
    );
    out.push_str(&path(width, &dark, d.margin, d.margin));
    out.push_str("\"/></svg>");
    Ok(out)
}

/// Path data drawing the dark modules at (`x0`, `y0`), one unit per module.
fn path(width: usize, dark: &[bool], x0: u32, y0: u32) -> String {
    let mut d = String::new();
    for (i, _) in dark.iter().enumerate().filter(|(_, on)| **on) {
        let (x, y) = ((i % width) as u32 + x0, (i / width) as u32 + y0);
        let _ = write!(d, "M{x} {y}h1v1h-1z");
    }
    d
}

/// The PNG of `text`'s code: greyscale, whole pixels per module (so every
/// module edge is sharp), as close to `size_px` as that allows.
pub fn png(text: &str, d: Drawing) -> Result<Vec<u8>, QrError> {
    let (width, dark) = modules(text)?;
    let modules_across = width as u32 + 2 * d.margin;
    let scale = (d.size_px / modules_across).max(1);
    let px = modules_across * scale;
    let mut pixels = vec![255u8; (px * px) as usize];
    for (i, _) in dark.iter().enumerate().filter(|(_, on)| **on) {
        let (mx, my) = ((i % width) as u32 + d.margin, (i / width) as u32 + d.margin);
        for y in my * scale..(my + 1) * scale {
            let row = (y * px) as usize;
            pixels[row + (mx * scale) as usize..row + ((mx + 1) * scale) as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, px, px);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    // Encoding into memory fails only on a size mismatch, which cannot happen here.
    let written = enc
        .write_header()
        .and_then(|mut w| w.write_image_data(&pixels));
    written.map_err(|_| QrError::TooLong)?;
    Ok(out)
}

/// XML text: `&`, `<`, `>` and quotes escaped.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Codes per A4 sheet: 3 across, 4 down.
pub const PER_SHEET: usize = 12;

/// Printable A4 sheets (SVG in millimetres), 12 codes each: the code (5 cm
/// across, quiet zone included), the placement's code, label and channel,
/// and the URL it opens, to check by eye before printing.
pub fn sheets(campaign: &Campaign, collector: &url::Url) -> Result<Vec<String>, QrError> {
    let placements: Vec<&Placement> = campaign.placements.iter().collect();
    let mut out = Vec::new();
    for (n, chunk) in placements.chunks(PER_SHEET).enumerate() {
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"210mm\" height=\"297mm\" viewBox=\"0 0 210 297\" \
             font-family=\"sans-serif\"><rect width=\"210\" height=\"297\" fill=\"#fff\"/>\
             <text x=\"10\" y=\"12\" font-size=\"5\">{} — QR codes {}/{}</text>",
            xml(&campaign.name),
            n + 1,
            placements.len().div_ceil(PER_SHEET)
        );
        for (i, p) in chunk.iter().enumerate() {
            let (col, row) = ((i % 3) as u32, (i / 3) as u32);
            let (x, y) = (10 + col * 65, 20 + row * 68);
            let url = scan_url(collector, &p.code);
            let (width, dark) = modules(&url)?;
            let total = width as u32 + 8;
            let _ = write!(
                s,
                "<svg x=\"{x}\" y=\"{y}\" width=\"50\" height=\"50\" viewBox=\"0 0 {total} {total}\" \
                 shape-rendering=\"crispEdges\"><path fill=\"#000\" d=\"{}\"/></svg>\
                 <text x=\"{x}\" y=\"{}\" font-size=\"4\" font-weight=\"bold\">{}</text>\
                 <text x=\"{x}\" y=\"{}\" font-size=\"2.6\">{}</text>\
                 <text x=\"{x}\" y=\"{}\" font-size=\"2.2\" fill=\"#555\">{} · {}</text>",
                path(width, &dark, 4, 4),
                y + 54,
                xml(&p.code),
                y + 58,
                xml(&p.label.chars().take(48).collect::<String>()),
                y + 62,
                xml(&p.channel),
                xml(&url),
            );
        }
        s.push_str("</svg>");
        out.push(s);
    }
    Ok(out)
}

/// Writes every placement's `<code>.svg` and `<code>.png` and the sheets
/// (`sheet-1.svg`, …) into `dir`; returns the files written.
pub fn write_all(
    campaign: &Campaign,
    collector: &url::Url,
    d: Drawing,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for p in &campaign.placements {
        let url = scan_url(collector, &p.code);
        for (ext, bytes) in [("svg", svg(&url, d)?.into_bytes()), ("png", png(&url, d)?)] {
            let path = dir.join(format!("{}.{ext}", p.code));
            std::fs::write(&path, bytes)?;
            written.push(path);
        }
    }
    for (i, sheet) in sheets(campaign, collector)?.into_iter().enumerate() {
        let path = dir.join(format!("sheet-{}.svg", i + 1));
        std::fs::write(&path, sheet)?;
        written.push(path);
    }
    Ok(written)
}

/// `GET /api/placements/{code}/qr.svg` (or `qr.png`), `?size=&margin=`:
/// the placement's QR code, opening the collector's `/r/{code}`.
pub async fn placement_qr(
    State(state): State<Shared>,
    Path((code, file)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let placement = state
        .campaign
        .placement(&code)
        .ok_or_else(|| ApiError::NotFound(format!("no placement `{code}` in the campaign file")))?;
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "size" | "margin")) {
        return Err(FilterError {
            parameter: "query",
            message: format!("unknown parameter `{k}`; known: size, margin"),
        }
        .into());
    }
    let drawing = Drawing::parse(
        q.get("size").map(String::as_str),
        q.get("margin").map(String::as_str),
    )
    .map_err(|e| FilterError {
        parameter: if e == QrError::Margin {
            "margin"
        } else {
            "size"
        },
        message: e.to_string(),
    })?;
    let url = scan_url(&state.collector_url, &placement.code);
    let drawn = match file.as_str() {
        "qr.svg" => svg(&url, drawing).map(|s| ("image/svg+xml", "svg", s.into_bytes())),
        "qr.png" => png(&url, drawing).map(|b| ("image/png", "png", b)),
        _ => {
            return Err(ApiError::NotFound(format!(
                "`{file}`: a placement's QR code is qr.svg or qr.png"
            )))
        }
    };
    let (content_type, ext, bytes) = drawn.map_err(|e| ApiError::NotFound(e.to_string()))?;
    let name = format!(
        "inline; filename=\"{}_{}.{ext}\"",
        state.campaign.id, placement.code
    );
    let mut resp = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&name) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn drawing_parameters_are_checked() {
        assert_eq!(Drawing::parse(None, None), Ok(Drawing::default()));
        assert_eq!(
            Drawing::parse(Some("1024"), Some("2")),
            Ok(Drawing {
                size_px: 1024,
                margin: 2
            })
        );
        for (size, margin, err) in [
            (Some("10"), None, QrError::Size),
            (Some("big"), None, QrError::Size),
            (Some("99999"), None, QrError::Size),
            (None, Some("-1"), QrError::Margin),
            (None, Some("40"), QrError::Margin),
        ] {
            assert_eq!(
                Drawing::parse(size, margin),
                Err(err),
                "{size:?} {margin:?}"
            );
        }
    }

    #[test]
    fn the_png_has_whole_pixel_modules_and_a_quiet_zone() {
        let url = "https://go.example.org/r/M-CHATELET";
        let (width, dark) = modules(url).unwrap();
        assert_eq!(dark.len(), width * width);
        let bytes = png(
            url,
            Drawing {
                size_px: 300,
                margin: 4,
            },
        )
        .unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let across = width as u32 + 8;
        assert_eq!(info.width % across, 0, "whole pixels per module");
        let scale = info.width / across;
        assert!(info.width <= 300 && info.width > 300 - across);
        // The corner (quiet zone) is white; the finder pattern's corner dark.
        assert_eq!(buf[0], 255);
        let at = |mx: u32, my: u32| buf[((my * scale) * info.width + mx * scale) as usize];
        assert_eq!(at(4, 4), 0);
        assert_eq!(at(3, 3), 255);
    }

    #[test]
    fn svg_escapes_and_sheets_hold_twelve() {
        let s = svg("https://go.example.org/r/A", Drawing::default()).unwrap();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert_eq!(xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        let campaign = Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap();
        let base = url::Url::parse("https://go.example.org/").unwrap();
        assert_eq!(
            scan_url(&base, "M-CHATELET"),
            "https://go.example.org/r/M-CHATELET"
        );
        let sheets = sheets(&campaign, &base).unwrap();
        assert_eq!(sheets.len(), campaign.placements.len().div_ceil(PER_SHEET));
        for p in &campaign.placements {
            assert!(
                sheets.iter().any(|s| s.contains(&format!(">{}<", p.code))),
                "{}",
                p.code
            );
        }
    }
}
