//! `probehost lockedmigrate [-L 1000] [--lock-timeout SEC] [migrate's flags]
//! [-- CMD ...]`: take the migration lock, run the migration command while
//! holding it, release it, and exit with the command's code.

use std::time::Duration;

use clap::Args;

use super::{Global, error, exit, load_config, usage_error};
use crate::app::StartupError;
use crate::config;
use crate::jobs::lock::MigrationLock;
use crate::jobs::lockedmigrate::{self, Ended};

/// Migrate's flags are passed through to `manage.py migrate`; a command after
/// `--` runs instead of it, as it is.
#[derive(Debug, Args)]
pub struct LockedMigrateArgs {
    /// The lock ID to use for migrations [default: jobs.lockedmigrate.lock_id, 1000]
    #[arg(
        short = 'L',
        long = "lock-id",
        value_name = "LOCK_ID",
        allow_negative_numbers = true
    )]
    pub lock_id: Option<i64>,
    /// Give up (exit 1) if the lock is not acquired within this many seconds
    /// (at most 2147483; without it, wait for as long as it takes)
    #[arg(long, value_name = "SEC", value_parser = lock_timeout)]
    pub lock_timeout: Option<Duration>,
    /// Tells Django to NOT prompt the user for input of any kind.
    #[arg(long = "noinput", visible_alias = "no-input")]
    pub noinput: bool,
    /// Nominates a database to synchronize (and to lock). Defaults to "default".
    #[arg(long, value_name = "DATABASE")]
    pub database: Option<String>,
    /// Mark migrations as run without actually running them.
    #[arg(long)]
    pub fake: bool,
    /// Detect if tables already exist and fake-apply initial migrations if so.
    #[arg(long)]
    pub fake_initial: bool,
    /// Shows a list of the migration actions that will be performed.
    #[arg(long)]
    pub plan: bool,
    /// Creates tables for apps without migrations.
    #[arg(long)]
    pub run_syncdb: bool,
    /// Exits with a non-zero status if unapplied migrations exist and does not
    /// actually apply migrations.
    #[arg(long)]
    pub check: bool,
    /// Delete nonexistent migrations from the django_migrations table.
    #[arg(long)]
    pub prune: bool,
    /// Verbosity level; 0=minimal output, 1=normal output, 2=verbose output,
    /// 3=very verbose output
    #[arg(short, long, value_name = "{0,1,2,3}", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub verbosity: Option<u8>,
    /// The Python path to a settings module, e.g. "myproject.settings.main".
    #[arg(long, value_name = "SETTINGS")]
    pub settings: Option<String>,
    /// A directory to add to the Python path.
    #[arg(long, value_name = "PYTHONPATH")]
    pub pythonpath: Option<String>,
    /// Display a full stack trace on CommandError exceptions.
    #[arg(long)]
    pub traceback: bool,
    /// Don't colorize the command output.
    #[arg(long)]
    pub no_color: bool,
    /// Force colorization of the command output.
    #[arg(long)]
    pub force_color: bool,
    /// Skip system checks.
    #[arg(long)]
    pub skip_checks: bool,
    /// App label of an application to synchronize the state.
    pub app_label: Option<String>,
    /// Database state will be brought to the state after that migration. Use the
    /// name "zero" to unapply all migrations.
    pub migration_name: Option<String>,
    /// A command to run instead of `manage.py migrate` (alembic, rails, flyway, a
    /// script), after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl LockedMigrateArgs {
    /// Migrate's arguments as given, in the order `manage.py migrate` documents.
    fn migrate_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.to_owned());
            }
        };
        flag(self.noinput, "--noinput");
        flag(self.fake, "--fake");
        flag(self.fake_initial, "--fake-initial");
        flag(self.plan, "--plan");
        flag(self.run_syncdb, "--run-syncdb");
        flag(self.check, "--check");
        flag(self.prune, "--prune");
        flag(self.traceback, "--traceback");
        flag(self.no_color, "--no-color");
        flag(self.force_color, "--force-color");
        flag(self.skip_checks, "--skip-checks");
        let valued = [
            ("--database", self.database.clone()),
            ("--verbosity", self.verbosity.map(|v| v.to_string())),
            ("--settings", self.settings.clone()),
            ("--pythonpath", self.pythonpath.clone()),
        ];
        for (name, value) in valued {
            if let Some(value) = value {
                args.push(name.to_owned());
                args.push(value);
            }
        }
        args.extend(self.app_label.iter().cloned());
        args.extend(self.migration_name.iter().cloned());
        args
    }

    /// The command to run: after `--` as given, else `default` with migrate's
    /// arguments appended. Both at once is a usage error.
    pub fn command(&self, default: &[String]) -> Result<Vec<String>, &'static str> {
        let migrate = self.migrate_args();
        if self.command.is_empty() {
            return Ok(default.iter().cloned().chain(migrate).collect());
        }
        // `--database` also chooses what to lock, so it may go with a command.
        let only_database = migrate.len() == 2 && self.database.is_some();
        if migrate.is_empty() || only_database {
            Ok(self.command.clone())
        } else {
            Err("migrate's options and arguments cannot be combined with a command after `--`")
        }
    }
}

/// The longest `--lock-timeout` every supported database accepts:
/// PostgreSQL's `lock_timeout` is a 32-bit count of milliseconds.
const MAX_LOCK_TIMEOUT_SECS: f64 = 2_147_483.0;

fn lock_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| !s.is_nan())
        .ok_or_else(|| format!("{text:?} is not a number of seconds"))?;
    if seconds <= 0.0 {
        return Err(format!("{text:?} is not a positive number of seconds"));
    }
    if seconds > MAX_LOCK_TIMEOUT_SECS {
        return Err(format!(
            "{text:?} is more than {MAX_LOCK_TIMEOUT_SECS} seconds (about 24 days), the longest \
             wait PostgreSQL accepts; leave --lock-timeout out to wait without a limit"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(super) fn exec(global: &Global, args: &LockedMigrateArgs) -> Result<u8, StartupError> {
    let config = load_config(global)?;
    let command = match args.command(&config.jobs.migrate_command) {
        Ok(command) => command,
        Err(message) => usage_error(message),
    };
    let alias = args.database.as_deref().unwrap_or(config::DEFAULT_DATABASE);
    let db = crate::jobs::database(&config, alias)?;
    let id = args.lock_id.unwrap_or(config.jobs.lock_id);

    let ended = super::current_thread_runtime("job")?.block_on(async {
        let mut waiting = |waited: Duration, holder: &str| {
            error(&format!(
                "Waiting for migration lock {id} on database {alias:?}: {holder} ({}s)",
                waited.as_secs()
            ));
        };
        let lock = match MigrationLock::acquire(db, id, args.lock_timeout, &mut waiting).await {
            Ok(lock) => lock,
            Err(e) => return Err(e.to_string()),
        };
        tracing::info!(id, database = alias, "holding the migration lock");
        Ok(lockedmigrate::run_locked(lock, &command).await)
    });
    match ended {
        Ok(Ended::Exited(code)) => Ok(code),
        Ok(Ended::LockLost(reason)) => {
            error(&format!(
                "Lost the connection holding migration lock {id} ({reason}); stopped the command, \
                 as another process may now hold the lock"
            ));
            Ok(exit::FAILURE)
        }
        Ok(Ended::CannotRun(message)) => {
            error(&message);
            Ok(lockedmigrate::EXIT_CANNOT_RUN)
        }
        Err(message) => {
            error(&format!("{}{}", message[..1].to_uppercase(), &message[1..]));
            Ok(exit::FAILURE)
        }
    }
}
