//! Session state sluice tracks instead of pinning: the default schema and the RDS Proxy list of
//! session variables (plus the common ones ORMs set), read back from the server after a change
//! and replayed on whichever connection a session borrows next.

use std::fmt::Write as _;

use crate::session::keys::KeyMap;

/// Tracked session variables. Spellings that differ between MySQL and MariaDB share a slot:
/// `(MySQL 8 name, MariaDB name)`. Order matters for replay: the connection character set is
/// set before the collation it would otherwise reset.
pub const TRACKED: [(&str, &str); 24] = [
    ("autocommit", "autocommit"),
    ("character_set_client", "character_set_client"),
    ("character_set_results", "character_set_results"),
    ("character_set_connection", "character_set_connection"),
    ("collation_connection", "collation_connection"),
    ("sql_mode", "sql_mode"),
    ("time_zone", "time_zone"),
    ("transaction_isolation", "tx_isolation"),
    ("transaction_read_only", "tx_read_only"),
    ("wait_timeout", "wait_timeout"),
    ("interactive_timeout", "interactive_timeout"),
    ("net_write_timeout", "net_write_timeout"),
    ("net_read_timeout", "net_read_timeout"),
    ("auto_increment_increment", "auto_increment_increment"),
    ("auto_increment_offset", "auto_increment_offset"),
    ("foreign_key_checks", "foreign_key_checks"),
    ("unique_checks", "unique_checks"),
    ("sql_safe_updates", "sql_safe_updates"),
    ("sql_select_limit", "sql_select_limit"),
    ("group_concat_max_len", "group_concat_max_len"),
    ("max_join_size", "max_join_size"),
    ("innodb_lock_wait_timeout", "innodb_lock_wait_timeout"),
    ("lock_wait_timeout", "lock_wait_timeout"),
    ("div_precision_increment", "div_precision_increment"),
];

/// `sql_mode`'s slot: read for every statement scanned (NO_BACKSLASH_ESCAPES), so not searched.
pub const SQL_MODE: usize = 5;
/// `transaction_read_only` / `tx_read_only`: a session default of read-only sends its
/// transactions to a reader on split endpoints.
pub const READ_ONLY: usize = 8;

/// The slot of a variable name as a client may spell it (`tx_isolation` and
/// `transaction_isolation` both work on servers that know either).
pub fn tracked_slot(name: &str) -> Option<usize> {
    TRACKED
        .iter()
        .position(|(my, maria)| name.eq_ignore_ascii_case(my) || name.eq_ignore_ascii_case(maria))
}

/// One value per `TRACKED` slot (`None` is SQL NULL, as `character_set_results` can be).
pub type Vars = std::sync::Arc<[Option<Box<str>>]>;

/// How one server flavour spells things: decided once per pool from the server version.
#[derive(Debug, Clone)]
pub struct Dialect {
    /// `SELECT @@session.a, ..., DATABASE()`.
    pub read_back: String,
    pub mariadb: bool,
}

impl Dialect {
    pub fn for_version(version: &str) -> Self {
        let mariadb = version.contains("MariaDB");
        let mut read_back = String::from("SELECT ");
        for (my, maria) in TRACKED {
            let _ = write!(
                read_back,
                "@@session.{}, ",
                if mariadb { maria } else { my }
            );
        }
        read_back.push_str("DATABASE()");
        Self { read_back, mariadb }
    }

    fn name(&self, slot: usize) -> &'static str {
        let (my, maria) = TRACKED[slot];
        if self.mariadb { maria } else { my }
    }

    /// Splits a read-back row into tracked values and the schema.
    pub fn parse_read_back(&self, row: Vec<Option<String>>) -> Option<(Vars, Option<Box<str>>)> {
        if row.len() != TRACKED.len() + 1 {
            return None;
        }
        let mut values: Vec<Option<Box<str>>> = row
            .into_iter()
            .map(|v| v.map(String::into_boxed_str))
            .collect();
        let schema = values.pop().flatten();
        Some((values.into(), schema))
    }

    /// One `SET SESSION` that takes `have` to `want`; empty when they agree.
    pub fn replay_sql(&self, have: &Vars, want: &Vars) -> String {
        let mut sql = String::new();
        for (slot, (h, w)) in have.iter().zip(want.iter()).enumerate() {
            if h == w {
                continue;
            }
            sql.push_str(if sql.is_empty() { "SET SESSION " } else { ", " });
            let _ = write!(sql, "{} = ", self.name(slot));
            push_value(&mut sql, w.as_deref());
        }
        sql
    }
}

/// A value as a literal: numbers bare (boolean variables refuse the string '1'), NULL as NULL,
/// anything else quoted with backslashes and quotes escaped.
fn push_value(sql: &mut String, value: Option<&str>) {
    match value {
        None => sql.push_str("NULL"),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => sql.push_str(v),
        Some(v) => {
            sql.push('\'');
            for c in v.chars() {
                if c == '\'' || c == '\\' {
                    sql.push('\\');
                }
                sql.push(c);
            }
            sql.push('\'');
        }
    }
}

/// What a server statement is: its text and the schema it was prepared in (a server resolves
/// unqualified table names at prepare time, so the same text in another schema is another
/// statement).
#[derive(Debug)]
pub struct StatementKey {
    pub schema: Option<Box<str>>,
    pub sql: Box<[u8]>,
    /// The hash of both, computed once: every execute looks its key up in the connection's
    /// map, and hashing the text there was 4 % of a point select's instructions (callgrind).
    hash: u64,
}

impl StatementKey {
    pub fn new(schema: Option<Box<str>>, sql: Box<[u8]>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        schema.hash(&mut h);
        sql.hash(&mut h);
        Self {
            schema,
            sql,
            hash: h.finish(),
        }
    }
}

impl PartialEq for StatementKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.schema == other.schema && self.sql == other.sql
    }
}

impl Eq for StatementKey {}

impl std::hash::Hash for StatementKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// What sluice has left on one server connection.
#[derive(Debug, Default)]
pub struct ConnState {
    pub schema: Option<Box<str>>,
    /// `None` while the variables are the pool's baseline.
    pub vars: Option<Vars>,
    /// The LAST_INSERT_ID() the connection would report.
    pub last_insert_id: u64,
    /// Server statement ids of the statements prepared here.
    pub statements: KeyMap<std::sync::Arc<StatementKey>, u32>,
    /// `@@last_gtid` when sluice last read it here (split endpoints): a different value after a
    /// transaction means that transaction wrote.
    pub last_gtid: Option<Box<str>>,
}

/// The baseline when `vars` is `None`.
pub fn effective<'a>(vars: &'a Option<Vars>, baseline: &'a Vars) -> &'a Vars {
    vars.as_ref().unwrap_or(baseline)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statement_keys_match_on_schema_and_text_only() {
        use std::sync::Arc;
        let key = |schema: Option<&str>, sql: &str| {
            Arc::new(StatementKey::new(
                schema.map(Into::into),
                sql.as_bytes().into(),
            ))
        };
        let mut map = std::collections::HashMap::new();
        map.insert(key(Some("app"), "SELECT 1"), 7u32);
        assert_eq!(map.get(&key(Some("app"), "SELECT 1")), Some(&7));
        assert_eq!(map.get(&key(Some("other"), "SELECT 1")), None);
        assert_eq!(map.get(&key(None, "SELECT 1")), None);
        assert_eq!(map.get(&key(Some("app"), "SELECT 2")), None);
        assert_ne!(*key(Some("ab"), "c"), *key(Some("a"), "bc"));
    }

    fn vars(pairs: &[(&str, Option<&str>)]) -> Vars {
        let mut v: Vec<Option<Box<str>>> = vec![Some("x".into()); TRACKED.len()];
        for (name, value) in pairs {
            v[tracked_slot(name).unwrap()] = value.map(Into::into);
        }
        v.into()
    }

    #[test]
    fn replay_sets_only_what_differs_in_the_servers_spelling() {
        let maria = Dialect::for_version("5.5.5-10.11.19-MariaDB-0+deb12u1");
        let mysql = Dialect::for_version("8.0.36");
        assert!(maria.read_back.contains("@@session.tx_isolation"));
        assert!(mysql.read_back.contains("@@session.transaction_isolation"));
        assert!(maria.read_back.ends_with("DATABASE()"));
        let base = vars(&[]);
        let want = vars(&[
            ("transaction_isolation", Some("READ-COMMITTED")),
            ("autocommit", Some("0")),
            ("character_set_results", None),
            ("time_zone", Some("it's\\odd")),
        ]);
        assert_eq!(maria.replay_sql(&base, &base), "");
        assert_eq!(
            maria.replay_sql(&base, &want),
            "SET SESSION autocommit = 0, character_set_results = NULL, \
             time_zone = 'it\\'s\\\\odd', tx_isolation = 'READ-COMMITTED'"
        );
        assert!(
            mysql
                .replay_sql(&base, &want)
                .contains("transaction_isolation = ")
        );
        assert_eq!(
            tracked_slot("TX_READ_ONLY"),
            tracked_slot("transaction_read_only")
        );
        assert_eq!(tracked_slot("sql_log_bin"), None);
        assert_eq!(tracked_slot("sql_mode"), Some(SQL_MODE));
        assert_eq!(tracked_slot("tx_read_only"), Some(READ_ONLY));
    }

    #[test]
    fn read_back_rows_split_into_vars_and_schema() {
        let d = Dialect::for_version("MariaDB");
        let mut row: Vec<Option<String>> = vec![Some("1".into()); TRACKED.len()];
        row.push(Some("appdb".into()));
        let (v, schema) = d.parse_read_back(row).unwrap();
        assert_eq!(v.len(), TRACKED.len());
        assert_eq!(schema.as_deref(), Some("appdb"));
        assert!(d.parse_read_back(vec![None]).is_none());
    }
}
