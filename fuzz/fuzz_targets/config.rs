//! The config file: TOML, then validation and `${VAR}` interpolation. Any
//! input is a config or a list of problems, never a panic; a config that
//! parses renders (as `config check` prints it).
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let env: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://u:secret@db:5432/app"),
        ("EMPTY", ""),
        ("PORT", "8080"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    match probehost::config::parse(text, Path::new("fuzz.toml"), &env) {
        Ok(config) => {
            let _ = config.render();
        }
        Err(e) => assert!(!e.problems.is_empty(), "an error with no problem in it"),
    }
});
