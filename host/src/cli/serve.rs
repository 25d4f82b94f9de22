//! `probehost serve`: serve the probes over HTTP, standalone or in front of the
//! application (proxy mode), until a signal stops it. Also the pieces `run`
//! shares with it: the overridden configuration, the control runtime and the
//! bound listeners.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{Global, exit, load_config};
use crate::app::{self, StartupError};
use crate::config::Config;
use crate::server::{AppState, Lifecycle, Listeners, ProbeSocket};
use crate::signals;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Proxy mode: forward every request that is not a probe to this
    /// `http://host:port` (overrides `server.upstream`).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

pub(super) fn exec(global: &Global, args: &ServeArgs) -> Result<u8, StartupError> {
    let config = serve_config(global, args)?;
    let guests = app::guest_runtime().context("starting the probe runtime")?;
    let state = app::build_state(&config, guests.handle(), Lifecycle::default())?;
    let control = super::current_thread_runtime("control")?;
    let served: anyhow::Result<()> = control.block_on(async {
        let (stops, stopping) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(signals::shutdown(stops, None));
        let listener = bind(&config, &state).await?;
        app::serve(&config, listener, state, stopping).await?;
        tracing::info!("stopped");
        Ok(())
    });
    drop(control);
    guests.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(exit::OK)
}

/// The configuration for serving, with the command line's overrides.
pub(super) fn serve_config(global: &Global, args: &ServeArgs) -> Result<Config, StartupError> {
    let mut config = load_config(global)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(upstream) = &args.upstream {
        config.server.set_upstream(upstream.clone());
    }
    config.check_serve()?;
    Ok(config)
}

/// Bind the port (and the probe socket, if configured) and announce them. The
/// control runtime that calls this binds, watches signals (and in `run` mode
/// the application) and coordinates shutdown; connections are served on
/// threads of their own (`server::serve`).
pub(super) async fn bind(config: &Config, state: &AppState) -> anyhow::Result<Listeners> {
    let listener = crate::server::listen_tcp(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr()?;
    let unix = match &config.server.socket {
        Some(path) => {
            let socket = ProbeSocket::bind(path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            tracing::info!(socket = %socket.path().display(), "probe socket listening");
            Some(socket)
        }
        None => None,
    };
    let probes: Vec<&str> = state.readiness.evaluator().probe_names().collect();
    let mode = if config.server.upstream.is_some() {
        "proxy"
    } else {
        "standalone"
    };
    tracing::info!(%address, mode, ?probes, "listening");
    // Start-up is over: what it alone needed goes back to the system.
    crate::memory::release_startup();
    Ok(Listeners {
        tcp: listener,
        unix,
    })
}
