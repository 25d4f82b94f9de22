//! Raw bindings generated from `wit/` by wit-bindgen. Not part of the public API:
//! probe crates use the safe wrappers of this crate and [`export_probe!`](crate::export_probe).
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unsafe_code,
    clippy::all
)]

wit_bindgen::generate!({
    path: "../wit",
    world: "probehost:probe/probe@0.1.0",
    pub_export_macro: true,
    export_macro_name: "__export_probe_world",
    default_bindings_module: "probehost_sdk::__bindings",
});
