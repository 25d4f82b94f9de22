//! `probehost lockedmigrate` with the Django fixture: many replicas, one
//! migration.

use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::harness::django::{job, manage};
use crate::harness::*;

/// Rows of `django_migrations` once the fixture is migrated: contenttypes (2),
/// auth (12), shop (3), and inventory's squashed migration with the two it
/// replaces (3).
const MIGRATIONS: i64 = 20;

fn lockedmigrate(database_url: &str) -> std::process::Command {
    let mut command = job(database_url);
    command.arg("lockedmigrate");
    command
}

fn concurrent_runs_apply_every_migration_once(kind: Kind, runs: usize) {
    let db = FreshDatabase::new(kind);
    let jobs: Vec<Background> = (0..runs)
        .map(|_| {
            Background::spawn(
                lockedmigrate(&db.url)
                    .env("SLOW_MIGRATION_SECONDS", "1")
                    .arg("--noinput"),
            )
        })
        .collect();
    let outputs: Vec<Output> = jobs
        .into_iter()
        .map(|j| j.finish(Duration::from_secs(120)))
        .collect();
    for output in &outputs {
        assert_eq!(output.code, 0, "{output:?}");
    }
    let applying = outputs
        .iter()
        .filter(|o| o.stdout.contains("Applying"))
        .count();
    let nothing = outputs
        .iter()
        .filter(|o| o.stdout.contains("No migrations to apply."))
        .count();
    assert_eq!((applying, nothing), (1, runs - 1), "{outputs:#?}");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM django_migrations"),
        MIGRATIONS
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM (SELECT DISTINCT app, name FROM django_migrations) AS d"),
        MIGRATIONS
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM shop_migration_run"),
        1,
        "the slow migration ran once"
    );
}

#[test]
fn concurrent_runs_on_postgres_apply_every_migration_exactly_once() {
    concurrent_runs_apply_every_migration_once(Kind::Postgres, 6);
}

#[test]
fn concurrent_runs_on_mariadb_apply_every_migration_exactly_once() {
    concurrent_runs_apply_every_migration_once(Kind::MariaDb, 4);
}

#[test]
fn concurrent_runs_on_sqlite_apply_every_migration_exactly_once() {
    concurrent_runs_apply_every_migration_once(Kind::Sqlite, 4);
}

#[test]
fn the_postgres_lock_is_the_originals_and_is_gone_afterwards() {
    let db = FreshDatabase::new(Kind::Postgres);
    let mut session = PgSession::connect(&db.url);
    let job = Background::spawn(lockedmigrate(&db.url).args(["--", "sleep", "2"]));
    assert!(
        eventually(Duration::from_secs(10), || !session
            .advisory_locks(1000)
            .is_empty()),
        "the lock was never taken"
    );
    // pg_advisory_lock(bigint 1000): classid 0, objid 1000, objsubid 1.
    assert_eq!(session.advisory_locks(1000), [(0, 1000, 1)]);
    let output = job.finish(Duration::from_secs(30));
    assert_eq!(output.code, 0, "{output:?}");
    settle();
    assert!(
        session.advisory_locks(1000).is_empty(),
        "the lock is released"
    );
}

#[test]
fn a_session_holding_the_same_lock_delays_it_and_another_id_does_not() {
    let db = FreshDatabase::new(Kind::Postgres);
    let mut holder = PgSession::connect(&db.url);
    holder.execute("SELECT pg_advisory_lock(1000)");

    let other = run(lockedmigrate(&db.url).args(["-L", "1001", "--", "true"]));
    assert_eq!(other.code, 0, "{other:?}");
    assert!(
        other.elapsed < Duration::from_secs(3),
        "a different id waited {:?}",
        other.elapsed
    );

    let mut waiter = Background::spawn(lockedmigrate(&db.url).args(["--", "echo", "migrated"]));
    assert!(
        waiter.wait_for("Waiting for migration lock 1000", Duration::from_secs(10)),
        "the waiter says that it waits"
    );
    assert!(waiter.is_running(), "it waits while the lock is held");
    let pid = holder.scalar("SELECT pg_backend_pid()::bigint");
    holder.execute("SELECT pg_advisory_unlock(1000)");
    let output = waiter.finish(Duration::from_secs(30));
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (0, "migrated\n"),
        "{output:?}"
    );
    assert!(
        output
            .stderr
            .contains(&format!("held by PostgreSQL pid {pid}")),
        "{}",
        output.stderr
    );
}

#[test]
fn the_lock_timeout_ends_the_wait_naming_the_holder() {
    let db = FreshDatabase::new(Kind::Postgres);
    let mut holder = PgSession::connect(&db.url);
    holder.execute("SELECT pg_advisory_lock(1000)");
    let pid = holder.scalar("SELECT pg_backend_pid()::bigint");
    let output = run(lockedmigrate(&db.url).args(["--lock-timeout", "1", "--", "echo", "never"]));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(output.stdout.is_empty(), "the command did not run");
    assert!(
        output
            .stderr
            .starts_with("Could not acquire migration lock 1000 within 1.")
            && output
                .stderr
                .contains(&format!("held by PostgreSQL pid {pid}")),
        "{}",
        output.stderr
    );
    assert!(
        output.elapsed < Duration::from_secs(3),
        "{:?}",
        output.elapsed
    );
}

#[test]
fn a_killed_holder_hands_over_to_a_waiter_that_finishes() {
    let db = FreshDatabase::new(Kind::Postgres);
    // The holder's slow migration outlasts the waiter's first report by far.
    let holder = Background::spawn(
        lockedmigrate(&db.url)
            .env("SLOW_MIGRATION_SECONDS", "20")
            .arg("--noinput"),
    );
    assert!(
        holder.wait_for("shop.0002_slow: started", Duration::from_secs(60)),
        "the migration started"
    );
    let waiter = Background::spawn(
        lockedmigrate(&db.url)
            .env("SLOW_MIGRATION_SECONDS", "0")
            .arg("--noinput"),
    );
    assert!(waiter.wait_for("Waiting for migration lock 1000", Duration::from_secs(10)));
    holder.signal(Signal::KILL);
    let killed = Instant::now();
    let output = waiter.finish(Duration::from_secs(60));
    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output.stdout.contains("Applying shop.0002_slow"),
        "{}",
        output.stdout
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "the waiter did not wait out the dead holder's migration"
    );

    // The killed holder's migration died with it (rolled back) and ran again once.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM shop_migration_run"), 1);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM django_migrations"),
        MIGRATIONS
    );
}

#[test]
fn check_reports_unapplied_migrations() {
    let db = FreshDatabase::new(Kind::Sqlite);
    let output = run(lockedmigrate(&db.url).arg("--check"));
    assert_ne!(output.code, 0, "unapplied migrations: {output:?}");
    assert_eq!(run(lockedmigrate(&db.url).arg("--noinput")).code, 0);
    let output = run(lockedmigrate(&db.url).arg("--check"));
    assert_eq!(output.code, 0, "{output:?}");
}

#[test]
fn migrate_arguments_are_passed_through() {
    let db = FreshDatabase::new(Kind::Sqlite);
    let output = run(lockedmigrate(&db.url).args(["--noinput", "-v", "0", "shop", "0001"]));
    assert_eq!(output.code, 0, "{output:?}");
    let output = run(manage(&db.url).args(["showmigrations", "shop"]));
    assert!(
        output.stdout.contains("[X] 0001_initial") && output.stdout.contains("[ ] 0002_slow"),
        "{}",
        output.stdout
    );
}

#[test]
fn a_lock_id_that_is_not_an_integer_exits_2() {
    let output = run(probehost().args(["lockedmigrate", "-L", "notanint"]));
    assert_eq!(output.code, 2);
    assert!(
        output.stderr.contains("invalid value 'notanint'"),
        "{}",
        output.stderr
    );
}

/// The lock id is any 64-bit integer, as PostgreSQL's advisory lock key is:
/// both edges take the lock and run the command; one past them is a usage
/// error naming the value.
#[test]
fn lock_ids_at_the_edges_of_64_bits_work_and_beyond_them_exit_2() {
    require(Service::Postgres);
    require(Service::MariaDb);
    for url in [POSTGRES_URL, MARIADB_URL] {
        for id in [i64::MAX.to_string(), i64::MIN.to_string()] {
            let output = run(lockedmigrate(url).args(["-L", &id, "--", "sh", "-c", "echo ran"]));
            assert_eq!(
                (output.code, output.stdout.as_str()),
                (0, "ran\n"),
                "{url} {id}: {output:?}"
            );
        }
    }
    for id in ["9223372036854775808", "-9223372036854775809"] {
        let output = run(probehost().args(["lockedmigrate", "-L", id]));
        assert_eq!(output.code, 2, "{id}: {output:?}");
        assert!(
            output.stderr.contains(&format!("invalid value '{id}'"))
                || output
                    .stderr
                    .contains(&format!("unexpected argument '{id}'")),
            "{}",
            output.stderr
        );
    }
}

/// Every value is judged at parsing, before any database is asked: what no
/// supported database accepts is refused, naming the bound.
#[test]
fn a_lock_timeout_out_of_range_exits_2_naming_the_bound() {
    for (value, says) in [
        ("2147484", "more than 2147483 seconds"),
        ("1e9", "more than 2147483 seconds"),
        ("99999999999999999999", "more than 2147483 seconds"),
        ("inf", "more than 2147483 seconds"),
        ("0", "not a positive number of seconds"),
        ("-1", "not a positive number of seconds"),
        ("NaN", "not a number of seconds"),
        ("soon", "not a number of seconds"),
    ] {
        let output = run(probehost().args([
            "lockedmigrate",
            &format!("--lock-timeout={value}"),
            "--",
            "true",
        ]));
        assert_eq!(output.code, 2, "{value}: {output:?}");
        assert!(output.stderr.contains(says), "{value}: {}", output.stderr);
        assert!(
            output.stderr.contains("--lock-timeout"),
            "{value}: {}",
            output.stderr
        );
    }
    // The bound itself is accepted.
    let db = FreshDatabase::new(Kind::Postgres);
    let output = run(lockedmigrate(&db.url).args(["--lock-timeout", "2147483", "--", "true"]));
    assert_eq!(output.code, 0, "{output:?}");
}

#[test]
fn any_command_runs_after_the_separator_and_its_exit_code_is_kept() {
    let db = FreshDatabase::new(Kind::Sqlite);
    let output =
        run(lockedmigrate(&db.url).args(["--", "sh", "-c", "echo alembic upgrade head; exit 3"]));
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (3, "alembic upgrade head\n")
    );
    let output = run(lockedmigrate(&db.url).args(["--", "no-such-program-here"]));
    assert_eq!(output.code, 127);
    assert!(
        output.stderr.contains("cannot run no-such-program-here"),
        "{}",
        output.stderr
    );
    let output = run(lockedmigrate(&db.url).args(["--fake", "--", "true"]));
    assert_eq!(
        output.code, 2,
        "migrate's flags and a command do not mix: {output:?}"
    );
}

#[test]
fn sigterm_is_forwarded_and_the_lock_released() {
    let db = FreshDatabase::new(Kind::Postgres);
    let mut session = PgSession::connect(&db.url);
    let script = "trap 'echo got TERM; exit 7' TERM; echo ready; sleep 30 & wait";
    let job = Background::spawn(lockedmigrate(&db.url).args(["--", "sh", "-c", script]));
    assert!(job.wait_for("ready", Duration::from_secs(10)));
    job.signal(Signal::TERM);
    let output = job.finish(Duration::from_secs(15));
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (7, "ready\ngot TERM\n"),
        "{output:?}"
    );
    settle();
    assert!(
        session.advisory_locks(1000).is_empty(),
        "the lock is released"
    );
}

#[test]
fn losing_the_lock_connection_stops_the_command() {
    require(Service::Postgres);
    let db = FreshDatabase::new(Kind::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Pass);
    let through_proxy = db
        .url
        .replace("127.0.0.1:5432", &proxy.address().to_string());
    let job = Background::spawn(lockedmigrate(&through_proxy).args([
        "--",
        "sh",
        "-c",
        "echo started; sleep 30",
    ]));
    assert!(job.wait_for("started", Duration::from_secs(10)));
    let cut = Instant::now();
    proxy.set_mode(Mode::Refuse);
    proxy.cut();
    let output = job.finish(Duration::from_secs(30));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output
            .stderr
            .contains("Lost the connection holding migration lock 1000"),
        "{}",
        output.stderr
    );
    // The next lock check (every 2s) notices; the command and its children stop.
    assert!(
        cut.elapsed() < Duration::from_secs(8),
        "stopped {:?} after the cut",
        cut.elapsed()
    );
}

fn the_lock_timeout_names_the_holder(kind: Kind, holder_says: &str) {
    let db = FreshDatabase::new(kind);
    let holder =
        Background::spawn(lockedmigrate(&db.url).args(["--", "sh", "-c", "echo holding; sleep 5"]));
    assert!(holder.wait_for("holding", Duration::from_secs(10)));
    let output = run(lockedmigrate(&db.url).args(["--lock-timeout", "1", "--", "echo", "never"]));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(output.stdout.is_empty());
    assert!(
        output
            .stderr
            .starts_with("Could not acquire migration lock 1000 within ")
            && output.stderr.contains(holder_says),
        "{}",
        output.stderr
    );
    assert_eq!(holder.finish(Duration::from_secs(15)).code, 0);
}

#[test]
fn the_lock_timeout_on_mariadb_names_the_holding_connection() {
    the_lock_timeout_names_the_holder(Kind::MariaDb, "held by MySQL connection ");
}

#[test]
fn the_lock_timeout_on_sqlite_names_the_holding_process() {
    the_lock_timeout_names_the_holder(Kind::Sqlite, "held by process ");
}

/// The reproduction: a wrapper whose grandchild would write a marker after
/// the holder is SIGKILLed. The marker is never written, and the next replica
/// gets the lock only once the grandchild has ended.
fn a_killed_holder_leaves_nothing_running_without_the_lock(kind: Kind) {
    let db = FreshDatabase::new(kind);
    let dir = TestDir::new();
    let (pid_file, marker) = (
        dir.path().join("grandchild.pid"),
        dir.path().join("mig.log"),
    );
    let script = format!(
        "sh -c 'echo $$ > {pid}; sleep 3; echo RAN-WITHOUT-LOCK >> {marker}'; true",
        pid = pid_file.display(),
        marker = marker.display()
    );
    let holder = Background::spawn(lockedmigrate(&db.url).args(["--", "sh", "-c", &script]));
    assert!(
        eventually(Duration::from_secs(20), || pid_file.exists()),
        "the grandchild started"
    );
    std::thread::sleep(Duration::from_millis(200));
    holder.signal(Signal::KILL);
    let grandchild = std::fs::read_to_string(&pid_file).unwrap();
    // The second replica records the grandchild's state the moment it holds
    // the lock.
    let check = format!(
        "s=$(cut -d' ' -f3 /proc/{}/stat 2>/dev/null); echo \"grandchild: ${{s:-gone}}\"",
        grandchild.trim()
    );
    let second =
        run(lockedmigrate(&db.url).args(["--lock-timeout", "10", "--", "sh", "-c", &check]));
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second.stdout == "grandchild: gone\n" || second.stdout == "grandchild: Z\n",
        "the second replica got the lock while the grandchild ran: {}",
        second.stdout
    );
    // Past the moment the grandchild would have written.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!marker.exists(), "the grandchild ran on without the lock");
    assert!(has_ended(&grandchild), "the grandchild is still running");
    let _ = holder.finish(Duration::from_secs(10));
}

#[test]
fn a_killed_holder_leaves_nothing_running_without_the_lock_on_postgres() {
    a_killed_holder_leaves_nothing_running_without_the_lock(Kind::Postgres);
}

#[test]
fn a_killed_holder_leaves_nothing_running_without_the_lock_on_mariadb() {
    a_killed_holder_leaves_nothing_running_without_the_lock(Kind::MariaDb);
}

#[test]
fn a_killed_holder_leaves_nothing_running_without_the_lock_on_sqlite() {
    a_killed_holder_leaves_nothing_running_without_the_lock(Kind::Sqlite);
}

/// The lock outlives the holder for as long as its warden holds it: with the
/// warden stopped (it cannot act), the dead holder's lock is still held.
#[test]
fn the_warden_holds_the_lock_after_the_holder_dies() {
    let db = FreshDatabase::new(Kind::Postgres);
    let holder = Background::spawn(lockedmigrate(&db.url).args(["--", "sleep", "30"]));
    let warden = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                // A child of this holder, running `warden`.
                stat.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    == Some(&holder.pid().as_raw_nonzero().to_string())
                    && cmdline.ends_with(b"warden\0")
            })
    };
    assert!(
        eventually(Duration::from_secs(20), || warden().is_some()),
        "no warden"
    );
    let warden = rustix::process::Pid::from_raw(warden().unwrap() as i32).unwrap();
    let mut session = PgSession::connect(&db.url);
    assert!(eventually(Duration::from_secs(10), || !session
        .advisory_locks(1000)
        .is_empty()));
    // Frozen, the warden keeps what it holds and does nothing else; it also
    // ignores the hang-up an orphaned, stopped process group is sent.
    rustix::process::kill_process(warden, Signal::STOP).unwrap();
    holder.signal(Signal::KILL);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        session.advisory_locks(1000).len(),
        1,
        "the lock went with the holder"
    );
    rustix::process::kill_process(warden, Signal::CONT).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || session
            .advisory_locks(1000)
            .is_empty()),
        "the warden released the lock once the command was gone"
    );
    let _ = holder.finish(Duration::from_secs(10));
}
