//! `probehost migrations plan [-o FILE] [-- MANAGE...]`: ask Django for every
//! migration of this release and write the plan that `builtin:migrations` and
//! `wait4db --migrated` compare with the database.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{Global, error, exit, load_config, print, usage_error};
use crate::app::StartupError;
use crate::migrations;

#[derive(Debug, Subcommand)]
pub enum MigrationsCommand {
    /// Write the migrations plan of this release: every migration Django would
    /// apply to an empty database, in order. Run it where the application's code
    /// is (an image build step); it needs no database.
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Write the plan to FILE (replacing it whole) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How to run manage.py, e.g. `python /app/manage.py` [default:
    /// jobs.lockedmigrate.command without its final `migrate`]
    #[arg(last = true, value_name = "MANAGE")]
    pub manage: Vec<String>,
}

pub(super) fn exec(global: &Global, command: &MigrationsCommand) -> Result<u8, StartupError> {
    let MigrationsCommand::Plan(args) = command;
    let manage = if args.manage.is_empty() {
        let config = load_config(global)?;
        match config.jobs.migrate_command.split_last() {
            Some((last, manage)) if last == "migrate" && !manage.is_empty() => manage.to_vec(),
            _ => usage_error(
                "jobs.lockedmigrate.command does not end in `migrate`: give the manage.py \
                 command after `--`, e.g. `probehost migrations plan -- python manage.py`",
            ),
        }
    } else {
        args.manage.clone()
    };
    let (text, count) = match migrations::django_plan(&manage) {
        Ok(plan) => plan,
        Err(e) => {
            error(&format!("probehost: {e}"));
            return Ok(exit::FAILURE);
        }
    };
    match &args.output {
        None => print(&text),
        Some(path) => {
            if let Err(e) = write_whole(path, &text) {
                error(&format!("probehost: cannot write {}: {e}", path.display()));
                return Ok(exit::FAILURE);
            }
            error(&format!(
                "probehost: wrote the plan of {count} migrations to {}",
                path.display()
            ));
        }
    }
    Ok(exit::OK)
}

/// Write `text` to a file beside `path`, then rename it over `path`: a reader
/// sees the old plan or the new one, never half of one.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
