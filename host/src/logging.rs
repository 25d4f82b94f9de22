//! Logging set-up: one subscriber writing to stderr, as text or JSON lines,
//! with a tracing-subscriber filter.

use std::io::Write;

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the process's subscriber. An invalid filter is reported and `info`
/// used instead.
pub fn init(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        let _ = writeln!(
            std::io::stderr().lock(),
            "ignoring invalid log filter {filter:?}: {e}"
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
