//! The Django fixture project (`tests/django`), run with the Python environment
//! `scripts/setup.sh` prepares in `.venv`.

use std::path::PathBuf;
use std::process::Command;

use super::{Output, probehost, run};

pub fn project() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/django"))
}

/// `.venv/bin`, which must exist.
pub fn venv_bin() -> PathBuf {
    let bin = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin"));
    assert!(
        bin.join("python").is_file(),
        "the Django fixture needs the Python environment {}; create it with scripts/setup.sh",
        bin.display()
    );
    bin
}

/// `PATH` with the fixture's Python first, so `python manage.py` is the fixture's.
pub fn path_with_venv() -> String {
    format!(
        "{}:{}",
        venv_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `python manage.py ARGS` against `database_url`.
pub fn manage(database_url: &str) -> Command {
    let mut command = Command::new(venv_bin().join("python"));
    command
        .arg("manage.py")
        .current_dir(project())
        .env("DATABASE_URL", database_url)
        .env_remove("DJANGO_SETTINGS_MODULE");
    command
}

/// `migrate --noinput`, which must succeed.
pub fn migrate(database_url: &str) {
    let output = run(manage(database_url).args(["migrate", "--noinput"]));
    assert_eq!(output.code, 0, "migrate failed: {output:?}");
}

/// What Django itself says of `username` and `password` (see the fixture's
/// `admin_report` command).
pub fn admin_report(database_url: &str, username: &str, password: &str) -> serde_json::Value {
    let output = run(manage(database_url).args(["admin_report", username, password]));
    assert_eq!(output.code, 0, "admin_report failed: {output:?}");
    serde_json::from_str(output.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", output.stdout))
}

/// `probehost ARGS` as a job in the fixture project: `python` is the fixture's,
/// the working directory holds `manage.py`, the database is `database_url`.
pub fn job(database_url: &str) -> Command {
    let mut command = probehost();
    command
        .current_dir(project())
        .env("PATH", path_with_venv())
        .env("DATABASE_URL", database_url)
        .env_remove("DJANGO_ADMIN_USERNAME")
        .env_remove("DJANGO_ADMIN_PASSWORD")
        .env_remove("DJANGO_ADMIN_EMAIL");
    command
}

pub fn run_job(command: &mut Command) -> Output {
    run(command)
}
