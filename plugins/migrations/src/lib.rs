//! The bundled `migrations` readiness probe (`builtin:migrations`).
//!
//! Ready only when the schema is the one this release expects.
//!
//! - `tool = "django"` (the default): every migration of the plan (written at
//!   build time by `probehost migrations plan`, handed to the probe by the host
//!   as its `plan` setting) must be recorded in `django_migrations`. A squashed
//!   migration counts as applied when it is, or when everything it replaces is.
//! - `tool = "alembic"`: the revisions in `alembic_version` (or `table`) must
//!   be exactly the expected `head` (several heads separated by commas or spaces).
//!
//! Every granted database is checked, in config order. A missing table means
//! nothing was migrated yet: not ready, with that message. Migrations that are
//! applied but not in the plan (a newer release's, during a rollback) do not
//! make the probe fail.
#![forbid(unsafe_code)]

// `plan::render` is the host's business: it writes plans, the component reads them.
#[allow(dead_code)]
mod plan;

use std::collections::HashSet;

use probehost_sdk::sql::{self, Backend, Database, Value};
use probehost_sdk::{NotReady, Probe, Request, config};

use self::plan::Step;

/// The prefix of every answer.
const PREFIX: &str = "migrations";

struct Migrations;

impl Probe for Migrations {
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
        let check = Check::from_config().map_err(|e| not_ready(&e))?;
        let databases = sql::databases();
        if databases.is_empty() {
            return Err(not_ready(
                "no database is granted to this probe, so there is nothing to check",
            ));
        }
        let several = databases.len() > 1;
        for database in &databases {
            if let Err(reason) = check.run(database) {
                return Err(not_ready(&if several {
                    format!("database {:?}: {reason}", database.name)
                } else {
                    reason
                }));
            }
        }
        Ok(())
    }
}

fn not_ready(reason: &str) -> NotReady {
    NotReady::new(format!("{PREFIX}: {reason}"))
}

/// What the probe's config asks for.
enum Check {
    Django(Vec<Step>),
    Alembic { table: String, heads: Vec<String> },
}

impl Check {
    fn from_config() -> Result<Check, String> {
        match config::get("tool").as_deref().unwrap_or("django") {
            "django" => {
                let text = config::get("plan").ok_or(
                    "no `plan` is configured (write one with `probehost migrations plan`)",
                )?;
                let steps = plan::parse(&text).map_err(|e| format!("plan: {e}"))?;
                Ok(Check::Django(steps))
            }
            "alembic" => {
                let table = config::get("table").unwrap_or_else(|| "alembic_version".to_owned());
                check_table_name(&table)?;
                let heads: Vec<String> = config::get("head")
                    .unwrap_or_default()
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect();
                if heads.is_empty() {
                    return Err("no expected `head` revision is configured".to_owned());
                }
                Ok(Check::Alembic { table, heads })
            }
            other => Err(format!(
                "unknown tool {other:?} (expected \"django\" or \"alembic\")"
            )),
        }
    }

    fn run(&self, database: &Database) -> Result<(), String> {
        match self {
            Check::Django(steps) => {
                let rows = read(
                    database,
                    "django_migrations",
                    "SELECT app, name FROM django_migrations",
                )?;
                let applied: HashSet<String> = rows
                    .iter()
                    .filter_map(|row| match (row.first(), row.get(1)) {
                        (Some(Value::Text(app)), Some(Value::Text(name))) => {
                            Some(format!("{app}.{name}"))
                        }
                        _ => None,
                    })
                    .collect();
                let mut unapplied = steps.iter().filter(|s| !s.is_applied(&applied));
                match unapplied.next() {
                    None => Ok(()),
                    Some(first) => Err(format!(
                        "{} unapplied, first: {}",
                        1 + unapplied.count(),
                        first.migration
                    )),
                }
            }
            Check::Alembic { table, heads } => {
                let statement = format!("SELECT version_num FROM {table}");
                let rows = read(database, table, &statement)?;
                let mut current: Vec<String> = rows
                    .iter()
                    .filter_map(|row| match row.first() {
                        Some(Value::Text(v)) => Some(v.clone()),
                        _ => None,
                    })
                    .collect();
                current.sort();
                let mut expected = heads.clone();
                expected.sort();
                expected.dedup();
                if current.is_empty() {
                    Err("not migrated yet".to_owned())
                } else if current == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "at {}, expected {}",
                        current.join(", "),
                        expected.join(", ")
                    ))
                }
            }
        }
    }
}

/// The rows of `statement`, which reads `table`. A table that does not exist
/// means nothing was migrated yet.
fn read(database: &Database, table: &str, statement: &str) -> Result<Vec<Vec<Value>>, String> {
    match sql::query(&database.name, statement, &[]) {
        Ok(rows) => Ok(rows.rows),
        Err(sql::Error::Query(message)) => match table_exists(database, table) {
            Ok(false) => Err("not migrated yet".to_owned()),
            _ => Err(format!("cannot read {table}: {message}")),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `table` (optionally `schema.table`) exists, asked in the way of each
/// backend.
fn table_exists(database: &Database, table: &str) -> Result<bool, sql::Error> {
    let (schema, name) = match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    };
    let text = |s: &str| Value::Text(s.to_owned());
    let rows = match database.backend {
        Backend::Postgres => sql::query(
            &database.name,
            "SELECT to_regclass($1) IS NOT NULL",
            &[text(table)],
        )?,
        Backend::Mysql => sql::query(
            &database.name,
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
            &[schema.map_or(Value::Null, text), text(name)],
        )?,
        Backend::Sqlite => sql::query(
            &database.name,
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            &[text(name)],
        )?,
    };
    Ok(match rows.scalar() {
        Some(Value::Boolean(b)) => *b,
        Some(Value::Integer(n)) => *n > 0,
        _ => true,
    })
}

/// A table name goes into the statement as it is, so it must be a plain
/// identifier, optionally schema-qualified.
fn check_table_name(table: &str) -> Result<(), String> {
    let identifier = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let valid = match table.split_once('.') {
        Some((schema, name)) => identifier(schema) && identifier(name),
        None => identifier(table),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "table {table:?} is not an identifier (letters, digits and `_`, optionally `schema.table`)"
        ))
    }
}

probehost_sdk::export_probe!(Migrations);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_table_names_are_accepted() {
        for good in ["alembic_version", "app.alembic_version", "_v2"] {
            assert_eq!(check_table_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "v; DROP TABLE x", "1abc", "a.b.c", "a.", "\"q\""] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
    }
}
