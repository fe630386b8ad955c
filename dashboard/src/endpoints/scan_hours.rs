//! `GET /api/scan-hours`: when people scan — scans (QR scans and card
//! clicks) by local weekday × hour of the day, in the campaign's zone.

use axum::extract::State;
use axum::response::Response;
use chrono::Datelike;
use ensemble_model::figures::{self, Figure};
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub weekday: u32,
    /// Wall-clock hour, 0–23.
    pub hour: u32,
    pub scans: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScanHours {
    pub timezone: String,
    pub scans: u64,
    /// Every weekday × hour (168 cells, Monday 0 h first).
    pub cells: Vec<Cell>,
}

pub async fn scan_hours(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let a = answers::ask(&state, &f, &[Figure::ScansByLocalHour], false).await?;
    let mut grid = [[0u64; 24]; 7];
    for (d, v) in of(&a.whole, Figure::ScansByLocalHour) {
        if f.channel.as_ref().is_some_and(|c| *c != d.channel) || d.local_hour > 23 {
            continue;
        }
        let weekday = figures::date_of(d.day).weekday().num_days_from_monday() as usize;
        grid[weekday][usize::from(d.local_hour)] += count(v);
    }
    let cells: Vec<Cell> = (0..7u32)
        .flat_map(|w| (0..24u32).map(move |h| (w, h)))
        .map(|(w, h)| Cell {
            weekday: w + 1,
            hour: h,
            scans: grid[w as usize][h as usize],
        })
        .collect();
    if f.format == Format::Csv {
        let rows: Vec<Vec<String>> = cells
            .iter()
            .map(|c| {
                vec![
                    c.weekday.to_string(),
                    c.hour.to_string(),
                    c.scans.to_string(),
                ]
            })
            .collect();
        return Ok(csv(
            &Export::new(&state.campaign, &f, "scan-hours"),
            &["iso_weekday", "hour", "scans"],
            &rows,
        ));
    }
    Ok(json(&ScanHours {
        timezone: state.campaign.timezone.name().to_owned(),
        scans: cells.iter().map(|c| c.scans).sum(),
        cells,
    }))
}
