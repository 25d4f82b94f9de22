//! Production serving: proxy and supervisor modes, drain, shared evaluations,
//! verbose/JSON/startup/metrics answers, HTTP hardening, the cheap exec probe.

mod drain;
mod exec_probe;
mod front_door;
mod hardening;
mod log_sink;
mod output;
mod proxy;
mod sharing;
mod supervisor;

use crate::harness::*;

/// A config for a server on a free port with the shared component cache and
/// `extra` appended; `server_extra` goes into `[server]`.
fn config(dir: &TestDir, server_extra: &str, extra: &str) -> std::path::PathBuf {
    dir.config(&format!(
        "{}{extra}",
        server_section().replace("[server]\n", &format!("[server]\n{server_extra}\n"))
    ))
}

/// `[probes.NAME]` using the test probe with these settings.
fn test_probe(name: &str, settings: &str) -> String {
    format!("[probes.{name}]\ncomponent = {TEST_PROBE:?}\nconfig = {{ {settings} }}\n")
}
