//! The sets a ledger INSERT carries to the materialised views (migration
//! 0014): the figures' change, the journeys', the change summed by range,
//! the paths' delays by range. Each is one `String` column of the ledger,
//! its records each begun by [`RECORD`], their fields parted by [`FIELD`],
//! in the order of the set's [`Set::columns`]. The views split them back
//! ([`Set::select_sql`]).
//!
//! Why text and not `Nested` arrays: every carried column was an array of
//! its own (80 of them), written and merged on every ledger row although a
//! batch's first four rows only carry anything. Storing and merging those
//! columns was the ledger's largest cost (2.6 s of server CPU for 800 000
//! ledger-shaped rows against 0.8 s with four strings; docs/benchmarks.md).
//!
//! The separators are ASCII control characters no value can hold: the
//! collector refuses them in visitor ids and codes, the rest are the
//! campaign's names or the processor's own. The writer replaces them with
//! U+FFFD all the same ([`push_text`]), so that no value can ever split a
//! record.

use std::fmt::Write as _;
use std::sync::LazyLock;

use crate::sql::push_tsv;
use ensemble_model::figures;

/// Begins each record of a set.
pub const RECORD: char = '\u{1e}';
/// Parts the fields of a record.
pub const FIELD: char = '\u{1f}';

/// The same, as ClickHouse string literals.
const RECORD_SQL: &str = "'\\x1E'";
const FIELD_SQL: &str = "'\\x1F'";

/// The name of a record in the views' `ARRAY JOIN` (no ledger column has it).
const RECORD_ALIAS: &str = "carried_record";

/// One carried set: a ledger column and the columns of its records.
#[derive(Debug)]
pub struct Set {
    /// The ledger column holding it.
    pub name: &'static str,
    /// Each field's name and ClickHouse type, in the records' order.
    pub columns: Vec<(&'static str, &'static str)>,
}

/// The columns of a figures row, as `change` and `ranged` carry them and
/// the marker lists its own: the model's catalogue (`figures::COLUMNS`),
/// in its order.
pub static FIGURE_COLUMNS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| figures::column_names().collect());

/// The columns of an analysts' journeys row (`journey`), with their types.
pub const JOURNEY_COLUMNS: [(&str, &str); 17] = [
    ("visitor_id", "String"),
    ("kind", "String"),
    ("ms", "UInt64"),
    ("event_id", "UUID"),
    ("day", "Date"),
    ("phase", "String"),
    ("channel", "String"),
    ("placement", "String"),
    ("device", "String"),
    ("contact", "String"),
    ("credits", "String"),
    ("n", "Int64"),
    ("n_events", "Int64"),
    ("n_exposures", "Int64"),
    ("n_scans", "Int64"),
    ("n_visits", "Int64"),
    ("n_signups", "Int64"),
];

/// The columns of a paths' delays row (`delayed`, `paths_delays_ranges`).
pub const DELAY_COLUMNS: [(&str, &str); 9] = [
    ("first_day", "Date"),
    ("last_day", "Date"),
    ("bots", "UInt8"),
    ("device_filter", "String"),
    ("placement_filter", "String"),
    ("rounding", "UInt32"),
    ("path", "String"),
    ("delay_seconds", "UInt32"),
    ("n", "Int64"),
];

/// The sets, in the order of the ledger's columns and of the rows
/// carrying them: the figures' change (on the batch's head row, which
/// `crate::batches` finds), the journeys', the change summed by range,
/// the paths' delays by range and rounding.
pub static SETS: LazyLock<[Set; 4]> = LazyLock::new(|| {
    let figure = || {
        figures::COLUMNS
            .iter()
            .map(|c| (c.name, c.sql_type))
            .collect::<Vec<_>>()
    };
    [
        Set {
            name: "change",
            columns: figure(),
        },
        Set {
            name: "journey",
            columns: JOURNEY_COLUMNS.to_vec(),
        },
        Set {
            name: "ranged",
            columns: figure(),
        },
        Set {
            name: "delayed",
            columns: DELAY_COLUMNS.to_vec(),
        },
    ]
});

/// The set named `name` (one of [`SETS`]).
///
/// # Panics
/// On a name that is not a set's: a programming error.
pub fn set(name: &str) -> &'static Set {
    #[allow(clippy::expect_used)]
    let found = SETS
        .iter()
        .find(|s| s.name == name)
        .expect("a carried set's name");
    found
}

/// The names of the ledger's carried columns (emptied by `clear_carried`).
pub fn names() -> impl Iterator<Item = &'static str> {
    SETS.iter().map(|s| s.name)
}

impl Set {
    /// Its records as a ClickHouse array of arrays of fields.
    pub fn records_sql(&self) -> String {
        format!(
            "arrayMap(l -> splitByChar({FIELD_SQL}, l), \
             arrayFilter(l -> l != '', splitByChar({RECORD_SQL}, {})))",
            self.name
        )
    }

    /// The field `column` of the record `record` (an array of fields),
    /// as its type.
    ///
    /// # Panics
    /// On a column the set does not have: a programming error.
    pub fn field_sql(&self, column: &str, record: &str) -> String {
        #[allow(clippy::expect_used)]
        let (i, (_, sql_type)) = self
            .columns
            .iter()
            .enumerate()
            .find(|(_, (c, _))| *c == column)
            .expect("a column of the set");
        let field = format!("{record}[{}]", i + 1);
        match *sql_type {
            "String" => field,
            "DateTime" => format!("toDateTime(toUInt32({field}))"),
            t => format!("to{t}({field})"),
        }
    }

    /// `SELECT <each of columns> AS <alias(column)>, … FROM ledger ARRAY
    /// JOIN <its records>`: the rows a view writes from the set, each
    /// column as its type. `columns` are the target's (some of the set's).
    pub fn select_sql(&self, columns: &[&str], alias: impl Fn(&str) -> String) -> String {
        let selected: Vec<String> = columns
            .iter()
            .map(|c| format!("{} AS {}", self.field_sql(c, RECORD_ALIAS), alias(c)))
            .collect();
        format!(
            "SELECT {} FROM ledger ARRAY JOIN {} AS {RECORD_ALIAS}",
            selected.join(", "),
            self.records_sql()
        )
    }

    /// Its first record as an array of fields (the batch marker's, on a
    /// row that carries the set).
    pub fn first_record_sql(&self) -> String {
        format!(
            "splitByChar({FIELD_SQL}, splitByChar({RECORD_SQL}, {})[2])",
            self.name
        )
    }

    /// SQL true when its first record's first field is `value` (plain
    /// text: no quote or backslash).
    pub fn begins_with_sql(&self, value: &str) -> String {
        format!(
            "startsWith({}, concat({RECORD_SQL}, '{value}', {FIELD_SQL}))",
            self.name
        )
    }

    /// SQL true when a record of the set meets `condition` (about the
    /// record `r`: `r[1]`, or [`Set::field_sql`] of `"r"`).
    pub fn any_sql(&self, condition: &str) -> String {
        format!("arrayExists(r -> {condition}, {})", self.records_sql())
    }
}

/// A text field: TSV-escaped, the separators replaced.
pub(crate) fn push_text(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == RECORD as u8 || b == FIELD as u8) {
        push_tsv(out, &s.replace([RECORD, FIELD], "\u{fffd}"));
    } else {
        push_tsv(out, s);
    }
}

/// A `Date` field: `YYYY-MM-DD`.
pub(crate) fn push_date(out: &mut String, day: figures::Day) {
    use chrono::Datelike;
    // Not `format("%Y-%m-%d")`: that parses its pattern on every call, three
    // times per figure row (a tenth of a large batch's formatting).
    let d = figures::date_of(day);
    let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

/// A number field.
pub(crate) fn push_number(out: &mut String, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

/// A `Float64` field, as Rust prints it in full (ClickHouse reads it back
/// to the same value).
pub(crate) fn push_float(out: &mut String, x: f64) {
    let _ = write!(out, "{x:?}");
}

/// One record: [`RECORD`], then each of `parts` written by `each`,
/// parted by [`FIELD`].
fn push_joined<P>(
    out: &mut String,
    parts: impl IntoIterator<Item = P>,
    mut each: impl FnMut(&mut String, P),
) {
    out.push(RECORD);
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(FIELD);
        }
        each(out, part);
    }
}

/// A set's text: the `markers`' records (ready values), then one record
/// of `fields` per item of `items`.
pub(crate) fn push_set<T, F: Fn(&mut String, &T)>(
    out: &mut String,
    markers: &[Vec<String>],
    items: &[T],
    fields: &[F],
) {
    for values in markers {
        push_joined(out, values, |o, v| push_text(o, v));
    }
    for item in items {
        push_joined(out, fields, |o, field| field(o, item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_field_cannot_split_a_record_or_a_row() {
        let mut out = String::new();
        push_text(&mut out, "a\u{1e}b\u{1f}c\td\\e\nf");
        assert_eq!(out, "a\u{fffd}b\u{fffd}c\\td\\\\e\\nf");
        let mut out = String::from("x");
        push_text(&mut out, "p3-8-mars é");
        assert_eq!(out, "xp3-8-mars é", "a plain value as it is");
    }

    #[test]
    fn dates_are_written_as_chrono_formats_them() {
        for day in [0, 1, 10_957, 20_089, 20_454, 2_932_896, u32::MAX] {
            let mut out = String::new();
            push_date(&mut out, day);
            let want = figures::date_of(day).format("%Y-%m-%d").to_string();
            assert_eq!(out, want, "day {day}");
        }
    }

    #[test]
    fn each_field_is_read_as_its_type() {
        let s = set("change");
        assert_eq!(s.field_sql("figure", "r"), "r[1]");
        assert_eq!(s.field_sql("bots", "r"), "toUInt8(r[2])");
        assert_eq!(s.field_sql("first_day", "r"), "toDate(r[5])");
        let hour = FIGURE_COLUMNS
            .iter()
            .position(|c| *c == "hour")
            .unwrap_or(0);
        assert_eq!(
            s.field_sql("hour", "r"),
            format!("toDateTime(toUInt32(r[{}]))", hour + 1)
        );
        assert_eq!(set("journey").field_sql("event_id", "x"), "toUUID(x[4])");
        let sql = set("delayed").select_sql(&["n", "path"], |c| format!("d_{c}"));
        assert_eq!(
            sql,
            "SELECT toInt64(carried_record[9]) AS d_n, carried_record[7] AS d_path \
             FROM ledger ARRAY JOIN arrayMap(l -> splitByChar('\\x1F', l), \
             arrayFilter(l -> l != '', splitByChar('\\x1E', delayed))) AS carried_record"
        );
    }
}
