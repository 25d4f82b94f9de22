//! Bad configurations are rejected with every problem and its place, exit 2.
//!
//! Each `tests/config/NAME.toml` is checked with `probehost config check`; the
//! exit code and stderr must equal `NAME.expected`. Run with `PROBEHOST_BLESS=1`
//! to write the expected files from the current output (then review the diff).

use std::path::Path;

use crate::harness::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/config");

fn check(name: &str) -> String {
    let output = run(probehost()
        .current_dir(DIR)
        .env("NOT_A_PROBE", NOT_A_PROBE)
        .env_remove("DB_PASSWORD")
        .args(["config", "check", "--config"])
        .arg(format!("{name}.toml")));
    assert!(
        output.stdout.is_empty(),
        "{name}: nothing is printed for a bad config:\n{}",
        output.stdout
    );
    format!(
        "exit {}\n{}",
        output.code,
        output.stderr.replace(NOT_A_PROBE, "$NOT_A_PROBE")
    )
}

#[test]
fn bad_configs_are_reported_as_pinned() {
    let mut names: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".toml")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 9, "fixtures missing from {DIR}");
    let bless = std::env::var_os("PROBEHOST_BLESS").is_some();
    let mut mismatches = Vec::new();
    for name in names {
        let actual = check(&name);
        let expected_path = Path::new(DIR).join(format!("{name}.expected"));
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            mismatches.push(format!(
                "--- {name}.expected\n{expected}+++ actual\n{actual}"
            ));
        }
        assert!(
            actual.starts_with("exit 2\n"),
            "{name}: a bad config exits 2:\n{actual}"
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn serve_and_probe_report_the_same_problems() {
    for command in [&["serve"][..], &["probe", "--ready"]] {
        let output = run(probehost()
            .current_dir(DIR)
            .args(["--config", "unknown-key.toml"])
            .args(command));
        assert_eq!(output.code, 2, "{command:?}");
        let expected =
            std::fs::read_to_string(Path::new(DIR).join("unknown-key.expected")).unwrap();
        assert_eq!(
            format!("exit 2\n{}", output.stderr),
            expected,
            "{command:?}"
        );
    }
}

#[test]
fn a_good_config_is_printed_resolved_with_secrets_masked() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[databases.default]\nurl = \"postgres://app:${{DB_PASSWORD}}@db:5432/app\"\n[runtime]\ncache_dir = {:?}\n",
        shared_cache_dir().display().to_string()
    ));
    let output = run(probehost()
        .env("DB_PASSWORD", "hunter2")
        .arg("-c")
        .arg(&config)
        .args(["config", "check"]));
    assert_eq!(output.code, 0, "{output:?}");
    assert!(!output.stdout.contains("hunter2"), "{}", output.stdout);
    assert!(
        output
            .stdout
            .contains("url = \"postgres://app:****@db:5432/app\""),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .contains("[probes.database]\ncomponent = \"builtin:database\""),
        "{}",
        output.stdout
    );
}
