//! The memcached probe's `stats` request on whatever a server answers: stats
//! only from `STAT` lines of a complete reply, or an error that says what
//! went wrong; never a panic, never a hang. The server is a thread of this
//! process on loopback that answers `stats` with the fuzz input.
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

/// `version` is answered (the client's pool checks connections with it);
/// `stats` gets the fuzz input, then the connection closes.
fn serve(stream: std::net::TcpStream, reply: &Mutex<Vec<u8>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.starts_with("version") {
            let _ = writer.write_all(b"VERSION 1.6.21\r\n");
        } else if line.starts_with("stats") {
            let bytes = reply.lock().unwrap().clone();
            let _ = writer.write_all(&bytes);
            return;
        } else {
            return;
        }
        line.clear();
    }
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
    match answer {
        Ok(stats) => {
            // Every stat is a `STAT name value` line of the reply.
            let text = String::from_utf8_lossy(bytes);
            for (name, value) in &stats {
                let line = format!("STAT {name} {value}");
                assert!(
                    text.lines()
                        .any(|l| l.trim_end_matches('\r').starts_with(&line)),
                    "{line:?} is not in the reply"
                );
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
