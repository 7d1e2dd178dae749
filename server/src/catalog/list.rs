//! Listing the catalog's objects a page at a time (`GET /v1/admin/objects`).
//!
//! Each page is one range read of the `(class, name)` index: the cursor,
//! the class and the name prefix are bounds of that range, not filters over
//! the whole index, so a page costs the same at the start and at the end
//! of a catalog of a million objects. A query with optional parameters
//! (`?1 IS NULL OR class = ?1`) would not do: SQLite plans such a statement
//! once, as a scan of the index from its first row, so page k read k pages
//! of rows and listing every object grew with the square of their number.
//!
//! A prefix without a class is the one filter left: the index is ordered by
//! class first, so those rows are read from the cursor on until the page is
//! full (at most the whole index once per page).

use rusqlite::Connection;

use super::{row, CatalogEntry};

/// What a page lists: objects after `after` (a `(class, name)` cursor), of
/// `class` if set, whose names start with `prefix` if set.
pub(super) struct Page {
    pub class: Option<String>,
    pub prefix: Option<String>,
    pub after: Option<(String, String)>,
    pub limit: u32,
}

/// Splits a `class/name` cursor (the class holds no `/`; the name may).
pub(crate) fn parse_cursor(cursor: &str) -> Option<(String, String)> {
    cursor
        .split_once('/')
        .map(|(c, n)| (c.to_owned(), n.to_owned()))
}

/// The smallest string above every string that starts with `prefix`, if
/// there is one: its last character that can be raised, raised by one, and
/// what followed it dropped. UTF-8 orders bytes as code points, so with
/// SQLite's binary collation `prefix <= name < end` holds exactly for the
/// names that start with `prefix`.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The statement for a page: its SQL and parameters, the bounds the
/// index can seek to.
fn statement(page: &Page) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql =
        String::from("SELECT id, class, name, created_ms, last_active_ms FROM objects WHERE 1");
    let mut params: Vec<Value> = Vec::new();
    let mut bound = |sql: &mut String, clause: &str, value: &str| {
        params.push(Value::Text(value.to_owned()));
        sql.push_str(&clause.replace('?', &format!("?{}", params.len())));
    };
    if let Some(class) = &page.class {
        bound(&mut sql, " AND class = ?", class);
        if let Some(prefix) = &page.prefix {
            bound(&mut sql, " AND name >= ?", prefix);
            if let Some(end) = prefix_end(prefix) {
                bound(&mut sql, " AND name < ?", &end);
            }
        }
    } else if let Some(prefix) = &page.prefix {
        // Both placeholders are the one parameter.
        bound(&mut sql, " AND substr(name, 1, length(?)) = ?", prefix);
    }
    if let Some((class, name)) = &page.after {
        params.push(Value::Text(class.clone()));
        params.push(Value::Text(name.clone()));
        let n = params.len();
        sql.push_str(&format!(" AND (class, name) > (?{}, ?{n})", n - 1));
    }
    params.push(Value::Integer(i64::from(page.limit)));
    sql.push_str(&format!(" ORDER BY class, name LIMIT ?{}", params.len()));
    (sql, params)
}

/// Objects ordered by (class, name): one page.
pub(super) fn list(conn: &Connection, page: &Page) -> rusqlite::Result<Vec<CatalogEntry>> {
    let (sql, params) = statement(page);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), row)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(names: &[(&str, &str)]) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(super::super::SCHEMA).expect("schema");
        for (i, (class, name)) in names.iter().enumerate() {
            conn.execute(
                "INSERT INTO objects VALUES(?1, ?2, ?3, 0, 0)",
                (format!("{i:032x}"), class, name),
            )
            .expect("insert");
        }
        conn
    }

    fn page(class: Option<&str>, prefix: Option<&str>, after: Option<(&str, &str)>) -> Page {
        Page {
            class: class.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
            after: after.map(|(c, n)| (c.to_owned(), n.to_owned())),
            limit: 1000,
        }
    }

    /// Every page after the first is a seek in the index, not a scan from
    /// its start (the cost that grew with the square of the objects).
    #[test]
    fn a_page_after_a_cursor_seeks_the_index() {
        let conn = catalog(&[]);
        for p in [
            page(None, None, Some(("counter", "x"))),
            page(Some("counter"), None, Some(("counter", "x"))),
            page(Some("counter"), Some("x"), Some(("counter", "x1"))),
            page(Some("counter"), Some("x"), None),
        ] {
            let (sql, params) = statement(&p);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .and_then(|mut s| {
                    s.query_map(rusqlite::params_from_iter(params), |r| r.get(3))?
                        .collect()
                })
                .expect("plan");
            let plan = plan.join("; ");
            assert!(
                plan.contains("SEARCH objects USING INDEX objects_by_class_name"),
                "{sql}: {plan}"
            );
        }
    }

    #[test]
    fn prefix_end_is_the_least_string_above_the_prefix() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }

    /// Pages agree with filtering every row, for every class, prefix and
    /// cursor over names at the edges of UTF-8.
    #[test]
    fn pages_agree_with_a_plain_filter() {
        let names = [
            "",
            "a",
            "a/b",
            "ab",
            "abc",
            "ac",
            "a\u{7F}",
            "a\u{80}",
            "a\u{FFFF}",
            "a\u{10FFFF}",
            "a\u{10FFFF}z",
            "b",
            "é",
            "éa",
            "z",
        ];
        let mut all: Vec<(&str, &str)> = Vec::new();
        for class in ["counter", "room", "ydoc"] {
            all.extend(names.iter().filter(|n| !n.is_empty()).map(|n| (class, *n)));
        }
        let conn = catalog(&all);
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
        for class in [None, Some("counter"), Some("room"), Some("nope")] {
            for prefix in names.iter().map(|p| Some(*p)).chain([None]) {
                for after in sorted.iter().map(|a| Some(*a)).chain([None]) {
                    let got: Vec<(String, String)> = list(&conn, &page(class, prefix, after))
                        .expect("list")
                        .into_iter()
                        .map(|e| (e.class, e.name))
                        .collect();
                    let want: Vec<(String, String)> = sorted
                        .iter()
                        .filter(|(c, n)| {
                            class.is_none_or(|k| k == *c)
                                && prefix.is_none_or(|p| n.starts_with(p))
                                && after.is_none_or(|a| (*c, n.as_bytes()) > (a.0, a.1.as_bytes()))
                        })
                        .map(|(c, n)| (c.to_string(), n.to_string()))
                        .collect();
                    assert_eq!(
                        got, want,
                        "class {class:?} prefix {prefix:?} after {after:?}"
                    );
                }
            }
        }
    }
}
