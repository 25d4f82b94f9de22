//! `${VAR}` references in config strings, resolved from an [`Env`].
//!
//! `${VAR}` is the variable's value and an error when it is unset;
//! `${VAR:-fallback}` uses `fallback` when it is unset or empty; `$$` is a
//! literal `$`. A `$` followed by anything else is kept as it is, so values
//! such as passwords rarely need escaping.

use std::collections::HashMap;

/// Where `${VAR}` values come from. Tests pass a map instead of touching the
/// process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a reference cannot be resolved. Positions are characters into the
/// value, counted from 1; the value itself is not part of the error, since it
/// may hold a secret (the caller shows it masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InterpolationError {
    /// A `${` with no `}` after it.
    Unterminated { at: usize },
    /// `${...}` whose name is not a variable name.
    InvalidReference { at: usize },
    /// `${NAME}` with `NAME` unset and no fallback.
    Unset(String),
}

impl InterpolationError {
    /// Whether the message needs the (masked) value beside it to be found.
    pub(super) fn points_into_value(&self) -> bool {
        !matches!(self, InterpolationError::Unset(_))
    }
}

impl std::fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolationError::Unterminated { at } => {
                write!(f, "unterminated `${{` at character {at}")
            }
            InterpolationError::InvalidReference { at } => {
                write!(f, "invalid variable reference at character {at}")
            }
            InterpolationError::Unset(name) => write!(f, "environment variable {name} is not set"),
        }
    }
}

/// Replace every reference in `input`. On failure, every unresolvable reference
/// is named.
pub(super) fn interpolate(input: &str, env: &dyn Env) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    let position =
        |rest: &str, at: usize| input[..input.len() - rest.len() + at].chars().count() + 1;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                errors.push(InterpolationError::Unterminated {
                    at: position(rest, at),
                });
                return Err(errors);
            };
            let reference = &body[..end];
            let (name, fallback) = match reference.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (reference, None),
            };
            if !is_var_name(name) {
                errors.push(InterpolationError::InvalidReference {
                    at: position(rest, at),
                });
            } else {
                match (env.var(name), fallback) {
                    (Some(value), Some(fallback)) if value.is_empty() => out.push_str(fallback),
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(fallback)) => out.push_str(fallback),
                    (None, None) => errors.push(InterpolationError::Unset(name.to_owned())),
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("USER", "app"), ("EMPTY", ""), ("PASS", "s3cr$t")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn references_are_replaced() {
        assert_eq!(
            interpolate("postgres://${USER}:${PASS}@db/app", &env()).unwrap(),
            "postgres://app:s3cr$t@db/app"
        );
    }

    #[test]
    fn fallbacks_apply_when_unset_or_empty() {
        assert_eq!(interpolate("${NOPE:-x}", &env()).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-y}", &env()).unwrap(), "y");
        assert_eq!(interpolate("${USER:-y}", &env()).unwrap(), "app");
        assert_eq!(interpolate("${NOPE:-}", &env()).unwrap(), "");
    }

    #[test]
    fn dollars_are_escaped_or_kept() {
        assert_eq!(interpolate("a$$b", &env()).unwrap(), "a$b");
        assert_eq!(interpolate("pa$word $", &env()).unwrap(), "pa$word $");
    }

    #[test]
    fn every_unset_variable_is_named() {
        let errors: Vec<String> = interpolate("${A}/${USER}/${B}", &env())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "environment variable A is not set",
                "environment variable B is not set"
            ]
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(
            interpolate("pé${USER", &env()).unwrap_err(),
            [InterpolationError::Unterminated { at: 3 }]
        );
        assert_eq!(
            interpolate("${USER}${1X}", &env()).unwrap_err(),
            [InterpolationError::InvalidReference { at: 8 }]
        );
    }
}
