//! Soak: `probehost serve` with the database, memcached and Redis probes, for a
//! bounded time, while each dependency flaps on a seeded random schedule and a
//! mixed load checks every answer against the schedule.
//!
//! ```text
//! cargo test -p probehost --test soak                       # 60 s, as CI runs it
//! cargo test --release -p probehost --test soak -- --seconds 3600 --seed 7
//! ```
//!
//! Each dependency sits behind the harness's fault proxy, and memcached and
//! Redis are private servers, so they can also be stopped (SIGSTOP) and
//! continued. Every few seconds each dependency enters a new phase: up,
//! refused (its open connections cut too), frozen, every reply cut in the
//! middle, slow but within the deadline, or (memcached, Redis) stopped.
//!
//! The load, throughout: `/livez` at about 250 requests a second; `/readyz`
//! plain, `?verbose`, JSON and `/metrics` from four clients in turn; a `probe
//! --ready` exec every second. Every answer is checked against the phases the
//! schedule was in from one deadline before the request to its answer: where
//! those phases agree on up or down, the answer must agree too (each probe's
//! own line in the verbose and JSON forms). Wrong answers fail the run; the
//! figures (wrong answers, `/livez` p99 while any dependency is frozen or
//! stopped, RSS, descriptors, threads and live tasks sampled over the run,
//! database connections held at the end) are printed.
//!
//! Needs PostgreSQL (127.0.0.1:5432), memcached and redis-server
//! (`scripts/setup.sh`). Traffic stays on loopback; every loop is bounded by
//! the run's length.

// A soak run reports on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../integration/harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{
    FaultProxy, Mode, POSTGRES_URL, PgSession, PrivateServer, REDIS_PROBE, Server, Service,
    TestDir, probehost, require, shared_cache_dir, try_get,
};

/// The overall readiness deadline, and so the lag an answer may have.
const DEADLINE: Duration = Duration::from_secs(1);
/// Extra lag allowed for scheduling on a shared machine.
const MARGIN: Duration = Duration::from_millis(250);
/// How long the slow phase holds back each piece of a reply.
const SLOW_DELAY: Duration = Duration::from_millis(30);
/// Phases last this long, give or take (seconds).
const PHASE_SECONDS: (u64, u64) = (2, 8);
/// The connections the database probe may hold (`db::MAX_CONNECTIONS`).
const POOL_SIZE: i64 = 2;
/// Clients asking `/readyz` (in its forms) and `/metrics` in turn.
const READY_CLIENTS: usize = 4;
const APPLICATION_NAME: &str = "probehost-soak";

/// The phases a dependency is moved to, `Stopped` last.
const PHASES: [Phase; 7] = [
    Phase::Up,
    Phase::Up,
    Phase::Refused,
    Phase::Frozen,
    Phase::CutReply,
    Phase::Slow,
    Phase::Stopped,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Up,
    Refused,
    Frozen,
    CutReply,
    Slow,
    /// The server itself is SIGSTOPped (private servers only).
    Stopped,
}

impl Phase {
    fn healthy(self) -> bool {
        matches!(self, Phase::Up | Phase::Slow)
    }

    /// Whether a request to the dependency hangs rather than fails.
    fn hangs(self) -> bool {
        matches!(self, Phase::Frozen | Phase::Stopped)
    }
}

/// splitmix64: a seeded schedule without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One dependency: its proxy, its private server if it has one, and the
/// phases it went through, each with when its change began and ended.
struct Dependency {
    probe: &'static str,
    proxy: FaultProxy,
    server: Option<PrivateServer>,
    /// (change began, change done, phase): a phase is recorded before its
    /// change is made, so no answer can see a fault the timeline does not
    /// have yet; until the change is done the phase before it holds too.
    timeline: Mutex<Vec<(Instant, Option<Instant>, Phase)>>,
}

impl Dependency {
    fn new(probe: &'static str, target: SocketAddr, server: Option<PrivateServer>) -> Dependency {
        let proxy = FaultProxy::start(target, Mode::Pass);
        proxy.set_delay(SLOW_DELAY);
        let now = Instant::now();
        Dependency {
            probe,
            proxy,
            server,
            timeline: Mutex::new(vec![(now, Some(now), Phase::Up)]),
        }
    }

    fn current(&self) -> Phase {
        self.timeline.lock().unwrap().last().unwrap().2
    }

    fn enter(&self, phase: Phase) {
        let was = self.current();
        self.timeline
            .lock()
            .unwrap()
            .push((Instant::now(), None, phase));
        // The proxy's new mode first, then the server's signal: every
        // moment in between is one of the two phases.
        match phase {
            Phase::Up => self.proxy.set_mode(Mode::Pass),
            Phase::Refused => {
                // A server that went away: new connections refused, open
                // ones reset.
                self.proxy.set_mode(Mode::Refuse);
                self.proxy.cut();
            }
            Phase::Frozen => self.proxy.set_mode(Mode::Freeze),
            Phase::CutReply => self.proxy.set_mode(Mode::CutReply),
            Phase::Slow => self.proxy.set_mode(Mode::Slow),
            Phase::Stopped => {
                let server = self.server.as_ref().expect("a private server");
                if was != Phase::Stopped {
                    server.freeze();
                    self.wait_for_state(server, true);
                }
                self.proxy.set_mode(Mode::Pass);
            }
        }
        if was == Phase::Stopped
            && phase != Phase::Stopped
            && let Some(server) = &self.server
        {
            server.thaw();
            self.wait_for_state(server, false);
        }
        self.timeline.lock().unwrap().last_mut().unwrap().1 = Some(Instant::now());
    }

    /// Wait until the kernel reports `server` stopped (or running): a signal
    /// is delivered asynchronously.
    fn wait_for_state(&self, server: &PrivateServer, stopped: bool) {
        let pid = server.pid().expect("a running private server");
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('T')))
        };
        assert!(
            harness::eventually(Duration::from_secs(2), || state() == Some(stopped)),
            "{}'s server (pid {pid}) is not {} after the signal",
            self.probe,
            if stopped { "stopped" } else { "running" }
        );
    }

    /// The phases that held at some moment in `from..=to`, with when each
    /// began. A phase holds from when its change began until the next change
    /// was done (to this moment while that change is being made).
    fn phases_between(&self, from: Instant, to: Instant) -> Vec<(Instant, Phase)> {
        let timeline = self.timeline.lock().unwrap();
        timeline
            .iter()
            .enumerate()
            .filter(|(i, (began, _, _))| {
                let until = timeline.get(i + 1).and_then(|next| next.1);
                *began <= to && until.is_none_or(|until| until >= from)
            })
            .map(|(_, (began, _, phase))| (*began, *phase))
            .collect()
    }

    /// Whether the dependency was healthy throughout `from..=to`: `Some` when
    /// every phase it was in then agrees, `None` when they differ.
    fn healthy_between(&self, from: Instant, to: Instant) -> Option<bool> {
        let phases = self.phases_between(from, to);
        let first = phases.first()?.1.healthy();
        phases
            .iter()
            .all(|(_, phase)| phase.healthy() == first)
            .then_some(first)
    }

    fn hangs_between(&self, from: Instant, to: Instant) -> bool {
        self.phases_between(from, to)
            .iter()
            .any(|(_, phase)| phase.hangs())
    }
}

#[derive(Default)]
struct Tally {
    answers: AtomicUsize,
    /// Answers whose overall verdict the schedule decided, and probe lines
    /// (verbose, JSON) whose verdict it decided.
    checked: AtomicUsize,
    checked_probes: AtomicUsize,
    wrong: Mutex<Vec<String>>,
    /// `/livez` latencies while a dependency hung, and otherwise.
    livez_hung: Mutex<Vec<Duration>>,
    livez_calm: Mutex<Vec<Duration>>,
    execs: AtomicUsize,
}

impl Tally {
    fn wrong(&self, what: String) {
        eprintln!("soak: wrong answer: {what}");
        self.wrong.lock().unwrap().push(what);
    }
}

struct Soak {
    server: Server,
    config: PathBuf,
    deps: Vec<Dependency>,
    tally: Tally,
    stop: AtomicBool,
}

impl Soak {
    /// What the dependencies say about readiness between `from` and `to`:
    /// per probe `Some(healthy)` or `None` (it changed), and overall.
    fn expected(&self, sent: Instant, answered: Instant) -> (Vec<Option<bool>>, Option<bool>) {
        let from = sent.checked_sub(DEADLINE + MARGIN).unwrap_or(sent);
        let each: Vec<Option<bool>> = self
            .deps
            .iter()
            .map(|d| d.healthy_between(from, answered))
            .collect();
        let overall = if each.contains(&Some(false)) {
            Some(false)
        } else if each.iter().all(|h| *h == Some(true)) {
            Some(true)
        } else {
            None
        };
        (each, overall)
    }

    fn check_ready(&self, what: &str, sent: Instant, status: u16, body: &str) {
        let (each, overall) = self.expected(sent, Instant::now());
        let at = sent.duration_since(self.started()).as_secs_f64();
        if let Some(ready) = overall {
            self.tally.checked.fetch_add(1, Ordering::Relaxed);
            let want = if ready { 200 } else { 503 };
            if status != want {
                self.tally.wrong(format!(
                    "{what} at {at:.1}s: {status}, expected {want} ({}); body: {body:?}",
                    self.phases()
                ));
            }
        }
        for (dep, healthy) in self.deps.iter().zip(each) {
            let Some(healthy) = healthy else { continue };
            let verdict = if what.contains("verbose") {
                body.lines().find_map(|l| {
                    if l.starts_with(&format!("[+]{} ok", dep.probe)) {
                        Some(true)
                    } else if l.starts_with(&format!("[-]{} failed", dep.probe)) {
                        Some(false)
                    } else {
                        None
                    }
                })
            } else if what.contains("json") {
                serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| {
                        v["probes"]
                            .as_array()?
                            .iter()
                            .find_map(|p| (p["name"] == dep.probe).then(|| p["status"] == "ok"))
                    })
            } else {
                continue;
            };
            self.tally.checked_probes.fetch_add(1, Ordering::Relaxed);
            match verdict {
                Some(v) if v == healthy => {}
                _ => self.tally.wrong(format!(
                    "{what} at {at:.1}s: probe {} answered {verdict:?}, expected {healthy} ({}); body: {body:?}",
                    dep.probe,
                    self.phases()
                )),
            }
        }
    }

    fn started(&self) -> Instant {
        self.deps[0].timeline.lock().unwrap()[0].0
    }

    /// Each dependency's phases over the last few seconds, with when each
    /// began (seconds into the run).
    fn phases(&self) -> String {
        let started = self.started();
        let since = Instant::now()
            .checked_sub(Duration::from_secs(4))
            .unwrap_or(started);
        self.deps
            .iter()
            .map(|d| {
                let recent: Vec<String> = d
                    .phases_between(since, Instant::now())
                    .iter()
                    .map(|(began, phase)| {
                        format!(
                            "{phase:?}@{:.1}s",
                            began.duration_since(started).as_secs_f64()
                        )
                    })
                    .collect();
                format!("{} {}", d.probe, recent.join(">"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

fn main() {
    let mut seconds: u64 = 60;
    let mut seed: u64 = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed N"),
            // What `cargo test` may pass to every test binary.
            _ => {}
        }
    }
    let duration = Duration::from_secs(seconds);
    // Samples: once a minute, and at least six over a short run.
    let sample_every = Duration::from_secs((seconds / 6).clamp(5, 60));

    require(Service::Postgres);
    let memcached = PrivateServer::start();
    let redis = PrivateServer::redis(None);
    let deps = vec![
        Dependency::new("database", Service::Postgres.address(), None),
        Dependency::new("cache", memcached.address(), Some(memcached)),
        Dependency::new("redis", redis.address(), Some(redis)),
    ];

    let dir = TestDir::new();
    let socket = dir.path().join("probe.sock");
    let config = dir.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nsocket = {socket:?}\n\n\
         [runtime]\ncache_dir = {cache:?}\n\n\
         [readiness]\ntimeout = \"{deadline}ms\"\n\n\
         [databases.default]\nurl = \"postgres://postgres@{db}/test?application_name={APPLICATION_NAME}\"\n\
         connect_timeout = \"800ms\"\nquery_timeout = \"800ms\"\n\n\
         [caches.default]\nservers = [\"{mc}\"]\ntimeout = \"300ms\"\n\n\
         [probes.database]\ncomponent = \"builtin:database\"\n\n\
         [probes.cache]\ncomponent = \"builtin:memcached\"\n\n\
         [probes.redis]\ncomponent = {REDIS_PROBE:?}\nnetwork = [\"{redis}\"]\n\
         config = {{ address = \"{redis}\", timeout = \"300ms\" }}\n",
        socket = socket.display().to_string(),
        cache = shared_cache_dir().display().to_string(),
        deadline = DEADLINE.as_millis(),
        db = deps[0].proxy.address(),
        mc = deps[1].proxy.address(),
        redis = deps[2].proxy.address(),
    ));
    let server = Server::start(&config);
    let soak = Arc::new(Soak {
        server,
        config,
        deps,
        tally: Tally::default(),
        stop: AtomicBool::new(false),
    });
    let pid = soak.server.pid();
    // Warm up: everything up and answering before the clock starts.
    assert!(
        harness::eventually(Duration::from_secs(30), || soak
            .server
            .get("/readyz")
            .status
            == 200),
        "not ready with every dependency up; log:\n{}",
        soak.server.log()
    );
    println!(
        "soak: {seconds} s, seed {seed}, deadline {} ms, phases of {}-{} s, slow replies +{} ms",
        DEADLINE.as_millis(),
        PHASE_SECONDS.0,
        PHASE_SECONDS.1,
        SLOW_DELAY.as_millis()
    );

    let mut threads = Vec::new();
    let until = Instant::now() + duration;
    threads.push(spawn(&soak, move |soak| schedule(soak, seed, until)));
    threads.push(spawn(&soak, livez));
    for client in 0..READY_CLIENTS {
        threads.push(spawn(&soak, move |soak| readyz(soak, client)));
    }
    threads.push(spawn(&soak, exec));

    let started = Instant::now();
    let mut samples = vec![sample(&soak, pid, Duration::ZERO)];
    while Instant::now() < until {
        let next = started + sample_every * samples.len() as u32;
        thread::sleep(next.min(until).saturating_duration_since(Instant::now()));
        samples.push(sample(&soak, pid, started.elapsed()));
    }
    soak.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("a soak thread panicked");
    }

    // Every dependency up again: the server settles back to ready, and holds
    // no more database connections than its pool allows.
    for dep in &soak.deps {
        dep.enter(Phase::Up);
    }
    let settled = harness::eventually(DEADLINE * 5, || soak.server.get("/readyz").status == 200);
    let mut postgres = PgSession::connect(POSTGRES_URL);
    let connections = postgres.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
    ));
    samples.push(sample(&soak, pid, started.elapsed()));

    report(&soak, &samples, connections);
    let wrong = soak.tally.wrong.lock().unwrap();
    if !wrong.is_empty() {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-seed-{seed}.log"));
        std::fs::write(&log, soak.server.log()).unwrap();
        println!("soak: the server's log: {}", log.display());
    }
    assert!(settled, "not ready again once every dependency was back up");
    assert!(
        wrong.is_empty(),
        "{} wrong answers; the first: {}",
        wrong.len(),
        wrong[0]
    );
    assert!(
        connections <= POOL_SIZE,
        "{connections} database connections held, the pool allows {POOL_SIZE}"
    );
    assert!(
        soak.tally.checked.load(Ordering::Relaxed) > 0,
        "no answer could be checked against the schedule"
    );
}

fn spawn(soak: &Arc<Soak>, body: impl FnOnce(&Soak) + Send + 'static) -> thread::JoinHandle<()> {
    let soak = soak.clone();
    thread::spawn(move || body(&soak))
}

/// Move each dependency to a new phase every few seconds, until `until`.
fn schedule(soak: &Soak, seed: u64, until: Instant) {
    let mut rng = Rng(seed);
    let mut pick = Rng(seed ^ 0x5eed);
    let span = PHASE_SECONDS.1 - PHASE_SECONDS.0;
    let mut length = move || Duration::from_millis(1000 * PHASE_SECONDS.0 + rng.below(span * 1000));
    let mut next: Vec<Instant> = soak
        .deps
        .iter()
        .map(|_| Instant::now() + length())
        .collect();
    while Instant::now() < until {
        for (dep, at) in soak.deps.iter().zip(next.iter_mut()) {
            if Instant::now() < *at {
                continue;
            }
            // Up twice as often as each fault; only a private server stops.
            let choices = &PHASES[..PHASES.len() - usize::from(dep.server.is_none())];
            let phase = choices[pick.below(choices.len() as u64) as usize];
            dep.enter(phase);
            *at = Instant::now() + length();
        }
        thread::sleep(Duration::from_millis(20));
    }
    soak.stop.store(true, Ordering::Relaxed);
}

/// An HTTP/1.1 client on one keep-alive connection (opened again when the
/// server closes it), so a long run does not pile up closed sockets.
struct KeepAlive {
    address: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

/// An answer: status and body.
type Answer = Result<(u16, String), String>;

impl KeepAlive {
    fn new(address: SocketAddr) -> KeepAlive {
        KeepAlive {
            address,
            stream: None,
        }
    }

    fn get(&mut self, path: &str, headers: &[&str]) -> Answer {
        let answer = self.exchange(path, headers);
        if answer.is_err() {
            self.stream = None;
        }
        answer
    }

    fn exchange(&mut self, path: &str, headers: &[&str]) -> Answer {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(5))
                .map_err(|e| format!("connecting: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(15)))
                .unwrap();
            stream.set_nodelay(true).unwrap();
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().unwrap();
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        write!(
            reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: soak\r\n{extra}\r\n"
        )
        .map_err(|e| format!("sending: {e}"))?;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("reading: {e}"))?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {line:?}"))?;
        let mut length = 0;
        let mut close = false;
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("reading: {e}"))?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| format!("bad length {value:?}"))?;
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("reading the body: {e}"))?;
        if close {
            self.stream = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `/livez` at about 250 a second: always 200, and fast.
fn livez(soak: &Soak) {
    let pace = Duration::from_micros(1_000_000 / 250);
    let mut client = KeepAlive::new(soak.server.address);
    while soak.running() {
        let sent = Instant::now();
        let answer = client.get("/livez", &[]);
        let took = sent.elapsed();
        soak.tally.answers.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok((200, _)) => {}
            other => soak.tally.wrong(format!("/livez: {other:?}")),
        }
        let hung = soak
            .deps
            .iter()
            .any(|d| d.hangs_between(sent, Instant::now()));
        let bucket = if hung {
            &soak.tally.livez_hung
        } else {
            &soak.tally.livez_calm
        };
        bucket.lock().unwrap().push(took);
        thread::sleep(pace.saturating_sub(sent.elapsed()));
    }
}

/// `/readyz` in each form, and `/metrics`, in turn.
fn readyz(soak: &Soak, client: usize) {
    let forms: [(&str, &str, &[&str]); 4] = [
        ("/readyz", "/readyz", &[]),
        ("/readyz?verbose", "/readyz?verbose", &[]),
        ("/readyz json", "/readyz", &["Accept: application/json"]),
        ("/metrics", "/metrics", &[]),
    ];
    let mut turn = client;
    let mut http = KeepAlive::new(soak.server.address);
    while soak.running() {
        let (what, path, headers) = forms[turn % forms.len()];
        turn += 1;
        let sent = Instant::now();
        let answer = http.get(path, headers);
        soak.tally.answers.fetch_add(1, Ordering::Relaxed);
        match answer {
            Err(e) => soak.tally.wrong(format!("{what}: no answer: {e}")),
            Ok((status, body)) if what == "/metrics" => {
                if status != 200 || !body.contains("probehost_probe_up{probe=\"redis\"}") {
                    soak.tally.wrong(format!("/metrics: {status} {body:?}"));
                }
            }
            Ok((status, body)) => soak.check_ready(what, sent, status, &body),
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// `probe --ready` every second, answered by the running server.
fn exec(soak: &Soak) {
    while soak.running() {
        let sent = Instant::now();
        let output = probehost()
            .arg("--config")
            .arg(&soak.config)
            .args(["probe", "--ready"])
            .output()
            .expect("running probe --ready");
        soak.tally.execs.fetch_add(1, Ordering::Relaxed);
        let status = match output.status.code() {
            Some(0) => 200,
            Some(1) => 503,
            other => {
                soak.tally.wrong(format!(
                    "probe --ready exited {other:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
                continue;
            }
        };
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        soak.check_ready("probe --ready", sent, status, &said);
        thread::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed()));
    }
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    threads: u64,
    tasks: String,
}

fn sample(soak: &Soak, pid: u32, at: Duration) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let metrics = try_get(soak.server.address, "/metrics")
        .map(|r| r.body)
        .unwrap_or_default();
    let tasks = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("probehost_tasks{runtime=\""))
        .map(|rest| rest.replacen("\"} ", "=", 1))
        .collect::<Vec<_>>()
        .join(" ");
    Sample {
        at,
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
        tasks,
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((samples.len() as f64) * p).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn report(soak: &Soak, samples: &[Sample], connections: i64) {
    let tally = &soak.tally;
    println!(
        "soak: {} answers; checked against the schedule: {} verdicts and {} probe lines; {} probe --ready execs; {} wrong",
        tally.answers.load(Ordering::Relaxed),
        tally.checked.load(Ordering::Relaxed),
        tally.checked_probes.load(Ordering::Relaxed),
        tally.execs.load(Ordering::Relaxed),
        tally.wrong.lock().unwrap().len()
    );
    for dep in &soak.deps {
        let timeline = dep.timeline.lock().unwrap();
        let mut counts: Vec<(Phase, usize)> = Vec::new();
        for (_, _, phase) in timeline.iter() {
            match counts.iter_mut().find(|(p, _)| p == phase) {
                Some((_, n)) => *n += 1,
                None => counts.push((*phase, 1)),
            }
        }
        println!("soak: {} phases: {counts:?}", dep.probe);
    }
    let mut hung = tally.livez_hung.lock().unwrap().clone();
    let mut calm = tally.livez_calm.lock().unwrap().clone();
    println!(
        "soak: /livez while a dependency hung: {} requests, p50 {:?}, p99 {:?} (goal < 5 ms); otherwise: {} requests, p50 {:?}, p99 {:?}",
        hung.len(),
        percentile(&mut hung, 0.50),
        percentile(&mut hung, 0.99),
        calm.len(),
        percentile(&mut calm, 0.50),
        percentile(&mut calm, 0.99),
    );
    println!(
        "soak: {:>8} {:>9} {:>5} {:>8}  tasks",
        "at", "RSS", "fds", "threads"
    );
    for s in samples {
        println!(
            "soak: {:>7.0}s {:>6.1}MiB {:>5} {:>8}  {}",
            s.at.as_secs_f64(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.threads,
            s.tasks
        );
    }
    if let (Some(first), Some(last)) = (samples.get(1), samples.last()) {
        println!(
            "soak: RSS from the first sample after warm-up to the end: {:+.1} MiB (goal within +2 MiB); fds {:+}",
            (last.rss_kib as f64 - first.rss_kib as f64) / 1024.0,
            last.fds as i64 - first.fds as i64
        );
    }
    println!("soak: database connections held at the end: {connections} (pool: {POOL_SIZE})");
}
