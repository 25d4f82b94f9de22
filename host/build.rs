//! Builds the WebAssembly components that ship with probehost (`plugins/*`) and the
//! ones the integration tests load (`tests/components/*`), with a nested
//! `cargo build --target wasm32-wasip2` into a target directory of their own.
//!
//! The bundled probes are embedded into the binary (`PROBEHOST_BUILTIN_*` point at
//! them for `include_bytes!`); the test components are only located
//! (`PROBEHOST_TEST_COMPONENTS`), never embedded.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "wasm";

/// (package, artifact file name, env var that points the host at it)
const COMPONENTS: &[(&str, &str, &str)] = &[
    (
        "probehost-plugin-database",
        "probehost_plugin_database.wasm",
        "PROBEHOST_BUILTIN_DATABASE",
    ),
    (
        "probehost-plugin-memcached",
        "probehost_plugin_memcached.wasm",
        "PROBEHOST_BUILTIN_MEMCACHED",
    ),
    (
        "probehost-plugin-migrations",
        "probehost_plugin_migrations.wasm",
        "PROBEHOST_BUILTIN_MIGRATIONS",
    ),
    (
        "probehost-plugin-redis",
        "probehost_plugin_redis.wasm",
        "PROBEHOST_PLUGIN_REDIS",
    ),
    (
        "probehost-plugin-http",
        "probehost_plugin_http.wasm",
        "PROBEHOST_PLUGIN_HTTP",
    ),
    (
        "probehost-test-probe",
        "probehost_test_probe.wasm",
        "PROBEHOST_TEST_PROBE",
    ),
    (
        "probehost-not-a-probe",
        "probehost-not-a-probe.wasm",
        "PROBEHOST_TEST_NOT_A_PROBE",
    ),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    for watched in [
        "wit",
        "guest-sdk",
        "plugins",
        "tests/components",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    emit_versions(&root);

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = cargo_target_dir(&out_dir).join("wasm-components");

    check_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _, _) in COMPONENTS {
        cmd.arg("-p").arg(package);
    }
    // The outer build's flags are for the host target; they must not leak into
    // the wasm build (and a wrapper such as a coverage tool would not work there).
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        cmd.env_remove(var);
    }

    let output = cmd.output().expect("running cargo for the wasm components");
    if !output.status.success() {
        panic!(
            "building the wasm components failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let artifacts = target_dir.join(TARGET).join(PROFILE);
    for (_, file, var) in COMPONENTS {
        let path = artifacts.join(file);
        assert!(
            path.is_file(),
            "wasm component missing after build: {}",
            path.display()
        );
        println!("cargo:rustc-env={var}={}", path.display());
    }
}

/// `probehost --version` names the WIT package the probes are built against and
/// the wasmtime that runs them, read from the sources that decide them.
fn emit_versions(root: &Path) {
    let wit = std::fs::read_to_string(root.join("wit/probe.wit")).expect("reading wit/probe.wit");
    let package = wit
        .lines()
        .find_map(|line| line.trim().strip_prefix("package "))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("wit/probe.wit declares `package ...;`");
    println!("cargo:rustc-env=PROBEHOST_WIT_PACKAGE={package}");

    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("reading Cargo.lock");
    let wasmtime = lock
        .split("[[package]]")
        .find_map(|entry| {
            let mut lines = entry.lines().map(str::trim);
            lines.find(|l| *l == "name = \"wasmtime\"")?;
            lines
                .find_map(|l| l.strip_prefix("version = "))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .expect("Cargo.lock holds wasmtime");
    println!("cargo:rustc-env=PROBEHOST_WASMTIME_VERSION={wasmtime}");
}

/// The workspace target directory: the nearest ancestor of `OUT_DIR` that cargo
/// marked with `CACHEDIR.TAG`. Sharing it keeps the wasm build warm across the
/// debug and release builds of the host.
fn cargo_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_path_buf()
}

fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot
        && !sysroot.join("lib/rustlib").join(TARGET).is_dir()
    {
        panic!(
            "the {TARGET} Rust target is not installed; run `rustup target add {TARGET}` \
             (scripts/setup.sh does this)"
        );
    }
}
