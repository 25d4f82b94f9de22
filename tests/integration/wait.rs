//! `probehost wait`: one init container for every dependency. A private
//! Redis and memcached, both down at first and started at different times.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::*;

/// memcached (`builtin:memcached`) and Redis (the Redis probe) at these
/// addresses.
fn config(dir: &TestDir, memcached: &PrivateServer, redis: &PrivateServer) -> PathBuf {
    dir.config(&format!(
        "[runtime]\ncache_dir = {:?}\n\n\
         [caches.default]\nservers = [\"{memcached}\"]\ntimeout = \"300ms\"\n\n\
         [probes.memcached]\ncomponent = \"builtin:memcached\"\n\n\
         [probes.redis]\ncomponent = {REDIS_PROBE:?}\nnetwork = [\"{redis}\"]\n\
         config = {{ address = \"{redis}\" }}\n",
        shared_cache_dir(),
        memcached = memcached.address(),
        redis = redis.address(),
    ))
}

fn wait(config: &PathBuf, args: &[&str]) -> std::process::Command {
    let mut command = probehost();
    command.arg("-c").arg(config).arg("wait").args(args);
    command
}

#[test]
fn wait_exits_0_only_once_every_dependency_has_been_stable() {
    let mut memcached = Memcached::start();
    let mut redis = PrivateServer::redis(None);
    memcached.stop();
    redis.stop();
    let dir = TestDir::new();
    let config = config(&dir, &memcached, &redis);

    let mut waiting = Background::spawn(&mut wait(&config, &["-s", "1", "-i", "0.5", "-t", "60"]));
    assert!(
        waiting.wait_for(
            "waiting for memcached: cache: could not connect to cache",
            Duration::from_secs(20)
        ) && waiting.wait_for("waiting for redis: redis:", Duration::from_secs(20)),
        "no progress line names each probe and why"
    );
    memcached.restart();
    assert!(waiting.wait_for("memcached: ok", Duration::from_secs(20)));
    // memcached alone, however long it stays up, is not enough.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(waiting.is_running(), "wait exited with Redis still down");

    redis.restart();
    let redis_up = Instant::now();
    let output = waiting.finish(Duration::from_secs(30));
    assert_eq!(output.code, 0, "{output:?}");
    assert!(output.stderr.contains("redis: ok"), "{output:?}");
    // Redis had to stay up for the stability window (give or take a check).
    assert!(
        redis_up.elapsed() >= Duration::from_millis(900),
        "wait returned {:?} after Redis came up",
        redis_up.elapsed()
    );
    // Backing off: at most a few checks a second while failing, not a busy loop.
    let lines = output.stderr.matches("waiting for").count();
    assert!(lines < 40, "{lines} progress lines:\n{}", output.stderr);
}

#[test]
fn wait_times_out_with_exit_1_naming_every_probe_still_failing() {
    let memcached = Memcached::start();
    let mut redis = PrivateServer::redis(None);
    redis.stop();
    let dir = TestDir::new();
    let config = config(&dir, &memcached, &redis);
    let output = run(&mut wait(&config, &["-s", "0.2", "-i", "0.2", "-t", "1.5"]));
    assert_eq!(output.code, 1, "{output:?}");
    let tail = output
        .stderr
        .split("probehost wait: timed out after")
        .nth(1)
        .unwrap_or_else(|| panic!("no timeout message: {output:?}"));
    assert!(
        tail.contains("still waiting for:\n  redis: redis:"),
        "{output:?}"
    );
    assert!(!tail.contains("memcached"), "memcached passed: {output:?}");

    // Named probes only: memcached alone is ready.
    let output = run(&mut wait(&config, &["memcached", "-s", "0.2", "-t", "10"]));
    assert_eq!(output.code, 0, "{output:?}");
}

#[test]
fn wait_for_an_unknown_probe_is_a_usage_error() {
    let memcached = Memcached::start();
    let redis = PrivateServer::redis(None);
    let dir = TestDir::new();
    let config = config(&dir, &memcached, &redis);
    let output = run(&mut wait(&config, &["redis", "nope"]));
    assert_eq!(output.code, 2, "{output:?}");
    assert!(
        output
            .stderr
            .contains("no probe named \"nope\" is configured (configured: memcached, redis)"),
        "{output:?}"
    );
    assert!(output.stderr.contains("Usage:"), "{output:?}");
}
