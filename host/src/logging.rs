//! Logging set-up: one subscriber writing to stderr, as text or JSON lines,
//! with a tracing-subscriber filter — through a sink that never stalls or
//! crashes the process.
//!
//! Log sinks in containers go away (a log shipper restarts, a pipe to `tee`
//! closes) or stop reading. So a log line is handed to a thread of its own
//! through a bounded queue, and that thread does the writing: a full queue, a
//! full pipe or a closed one costs the line, never a panic (Rust's `eprintln!`
//! panics on a closed stderr), and never blocks serving or shutdown. Lines
//! lost are counted ([`dropped`], `probehost_log_lines_dropped_total`).

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writing thread; beyond them, lines are dropped.
const QUEUE: usize = 4096;
/// How long exit waits for queued lines to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_millis(500);

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

static DROPPED: AtomicU64 = AtomicU64::new(0);
static SINK: OnceLock<Sink> = OnceLock::new();

/// Log lines lost so far: the queue was full, or stderr would not take them.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[derive(Debug)]
enum Message {
    Line(Vec<u8>),
    /// Answer when everything before it is written.
    Flush(SyncSender<()>),
}

#[derive(Debug)]
struct Sink {
    queue: SyncSender<Message>,
}

impl Sink {
    fn start() -> Sink {
        let (queue, lines) = sync_channel(QUEUE);
        // Without the thread the receiver is gone, and every line counts as
        // dropped.
        let _ = std::thread::Builder::new()
            .name("probehost-log".into())
            .spawn(move || write_lines(lines, std::io::stderr()));
        Sink { queue }
    }

    fn send(&self, line: Vec<u8>) {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writing thread: one line at a time, each written whole or dropped.
fn write_lines(lines: Receiver<Message>, mut out: impl Write) {
    for message in lines {
        match message {
            Message::Line(line) => {
                if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// What tracing-subscriber writes one event into: queued when complete.
#[derive(Debug, Default)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            // The writing thread starts with the first line: a command that
            // logs nothing (an exec probe that passes) starts none.
            SINK.get_or_init(Sink::start)
                .send(std::mem::take(&mut self.0));
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lines;

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line::default()
    }
}

/// Install the process's subscriber. An invalid filter is reported and `info`
/// used instead.
pub fn init(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        let mut line = Line::default();
        let _ = writeln!(line, "ignoring invalid log filter {filter:?}: {e}");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Lines)
        .log_internal_errors(false)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Wait (briefly) until the lines logged so far are written: called before
/// the process exits, so its last words are not lost to a healthy sink, and
/// never held up by a stuck one.
pub fn flush() {
    let Some(sink) = SINK.get() else { return };
    let (done, written) = sync_channel(1);
    if sink.queue.try_send(Message::Flush(done)).is_ok() {
        let _ = written.recv_timeout(FLUSH_AT_EXIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that refuses every write, as a closed pipe does.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_a_closed_sink_refuses_are_counted_not_fatal() {
        let (queue, lines) = sync_channel(8);
        let writer = std::thread::spawn(move || write_lines(lines, Closed));
        let before = dropped();
        for _ in 0..3 {
            queue.send(Message::Line(b"x\n".to_vec())).unwrap();
        }
        drop(queue);
        writer.join().unwrap();
        assert!(dropped() >= before + 3);
    }

    #[test]
    fn lines_are_written_whole_in_order() {
        let (queue, lines) = sync_channel(8);
        let (done, written) = sync_channel(1);
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared(out.clone());
        std::thread::spawn(move || write_lines(lines, sink));
        queue.send(Message::Line(b"one\n".to_vec())).unwrap();
        queue.send(Message::Line(b"two\n".to_vec())).unwrap();
        queue.send(Message::Flush(done)).unwrap();
        written.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(&*out.lock().unwrap(), b"one\ntwo\n");
    }
}
