//! Wiring: the only module that puts config, databases, caches, plugins, the
//! evaluator and the server together.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};

use crate::config::{Config, ConfigError, Problem};
use crate::db::Database;
use crate::memcached::Cache;
use crate::plugin::{Grants, Loaded, Origin, Plugin, PluginRuntime};
use crate::readiness::Evaluator;
use crate::server::{self, AppState, Routes};

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is wrong (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Something outside the configuration failed (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The runtime probe checks run on: apart from the one that serves HTTP, so a
/// busy or misbehaving probe never delays a liveness answer.
pub fn guest_runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .thread_name("probehost-guest")
        .enable_all()
        .build()
}

/// Load every configured probe's component. All load failures are reported
/// together, each at the place its `component` is written.
pub fn load_components(
    config: &Config,
    runtime: &PluginRuntime,
) -> Result<Vec<(String, Loaded)>, ConfigError> {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for probe in &config.probes {
        match runtime.load(&probe.component) {
            Ok(component) => loaded.push((probe.name.clone(), component)),
            Err(e) => problems.push(Problem {
                location: probe.component_location.clone(),
                key: format!("probes.{}.component", probe.name),
                message: format!("{}: {e}", probe.component),
            }),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError { problems })
    }
}

/// Everything `config check` validates beyond parsing: the start-up rules and
/// that every component loads and implements the probe world.
pub fn check_config(config: &Config) -> Result<(), StartupError> {
    let runtime = PluginRuntime::new(config.runtime.cache_dir.as_deref())?;
    let mut problems = match config.check_serve() {
        Ok(()) => Vec::new(),
        Err(e) => e.problems,
    };
    if let Err(e) = load_components(config, &runtime) {
        problems.extend(e.problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems }.into())
    }
}

/// Build the evaluator for `config`. Pools and clients are created on `guests`
/// (the runtime that will use them) without connecting.
pub fn build_evaluator(config: &Config, guests: &Handle) -> Result<Evaluator, StartupError> {
    config.check_ready()?;
    let _enter = guests.enter();
    let runtime = PluginRuntime::new(config.runtime.cache_dir.as_deref())?;
    let loaded = load_components(config, &runtime)?;
    let compiled = loaded
        .iter()
        .filter(|(_, l)| l.origin() == Origin::Compiled)
        .count();
    tracing::debug!(probes = loaded.len(), compiled, "components loaded");

    let databases: HashMap<&str, Arc<Database>> = config
        .databases
        .iter()
        .map(|d| {
            let db = Database::new(&d.name, &d.options, d.connect_timeout, d.query_timeout);
            (d.name.as_str(), Arc::new(db))
        })
        .collect();
    let mut caches: HashMap<&str, Arc<Cache>> = HashMap::new();
    let mut problems = Vec::new();
    for c in &config.caches {
        match Cache::new(&c.name, &c.servers, c.timeout) {
            Ok(cache) => {
                caches.insert(c.name.as_str(), Arc::new(cache));
            }
            Err(e) => problems.push(Problem {
                location: None,
                key: format!("caches.{}.servers", c.name),
                message: e,
            }),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }

    let plugins = config
        .probes
        .iter()
        .zip(loaded)
        .map(|(probe, (_, component))| {
            let grants = Grants {
                databases: probe
                    .databases
                    .iter()
                    .map(|n| databases[n.as_str()].clone())
                    .collect(),
                caches: probe
                    .caches
                    .iter()
                    .map(|n| caches[n.as_str()].clone())
                    .collect(),
                config: probe.config.clone(),
            };
            Plugin::new(&probe.name, component, grants, probe.timeout, probe.memory)
        })
        .collect();
    Ok(Evaluator::new(
        plugins,
        config.readiness.timeout,
        guests.clone(),
    ))
}

/// Run the probe server: `config` is already validated and `listener` bound.
/// Returns when `shutdown` completes and in-flight requests are done.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    evaluator: Evaluator,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(AppState {
        routes: Routes::new(&config.server),
        evaluator,
    });
    server::serve(listener, state, shutdown).await
}
