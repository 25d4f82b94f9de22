//! The resolved configuration as TOML, for `probehost config check`, with
//! secrets masked: passwords in database URLs, and probe settings whose names
//! suggest a secret.

use std::time::Duration;

use toml_edit::{Array, DocumentMut, Item, Table, value};

use super::{Config, Detail, PasswordValidator};
use crate::readiness::format_size;

use super::secrets::{MASK, is_secret_key, mask_text, mask_url};

pub(super) fn render(config: &Config) -> String {
    let mut doc = DocumentMut::new();

    let mut server = Table::new();
    server["listen"] = value(config.server.listen.to_string());
    if let Some(socket) = &config.server.socket {
        server["socket"] = value(socket.display().to_string());
    }
    server["ready_paths"] = value(strings(&config.server.ready_paths));
    server["health_paths"] = value(strings(&config.server.health_paths));
    let s = &config.server;
    server["startup_paths"] = value(strings(&s.startup_paths));
    server["metrics_path"] = value(s.metrics_path.as_deref().unwrap_or(""));
    if let Some(upstream) = &s.upstream {
        server["upstream"] = value(upstream.as_str());
        server["upstream_timeout"] = value(duration(s.upstream_timeout));
    }
    server["drain"] = value(duration(s.drain));
    server["grace"] = value(duration(s.grace));
    server["header_read_timeout"] = value(duration(s.header_read_timeout));
    server["send_timeout"] = value(duration(s.send_timeout));
    server["max_connections"] = value(i64::try_from(s.max_connections).unwrap_or(i64::MAX));
    server["threads"] = value(i64::try_from(s.threads).unwrap_or(i64::MAX));
    match s.verbose {
        Detail::Everywhere => server["verbose"] = value(true),
        Detail::Nowhere => server["verbose"] = value(false),
        // Unset: the proxy-mode default, which no value writes.
        Detail::Local => {}
    }
    server["liveness_upstream"] = value(s.liveness_upstream);
    server["readiness_upstream"] = value(s.readiness_upstream);
    doc["server"] = Item::Table(server);

    let mut readiness = Table::new();
    readiness["timeout"] = value(duration(config.readiness.timeout));
    if let Some(ttl) = config.readiness.cache_ttl {
        readiness["cache_ttl"] = value(duration(ttl));
    }
    if let Some(interval) = config.readiness.interval {
        readiness["interval"] = value(duration(interval));
    }

    doc["readiness"] = Item::Table(readiness);

    let mut databases = Table::new();
    databases.set_implicit(true);
    for db in &config.databases {
        let mut t = Table::new();
        t["url"] = value(mask_url(&db.url));
        t["connect_timeout"] = value(duration(db.connect_timeout));
        t["query_timeout"] = value(duration(db.query_timeout));
        t["require"] = value(if db.require_primary { "primary" } else { "any" });
        databases[&db.name] = Item::Table(t);
    }
    doc["databases"] = Item::Table(databases);

    let mut caches = Table::new();
    caches.set_implicit(true);
    for cache in &config.caches {
        let mut t = Table::new();
        t["servers"] = value(strings(&cache.servers));
        t["timeout"] = value(duration(cache.timeout));
        caches[&cache.name] = Item::Table(t);
    }
    doc["caches"] = Item::Table(caches);

    let mut probes = Table::new();
    probes.set_implicit(true);
    for probe in &config.probes {
        let mut t = Table::new();
        t["component"] = value(probe.component.to_string());
        t["gate"] = value(probe.gate.name());
        t["databases"] = value(strings(&probe.databases));
        t["caches"] = value(strings(&probe.caches));
        if !probe.network.is_empty() {
            let network: Vec<String> = probe.network.iter().map(ToString::to_string).collect();
            t["network"] = value(strings(&network));
        }
        if !probe.http.is_empty() {
            let http: Vec<String> = probe.http.iter().map(ToString::to_string).collect();
            t["http"] = value(strings(&http));
        }
        t["timeout"] = value(duration(probe.timeout));
        t["memory"] = value(format_size(probe.memory).replace(' ', ""));
        if !probe.config.is_empty() {
            let mut settings = Table::new();
            for (k, v) in &probe.config {
                // Every value's URL user-info too, whatever its key.
                let shown = if is_secret_key(k) {
                    MASK.to_owned()
                } else {
                    mask_text(v)
                };
                settings[k] = value(shown);
            }
            t["config"] = Item::Table(settings);
        }
        probes[&probe.name] = Item::Table(t);
    }
    doc["probes"] = Item::Table(probes);

    let mut lockedmigrate = Table::new();
    lockedmigrate["lock_id"] = value(config.jobs.lock_id);
    lockedmigrate["command"] = value(strings(&config.jobs.migrate_command));
    let mut ensureadmin = Table::new();
    let admin = &config.jobs.ensureadmin;
    ensureadmin["iterations"] = value(i64::from(admin.iterations));
    let mut names = Vec::new();
    for validator in &admin.validators {
        match validator {
            PasswordValidator::MinimumLength(n) => {
                ensureadmin["min_length"] = value(i64::try_from(*n).unwrap_or(i64::MAX));
                names.push("minimum_length".to_owned());
            }
            PasswordValidator::Common(path) => {
                ensureadmin["common_passwords"] = value(path.display().to_string());
                names.push("common".to_owned());
            }
            PasswordValidator::Numeric => names.push("numeric".to_owned()),
        }
    }
    ensureadmin["validators"] = value(strings(&names));
    let mut jobs = Table::new();
    jobs.set_implicit(true);
    jobs["lockedmigrate"] = Item::Table(lockedmigrate);
    jobs["ensureadmin"] = Item::Table(ensureadmin);
    doc["jobs"] = Item::Table(jobs);

    let mut runtime = Table::new();
    match &config.runtime.cache_dir {
        Some(dir) => runtime["cache_dir"] = value(dir.display().to_string()),
        None => runtime["cache"] = value(false),
    }
    doc["runtime"] = Item::Table(runtime);

    doc.to_string()
}

fn strings(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
