//! `probehost ensureadmin`, checked by Django itself.

use serde_json::json;

use crate::harness::django::{self, admin_report, job, migrate};
use crate::harness::*;

const PASSWORD: &str = "correct horse battery";

fn ensureadmin(database_url: &str) -> std::process::Command {
    let mut command = job(database_url);
    command.arg("ensureadmin");
    command
}

/// A config that lowers the hash's iterations, for tests that run it many times.
fn quick_hashes(dir: &TestDir, extra: &str) -> std::path::PathBuf {
    dir.config(&format!("[jobs.ensureadmin]\niterations = 1000\n{extra}"))
}

fn creates_the_row_django_would(kind: Kind) {
    let db = FreshDatabase::new(kind);
    migrate(&db.url);
    let output = run(ensureadmin(&db.url)
        .env("DJANGO_ADMIN_USERNAME", "admin")
        .env("DJANGO_ADMIN_PASSWORD", PASSWORD)
        .env("DJANGO_ADMIN_EMAIL", "Ops@Example.COM"));
    assert_eq!(
        (output.code, output.stdout.as_str(), output.stderr.as_str()),
        (0, "Admin user created from environment variables.\n", "")
    );
    let row = admin_report(&db.url, "admin", PASSWORD);
    assert_eq!(row["matching"], 1);
    assert_eq!(
        row["check_password"], true,
        "Django's check_password accepts it"
    );
    assert_eq!(
        row["authenticated"], true,
        "Django's authenticate accepts it"
    );
    assert_eq!(row["email"], "Ops@example.com", "domain part lower-cased");
    assert_eq!(
        (&row["first_name"], &row["last_name"]),
        (&json!(""), &json!(""))
    );
    assert_eq!(
        (&row["is_superuser"], &row["is_staff"], &row["is_active"]),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(row["last_login"], serde_json::Value::Null);
    let hash = row["password"].as_str().unwrap();
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts[..2], ["pbkdf2_sha256", "1000000"], "{hash}");
    assert_eq!(parts[2].len(), 22, "{hash}");
    assert!(
        parts[2].chars().all(|c| c.is_ascii_alphanumeric()),
        "{hash}"
    );
    assert!(row["date_joined"].as_str().unwrap().ends_with("+00:00"));

    // A second run leaves the row exactly as it was.
    let output = run(ensureadmin(&db.url).args(["-u", "admin", "-p", "another password"]));
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (0, "Admin user already exists, service is ready.\n")
    );
    assert_eq!(admin_report(&db.url, "admin", PASSWORD), row);
}

#[test]
fn creates_the_row_django_would_on_postgres() {
    creates_the_row_django_would(Kind::Postgres);
}

#[test]
fn creates_the_row_django_would_on_mariadb() {
    creates_the_row_django_would(Kind::MariaDb);
}

#[test]
fn creates_the_row_django_would_on_sqlite() {
    creates_the_row_django_would(Kind::Sqlite);
}

fn concurrent_runs_create_exactly_one_row(kind: Kind) {
    let db = FreshDatabase::new(kind);
    migrate(&db.url);
    let dir = TestDir::new();
    let config = quick_hashes(&dir, "");
    let runs: Vec<Background> = (0..8)
        .map(|_| {
            Background::spawn(
                ensureadmin(&db.url)
                    .arg("-c")
                    .arg(&config)
                    .args(["-u", "admin", "-p", PASSWORD]),
            )
        })
        .collect();
    let outputs: Vec<Output> = runs
        .into_iter()
        .map(|r| r.finish(std::time::Duration::from_secs(60)))
        .collect();
    for output in &outputs {
        assert_eq!(output.code, 0, "{output:?}");
    }
    let created = outputs
        .iter()
        .filter(|o| o.stdout == "Admin user created from environment variables.\n")
        .count();
    let existed = outputs
        .iter()
        .filter(|o| o.stdout == "Admin user already exists, service is ready.\n")
        .count();
    assert_eq!((created, existed), (1, 7));
    let row = admin_report(&db.url, "admin", PASSWORD);
    assert_eq!(
        (&row["count"], &row["authenticated"]),
        (&json!(1), &json!(true))
    );
}

#[test]
fn eight_concurrent_runs_create_one_row_on_postgres() {
    concurrent_runs_create_exactly_one_row(Kind::Postgres);
}

#[test]
fn eight_concurrent_runs_create_one_row_on_mariadb() {
    concurrent_runs_create_exactly_one_row(Kind::MariaDb);
}

#[test]
fn eight_concurrent_runs_create_one_row_on_sqlite() {
    concurrent_runs_create_exactly_one_row(Kind::Sqlite);
}

#[test]
fn passwords_are_validated_with_djangos_messages() {
    let db = FreshDatabase::new(Kind::Sqlite);
    migrate(&db.url);
    let common = django::venv_bin()
        .parent()
        .unwrap()
        .join("lib/python3.11/site-packages/django/contrib/auth/common-passwords.txt.gz");
    assert!(
        common.is_file(),
        "Django's list of common passwords is missing: {}",
        common.display()
    );
    let dir = TestDir::new();
    let config = quick_hashes(
        &dir,
        &format!("common_passwords = {:?}\n", common.display().to_string()),
    );
    // As the original prints them: str() of Django's ValidationError, the
    // repr of its list of messages.
    for (password, message) in [
        (
            "1234",
            "['This password is too short. It must contain at least 8 characters.', \
             'This password is too common.', 'This password is entirely numeric.']",
        ),
        ("password", "['This password is too common.']"),
        (
            "12345678",
            "['This password is too common.', 'This password is entirely numeric.']",
        ),
        ("8675309181", "['This password is entirely numeric.']"),
    ] {
        let output = run(ensureadmin(&db.url)
            .arg("-c")
            .arg(&config)
            .args(["-u", "admin", "-p", password]));
        assert_eq!(
            (output.code, output.stdout.as_str(), output.stderr.as_str()),
            (
                1,
                "",
                format!("Password validation error: {message}\n").as_str()
            ),
            "{password}"
        );
        if !message.contains(password) {
            assert!(
                !output.stderr.contains(password),
                "the password is not echoed"
            );
        }
    }
    assert_eq!(admin_report(&db.url, "admin", "x")["count"], 0);

    let dir = TestDir::new();
    let config = quick_hashes(&dir, "min_length = 12\nvalidators = [\"minimum_length\"]\n");
    let output =
        run(ensureadmin(&db.url)
            .arg("-c")
            .arg(&config)
            .args(["-u", "admin", "-p", "short one"]));
    assert_eq!(
        output.stderr,
        "Password validation error: ['This password is too short. It must contain at least 12 characters.']\n"
    );
}

#[test]
fn missing_values_are_reported_with_the_originals_messages() {
    let db = FreshDatabase::new(Kind::Sqlite);
    migrate(&db.url);
    let output = run(ensureadmin(&db.url).env("DJANGO_ADMIN_PASSWORD", PASSWORD));
    assert_eq!(
        (output.code, output.stderr.as_str()),
        (
            1,
            "Username is required. Set DJANGO_ADMIN_USERNAME or use --username.\n"
        )
    );
    let output = run(ensureadmin(&db.url)
        .env("DJANGO_ADMIN_USERNAME", "admin")
        .env("DJANGO_ADMIN_PASSWORD", ""));
    assert_eq!(
        (output.code, output.stderr.as_str()),
        (
            1,
            "Password is required. Set DJANGO_ADMIN_PASSWORD or use --password.\n"
        )
    );
}

#[test]
fn flags_override_the_environment() {
    let db = FreshDatabase::new(Kind::Sqlite);
    migrate(&db.url);
    let dir = TestDir::new();
    let config = quick_hashes(&dir, "");
    let output = run(ensureadmin(&db.url)
        .arg("-c")
        .arg(&config)
        .env("DJANGO_ADMIN_USERNAME", "from-env")
        .env("DJANGO_ADMIN_PASSWORD", "env password 1")
        .env("DJANGO_ADMIN_EMAIL", "env@example.com")
        .args([
            "--username",
            "from-flag",
            "-p",
            PASSWORD,
            "-e",
            "flag@example.com",
        ]));
    assert_eq!(output.code, 0, "{output:?}");
    let row = admin_report(&db.url, "from-flag", PASSWORD);
    assert_eq!(
        (&row["count"], &row["authenticated"], &row["email"]),
        (&json!(1), &json!(true), &json!("flag@example.com"))
    );
    assert_eq!(
        admin_report(&db.url, "from-env", "env password 1")["matching"],
        0
    );
}

#[test]
fn a_database_without_migrations_is_a_clear_error() {
    let db = FreshDatabase::new(Kind::Postgres);
    let output = run(ensureadmin(&db.url).args(["-u", "admin", "-p", PASSWORD]));
    assert_eq!(output.code, 1);
    assert_eq!(
        output.stderr,
        "The auth_user table does not exist in database \"default\": run migrations first.\n"
    );
}

/// Usernames with SQL quotes and characters that NFKC changes, and an email
/// longer than the column, are handled as Django would: stored as
/// parameters (never spliced into SQL), normalized, or refused cleanly.
#[test]
fn hostile_usernames_and_emails_are_stored_as_django_would() {
    let db = FreshDatabase::new(Kind::Postgres);
    migrate(&db.url);
    let dir = TestDir::new();
    let config = quick_hashes(&dir, "");
    for (given, stored) in [
        (
            "o'brien\"; DROP TABLE auth_user; --",
            "o'brien\"; DROP TABLE auth_user; --",
        ),
        // NFKC: the ligature and the full-width letters become plain ASCII.
        ("ﬁnance＿ＡＤＭＩＮ", "finance_ADMIN"),
    ] {
        let output = run(ensureadmin(&db.url)
            .arg("-c")
            .arg(&config)
            .env("DJANGO_ADMIN_USERNAME", given)
            .env("DJANGO_ADMIN_PASSWORD", PASSWORD));
        assert_eq!(output.code, 0, "{given}: {output:?}");
        let row = admin_report(&db.url, stored, PASSWORD);
        assert_eq!(row["matching"], 1, "{given} stored as {stored}: {row}");
        assert_eq!(row["authenticated"], true, "{given}: {row}");
    }
    // An email longer than auth_user.email (254): refused with a clear error,
    // nothing written.
    let before = admin_report(&db.url, "nobody", PASSWORD)["count"].clone();
    let output = run(ensureadmin(&db.url)
        .arg("-c")
        .arg(&config)
        .env("DJANGO_ADMIN_USERNAME", "longmail")
        .env("DJANGO_ADMIN_PASSWORD", PASSWORD)
        .env(
            "DJANGO_ADMIN_EMAIL",
            format!("{}@example.com", "a".repeat(300)),
        ));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        !output.stderr.is_empty() && !output.stderr.contains("panicked"),
        "{}",
        output.stderr
    );
    assert_eq!(admin_report(&db.url, "nobody", PASSWORD)["count"], before);
}
