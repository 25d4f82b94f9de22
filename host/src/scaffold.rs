//! `probehost plugin new`: a probe crate that builds for `wasm32-wasip2` on the
//! first try, with the guest SDK and the WIT files it needs copied in (from the
//! ones this binary was built with), so it depends on nothing but crates.io.
//!
//! This module only writes files; it never overwrites one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The guest SDK's files, as embedded at build time: (path in the new crate, text).
const SDK_FILES: &[(&str, &str)] = &[
    (
        "probehost-sdk/src/lib.rs",
        include_str!("../../guest-sdk/src/lib.rs"),
    ),
    (
        "probehost-sdk/src/bindings.rs",
        include_str!("../../guest-sdk/src/bindings.rs"),
    ),
    (
        "probehost-sdk/src/http.rs",
        include_str!("../../guest-sdk/src/http.rs"),
    ),
    (
        "probehost-sdk/src/net.rs",
        include_str!("../../guest-sdk/src/net.rs"),
    ),
    ("wit/probe.wit", include_str!("../../wit/probe.wit")),
];

/// The SDK's manifest outside the probehost workspace. Its dependencies are the
/// workspace's (a unit test keeps them in step).
const SDK_DEPENDENCIES: &str = r#"wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc"] }
wasip2 = { version = "2", default-features = false, features = ["std"] }
"#;

/// Why a crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{0:?} is not a usable crate name: use ASCII letters, digits, `-` and `_`, starting with a letter"
    )]
    BadName(String),
    #[error("{} already exists; choose another name or --dir", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What was created.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    /// Where `cargo build --release` puts the component, relative to `dir`.
    pub artifact: String,
}

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
}

/// Create the crate `name` in `dir` (which must not exist).
pub fn new_probe(name: &str, dir: &Path) -> Result<Created, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let version = env!("CARGO_PKG_VERSION");
    let artifact = format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    let files = [
        ("Cargo.toml".to_owned(), probe_manifest(name)),
        (
            ".cargo/config.toml".to_owned(),
            "# Probes are WebAssembly components.\n[build]\ntarget = \"wasm32-wasip2\"\n"
                .to_owned(),
        ),
        ("src/lib.rs".to_owned(), probe_source(name, &artifact)),
        (".gitignore".to_owned(), "/target\n".to_owned()),
        (
            "probehost-sdk/Cargo.toml".to_owned(),
            format!(
                "[package]\nname = \"probehost-sdk\"\n\
                 description = \"Write probehost readiness probes as WebAssembly components\"\n\
                 version = \"{version}\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\npublish = false\n\n\
                 [dependencies]\n{SDK_DEPENDENCIES}"
            ),
        ),
    ];
    let files = files.into_iter().chain(
        SDK_FILES
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned())),
    );
    for (path, text) in files {
        let path = dir.join(path);
        let write = || -> io::Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| io::Write::write_all(&mut f, text.as_bytes()))
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(Created {
        dir: dir.to_owned(),
        artifact,
    })
}

fn probe_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
probehost-sdk = {{ path = "probehost-sdk" }}

# A small component: probehost compiles it once and caches the machine code.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A crate of its own, even when created inside another workspace.
[workspace]
"#
    )
}

fn probe_source(name: &str, artifact: &str) -> String {
    format!(
        r#"//! `{name}`: a probehost readiness probe.
//!
//! Build it with `cargo build --release` (`.cargo/config.toml` sets the
//! `wasm32-wasip2` target) and name the component in probehost's config:
//!
//! ```toml
//! [probes.{name}]
//! component = "{artifact}"
//! # grants: databases = ["default"], caches = ["default"],
//! #         network = ["HOST:PORT"], http = ["https://HOST"]
//! config = {{ fail = "false" }}
//! ```
//!
//! `probehost plugin check {artifact}` shows what it imports and which grants
//! it can use. The SDK's documentation: `cargo doc -p probehost-sdk --open`.
#![forbid(unsafe_code)]

use probehost_sdk::{{NotReady, Probe, Request, config, log}};

struct ThisProbe;

impl Probe for ThisProbe {{
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {{
        // Check what the application depends on here; the settings come from
        // the probe's `config = {{ ... }}` table.
        if config::get("fail").as_deref() == Some("true") {{
            log::warn("told to fail by its config");
            return Err(NotReady::new("{name}: not ready"));
        }}
        Ok(())
    }}
}}

probehost_sdk::export_probe!(ThisProbe);
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copied_sdk_depends_on_what_the_workspace_does() {
        let workspace = include_str!("../../Cargo.toml");
        let sdk = include_str!("../../guest-sdk/Cargo.toml");
        let mut lines = SDK_DEPENDENCIES.lines();
        let wit_bindgen = lines.next().unwrap();
        let wasip2 = lines.next().unwrap();
        assert!(workspace.contains(wit_bindgen), "{wit_bindgen}");
        assert!(sdk.contains(wasip2), "{wasip2}");
        let deps = sdk.split("[dependencies]").nth(1).unwrap();
        let deps = deps.split("\n[").next().unwrap();
        let count = deps
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(
            count, 2,
            "the SDK gained a dependency the copy lacks:\n{deps}"
        );
    }

    #[test]
    fn names_are_crate_names() {
        assert!(valid_name("redis-probe") && valid_name("r2_d2"));
        for bad in ["", "2fast", "a/b", "../x", "has space", "ünïcode"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn an_existing_directory_is_never_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let err = new_probe("demo", dir.path()).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_crate_has_its_manifest_source_sdk_and_wit() {
        let dir = tempfile::tempdir().unwrap();
        let created = new_probe("demo-probe", &dir.path().join("demo")).unwrap();
        assert_eq!(
            created.artifact,
            "target/wasm32-wasip2/release/demo_probe.wasm"
        );
        for file in [
            "Cargo.toml",
            ".cargo/config.toml",
            "src/lib.rs",
            "probehost-sdk/Cargo.toml",
            "probehost-sdk/src/lib.rs",
            "probehost-sdk/src/bindings.rs",
            "wit/probe.wit",
        ] {
            assert!(created.dir.join(file).is_file(), "{file}");
        }
        let manifest = fs::read_to_string(created.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"demo-probe\""));
        // The SDK finds the WIT files at the path its bindings name.
        let bindings =
            fs::read_to_string(created.dir.join("probehost-sdk/src/bindings.rs")).unwrap();
        assert!(bindings.contains("path: \"../wit\""));
    }
}
