//! Outgoing HTTP the host makes on someone else's behalf: a plugin's
//! `wasi:http` request (`plugins::capability::http`) and a user's event webhooks
//! (`webhooks`). Both name a URL someone else chose, so both connect
//! through this one connector: the origin is checked by the caller's
//! [`OriginRule`], the host is resolved once, the addresses the rule
//! refuses (private ones, unless allowed) are dropped, and the connection
//! goes to a checked address, never to a second DNS answer an attacker
//! could give. TLS uses the host's roots; ALPN offers HTTP/2.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connected;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Which origins and addresses a caller may reach.
pub trait OriginRule: Send + Sync + 'static {
    /// Whether `scheme://host:port` may be contacted at all.
    fn admits(&self, origin: &Origin) -> Result<(), String>;
    /// Whether an address `host` resolved to (or is) may be used.
    fn may_use(&self, host: &str, ip: IpAddr) -> bool;
}

/// Public addresses only, unless the operator allows private ones: the
/// rule for URLs users type (event webhooks). Unlike a transport's
/// capability, a literal private address is refused too — no operator
/// listed it.
pub struct PublicOnly {
    pub allow_private: bool,
}

impl OriginRule for PublicOnly {
    fn admits(&self, o: &Origin) -> Result<(), String> {
        match o.host.parse::<IpAddr>() {
            Ok(ip) if !self.may_use(&o.host, ip) => Err(format!(
                "{} is a private address; the operator has not allowed private webhook targets",
                o.host
            )),
            _ => Ok(()),
        }
    }

    fn may_use(&self, _host: &str, ip: IpAddr) -> bool {
        self.allow_private || !crate::plugins::grants::is_private(ip)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute http(s) URI.
    pub fn of(uri: &http::Uri) -> Result<Origin, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Origin { https, host, port })
    }
}

/// The URI as it may be logged or stored: scheme and authority only, since
/// paths and queries often carry credentials.
pub fn redact(uri: &http::Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => "(invalid URI)".into(),
    }
}

/// Resolves the origin's host once and keeps the addresses the rule
/// allows.
async fn resolve(rule: &dyn OriginRule, o: &Origin) -> Result<Vec<SocketAddr>, ConnectFailure> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((o.host.as_str(), o.port))
        .await
        .map_err(|e| ConnectFailure::Io(e.kind(), format!("cannot resolve {}: {e}", o.host)))?
        .collect();
    let addrs: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| rule.may_use(&o.host, a.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(ConnectFailure::Denied(format!(
            "{} resolves only to private addresses; list the address itself or set allow_private = true",
            o.host
        )));
    }
    Ok(addrs)
}

/// Why a new connection could not be made; carried through hyper-util's
/// error chain (`ConnectFailure::find`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("{0}")]
    Denied(String),
    #[error("connection refused")]
    Refused,
    #[error("connection timed out")]
    Timeout,
    #[error("{1}")]
    Io(std::io::ErrorKind, String),
    #[error("TLS: {0}")]
    Tls(String),
}

impl ConnectFailure {
    /// The connect failure behind a client error, if that is what it was.
    pub fn find(e: &hyper_util::client::legacy::Error) -> Option<&ConnectFailure> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(f) = s.downcast_ref::<ConnectFailure>() {
                return Some(f);
            }
            source = s.source();
        }
        None
    }
}

/// Longest wait for a TCP connect (and TLS handshake) to one address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A keep-alive client (HTTP/1.1, or HTTP/2 when the server offers it over
/// TLS) that connects only where `rule` allows.
pub fn client<B>(rule: Arc<dyn OriginRule>, tls: &ClientConfig, max_idle_per_origin: usize) -> Client<Connector, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = Connector {
        rule,
        tls: Arc::new(tls),
    };
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(max_idle_per_origin.max(1))
        .build(connector)
}

#[derive(Clone)]
pub struct Connector {
    rule: Arc<dyn OriginRule>,
    tls: Arc<ClientConfig>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Connection;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), ConnectFailure>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let rule = self.rule.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let o = Origin::of(&uri).map_err(ConnectFailure::Denied)?;
            rule.admits(&o).map_err(ConnectFailure::Denied)?;
            let addrs = resolve(rule.as_ref(), &o).await?;
            let tcp = connect(&addrs).await?;
            if !o.https {
                return Ok(Connection {
                    io: TokioIo::new(Box::new(tcp)),
                    h2: false,
                });
            }
            let name = ServerName::try_from(o.host.clone()).map_err(|e| ConnectFailure::Tls(e.to_string()))?;
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
            )
            .await
            .map_err(|_| ConnectFailure::Timeout)?
            .map_err(|e| ConnectFailure::Tls(e.to_string()))?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(Connection {
                io: TokioIo::new(Box::new(stream)),
                h2,
            })
        })
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectFailure> {
    let mut last = ConnectFailure::Refused;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests are written whole; Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => last = ConnectFailure::Refused,
            Ok(Err(e)) => last = ConnectFailure::Io(e.kind(), format!("{addr}: {e}")),
            Err(_) => last = ConnectFailure::Timeout,
        }
    }
    Err(last)
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A pooled connection, plain or TLS, telling the pool whether ALPN chose
/// HTTP/2.
pub struct Connection {
    io: TokioIo<Box<dyn Io>>,
    h2: bool,
}

impl hyper_util::client::legacy::connect::Connection for Connection {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl hyper::rt::Read for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_urls_may_not_name_private_addresses_unless_allowed() {
        let o = |u: &str| Origin::of(&u.parse().unwrap()).unwrap();
        let strict = PublicOnly { allow_private: false };
        assert!(strict.admits(&o("http://127.0.0.1:8080/x")).is_err());
        assert!(strict.admits(&o("http://[::1]/x")).is_err());
        assert!(strict.admits(&o("https://10.1.2.3/x")).is_err());
        assert!(strict.admits(&o("https://hooks.example.com/x")).is_ok());
        assert!(strict.admits(&o("https://93.184.216.34/x")).is_ok());
        assert!(!strict.may_use("hooks.example.com", "192.168.1.1".parse().unwrap()));
        let open = PublicOnly { allow_private: true };
        assert!(open.admits(&o("http://127.0.0.1:8080/x")).is_ok());
        assert!(Origin::of(&"ftp://a.b/".parse().unwrap()).is_err());
    }
}
