//! A Redis readiness probe, written with the guest SDK the way a user would write
//! one: it speaks RESP itself over a TCP connection the config grants.
//!
//! ```toml
//! [probes.redis]
//! component = "probehost_plugin_redis.wasm"
//! network = ["127.0.0.1:6379"]
//! config = { address = "127.0.0.1:6379", password = "${REDIS_PASSWORD}", role = "master" }
//! ```
//!
//! Settings (all optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `address` | `127.0.0.1:6379` | `host:port` of the server; must be in `network` |
//! | `username` | | ACL user for `AUTH` (Redis 6+) |
//! | `password` | | sends `AUTH` before `PING` when set |
//! | `protocol` | `2` | `3`: opens with `HELLO 3` (Redis 6+), authenticating in it when a password is set, and speaks RESP3 |
//! | `role` | `any` | `master`: ready only on a master; `any`: replicas too |
//! | `timeout` | `500ms` | for the connection and each reply |
//!
//! Every failure answers `redis: could not connect`, the message of the
//! original's documented Redis probe, except a replica when `role = "master"`
//! (`redis: not a master`). The reason goes to the log, never the password.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use probehost_sdk::{NotReady, Probe, Request, config, log, net};

/// The answer when the server cannot be reached or refuses us, as in the original.
pub const NOT_READY: &str = "redis: could not connect";
/// The answer from a replica when only a master will do.
pub const NOT_MASTER: &str = "redis: not a master";

const DEFAULT_ADDRESS: &str = "127.0.0.1:6379";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

struct Redis;

impl Probe for Redis {
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
        let settings = match Settings::from_config() {
            Ok(s) => s,
            Err(e) => {
                log::error(&format!("redis probe misconfigured: {e}"));
                return Err(NotReady::new(format!("redis: {e}")));
            }
        };
        match check(&settings) {
            Ok(()) => Ok(()),
            Err(Failure::NotMaster(role)) => {
                log::warn(&format!(
                    "redis at {} is a {role}, and role = \"master\"",
                    settings.address
                ));
                Err(NotReady::new(NOT_MASTER))
            }
            Err(Failure::Other(reason)) => {
                log::error(&format!(
                    "redis probe failed: {}: {reason}",
                    settings.address
                ));
                Err(NotReady::new(NOT_READY))
            }
        }
    }
}

probehost_sdk::export_probe!(Redis);

#[derive(Debug)]
struct Settings {
    address: String,
    username: Option<String>,
    password: Option<String>,
    master_only: bool,
    resp3: bool,
    timeout: Duration,
}

impl Settings {
    fn from_config() -> Result<Settings, String> {
        let nonempty = |key: &str| config::get(key).filter(|v| !v.is_empty());
        let master_only = match nonempty("role").as_deref() {
            None | Some("any") => false,
            Some("master") => true,
            Some(other) => {
                return Err(format!("role must be \"master\" or \"any\", not {other:?}"));
            }
        };
        let resp3 = match nonempty("protocol").as_deref() {
            None | Some("2") => false,
            Some("3") => true,
            Some(other) => return Err(format!("protocol must be 2 or 3, not {other:?}")),
        };
        let timeout = config::duration("timeout", DEFAULT_TIMEOUT)?;
        Ok(Settings {
            address: nonempty("address").unwrap_or_else(|| DEFAULT_ADDRESS.to_owned()),
            username: nonempty("username"),
            password: nonempty("password"),
            master_only,
            resp3,
            timeout,
        })
    }
}

enum Failure {
    NotMaster(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure::Other(reason)
    }
}

fn check(settings: &Settings) -> Result<(), Failure> {
    let stream =
        net::connect(&settings.address, settings.timeout).map_err(|e| format!("connect: {e}"))?;
    let mut conn = Connection {
        reader: BufReader::new(stream),
    };
    if settings.resp3 {
        hello(&mut conn, settings)?;
    } else if let Some(password) = &settings.password {
        let reply = match &settings.username {
            Some(user) => conn.call(&["AUTH", user, password]),
            None => conn.call(&["AUTH", password]),
        }
        .map_err(|e| format!("AUTH: {e}"))?;
        if reply != Reply::Simple("OK".into()) {
            return Err(Failure::Other(format!(
                "authentication failed: {}",
                reply.describe()
            )));
        }
    }
    match conn.call(&["PING"]).map_err(|e| format!("PING: {e}"))? {
        Reply::Simple(pong) if pong == "PONG" => {}
        other => {
            return Err(Failure::Other(format!(
                "PING answered {}",
                other.describe()
            )));
        }
    }
    if settings.master_only {
        let reply = conn.call(&["ROLE"]).map_err(|e| format!("ROLE: {e}"))?;
        match reply {
            Reply::Array(items) => match items.first() {
                Some(Reply::Bulk(role)) if role == b"master" => {}
                Some(Reply::Bulk(role)) => {
                    return Err(Failure::NotMaster(
                        String::from_utf8_lossy(role).into_owned(),
                    ));
                }
                _ => return Err(Failure::Other("ROLE answered an empty array".into())),
            },
            other => {
                return Err(Failure::Other(format!(
                    "ROLE answered {}",
                    other.describe()
                )));
            }
        }
    }
    Ok(())
}

/// `HELLO 3`, with `AUTH` in it when a password is set: the server answers a
/// map describing itself, or an error (`NOPROTO` from a server before Redis 6,
/// `WRONGPASS` for bad credentials).
fn hello(conn: &mut Connection, settings: &Settings) -> Result<(), Failure> {
    let mut command = vec!["HELLO", "3"];
    if let Some(password) = &settings.password {
        let user = settings.username.as_deref().unwrap_or("default");
        command.extend(["AUTH", user, password]);
    }
    match conn.call(&command).map_err(|e| format!("HELLO: {e}"))? {
        Reply::Map(fields) => {
            let proto = fields.chunks(2).find_map(|pair| match pair {
                [Reply::Bulk(key), Reply::Integer(value)] if key == b"proto" => Some(*value),
                _ => None,
            });
            match proto {
                Some(3) => Ok(()),
                other => Err(Failure::Other(format!("HELLO 3 answered proto {other:?}"))),
            }
        }
        Reply::Error(e) => Err(Failure::Other(format!("HELLO 3 refused: {e}"))),
        other => Err(Failure::Other(format!(
            "HELLO 3 answered {}",
            other.describe()
        ))),
    }
}

/// One connection; requests and replies alternate, so the reader's buffer is
/// empty whenever a command is written.
struct Connection {
    reader: BufReader<std::net::TcpStream>,
}

impl Connection {
    fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        self.reader
            .get_mut()
            .write_all(&encode(args))
            .map_err(|e| e.to_string())?;
        read_reply(&mut self.reader, 0)
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A RESP reply (RESP2, which every server speaks until `HELLO 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    /// RESP3 `%`: keys and values in turn.
    Map(Vec<Reply>),
    /// RESP3 `#`, `,` and `(`, kept as written.
    Other(String),
}

impl Reply {
    /// A short description for the log.
    fn describe(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(e) => format!("error {e:?}"),
            Reply::Integer(i) => format!("integer {i}"),
            Reply::Bulk(b) => format!("a {}-byte string", b.len()),
            Reply::Nil => "nil".into(),
            Reply::Array(items) => format!("an array of {}", items.len()),
            Reply::Map(items) => format!("a map of {}", items.len() / 2),
            Reply::Other(s) => format!("{s:?}"),
        }
    }
}

/// Bounds on what a server may send, so a hostile or broken one cannot make
/// the probe allocate without limit.
const MAX_LINE: usize = 64 * 1024;
const MAX_BULK: usize = 1 << 20;
const MAX_ITEMS: usize = 1024;
const MAX_DEPTH: usize = 4;

fn read_reply(reader: &mut impl BufRead, depth: usize) -> Result<Reply, String> {
    if depth > MAX_DEPTH {
        return Err("reply nested too deeply".into());
    }
    let line = read_line(reader)?.ok_or("connection closed")?;
    let mut chars = line.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    match kind {
        Some('+') => Ok(Reply::Simple(rest.to_owned())),
        Some('-') => Ok(Reply::Error(rest.to_owned())),
        Some(':') => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| format!("bad integer reply {rest:?}")),
        // Bulk strings; RESP3's blob errors and verbatim strings are framed alike.
        Some(kind @ ('$' | '!' | '=')) => {
            let len: i64 = rest
                .parse()
                .map_err(|_| format!("bad bulk length {rest:?}"))?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_BULK {
                return Err(format!("bulk reply of {len} bytes is too long"));
            }
            let mut data = vec![0u8; len + 2];
            std::io::Read::read_exact(reader, &mut data).map_err(|e| e.to_string())?;
            if !data.ends_with(b"\r\n") {
                return Err("bulk reply not terminated by CRLF".into());
            }
            data.truncate(len);
            match kind {
                '!' => Ok(Reply::Error(String::from_utf8_lossy(&data).into_owned())),
                '=' => {
                    // `txt:` or `mkd:`, then the text.
                    let text = data.get(4..).unwrap_or_default().to_vec();
                    Ok(Reply::Bulk(text))
                }
                _ => Ok(Reply::Bulk(data)),
            }
        }
        // Arrays; RESP3's sets and pushes are lists alike, its maps (and
        // attributes) lists of pairs.
        Some(kind @ ('*' | '~' | '>' | '%')) => {
            let n: i64 = rest
                .parse()
                .map_err(|_| format!("bad array length {rest:?}"))?;
            if n < 0 {
                return Ok(Reply::Nil);
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let items = if kind == '%' { n.saturating_mul(2) } else { n };
            if items > MAX_ITEMS {
                return Err(format!("array reply of {n} items is too long"));
            }
            let items = (0..items)
                .map(|_| read_reply(reader, depth + 1))
                .collect::<Result<_, _>>()?;
            Ok(if kind == '%' {
                Reply::Map(items)
            } else {
                Reply::Array(items)
            })
        }
        Some('_') if rest.is_empty() => Ok(Reply::Nil),
        Some('#' | ',' | '(') => Ok(Reply::Other(line)),
        _ => Err(format!("not a RESP reply: {:?}", truncate(&line, 40))),
    }
}

/// The RESP reader on `bytes`, for the fuzz targets (`fuzz/`): a short
/// description of the reply, or why it is not one.
#[doc(hidden)]
pub fn describe_reply(bytes: &[u8]) -> Result<String, String> {
    read_reply(&mut std::io::BufReader::new(bytes), 0).map(|reply| reply.describe())
}

/// One CRLF-terminated line, without the CRLF; `None` if the connection closed
/// before it began.
fn read_line(reader: &mut impl BufRead) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().map_err(|e| e.to_string())?;
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err("connection closed in the middle of a reply".into());
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if line.len() + i > MAX_LINE {
                    return Err("reply line too long".into());
                }
                line.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                break;
            }
            None => {
                let n = available.len();
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
        if line.len() > MAX_LINE {
            return Err("reply line too long".into());
        }
    }
    if line.pop() != Some(b'\r') {
        return Err("reply line not terminated by CRLF".into());
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, String> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(encode(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode(&["AUTH", "user", "pässword"]),
            "*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$9\r\npässword\r\n".as_bytes()
        );
    }

    #[test]
    fn replies_of_every_kind_parse() {
        assert_eq!(parse(b"+PONG\r\n"), Ok(Reply::Simple("PONG".into())));
        assert_eq!(
            parse(b"-WRONGPASS invalid username-password pair\r\n"),
            Ok(Reply::Error(
                "WRONGPASS invalid username-password pair".into()
            ))
        );
        assert_eq!(parse(b":42\r\n"), Ok(Reply::Integer(42)));
        assert_eq!(parse(b"$-1\r\n"), Ok(Reply::Nil));
        assert_eq!(
            parse(b"*3\r\n$6\r\nmaster\r\n:3129\r\n*0\r\n"),
            Ok(Reply::Array(vec![
                Reply::Bulk(b"master".to_vec()),
                Reply::Integer(3129),
                Reply::Array(vec![])
            ]))
        );
    }

    #[test]
    fn resp3_replies_parse() {
        assert_eq!(
            parse(b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"),
            Ok(Reply::Map(vec![
                Reply::Bulk(b"server".to_vec()),
                Reply::Bulk(b"redis".to_vec()),
                Reply::Bulk(b"proto".to_vec()),
                Reply::Integer(3),
            ]))
        );
        assert_eq!(parse(b"_\r\n"), Ok(Reply::Nil));
        assert_eq!(parse(b"#t\r\n"), Ok(Reply::Other("#t".into())));
        assert_eq!(
            parse(b"~2\r\n+a\r\n,1.5\r\n"),
            Ok(Reply::Array(vec![
                Reply::Simple("a".into()),
                Reply::Other(",1.5".into())
            ]))
        );
        assert_eq!(
            parse(b"!9\r\nERR nope!\r\n"),
            Ok(Reply::Error("ERR nope!".into()))
        );
        assert_eq!(
            parse(b"=7\r\ntxt:abc\r\n"),
            Ok(Reply::Bulk(b"abc".to_vec()))
        );
        assert!(parse(b"%600\r\n").unwrap_err().contains("too long"));
    }

    #[test]
    fn broken_or_hostile_replies_are_errors_not_allocations() {
        assert!(parse(b"").unwrap_err().contains("closed"));
        assert!(parse(b"+PON").unwrap_err().contains("middle"));
        assert!(
            parse(b"HTTP/1.1 400\r\n")
                .unwrap_err()
                .contains("not a RESP")
        );
        assert!(
            parse("é\r\n".as_bytes())
                .unwrap_err()
                .contains("not a RESP")
        );
        assert!(parse(b"\r\n").unwrap_err().contains("not a RESP"));
        assert!(parse(b"$99999999999\r\n").unwrap_err().contains("too long"));
        assert!(parse(b"*99999999\r\n").unwrap_err().contains("too long"));
        assert!(parse(b"$3\r\nabcde").unwrap_err().contains("CRLF"));
        assert!(
            parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n")
                .unwrap_err()
                .contains("nested")
        );
        let long = [b"+".as_slice(), &vec![b'x'; MAX_LINE + 10], b"\r\n"].concat();
        assert!(parse(&long).unwrap_err().contains("too long"));
    }
}
