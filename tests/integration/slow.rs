//! Slow is not down: dependencies whose every reply is held back, but well
//! within the deadline, are ready, from a cold start and after their
//! connections were cut, for the database, memcached and Redis probes alike.

use std::time::Duration;

use crate::harness::*;

#[test]
fn dependencies_slow_within_the_deadline_are_ready() {
    require(Service::Postgres);
    let memcached = PrivateServer::start();
    let redis = PrivateServer::redis(None);
    let proxies = [
        FaultProxy::start(Service::Postgres.address(), Mode::Slow),
        FaultProxy::start(memcached.address(), Mode::Slow),
        FaultProxy::start(redis.address(), Mode::Slow),
    ];
    for proxy in &proxies {
        proxy.set_delay(Duration::from_millis(30));
    }
    let [db, mc, rd] = [0, 1, 2].map(|i| proxies[i].address());
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[readiness]\ntimeout = \"1s\"\n\
         [databases.default]\nurl = {:?}\nconnect_timeout = \"800ms\"\n\
         [caches.default]\nservers = [\"{mc}\"]\ntimeout = \"300ms\"\n\
         [probes.database]\ncomponent = \"builtin:database\"\n\
         [probes.cache]\ncomponent = \"builtin:memcached\"\n\
         [probes.redis]\ncomponent = {REDIS_PROBE:?}\nnetwork = [\"{rd}\"]\n\
         config = {{ address = \"{rd}\", timeout = \"300ms\" }}\n",
        server_section(),
        postgres_url(db),
    ));
    let server = Server::start(&config);
    let all_ok = "[+]database ok\n[+]cache ok\n[+]redis ok\nreadiness check passed\n";
    assert_eq!(server.get("/readyz?verbose").body, all_ok, "cold start");

    // Down, then back but slow: every connection is new again.
    for proxy in &proxies {
        proxy.set_mode(Mode::Refuse);
        proxy.cut();
    }
    // Verbose, so the answer waits for every check of this evaluation: a
    // plain 503 comes with the first failure, and the next request would
    // join the checks still in flight (and, by design, their results).
    let down = server.get("/readyz?verbose");
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(
        down.body.lines().filter(|l| l.starts_with("[-]")).count(),
        3,
        "every dependency is down:\n{}",
        down.body
    );
    for proxy in &proxies {
        proxy.set_mode(Mode::Slow);
    }
    for round in 0..20 {
        let answer = server.get("/readyz?verbose");
        assert_eq!(answer.body, all_ok, "round {round} after the cut");
        assert!(
            answer.elapsed < Duration::from_secs(1),
            "{:?}",
            answer.elapsed
        );
    }
}
