//! `wasi:http` for plugins: the `send_request` hook that enforces the
//! transport's `http` capability and sends the request itself, to the
//! address it checked (no second DNS lookup an attacker could change) and
//! with the host's TLS roots, over a keep-alive pool per transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::pin::Pin;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connected;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::grants::Grants;
use super::runtime::PluginMeta;

pub struct HttpHooks {
    plugin: String,
    grants: Arc<Grants>,
    client: HttpClient,
    /// No request outlives the plugin call that made it.
    deadline: Duration,
    /// Requests of this instance not yet finished (response body still
    /// open): each may hold a connection, so they count against
    /// `limits.max_sockets` like the guest's own sockets.
    open: Arc<AtomicUsize>,
    max_open: usize,
}

impl HttpHooks {
    pub fn new(meta: &PluginMeta) -> HttpHooks {
        HttpHooks {
            plugin: meta.name.clone(),
            grants: meta.grants.clone(),
            client: meta.http.clone(),
            deadline: meta.deadline(),
            open: Arc::default(),
            max_open: meta.limits.max_sockets as usize,
        }
    }
}

/// One open request; dropped with its response body (or with the request
/// when it fails).
struct OpenRequest(Arc<AtomicUsize>);

impl OpenRequest {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<OpenRequest> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| OpenRequest(open.clone()))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        drop(fut);
        let plugin = self.plugin.clone();
        let denied = origin(&self.grants, request.uri()).err();
        let client = self.client.clone();
        let deadline = self.deadline;
        let open = OpenRequest::take(&self.open, self.max_open);
        Box::new(async move {
            if let Some(reason) = denied {
                tracing::warn!(plugin, uri = %redact(request.uri()), "http request denied: {reason}");
                return Err(Error::HttpRequestDenied);
            }
            let Some(open) = open else {
                tracing::debug!(plugin, "http request refused: limits.max_sockets requests open");
                return Err(Error::ConnectionLimitReached);
            };
            client.send(request, options, deadline, open).await
        })
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

struct Origin {
    https: bool,
    host: String,
    port: u16,
}

/// The request's origin, which the transport's `http` capability must list.
fn origin(grants: &Grants, uri: &http::Uri) -> Result<Origin, String> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if grants.origin(https, &host, port).is_none() {
        return Err("origin not in this transport's http capability".into());
    }
    Ok(Origin { https, host, port })
}

/// Resolves the origin's host once and keeps the addresses the
/// private-address rule allows; the connection goes to one of these, never
/// to a second answer an attacker's DNS could give.
async fn resolve(grants: &Grants, o: &Origin) -> Result<Vec<SocketAddr>, ConnectFailure> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((o.host.as_str(), o.port))
        .await
        .map_err(|e| ConnectFailure::Io(e.kind(), format!("cannot resolve {}: {e}", o.host)))?
        .collect();
    let addrs: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| grants.may_use(&o.host, a.ip()))
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
/// error chain and turned back into a `wasi:http` error code.
#[derive(Debug, thiserror::Error)]
enum ConnectFailure {
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
    fn to_wasi(&self) -> Error {
        match self {
            ConnectFailure::Denied(_) => Error::HttpRequestDenied,
            ConnectFailure::Refused => Error::ConnectionRefused,
            ConnectFailure::Timeout => Error::ConnectionTimeout,
            ConnectFailure::Io(kind, text) => Error::Connect(std::io::Error::new(*kind, text.clone())),
            ConnectFailure::Tls(text) => Error::Tls(std::io::Error::other(text.clone())),
        }
    }
}

/// Longest wait for a TCP connect (and TLS handshake) to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One per transport, shared by all its instances: keep-alive connections
/// per origin (HTTP/1.1, or HTTP/2 when the server offers it over TLS), so
/// a webhook call costs a request, not a TCP and TLS handshake.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<Connector, WasiBody>,
}

impl HttpClient {
    pub fn new(grants: Arc<Grants>, tls: &ClientConfig, max_idle_per_origin: usize) -> HttpClient {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = Connector {
            grants,
            tls: Arc::new(tls),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(max_idle_per_origin.max(1))
            .build(connector);
        HttpClient { client }
    }

    async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        deadline: Duration,
        open: OpenRequest,
    ) -> Result<Sent, Error> {
        let options = options.unwrap_or_default();
        let connect = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
        let first_byte = options.first_byte_timeout.unwrap_or(Duration::from_secs(60));
        let limit = (connect + first_byte).min(deadline);
        let response = match tokio::time::timeout(limit, self.client.request(request)).await {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(client_error(e)),
        };
        // The request counts as open until its body is dropped.
        let response = response.map(|body| {
            body.map_err(Error::from)
                .map_frame(move |frame| {
                    let _ = &open;
                    frame
                })
                .boxed_unsync()
        });
        // The pool's own tasks drive the connection; nothing is left for
        // wasi:http to await once the response has arrived.
        let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
        Ok((response, io))
    }
}

fn client_error(e: hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<ConnectFailure>() {
            return f.to_wasi();
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Error::ConnectionReadTimeout;
            }
            if h.is_incomplete_message() || h.is_closed() {
                return Error::ConnectionTerminated;
            }
        }
        source = s.source();
    }
    Error::InternalError(Some(e.to_string()))
}

#[derive(Clone)]
struct Connector {
    grants: Arc<Grants>,
    tls: Arc<ClientConfig>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Connection;
    type Error = ConnectFailure;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Connection, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), ConnectFailure>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let grants = self.grants.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let o = origin(&grants, &uri).map_err(ConnectFailure::Denied)?;
            let addrs = resolve(&grants, &o).await?;
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
struct Connection {
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
    fn open_requests_are_capped_and_released_on_drop() {
        let open = Arc::new(AtomicUsize::new(0));
        let first = OpenRequest::take(&open, 2).expect("first");
        let second = OpenRequest::take(&open, 2).expect("second");
        assert!(OpenRequest::take(&open, 2).is_none(), "a third is over the cap");
        drop(first);
        let third = OpenRequest::take(&open, 2).expect("a slot came free");
        drop((second, third));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
