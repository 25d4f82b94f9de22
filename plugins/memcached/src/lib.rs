//! The bundled `memcached` readiness probe (`builtin:memcached`).
//!
//! Every server of every cache the probe is granted must answer `stats`. (The
//! original's probe called a method Django's cache backends lack, so it never
//! contacted a server; this one does.) The reason goes to the log; the body stays
//! `cache: could not connect to cache`.
#![forbid(unsafe_code)]

use probehost_sdk::{NotReady, Probe, Request, log, memcached};

/// The answer when any server fails, as in the original.
pub const NOT_READY: &str = "cache: could not connect to cache";

struct Memcached;

impl Probe for Memcached {
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
        for cache in memcached::caches() {
            for server in &cache.servers {
                if let Err(e) = memcached::stats(&cache.name, server) {
                    log::error(&format!("cache {:?} server {server}: {e}", cache.name));
                    return Err(NotReady::new(NOT_READY));
                }
            }
        }
        Ok(())
    }
}

probehost_sdk::export_probe!(Memcached);
