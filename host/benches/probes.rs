//! Speed and memory of probehost against baselines measured in the same run.
//!
//! `cargo bench -p probehost --bench probes` (release build). Every measurement
//! prints the probehost figure, its baseline and their ratio; the targets are
//! printed beside them, not asserted (these machines are shared and noisy).
//!
//! | measurement | baseline |
//! |---|---|
//! | `/livez` throughput, 32 keep-alive connections, 3 alternating rounds of 3 s | a minimal hyper server (same runtime, same load) |
//! | `/readyz` latency, one connection, database + memcached probes | `SELECT 1` + `stats` straight to the services |
//! | instantiate + call of a probe component (`PROBEHOST_BENCH=check`) | the same call with no component (spawn on the guest runtime only) |
//! | `probe --live` wall time | `/bin/true` |
//! | `probe --ready` wall time, PostgreSQL + memcached | `probe --live` |
//! | resident memory of `serve` after the load | the minimal hyper server after the same load |
//! | proxy mode: p50 latency at one connection | the same request straight to the application |
//! | proxy mode: throughput, 32 connections | nginx as a reverse proxy to the same application (if installed) |
//! | `probe --ready` answered by a running `serve` | `probe --live` |
//! | Redis probe check, Rust and Python (fresh instance, connect, PING) | the same connect and PING done by the host |
//! | start to first ready answer, Redis probe, Rust and Python | the same after `probehost precompile` |
//! | `/livez` throughput (16 connections) and fresh-connection p99 with 1,000 stalled readers | the same server without them |
//! | resident memory 30 s after 1,100 connections x 100 stuck HTTP/2 streams close (and at the peak) | the same server before them |
//! | `/readyz` p50 with the database's port closed (`PROBEHOST_BENCH=refused`) | the same with PostgreSQL up |
//! | proxy mode: `/livez` and `/readyz` p50 and p99 with 200 slow requests in flight and both gunicorn workers busy (`PROBEHOST_BENCH=busy`) | the same with the application idle |
//! | resident memory (`PROBEHOST_BENCH=memory`), anonymous and file-backed, after start-up, the `/livez` load and 300 `/readyz`, starting with an empty component cache and with a filled one | the minimal hyper server after the same load |
//! | the readiness hot path (`PROBEHOST_BENCH=hotpath`): `/readyz` p50 at one keep-alive connection and on a new connection per request (as the kubelet asks), database probe alone and with memcached; `probe --ready` answered by a running server; CPU time (user + sys) per `probe --live` and `probe --ready`, also of the static release binary when `dist/` holds it | the same dependency calls made directly; the HTTP round trip (`/livez`) and two thread hand-overs, on two CPUs and where the scheduler puts them; `probe --live`; CPU time of `true` |
//!
//! Needs PostgreSQL (127.0.0.1:5432), memcached (127.0.0.1:11211), Redis
//! (127.0.0.1:6379) and componentize-py in `.venv` (`scripts/setup.sh`); traffic
//! stays on loopback and every loop is bounded in count and time.

// A benchmark reports on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROBEHOST: &str = env!("CARGO_BIN_EXE_probehost");
const TEST_PROBE: &str = env!("PROBEHOST_TEST_PROBE");
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const MEMCACHED: &str = "127.0.0.1:11211";
const REDIS: &str = "127.0.0.1:6379";
const REDIS_PROBE: &str = env!("PROBEHOST_PLUGIN_REDIS");

const LOAD_CONNECTIONS: usize = 32;
const LOAD_DURATION: Duration = Duration::from_secs(3);
/// Load rounds per server, alternating between them so drift in the machine's
/// load affects both alike; the median round counts.
const LOAD_ROUNDS: usize = 3;
const LATENCY_SAMPLES: usize = 300;
const PROCESS_SAMPLES: usize = 40;
/// Stuck HTTP/2 connections: more than the default `max_connections` and
/// probe reserve admit.
const H2_CONNECTIONS: usize = 1_100;
/// Streams each of them opens (the server allows one at a time).
const H2_STREAMS: u32 = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; the baseline server is this binary re-run.
    if args.iter().any(|a| a == "--baseline-server") {
        baseline_server();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probehost.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[runtime]\ncache_dir = {:?}\n\
             [databases.default]\nurl = {POSTGRES:?}\n[caches.default]\nservers = [{MEMCACHED:?}]\n",
            dir.path().join("cache").display().to_string()
        ),
    )
    .unwrap();

    println!("probehost benchmarks (targets in brackets; ratios are probehost / baseline)\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // `PROBEHOST_BENCH=stalled` or `=h2` runs only that section.
    match std::env::var("PROBEHOST_BENCH").as_deref() {
        Ok("stalled") => return stalled_readers(&rt, &dir),
        Ok("h2") => return stuck_http2_streams(&rt, &dir),
        Ok("refused") => return refused_readyz(&rt, &dir),
        Ok("busy") => return busy_application(&rt, &dir),
        Ok("hotpath") => return hot_path(&rt, &dir),
        Ok("memory") => return memory(&rt, &config),
        Ok("check") => return check_only(&rt),
        _ => {}
    }

    // Throughput of /livez, and memory after the load.
    let mut baseline =
        spawn_listening(Command::new(std::env::current_exe().unwrap()).arg("--baseline-server"));
    let mut server = spawn_listening(
        Command::new(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .arg("serve"),
    );
    let (mut base_rounds, mut probe_rounds) = (Vec::new(), Vec::new());
    for _ in 0..LOAD_ROUNDS {
        base_rounds.push(rt.block_on(load(baseline.address, "/livez")));
        probe_rounds.push(rt.block_on(load(server.address, "/livez")));
    }
    let (base_rps, probe_rps) = (median_f64(base_rounds), median_f64(probe_rounds));
    report(
        "/livez throughput",
        probe_rps,
        base_rps,
        "req/s",
        "[ratio >= 0.90]",
    );
    let base_rss = rss_kib(&baseline.child);
    let probe_rss = rss_kib(&server.child);
    report(
        "serve resident memory after load",
        probe_rss as f64 / 1024.0,
        base_rss as f64 / 1024.0,
        "MiB",
        "[< 30 MiB]",
    );
    baseline.stop();

    // /readyz at one connection, against the dependencies themselves.
    let readyz = rt.block_on(latencies(server.address, "/readyz"));
    let deps = rt.block_on(dependency_latencies());
    report(
        "/readyz p50 latency (database + memcached)",
        micros(readyz),
        micros(deps),
        "µs",
        "[dominated by the dependencies]",
    );
    println!(
        "    → probehost's own share: {:.0} µs per readiness request",
        micros(readyz) - micros(deps)
    );
    server.stop();

    refused_readyz(&rt, &dir);
    busy_application(&rt, &dir);

    // /livez with 1,000 clients that never read their answers holding
    // connections, against the same server without them.
    stalled_readers(&rt, &dir);
    stuck_http2_streams(&rt, &dir);

    check_only(&rt);

    // Exec probes.
    let true_wall = median_wall(&mut Command::new("true"));
    let live_wall = median_wall(Command::new(PROBEHOST).args(["probe", "--live"]));
    report(
        "probe --live wall (p50)",
        ms(live_wall),
        ms(true_wall),
        "ms",
        "[< 10 ms]",
    );
    // Warm the compiled-component cache once, then measure.
    let warm = Command::new(PROBEHOST)
        .arg("--config")
        .arg(&config)
        .args(["probe", "--ready"])
        .output()
        .unwrap();
    assert!(
        warm.status.success(),
        "probe --ready is not ready: {}",
        String::from_utf8_lossy(&warm.stdout)
    );
    let ready_wall = median_wall(
        Command::new(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .args(["probe", "--ready"]),
    );
    report(
        "probe --ready wall (p50, PostgreSQL + memcached)",
        ms(ready_wall),
        ms(live_wall),
        "ms",
        "[< 50 ms]",
    );

    proxy_mode(&rt, dir.path(), live_wall);
    user_probes(&rt, dir.path());
}

/// The Redis probe in Rust and in Python: a check (fresh instance, connect,
/// PING) beside the same round trip done by the host directly, and the time
/// from start to the first ready answer without and with `precompile`.
fn user_probes(rt: &tokio::runtime::Runtime, dir: &Path) {
    let python = dir.join("redis_probe.wasm");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = Command::new(root.join("scripts/build-python-probe.sh"))
        .arg(root.join("guest-sdk/python/examples"))
        .arg("redis_probe")
        .arg(&python)
        .output()
        .expect("running scripts/build-python-probe.sh");
    assert!(
        built.status.success(),
        "building the Python Redis probe: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let python = python.display().to_string();
    let direct = rt.block_on(redis_round_trips());
    for (name, component) in [("Rust", REDIS_PROBE), ("Python", python.as_str())] {
        let check = rt.block_on(redis_probe_checks(component));
        report(
            &format!("{name} Redis probe check p50 (fresh instance + connect + PING)"),
            micros(check),
            micros(direct),
            "µs",
            "",
        );
        println!(
            "    → beyond the Redis round trip itself: {:.0} µs",
            micros(check) - micros(direct)
        );
    }
    for (name, component) in [("Rust", REDIS_PROBE), ("Python", python.as_str())] {
        let cold = first_ready(dir, component, false);
        let warm = first_ready(dir, component, true);
        report(
            &format!("{name} Redis probe: start to first ready answer, no precompile"),
            ms(cold),
            ms(warm),
            "ms",
            "[baseline: after `precompile`]",
        );
    }
}

/// A fresh connection, `PING`, `+PONG`: what the probe does, done by the host.
async fn redis_round_trips() -> Duration {
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES + 20 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(REDIS).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
        if i >= 20 {
            samples.push(started.elapsed());
        }
    }
    median(samples)
}

async fn redis_probe_checks(component: &str) -> Duration {
    use probehost::plugin::{CheckOutcome, ComponentSource, Grants, Plugin, PluginRuntime};
    let runtime = PluginRuntime::new(None).unwrap();
    let loaded = runtime
        .load(&ComponentSource::File(component.into()))
        .unwrap();
    let grants = Grants {
        network: vec![REDIS.parse().unwrap()].into(),
        config: vec![("address".into(), REDIS.into())],
        ..Grants::default()
    };
    let plugin = Arc::new(Plugin::new(
        "redis",
        loaded,
        grants,
        Duration::from_secs(2),
        64 << 20,
    ));
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES + 20 {
        let p = plugin.clone();
        let started = Instant::now();
        let outcome = tokio::spawn(async move {
            let now = Instant::now();
            p.check(None, now, now + Duration::from_secs(2)).await
        })
        .await
        .unwrap();
        assert_eq!(outcome, CheckOutcome::Ready);
        if i >= 20 {
            samples.push(started.elapsed());
        }
    }
    median(samples)
}

/// From starting `serve` (with an empty compiled-component cache, filled by
/// `precompile` first when asked) to the first `200` from `/readyz`.
fn first_ready(dir: &Path, component: &str, precompile: bool) -> Duration {
    let run = dir.join(format!("first-ready-{}", free_port()));
    let port = free_port();
    let config = run.join("probehost.toml");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[runtime]\ncache_dir = {:?}\n\
             [readiness]\ntimeout = \"5s\"\n[probes.redis]\ncomponent = {component:?}\n\
             network = [{REDIS:?}]\nconfig = {{ address = {REDIS:?} }}\n",
            run.join("cache").display().to_string()
        ),
    )
    .unwrap();
    if precompile {
        let status = Command::new(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .arg("precompile")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let started = Instant::now();
    let mut server = Command::new(PROBEHOST)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = started + Duration::from_secs(120);
    let took = loop {
        if ready_once(address) {
            break started.elapsed();
        }
        assert!(Instant::now() < until, "no ready answer within 120 s");
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = server.kill();
    let _ = server.wait();
    took
}

/// One `GET /readyz`; whether it answered 200.
fn ready_once(address: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

/// Proxy mode against the minimal hyper server as the application: latency
/// added, throughput beside nginx, and the exec probe answered by the server.
fn proxy_mode(rt: &tokio::runtime::Runtime, dir: &Path, live_wall: Duration) {
    let app =
        spawn_listening(Command::new(std::env::current_exe().unwrap()).arg("--baseline-server"));
    let port = free_port();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://{}\"\n[runtime]\ncache_dir = {:?}\n\
             [databases.default]\nurl = \"sqlite://{}\"\n",
            app.address,
            dir.join("cache").display().to_string(),
            dir.join("db.sqlite3").display()
        ),
    )
    .unwrap();
    let server = spawn_listening(
        Command::new(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .arg("serve"),
    );

    let direct = rt.block_on(latencies(app.address, "/page"));
    let proxied = rt.block_on(latencies(server.address, "/page"));
    report(
        "proxy p50 latency, one connection",
        micros(proxied),
        micros(direct),
        "µs",
        "",
    );
    println!(
        "    → added by the proxy: {:.0} µs",
        micros(proxied) - micros(direct)
    );

    match start_nginx(dir, app.address) {
        Some((mut nginx, nginx_address)) => {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..LOAD_ROUNDS {
                theirs.push(rt.block_on(load(nginx_address, "/page")));
                ours.push(rt.block_on(load(server.address, "/page")));
            }
            report(
                "proxy throughput, 32 connections",
                median_f64(ours),
                median_f64(theirs),
                "req/s",
                "[nginx as the baseline: ratio >= 1.0]",
            );
            let _ = nginx.kill();
            let _ = nginx.wait();
        }
        None => println!(
            "proxy throughput: nginx is not installed (apt-get install nginx-light); skipped"
        ),
    }

    let asked = median_wall(
        Command::new(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .args(["probe", "--ready"]),
    );
    report(
        "probe --ready wall (p50) answered by the running server",
        ms(asked),
        ms(live_wall),
        "ms",
        "[< 5 ms]",
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx as a reverse proxy to `upstream` with keep-alive to it, as a
/// production setup would have it; `None` if nginx is not installed.
fn start_nginx(dir: &Path, upstream: SocketAddr) -> Option<(Child, SocketAddr)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 2;\npid {pid};\nerror_log stderr error;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000000;\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n\
             upstream app {{ server {upstream}; keepalive 64; }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
            pid = prefix.join("nginx.pid").display(),
            tmp = prefix.display(),
        ),
    )
    .unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(address).is_err() {
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((child, address))
}

fn report(what: &str, value: f64, baseline: f64, unit: &str, target: &str) {
    println!(
        "{what}: {value:.1} {unit}  baseline {baseline:.1} {unit}  ratio {:.2}  {target}",
        value / baseline
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_f64(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

// ----- processes -----

struct Listening {
    child: Child,
    address: SocketAddr,
}

impl Listening {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start a server that logs `listening address=ADDR` on stderr and wait for it.
fn spawn_listening(command: &mut Command) -> Listening {
    let mut child = command
        .env("PROBEHOST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening address=") {
                let address = line[at + 18..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(address);
                }
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not start");
    Listening { child, address }
}

fn rss_kib(child: &Child) -> u64 {
    status_kib(child, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(child: &Child, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resident memory split as the kernel counts it: anonymous (heap, stacks)
/// and file-backed (the executable's pages), in MiB.
fn rss_split(child: &Child) -> String {
    let mib = |field| status_kib(child, field) as f64 / 1024.0;
    format!(
        "{:.1} MiB (anonymous {:.1}, file {:.1})",
        mib("VmRSS:"),
        mib("RssAnon:"),
        mib("RssFile:")
    )
}

/// `PROBEHOST_BENCH=memory`: resident memory of `serve` with the bundled
/// probes after start-up, after the `/livez` load and after readiness
/// requests, against the minimal hyper server after the same load; first
/// with an empty component cache (start-up compiles the probes), then again
/// with the cache that start filled.
fn memory(rt: &tokio::runtime::Runtime, config: &Path) {
    let mut baseline =
        spawn_listening(Command::new(std::env::current_exe().unwrap()).arg("--baseline-server"));
    for _ in 0..LOAD_ROUNDS {
        rt.block_on(load(baseline.address, "/livez"));
    }
    println!(
        "minimal hyper server after the /livez load: {}",
        rss_split(&baseline.child)
    );
    for start in ["compiling the probes", "probes from the cache"] {
        let mut server = spawn_listening(
            Command::new(PROBEHOST)
                .arg("--config")
                .arg(config)
                .arg("serve"),
        );
        std::thread::sleep(Duration::from_millis(500));
        println!("serve, start-up {start}");
        println!("    after start-up:        {}", rss_split(&server.child));
        for _ in 0..LOAD_ROUNDS {
            rt.block_on(load(server.address, "/livez"));
        }
        println!("    after the /livez load: {}", rss_split(&server.child));
        rt.block_on(latencies(server.address, "/readyz"));
        println!(
            "    after {LATENCY_SAMPLES} /readyz:     {}",
            rss_split(&server.child)
        );
        report(
            &format!("serve resident memory after load, start-up {start}"),
            rss_kib(&server.child) as f64 / 1024.0,
            rss_kib(&baseline.child) as f64 / 1024.0,
            "MiB",
            "[<= 16 MiB]",
        );
        server.stop();
    }
    baseline.stop();
}

fn median_wall(command: &mut Command) -> Duration {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let samples = (0..PROCESS_SAMPLES)
        .map(|_| {
            let started = Instant::now();
            command.status().unwrap();
            started.elapsed()
        })
        .collect();
    median(samples)
}

/// The baseline: the smallest hyper server answering `Ok`, on the same kind of
/// runtime as probehost's HTTP side.
fn baseline_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        eprintln!("listening address={}", listener.local_addr().unwrap());
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"Ok"))))
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

// ----- HTTP load -----

/// One keep-alive request; returns when the whole answer is read.
async fn roundtrip(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> bool {
    if stream.write_all(request).await.is_err() {
        return false;
    }
    buffer.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return true;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Requests per second over [`LOAD_DURATION`] with [`LOAD_CONNECTIONS`].
async fn load(address: SocketAddr, path: &str) -> f64 {
    load_with(address, path, LOAD_CONNECTIONS).await
}

/// Requests per second over [`LOAD_DURATION`] with `connections`.
async fn load_with(address: SocketAddr, path: &str, connections: usize) -> f64 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (request, done, stop) = (request.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buffer = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if !roundtrip(&mut stream, &request, &mut buffer).await {
                    // The server closes a connection after 1,000 requests (as
                    // nginx does); a client reconnects, as wrk does.
                    stream = TcpStream::connect(address).await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    if !roundtrip(&mut stream, &request, &mut buffer).await {
                        panic!("request failed during the load");
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(LOAD_DURATION).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// p50 latency of `path` at one keep-alive connection.
async fn latencies(address: SocketAddr, path: &str) -> Duration {
    latencies_answering(address, path, b"Ok").await
}

/// p50 latency of `path` at one connection, whose answer ends with `body`.
async fn latencies_answering(address: SocketAddr, path: &str, body: &[u8]) -> Duration {
    let samples = latency_samples(address, path, body, LATENCY_SAMPLES).await;
    samples[samples.len() / 2]
}

/// `count` latencies of `path` at one keep-alive connection, whose answer ends
/// with `body`, sorted.
async fn latency_samples(
    address: SocketAddr,
    path: &str,
    body: &[u8],
    count: usize,
) -> Vec<Duration> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buffer = Vec::new();
    for _ in 0..20 {
        assert!(roundtrip(&mut stream, &request, &mut buffer).await);
    }
    assert!(
        buffer.ends_with(body),
        "{path} does not answer {:?}: {}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&buffer)
    );
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        assert!(roundtrip(&mut stream, &request, &mut buffer).await);
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

/// p50 of what the bundled probes do, done directly: `SELECT 1` on a pooled
/// connection plus a memcached `stats` on a pooled client.
async fn dependency_latencies() -> Duration {
    dependency_latencies_of(true).await
}

/// p50 of `SELECT 1` on a pooled connection, plus with `with_cache` a memcached
/// `stats` on a pooled client.
async fn dependency_latencies_of(with_cache: bool) -> Duration {
    use probehost::db::{ConnectOptions, Database};
    use probehost::memcached::Cache;
    let second = Duration::from_secs(1);
    let db = Database::new(
        "default",
        &ConnectOptions::parse(POSTGRES).unwrap(),
        second,
        second,
    );
    let cache = Cache::new("default", &[MEMCACHED.to_owned()], second).unwrap();
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES + 20 {
        let started = Instant::now();
        db.query("SELECT 1", &[], second).await.unwrap();
        if with_cache {
            cache.stats(MEMCACHED, second).await.unwrap().unwrap();
        }
        if i >= 20 {
            samples.push(started.elapsed());
        }
    }
    median(samples)
}

/// Instantiate + call of one probe component, in process
/// (`PROBEHOST_BENCH=check` runs only this).
fn check_only(rt: &tokio::runtime::Runtime) {
    let (with_wasm, prepared, without) = rt.block_on(instantiate_and_call());
    report(
        "probe check p50 (fresh instance + call)",
        micros(with_wasm),
        micros(without),
        "µs",
        "",
    );
    println!(
        "    → instantiate + call overhead: {:.0} µs per probe [< 100 µs]",
        micros(with_wasm) - micros(without)
    );
    report(
        "probe check p50 (instance made ahead + call)",
        micros(prepared),
        micros(with_wasm),
        "µs",
        "(ratio to instantiating in the check)",
    );
}

/// p50 of a check of the test probe (a fresh instance and a call of `ready`),
/// of one whose instance was made ahead ([`Plugin::prepare`], not timed), and
/// of the same spawn-and-await on the guest runtime with no component.
async fn instantiate_and_call() -> (Duration, Duration, Duration) {
    use probehost::plugin::{ComponentSource, Grants, Plugin, PluginRuntime};
    let runtime = PluginRuntime::new(None).unwrap();
    let loaded = runtime
        .load(&ComponentSource::File(TEST_PROBE.into()))
        .unwrap();
    let plugin = Arc::new(Plugin::new(
        "bench",
        loaded,
        Grants::default(),
        Duration::from_secs(1),
        64 << 20,
    ));
    let guests = tokio::runtime::Handle::current();

    let mut with_wasm = Vec::with_capacity(LATENCY_SAMPLES * 4);
    let mut prepared = Vec::with_capacity(LATENCY_SAMPLES * 4);
    let mut without = Vec::with_capacity(LATENCY_SAMPLES * 4);
    for i in 0..LATENCY_SAMPLES * 4 + 50 {
        let check = |p: Arc<Plugin>| async move {
            let now = Instant::now();
            p.check(None, now, now + Duration::from_secs(1)).await
        };
        let started = Instant::now();
        let outcome = guests.spawn(check(plugin.clone())).await.unwrap();
        let took = started.elapsed();
        assert_eq!(outcome, probehost::plugin::CheckOutcome::Ready);
        plugin.prepare().await;
        let started = Instant::now();
        let outcome = guests.spawn(check(plugin.clone())).await.unwrap();
        let ahead = started.elapsed();
        assert_eq!(outcome, probehost::plugin::CheckOutcome::Ready);
        let started = Instant::now();
        guests
            .spawn(async { std::hint::black_box(()) })
            .await
            .unwrap();
        let bare = started.elapsed();
        if i >= 50 {
            with_wasm.push(took);
            prepared.push(ahead);
            without.push(bare);
        }
    }
    (median(with_wasm), median(prepared), median(without))
}

// ----- stalled readers -----

/// Stalled readers held open for the whole measurement (the send timeout is
/// raised past it, so none is closed early: the worst case).
const STALLED_READERS: usize = 1000;

/// A server on SQLite with `send_timeout` raised past any measurement, so no
/// stalled client is closed early: the worst case.
fn patient_server(dir: &tempfile::TempDir, name: &str) -> Listening {
    serve_with(
        dir,
        name,
        "send_timeout = \"5m\"\n",
        "[databases.default]\nurl = \"sqlite::memory:\"\n",
    )
}

/// `serve` on a config file `name` in `dir`: a loopback port, the bench's
/// component cache, `server_extra` in `[server]`, and `rest` after it.
fn serve_with(dir: &tempfile::TempDir, name: &str, server_extra: &str, rest: &str) -> Listening {
    let config = dir.path().join(name);
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}[runtime]\ncache_dir = {:?}\n{rest}",
            dir.path().join("cache").display().to_string()
        ),
    )
    .unwrap();
    spawn_listening(
        Command::new(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .arg("serve"),
    )
}

fn stalled_readers(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) {
    let server = patient_server(dir, "stalled.toml");
    let measure = || {
        let rps = median_f64(
            (0..LOAD_ROUNDS)
                .map(|_| rt.block_on(load_with(server.address, "/livez", 16)))
                .collect(),
        );
        (rps, fresh_connection_p99(server.address))
    };
    let (idle_rps, idle_p99) = measure();
    let payload = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3000);
    let stalled: Vec<std::net::TcpStream> = (0..STALLED_READERS)
        .map(|_| never_reading(server.address, payload.as_bytes()))
        .collect();
    // Let the server write what it can to them.
    std::thread::sleep(Duration::from_secs(2));
    let (stalled_rps, stalled_p99) = measure();
    let rss = rss_kib(&server.child) as f64 / 1024.0;
    drop(stalled);
    report(
        "/livez throughput with 1,000 stalled readers",
        stalled_rps,
        idle_rps,
        "req/s",
        "[ratio near 1]",
    );
    report(
        "/livez p99, fresh connection, with 1,000 stalled readers",
        micros(stalled_p99),
        micros(idle_p99),
        "µs",
        "[well under 1 s]",
    );
    println!("    → resident memory with them connected: {rss:.1} MiB");
}

/// A connection with a 4 KiB receive buffer that sends `payload` (as much of
/// it as fits at once) and never reads.
fn never_reading(address: SocketAddr, payload: &[u8]) -> std::net::TcpStream {
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    rustix::net::connect(&fd, &address).unwrap();
    let _ = rustix::net::send(&fd, payload, rustix::net::SendFlags::DONTWAIT);
    std::net::TcpStream::from(fd)
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What an HTTP/2 client that grants no window sends: the preface, SETTINGS
/// with `SETTINGS_INITIAL_WINDOW_SIZE = 0`, and `streams` GETs for `path`
/// (HPACK with the static table only).
fn zero_window_h2(streams: u32, path: &str) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    for i in 0..streams {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 0x01, b'x']);
        out.extend(h2_frame(0x1, 0x5, 2 * i + 1, &block));
    }
    out
}

/// Stuck HTTP/2 streams: more connections than the default limits admit,
/// each opening [`H2_STREAMS`] `/metrics` streams with a zero window and never
/// reading, held (a long `send_timeout`) for the worst case. Resident memory
/// before, at the peak, and 30 s after they close.
fn stuck_http2_streams(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) {
    let server = patient_server(dir, "h2.toml");
    // The working set of a server that has served.
    rt.block_on(load_with(server.address, "/metrics", 16));
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(&server.child) as f64 / 1024.0;
    let payload = zero_window_h2(H2_STREAMS, "/metrics");
    let flood: Vec<std::net::TcpStream> = (0..H2_CONNECTIONS)
        .map(|_| never_reading(server.address, &payload))
        .collect();
    let mut peak = 0.0f64;
    for _ in 0..50 {
        peak = peak.max(rss_kib(&server.child) as f64 / 1024.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let p99 = fresh_connection_p99(server.address);
    peak = peak.max(rss_kib(&server.child) as f64 / 1024.0);
    drop(flood);
    std::thread::sleep(Duration::from_secs(30));
    let after = rss_kib(&server.child) as f64 / 1024.0;
    println!(
        "stuck HTTP/2 streams: {H2_CONNECTIONS} connections x {H2_STREAMS} zero-window streams, \
         default limits"
    );
    println!(
        "    → resident memory before {before:.1} MiB, at the peak {peak:.1} MiB [under 64 MiB]"
    );
    report(
        "resident memory 30 s after the flood",
        after,
        before,
        "MiB",
        "[ratio at most 1.10]",
    );
    println!(
        "    → /livez p99 on a fresh connection during the flood: {:.0} µs",
        micros(p99)
    );
}

/// p99 of `GET /livez` on a fresh connection each time (the kubelet's way).
fn fresh_connection_p99(address: SocketAddr) -> Duration {
    let samples = fresh_connection_samples(address, "/livez");
    samples[samples.len() * 99 / 100]
}

/// Latencies of `path` asked on a new connection each time (connect, ask, read
/// to the close), as the kubelet asks: sorted.
fn fresh_connection_samples(address: SocketAddr, path: &str) -> Vec<Duration> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut samples: Vec<Duration> = (0..LATENCY_SAMPLES)
        .map(|_| {
            let started = Instant::now();
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).unwrap();
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
            started.elapsed()
        })
        .collect();
    samples.sort();
    samples
}

/// `/readyz` with the database's port closed, against the same request with
/// PostgreSQL up: a refusal must be answered about as fast as a success, not
/// at the readiness deadline.
fn refused_readyz(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server_for = |name: &str, url: &str| {
        serve_with(
            dir,
            &format!("{name}.toml"),
            "",
            &format!(
                "[databases.default]\nurl = {url:?}\n[probes.database]\ncomponent = \"builtin:database\"\n"
            ),
        )
    };
    let mut up = server_for("up", POSTGRES);
    let mut refused = server_for("refused", &format!("postgres://postgres@{closed}/test"));
    let up_p50 = rt.block_on(latencies(up.address, "/readyz"));
    let refused_p50 = rt.block_on(latencies_answering(
        refused.address,
        "/readyz",
        b"db: could not connect to database",
    ));
    report(
        "/readyz p50, database port closed (against PostgreSQL up)",
        micros(refused_p50),
        micros(up_p50),
        "µs",
        "[within 5 ms of it]",
    );
    println!(
        "    → difference: {:.0} µs",
        micros(refused_p50) - micros(up_p50)
    );
    up.stop();
    refused.stop();
}

/// Proxy mode in front of gunicorn (2 sync workers, the Django fixture) whose
/// workers are all busy: 200 requests that sleep are in flight while the probes
/// are asked, against the same probes with the application idle. Rounds
/// alternate (idle, busy, idle, busy, idle) with a fresh gunicorn after each busy
/// one, so drift in the machine affects both alike; each figure is the median of
/// its rounds.
fn busy_application(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) {
    const SLOW: usize = 200;
    const BUSY_ROUNDS: usize = 2;
    let app_port = free_port();
    let app: SocketAddr = format!("127.0.0.1:{app_port}").parse().unwrap();
    let mut gunicorn = start_gunicorn(dir, app);
    std::thread::sleep(Duration::from_secs(1));
    let mut server = serve_with(
        dir,
        "busy.toml",
        &format!("upstream = \"http://{app}\"\n"),
        &format!(
            "[databases.default]\nurl = {POSTGRES:?}\n[caches.default]\nservers = [{MEMCACHED:?}]\n"
        ),
    );
    // (p50, p99) of /livez and of /readyz, one keep-alive connection each.
    let measure = || {
        let p = |samples: &[Duration]| {
            (
                samples[samples.len() / 2],
                samples[samples.len() * 99 / 100],
            )
        };
        // Enough samples for a p99 of 9 each, within the 1,000 requests a
        // connection may make.
        let live = rt.block_on(latency_samples(server.address, "/livez", b"Ok", 900));
        let ready = rt.block_on(latency_samples(server.address, "/readyz", b"Ok", 900));
        [p(&live), p(&ready)]
    };
    let (mut idle, mut busy) = (vec![measure()], Vec::new());
    let mut answered = 0;
    for _ in 0..BUSY_ROUNDS {
        // 200 requests that each keep a worker asleep for 30 s: 2 run, the
        // rest queue in gunicorn's backlog.
        let slow: Vec<std::net::TcpStream> = (0..SLOW)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(server.address).unwrap();
                std::io::Write::write_all(
                    &mut stream,
                    b"GET /slow/?seconds=30 HTTP/1.1\r\nHost: bench\r\n\r\n",
                )
                .unwrap();
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        busy.push(measure());
        // Still in flight: nothing was answered while the probes were measured.
        answered += slow
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                s.peek(&mut [0u8; 1]).is_ok()
            })
            .count();
        drop(slow);
        // The sleeping workers and the queue would stay busy: a fresh gunicorn.
        stop_child(&mut gunicorn);
        gunicorn = start_gunicorn(dir, app);
        std::thread::sleep(Duration::from_secs(1));
        idle.push(measure());
    }
    println!(
        "busy application: {SLOW} slow requests in flight in each of {BUSY_ROUNDS} rounds, \
         {answered} answered while measuring"
    );
    let median_of = |rounds: &[[(Duration, Duration); 2]], probe: usize, p99: bool| {
        median(
            rounds
                .iter()
                .map(|r| if p99 { r[probe].1 } else { r[probe].0 })
                .collect(),
        )
    };
    for (index, name) in ["/livez", "/readyz"].into_iter().enumerate() {
        for (p99, label, target) in [(false, "p50", ""), (true, "p99", "[ratio <= 2.0]")] {
            report(
                &format!("{name} {label}, every worker busy (idle as the baseline)"),
                micros(median_of(&busy, index, p99)),
                micros(median_of(&idle, index, p99)),
                "µs",
                target,
            );
        }
    }
    server.stop();
    stop_child(&mut gunicorn);
}

/// gunicorn, 2 sync workers, serving the Django fixture on `address`.
fn start_gunicorn(dir: &tempfile::TempDir, address: SocketAddr) -> Child {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let child = Command::new(format!("{root}/.venv/bin/gunicorn"))
        .args([
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "--timeout",
            "120",
        ])
        .args(["--backlog", "2048", "--bind", &address.to_string()])
        // The application is loaded before the port opens, so an idle round
        // never overlaps the workers' start-up.
        .arg("--preload")
        .arg("fixture.wsgi")
        .current_dir(format!("{root}/tests/django"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("app.sqlite3").display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gunicorn in .venv (scripts/setup.sh)");
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < until, "gunicorn did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// SIGQUIT: gunicorn's quick shutdown, which takes its workers down with it
/// (SIGKILL would leave them serving the port until their requests end).
fn stop_child(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
    }
    let _ = child.wait();
}

/// The readiness hot path, measured against its floor: `/readyz` at one
/// connection with the database probe alone and with memcached, against the
/// same dependency calls made directly; `probe --ready` answered by the running
/// server against `probe --live`; and the CPU time each exec probe costs.
fn hot_path(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) {
    let database = format!("[databases.default]\nurl = {POSTGRES:?}\n");
    // The probe socket is how `probe --ready` finds this server.
    let mut alone = serve_with(
        dir,
        "database.toml",
        &format!("socket = {:?}\n", dir.path().join("database.sock")),
        &format!("{database}[probes.database]\ncomponent = \"builtin:database\"\n"),
    );
    let mut both = serve_with(
        dir,
        "both.toml",
        "",
        &format!(
            "{database}[caches.default]\nservers = [{MEMCACHED:?}]\n\
             [probes.database]\ncomponent = \"builtin:database\"\n\
             [probes.memcached]\ncomponent = \"builtin:memcached\"\n"
        ),
    );
    // Where the scheduler puts the two threads, and on two different CPUs (with
    // only one CPU to run on, there is no such case and the first stands in).
    let together = handover_latency(None);
    let apart = match allowed_cpus()[..] {
        [first, second, ..] => Some(handover_latency(Some((first, second)))),
        _ => None,
    };
    let (handover, on) = match apart {
        Some(apart) => (apart, "on two CPUs"),
        None => (together, "on the one CPU there is"),
    };
    println!(
        "two thread hand-overs (spawn on another runtime's only worker and await it, both \
         threads idle before): p50 {:.0} µs {on}; {:.0} µs where the scheduler puts them",
        micros(handover),
        micros(together)
    );
    for (name, server, with_cache) in [
        ("database", &alone, false),
        ("database + memcached", &both, true),
    ] {
        // Alternate, so drift affects both alike; the median round counts.
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..LOAD_ROUNDS {
            ours.push(rt.block_on(latencies(server.address, "/readyz")));
            floor.push(rt.block_on(dependency_latencies_of(with_cache)));
        }
        let (ours, floor) = (median(ours), median(floor));
        let http = rt.block_on(latencies(server.address, "/livez"));
        report(
            &format!("/readyz p50, one connection, {name}"),
            micros(ours),
            micros(floor),
            "µs",
            "[within 100 µs of the direct calls]",
        );
        println!(
            "    → probehost's own share: {:.0} µs, of which the HTTP round trip alone \
             (/livez p50 on the same connection kind) is {:.0} µs; less that and the two \
             hand-overs {on}: {:.0} µs",
            micros(ours) - micros(floor),
            micros(http),
            micros(ours) - micros(floor) - micros(http) - micros(handover)
        );
        // As the kubelet asks: a new connection per probe.
        let (mut fresh, mut fresh_http) = (Vec::new(), Vec::new());
        for _ in 0..LOAD_ROUNDS {
            fresh.push(median(fresh_connection_samples(server.address, "/readyz")));
            fresh_http.push(median(fresh_connection_samples(server.address, "/livez")));
        }
        let (fresh, fresh_http) = (median(fresh), median(fresh_http));
        println!(
            "    → a new connection per request, as the kubelet asks: /readyz p50 {:.0} µs, \
             /livez p50 {:.0} µs; own share less the direct calls and /livez: {:.0} µs",
            micros(fresh),
            micros(fresh_http),
            micros(fresh) - micros(floor) - micros(fresh_http),
        );
    }

    let config = dir.path().join("database.toml");
    let live = |binary: &Path| {
        let mut command = Command::new(binary);
        command.args(["probe", "--live"]);
        command
    };
    let ready = |binary: &Path| {
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&config)
            .args(["probe", "--ready"]);
        command
    };
    let ours = Path::new(PROBEHOST);
    let (mut live_walls, mut ready_walls) = (Vec::new(), Vec::new());
    for _ in 0..LOAD_ROUNDS {
        live_walls.push(median_wall(&mut live(ours)));
        ready_walls.push(median_wall(&mut ready(ours)));
    }
    let (live_wall, ready_wall) = (median(live_walls), median(ready_walls));
    report(
        "probe --ready wall (p50), answered by the running server",
        ms(ready_wall),
        ms(live_wall),
        "ms",
        "[ratio <= 1.5]",
    );
    // The floor any exec probe pays: a process that does nothing.
    let true_cpu = cpu_per_run(&mut Command::new("true"));
    let live_cpu = cpu_per_run(&mut live(ours));
    let ready_cpu = cpu_per_run(&mut ready(ours));
    println!(
        "CPU time (user + sys) per probe --live: {:.2} ms; per probe --ready (answered by the \
         server): {:.2} ms; per `true`: {:.2} ms (ratios {:.2}, {:.2})  [each <= 2 ms]",
        ms(live_cpu),
        ms(ready_cpu),
        ms(true_cpu),
        ms(live_cpu) / ms(true_cpu),
        ms(ready_cpu) / ms(true_cpu)
    );
    // The binary users install (wheel, image) is the static one `scripts/dist.sh`
    // builds; when it is there, the same figures for it.
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/probehost-x86_64-unknown-linux-musl");
    if shipped.is_file() {
        let live_cpu = cpu_per_run(&mut live(&shipped));
        let ready_cpu = cpu_per_run(&mut ready(&shipped));
        println!(
            "the same for dist/probehost-x86_64-unknown-linux-musl: {:.2} ms; {:.2} ms \
             (ratios to `true` {:.2}, {:.2})  [each <= 2 ms]",
            ms(live_cpu),
            ms(ready_cpu),
            ms(live_cpu) / ms(true_cpu),
            ms(ready_cpu) / ms(true_cpu)
        );
    }
    alone.stop();
    both.stop();
}

/// p50 of the two thread hand-overs each `/readyz` makes and a direct query does
/// not: from a serving thread to the probe runtime's only worker (`serve` hands
/// every check over so that no probe can delay `/livez`) and back. Both threads
/// are left idle before each sample, as they are between requests. `apart`
/// pins the two threads to two different CPUs, as the scheduler tends to place
/// them in `serve` (each follows the process it talks to: the client, the
/// database); without it the scheduler places them.
fn handover_latency(apart: Option<(usize, usize)>) -> Duration {
    let serving = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let probes = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            if let Some((_, cpu)) = apart {
                pin_to_cpu(cpu);
            }
        })
        .build()
        .unwrap();
    let handle = probes.handle().clone();
    let samples = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some((cpu, _)) = apart {
                    pin_to_cpu(cpu);
                }
                let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
                for i in 0..LATENCY_SAMPLES + 20 {
                    std::thread::sleep(Duration::from_micros(300));
                    let took = serving.block_on(async {
                        let started = Instant::now();
                        handle.spawn(async {}).await.unwrap();
                        started.elapsed()
                    });
                    if i >= 20 {
                        samples.push(took);
                    }
                }
                samples
            })
            .join()
            .unwrap()
    });
    median(samples)
}

/// The CPUs this process may run on.
#[allow(unsafe_code)]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed set it is given; CPU_ISSET
    // only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Run the calling thread on `cpu` only.
#[allow(unsafe_code)]
fn pin_to_cpu(cpu: usize) {
    // SAFETY: the set is zeroed and then filled by libc's own macros; the call
    // reads it and changes only the calling thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning a bench thread to CPU {cpu}"
        );
    }
}

/// User plus system CPU time that one run of `command` costs, averaged over
/// [`PROCESS_SAMPLES`] runs (the children's rusage before and after).
fn cpu_per_run(command: &mut Command) -> Duration {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let before = children_cpu();
    for _ in 0..PROCESS_SAMPLES {
        command.status().unwrap();
    }
    (children_cpu() - before) / PROCESS_SAMPLES as u32
}

/// User plus system CPU time of every waited-for child so far.
#[allow(unsafe_code)]
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads
    // nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
