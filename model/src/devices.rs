//! The device breakdown: per channel, the visitors of each device class ×
//! OS family (the figure [`crate::figures::Figure::Devices`]), the share of
//! the channel's visitors they are and how many of them signed up.
//!
//! A visitor whose events of a channel came from two devices (a visit
//! token carried from a phone to a computer) is counted on each: the
//! shares of a channel can add up to more than 1.

use std::collections::BTreeMap;

use serde::Serialize;

/// One channel × device class × OS family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// A channel, or `*` for every channel.
    pub channel: String,
    /// `desktop`, `mobile`, `tablet`, `bot` or `unknown` (no User-Agent).
    pub device_class: String,
    /// As the User-Agent parser names it (`iOS`, `Android`, `Windows 10`,
    /// …); empty when it could not tell.
    pub os_family: String,
    /// Visitors with an event of the channel from this device and OS.
    pub visitors: u64,
    /// Of them, visitors with a sign-up (in the question's days).
    pub signed: u64,
    /// `signed ÷ visitors`.
    pub signup_rate: f64,
    /// `visitors ÷` the channel's distinct visitors; `None` when those are
    /// unknown or zero.
    pub share: Option<f64>,
}

/// Counts of one channel × device class × OS family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub visitors: u64,
    pub signed: u64,
}

/// The breakdown's lines from the figure's counts and each channel's
/// distinct visitors: channels in `order` (others after, by name), within
/// a channel the most visitors first, then by device class and OS.
pub fn lines(
    counts: &BTreeMap<(String, String, String), Counts>,
    channel_visitors: &BTreeMap<String, u64>,
    order: &[&str],
) -> Vec<Line> {
    let rank = |c: &str| order.iter().position(|o| *o == c).unwrap_or(order.len());
    let mut out: Vec<Line> = counts
        .iter()
        .filter(|(_, c)| c.visitors > 0)
        .map(|((channel, class, os), c)| Line {
            channel: channel.clone(),
            device_class: class.clone(),
            os_family: os.clone(),
            visitors: c.visitors,
            signed: c.signed,
            signup_rate: c.signed as f64 / c.visitors as f64,
            share: channel_visitors
                .get(channel)
                .filter(|n| **n > 0)
                .map(|n| c.visitors as f64 / *n as f64),
        })
        .collect();
    out.sort_by(|a, b| {
        (rank(&a.channel), &a.channel)
            .cmp(&(rank(&b.channel), &b.channel))
            .then(b.visitors.cmp(&a.visitors))
            .then_with(|| (&a.device_class, &a.os_family).cmp(&(&b.device_class, &b.os_family)))
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(c: &str, d: &str, o: &str) -> (String, String, String) {
        (c.into(), d.into(), o.into())
    }

    #[test]
    fn lines_share_and_rate_per_channel_in_order() {
        let mut counts = BTreeMap::new();
        counts.insert(
            key("metro", "mobile", "iOS"),
            Counts {
                visitors: 3,
                signed: 1,
            },
        );
        counts.insert(
            key("metro", "mobile", "Android"),
            Counts {
                visitors: 6,
                signed: 3,
            },
        );
        counts.insert(
            key("metro", "desktop", "Windows 10"),
            Counts {
                visitors: 2,
                signed: 0,
            },
        );
        counts.insert(
            key("*", "mobile", "Android"),
            Counts {
                visitors: 7,
                signed: 3,
            },
        );
        counts.insert(
            key("press", "unknown", ""),
            Counts {
                visitors: 0,
                signed: 0,
            },
        );
        let visitors: BTreeMap<String, u64> =
            [("metro".to_owned(), 10), ("*".to_owned(), 0)].into();
        let l = lines(&counts, &visitors, &["*", "metro"]);
        let got: Vec<(&str, &str, &str, u64)> = l
            .iter()
            .map(|x| {
                (
                    x.channel.as_str(),
                    x.device_class.as_str(),
                    x.os_family.as_str(),
                    x.visitors,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("*", "mobile", "Android", 7),
                ("metro", "mobile", "Android", 6),
                ("metro", "mobile", "iOS", 3),
                ("metro", "desktop", "Windows 10", 2),
            ]
        );
        assert_eq!(l[1].signup_rate, 0.5);
        assert_eq!(l[1].share, Some(0.6));
        // Nobody to divide by: no share, never a division by zero.
        assert_eq!(l[0].share, None);
        assert_eq!(l[3].signup_rate, 0.0);
    }
}
