//! What an event *is* for the figures, each rule written once (DESIGN §2):
//! a scan, an exposure, a landing visit, a sign-up, a touch candidate, and
//! the gap rule that groups touch candidates into touches. Every figure
//! ([`crate::figures`]) and the attribution ([`crate::attribution`]) ask here.

use crate::Campaign;

/// Event type of a landing-page view.
pub const PAGE_VIEW: &str = "page_view";
/// Event type of a sign-up on the landing page (the conversion).
pub const SIGNUP: &str = "signup";
/// Event type of a QR code scan through the redirect.
pub const QR_SCAN: &str = "qr_scan";
/// Event type of a dating-app card interaction.
pub const TINDER_CARD: &str = "tinder_card";

/// A dating-app card shown (`impression`) or swiped away (`pass`): the
/// person was exposed, did not act. Exposure counts for reach, never as a
/// touch.
pub fn is_exposure(event_type: &str, action: &str) -> bool {
    event_type == TINDER_CARD && is_exposure_action(action)
}

/// The card actions that are exposure (only cards carry an action).
pub fn is_exposure_action(action: &str) -> bool {
    action == "impression" || action == "pass"
}

/// A scan: a QR scan, or a card click through the redirect.
pub fn is_scan(event_type: &str, action: &str) -> bool {
    event_type == QR_SCAN || (event_type == TINDER_CARD && action == "click")
}

/// A landing visit: a page view.
pub fn is_visit(event_type: &str) -> bool {
    event_type == PAGE_VIEW
}

/// A sign-up.
pub fn is_signup(event_type: &str) -> bool {
    event_type == SIGNUP
}

/// A channel whose events can be touches (the campaign file's `touch`).
pub fn is_touch_channel(campaign: &Campaign, channel: &str) -> bool {
    campaign.channel(channel).is_some_and(|c| c.touch)
}

/// An event that can make or extend a touch: of a touch channel, and not
/// an exposure.
pub fn is_touch_candidate(
    campaign: &Campaign,
    channel: &str,
    event_type: &str,
    action: &str,
) -> bool {
    is_touch_channel(campaign, channel) && !is_exposure(event_type, action)
}

/// The gap rule. Given one visitor's touch candidates in (time, event id)
/// order, as `(milliseconds, channel)`, says of each whether it starts a
/// touch: it does unless the visitor's previous candidate of the same
/// channel is less than `gap_ms` before it. A touch is timed at the event
/// that starts it.
pub fn touch_starts<'a>(
    gap_ms: u64,
    candidates: impl IntoIterator<Item = (u64, &'a str)>,
) -> Vec<bool> {
    // A visitor's channels are a handful: a list beats a hashed map (this
    // ran for every run of days of every scope: 7 % of the accounting).
    let mut last: Vec<(&str, u64)> = Vec::new();
    candidates
        .into_iter()
        .map(
            |(ms, channel)| match last.iter_mut().find(|(c, _)| *c == channel) {
                Some((_, prev)) => {
                    let starts = ms.saturating_sub(*prev) >= gap_ms;
                    *prev = ms;
                    starts
                }
                None => {
                    last.push((channel, ms));
                    true
                }
            },
        )
        .collect()
}

/// A conversion is the first sign-up of a contact. Given events in
/// (time, event id) order as `(event type, contact, item)`, returns the
/// items of each contact's first sign-up, keyed by contact. A sign-up
/// without a contact converts nobody.
pub fn first_signups<'a, T>(
    events: impl IntoIterator<Item = (&'a str, &'a str, T)>,
) -> std::collections::BTreeMap<&'a str, T> {
    let mut first = std::collections::BTreeMap::new();
    for (event_type, contact, item) in events {
        if is_signup(event_type) && !contact.is_empty() {
            first.entry(contact).or_insert(item);
        }
    }
    first
}

/// The rank (from 1, in increasing order) of the median of `n` values, as
/// every figure reports it: the lower median, rank ⌈n/2⌉ — always a value
/// that occurred (with two middle values, the smaller; never their mean).
/// The funnel's and the paths' times to sign-up both use it.
pub fn median_rank(n: u64) -> u64 {
    n.div_ceil(2)
}

/// The campaign's gap in milliseconds.
pub fn gap_ms(campaign: &Campaign) -> u64 {
    u64::try_from(campaign.attribution.touch_gap.num_milliseconds()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_scan_visit_and_signup() {
        assert!(is_exposure("tinder_card", "impression"));
        assert!(is_exposure("tinder_card", "pass"));
        assert!(!is_exposure("tinder_card", "like"));
        assert!(!is_exposure("tinder_card", "click"));
        assert!(!is_exposure("qr_scan", "pass"));
        assert!(is_scan("qr_scan", ""));
        assert!(is_scan("tinder_card", "click"));
        assert!(!is_scan("tinder_card", "like"));
        assert!(!is_scan("page_view", ""));
        assert!(is_visit("page_view"));
        assert!(is_signup("signup"));
        assert!(!is_signup("page_view"));
    }

    #[test]
    fn the_gap_rule_per_channel() {
        let min = 60_000;
        let gap = 30 * min;
        let starts = touch_starts(
            gap,
            [
                (0, "metro"),
                (10 * min, "metro"), // joins: 10 min after the previous metro event
                (15 * min, "tinder"), // another channel: its own touch
                (39 * min, "metro"), // 29 min after the previous metro event: joins
                (69 * min, "metro"), // exactly the gap: a new touch
                (70 * min, "tinder"), // 55 min after the previous tinder event
            ],
        );
        assert_eq!(starts, vec![true, false, true, false, true, true]);
    }
}
