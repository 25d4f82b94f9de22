//! The compiled-component cache loader on arbitrary entry contents: whatever
//! an entry holds, loading the component gives a usable component (compiled
//! again unless the entry is the one written), never a panic and never the
//! entry's bytes run unchecked.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use probehost::plugin::{ArtifactCache, Origin};

/// The smallest component.
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

struct Fixture {
    _dir: tempfile::TempDir,
    engine: wasmtime::Engine,
    cache: ArtifactCache,
    entry: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let cache = ArtifactCache::open(dir.path(), &engine).unwrap();
        cache
            .load(&engine, || Ok(engine.clone()), COMPONENT)
            .unwrap();
        let entry = std::fs::read_dir(cache.dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .expect("the entry just written");
        Fixture {
            _dir: dir,
            engine,
            cache,
            entry,
        }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let f = fixture();
    let written = f
        .cache
        .load(&f.engine, || Ok(f.engine.clone()), COMPONENT)
        .unwrap();
    drop(written);
    let original = std::fs::read(&f.entry).unwrap();
    std::fs::write(&f.entry, bytes).unwrap();
    let (_, origin) = f
        .cache
        .load(&f.engine, || Ok(f.engine.clone()), COMPONENT)
        .unwrap();
    if bytes != original.as_slice() {
        assert_eq!(origin, Origin::Compiled, "a changed entry was loaded");
    }
});
