//! The wire format's validation: one event object as a client sent it,
//! checked field by field into a [`ValidEvent`], or a [`Rejection`] that
//! names the field and what to change (DESIGN §3).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::*;

const COMMON_FIELDS: &[&str] = &[
    "event_id",
    "type",
    "ts",
    "visitor_id",
    "visit_token",
    "placement",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "url",
    "referrer",
    "user_agent",
];

fn allowed_extra(t: EventType) -> &'static [&'static str] {
    match t {
        EventType::QrScan | EventType::PageView => &[],
        EventType::TinderCard => &["action"],
        EventType::Signup => &["email", "phone", "consents"],
        EventType::Custom => &["name", "props"],
    }
}

/// Field reader over one JSON object that produces precise rejections.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn str(&self, field: &str, max: usize) -> Result<Option<&'a str>, Rejection> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() > max => Err(Rejection::new(
                RejectReason::FieldTooLong,
                field,
                format!("{} bytes, limit {max}", s.len()),
            )),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(Rejection::new(
                RejectReason::InvalidType,
                field,
                "expected a string",
            )),
        }
    }

    fn required_str(&self, field: &str, max: usize) -> Result<&'a str, Rejection> {
        self.str(field, max)?
            .ok_or_else(|| Rejection::new(RejectReason::MissingField, field, "required"))
    }

    /// A trimmed, non-empty string, or None.
    fn text(&self, field: &str, max: usize) -> Result<Option<String>, Rejection> {
        Ok(self
            .str(field, max)?
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }
}

fn parse_http_url(field: &str, raw: &str) -> Result<url::Url, Rejection> {
    let url = url::Url::parse(raw).map_err(|e| {
        Rejection::new(RejectReason::InvalidValue, field, format!("not a URL: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Rejection::new(
            RejectReason::InvalidValue,
            field,
            "expected an absolute http(s) URL",
        ));
    }
    Ok(url)
}

/// Keeps scheme, host, port, path and the `utm_*` tags; drops every other
/// query parameter and the fragment, where personal data tends to hide.
fn reduce_url(url: &url::Url) -> (String, Utm) {
    let mut utm = Utm::default();
    let mut kept = url.clone();
    kept.set_fragment(None);
    // A user and password in the URL are credentials: never kept. (Both
    // setters only fail on URLs that cannot have them.)
    let _ = kept.set_username("");
    let _ = kept.set_password(None);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k.starts_with("utm_"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (k, v) in &pairs {
        // A value to be cut is redacted first: an e-mail cut in half is no
        // longer recognisable, and half of it would be stored. (Shorter
        // values are redacted, and counted, with the rest of the message.)
        let v = if v.chars().count() > MAX_UTM_LEN {
            let r =
                crate::redact::redact(v, crate::redact::Kinds::ALL).unwrap_or_else(|| v.clone());
            r.chars().take(MAX_UTM_LEN).collect()
        } else {
            v.clone()
        };
        let slot = match k.as_str() {
            "utm_source" => &mut utm.source,
            "utm_medium" => &mut utm.medium,
            "utm_campaign" => &mut utm.campaign,
            "utm_content" => &mut utm.content,
            "utm_term" => &mut utm.term,
            _ => continue,
        };
        if !v.is_empty() {
            *slot = Some(v);
        }
    }
    if pairs.is_empty() {
        kept.set_query(None);
    } else {
        kept.query_pairs_mut().clear().extend_pairs(pairs.iter());
    }
    (kept.to_string(), utm)
}

/// One spelling of an e-mail address: trimmed, Unicode NFC, case-folded
/// (Unicode default case folding), NFC again. `Zoé@Exemple.fr` typed with a
/// composed or a decomposed `é`, in any case, is one contact.
pub fn fold_email(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let composed: String = raw.trim().nfc().collect();
    caseless::default_case_fold_str(&composed).nfc().collect()
}

/// Normalises an e-mail ([`fold_email`]) and checks its shape.
pub fn normalise_email(raw: &str) -> Option<String> {
    let e = fold_email(raw);
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

/// Validates one event object of the wire format (DESIGN §3).
pub fn validate(value: &Value) -> Result<ValidEvent, Rejection> {
    let Some(obj) = value.as_object() else {
        return Err(Rejection {
            reason: RejectReason::NotAnObject,
            field: None,
            message: "each event must be a JSON object".into(),
        });
    };
    let f = Fields(obj);

    let type_str = f.required_str("type", MAX_ID_LEN)?;
    let event_type = EventType::parse(type_str).ok_or_else(|| {
        Rejection::new(
            RejectReason::UnknownEventType,
            "type",
            format!("`{type_str}` is not one of qr_scan, page_view, tinder_card, signup, custom"),
        )
    })?;
    let extra = allowed_extra(event_type);
    if let Some(k) = obj
        .keys()
        .find(|k| !COMMON_FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        return Err(Rejection::new(
            RejectReason::UnknownField,
            k,
            format!("`{k}` is not a field of a {event_type} event"),
        ));
    }

    let event_id = f
        .str("event_id", MAX_ID_LEN)?
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                Rejection::new(RejectReason::InvalidValue, "event_id", "expected a UUID")
            })
        })
        .transpose()?;

    let ts = f
        .str("ts", MAX_ID_LEN)?
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    Rejection::new(
                        RejectReason::InvalidValue,
                        "ts",
                        format!("expected an RFC 3339 timestamp with offset: {e}"),
                    )
                })
        })
        .transpose()?;

    let visitor_id = f
        .str("visitor_id", MAX_ID_LEN)?
        .filter(|s| is_valid_visitor_id(s))
        .map(str::to_owned);

    let visit_token = f.text("visit_token", MAX_VISIT_TOKEN_LEN)?;

    let placement = f
        .str("placement", MAX_ID_LEN)?
        .map(|s| {
            if crate::campaign::is_placement_code(s) {
                Ok(s.to_owned())
            } else {
                Err(Rejection::new(
                    RejectReason::InvalidValue,
                    "placement",
                    "expected a code of [A-Za-z0-9_-]",
                ))
            }
        })
        .transpose()?;

    let (url, url_utm) = match f.str("url", MAX_URL_LEN)? {
        Some(raw) => {
            let (u, utm) = reduce_url(&parse_http_url("url", raw)?);
            (Some(u), utm)
        }
        None => (None, Utm::default()),
    };
    let utm = Utm {
        source: f.text("utm_source", MAX_UTM_LEN)?.or(url_utm.source),
        medium: f.text("utm_medium", MAX_UTM_LEN)?.or(url_utm.medium),
        campaign: f.text("utm_campaign", MAX_UTM_LEN)?.or(url_utm.campaign),
        content: f.text("utm_content", MAX_UTM_LEN)?.or(url_utm.content),
        term: f.text("utm_term", MAX_UTM_LEN)?.or(url_utm.term),
    };
    let referrer_host = match f.str("referrer", MAX_URL_LEN)? {
        Some(raw) if !raw.trim().is_empty() => parse_http_url("referrer", raw.trim())?
            .host_str()
            .map(str::to_ascii_lowercase),
        _ => None,
    };
    let user_agent = f.text("user_agent", MAX_USER_AGENT_LEN)?;

    let mut event = ValidEvent {
        event_id,
        event_type,
        ts,
        visitor_id,
        visit_token,
        placement,
        utm,
        url,
        referrer_host,
        user_agent,
        action: None,
        email: None,
        consent: None,
        custom_name: None,
        props: BTreeMap::new(),
    };

    match event_type {
        EventType::QrScan | EventType::PageView => {}
        EventType::TinderCard => {
            let a = f.required_str("action", MAX_ID_LEN)?;
            event.action = Some(TinderAction::parse(a).ok_or_else(|| {
                Rejection::new(
                    RejectReason::InvalidValue,
                    "action",
                    format!("`{a}` is not one of impression, like, pass, click"),
                )
            })?);
        }
        EventType::Signup => {
            let raw = f.required_str("email", MAX_EMAIL_LEN)?;
            event.email = Some(normalise_email(raw).ok_or_else(|| {
                Rejection::new(RejectReason::InvalidValue, "email", "not an e-mail address")
            })?);
            // A phone number is accepted and dropped here: it is never stored.
            f.str("phone", MAX_PHONE_LEN)?;
            event.consent = Some(parse_consents(&f)?);
        }
        EventType::Custom => {
            let name = f.required_str("name", MAX_ID_LEN)?;
            if !crate::campaign::is_placement_code(name) {
                return Err(Rejection::new(
                    RejectReason::InvalidValue,
                    "name",
                    "expected a name of [A-Za-z0-9_-]",
                ));
            }
            event.custom_name = Some(name.to_owned());
            event.props = parse_props(&f)?;
        }
    }
    Ok(event)
}

fn parse_consents(f: &Fields<'_>) -> Result<Consent, Rejection> {
    let Some(v) = f.get("consents") else {
        return Err(Rejection::new(
            RejectReason::MissingField,
            "consents",
            "a sign-up needs {\"results\": bool, \"newsletter\": bool}",
        ));
    };
    let Some(obj) = v.as_object() else {
        return Err(Rejection::new(
            RejectReason::InvalidType,
            "consents",
            "expected an object",
        ));
    };
    let mut consent = Consent::default();
    for (k, v) in obj {
        let slot = match k.as_str() {
            "results" => &mut consent.results,
            "newsletter" => &mut consent.newsletter,
            _ => {
                return Err(Rejection::new(
                    RejectReason::UnknownField,
                    &format!("consents.{k}"),
                    "consents are `results` and `newsletter`",
                ))
            }
        };
        *slot = v.as_bool().ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidType,
                &format!("consents.{k}"),
                "expected true or false",
            )
        })?;
    }
    if !obj.contains_key("results") {
        return Err(Rejection::new(
            RejectReason::MissingField,
            "consents.results",
            "required",
        ));
    }
    Ok(consent)
}

fn parse_props(f: &Fields<'_>) -> Result<BTreeMap<String, String>, Rejection> {
    let mut props = BTreeMap::new();
    let Some(v) = f.get("props") else {
        return Ok(props);
    };
    let Some(obj) = v.as_object() else {
        return Err(Rejection::new(
            RejectReason::InvalidType,
            "props",
            "expected an object of strings, numbers or booleans",
        ));
    };
    if obj.len() > MAX_PROPS {
        return Err(Rejection::new(
            RejectReason::TooManyProperties,
            "props",
            format!("{} properties, limit {MAX_PROPS}", obj.len()),
        ));
    }
    for (k, v) in obj {
        let field = format!("props.{k}");
        if k.is_empty() || k.len() > MAX_ID_LEN {
            return Err(Rejection::new(
                RejectReason::InvalidValue,
                &field,
                format!("property names are 1..={MAX_ID_LEN} bytes"),
            ));
        }
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(Rejection::new(
                    RejectReason::InvalidType,
                    &field,
                    "expected a string, number or boolean",
                ))
            }
        };
        if s.len() > MAX_PROP_VALUE_LEN {
            return Err(Rejection::new(
                RejectReason::FieldTooLong,
                &field,
                format!("{} bytes, limit {MAX_PROP_VALUE_LEN}", s.len()),
            ));
        }
        props.insert(k.clone(), s);
    }
    Ok(props)
}
