//! The figures' stored columns, declared once: their names, ClickHouse
//! types, zero values and what each is for. The ledger INSERT's carried
//! arrays (`change`, `ranged`), the summed tables' columns, the batch
//! marker's elements, the dashboard's select list and the tests' keys are
//! made from this list; the migrations that made the tables are checked
//! against it (`tests/tests/clickhouse.rs`).

/// What a column is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `figure`: which figure the row counts.
    Figure,
    /// The scope a question filters on: `bots`, `device_filter`,
    /// `placement_filter` (see `docs/figures.md`).
    Scope,
    /// `first_day`, `last_day`: the days the row depends on (a summed
    /// table's: the range).
    Days,
    /// What the figure is broken down by (`Figure::dimensions` names them).
    Dimension,
    /// `n`, `credit`: summed.
    Value,
}

/// One stored column of the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// Its ClickHouse type in `figures` (in the ledger's arrays, `Array(…)`
    /// of it).
    pub sql_type: &'static str,
    /// Its value where a figure does not use it, as SQL.
    pub zero: &'static str,
    pub role: Role,
}

const fn column(name: &'static str, sql_type: &'static str, role: Role) -> Column {
    let zero = match sql_type.as_bytes()[0] {
        b'S' => "''",
        b'U' if sql_type.len() == 5 => "toUInt8(0)",
        b'U' => "toUInt32(0)",
        b'I' => "toInt64(0)",
        b'F' => "toFloat64(0)",
        b'D' if sql_type.len() == 4 => "toDate(0)",
        _ => "toDateTime(0)",
    };
    Column {
        name,
        sql_type,
        zero,
        role,
    }
}

/// Every column of a figures row, in the order the ledger carries them
/// (`change.*`, `ranged.*`) and the batch marker lists its own.
pub const COLUMNS: [Column; 25] = [
    column("figure", "String", Role::Figure),
    column("bots", "UInt8", Role::Scope),
    column("device_filter", "String", Role::Scope),
    column("placement_filter", "String", Role::Scope),
    column("first_day", "Date", Role::Days),
    column("last_day", "Date", Role::Days),
    column("phase", "String", Role::Dimension),
    column("channel", "String", Role::Dimension),
    column("placement", "String", Role::Dimension),
    column("event_type", "String", Role::Dimension),
    column("action", "String", Role::Dimension),
    column("step", "String", Role::Dimension),
    column("model", "String", Role::Dimension),
    column("conversion_phase", "String", Role::Dimension),
    column("other_channel", "String", Role::Dimension),
    column("device_class", "String", Role::Dimension),
    column("os_family", "String", Role::Dimension),
    column("frequency", "UInt8", Role::Dimension),
    column("hour", "DateTime", Role::Dimension),
    column("local_hour", "UInt8", Role::Dimension),
    column("day", "Date", Role::Dimension),
    column("path", "String", Role::Dimension),
    column("delay_seconds", "UInt32", Role::Dimension),
    column("n", "Int64", Role::Value),
    column("credit", "Float64", Role::Value),
];

/// The names of [`COLUMNS`], in order.
pub fn column_names() -> impl Iterator<Item = &'static str> {
    COLUMNS.iter().map(|c| c.name)
}

/// The names of the columns of `roles`, in [`COLUMNS`]' order.
pub fn columns_of(roles: &[Role]) -> impl Iterator<Item = &'static str> + '_ {
    COLUMNS
        .iter()
        .filter(move |c| roles.contains(&c.role))
        .map(|c| c.name)
}

/// The column named `name`.
pub fn column_named(name: &str) -> Option<&'static Column> {
    COLUMNS.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::Figure;

    #[test]
    fn every_dimension_a_figure_uses_is_a_dimension_column() {
        for f in Figure::ALL {
            for d in f.dimensions() {
                assert_eq!(
                    column_named(d).map(|c| c.role),
                    Some(Role::Dimension),
                    "{f:?} {d}"
                );
            }
        }
    }

    #[test]
    fn zeros_are_of_each_type() {
        let zero = |n: &str| column_named(n).map(|c| c.zero);
        assert_eq!(zero("phase"), Some("''"));
        assert_eq!(zero("frequency"), Some("toUInt8(0)"));
        assert_eq!(zero("delay_seconds"), Some("toUInt32(0)"));
        assert_eq!(zero("hour"), Some("toDateTime(0)"));
        assert_eq!(zero("day"), Some("toDate(0)"));
        assert_eq!(zero("n"), Some("toInt64(0)"));
        assert_eq!(zero("credit"), Some("toFloat64(0)"));
        let names: Vec<&str> = column_names().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each name once");
    }
}
