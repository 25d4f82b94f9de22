//! Private memcached and Redis servers on free loopback ports, which tests may
//! stop, freeze (SIGSTOP) and bring back without touching the shared ones.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use super::{closed_port, eventually};

/// A private memcached.
pub type Memcached = PrivateServer;

pub struct PrivateServer {
    address: SocketAddr,
    child: Option<Child>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Memcached,
    Redis {
        password: Option<String>,
        replica_of: Option<SocketAddr>,
    },
}

impl PrivateServer {
    /// A private memcached.
    pub fn start() -> PrivateServer {
        PrivateServer::spawned(Kind::Memcached)
    }

    /// A private Redis that keeps nothing on disk, requiring `password` if set.
    pub fn redis(password: Option<&str>) -> PrivateServer {
        PrivateServer::spawned(Kind::Redis {
            password: password.map(str::to_owned),
            replica_of: None,
        })
    }

    /// A private Redis replicating `primary` (its `ROLE` is `slave`).
    pub fn redis_replica_of(primary: SocketAddr) -> PrivateServer {
        PrivateServer::spawned(Kind::Redis {
            password: None,
            replica_of: Some(primary),
        })
    }

    fn spawned(kind: Kind) -> PrivateServer {
        let mut server = PrivateServer {
            address: closed_port(),
            child: None,
            kind,
        };
        server.spawn();
        server
    }

    /// `host:port`
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn spawn(&mut self) {
        let port = self.address.port().to_string();
        let (name, mut command) = match &self.kind {
            Kind::Memcached => {
                let mut command = Command::new("memcached");
                command.args(["-l", "127.0.0.1", "-U", "0", "-m", "8", "-p", &port]);
                if rustix::process::geteuid().is_root() {
                    command.args(["-u", "nobody"]);
                }
                ("memcached", command)
            }
            Kind::Redis {
                password,
                replica_of,
            } => {
                let mut command = Command::new("redis-server");
                command.args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]);
                if let Some(password) = password {
                    command.args(["--requirepass", password]);
                }
                if let Some(primary) = replica_of {
                    command
                        .arg("--replicaof")
                        .arg(primary.ip().to_string())
                        .arg(primary.port().to_string());
                }
                ("redis-server", command)
            }
        };
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} (scripts/setup.sh installs it): {e}"));
        self.child = Some(child);
        let address = self.address;
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(address)
                .is_ok()),
            "private {name} did not start on {address}"
        );
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(child.id() as i32).unwrap();
            kill_process(pid, signal).unwrap();
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop answering while keeping the port open (the kernel still accepts).
    pub fn freeze(&self) {
        self.signal(Signal::STOP);
    }

    pub fn thaw(&self) {
        self.signal(Signal::CONT);
    }

    /// Kill it; its port is closed until [`Memcached::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.signal_child(&child, Signal::CONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal_child(&self, child: &Child, signal: Signal) -> rustix::io::Result<()> {
        kill_process(Pid::from_raw(child.id() as i32).unwrap(), signal)
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
