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
                Ok(Some(Err(messages))) => Err(format!(
                    "Password validation error: {}",
                    python_list(&messages)
                )),
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

/// The messages as Python prints a list of them (`str()` of Django's
/// `ValidationError` is the `repr` of its list), so the line is the original's
/// byte for byte: `['This password is too short. ...', 'This password is too common.']`.
fn python_list(messages: &[String]) -> String {
    let items: Vec<String> = messages.iter().map(|m| python_repr(m)).collect();
    format!("[{}]", items.join(", "))
}

/// Python's `repr` of a string: single quotes unless the text holds a single
/// quote and no double quote, with backslashes, the chosen quote and control
/// characters escaped.
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_print_as_python_prints_a_list_of_them() {
        let list = |m: &[&str]| python_list(&m.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(list(&["a.", "b."]), "['a.', 'b.']");
        assert_eq!(list(&["it's"]), "[\"it's\"]");
        assert_eq!(list(&["'\"", "a\\b\n"]), "['\\'\"', 'a\\\\b\\n']");
        assert_eq!(list(&[]), "[]");
    }
}
