//! A TCP proxy that injects faults between probehost and a real service: it can
//! pass traffic, refuse connections, freeze (accept and never answer), delay
//! every reply, cut every reply in the middle, or cut every open connection.
//! It counts the connections it accepts.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward to the target.
    Pass = 0,
    /// Close every new connection at once.
    Refuse = 1,
    /// Accept, then never forward or answer (a hung server). Existing
    /// connections stop forwarding too.
    Freeze = 2,
    /// Forward, but hold each piece of a reply back for the delay
    /// ([`FaultProxy::set_delay`]).
    Slow = 3,
    /// Forward requests; forward half of the first piece of a reply, then
    /// close the connection.
    CutReply = 4,
}

struct Shared {
    target: SocketAddr,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    accepted: AtomicUsize,
    /// Reads from clients forwarded to the target: about one per request
    /// message a database client sends.
    messages: AtomicUsize,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `target`.
    pub fn start(target: SocketAddr, mode: Mode) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            mode: AtomicU8::new(mode as u8),
            delay_ms: AtomicU64::new(50),
            accepted: AtomicUsize::new(0),
            messages: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        thread::spawn(move || accept_loop(listener, accepting));
        FaultProxy { address, shared }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// How long [`Mode::Slow`] holds back each piece of a reply.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Close every open connection (both directions).
    pub fn cut(&self) {
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Reads forwarded from clients to the target so far.
    pub fn messages(&self) -> usize {
        self.shared.messages.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn mode(shared: &Shared) -> Mode {
    match shared.mode.load(Ordering::SeqCst) {
        0 => Mode::Pass,
        1 => Mode::Refuse,
        2 => Mode::Freeze,
        3 => Mode::Slow,
        _ => Mode::CutReply,
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        match mode(&shared) {
            Mode::Refuse => {
                let _ = client.shutdown(Shutdown::Both);
            }
            Mode::Freeze => {
                // Hold it open, unread, until cut or dropped.
                shared.open.lock().unwrap().push(client);
            }
            Mode::Pass | Mode::Slow | Mode::CutReply => {
                let Ok(server) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2))
                else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = shared.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    shared.clone(),
                    true,
                );
                pump(server, client, shared.clone(), false);
            }
        }
    }
}

/// Copy `from` → `to` until either side closes; bytes that arrive while the proxy
/// is frozen are held back (never delivered), and while it refuses the
/// connection is closed instead.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>, from_client: bool) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if from_client {
                shared.messages.fetch_add(1, Ordering::SeqCst);
            }
            while mode(&shared) == Mode::Freeze && !shared.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
            // Refusing: a connection still open (it is about to be cut) passes
            // nothing more, in either direction.
            if mode(&shared) == Mode::Refuse {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            if !from_client {
                match mode(&shared) {
                    Mode::Slow => thread::sleep(Duration::from_millis(
                        shared.delay_ms.load(Ordering::SeqCst),
                    )),
                    Mode::CutReply => {
                        let _ = to.write_all(&buffer[..n.div_ceil(2)]);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                        return;
                    }
                    _ => {}
                }
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
