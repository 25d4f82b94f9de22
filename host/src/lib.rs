//! probehost: Kubernetes liveness and readiness probes, exec probes and
//! deployment jobs for Django and other applications, with readiness probes that
//! run as sandboxed WebAssembly components.
//!
//! Dependencies point one way: `main → cli → app → {server, readiness, plugin,
//! jobs} → {config, db, memcached}`. [`app`] is the only module that wires them.

pub mod app;
pub mod child;
pub mod cli;
pub mod config;
pub mod db;
pub mod jobs;
pub mod logging;
pub mod memcached;
pub mod memory;
pub mod metrics;
pub mod migrations;
pub mod plugin;
pub mod proxy;
pub mod readiness;
pub mod reaper;
pub mod scaffold;
pub mod server;
pub mod signals;
pub mod warden;
