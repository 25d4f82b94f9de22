//! `builtin:migrations`, `probehost migrations plan` and `wait4db --migrated`
//! with the Django fixture on real databases: ready only when the schema is the
//! one the release expects.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::django::{self, job, manage};
use crate::harness::*;

/// The fixture's plan: contenttypes (2), auth (12), the squashed `inventory`
/// migration (the `stock` app, labelled `inventory`), shop (3).
const PLANNED: usize = 18;
const SQUASHED: &str = "inventory.0001_squashed_0002_item_quantity";

/// `probehost migrations plan -o DIR/migrations.plan` in the fixture project.
fn write_plan(database_url: &str, dir: &Path) -> PathBuf {
    let path = dir.join("migrations.plan");
    let output = run(job(database_url)
        .args(["migrations", "plan", "-o"])
        .arg(&path));
    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output
            .stderr
            .contains(&format!("wrote the plan of {PLANNED} migrations to")),
        "{output:?}"
    );
    path
}

/// A config with the database and a migrations probe (`settings` is the body
/// of its `config` table).
fn config(dir: &TestDir, database_url: &str, settings: &str) -> PathBuf {
    dir.config(&format!(
        "{}[databases.default]\nurl = {database_url:?}\n\n\
         [probes.migrations]\ncomponent = \"builtin:migrations\"\n\n\
         [probes.migrations.config]\n{settings}\n",
        server_section()
    ))
}

/// `probehost probe --ready` on `config`: (exit code, answer).
fn ready(config: &Path) -> (i32, String) {
    let output = run(probehost().arg("-c").arg(config).args(["probe", "--ready"]));
    (output.code, output.stdout.trim().to_owned())
}

fn plan_config(dir: &TestDir, db: &FreshDatabase) -> PathBuf {
    let plan = write_plan(&db.url, dir.path());
    config(
        dir,
        &db.url,
        &format!("plan = {:?}", plan.display().to_string()),
    )
}

#[test]
fn the_plan_is_djangos_graph_with_squashes_and_app_labels_and_needs_no_database() {
    let dir = TestDir::new();
    let sqlite = dir.path().join("never-created.sqlite3");
    let url = format!("sqlite://{}", sqlite.display());
    let path = write_plan(&url, dir.path());
    assert!(!sqlite.exists(), "the plan step opened the database");

    let text = std::fs::read_to_string(&path).unwrap();
    let migrations: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        text.starts_with("# probehost migrations plan v1\n"),
        "{text}"
    );
    assert_eq!(migrations.len(), PLANNED, "{text}");
    assert_eq!(migrations[0], "contenttypes.0001_initial");
    // Dependencies come first: auth needs contenttypes.0002.
    let position = |m: &str| migrations.iter().position(|l| l.starts_with(m)).unwrap();
    assert!(position("contenttypes.0002") < position("auth.0006_require_contenttypes_0002"));
    assert!(position("shop.0002_slow") < position("shop.0003_product_sku"));
    // The squashed migration stands for what it replaces, under the app's label.
    assert!(
        migrations.contains(
            &"inventory.0001_squashed_0002_item_quantity replaces inventory.0001_initial inventory.0002_item_quantity"
        ),
        "{text}"
    );
    assert!(
        !text.contains("stock."),
        "the module name is not the label: {text}"
    );

    // The same plan, with manage.py named after `--` and printed to stdout.
    let output = run(job(&url).args(["migrations", "plan", "--", "python", "manage.py"]));
    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, text);
    // Django's own start-up chatter goes to stderr, never into the plan.
    assert!(!output.stdout.contains("imported automatically"));
}

#[test]
fn a_failing_plan_step_exits_1_and_says_why() {
    let dir = TestDir::new();
    let output = run(job("sqlite:///unused")
        .args(["migrations", "plan", "-o"])
        .arg(dir.path().join("p"))
        .args(["--", "python", "no-such-manage.py"]));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output
            .stderr
            .contains("`python no-such-manage.py shell` failed"),
        "{output:?}"
    );
    assert!(!dir.path().join("p").exists());
}

fn pending_migrations_are_named_until_lockedmigrate_applies_them(kind: Kind) {
    let db = FreshDatabase::new(kind);
    let dir = TestDir::new();
    let config = plan_config(&dir, &db);

    assert_eq!(
        ready(&config),
        (1, "migrations: not migrated yet".to_owned())
    );

    // Part of the way: contenttypes and auth (14), then shop.0001.
    for target in [&["auth"][..], &["shop", "0001"]] {
        let output = run(manage(&db.url).arg("migrate").args(target));
        assert_eq!(output.code, 0, "{output:?}");
    }
    assert_eq!(
        ready(&config),
        (1, format!("migrations: 3 unapplied, first: {SQUASHED}"))
    );

    let output = run(job(&db.url).args(["lockedmigrate", "--noinput"]));
    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(ready(&config), (0, "Ok".to_owned()));
}

#[test]
fn on_postgres_pending_migrations_are_named_until_lockedmigrate_applies_them() {
    pending_migrations_are_named_until_lockedmigrate_applies_them(Kind::Postgres);
}

#[test]
fn on_mariadb_pending_migrations_are_named_until_lockedmigrate_applies_them() {
    pending_migrations_are_named_until_lockedmigrate_applies_them(Kind::MariaDb);
}

#[test]
fn on_sqlite_pending_migrations_are_named_until_lockedmigrate_applies_them() {
    pending_migrations_are_named_until_lockedmigrate_applies_them(Kind::Sqlite);
}

#[test]
fn a_squashed_migration_counts_as_applied_when_everything_it_replaces_is() {
    let db = FreshDatabase::new(Kind::Postgres);
    let dir = TestDir::new();
    let config = plan_config(&dir, &db);
    django::migrate(&db.url);
    assert_eq!(ready(&config), (0, "Ok".to_owned()));

    // A database migrated before the squash existed records only the
    // replaced migrations.
    db.execute(
        "DELETE FROM django_migrations \
         WHERE app = 'inventory' AND name = '0001_squashed_0002_item_quantity'",
    );
    assert_eq!(ready(&config), (0, "Ok".to_owned()));

    // Half of what it replaces is not enough.
    db.execute(
        "DELETE FROM django_migrations WHERE app = 'inventory' AND name = '0002_item_quantity'",
    );
    assert_eq!(
        ready(&config),
        (1, format!("migrations: 1 unapplied, first: {SQUASHED}"))
    );
}

#[test]
fn over_http_the_migrations_probe_gates_readyz_and_names_the_migration() {
    let db = FreshDatabase::new(Kind::Sqlite);
    let dir = TestDir::new();
    let config = plan_config(&dir, &db);
    let server = Server::start(&config);
    let response = server.get("/readyz?verbose");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        response.body.contains("migrations: not migrated yet"),
        "{response:?}"
    );
    django::migrate(&db.url);
    assert!(eventually(Duration::from_secs(10), || server
        .get("/readyz")
        .status
        == 200));
}

fn alembic_head_is_compared(kind: Kind) {
    let db = FreshDatabase::new(kind);
    let dir = TestDir::new();
    let config = config(&dir, &db.url, "tool = \"alembic\"\nhead = \"ae1027a6acf\"");
    assert_eq!(
        ready(&config),
        (1, "migrations: not migrated yet".to_owned())
    );

    db.execute(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);\
         INSERT INTO alembic_version (version_num) VALUES ('1975ea83b712')",
    );
    assert_eq!(
        ready(&config),
        (
            1,
            "migrations: at 1975ea83b712, expected ae1027a6acf".to_owned()
        )
    );
    db.execute("UPDATE alembic_version SET version_num = 'ae1027a6acf'");
    assert_eq!(ready(&config), (0, "Ok".to_owned()));
}

#[test]
fn on_postgres_the_alembic_head_is_compared() {
    alembic_head_is_compared(Kind::Postgres);
}

#[test]
fn on_mariadb_the_alembic_head_is_compared() {
    alembic_head_is_compared(Kind::MariaDb);
}

#[test]
fn on_sqlite_the_alembic_head_is_compared() {
    alembic_head_is_compared(Kind::Sqlite);
}

#[test]
fn a_bad_migrations_setup_is_a_config_error_naming_every_problem() {
    let dir = TestDir::new();
    let bad_plan = dir.path().join("bad.plan");
    std::fs::write(&bad_plan, "# probehost migrations plan v1\nshop\n").unwrap();
    let config = dir.config(&format!(
        "[databases.default]\nurl = \"sqlite::memory:\"\n\n\
         [probes.none]\ncomponent = \"builtin:migrations\"\n\n\
         [probes.bad]\ncomponent = \"builtin:migrations\"\n\
         [probes.bad.config]\nplan = {:?}\nhaed = \"x\"\n\n\
         [probes.alembic]\ncomponent = \"builtin:migrations\"\n\
         [probes.alembic.config]\ntool = \"alembic\"\n",
        bad_plan.display().to_string()
    ));
    let output = run(probehost().arg("-c").arg(&config).args(["config", "check"]));
    assert_eq!(output.code, 2, "{output:?}");
    for expected in [
        "probes.none.config.plan: builtin:migrations needs a plan",
        &format!(
            "probes.bad.config.plan: {}: line 2: \"shop\" is not `app_label.migration_name`",
            bad_plan.display()
        ),
        "probes.bad.config.haed: not a setting of builtin:migrations (known: tool, plan, head, table)",
        "probes.alembic.config.head: tool = \"alembic\" needs the expected `head` revision",
    ] {
        assert!(output.stderr.contains(expected), "{expected}\n{output:?}");
    }
}

/// `wait4db --migrated` in the fixture project, polling fast.
fn wait4db_migrated(database_url: &str, config: &Path, timeout: &str) -> Command {
    let mut command = job(database_url);
    command.arg("-c").arg(config).args([
        "wait4db",
        "--migrated",
        "-s",
        "1",
        "-i",
        "0.2",
        "-t",
        timeout,
    ]);
    command
}

#[test]
fn wait4db_migrated_exits_0_only_after_a_slow_lockedmigrate_has_finished() {
    let db = FreshDatabase::new(Kind::Postgres);
    let dir = TestDir::new();
    let config = plan_config(&dir, &db);

    let mut migrate = Background::spawn(
        job(&db.url)
            .env("SLOW_MIGRATION_SECONDS", "4")
            .args(["lockedmigrate", "--noinput"]),
    );
    assert!(
        migrate.wait_for("shop.0002_slow: started", Duration::from_secs(60)),
        "the slow migration never started"
    );
    let mut wait = Background::spawn(&mut wait4db_migrated(&db.url, &config, "60"));
    // The slow migration runs in a transaction of its own: until it commits,
    // it and the one after it are pending.
    assert!(
        wait.wait_for(
            "cause: migrations: 2 unapplied, first: shop.0002_slow",
            Duration::from_secs(20)
        ),
        "no progress line names the pending migrations"
    );
    assert!(
        migrate.is_running(),
        "the migration ended too soon for this test"
    );
    assert!(
        wait.is_running(),
        "wait4db --migrated exited while migrating"
    );

    let migrated = migrate.finish(Duration::from_secs(60));
    assert_eq!(migrated.code, 0, "{migrated:?}");
    let waited = wait.finish(Duration::from_secs(30));
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(
        waited.stdout.contains("Connection alive for > 1s"),
        "{waited:?}"
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM shop_migration_run"), 1);
}

#[test]
fn wait4db_migrated_times_out_on_an_unmigrated_database_naming_why() {
    let db = FreshDatabase::new(Kind::Sqlite);
    let dir = TestDir::new();
    let config = plan_config(&dir, &db);
    let output = run(&mut wait4db_migrated(&db.url, &config, "1"));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output
            .stderr
            .contains("Database not ready: (cause: migrations: not migrated yet, elapsed:"),
        "{output:?}"
    );
    assert!(
        output
            .stderr
            .ends_with("Database did not become ready: migrations: not migrated yet\n"),
        "{output:?}"
    );

    // With the plan given on the command line, no probe needs configuring.
    let plan = dir.path().join("migrations.plan");
    django::migrate(&db.url);
    let output = run(job(&db.url)
        .args(["wait4db", "-s", "0.5", "-i", "0.2", "-t", "30", "--plan"])
        .arg(&plan));
    assert_eq!(output.code, 0, "{output:?}");
}

#[test]
fn wait4db_migrated_without_a_migrations_check_is_a_usage_error() {
    let output = run(job("sqlite::memory:").args(["wait4db", "--migrated"]));
    assert_eq!(output.code, 2, "{output:?}");
    assert!(
        output
            .stderr
            .contains("--migrated: no builtin:migrations probe checks the database \"default\""),
        "{output:?}"
    );
}
