//! `probehost wait4db [-t 180] [-s 5] [-i 1] [-d default]`: wait until the
//! database has answered `SELECT 1` for a stability window, with the original's
//! flags, messages and exit codes. With `--migrated` (or `--plan FILE`), also
//! until the migrations check of `builtin:migrations` passes; with
//! `--primary`, until the database accepts writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::{Global, error, exit, load_config, usage_error};
use crate::app::{self, StartupError};
use crate::config::{self, Config, ProbeConfig};
use crate::jobs::{self, wait4db::NotReady, wait4db::Wait4db};
use crate::metrics::Metrics;
use crate::migrations;
use crate::plugin::{Builtin, ComponentSource};
use crate::readiness::Gate;

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
    /// Also wait until every migration of the plan is applied, as the config's
    /// builtin:migrations probes for this database check it
    #[arg(long)]
    pub migrated: bool,
    /// The migrations plan to wait for, instead of the config's builtin:migrations
    /// probes (implies --migrated)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Also wait until the database accepts writes: a primary, not a standby or a
    /// read-only server (as builtin:database checks `require = "primary"`)
    #[arg(long)]
    pub primary: bool,
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
    let runtime = super::current_thread_runtime("job")?;
    let mut probes = Vec::new();
    if args.primary {
        probes.push(primary_probe(&config, &args.database));
    }
    if args.migrated || args.plan.is_some() {
        probes.extend(migrations_probes(
            &config,
            &args.database,
            args.plan.as_deref(),
        ));
    }
    let checks = if probes.is_empty() {
        None
    } else {
        let checks = Config {
            probes,
            ..config.clone()
        };
        let metrics = Arc::new(Metrics::new(checks.probes.iter().map(|p| p.name.as_str())));
        Some(app::build_evaluator(
            &checks,
            runtime.handle(),
            metrics,
            true,
        )?)
    };
    let result = runtime.block_on(jobs::wait4db::wait4db(
        db,
        settings,
        checks.as_ref(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ));
    match result {
        Ok(()) => Ok(exit::OK),
        Err(NotReady::Database) => {
            error("Could not establish database connection");
            Ok(exit::FAILURE)
        }
        Err(NotReady::Checks(cause)) => {
            error(&format!("Database did not become ready: {cause}"));
            Ok(exit::FAILURE)
        }
    }
}

/// `--primary`: builtin:database on `database` alone, which must accept writes.
fn primary_probe(config: &Config, database: &str) -> ProbeConfig {
    let mut probe = ProbeConfig::bundled("primary", Builtin::Database, config.readiness.timeout);
    probe.databases = vec![database.to_owned()];
    probe.primary = vec![database.to_owned()];
    probe
}

/// The migrations checks of `--migrated`, each on `database` alone: a probe for
/// `--plan`, else the config's `builtin:migrations` probes granted `database`.
fn migrations_probes(config: &Config, database: &str, plan: Option<&Path>) -> Vec<ProbeConfig> {
    // Each on this database alone, and always gating: a job waits for what it
    // was asked to wait for.
    let only = |mut probe: ProbeConfig| {
        probe.databases = vec![database.to_owned()];
        probe.gate = Gate::Always;
        probe
    };
    if let Some(path) = plan {
        let text = match migrations::read_plan(path) {
            Ok(text) => text,
            Err(e) => usage_error(&format!("--plan: {e}")),
        };
        let mut probe =
            ProbeConfig::bundled("migrations", Builtin::Migrations, config.readiness.timeout);
        probe.config = vec![("plan".to_owned(), path.display().to_string())];
        probe.plan = Some(text);
        return vec![only(probe)];
    }
    let probes: Vec<ProbeConfig> = config
        .probes
        .iter()
        .filter(|p| p.component == ComponentSource::Builtin(Builtin::Migrations))
        .filter(|p| p.databases.iter().any(|d| d == database))
        .cloned()
        .map(only)
        .collect();
    if probes.is_empty() {
        usage_error(&format!(
            "--migrated: no builtin:migrations probe checks the database {database:?}: \
             configure one, or give the plan with --plan FILE"
        ));
    }
    probes
}
