//! Request routing, standalone and in proxy mode, on any method and path: a
//! probe is answered only for GET on a configured path (or `/readyz/NAME` of
//! a configured probe), and in proxy mode everything else is the
//! application's.
#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use probehost::server::{Route, Routes};

fn routes() -> &'static [(Routes, bool); 2] {
    static ROUTES: OnceLock<[(Routes, bool); 2]> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let build = |extra: &str| {
            let text = format!(
                "[server]\n{extra}\n[databases.default]\nurl = \"sqlite::memory:\"\n\
                 [probes.database]\ncomponent = \"builtin:database\"\n\
                 [probes.\"cache-probe.v2\"]\ncomponent = \"builtin:database\"\n"
            );
            let config = probehost::config::parse(&text, Path::new("f.toml"), &HashMap::new())
                .expect("a valid config");
            let names = config.probes.iter().map(|p| p.name.clone()).collect();
            Routes::new(&config.server, names)
        };
        [
            (build(""), false),
            (build("upstream = \"http://127.0.0.1:8000\""), true),
        ]
    })
}

fuzz_target!(|input: (&[u8], &str)| {
    let (method, path) = input;
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    for (routes, proxy) in routes() {
        let route = routes.route(&method, path);
        let probe_path = ["/readyz", "/healthz", "/livez", "/startupz", "/metrics"].contains(&path)
            || path.starts_with("/readyz/");
        if !probe_path {
            let expected = if *proxy {
                Route::Upstream
            } else {
                Route::NotFound
            };
            assert_eq!(route, expected, "{method} {path:?}");
        }
        if method != Method::GET && *proxy {
            assert_eq!(route, Route::Upstream, "{method} {path:?}");
        }
        if let Route::UnknownProbe(name) = &route {
            assert!(!*proxy && !name.is_empty() && !name.contains('/'));
        }
    }
});
