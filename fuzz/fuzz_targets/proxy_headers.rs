//! Proxy mode's rewriting of a request for the application, on any headers,
//! path and client address: hop-by-hop headers and those `Connection` names
//! never reach the application (but an accepted upgrade's), the client is
//! always the last hop of `X-Forwarded-For` and `Forwarded`, and every other
//! header arrives as it was sent.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use probehost::proxy::{Peer, Upstream, wants_upgrade};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Headers the rewrite sets or extends itself.
const OURS: [&str; 4] = ["host", "x-forwarded-for", "forwarded", "x-forwarded-proto"];

fuzz_target!(|input: (bool, bool, [u8; 16], &str, Vec<(&[u8], &[u8])>)| {
    let (v6, http2, address, target, fields) = input;
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(address))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        ))
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };
    let mut request = Request::new(());
    *request.uri_mut() = uri.clone();
    *request.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    for (name, value) in fields {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            request.headers_mut().append(name, value);
        }
    }
    let sent = request.headers().clone();
    let upgrade = wants_upgrade(&sent);
    let upstream = Upstream::new(
        &"http://127.0.0.1:8000".parse().unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    let out = upstream.rewrite(request, &Peer::new(SocketAddr::new(ip, 4321)), upgrade);
    let headers = out.headers();

    assert_eq!(out.version(), Version::HTTP_11);
    assert!(out.uri().scheme().is_none() && out.uri().authority().is_none());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    assert_eq!(out.uri().path_and_query().unwrap().as_str(), path);
    assert!(headers.contains_key(header::HOST), "no Host");

    // Nothing hop-by-hop, nor anything the client's `Connection` names,
    // reaches the application; an upgrade keeps exactly its own two.
    let named: Vec<HeaderName> = sent
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .map(|n| HeaderName::from_static(n))
        .chain(named.clone())
    {
        if OURS.contains(&name.as_str()) {
            continue;
        }
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        assert!(
            !headers.contains_key(&name),
            "{name} reached the application"
        );
    }
    if upgrade {
        assert_eq!(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .collect::<Vec<_>>(),
            ["upgrade"]
        );
        assert_eq!(headers.get(header::UPGRADE), sent.get(header::UPGRADE));
    }

    // The client is the last hop, after every hop an outer proxy named.
    let canonical = ip.to_canonical();
    let node = match canonical {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    for (name, ours) in [
        ("x-forwarded-for", canonical.to_string()),
        ("forwarded", format!("for={node};proto=http")),
    ] {
        let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        let kept = !named.iter().any(|n| n == name);
        let mut expected: Vec<u8> = Vec::new();
        if kept {
            for earlier in sent.get_all(name) {
                expected.extend_from_slice(earlier.as_bytes());
                expected.extend_from_slice(b", ");
            }
        }
        expected.extend_from_slice(ours.as_bytes());
        assert_eq!(values[0], &expected[..], "{name}");
    }
    assert!(headers.contains_key("x-forwarded-proto"));

    // Everything else arrives as it was sent.
    for name in sent.keys() {
        let rewritten = OURS.contains(&name.as_str())
            || HOP_BY_HOP.contains(&name.as_str())
            || named.contains(name)
            || (http2 && name == header::COOKIE);
        if !rewritten {
            let before: Vec<_> = sent.get_all(name).iter().collect();
            let after: Vec<_> = headers.get_all(name).iter().collect();
            assert_eq!(before, after, "{name}");
        }
    }
    if http2 && sent.contains_key(header::COOKIE) && !named.contains(&header::COOKIE) {
        let joined = sent
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect::<Vec<_>>()
            .join(&b"; "[..]);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE].as_bytes(), &joined[..]);
    }
});
