//! Private memcached servers on free loopback ports, which tests may stop,
//! freeze (SIGSTOP) and bring back without touching the shared one.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use super::{closed_port, eventually};

pub struct Memcached {
    address: SocketAddr,
    child: Option<Child>,
}

impl Memcached {
    pub fn start() -> Memcached {
        let mut m = Memcached {
            address: closed_port(),
            child: None,
        };
        m.spawn();
        m
    }

    /// `host:port`
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn spawn(&mut self) {
        let mut command = Command::new("memcached");
        command
            .args(["-l", "127.0.0.1", "-U", "0", "-m", "8", "-p"])
            .arg(self.address.port().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if rustix::process::geteuid().is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("starting memcached (install it with scripts/setup.sh): {e}")
        });
        self.child = Some(child);
        let address = self.address;
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(address)
                .is_ok()),
            "private memcached did not start on {address}"
        );
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(child.id() as i32).unwrap();
            kill_process(pid, signal).unwrap();
        }
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

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}
