//! What a broker sends, read off the socket by a hand-written client: the
//! facts behind the quirks docs/brokers.md lists, where the library's
//! reasons alone would not say what was on the wire. The client speaks just
//! enough MQTT 3.1.1 (CONNECT, CONNACK) and WebSocket (RFC 6455: the upgrade
//! request, one masked binary frame, reading frames) for that; it is not a
//! client anyone should use.
//!
//! Everything here blocks (std sockets with timeouts): run it in
//! `spawn_blocking`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What a broker answered a CONNECT with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A CONNACK with this return code.
    Connack(u8),
    /// The connection (or the WebSocket) was closed with no CONNACK.
    Closed,
}

impl Answer {
    /// As docs/brokers.md says it.
    pub fn describe(self) -> String {
        match self {
            Answer::Connack(4) => "CONNACK 4 (bad user name or password)".to_owned(),
            Answer::Connack(5) => "CONNACK 5 (not authorised)".to_owned(),
            Answer::Connack(code) => format!("CONNACK {code}"),
            Answer::Closed => "a close, no CONNACK".to_owned(),
        }
    }
}

/// How long any single read may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 CONNECT (clean session) with a user name and password.
pub fn connect_packet(client_id: &str, user: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    let string = |s: &str| {
        let mut b = (s.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(s.as_bytes());
        b
    };
    let mut body = string("MQTT");
    body.push(4); // protocol level: 3.1.1
    body.push(0b1100_0010); // user name, password, clean session
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend(string(client_id));
    body.extend(string(user));
    body.extend(string(password));
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the peer closed (EOF or
/// reset) first.
fn read_all(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match stream.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A CONNACK or a close, from MQTT bytes on `stream`.
fn read_connack(stream: &mut impl Read) -> Answer {
    let mut connack = [0u8; 4];
    match read_all(stream, &mut connack) {
        Ok(true) => {
            assert_eq!(connack[..2], [0x20, 0x02], "not a CONNACK: {connack:?}");
            Answer::Connack(connack[3])
        }
        Ok(false) => Answer::Closed,
        Err(e) => panic!("no CONNACK and no close within {READ_TIMEOUT:?}: {e}"),
    }
}

fn tcp(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// What the broker at `addr` (`host:port`, MQTT over TCP) answers this CONNECT.
pub fn answer_over_tcp(addr: &str, connect: &[u8]) -> Answer {
    let mut stream = tcp(addr);
    stream.write_all(connect).unwrap();
    read_connack(&mut stream)
}

/// Connects with `keep_alive` (seconds), reads the CONNACK (which must
/// accept), then sends nothing: how long after the CONNACK the broker closes
/// the connection.
pub fn silence_tolerated(addr: &str, connect: &[u8]) -> Duration {
    let mut stream = tcp(addr);
    stream.write_all(connect).unwrap();
    assert_eq!(
        read_connack(&mut stream),
        Answer::Connack(0),
        "{addr} refused the silent client"
    );
    let accepted = Instant::now();
    let mut byte = [0u8; 1];
    match read_all(&mut stream, &mut byte) {
        Ok(false) => accepted.elapsed(),
        Ok(true) => panic!("{addr} sent {byte:?} to a silent client"),
        Err(e) => panic!("{addr} kept a silent client for {READ_TIMEOUT:?}: {e}"),
    }
}

/// The HTTP status the WebSocket endpoint at `addr` answers an upgrade
/// request for `path` with (101 when it upgrades), and the stream.
pub fn upgrade(addr: &str, path: &str) -> (u16, TcpStream) {
    let mut stream = tcp(addr);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match read_all(&mut stream, &mut byte) {
            Ok(true) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{addr}{path}: no HTTP status in {head:?}"));
    (status, stream)
}

/// What the WebSocket endpoint at `addr` + `path` answers this CONNECT,
/// sent as one binary frame.
pub fn answer_over_ws(addr: &str, path: &str, connect: &[u8]) -> Answer {
    let (status, mut stream) = upgrade(addr, path);
    assert_eq!(status, 101, "ws://{addr}{path} did not upgrade");
    // FIN + binary; masked (as a client must), with a fixed key.
    let key = [0x37, 0xfa, 0x21, 0x3d];
    assert!(connect.len() < 126);
    let mut frame = vec![0x82, 0x80 | connect.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(connect.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    stream.write_all(&frame).unwrap();
    // Read frames until a binary one (MQTT bytes) or a close.
    loop {
        let mut header = [0u8; 2];
        match read_all(&mut stream, &mut header) {
            Ok(true) => {}
            Ok(false) => return Answer::Closed,
            Err(e) => panic!("ws://{addr}{path}: no frame within {READ_TIMEOUT:?}: {e}"),
        }
        let opcode = header[0] & 0x0f;
        let mut len = u64::from(header[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            assert!(read_all(&mut stream, &mut ext).unwrap());
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0u8; 8];
            assert!(read_all(&mut stream, &mut ext).unwrap());
            len = u64::from_be_bytes(ext);
        }
        let mut payload = vec![0u8; len as usize];
        if !read_all(&mut stream, &mut payload).unwrap() {
            return Answer::Closed;
        }
        match opcode {
            0x2 => return read_connack(&mut payload.as_slice()),
            0x8 => return Answer::Closed,
            _ => continue, // ping, pong, text
        }
    }
}
