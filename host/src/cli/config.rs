//! `probehost config check`: validate the configuration the way start-up does
//! (loading every probe component too) and print it resolved, secrets masked.

use clap::Subcommand;

use super::{Global, exit, load_config, print};
use crate::app::{self, StartupError};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (loading every probe component) and print it
    /// resolved, with secrets masked.
    Check,
}

pub(super) fn exec(global: &Global, command: &ConfigCommand) -> Result<u8, StartupError> {
    match command {
        ConfigCommand::Check => check(global),
    }
}

fn check(global: &Global) -> Result<u8, StartupError> {
    let config = load_config(global)?;
    app::check_config(&config)?;
    let source = match &config.source {
        Some(path) => format!("{}", path.display()),
        None => "built-in defaults (no config file)".to_owned(),
    };
    print(&format!(
        "# configuration from {source}: valid\n{}\n",
        config.render()
    ));
    Ok(exit::OK)
}
