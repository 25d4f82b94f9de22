//! probehost processes: one-shot commands and `serve` in the background.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::{PROBEHOST, Response, get};

/// A `probehost` command with a clean environment: no config, log or database
/// variables leak in from the machine running the tests.
pub fn probehost() -> Command {
    let mut command = Command::new(PROBEHOST);
    for var in [
        "PROBEHOST_CONFIG",
        "PROBEHOST_LOG",
        "PROBEHOST_LOG_FORMAT",
        "DATABASE_URL",
        "PROBEHOST_CACHE_DIR",
    ] {
        command.env_remove(var);
    }
    command.stdin(Stdio::null());
    command
}

/// How a one-shot command ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `probehost ARGS` to completion (at most 60 s).
pub fn run(command: &mut Command) -> Output {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting probehost");
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("probehost did not finish within 60 s")
        .expect("waiting for probehost");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// The address in a `listening` log line, text (`listening address=...`) or
/// JSON (`"message":"listening",...,"address":"..."`).
fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = if let Some(at) = line.find("listening address=") {
        &line[at + "listening address=".len()..]
    } else if line.contains(r#""message":"listening""#) {
        let at = line.find(r#""address":""#)?;
        &line[at + r#""address":""#.len()..]
    } else {
        return None;
    };
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

/// `probehost serve` in the background. Killed when dropped.
pub struct Server {
    child: Child,
    pub address: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Start `probehost --config CONFIG serve` and wait until it listens.
    pub fn start(config: &Path) -> Server {
        Server::start_with(probehost().arg("--config").arg(config).arg("serve"))
    }

    /// Start a prepared `serve` command and wait until it listens.
    pub fn start_with(command: &mut Command) -> Server {
        let mut child = command
            .env("PROBEHOST_LOG", "info,probehost=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting probehost serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (found, listening) = mpsc::channel();
        let collected = log.clone();
        thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = listening_address(&line)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(address);
                }
                let mut log = collected.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match listening.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "probehost serve did not start listening ({status:?}); its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child,
            address,
            log,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Response {
        get(self.address, path)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `check` holds for it, or as it stands after 10 s.
    ///
    /// A line the server writes as it answers can reach the collecting
    /// thread after the answer reaches the test: a positive check on the
    /// log must wait for it.
    pub fn log_when(&self, check: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if check(&log) || Instant::now() >= until {
                return log;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (at most 15 s) for it to exit.
    pub fn terminate(self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.wait(Duration::from_secs(15))
    }

    pub fn signal(&self, signal: Signal) {
        kill_process(Pid::from_raw(self.child.id() as i32).unwrap(), signal).unwrap();
    }

    /// Wait (at most `limit`) for it to exit.
    pub fn wait(mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "probehost did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-shot command running in the background, its output collected as it
/// comes.
pub struct Background {
    child: Child,
    started: Instant,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(command: &mut Command) -> Background {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting probehost");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Background {
            child,
            started: Instant::now(),
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32).unwrap()
    }

    pub fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal).unwrap();
    }

    /// Wait (at most `limit`) until stdout or stderr contains `text`.
    pub fn wait_for(&self, text: &str, limit: Duration) -> bool {
        super::eventually(limit, || {
            self.stdout.lock().unwrap().contains(text) || self.stderr.lock().unwrap().contains(text)
        })
    }

    /// How often `text` occurs in stdout and stderr so far.
    pub fn count(&self, text: &str) -> usize {
        self.stdout.lock().unwrap().matches(text).count()
            + self.stderr.lock().unwrap().matches(text).count()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit (at most `limit`).
    pub fn finish(mut self, limit: Duration) -> Output {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!(
                    "the command did not exit within {limit:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout.lock().unwrap(),
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Output {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            elapsed,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

/// The state of process `pid` from `/proc` (`None` when it is gone): a
/// zombie (`Z`) has ended and only waits for its parent to collect it.
pub fn process_state(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Whether process `pid` has ended (gone, or a zombie).
pub fn has_ended(pid: &str) -> bool {
    matches!(process_state(pid).as_deref(), None | Some("Z"))
}

/// The zombies whose parent is `parent`: processes that ended and that nobody
/// has waited for.
pub fn zombies_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            state == Some("Z") && ppid == Some(parent)
        })
        .collect()
}
