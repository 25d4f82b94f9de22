//! Wiring: the only module that puts config, databases, caches, plugins, the
//! evaluator and the server together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::config::{Config, ConfigError, Problem};
use crate::db::Database;
use crate::memcached::Cache;
use crate::metrics::Metrics;
use crate::plugin::{Grants, Loaded, Origin, Plugin, PluginRuntime};
use crate::proxy::Upstream;
use crate::readiness::{Evaluator, Readiness, Sharing};
use crate::server::{
    self, ANSWERED_BY, AppPort, AppState, Lifecycle, Listeners, Routes, ServeOptions, Stop,
};

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
///
/// One worker thread. Checks wait on their dependencies almost all the time,
/// and a guest that computes yields the thread every epoch tick, so a second
/// worker buys little parallelism; what it costs is measured: the two workers
/// wake each other whenever work arrives, and `/readyz` with the database probe
/// alone took about 40 µs longer at the median with two (`PROBEHOST_BENCH=hotpath`).
pub fn guest_runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
///
/// With `prepare`, each probe's next instance is made as soon as a check's
/// result is out (see [`Plugin::prepare`]): for evaluators that check again and
/// again (`serve`, `wait`, `wait4db`), not for one that checks once and exits.
pub fn build_evaluator(
    config: &Config,
    guests: &Handle,
    metrics: Arc<Metrics>,
    prepare: bool,
) -> Result<Arc<Evaluator>, StartupError> {
    config.check_ready()?;
    let _enter = guests.enter();
    let runtime =
        PluginRuntime::for_probes(config.runtime.cache_dir.as_deref(), config.probes.len())?;
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
            let mut db = Database::new(&d.name, &d.options, d.connect_timeout, d.query_timeout);
            // `require = "primary"`, or a probe asked to check it (`wait4db --primary`).
            let primary =
                d.require_primary || config.probes.iter().any(|p| p.primary.contains(&d.name));
            if primary {
                db = db.requiring_writable_file();
            }
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
                network: probe.network.clone().into(),
                http: probe.http.clone().into(),
                config: probe.component_settings(),
                secrets: config.probe_secrets(probe).into(),
            };
            let plugin = Plugin::new(&probe.name, component, grants, probe.timeout, probe.memory);
            (plugin, probe.gate)
        })
        .collect();
    Ok(Arc::new(Evaluator::new(
        plugins,
        config.readiness.timeout,
        guests.clone(),
        metrics,
        prepare,
    )))
}

/// Everything the server needs, built from `config` (probes on `guests`).
pub fn build_state(
    config: &Config,
    guests: &Handle,
    lifecycle: Lifecycle,
) -> Result<Arc<AppState>, StartupError> {
    let metrics = Arc::new(Metrics::new(config.probes.iter().map(|p| p.name.as_str())));
    metrics.watch_runtime("probes", guests.clone());
    let evaluator = build_evaluator(config, guests, metrics.clone(), true)?;
    let sharing = Sharing {
        cache_ttl: config.readiness.cache_ttl,
        interval: config.readiness.interval,
    };
    let readiness = Readiness::new(evaluator, sharing, metrics.clone());
    readiness.start_background();
    let upstream = match &config.server.upstream {
        None => None,
        Some(url) => {
            let upstream = url
                .parse()
                .map_err(|e: http::uri::InvalidUri| e.to_string())
                .and_then(|base| Upstream::new(&base, config.server.upstream_timeout))
                .map_err(|e| anyhow::anyhow!("server.upstream {url:?}: {e}"))?;
            Some(upstream)
        }
    };
    Ok(Arc::new(AppState {
        routes: Routes::new(
            &config.server,
            config.probes.iter().map(|p| p.name.clone()).collect(),
        ),
        readiness,
        metrics,
        upstream,
        ready_upstream: config
            .server
            .upstream
            .as_deref()
            .filter(|_| config.server.readiness_upstream)
            .and_then(AppPort::of),
        detail: config.server.verbose,
        lifecycle,
    }))
}

/// The `host:port` of `server.upstream`, resolved, for liveness checks.
pub fn upstream_address(config: &Config) -> Option<SocketAddr> {
    let url = url::Url::parse(config.server.upstream.as_deref()?).ok()?;
    url.socket_addrs(|| Some(80)).ok()?.into_iter().next()
}

/// Run the probe server: `state` is built and `listener` bound. Returns when
/// `stops` has said how to stop, after the drain that asks for, and in-flight
/// requests are done.
pub async fn serve(
    config: &Config,
    listeners: Listeners,
    state: Arc<AppState>,
    stops: tokio::sync::mpsc::UnboundedReceiver<Stop>,
) -> std::io::Result<()> {
    server::serve(listeners, state, ServeOptions::new(&config.server), stops).await
}

/// Ask a probehost serving this configuration for its readiness answer: on
/// its probe socket when it has one, else (or if that does not answer) over
/// loopback. `None` when nothing answers, or what answers is not probehost.
/// Plain blocking I/O with timeouts: an exec probe starts no async runtime
/// (nor any thread) to ask.
pub fn ask_running_server(config: &Config) -> Option<(u16, String)> {
    let path = config.server.ready_paths.first()?;
    // Connecting to a live local server takes microseconds; allow the server's
    // own deadline for the answer.
    let limit = config.readiness.timeout + Duration::from_secs(1);
    if let Some(socket) = &config.server.socket {
        let place = format!("the probe socket {}", socket.display());
        let connect = std::os::unix::net::UnixStream::connect(socket);
        let answer = connect.map_err(|_| "nothing answers").and_then(|stream| {
            stream
                .set_read_timeout(Some(limit))
                .and_then(|()| stream.set_write_timeout(Some(limit)))
                .map_err(|_| "nothing answers")?;
            ask(stream, path, "localhost")
        });
        if let Some(answer) = logged(answer, &place) {
            return Some(answer);
        }
    }
    let listen = config.server.listen;
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        ip if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(ip, listen.port());
    let place = format!("the server's port {address}");
    let answer = std::net::TcpStream::connect_timeout(&address, limit)
        .map_err(|_| "nothing answers")
        .and_then(|stream| {
            stream
                .set_read_timeout(Some(limit))
                .and_then(|()| stream.set_write_timeout(Some(limit)))
                .map_err(|_| "nothing answers")?;
            ask(stream, path, &address.to_string())
        });
    logged(answer, &place)
}

/// The outcome of asking at `place`, logged.
fn logged(outcome: Result<(u16, String), &str>, place: &str) -> Option<(u16, String)> {
    match outcome {
        Ok((status, body)) => {
            tracing::debug!(status, "answered by the running server on {place}");
            Some((status, body))
        }
        Err(why) => {
            tracing::debug!("{why} on {place}");
            None
        }
    }
}

/// `GET path` on `stream`, one request then close: the status and body, or
/// why there are none. Bounded by the stream's timeouts.
fn ask(
    mut stream: impl std::io::Read + std::io::Write,
    path: &str,
    host: &str,
) -> Result<(u16, String), &'static str> {
    const BROKEN: &str = "no HTTP answer comes";
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|_| BROKEN)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|_| BROKEN)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(BROKEN)?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1)?.parse().ok())
        .ok_or(BROKEN)?;
    let ours = lines.any(|l| {
        l.to_ascii_lowercase()
            .starts_with(&format!("{ANSWERED_BY}:"))
    });
    match ours {
        true => Ok((status, body.to_owned())),
        false => Err("something else answers"),
    }
}
