//! Compiled components are cached on disk: a second start compiles nothing.

use crate::harness::*;

#[test]
fn the_second_start_uses_the_compiled_component_cache() {
    let dir = TestDir::new();
    let cache = dir.path().join("cache");
    let config = dir.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[runtime]\ncache_dir = {:?}\n\
         [databases.default]\nurl = \"sqlite://{}\"\n\
         [probes.database]\ncomponent = \"builtin:database\"\ndatabases = \"*\"\n\
         [probes.custom]\ncomponent = {TEST_PROBE:?}\n",
        cache.display().to_string(),
        dir.path().join("db.sqlite3").display()
    ));

    let first = Server::start(&config);
    assert_eq!(first.get("/readyz").body, "Ok");
    let log = first.log();
    assert_eq!(
        log.matches("component compiled").count(),
        2,
        "first start compiles both:\n{log}"
    );
    first.terminate();

    let second = Server::start(&config);
    assert_eq!(second.get("/readyz").body, "Ok");
    let log = second.log();
    assert!(
        !log.contains("component compiled"),
        "second start compiled again:\n{log}"
    );
    assert_eq!(
        log.matches("component loaded from cache").count(),
        2,
        "{log}"
    );

    let entries: Vec<String> = std::fs::read_dir(cache.join("v2"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap())
        .flatten()
        .filter_map(|e| Some(e.path().extension()?.to_str()?.to_owned()))
        .collect();
    let count = |kind: &str| entries.iter().filter(|e| *e == kind).count();
    assert_eq!(
        (count("cwasm"), count("sum")),
        (2, 2),
        "one entry and its digest per component: {entries:?}"
    );
}

#[test]
fn exec_probes_share_the_cache() {
    let dir = TestDir::new();
    let cache = dir.path().join("cache");
    let config = dir.config(&format!(
        "[runtime]\ncache_dir = {:?}\n[probes.custom]\ncomponent = {TEST_PROBE:?}\n",
        cache.display().to_string()
    ));
    let probe = || {
        run(probehost()
            .env("PROBEHOST_LOG", "probehost=debug")
            .arg("-c")
            .arg(&config)
            .args(["probe", "-R"]))
    };
    let first = probe();
    assert_eq!((first.code, first.stdout.as_str()), (0, "Ok\n"));
    assert!(
        first.stderr.contains("component compiled"),
        "{}",
        first.stderr
    );
    let second = probe();
    assert_eq!((second.code, second.stdout.as_str()), (0, "Ok\n"));
    assert!(
        second.stderr.contains("component loaded from cache"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("component compiled"),
        "{}",
        second.stderr
    );
}

/// A cache directory that is refused (shared with other users, or another
/// user's) gets nothing written into it: `precompile` fails and the
/// directory's listing is what it was.
#[test]
fn a_refused_cache_directory_is_left_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("someone-elses-file"), b"x").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let listing = |path: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(&shared);
    let config = dir.config(&format!(
        "[runtime]\ncache_dir = {:?}\n[probes.custom]\ncomponent = {TEST_PROBE:?}\n",
        shared.display().to_string()
    ));
    let output = run(probehost().arg("-c").arg(&config).arg("precompile"));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output.stderr.contains("writable by other users"),
        "{}",
        output.stderr
    );
    assert_eq!(listing(&shared), before, "something was created in it");
    // Serving still works, compiling in memory.
    let output = run(probehost()
        .arg("-c")
        .arg(&config)
        .args(["probe", "--ready"]));
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (0, "Ok\n"),
        "{output:?}"
    );
    assert_eq!(listing(&shared), before);
}
