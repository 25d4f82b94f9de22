//! Host bindings of the `probehost:probe` WIT package (`wit/`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "probehost:probe/probe@0.1.0",
    imports: {
        "probehost:probe/sql.query": async,
        "probehost:probe/memcached.stats": async,
    },
    exports: { default: async },
});
