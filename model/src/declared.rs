//! Free text by declaration, not by detection. The text fields a client
//! fills — `utm_*` values, the landing URL's path, a custom event's name,
//! its property keys and values — are stored only as the campaign file
//! declares them:
//!
//! - a `utm_*` value is kept when the campaign knows it (the values its
//!   placements' landing URLs and default landing URL carry, its channels'
//!   `utm_sources`, and `[declared] utm_*` lists), compared without case;
//!   any other value is stored as [`UNDECLARED`];
//! - a page URL keeps its origin and path when they are a landing page the
//!   campaign knows (the same URLs, and `[declared] landing_paths` on the
//!   landing origins), its path becomes [`UNDECLARED`] on a landing origin,
//!   and the whole URL is [`UNDECLARED`] elsewhere; the query is never kept
//!   (its `utm_*` tags are the fields above);
//! - a custom event is refused (`undeclared`) unless `[declared.custom.<name>]`
//!   declares it, and each property must be declared there: a list of the
//!   values it may take, `"boolean"`, or `{ integer = [min, max] }`.
//!
//! Nothing sent is ever stored as typed unless declared, so no spelling of
//! an e-mail address, phone number, IBAN, address or name can get through
//! these fields; the redaction (`crate::redact`) stays as the second line,
//! for the fields that cannot be declared (User-Agent, referrer host,
//! unknown placement codes) and for messages of other producers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use url::Url;

use crate::event::{EventMessage, EventType, RejectReason, Rejection, MAX_ID_LEN};

/// What an undeclared value is stored as.
pub const UNDECLARED: &str = "(undeclared)";

/// The `[declared]` section of a campaign file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredFile {
    #[serde(default)]
    pub utm_source: Vec<String>,
    #[serde(default)]
    pub utm_medium: Vec<String>,
    #[serde(default)]
    pub utm_campaign: Vec<String>,
    #[serde(default)]
    pub utm_content: Vec<String>,
    #[serde(default)]
    pub utm_term: Vec<String>,
    /// Paths of the landing origins that are pages of the campaign, beyond
    /// the placements' landing URLs (e.g. `/merci`).
    #[serde(default)]
    pub landing_paths: Vec<String>,
    /// Custom event name → property name → what it may hold.
    #[serde(default)]
    pub custom: BTreeMap<String, BTreeMap<String, PropFile>>,
}

/// A property's declaration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropFile {
    /// The values it may take.
    Values(Vec<String>),
    /// `"boolean"`.
    Kind(String),
    /// `{ integer = [min, max] }`.
    Integer { integer: [i64; 2] },
}

/// What a custom property may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropRule {
    Values(BTreeSet<String>),
    Boolean,
    Integer { min: i64, max: i64 },
}

impl PropRule {
    fn admits(&self, v: &str) -> bool {
        match self {
            PropRule::Values(vs) => vs.contains(v),
            PropRule::Boolean => v == "true" || v == "false",
            PropRule::Integer { min, max } => v
                .parse::<i64>()
                .is_ok_and(|n| (*min..=*max).contains(&n) && n.to_string() == v),
        }
    }

    fn describe(&self) -> String {
        match self {
            PropRule::Values(vs) => format!(
                "one of {}",
                vs.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            PropRule::Boolean => "true or false".into(),
            PropRule::Integer { min, max } => format!("an integer from {min} to {max}"),
        }
    }
}

/// The five `utm_*` tags, in [`Declared::utm`]'s order.
pub const UTM_TAGS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

/// Everything a campaign declares (see the module's doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// Known values of each `utm_*` tag, lower-cased.
    pub utm: [BTreeSet<String>; 5],
    /// Known landing pages: (origin `scheme://host[:port]`, path).
    pub pages: BTreeSet<(String, String)>,
    /// Origins of the landing pages.
    pub origins: BTreeSet<String>,
    pub custom: BTreeMap<String, BTreeMap<String, PropRule>>,
}

/// A path as compared: no trailing `/` but the root's.
fn page_path(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}

fn origin_of(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// A declared name (custom event or property): 1..=64 of `[A-Za-z0-9_.-]`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Declared {
    /// The declarations of a campaign: its file's `[declared]`, and what its
    /// landing URLs and channels already name. `Err((field, reason))`.
    pub fn build(
        file: DeclaredFile,
        landing_urls: &[&Url],
        landing_origins: &[String],
        utm_sources: &[&str],
    ) -> Result<Self, (String, String)> {
        let mut d = Declared::default();
        let written = [
            file.utm_source,
            file.utm_medium,
            file.utm_campaign,
            file.utm_content,
            file.utm_term,
        ];
        for (i, values) in written.into_iter().enumerate() {
            for v in values {
                if v.trim().is_empty() || v.len() > MAX_ID_LEN {
                    return Err((
                        format!("declared.{}", UTM_TAGS[i]),
                        format!("`{v}`: values are 1..={MAX_ID_LEN} bytes"),
                    ));
                }
                d.utm[i].insert(v.to_lowercase());
            }
        }
        d.utm[0].extend(utm_sources.iter().map(|s| s.to_lowercase()));
        for u in landing_urls {
            d.origins.insert(origin_of(u));
            d.pages.insert((origin_of(u), page_path(u.path())));
            for (k, v) in u.query_pairs() {
                if let Some(i) = UTM_TAGS.iter().position(|t| *t == k) {
                    d.utm[i].insert(v.to_lowercase());
                }
            }
        }
        for o in landing_origins {
            d.origins.insert(o.trim_end_matches('/').to_owned());
        }
        for p in &file.landing_paths {
            if !p.starts_with('/') || p.contains(['?', '#']) {
                return Err((
                    "declared.landing_paths".into(),
                    format!("`{p}`: a path starts with / and has no query or fragment"),
                ));
            }
            for o in d.origins.clone() {
                d.pages.insert((o, page_path(p)));
            }
        }
        for (name, props) in file.custom {
            if !is_name(&name) {
                return Err((
                    format!("declared.custom.{name}"),
                    "event names are 1..=64 of [A-Za-z0-9_.-]".into(),
                ));
            }
            let mut rules = BTreeMap::new();
            for (key, p) in props {
                let field = format!("declared.custom.{name}.{key}");
                if !is_name(&key) {
                    return Err((field, "property names are 1..=64 of [A-Za-z0-9_.-]".into()));
                }
                let rule =
                    match p {
                        PropFile::Values(vs) if !vs.is_empty() => {
                            PropRule::Values(vs.into_iter().collect())
                        }
                        PropFile::Kind(k) if k == "boolean" => PropRule::Boolean,
                        PropFile::Integer {
                            integer: [min, max],
                        } if min <= max => PropRule::Integer { min, max },
                        _ => return Err((
                            field,
                            "declare a list of values, \"boolean\", or { integer = [min, max] }"
                                .into(),
                        )),
                    };
                rules.insert(key, rule);
            }
            d.custom.insert(name, rules);
        }
        Ok(d)
    }

    /// Adds `other`'s declarations (a collector serving several campaigns
    /// keeps what any of them declares).
    pub fn merge(&mut self, other: &Declared) {
        for (mine, theirs) in self.utm.iter_mut().zip(&other.utm) {
            mine.extend(theirs.iter().cloned());
        }
        self.pages.extend(other.pages.iter().cloned());
        self.origins.extend(other.origins.iter().cloned());
        for (name, rules) in &other.custom {
            let mine = self.custom.entry(name.clone()).or_default();
            for (k, r) in rules {
                mine.entry(k.clone()).or_insert_with(|| r.clone());
            }
        }
    }

    /// Refuses an undeclared custom event or property; replaces undeclared
    /// `utm_*` values and URL paths by [`UNDECLARED`]. Returns the fields
    /// replaced (for the collector's counter).
    pub fn apply(&self, m: &mut EventMessage) -> Result<Vec<&'static str>, Rejection> {
        if m.event_type == EventType::Custom {
            let name = m.custom_name.as_deref().unwrap_or("");
            let Some(rules) = self.custom.get(name) else {
                return Err(Rejection::new(
                    RejectReason::Undeclared,
                    "name",
                    "this custom event is not declared in the campaign file ([declared.custom.<name>])",
                ));
            };
            for (k, v) in &m.props {
                let field = format!("props.{k}");
                let Some(rule) = rules.get(k) else {
                    return Err(Rejection::new(
                        RejectReason::Undeclared,
                        &field,
                        "this property is not declared for this event in the campaign file",
                    ));
                };
                if !rule.admits(v) {
                    return Err(Rejection::new(
                        RejectReason::Undeclared,
                        &field,
                        format!("the campaign file declares {}", rule.describe()),
                    ));
                }
            }
        } else if !m.props.is_empty() || m.custom_name.is_some() {
            // Only custom events carry these (validation already refused them).
            m.props.clear();
            m.custom_name = None;
        }
        let mut replaced = Vec::new();
        let slots = [
            &mut m.utm.source,
            &mut m.utm.medium,
            &mut m.utm.campaign,
            &mut m.utm.content,
            &mut m.utm.term,
        ];
        for (i, slot) in slots.into_iter().enumerate() {
            if let Some(v) = slot.as_mut() {
                if !self.utm[i].contains(&v.to_lowercase()) {
                    *v = UNDECLARED.into();
                    replaced.push(UTM_TAGS[i]);
                }
            }
        }
        if let Some(url) = m.url.as_mut() {
            let page = Url::parse(url)
                .ok()
                .map(|u| (origin_of(&u), page_path(u.path())));
            let kept = match page {
                Some(p) if self.pages.contains(&p) => Some(format!("{}{}", p.0, p.1)),
                Some((origin, _)) if self.origins.contains(&origin) => {
                    replaced.push("url");
                    Some(format!("{origin}/{UNDECLARED}"))
                }
                _ => {
                    replaced.push("url");
                    None
                }
            };
            *url = kept.unwrap_or_else(|| UNDECLARED.into());
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::Utc;

    fn declared() -> Declared {
        let file: DeclaredFile = toml::from_str(
            r#"
            utm_medium = ["article"]
            landing_paths = ["/merci"]
            [custom.video_play]
            pct = { integer = [0, 100] }
            done = "boolean"
            chapter = ["intro", "fin"]
            "#,
        )
        .unwrap();
        let landing =
            Url::parse("https://vivre-ensemble.example.org/barometre?utm_source=ratp&utm_medium=affiche&utm_content=m-chatelet")
                .unwrap();
        Declared::build(
            file,
            &[&landing],
            &["https://vivre-ensemble.example.org".into()],
            &["Tinder"],
        )
        .unwrap()
    }

    fn page(url: &str) -> EventMessage {
        let mut m = EventMessage::new(EventType::PageView, "v_abcdefgh", Utc::now());
        m.url = Some(url.into());
        m
    }

    #[test]
    fn declared_values_and_pages_are_kept_the_rest_is_a_placeholder() {
        let d = declared();
        let mut m = page("https://vivre-ensemble.example.org/barometre/?utm_source=ratp&utm_content=jeanne-dupont");
        m.utm.source = Some("RATP".into());
        m.utm.medium = Some("article".into());
        m.utm.content = Some("jeanne-dupont".into());
        m.utm.term = Some("06 12 34 56 78".into());
        let replaced = d.apply(&mut m).unwrap();
        assert_eq!(m.utm.source.as_deref(), Some("RATP"), "known, any case");
        assert_eq!(m.utm.medium.as_deref(), Some("article"), "declared");
        assert_eq!(m.utm.content.as_deref(), Some(UNDECLARED), "a name");
        assert_eq!(m.utm.term.as_deref(), Some(UNDECLARED));
        assert_eq!(
            m.url.as_deref(),
            Some("https://vivre-ensemble.example.org/barometre"),
            "the page, without its query"
        );
        assert_eq!(replaced, ["utm_content", "utm_term"]);
        let mut m = page("https://vivre-ensemble.example.org/merci");
        d.apply(&mut m).unwrap();
        assert_eq!(
            m.url.as_deref(),
            Some("https://vivre-ensemble.example.org/merci")
        );
        let mut m = page("https://vivre-ensemble.example.org/tel/0612345678");
        assert_eq!(d.apply(&mut m).unwrap(), ["url"]);
        assert_eq!(
            m.url.as_deref(),
            Some("https://vivre-ensemble.example.org/(undeclared)")
        );
        let mut m = page("https://jeanne.dupont.example.com/barometre");
        d.apply(&mut m).unwrap();
        assert_eq!(m.url.as_deref(), Some(UNDECLARED));
        let mut m = page("https://vivre-ensemble.example.org/barometre");
        m.utm.source = Some("tinder".into());
        assert_eq!(d.apply(&mut m).unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn custom_events_and_properties_must_be_declared() {
        let d = declared();
        let custom = |name: &str, props: &[(&str, &str)]| {
            let mut m = EventMessage::new(EventType::Custom, "v_abcdefgh", Utc::now());
            m.custom_name = Some(name.into());
            m.props = props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            d.apply(&mut m).map(|_| m)
        };
        assert!(custom(
            "video_play",
            &[("pct", "75"), ("done", "true"), ("chapter", "fin")]
        )
        .is_ok());
        let r = custom("share", &[]).unwrap_err();
        assert_eq!(
            (r.reason, r.field.as_deref()),
            (RejectReason::Undeclared, Some("name"))
        );
        for (k, v) in [
            ("pct", "101"),
            ("pct", "07"),
            ("pct", "jeanne"),
            ("done", "oui"),
            ("chapter", "jeanne@exemple.fr"),
            ("note", "x"),
        ] {
            let r = custom("video_play", &[(k, v)]).unwrap_err();
            assert_eq!(r.reason, RejectReason::Undeclared, "{k}={v}");
            assert_eq!(r.field, Some(format!("props.{k}")));
        }
    }

    #[test]
    fn bad_declarations_are_refused_with_their_field() {
        let bad = |text: &str| {
            let file: DeclaredFile = toml::from_str(text).unwrap();
            Declared::build(file, &[], &[], &[]).unwrap_err().0
        };
        assert_eq!(bad("landing_paths = [\"merci\"]"), "declared.landing_paths");
        assert_eq!(bad("[custom.x]\na = []"), "declared.custom.x.a");
        assert_eq!(bad("[custom.x]\na = \"text\""), "declared.custom.x.a");
        assert_eq!(
            bad("[custom.x]\na = { integer = [5, 1] }"),
            "declared.custom.x.a"
        );
        assert_eq!(bad("[custom.\"a b\"]"), "declared.custom.a b");
        assert_eq!(bad("utm_term = [\"\"]"), "declared.utm_term");
    }
}
