//! Migrations plans: the file `builtin:migrations` compares with the database,
//! and `probehost migrations plan`, which asks Django for it.
//!
//! The format is defined once, in the component's source, and compiled into
//! the host as well: the host checks plans when it loads a config and writes
//! them; the component reads them.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

// `Step::is_applied` is the component's business; the host only checks and
// writes plans.
#[allow(dead_code)]
#[path = "../../plugins/migrations/src/plan.rs"]
mod plan;

/// The first line of every plan.
pub const HEADER: &str = plan::HEADER;

/// The largest plan file read: a project with thousands of migrations is
/// about 100 KiB.
const MAX_PLAN: u64 = 4 << 20;

/// Read and check the plan file at `path`; its text on success.
pub fn read_plan(path: &Path) -> Result<String, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_PLAN + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_PLAN {
        return Err(format!(
            "{} is larger than {} MiB",
            path.display(),
            MAX_PLAN >> 20
        ));
    }
    plan::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// Lines around the plan in the output of the Python snippet, so that whatever
/// else the project prints at start-up is told apart.
const BEGIN: &str = "probehost-migrations-plan-begin";
const END: &str = "probehost-migrations-plan-end";

/// Run by `manage.py shell --command`: Django's own migration graph, without a
/// database (so squashed migrations stand for what they replace, as on a fresh
/// database), walked the way `migrate` walks it to apply everything.
const DJANGO_PLAN: &str = r#"
from django.db.migrations.loader import MigrationLoader
graph = MigrationLoader(None, ignore_no_migrations=True).graph
seen = set()
print("probehost-migrations-plan-begin")
for leaf in graph.leaf_nodes():
    for key in graph.forwards_plan(leaf):
        if key in seen:
            continue
        seen.add(key)
        words = ["%s.%s" % key]
        replaces = graph.nodes[key].replaces
        if replaces:
            words += ["replaces"] + ["%s.%s" % r for r in replaces]
        print(" ".join(words))
print("probehost-migrations-plan-end", flush=True)
"#;

/// The comment a written plan carries below its header.
const WRITTEN_BY: &str = "Written by `probehost migrations plan` from Django's migration graph: every\n\
    migration of this release, in the order `migrate` applies them. builtin:migrations\n\
    is ready when django_migrations records all of them.";

/// Ask Django for the plan: `MANAGE... shell --command SNIPPET`, where `manage`
/// is how the project runs `manage.py` (for example `python manage.py`). The
/// project's own output goes to stderr. Returns the plan's text and its number
/// of migrations.
pub fn django_plan(manage: &[String]) -> Result<(String, usize), String> {
    let (program, args) = manage.split_first().ok_or("no command runs manage.py")?;
    let shown = manage.join(" ");
    let output = Command::new(program)
        .args(args)
        .args(["shell", "--command", DJANGO_PLAN])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let begin = lines.iter().position(|l| l.trim() == BEGIN);
    let end = lines.iter().rposition(|l| l.trim() == END);
    let (body, rest) = match (begin, end) {
        (Some(b), Some(e)) if b < e && output.status.success() => {
            (&lines[b + 1..e], [&lines[..b], &lines[e + 1..]].concat())
        }
        _ => (&[][..], lines.clone()),
    };
    let mut stderr = std::io::stderr().lock();
    for line in rest {
        let _ = writeln!(stderr, "{line}");
    }
    if !output.status.success() {
        return Err(format!("`{shown} shell` failed ({})", output.status));
    }
    if begin.is_none() {
        return Err(format!("`{shown} shell` printed no plan"));
    }
    let listed = format!("{HEADER}\n{}\n", body.join("\n"));
    let steps = plan::parse(&listed).map_err(|e| format!("Django's plan is not usable: {e}"))?;
    Ok((plan::render(&steps, WRITTEN_BY), steps.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_file_is_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.plan");
        std::fs::write(&good, format!("{HEADER}\nshop.0001_initial\n")).unwrap();
        assert!(read_plan(&good).unwrap().ends_with("shop.0001_initial\n"));

        let bad = dir.path().join("bad.plan");
        std::fs::write(&bad, format!("{HEADER}\nshop\n")).unwrap();
        assert_eq!(
            read_plan(&bad).unwrap_err(),
            format!(
                "{}: line 2: \"shop\" is not `app_label.migration_name`",
                bad.display()
            )
        );
        let missing = dir.path().join("missing.plan");
        assert!(
            read_plan(&missing)
                .unwrap_err()
                .starts_with(&format!("cannot read {}", missing.display()))
        );
    }
}
