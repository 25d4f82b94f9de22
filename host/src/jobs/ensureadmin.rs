//! `ensureadmin`: create Django's superuser row once, safely with many replicas.
//!
//! The row is what Django's `UserManager.create_superuser` writes: NFKC-normalized
//! username, `pbkdf2_sha256` password, email with its domain lower-cased (`''`
//! when none), empty names, `is_superuser`/`is_staff`/`is_active` true,
//! `last_login` NULL and `date_joined` now. The insert ignores a conflict on the
//! username, so concurrent runs create exactly one row and all succeed; there is
//! no check-then-insert race.

use std::time::{SystemTime, UNIX_EPOCH};

use unicode_normalization::UnicodeNormalization as _;

use crate::db::{Connection, DbError};

/// `auth_user.username` is a `varchar(150)`.
const MAX_USERNAME: usize = 150;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub username: String,
    /// The hash, never the password.
    pub password: String,
    pub email: String,
}

/// Why the row could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("the auth_user table does not exist: run migrations first")]
    NoTable,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Django's `AbstractBaseUser.normalize_username`: Unicode NFKC.
pub fn normalize_username(username: &str) -> Result<String, String> {
    let normalized: String = username.nfkc().collect();
    if normalized.chars().count() > MAX_USERNAME {
        return Err(format!(
            "Username is too long ({MAX_USERNAME} characters at most)."
        ));
    }
    Ok(normalized)
}

/// Django's `BaseUserManager.normalize_email`: the domain part lower-cased.
pub fn normalize_email(email: &str) -> String {
    match email.trim().rsplit_once('@') {
        Some((name, domain)) => format!("{name}@{}", domain.to_lowercase()),
        None => email.to_owned(),
    }
}

/// Insert the superuser unless a user with that username exists. Returns
/// whether this call created it.
pub async fn ensure_admin(conn: &mut Connection, admin: &Admin) -> Result<bool, EnsureError> {
    let result = match conn {
        Connection::Postgres(c) => sqlx::query(
            "INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, \
             last_name, email, is_staff, is_active, date_joined) \
             VALUES ($1, NULL, TRUE, $2, '', '', $3, TRUE, TRUE, NOW()) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(&admin.password)
        .bind(&admin.username)
        .bind(&admin.email)
        .execute(c)
        .await
        .map(|r| r.rows_affected() == 1),
        // Django stores UTC without a zone on MySQL. A conflict is the
        // duplicate-key error: `ON DUPLICATE KEY UPDATE` cannot tell an insert
        // from a no-op when the server reports found rows, and `INSERT IGNORE`
        // would hide other errors too.
        Connection::Mysql(c) => match sqlx::query(
            "INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, \
             last_name, email, is_staff, is_active, date_joined) \
             VALUES (?, NULL, 1, ?, '', '', ?, 1, 1, UTC_TIMESTAMP(6))",
        )
        .bind(&admin.password)
        .bind(&admin.username)
        .bind(&admin.email)
        .execute(c)
        .await
        {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            other => other.map(|r| r.rows_affected() == 1),
        },
        // Django writes SQLite datetimes as text, UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]`.
        Connection::Sqlite(c) => sqlx::query(
            "INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, \
             last_name, email, is_staff, is_active, date_joined) \
             VALUES (?, NULL, 1, ?, '', '', ?, 1, 1, ?) ON CONFLICT (username) DO NOTHING",
        )
        .bind(&admin.password)
        .bind(&admin.username)
        .bind(&admin.email)
        .bind(django_utc_now())
        .execute(c)
        .await
        .map(|r| r.rows_affected() == 1),
    };
    result.map_err(|e| {
        if is_missing_table(&e) {
            EnsureError::NoTable
        } else {
            EnsureError::Db(DbError::from_sqlx(e))
        }
    })
}

/// Whether `auth_user` exists is known only from the error of the insert: the
/// SQLSTATE on PostgreSQL and MySQL, the message on SQLite.
fn is_missing_table(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    matches!(db.code().as_deref(), Some("42P01" | "42S02"))
        || db.message().contains("no such table")
}

/// Whether a user named `username` exists.
pub async fn exists(conn: &mut Connection, username: &str) -> Result<bool, EnsureError> {
    let found = match conn {
        Connection::Postgres(c) => sqlx::query("SELECT 1 FROM auth_user WHERE username = $1")
            .bind(username)
            .fetch_optional(c)
            .await
            .map(|r| r.is_some()),
        Connection::Mysql(c) => sqlx::query("SELECT 1 FROM auth_user WHERE username = ?")
            .bind(username)
            .fetch_optional(c)
            .await
            .map(|r| r.is_some()),
        Connection::Sqlite(c) => sqlx::query("SELECT 1 FROM auth_user WHERE username = ?")
            .bind(username)
            .fetch_optional(c)
            .await
            .map(|r| r.is_some()),
    };
    found.map_err(|e| {
        if is_missing_table(&e) {
            EnsureError::NoTable
        } else {
            EnsureError::Db(DbError::from_sqlx(e))
        }
    })
}

/// Now in UTC as Django's SQLite backend writes an aware datetime.
fn django_utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_micros())
}

fn format_utc(secs: u64, micros: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let time = format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    // Python's str(datetime) omits the fraction when it is zero.
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02} {time}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {time}.{micros:06}")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_as_django_does() {
        assert_eq!(normalize_email("Admin@Example.COM"), "Admin@example.com");
        assert_eq!(normalize_email(" a@b.c@Example.ORG "), "a@b.c@example.org");
        assert_eq!(normalize_email(""), "");
        assert_eq!(normalize_email(" no-at-sign "), " no-at-sign ");
    }

    #[test]
    fn usernames_are_nfkc_normalized_and_bounded() {
        assert_eq!(normalize_username("ａｄｍｉｎ").unwrap(), "admin");
        assert_eq!(normalize_username("ﬁle").unwrap(), "file");
        assert!(normalize_username(&"x".repeat(151)).is_err());
        assert!(normalize_username(&"x".repeat(150)).is_ok());
    }

    #[test]
    fn datetimes_are_written_like_python() {
        assert_eq!(format_utc(0, 0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_763_784_000, 42), "2025-11-22 04:00:00.000042");
        assert_eq!(
            format_utc(951_782_400, 500_000),
            "2000-02-29 00:00:00.500000"
        );
    }
}
