//! Python probes, built from source by `scripts/build-python-probe.sh`
//! (componentize-py, installed into `.venv` by `scripts/setup.sh`) once per
//! test run, and precompiled into the shared component cache once, so the
//! tests that use them start servers that load the compiled code (a Python
//! component takes seconds of CPU to compile; several tests compiling it at
//! once on a small machine would each wait far longer).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The Python SDK's example Redis probe as a component.
pub fn python_redis_probe() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let built = build_python_probe("redis_probe", &root().join("guest-sdk/python/examples"));
        precompile(&built);
        built
    })
}

/// Fill the shared component cache with `component`, as `probehost precompile`
/// does for an image build.
fn precompile(component: &Path) {
    let dir = super::TestDir::new();
    let config = dir.config(&format!(
        "{}[databases.default]\nurl = \"sqlite://{}\"\n[probes.subject]\ncomponent = {:?}\n",
        super::server_section(),
        dir.path().join("db.sqlite3").display(),
        component.display().to_string()
    ));
    let output = super::run(
        super::probehost()
            .arg("--config")
            .arg(&config)
            .arg("precompile"),
    );
    assert_eq!(
        output.code,
        0,
        "precompiling {} failed:\n{}{}",
        component.display(),
        output.stdout,
        output.stderr
    );
}

/// Build `module` (found in `dir`) with the Python SDK into a probe component,
/// unless a build newer than every source is already there.
fn build_python_probe(module: &str, dir: &Path) -> PathBuf {
    let root = root();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-probes");
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join(format!("{module}.wasm"));
    let sources = [
        dir.join(format!("{module}.py")),
        root.join("guest-sdk/python/probehost_sdk/__init__.py"),
        root.join("wit/probe.wit"),
    ];
    let newest_source = sources
        .iter()
        .map(|p| modified(p).unwrap_or_else(|| panic!("missing {}", p.display())))
        .max()
        .unwrap();
    if modified(&output).is_some_and(|built| built > newest_source) {
        return output;
    }
    let result = Command::new(root.join("scripts/build-python-probe.sh"))
        .arg(dir)
        .arg(module)
        .arg(&output)
        .output()
        .expect("running scripts/build-python-probe.sh");
    assert!(
        result.status.success(),
        "building the Python probe {module} failed (scripts/setup.sh installs componentize-py):\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
