//! `plugin check` on arbitrary bytes: anything is a component that implements
//! the probe world, or a clear error; never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use probehost::plugin::{ComponentSource, PluginRuntime};

fn runtime() -> &'static PluginRuntime {
    static RUNTIME: OnceLock<PluginRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| PluginRuntime::new(None).expect("a runtime without a cache"))
}

fuzz_target!(|bytes: &[u8]| {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    if let Err(e) = runtime().inspect(&ComponentSource::File(file.path().to_owned())) {
        assert!(!e.to_string().is_empty());
    }
});
