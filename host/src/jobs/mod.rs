//! The deployment jobs: `wait4db`, `ensureadmin` and `lockedmigrate`, run as
//! init containers and Kubernetes Jobs. They use the databases of the config file
//! (`default` comes from `DATABASE_URL` when the file does not name it) and work
//! on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! This module owns what the jobs do to a database and to a child process; the
//! command line and exit codes are in [`crate::cli`].

pub mod ensureadmin;
pub mod lock;
pub mod lockedmigrate;
pub mod password;
pub mod wait4db;

use crate::config::{Config, ConfigError, DatabaseConfig, Problem};

/// The database alias a job was asked for; an unknown alias is a configuration
/// error (exit 2).
pub fn database<'c>(config: &'c Config, alias: &str) -> Result<&'c DatabaseConfig, ConfigError> {
    config.database(alias).ok_or_else(|| {
        let known: Vec<&str> = config.databases.iter().map(|d| d.name.as_str()).collect();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        ConfigError::single(Problem {
            location: None,
            key: String::new(),
            message: format!("unknown database {alias:?} (configured: {known})"),
        })
    })
}
