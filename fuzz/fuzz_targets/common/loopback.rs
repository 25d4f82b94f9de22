//! A loopback server, a thread of the fuzz process, that answers each
//! connection with `serve(connection, the current reply)`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server answers with; the fuzz target sets it per input.
pub type Reply = Arc<Mutex<Vec<u8>>>;

pub fn start(serve: fn(TcpStream, &Mutex<Vec<u8>>)) -> (SocketAddr, Reply) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let reply: Reply = Arc::new(Mutex::new(Vec::new()));
    let served = reply.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let reply = served.clone();
            std::thread::spawn(move || serve(stream, &reply));
        }
    });
    (address, reply)
}
