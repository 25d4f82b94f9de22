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
//! | instantiate + call of a probe component | the same call with no component (spawn on the guest runtime only) |
//! | `probe --live` wall time | `/bin/true` |
//! | `probe --ready` wall time, PostgreSQL + memcached | `probe --live` |
//! | resident memory of `serve` after the load | the minimal hyper server after the same load |
//!
//! Needs PostgreSQL (127.0.0.1:5432) and memcached (127.0.0.1:11211); traffic
//! stays on loopback and every loop is bounded in count and time.

// A benchmark reports on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
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

const LOAD_CONNECTIONS: usize = 32;
const LOAD_DURATION: Duration = Duration::from_secs(3);
/// Load rounds per server, alternating between them so drift in the machine's
/// load affects both alike; the median round counts.
const LOAD_ROUNDS: usize = 3;
const LATENCY_SAMPLES: usize = 300;
const PROCESS_SAMPLES: usize = 40;

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

    // Instantiate + call of one probe component, in process.
    let (with_wasm, without) = rt.block_on(instantiate_and_call());
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
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
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
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..LOAD_CONNECTIONS {
        let (request, done, stop) = (request.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buffer = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if !roundtrip(&mut stream, &request, &mut buffer).await {
                    panic!("request failed during the load");
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
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buffer = Vec::new();
    for _ in 0..20 {
        assert!(roundtrip(&mut stream, &request, &mut buffer).await);
    }
    assert!(
        buffer.ends_with(b"Ok"),
        "{path} is not ready: {}",
        String::from_utf8_lossy(&buffer)
    );
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        assert!(roundtrip(&mut stream, &request, &mut buffer).await);
        samples.push(started.elapsed());
    }
    median(samples)
}

/// p50 of what the bundled probes do, done directly: `SELECT 1` on a pooled
/// connection plus a memcached `stats` on a pooled client.
async fn dependency_latencies() -> Duration {
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
        cache.stats(MEMCACHED, second).await.unwrap().unwrap();
        if i >= 20 {
            samples.push(started.elapsed());
        }
    }
    median(samples)
}

/// p50 of a check of the test probe (a fresh instance and a call of `ready`),
/// and of the same spawn-and-await on the guest runtime with no component.
async fn instantiate_and_call() -> (Duration, Duration) {
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
    let mut without = Vec::with_capacity(LATENCY_SAMPLES * 4);
    for i in 0..LATENCY_SAMPLES * 4 + 50 {
        let p = plugin.clone();
        let started = Instant::now();
        let outcome = guests
            .spawn(async move {
                let now = Instant::now();
                p.check(None, now, now + Duration::from_secs(1)).await
            })
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(outcome, probehost::plugin::CheckOutcome::Ready);
        let started = Instant::now();
        guests
            .spawn(async { std::hint::black_box(()) })
            .await
            .unwrap();
        let bare = started.elapsed();
        if i >= 50 {
            with_wasm.push(took);
            without.push(bare);
        }
    }
    (median(with_wasm), median(without))
}
