//! The HTTP probe (`plugins/http`, run by the host as in production) on
//! whatever a server answers: ready only for a response whose status is in
//! the accepted range, otherwise a not-ready with a reason, in time; never a
//! crash of the probe or the host. The server is a thread of this process on
//! loopback that answers every request with the fuzz input.
#![no_main]

#[path = "common/loopback.rs"]
mod loopback;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use probehost::plugin::{CheckOutcome, ComponentSource, Grants, Plugin, PluginRuntime, examples};

const TIMEOUT: Duration = Duration::from_millis(300);

struct Fixture {
    reply: loopback::Reply,
    plugins: [Plugin; 2],
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (address, reply) = loopback::start(serve);
        let origin = format!("http://{address}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let plugin_runtime = PluginRuntime::new(None).unwrap();
        let plugin = |contains: Option<&str>| {
            let _guard = runtime.enter();
            let loaded = plugin_runtime
                .load(&ComponentSource::File(PathBuf::from(examples::HTTP_PROBE)))
                .unwrap();
            let mut config = vec![
                ("url".to_owned(), format!("{origin}/healthz")),
                ("timeout".to_owned(), "200ms".to_owned()),
            ];
            if let Some(text) = contains {
                config.push(("contains".to_owned(), text.to_owned()));
            }
            let grants = Grants {
                databases: Vec::new(),
                caches: Vec::new(),
                network: Arc::from([]),
                http: Arc::from([origin.parse().unwrap()]),
                config,
                secrets: Arc::from([]),
            };
            Plugin::new("http", loaded, grants, TIMEOUT, 16 << 20)
        };
        let plugins = [plugin(None), plugin(Some("ok"))];
        Fixture {
            reply,
            plugins,
            runtime,
        }
    })
}

/// Read the request's head, answer with the fuzz input, close.
fn serve(mut stream: std::net::TcpStream, reply: &Mutex<Vec<u8>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let bytes = reply.lock().unwrap().clone();
    let _ = stream.write_all(&bytes);
}

/// The status of the final response the bytes begin with (after any 1xx
/// interim ones), if they begin with a complete head.
fn final_status(mut bytes: &[u8]) -> Option<u16> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = response.parse(bytes).ok()? else {
            return None;
        };
        let code = response.code?;
        if (100..200).contains(&code) && code != 101 {
            bytes = &bytes[len..];
            continue;
        }
        return Some(code);
    }
}

fuzz_target!(|input: (bool, &[u8])| {
    let (contains, bytes) = input;
    let fixture = fixture();
    *fixture.reply.lock().unwrap() = bytes.to_vec();
    let plugin = &fixture.plugins[usize::from(contains)];
    let started = Instant::now();
    let outcome = fixture
        .runtime
        .block_on(plugin.check(None, started, started + TIMEOUT));
    let elapsed = started.elapsed();
    match &outcome {
        CheckOutcome::Ready => {
            let status = final_status(bytes);
            assert!(
                status.is_some_and(|s| (200..=399).contains(&s)),
                "ready on a response with status {status:?}"
            );
            if contains {
                assert!(bytes.contains(&b'o') && bytes.contains(&b'k'));
            }
        }
        CheckOutcome::NotReady { message, status } => {
            assert!(message.starts_with("http: "), "{message}");
            assert!((400..=599).contains(status));
        }
        CheckOutcome::TimedOut => {}
        other => panic!("the probe did not answer: {other:?}"),
    }
    // The check ends by its deadline (with the host's margin), whatever the
    // server sent.
    assert!(
        elapsed < TIMEOUT + Duration::from_secs(1),
        "took {elapsed:?}"
    );
});
