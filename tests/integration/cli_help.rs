//! Every command's `--help` is pinned byte for byte: the command line is part of
//! the contract (the original's flags and wording), so a change to it shows up
//! here as a diff to review.
//!
//! `tests/help/NAME.txt` holds the output of `probehost ARGS --help`, where NAME
//! is ARGS joined with `-` (`probehost.txt` for the top level). Run with
//! `PROBEHOST_BLESS=1` to rewrite them from the current output.

use std::path::Path;

use crate::harness::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/help");

/// Every command and subcommand probehost has.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["serve"],
    &["run"],
    &["probe"],
    &["config"],
    &["config", "check"],
    &["plugin"],
    &["plugin", "check"],
    &["plugin", "new"],
    &["precompile"],
    &["wait"],
    &["wait4db"],
    &["ensureadmin"],
    &["lockedmigrate"],
    &["migrations"],
    &["migrations", "plan"],
];

fn help(args: &[&str]) -> String {
    let output = run(probehost()
        // clap wraps help to the terminal's width; pin it.
        .env_remove("COLUMNS")
        .args(args)
        .arg("--help"));
    assert_eq!(output.code, 0, "{args:?} --help: {output:?}");
    assert!(
        output.stderr.is_empty(),
        "{args:?} --help: {}",
        output.stderr
    );
    output.stdout
}

#[test]
fn every_command_help_is_as_pinned() {
    let bless = std::env::var_os("PROBEHOST_BLESS").is_some();
    let mut mismatches = Vec::new();
    for args in COMMANDS {
        let name = if args.is_empty() {
            "probehost".to_owned()
        } else {
            args.join("-")
        };
        let actual = help(args);
        let path = Path::new(DIR).join(format!("{name}.txt"));
        if bless {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (PROBEHOST_BLESS=1 writes it)", path.display()));
        if actual != expected {
            mismatches.push(format!("--- {name}.txt\n{expected}+++ actual\n{actual}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_pinned_help_file_belongs_to_a_command() {
    let known: Vec<String> = COMMANDS
        .iter()
        .map(|args| {
            if args.is_empty() {
                "probehost.txt".to_owned()
            } else {
                format!("{}.txt", args.join("-"))
            }
        })
        .collect();
    for entry in std::fs::read_dir(DIR).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            known.contains(&name),
            "{name} in tests/help pins no command"
        );
    }
}

#[test]
fn version_names_the_wit_package_and_wasmtime() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let wit = std::fs::read_to_string(format!("{root}/wit/probe.wit")).unwrap();
    let package = wit
        .lines()
        .find_map(|l| l.strip_prefix("package "))
        .and_then(|p| p.strip_suffix(';'))
        .expect("wit/probe.wit declares its package");
    // The wasmtime that Cargo.lock resolved: the entry after `name = "wasmtime"`.
    let lock = std::fs::read_to_string(format!("{root}/Cargo.lock")).unwrap();
    let at = lock
        .find("name = \"wasmtime\"\nversion = \"")
        .expect("Cargo.lock resolves wasmtime");
    let wasmtime = lock[at..].lines().nth(1).unwrap();
    let wasmtime = wasmtime.trim_start_matches("version = ").trim_matches('"');

    let output = run(probehost().arg("--version"));
    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(
        output.stdout,
        format!(
            "probehost {}\nwit: {package}\nwasmtime: {wasmtime}\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    // `-V` stays the one-line form scripts parse.
    let short = run(probehost().arg("-V"));
    assert_eq!(
        short.stdout,
        format!("probehost {}\n", env!("CARGO_PKG_VERSION"))
    );
}
