//! `probehost precompile`: compile every configured probe's component into the
//! compiled-component cache, for an image build or an init container sharing
//! the cache volume.

use super::{Global, error, exit, load_config, print};
use crate::app::{self, StartupError};
use crate::plugin::{Origin, PluginRuntime};

/// Exit 0 when every component is in the cache, 1 without a usable cache.
pub(super) fn exec(global: &Global) -> Result<u8, StartupError> {
    let config = load_config(global)?;
    let Some(dir) = config.runtime.cache_dir.as_deref() else {
        error(
            "no compiled-component cache is configured: set runtime.cache_dir (or \
             PROBEHOST_CACHE_DIR), and do not set runtime.cache = false",
        );
        return Ok(exit::FAILURE);
    };
    let runtime = PluginRuntime::new(Some(dir))?;
    let Some(cache) = runtime.cache() else {
        error(&format!(
            "the compiled-component cache at {} cannot be used (see the warning above)",
            dir.display()
        ));
        return Ok(exit::FAILURE);
    };
    let loaded = app::load_components(&config, &runtime)?;
    let mut out = String::new();
    for ((name, component), probe) in loaded.iter().zip(&config.probes) {
        let how = match component.origin() {
            Origin::Compiled => "compiled",
            Origin::Cached => "already cached",
        };
        out.push_str(&format!("{name}: {} {how}\n", probe.component));
    }
    out.push_str(&format!("cache: {}\n", cache.dir().display()));
    print(&out);
    Ok(exit::OK)
}
