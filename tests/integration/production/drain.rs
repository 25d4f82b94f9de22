//! Graceful drain: on SIGTERM readiness fails at once, liveness holds, nothing
//! in flight is lost, and the process exits 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{config, test_probe};
use crate::harness::*;

#[test]
fn sigterm_under_load_drains_without_failing_a_request() {
    let app = Upstream::start();
    let dir = TestDir::new();
    let config = config(
        &dir,
        &format!("upstream = {:?}\ndrain = \"3s\"\ngrace = \"5s\"", app.url()),
        &test_probe("fine", "action = \"ready\""),
    );
    let server = Server::start(&config);
    let address = server.address;

    // A bounded load: 8 clients for 2.5 s, against probes and the application.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
            thread::spawn(move || {
                let path = ["/livez", "/page", "/page?x=1", "/healthz"][i % 4];
                while !stop.load(Ordering::Relaxed) {
                    let ok = std::panic::catch_unwind(|| get(address, path).status == 200)
                        .unwrap_or(false);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(server.get("/readyz").status, 200);
    server.signal(rustix::process::Signal::TERM);
    let signalled = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || server.get("/readyz").body
            == "shutting down"),
        "readiness does not fail at once"
    );
    let ready = server.get("/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (503, "shutting down"));

    assert_eq!(server.get("/livez").status, 200);
    // A request in flight when the listener closes still completes.
    let in_flight = thread::spawn(move || get(address, "/slow?ms=2500"));
    thread::sleep(Duration::from_millis(2000));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} requests",
        done.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 100, "the load ran");
    let slow = in_flight.join().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, "slow"));
    let status = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(3000),
        "exited before the drain ended"
    );
}
