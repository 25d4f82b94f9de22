//! PID 1 duties: `run` and `lockedmigrate` reap the orphans of what they
//! start, as PID 1 or as a child subreaper, and never take the exit status of
//! the application or the command.

use std::time::Duration;

use crate::harness::*;

/// Leaves `n` orphans: each `( sleep & )` subshell forks `sleep` and exits at
/// once, so the sleep's parent is gone and it is re-parented.
fn orphans(n: usize) -> String {
    format!("for i in $(seq {n}); do (sleep 0.05 &); done")
}

/// Counts, from inside the process tree, the zombies whose parent is `$1`.
const COUNT_ZOMBIES: &str = r#"awk -v p="$1" '$3 == "Z" && $4 == p { n++ } END { print "zombies:", n + 0 }' /proc/[0-9]*/stat"#;

fn run_config(dir: &TestDir) -> std::path::PathBuf {
    dir.config(&format!(
        "{}[databases.default]\nurl = \"sqlite::memory:\"\n",
        server_section()
    ))
}

#[test]
fn run_reaps_the_orphans_of_its_application_and_passes_its_exit_code_on() {
    let dir = TestDir::new();
    let config = run_config(&dir);
    let script = format!("{}; sleep 1.5; exit 7", orphans(20));
    let mut run = Background::spawn(
        probehost()
            .env("PROBEHOST_LOG", "info,probehost::reaper=debug")
            .arg("-c")
            .arg(&config)
            .args(["run", "--", "sh", "-c", &script]),
    );
    let pid = run.pid().as_raw_nonzero().get() as u32;
    // The orphans were re-parented to probehost (a subreaper here) and reaped.
    assert!(
        eventually(Duration::from_secs(20), || run.count("reaped an orphan")
            >= 20),
        "probehost did not reap the 20 orphans"
    );
    assert!(
        run.is_running(),
        "the application ended too soon for this test"
    );
    assert_eq!(
        zombies_of(pid),
        Vec::<u32>::new(),
        "zombies under probehost"
    );
    let output = run.finish(Duration::from_secs(30));
    assert_eq!(output.code, 7, "{output:?}");
}

#[test]
fn run_as_pid_1_leaves_no_zombie_and_passes_the_exit_code_on() {
    let dir = TestDir::new();
    let config = run_config(&dir);
    // The application counts PID 1's zombies itself, inside the namespace.
    let script = format!("{}; sleep 1; {}; exit 3", orphans(50), COUNT_ZOMBIES);
    let output = run(std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", PROBEHOST])
        .arg("-c")
        .arg(&config)
        .args(["run", "--", "sh", "-c", &script, "sh", "1"])
        .env_remove("PROBEHOST_CONFIG")
        .env("PROBEHOST_LOG", "info,probehost::reaper=debug"));
    assert!(
        !output.stderr.contains("unshare failed"),
        "this sandbox does not allow a PID namespace: {output:?}"
    );
    assert_eq!(output.code, 3, "{output:?}");
    assert_eq!(output.stdout, "zombies: 0\n", "{output:?}");
    assert_eq!(
        output.stderr.matches("reaped an orphan").count(),
        50,
        "{output:?}"
    );
}

#[test]
fn lockedmigrate_reaps_its_commands_orphans_and_passes_its_exit_code_on() {
    let dir = TestDir::new();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite3").display());
    // The command's parent is probehost: $PPID.
    let script = format!(
        "{}; sleep 1; set -- \"$PPID\"; {}; exit 5",
        orphans(20),
        COUNT_ZOMBIES
    );
    let output = run(probehost()
        .env("DATABASE_URL", &url)
        .env("PROBEHOST_LOG", "warn,probehost::reaper=debug")
        .args(["lockedmigrate", "--", "sh", "-c", &script]));
    assert_eq!(output.code, 5, "{output:?}");
    assert_eq!(output.stdout, "zombies: 0\n", "{output:?}");
    assert_eq!(
        output.stderr.matches("reaped an orphan").count(),
        20,
        "{output:?}"
    );
}
