//! The migrations plan file: the migrations a release expects, in the order
//! Django's `migrate` applies them, one per line.
//!
//! ```text
//! # probehost migrations plan v1
//! contenttypes.0001_initial
//! inventory.0001_squashed_0002_item_qty replaces inventory.0001_initial inventory.0002_item_qty
//! ```
//!
//! A line is `APP_LABEL.NAME`, then, for a squashed migration, `replaces` and the
//! migrations it stands for. Lines starting with `#` and blank lines are
//! ignored; the first line is the header above.
//!
//! This file has no dependencies, so that the host (which checks and writes
//! plans) and the `builtin:migrations` component (which reads them) share it.

use std::collections::HashSet;

/// The first line of every plan of this format.
pub(crate) const HEADER: &str = "# probehost migrations plan v1";

/// One migration of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// `app_label.name`, as `django_migrations` records it.
    pub(crate) migration: String,
    /// For a squashed migration, the migrations it replaces.
    pub(crate) replaces: Vec<String>,
}

impl Step {
    /// Whether `applied` (the `app.name` rows of `django_migrations`) holds this
    /// migration: itself, or, for a squashed one, everything it replaces (Django
    /// records the squashed name only once all of them are applied and a later
    /// `migrate` notices).
    pub(crate) fn is_applied(&self, applied: &HashSet<String>) -> bool {
        applied.contains(&self.migration)
            || (!self.replaces.is_empty() && self.replaces.iter().all(|r| applied.contains(r)))
    }
}

/// Parse a plan. The error names the line.
pub(crate) fn parse(text: &str) -> Result<Vec<Step>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, first)) if first.trim_end() == HEADER => {}
        _ => {
            return Err(format!(
                "not a migrations plan: the first line must be {HEADER:?}"
            ));
        }
    }
    let mut steps = Vec::new();
    for (index, line) in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let step = parse_line(line).map_err(|e| format!("line {}: {e}", index + 1))?;
        steps.push(step);
    }
    Ok(steps)
}

fn parse_line(line: &str) -> Result<Step, String> {
    let mut words = line.split_whitespace();
    let migration = migration_key(words.next().unwrap_or_default())?;
    let replaces = match words.next() {
        None => Vec::new(),
        Some("replaces") => {
            let replaced = words.map(migration_key).collect::<Result<Vec<_>, _>>()?;
            if replaced.is_empty() {
                return Err("`replaces` names no migration".to_owned());
            }
            replaced
        }
        Some(other) => {
            return Err(format!(
                "expected `replaces` after the migration, found {other:?}"
            ));
        }
    };
    Ok(Step {
        migration,
        replaces,
    })
}

/// `app_label.name`: two non-empty parts.
fn migration_key(word: &str) -> Result<String, String> {
    match word.split_once('.') {
        Some((app, name)) if !app.is_empty() && !name.is_empty() && !name.contains('.') => {
            Ok(word.to_owned())
        }
        _ => Err(format!("{word:?} is not `app_label.migration_name`")),
    }
}

/// The text of a plan: the header, a comment, then one line per step.
pub(crate) fn render(steps: &[Step], comment: &str) -> String {
    let mut text = format!("{HEADER}\n");
    for line in comment.lines() {
        text.push_str(&format!("# {line}\n"));
    }
    for step in steps {
        text.push_str(&step.migration);
        if !step.replaces.is_empty() {
            text.push_str(" replaces ");
            text.push_str(&step.replaces.join(" "));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(migration: &str, replaces: &[&str]) -> Step {
        Step {
            migration: migration.to_owned(),
            replaces: replaces.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn a_plan_reads_back_what_render_wrote() {
        let steps = vec![
            step("contenttypes.0001_initial", &[]),
            step(
                "inventory.0001_squashed_0002_qty",
                &["inventory.0001_initial", "inventory.0002_qty"],
            ),
        ];
        let text = render(&steps, "written by a test\nsecond line");
        assert!(text.starts_with(&format!("{HEADER}\n# written by a test\n# second line\n")));
        assert_eq!(parse(&text).unwrap(), steps);
    }

    #[test]
    fn bad_plans_name_the_line() {
        assert!(parse("").unwrap_err().starts_with("not a migrations plan"));
        assert!(
            parse("shop.0001_initial\n")
                .unwrap_err()
                .starts_with("not a migrations plan")
        );
        let cases = [
            (
                "shop\n",
                "line 2: \"shop\" is not `app_label.migration_name`",
            ),
            (
                "\n# c\nshop.0001 replaces\n",
                "line 4: `replaces` names no migration",
            ),
            (
                "shop.0001 shop.0002\n",
                "line 2: expected `replaces` after the migration, found \"shop.0002\"",
            ),
            (
                "shop.0001 replaces .x\n",
                "line 2: \".x\" is not `app_label.migration_name`",
            ),
            (
                "a.b.c\n",
                "line 2: \"a.b.c\" is not `app_label.migration_name`",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse(&format!("{HEADER}\n{body}")).unwrap_err(),
                expected,
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_squashed_migration_is_applied_by_its_name_or_by_all_it_replaces() {
        let squashed = step(
            "inv.0001_squashed_0002",
            &["inv.0001_initial", "inv.0002_x"],
        );
        let applied = |names: &[&str]| {
            names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<HashSet<_>>()
        };
        assert!(squashed.is_applied(&applied(&["inv.0001_squashed_0002"])));
        assert!(squashed.is_applied(&applied(&["inv.0001_initial", "inv.0002_x"])));
        assert!(!squashed.is_applied(&applied(&["inv.0001_initial"])));
        assert!(!step("inv.0001_initial", &[]).is_applied(&applied(&[])));
    }
}
