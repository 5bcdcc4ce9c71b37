//! Outbound TCP for transports, with TLS done by the host (`wasi:tls`).
//!
//! Plugins get no DNS: [`connect`] asks the host which addresses the
//! transport's `connect` capability grants for `host:port` and tries them in
//! order. [`Stream::start_tls`] hands the socket's streams to the host's TLS
//! client, which verifies the server's certificate against the system roots
//! (plus the operator's extra CA file); the plugin then reads and writes
//! plaintext. Every wait is bounded by the stream's timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::io::poll::{self, Pollable};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::bindings::wasi::sockets::instance_network::instance_network;
use crate::bindings::wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use crate::bindings::wasi::sockets::tcp::TcpSocket;
use crate::bindings::wasi::sockets::tcp_create_socket::create_tcp_socket;
use crate::bindings::wasi::tls::types::{ClientConnection, ClientHandshake};

/// A connected socket, plaintext or TLS. Implements [`io::Read`] and
/// [`io::Write`]; reads and writes fail with `TimedOut` after the timeout.
pub struct Stream {
    // Field order is drop order: the pollables go before the streams they
    // watch, the streams before the TLS connection and the socket they
    // belong to. The pollables are made once per stream, not per wait: a
    // message's SMTP dialog waits a few times, and each wait was two more
    // host calls.
    readable: Pollable,
    writable: Pollable,
    input: InputStream,
    output: OutputStream,
    tls: Option<ClientConnection>,
    _socket: TcpSocket,
    timeout: Duration,
}

/// Connects to `host:port` through the addresses the host grants for it.
/// A name the transport's capabilities do not list fails with
/// `PermissionDenied` before any packet is sent.
pub fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Stream> {
    let addrs = crate::host::resolve(host, port).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}:{port} has no addresses"));
    for addr in addrs {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("host gave {addr:?}: {e}")))?;
        match connect_addr(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to one socket address; the host's `connect` capability must
/// include it.
pub fn connect_addr(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
    let (family, remote) = match addr {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: a.port(),
                    address: (o[0], o[1], o[2], o[3]),
                }),
            )
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            (
                IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: a.port(),
                    flow_info: a.flowinfo(),
                    address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                    scope_id: a.scope_id(),
                }),
            )
        }
    };
    let fail = |e: ErrorCode| net_error(e, &addr.to_string());
    let socket = create_tcp_socket(family).map_err(fail)?;
    socket.start_connect(&instance_network(), remote).map_err(fail)?;
    let deadline = deadline(timeout);
    let (input, output) = loop {
        match socket.finish_connect() {
            Ok(pair) => break pair,
            Err(ErrorCode::WouldBlock) => {
                let ready = socket.subscribe();
                wait(&ready, deadline, || format!("connecting to {addr}"))?;
            }
            Err(e) => return Err(fail(e)),
        }
    };
    Ok(Stream::new(input, output, None, socket, timeout))
}

impl Stream {
    fn new(
        input: InputStream,
        output: OutputStream,
        tls: Option<ClientConnection>,
        socket: TcpSocket,
        timeout: Duration,
    ) -> Stream {
        Stream {
            readable: input.subscribe(),
            writable: output.subscribe(),
            input,
            output,
            tls,
            _socket: socket,
            timeout,
        }
    }

    /// Wraps the connection in TLS, verifying the certificate for
    /// `server_name`. Used right after connecting (implicit TLS) or after a
    /// protocol's upgrade command (STARTTLS).
    pub fn start_tls(self, server_name: &str) -> io::Result<Stream> {
        let Stream {
            readable,
            writable,
            input,
            output,
            tls,
            _socket: socket,
            timeout,
        } = self;
        // The streams move into the handshake; a stream with a live
        // pollable cannot.
        drop((readable, writable));
        if tls.is_some() {
            return Err(io::Error::other("the connection is already TLS"));
        }
        let handshake = ClientHandshake::new(server_name, input, output);
        let pending = ClientHandshake::finish(handshake);
        let deadline = deadline(timeout);
        loop {
            match pending.get() {
                None => {
                    let ready = pending.subscribe();
                    wait(&ready, deadline, || format!("TLS handshake with {server_name}"))?;
                }
                Some(Ok(Ok((connection, input, output)))) => {
                    return Ok(Stream::new(input, output, Some(connection), socket, timeout));
                }
                Some(Ok(Err(e))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("TLS handshake with {server_name} failed: {}", e.to_debug_string()),
                    ));
                }
                Some(Err(())) => return Err(io::Error::other("TLS handshake result already taken")),
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends TLS close_notify (when TLS) so the peer sees a clean end.
    pub fn close(self) {
        if let Some(tls) = &self.tls {
            tls.close_output();
            let _ = self.output.blocking_flush();
        }
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut deadline = Deadline::after(self.timeout);
        loop {
            match self.input.read(buf.len() as u64) {
                Ok(bytes) if bytes.is_empty() => deadline.wait(&self.readable, || "reading".to_string())?,
                Ok(bytes) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    return Ok(bytes.len());
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(StreamError::LastOperationFailed(e)) => return Err(io::Error::other(e.to_debug_string())),
            }
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut deadline = Deadline::after(self.timeout);
        loop {
            let room = self.output.check_write().map_err(stream_error)?;
            if room == 0 {
                deadline.wait(&self.writable, || "writing".to_string())?;
                continue;
            }
            let n = buf.len().min(room as usize);
            self.output.write(&buf[..n]).map_err(stream_error)?;
            return Ok(n);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.output.flush().map_err(stream_error)?;
        let mut deadline = Deadline::after(self.timeout);
        // A flush is complete when the stream accepts writes again.
        while self.output.check_write().map_err(stream_error)? == 0 {
            deadline.wait(&self.writable, || "flushing".to_string())?;
        }
        Ok(())
    }
}

/// A read's or write's deadline, read from the clock only if it has to
/// wait: most calls on a busy connection find their bytes or room at once,
/// and each clock read is a host call.
struct Deadline {
    timeout: Duration,
    at: Option<u64>,
}

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline { timeout, at: None }
    }

    fn wait(&mut self, ready: &Pollable, doing: impl FnOnce() -> String) -> io::Result<()> {
        match self.at {
            Some(at) => wait(ready, at, doing),
            // Just read from the clock: not yet passed.
            None => until(ready, *self.at.insert(deadline(self.timeout)), doing),
        }
    }
}

fn deadline(timeout: Duration) -> u64 {
    monotonic_clock::now().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64)
}

/// Blocks until `ready` fires or the deadline passes.
pub(crate) fn wait(ready: &Pollable, deadline: u64, doing: impl FnOnce() -> String) -> io::Result<()> {
    if monotonic_clock::now() >= deadline {
        return Err(timed_out(doing));
    }
    until(ready, deadline, doing)
}

/// Polls `ready` against a timer for `deadline` (not yet passed).
fn until(ready: &Pollable, deadline: u64, doing: impl FnOnce() -> String) -> io::Result<()> {
    let timer = monotonic_clock::subscribe_instant(deadline);
    let fired = poll::poll(&[ready, &timer]);
    if fired.contains(&0) {
        Ok(())
    } else {
        Err(timed_out(doing))
    }
}

fn timed_out(doing: impl FnOnce() -> String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {}", doing()))
}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "connection closed by peer"),
        StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
    }
}

fn net_error(e: ErrorCode, addr: &str) -> io::Error {
    use io::ErrorKind as K;
    let (kind, what) = match e {
        ErrorCode::AccessDenied => (
            K::PermissionDenied,
            "permission denied: the transport's connect capability does not grant this address",
        ),
        ErrorCode::ConnectionRefused => (K::ConnectionRefused, "connection refused"),
        ErrorCode::ConnectionReset => (K::ConnectionReset, "connection reset"),
        ErrorCode::ConnectionAborted => (K::ConnectionAborted, "connection aborted"),
        ErrorCode::Timeout => (K::TimedOut, "timed out"),
        ErrorCode::RemoteUnreachable => (K::Other, "unreachable"),
        ErrorCode::NotSupported => (K::Unsupported, "not supported"),
        _ => (K::Other, "network error"),
    };
    io::Error::new(kind, format!("{addr}: {what} ({e:?})"))
}
