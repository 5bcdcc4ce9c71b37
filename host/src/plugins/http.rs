//! `wasi:http` for plugins: the `send_request` hook that enforces the
//! transport's `http` capability and sends the request itself, to the
//! address it checked (no second DNS lookup an attacker could change) and
//! with the host's TLS roots.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::grants::Grants;

pub struct HttpHooks {
    pub plugin: String,
    pub grants: Arc<Grants>,
    pub tls: Arc<ClientConfig>,
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
        let grants = self.grants.clone();
        let tls = self.tls.clone();
        Box::new(async move {
            let target = match check(&grants, request.uri()).await {
                Ok(t) => t,
                Err(reason) => {
                    tracing::warn!(plugin, uri = %request.uri(), "http request denied: {reason}");
                    return Err(Error::HttpRequestDenied);
                }
            };
            send(request, options, target, tls).await
        })
    }
}

struct Target {
    https: bool,
    host: String,
    addrs: Vec<SocketAddr>,
}

/// The origin must be listed; the addresses its host resolves to must pass
/// the private-address rule.
async fn check(grants: &Grants, uri: &http::Uri) -> Result<Target, String> {
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
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let addrs: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| grants.may_use(&host, a.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "{host} resolves only to private addresses; list the address itself or set allow_private = true"
        ));
    }
    Ok(Target { https, host, addrs })
}

async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => last = Error::ConnectionRefused,
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    target: Target,
    tls: Arc<ClientConfig>,
) -> Result<Sent, Error> {
    let options = options.unwrap_or_default();
    let connect_timeout = options.connect_timeout.unwrap_or(Duration::from_secs(30));
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(Duration::from_secs(60));
    let tcp = connect(&target.addrs, connect_timeout).await?;
    let io: Box<dyn Io> = if target.https {
        let name = ServerName::try_from(target.host.clone()).map_err(|_| Error::HttpRequestUriInvalid)?;
        let stream = tokio::time::timeout(
            connect_timeout,
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    // Origin-form request line: the authority travels in the Host header.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    // The connection runs as its own task; the future handed back to
    // wasi:http owns it and aborts it when dropped.
    let driver = AbortOnDrop(tokio::spawn(conn));
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io = async move {
        let mut driver = driver;
        match (&mut driver.0).await {
            Ok(result) => result.map_err(Error::from),
            Err(e) => Err(Error::InternalError(Some(format!("connection task: {e}")))),
        }
    };
    Ok((response, Box::new(io)))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
