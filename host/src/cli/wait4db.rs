//! `probehost wait4db [-t 180] [-s 5] [-i 1] [-d default]`: wait until the
//! database has answered `SELECT 1` for a stability window, with the original's
//! flags, messages and exit codes.

use clap::Args;

use super::{Global, error, exit, load_config};
use crate::app::StartupError;
use crate::config;
use crate::jobs::{self, wait4db::Wait4db};

#[derive(Debug, Args)]
pub struct Wait4dbArgs {
    /// number of seconds to wait for database until timeout
    #[arg(
        short,
        long,
        value_name = "SEC",
        default_value_t = 180.0,
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// stability timeout to wait for continuous database connection
    #[arg(
        short,
        long,
        value_name = "SEC",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub stable: f64,
    /// number of seconds to wait between database checks
    #[arg(
        short,
        long,
        value_name = "SEC",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub interval: f64,
    /// which database to wait for
    #[arg(short, long, value_name = "DATABASE", default_value = config::DEFAULT_DATABASE)]
    pub database: String,
}

pub(super) fn exec(global: &Global, args: &Wait4dbArgs) -> Result<u8, StartupError> {
    // The original validates the numbers before it looks at anything else.
    let settings = match Wait4db::new(args.timeout, args.stable, args.interval) {
        Ok(settings) => settings,
        Err(message) => {
            error(message);
            return Ok(exit::FAILURE);
        }
    };
    let config = load_config(global)?;
    let db = jobs::database(&config, &args.database)?;
    let ready = super::current_thread_runtime("job")?.block_on(jobs::wait4db::wait4db(
        db,
        settings,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ));
    if ready {
        Ok(exit::OK)
    } else {
        error("Could not establish database connection");
        Ok(exit::FAILURE)
    }
}
