//! A readiness probe for an HTTP dependency: ready while a URL answers with an
//! expected status (and, optionally, a body containing a given text).
//!
//! ```toml
//! [probes.payments]
//! component = "probehost_plugin_http.wasm"
//! http = ["http://payments.default.svc:8080"]
//! config = { url = "http://payments.default.svc:8080/healthz", status = "200-299", contains = "ok" }
//! ```
//!
//! Settings:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | (required) | what to request; its origin must be in `http` |
//! | `method` | `GET` | request method |
//! | `status` | `200-399` | accepted statuses: `200`, `200-299` or `2xx`, comma-separated |
//! | `contains` | | text the body must contain (first 64 KiB) |
//! | `timeout` | `500ms` | to connect, and for each read |
//!
//! Answers name what went wrong, e.g. `http: status 500 from
//! http://payments.default.svc:8080/healthz (expected 200-299)`.
//!
//! Redirects are not followed: a `3xx` is an answer like any other (ready in
//! the default range, as for Kubernetes' `httpGet`), so a granted origin can
//! never send the probe to one outside its grant.
#![forbid(unsafe_code)]

use std::time::Duration;

use probehost_sdk::{NotReady, Probe, Request, config, http, log};

const DEFAULT_STATUS: &str = "200-399";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

struct HttpProbe;

impl Probe for HttpProbe {
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
        let settings = Settings::from_config().map_err(|e| {
            log::error(&format!("http probe misconfigured: {e}"));
            NotReady::new(format!("http: {e}"))
        })?;
        let response = http::Request::new(&settings.method, &settings.url)
            .timeout(settings.timeout)
            .send()
            .map_err(|e| {
                log::error(&format!("{} {}: {e}", settings.method, settings.url));
                NotReady::new(format!("http: {} {}: {e}", settings.method, settings.url))
            })?;
        if !settings.status.accepts(response.status) {
            return Err(NotReady::new(format!(
                "http: status {} from {} (expected {})",
                response.status, settings.url, settings.status_text
            )));
        }
        if let Some(text) = &settings.contains
            && !response.text().contains(text.as_str())
        {
            return Err(NotReady::new(format!(
                "http: the answer of {} does not contain {text:?}",
                settings.url
            )));
        }
        Ok(())
    }
}

probehost_sdk::export_probe!(HttpProbe);

struct Settings {
    url: String,
    method: String,
    status: StatusSet,
    status_text: String,
    contains: Option<String>,
    timeout: Duration,
}

impl Settings {
    fn from_config() -> Result<Settings, String> {
        let nonempty = |key: &str| config::get(key).filter(|v| !v.trim().is_empty());
        let url = nonempty("url").ok_or("`url` is not configured")?;
        let status_text = nonempty("status").unwrap_or_else(|| DEFAULT_STATUS.to_owned());
        let status = StatusSet::parse(&status_text)?;
        let timeout = config::duration("timeout", DEFAULT_TIMEOUT)?;
        Ok(Settings {
            url,
            method: nonempty("method").unwrap_or_else(|| "GET".to_owned()),
            status,
            status_text,
            contains: nonempty("contains"),
            timeout,
        })
    }
}

/// Accepted status codes, as inclusive ranges.
#[derive(Debug, PartialEq, Eq)]
struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    fn parse(text: &str) -> Result<StatusSet, String> {
        let bad = |part: &str| {
            format!(
                "status {part:?} is not a status, a range such as 200-299, or a class such as 2xx"
            )
        };
        let code = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let range = if let Some(class) = part.strip_suffix("xx").or(part.strip_suffix("XX")) {
                let d: u16 = class
                    .parse()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .ok_or_else(|| bad(part))?;
                (d * 100, d * 100 + 99)
            } else if let Some((lo, hi)) = part.split_once('-') {
                match (code(lo), code(hi)) {
                    (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                    _ => return Err(bad(part)),
                }
            } else {
                let c = code(part).ok_or_else(|| bad(part))?;
                (c, c)
            };
            ranges.push(range);
        }
        Ok(StatusSet(ranges))
    }

    fn accepts(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_read_codes_ranges_and_classes() {
        let set = StatusSet::parse("200-299, 304,4xx").unwrap();
        assert!(set.accepts(200) && set.accepts(299) && set.accepts(304) && set.accepts(404));
        assert!(!set.accepts(301) && !set.accepts(500));
        assert_eq!(
            StatusSet::parse("2xx").unwrap(),
            StatusSet(vec![(200, 299)])
        );
        for bad in ["", "abc", "299-200", "6xx", "99", "200-", "1000"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad}");
        }
    }
}
