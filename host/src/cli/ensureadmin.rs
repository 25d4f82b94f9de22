//! `probehost ensureadmin [-u] [-p] [-e] [-d default]`: create the Django
//! superuser from flags or `DJANGO_ADMIN_*` variables unless a user of that
//! name exists, with the original's messages and exit codes.

use clap::Args;

use super::{Global, error, exit, load_config};
use crate::app::StartupError;
use crate::config;
use crate::jobs::{self, ensureadmin, password};

#[derive(Debug, Args)]
pub struct EnsureAdminArgs {
    /// The username for the Django admin, $DJANGO_ADMIN_USERNAME
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password for the Django admin, $DJANGO_ADMIN_PASSWORD (prefer the
    /// variable: a flag is visible in process listings)
    #[arg(short, long)]
    pub password: Option<String>,
    /// The email for the Django admin, $DJANGO_ADMIN_EMAIL
    #[arg(short, long)]
    pub email: Option<String>,
    /// Specifies the database to use.
    #[arg(short, long, value_name = "DATABASE", default_value = config::DEFAULT_DATABASE)]
    pub database: String,
}

/// A flag, else the environment variable; empty counts as missing, as in the
/// original.
fn flag_or_env(flag: &Option<String>, var: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
}

pub(super) fn exec(global: &Global, args: &EnsureAdminArgs) -> Result<u8, StartupError> {
    let config = load_config(global)?;
    let db = jobs::database(&config, &args.database)?;
    let Some(username) = flag_or_env(&args.username, "DJANGO_ADMIN_USERNAME") else {
        error("Username is required. Set DJANGO_ADMIN_USERNAME or use --username.");
        return Ok(exit::FAILURE);
    };
    let Some(password) = flag_or_env(&args.password, "DJANGO_ADMIN_PASSWORD") else {
        error("Password is required. Set DJANGO_ADMIN_PASSWORD or use --password.");
        return Ok(exit::FAILURE);
    };
    let email = ensureadmin::normalize_email(
        &flag_or_env(&args.email, "DJANGO_ADMIN_EMAIL").unwrap_or_default(),
    );
    let username = match ensureadmin::normalize_username(&username) {
        Ok(username) => username,
        Err(message) => {
            error(&message);
            return Ok(exit::FAILURE);
        }
    };
    let settings = &config.jobs.ensureadmin;

    let outcome: Result<Option<bool>, String> =
        super::current_thread_runtime("job")?.block_on(async {
            let mut conn = db
                .options
                .connect(db.connect_timeout)
                .await
                .map_err(|e| format!("Could not connect to database {:?}: {e}", db.name))?;
            let run = async {
                // An existing user is left alone whatever the password: no need to
                // validate or hash it.
                if ensureadmin::exists(&mut conn, &username).await? {
                    return Ok(None);
                }
                if let Err(messages) = password::validate(&password, &settings.validators) {
                    return Ok(Some(Err(messages)));
                }
                let iterations = settings.iterations;
                let hash = tokio::task::spawn_blocking(move || {
                    password::make_password(&password, iterations)
                })
                .await
                .expect("hashing does not panic");
                let admin = ensureadmin::Admin {
                    username: username.clone(),
                    password: hash,
                    email,
                };
                ensureadmin::ensure_admin(&mut conn, &admin)
                    .await
                    .map(|created| Some(Ok(created)))
            };
            let result = run.await;
            conn.close().await;
            match result {
                Ok(None) => Ok(Some(false)),
                Ok(Some(Ok(created))) => Ok(Some(created)),
                Ok(Some(Err(messages))) => {
                    Err(format!("Password validation error: {}", messages.join(" ")))
                }
                Err(ensureadmin::EnsureError::NoTable) => Err(format!(
                    "The auth_user table does not exist in database {:?}: run migrations first.",
                    db.name
                )),
                Err(e) => Err(format!("Could not create the admin user: {e}")),
            }
        });
    match outcome {
        Ok(Some(true)) => {
            super::print("Admin user created from environment variables.\n");
            Ok(exit::OK)
        }
        Ok(_) => {
            super::print("Admin user already exists, service is ready.\n");
            Ok(exit::OK)
        }
        Err(message) => {
            error(&message);
            Ok(exit::FAILURE)
        }
    }
}
