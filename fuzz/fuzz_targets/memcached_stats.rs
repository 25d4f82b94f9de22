//! The memcached probe's `stats` request on whatever a server answers: the
//! stats of a whole reply (`STAT` lines, then `END`), exactly those of a
//! reference reading of the same bytes, or an error that says what went
//! wrong; never a panic, never a hang. The server is a thread of this process
//! on loopback that answers `stats` with the fuzz input.
#![no_main]

#[path = "common/loopback.rs"]
mod loopback;

use std::io::{BufRead, BufReader, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use probehost::memcached::Cache;

struct Fixture {
    reply: loopback::Reply,
    address: String,
    cache: Cache,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (address, reply) = loopback::start(serve);
        let address = address.to_string();
        let cache = Cache::new(
            "default",
            std::slice::from_ref(&address),
            Duration::from_millis(500),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Fixture {
            reply,
            address,
            cache,
            runtime,
        }
    })
}

/// Answer the request line with the fuzz input, then close.
fn serve(stream: std::net::TcpStream, reply: &Mutex<Vec<u8>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut writer = stream.try_clone().unwrap();
    let mut line = String::new();
    if BufReader::new(stream)
        .read_line(&mut line)
        .is_ok_and(|n| n > 0)
    {
        let bytes = reply.lock().unwrap().clone();
        let _ = writer.write_all(&bytes);
    }
}

/// What a whole reply in `bytes` holds: its stats, sorted, or `None` if the
/// bytes are not one.
fn reference(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let mut stats = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        if line == "END" {
            stats.sort();
            return Some(stats);
        }
        let (name, value) = line.strip_prefix("STAT ")?.split_once(' ')?;
        if name.is_empty() {
            return None;
        }
        stats.push((name.to_owned(), value.to_owned()));
    }
    None
}

fuzz_target!(|bytes: &[u8]| {
    let fixture = fixture();
    *fixture.reply.lock().unwrap() = bytes.to_vec();
    let answer = fixture
        .runtime
        .block_on(
            fixture
                .cache
                .stats(&fixture.address, Duration::from_secs(1)),
        )
        .expect("the fixture's server is the cache's");
    match (answer, reference(bytes)) {
        (Ok(stats), Some(expected)) => assert_eq!(stats, expected),
        (Err(e), None) => assert!(!e.to_string().is_empty()),
        (answer, expected) => panic!("answered {answer:?} to a reply that reads as {expected:?}"),
    }
});
