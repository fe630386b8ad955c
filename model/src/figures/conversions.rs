//! A set's conversions (each contact's first sign-up) with their paths,
//! delays and credit under every model, and the touches they are credited
//! to: the figures of [`Figure::Conversions`], [`Figure::PathsConverted`],
//! [`Figure::PathsDelays`] and [`Figure::Credits`].

use std::collections::HashMap;

use chrono::DateTime;

use super::*;
use crate::attribution::{self, Conversion, Touch};
use crate::paths;
use crate::rules;
use crate::Campaign;

/// The figures [`conversions`] counts, which the device and placement
/// copies of a scope do not carry ([`Left`]).
pub(crate) fn of_conversions(figure: Figure) -> bool {
    matches!(
        figure,
        Figure::Conversions | Figure::PathsConverted | Figure::PathsDelays | Figure::Credits
    )
}

/// Which conversions count, for a question asked on demand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConversionFilter<'q> {
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) device: Option<&'q str>,
    pub(crate) phase: Option<&'q str>,
}

/// Conversions (the first sign-up of each contact, across the set, ties by
/// event id) and their credit under every model, on the conversion's day,
/// for every device and for the sign-up's device. Touches are all the
/// converting visitor's (of this bot setting), whatever the question.
pub(crate) fn conversions<'a>(
    b: &mut Builder<'_, 'a>,
    evs: &[Ev<'a>],
    filter: Option<ConversionFilter<'_>>,
) {
    // `evs` is in (time, event id) order.
    let first = rules::first_signups(
        evs.iter()
            .map(|ev| (ev.e.event_type.as_str(), ev.e.contact.as_str(), *ev)),
    );
    let campaign = b.campaign;
    let mut touches_of: HashMap<u32, Vec<Touch>> = HashMap::new();
    let mut out: Out = Vec::new();
    for ev in first.into_values() {
        // Alike on both sides of a batch's change ([`Cut::since`]): a
        // contact's first sign-up before the batch's new events stays its
        // first, credited to the same earlier touches.
        if ev.day < b.cut.since {
            continue;
        }
        if let Some(f) = &filter {
            let kept = ev.e.ms >= f.start_ms
                && ev.e.ms < f.end_ms
                && f.device.is_none_or(|d| d == ev.e.device)
                && f.phase.is_none_or(|p| p == ev.e.phase);
            if !kept {
                continue;
            }
        }
        let touches = touches_of
            .entry(ev.visitor)
            .or_insert_with(|| visitor_touches(campaign, evs, ev.visitor));
        let conversion = Conversion {
            ts: DateTime::from_timestamp_millis(i64::try_from(ev.e.ms).unwrap_or(i64::MAX))
                .unwrap_or_default(),
            event_id: ev.e.event_id,
        };
        let shares = attribution::shares(campaign, &conversion, touches);
        out.clear();
        let mut k = b.key(Figure::Conversions);
        k.phase = ev.phase;
        count(&mut out, k);
        // Its path: the touches credited (the lookback window), or `direct`.
        let credited =
            attribution::in_window(touches, conversion.ts, campaign.attribution.lookback);
        let mut k = b.key(Figure::PathsConverted);
        let mut delay_s = 0.0;
        match credited.first() {
            Some(first) => {
                let ms = (conversion.ts - first.ts).num_milliseconds().max(0);
                delay_s = ms as f64 / 1000.0;
                let secs = u64::try_from(ms / 1000).unwrap_or(0);
                k.path = b
                    .strings
                    .own(paths::path_of(credited.iter().map(|t| t.channel.as_str())));
                let mut d = b.key(Figure::PathsDelays);
                d.path = k.path;
                d.delay_seconds = u32::try_from(secs / paths::DELAY_STEP_S * paths::DELAY_STEP_S)
                    .unwrap_or(u32::MAX);
                count(&mut out, d);
            }
            None => k.path = b.id(attribution::DIRECT),
        }
        out.push((
            k,
            Value {
                n: 1,
                credit: delay_s,
            },
        ));
        for s in &shares {
            let mut k = b.key(Figure::Credits);
            k.model = b.id(s.model);
            k.channel = b.id(campaign_str(campaign, &s.channel));
            k.phase = b.id(campaign_str(campaign, &s.touch_phase));
            k.conversion_phase = b.id(campaign_str(campaign, &s.conversion_phase));
            out.push((
                k,
                Value {
                    n: 0,
                    credit: s.credit,
                },
            ));
        }
        let device = (filter.is_none() && !ev.e.device.is_empty()).then_some(ev.device);
        for (key, v) in &out {
            let mut key = *key;
            key.first_day = ev.day;
            key.last_day = ev.day;
            b.rows.push((key, *v));
            if let Some(d) = device {
                b.rows.push((
                    Key {
                        device_filter: d,
                        ..key
                    },
                    *v,
                ));
            }
        }
    }
}

/// One visitor's touches over all its events given.
pub(crate) fn visitor_touches(campaign: &Campaign, evs: &[Ev<'_>], visitor: u32) -> Vec<Touch> {
    let candidates = touch_candidates(campaign, evs, visitor);
    attribution::touches_of(
        rules::gap_ms(campaign),
        candidates
            .iter()
            .map(|ev| (ev.e.ms, ev.e.event_id, ev.e.channel.as_str())),
    )
}

/// The visitor's touch candidates among `evs`, in their order: what the
/// gap rule ([`rules::touch_starts`]) runs over. A visitor's few, on the
/// stack (this runs for every run of days of every scope).
pub(crate) fn touch_candidates<'e, 'a: 'e>(
    campaign: &Campaign,
    evs: impl IntoIterator<Item = &'e Ev<'a>>,
    visitor: u32,
) -> smallvec::SmallVec<[&'e Ev<'a>; 16]> {
    evs.into_iter()
        .filter(|ev| {
            ev.visitor == visitor
                && rules::is_touch_candidate(
                    campaign,
                    &ev.e.channel,
                    &ev.e.event_type,
                    &ev.e.action,
                )
        })
        .collect()
}

/// The campaign's own copy of a channel or phase name (so the key can
/// borrow it for the computation's lifetime).
pub(crate) fn campaign_str<'a>(campaign: &'a Campaign, s: &str) -> &'a str {
    if s == attribution::DIRECT {
        return attribution::DIRECT;
    }
    if s == crate::campaign::HORS_PHASE {
        return crate::campaign::HORS_PHASE;
    }
    campaign
        .channels
        .iter()
        .map(|c| c.id.as_str())
        .chain(campaign.phases.iter().map(|p| p.id.as_str()))
        .find(|x| *x == s)
        .unwrap_or("")
}
