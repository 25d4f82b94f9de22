//! A plain WASI command: it exports `wasi:cli/run`, not the probe world.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(0);
}
