//! Integration tests: the `probehost` binary against real PostgreSQL, MariaDB,
//! SQLite and memcached, with faults injected by the harness. Each module is one
//! area of behaviour; test names state the behaviour.
//!
//! A test that needs a service fails, naming it, when the service is not
//! reachable: `scripts/setup.sh` starts what is missing.

mod harness;

mod cli_help;
mod component_cache;
mod config_errors;
mod deploy;
mod fail_closed;
mod gates;
mod held_up;
mod hostile;
mod jobs;
mod migrations;
mod primary;
mod probe_cli;
mod production;
mod reaping;
mod refusals;
mod sandbox;
mod secrets;
mod serve;
mod slow;
mod user_probes;
mod wait;
