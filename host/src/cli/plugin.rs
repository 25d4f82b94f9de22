//! `probehost plugin check FILE` (is this a probe component, what does it
//! import, which grants can it use) and `probehost plugin new NAME` (a probe
//! crate that builds as it is).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{error, exit, print};
use crate::app::StartupError;
use crate::plugin::{Builtin, ComponentSource, Inspection, PluginRuntime, WORLD};
use crate::scaffold;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Say whether a file is a probe component, what it imports, and which
    /// grants a config must give it.
    Check {
        /// The component (`.wasm`), or `builtin:NAME` for a bundled probe.
        file: PathBuf,
    },
    /// Create a Rust probe crate that builds for wasm32-wasip2 as it is, with
    /// the guest SDK and the WIT files copied in.
    New {
        /// Crate name (letters, digits, `-`, `_`).
        name: String,
        /// Where to create it (default: ./NAME); must not exist.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub(super) fn exec(command: &PluginCommand) -> Result<u8, StartupError> {
    match command {
        PluginCommand::Check { file } => check(file),
        PluginCommand::New { name, dir } => new(name, dir.as_deref()),
    }
}

/// `plugin check`: exit 0 for a probe component, 1 for anything else.
fn check(file: &Path) -> Result<u8, StartupError> {
    let runtime = PluginRuntime::new(None)?;
    let source = match file.to_str().and_then(|f| f.strip_prefix("builtin:")) {
        Some(name) => match Builtin::from_name(name) {
            Some(builtin) => ComponentSource::Builtin(builtin),
            None => {
                let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                error(&format!(
                    "unknown built-in probe {name:?} (known: builtin:{})",
                    known.join(", builtin:")
                ));
                return Ok(exit::FAILURE);
            }
        },
        None => ComponentSource::File(file.to_owned()),
    };
    let inspection = match runtime.inspect(&source) {
        Ok(inspection) => inspection,
        Err(e) => {
            error(&format!("{}: {e}", file.display()));
            return Ok(exit::FAILURE);
        }
    };
    print(&describe(&file.display().to_string(), &inspection));
    Ok(if inspection.probe.is_ok() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// What `plugin check` prints about the component `name`.
fn describe(name: &str, inspection: &Inspection) -> String {
    let mut out = String::new();
    match &inspection.probe {
        Ok(()) => out.push_str(&format!("{name}: a probe component ({WORLD})\n")),
        Err(why) => out.push_str(&format!(
            "{name}: not a probe component: it does not implement {WORLD}: {why}\n"
        )),
    }
    out.push_str("exports:\n");
    for export in &inspection.exports {
        out.push_str(&format!("  {export}\n"));
    }
    out.push_str("imports:\n");
    let width = inspection
        .imports
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for import in &inspection.imports {
        let capability = Inspection::capability(import);
        out.push_str(&format!("  {import:width$}  {}\n", capability.what));
    }
    let grants = inspection.grants();
    if grants.is_empty() {
        out.push_str("grants: none needed\n");
    } else {
        out.push_str("grants it can use, in its [probes.NAME] table:\n");
        for grant in grants {
            let example = match grant {
                "databases" => "databases = [\"default\"]",
                "caches" => "caches = [\"default\"]",
                "network" => "network = [\"HOST:PORT\", ...]",
                "http" => "http = [\"https://HOST[:PORT]\", ...]",
                _ => "config = { KEY = \"VALUE\" }",
            };
            out.push_str(&format!("  {example}\n"));
        }
    }
    out
}

/// `plugin new`: exit 0 when created, 1 when it could not be.
fn new(name: &str, dir: Option<&Path>) -> Result<u8, StartupError> {
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_owned);
    match scaffold::new_probe(name, &dir) {
        Ok(created) => {
            print(&format!(
                "created {dir}\nbuild it:  cd {dir} && cargo build --release\nthen use:  [probes.{name}]\n           component = \"{dir}/{artifact}\"\n",
                dir = created.dir.display(),
                artifact = created.artifact,
            ));
            Ok(exit::OK)
        }
        Err(e) => {
            error(&e.to_string());
            Ok(exit::FAILURE)
        }
    }
}
