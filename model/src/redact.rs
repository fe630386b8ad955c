//! Personal data typed into free text: e-mail addresses, phone numbers and
//! IP addresses found in any text a client writes (a URL path, a UTM tag, a
//! custom property, a User-Agent) are replaced by a marker before anything
//! is produced to Kafka. Pure functions; the collector applies
//! [`redact_message`] to every message, the processor again to every message
//! it reads (one from an older or foreign collector included).
//!
//! What counts (the tests hold a corpus of what is caught and what is kept):
//! - e-mail: `local@domain.tld`, any case, `@` also written `%40`;
//! - phone: `+` or `00` and 8–15 digits (international, separators ` .-()`),
//!   French `0X XX XX XX XX` (ten digits, together or in pairs) and `33X…`
//!   (eleven digits); dates, prices, order numbers, codes and UUIDs are not
//!   phones (a digit run glued to letters never is);
//! - IP address: a dotted IPv4 (each part ≤ 255) or an IPv6 address, except
//!   in a User-Agent (where `Chrome/120.0.0.0` is a version).
//!
//! Text with `%` escapes is also read decoded: a match there gives the
//! decoded text with the marker.

use std::borrow::Cow;

pub const EMAIL: &str = "redacted-email";
pub const PHONE: &str = "redacted-phone";
pub const IP: &str = "redacted-ip";

/// Which kinds of personal data to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub email: bool,
    pub phone: bool,
    pub ip: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        email: true,
        phone: true,
        ip: true,
    };
    /// A User-Agent: product versions look like IPv4 addresses.
    pub const USER_AGENT: Kinds = Kinds {
        email: true,
        phone: true,
        ip: false,
    };
}

/// Could `text` hold anything [`redact`] looks for? A fast first look:
/// an `@` or an escape, seven digits (a phone, an IPv4), two colons (an
/// IPv6).
fn suspicious(text: &str) -> bool {
    let (mut digits, mut colons) = (0, 0);
    for b in text.bytes() {
        match b {
            b'@' | b'%' => return true,
            b':' => {
                colons += 1;
                if colons >= 2 {
                    return true;
                }
            }
            b'0'..=b'9' => {
                digits += 1;
                if digits >= 7 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// `text` with every match of `kinds` replaced by its marker, or `None`
/// when there is none (then nothing is allocated).
pub fn redact(text: &str, kinds: Kinds) -> Option<String> {
    if !suspicious(text) {
        return None;
    }
    if let Some(out) = redact_plain(text, kinds) {
        // A second pass on the result: escapes may still hide more.
        return Some(match decoded(&out) {
            Some(d) => redact_plain(&d, kinds).unwrap_or(out),
            None => out,
        });
    }
    let d = decoded(text)?;
    redact_plain(&d, kinds)
}

/// The text with its `%XX` escapes decoded, if it has any.
fn decoded(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let d = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
    match d {
        Cow::Borrowed(_) => None,
        Cow::Owned(s) => Some(s),
    }
}

/// One match: byte range and marker.
type Span = (usize, usize, &'static str);

fn redact_plain(text: &str, kinds: Kinds) -> Option<String> {
    let mut spans: Vec<Span> = Vec::new();
    if kinds.email {
        emails(text, &mut spans);
    }
    if kinds.ip {
        ipv4s(text, &mut spans);
        ipv6s(text, &mut spans);
    }
    if kinds.phone {
        phones(text, &mut spans);
    }
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, marker) in spans {
        if start < at {
            // Overlaps a match already replaced (a phone inside an e-mail).
            at = at.max(end);
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(marker);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Bytes of an address's local part: ASCII letters, digits and `._%+-'`,
/// and any non-ASCII byte (internationalised addresses).
fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || matches!(b, b'.' | b'-')
}

/// `local@domain.tld` with `@` or `%40`.
fn emails(text: &str, spans: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at_len = if b[i] == b'@' {
            1
        } else if b[i] == b'%' && b.get(i + 1) == Some(&b'4') && b.get(i + 2) == Some(&b'0') {
            3
        } else {
            i += 1;
            continue;
        };
        let mut start = i;
        while start > 0 && is_local_char(b[start - 1]) {
            start -= 1;
        }
        while start < i && matches!(b[start], b'.' | b'%' | b'+' | b'-' | b'\'') {
            start += 1;
        }
        let mut end = i + at_len;
        while end < b.len() && is_domain_char(b[end]) {
            end += 1;
        }
        while end > i + at_len && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[i + at_len..end];
        let labels: Vec<&str> = domain.split('.').collect();
        let tld_ok = labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|c| c.is_ascii_alphabetic()));
        if start < i && labels.len() >= 2 && labels.iter().all(|l| !l.is_empty()) && tld_ok {
            spans.push((start, end, EMAIL));
            i = end;
        } else {
            i += at_len;
        }
    }
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Dotted IPv4 with every part ≤ 255, not inside a longer dotted number.
fn ipv4s(text: &str, spans: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (word_byte(b[i - 1]) || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
            end += 1;
        }
        let token = &text[i..end];
        let glued = end < b.len() && word_byte(b[end]);
        let token = token.trim_end_matches('.');
        if !glued && token.parse::<std::net::Ipv4Addr>().is_ok() {
            spans.push((i, i + token.len(), IP));
        }
        i = end.max(i + 1);
    }
}

/// An IPv6 address: hex groups and at least two colons, that std parses.
fn ipv6s(text: &str, spans: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts = (b[i].is_ascii_hexdigit() || b[i] == b':')
            && (i == 0 || !(word_byte(b[i - 1]) || b[i - 1] == b':' || b[i - 1] == b'.'));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && (b[end].is_ascii_hexdigit() || matches!(b[end], b':' | b'.')) {
            end += 1;
        }
        let token = text[i..end].trim_end_matches('.');
        let glued = end < b.len() && word_byte(b[end]);
        let colons = token.bytes().filter(|c| *c == b':').count();
        if !glued
            && colons >= 2
            && token.bytes().any(|c| c.is_ascii_hexdigit())
            && token
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|a| !a.is_unspecified())
        {
            spans.push((i, i + token.len(), IP));
        }
        i = end.max(i + 1);
    }
}

/// Phone numbers (see the module's rules).
fn phones(text: &str, spans: &mut Vec<Span>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let can_start = (c.is_ascii_digit() || c == b'+' || c == b'(')
            && (i == 0 || !(word_byte(b[i - 1]) || b[i - 1] == b'+'));
        if !can_start {
            i += 1;
            continue;
        }
        match phone_at(b, i) {
            Some(end) => {
                spans.push((i, end, PHONE));
                i = end;
            }
            None => {
                // Skip the rest of this digit run: a number glued to it is not a phone.
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
        }
    }
}

/// The end of a phone number starting at `start`, if one does.
fn phone_at(b: &[u8], start: usize) -> Option<usize> {
    let mut groups: Vec<usize> = Vec::new();
    let mut digits = String::new();
    let mut plus = false;
    let mut i = start;
    let mut end = start;
    let mut gap = 0; // separators since the last digit
    let mut open = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'0'..=b'9' => {
                if gap > 0 || groups.is_empty() {
                    groups.push(0);
                }
                if let Some(g) = groups.last_mut() {
                    *g += 1;
                }
                digits.push(c as char);
                gap = 0;
                end = i + 1;
            }
            b'+' if digits.is_empty() && !plus => plus = true,
            b'(' if !open && gap <= 1 => {
                open = true;
                gap += 1;
            }
            b')' if open && gap == 0 => {
                open = false;
                gap += 1;
            }
            b' ' | b'.' | b'-' if gap < 2 && !digits.is_empty() => gap += 1,
            _ => break,
        }
        if gap > 2 || digits.len() > 15 {
            return None;
        }
        i += 1;
    }
    // Glued to a letter or digit-like token: a code, not a phone.
    if b.get(end).is_some_and(|n| word_byte(*n) || *n == b'@') {
        return None;
    }
    let n = digits.len();
    let d = digits.as_bytes();
    let national = n == 10
        && d[0] == b'0'
        && d[1] != b'0'
        && (groups == [10] || groups.iter().all(|g| *g == 2));
    let french_intl = n == 11 && d.starts_with(b"33") && d[2] != b'0';
    let international = (plus && (8..=15).contains(&n))
        || (d.starts_with(b"00") && d.get(2).is_some_and(|x| *x != b'0') && (11..=15).contains(&n));
    (national || french_intl || international).then_some(end)
}

/// The fields of a message that hold text a client wrote (metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Url,
    Referrer,
    UserAgent,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    UtmContent,
    UtmTerm,
    Placement,
    CustomName,
    PropKey,
    PropValue,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::Url,
        Field::Referrer,
        Field::UserAgent,
        Field::UtmSource,
        Field::UtmMedium,
        Field::UtmCampaign,
        Field::UtmContent,
        Field::UtmTerm,
        Field::Placement,
        Field::CustomName,
        Field::PropKey,
        Field::PropValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Url => "url",
            Field::Referrer => "referrer",
            Field::UserAgent => "user_agent",
            Field::UtmSource => "utm_source",
            Field::UtmMedium => "utm_medium",
            Field::UtmCampaign => "utm_campaign",
            Field::UtmContent => "utm_content",
            Field::UtmTerm => "utm_term",
            Field::Placement => "placement",
            Field::CustomName => "custom_name",
            Field::PropKey => "prop_key",
            Field::PropValue => "prop_value",
        }
    }
}

/// A URL without user and password, and with personal data in its path,
/// query values and fragment replaced (each read decoded: `%40`, `+` for
/// a space in a query); `None` when it had neither.
pub fn redact_url(raw: &str) -> Option<String> {
    // Most URLs hold nothing: no parse for them (the scheme's colon aside).
    let rest = raw.split_once("://").map_or(raw, |(_, r)| r);
    if !suspicious(rest) {
        return None;
    }
    let Ok(mut url) = url::Url::parse(raw) else {
        return redact(raw, Kinds::ALL);
    };
    let mut changed = false;
    if !url.username().is_empty() || url.password().is_some() {
        // Both setters only fail on URLs that cannot have credentials.
        changed |= url.set_username("").is_ok() && url.set_password(None).is_ok();
    }
    let path = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
    if let Some(p) = redact(&path, Kinds::ALL) {
        url.set_path(&p);
        changed = true;
    }
    if url.query().is_some() {
        let mut any = false;
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let k = redact(&k, Kinds::ALL)
                    .inspect(|_| any = true)
                    .unwrap_or_else(|| k.into_owned());
                let v = redact(&v, Kinds::ALL)
                    .inspect(|_| any = true)
                    .unwrap_or_else(|| v.into_owned());
                (k, v)
            })
            .collect();
        if any {
            url.query_pairs_mut().clear().extend_pairs(pairs);
            changed = true;
        }
    }
    if let Some(f) = url.fragment().and_then(|f| {
        let decoded = percent_encoding::percent_decode_str(f).decode_utf8_lossy();
        redact(&decoded, Kinds::ALL)
    }) {
        url.set_fragment(Some(&f));
        changed = true;
    }
    changed.then(|| url.to_string())
}

/// Replaces personal data in every free-text field of `m`; returns the
/// fields where something was replaced (once per value).
pub fn redact_message(m: &mut crate::EventMessage) -> Vec<Field> {
    let mut hits = Vec::new();
    let mut text = |field: Field, value: &mut Option<String>, kinds: Kinds| {
        if let Some(r) = value.as_deref().and_then(|v| redact(v, kinds)) {
            *value = Some(r);
            hits.push(field);
        }
    };
    text(Field::Referrer, &mut m.referrer_host, Kinds::ALL);
    text(Field::UserAgent, &mut m.user_agent, Kinds::USER_AGENT);
    text(Field::UtmSource, &mut m.utm.source, Kinds::ALL);
    text(Field::UtmMedium, &mut m.utm.medium, Kinds::ALL);
    text(Field::UtmCampaign, &mut m.utm.campaign, Kinds::ALL);
    text(Field::UtmContent, &mut m.utm.content, Kinds::ALL);
    text(Field::UtmTerm, &mut m.utm.term, Kinds::ALL);
    text(Field::Placement, &mut m.placement, Kinds::ALL);
    text(Field::CustomName, &mut m.custom_name, Kinds::ALL);
    if let Some(r) = m.url.as_deref().and_then(redact_url) {
        m.url = Some(r);
        hits.push(Field::Url);
    }
    if m.props
        .keys()
        .chain(m.props.values())
        .any(|t| suspicious(t))
    {
        let props = std::mem::take(&mut m.props);
        for (k, v) in props {
            let k = match redact(&k, Kinds::ALL) {
                Some(r) => {
                    hits.push(Field::PropKey);
                    r
                }
                None => k,
            };
            let v = match redact(&v, Kinds::ALL) {
                Some(r) => {
                    hits.push(Field::PropValue);
                    r
                }
                None => v,
            };
            m.props.insert(k, v);
        }
    }
    hits
}

/// Does a visitor id carry personal data (a phone number or an e-mail typed
/// where a pseudonymous id belongs)?
pub fn is_personal_id(id: &str) -> bool {
    redact(id, Kinds::ALL).is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Text a client may send and what it must become (`redact_corpus.tsv`):
    /// e-mails, phones and IPs in the forms people type them, and look-alikes
    /// that must be kept as they are.
    const CORPUS: &str = include_str!("redact_corpus.tsv");

    fn corpus() -> Vec<(&'static str, &'static str)> {
        CORPUS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split_once('\t'))
            .collect()
    }

    #[test]
    fn the_corpus() {
        let mut failures = Vec::new();
        let corpus = corpus();
        for (text, want) in &corpus {
            let got = redact(text, Kinds::ALL).unwrap_or_else(|| (*text).to_owned());
            if got != *want {
                failures.push(format!("{text:?} → {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(corpus.len() >= 40, "{} strings", corpus.len());
    }

    #[test]
    fn user_agents_keep_their_versions() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UD1A.230803.041) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Mobile Safari/537.36",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ] {
            assert_eq!(redact(ua, Kinds::USER_AGENT), None, "{ua}");
        }
        assert_eq!(
            redact(
                "MyApp/1.0 (contact: ops@example.org; +33 6 12 34 56 78)",
                Kinds::USER_AGENT
            )
            .as_deref(),
            Some("MyApp/1.0 (contact: redacted-email; redacted-phone)")
        );
    }

    #[test]
    fn urls_lose_credentials_and_personal_data() {
        let cases = [
            (
                "https://user:secret@vivre-ensemble.example.org/merci",
                Some("https://vivre-ensemble.example.org/merci"),
            ),
            (
                "https://vivre-ensemble.example.org/merci/jeanne@exemple.fr?utm_term=jeanne%40exemple.fr",
                Some("https://vivre-ensemble.example.org/merci/redacted-email?utm_term=redacted-email"),
            ),
            (
                "https://vivre-ensemble.example.org/rappel/06%2012%2034%2056%2078",
                Some("https://vivre-ensemble.example.org/rappel/redacted-phone"),
            ),
            (
                "https://x.org/merci?utm_term=%2B49+30+12345678&utm_source=metro",
                Some("https://x.org/merci?utm_term=redacted-phone&utm_source=metro"),
            ),
            ("https://vivre-ensemble.example.org/barometre?utm_source=metro", None),
            ("https://vivre-ensemble.example.org:8443/a/2025-02-14", None),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_url(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn every_free_text_field_of_a_message() {
        let mut m: crate::EventMessage = serde_json::from_value(serde_json::json!({
            "v": 1, "event_id": "9b2f3c1e-8f0a-4d52-9d8e-3a1c2b4d5e6f", "type": "custom",
            "ts": "2025-02-14T10:00:00Z", "received_at": "2025-02-14T10:00:00Z",
            "visitor_id": "v_12345678", "placement": "0612345678",
            "utm": {"source": "metro", "content": "+33 6 12 34 56 78", "term": "jeanne@exemple.fr"},
            "url": "https://a:b@x.org/merci/jeanne@exemple.fr", "referrer_host": "203.0.113.9",
            "user_agent": "Bot/1.0 (+33612345678)", "custom_name": "share",
            "props": {"note": "contact me jeanne@exemple.fr", "tel": "+33 6 12 34 56 78",
                      "jeanne@exemple.fr": "x", "ok": "2025-02-14"}
        }))
        .unwrap();
        let mut hits = redact_message(&mut m);
        hits.sort();
        assert_eq!(
            hits,
            vec![
                Field::Url,
                Field::Referrer,
                Field::UserAgent,
                Field::UtmContent,
                Field::UtmTerm,
                Field::Placement,
                Field::PropKey,
                Field::PropValue,
                Field::PropValue
            ]
        );
        let text = String::from_utf8(m.encode()).unwrap();
        for needle in ["jeanne", "612345678", "6 12 34", "203.0.113", "a:b@"] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(m.props["ok"], "2025-02-14");
        assert_eq!(m.utm.source.as_deref(), Some("metro"));
        assert!(crate::event::is_valid_visitor_id("redacted-phone"));
        assert!(crate::campaign::is_placement_code(
            m.placement.as_deref().unwrap()
        ));
        assert!(is_personal_id("0612345678"));
        assert!(!is_personal_id("v_9b2f3c1e8f0a4d529d8e3a1c2b4d5e6f"));
    }

    #[test]
    fn nothing_found_allocates_nothing() {
        assert_eq!(redact("", Kinds::ALL), None);
        assert_eq!(redact("bonjour", Kinds::ALL), None);
        assert_eq!(redact("a%20b", Kinds::ALL), None);
    }
}
