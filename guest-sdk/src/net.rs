//! TCP connections (wasi:sockets), to the addresses the probe's
//! `network = [...]` grant lists.
//!
//! The standard library's [`std::net::TcpStream`] works as usual inside a probe;
//! [`connect`] adds what a probe wants on top: every address a name resolves to
//! is tried, and reads and writes time out. A connection to an address outside
//! the grant fails with [`std::io::ErrorKind::PermissionDenied`] (and every
//! connection does when the probe has no `network` grant). The host stops the
//! check at its deadline in any case.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use probehost_sdk::{NotReady, net};
//!
//! fn check() -> Result<(), NotReady> {
//!     let mut stream = net::connect("127.0.0.1:6379", Duration::from_millis(500))
//!         .map_err(|e| NotReady::new(format!("redis: could not connect: {e}")))?;
//!     stream.write_all(b"PING\r\n").map_err(|_| NotReady::new("redis: could not connect"))?;
//!     let mut reply = [0u8; 7];
//!     stream.read_exact(&mut reply).map_err(|_| NotReady::new("redis: could not connect"))?;
//!     Ok(())
//! }
//! ```

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connect to `address` (`host:port`), trying each address it resolves to, with
/// `timeout` for the connection and for each later read and write.
pub fn connect(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        // Where the platform cannot bound a connect, the check's deadline does.
        let connected = match TcpStream::connect_timeout(&addr, timeout) {
            // A refused connection can surface only when the stream is used;
            // a plain connect reports it (at once, since it already failed).
            Ok(stream) if stream.peer_addr().is_err() => TcpStream::connect(addr),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => TcpStream::connect(addr),
            other => other,
        };
        match connected {
            Ok(stream) => {
                supported(stream.set_read_timeout(Some(timeout)))?;
                supported(stream.set_write_timeout(Some(timeout)))?;
                // Small requests and replies: send at once. Not essential.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        )
    }))
}

/// An error unless the platform merely does not support the operation.
fn supported(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
        other => other,
    }
}
