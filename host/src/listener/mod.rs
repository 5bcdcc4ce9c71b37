//! The HTTP accept loop: hyper's server with what `axum::serve` does not
//! offer, so that no client — a stranger with idle sockets, or one that
//! sends a head and never its body — can keep others out.
//!
//! - A connection cap (past it, new connections wait in the kernel's
//!   backlog rather than costing memory) and a share of it per client
//!   address (`clients`): a client over its share is told so and closed.
//! - Deadlines: a request's head (hyper), its body (`body`), and a
//!   keep-alive connection with no request under way (`activity`).
//! - HTTP/2: streams per connection, header size and reset floods capped.
//! - The client address for per-client limits (`ClientAddr`; behind a
//!   trusted proxy, the address it forwards), and a graceful stop that
//!   lets requests under way finish.

mod activity;
mod body;
mod clients;

pub use body::BodyLimits;
pub use clients::{ClientAddr, TrustedProxies};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower_service::Service;

use crate::api::ApiError;

/// How long requests under way may take to finish after the stop signal.
const DRAIN: Duration = Duration::from_secs(30);
/// HTTP/2 streams one connection may have open at once: a client wanting
/// more opens connections, which its per-client share bounds.
const H2_STREAMS: u32 = 64;
/// Largest request head, HTTP/1 and HTTP/2 alike.
const MAX_HEAD: usize = 64 << 10;

pub struct Limits {
    pub max_connections: usize,
    pub per_client: usize,
    pub header_read_timeout: Duration,
    /// A connection with no request under way is closed after this.
    pub idle_timeout: Duration,
    pub body: BodyLimits,
    pub proxies: TrustedProxies,
}

pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let per_client = clients::Connections::new(limits.per_client);
    let (stop, stopping) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS)
        .max_header_list_size(MAX_HEAD as u32)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        // A peer that stops answering pings is gone: its streams end.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(held) = per_client.admit(peer.ip(), limits.proxies.trusts(peer.ip())) else {
            turn_away(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, limits, stopping) = (router.clone(), builder.clone(), limits.clone(), stopping.clone());
        tokio::spawn(async move {
            connection(stream, peer, router, &builder, &limits, stopping).await;
            drop((held, slot));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all of them back means
    // every request under way has finished.
    let drained = tokio::time::timeout(DRAIN, slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!("requests still running {} s after the stop signal", DRAIN.as_secs());
    }
    Ok(())
}

/// Serves one connection until it ends, closing it gracefully when the
/// server stops or when it has been idle for `idle_timeout`.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    builder: &Builder<TokioExecutor>,
    limits: &Arc<Limits>,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = activity::Activity::new();
    let service = {
        let (activity, limits) = (activity.clone(), limits.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = activity.begin();
            let client = limits.proxies.client(peer.ip(), req.headers());
            let whole = !body::streams(req.headers());
            let (mut req, expired) = {
                let (parts, incoming) = req.into_parts();
                let (b, expired) = body::DeadlineBody::new(axum::body::Body::new(incoming), limits.body, whole);
                (hyper::Request::from_parts(parts, axum::body::Body::new(b)), expired)
            };
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(ClientAddr(client));
            let mut router = router.clone();
            async move {
                let response = router.call(req).await.unwrap_or_else(|e| match e {});
                let response = if expired.get() && !response.status().is_success() {
                    body_timeout()
                } else {
                    response
                };
                Ok::<_, Infallible>(response.map(|b| activity::hold_until_written(b, busy)))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_check = match activity.idle_since() {
            Some(since) => since + limits.idle_timeout,
            None => tokio::time::Instant::now() + limits.idle_timeout,
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stopping.changed(), if !closing => {
                if changed.is_err() || *stopping.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = tokio::time::sleep_until(idle_check), if !closing => {
                if activity.idle_since().is_some_and(|since| since.elapsed() >= limits.idle_timeout) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The answer to a request whose body missed its deadline; the connection
/// closes after it (the rest of the body was never read).
fn body_timeout() -> axum::response::Response {
    let mut r = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "the request body did not arrive in time (server.body_idle_timeout_ms, server.body_timeout_ms)",
    )
    .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A client over its share of connections: a short answer if its socket
/// takes it at once (no waiting on a client that does not read), then
/// closed.
fn turn_away(stream: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"this address has too many open connections (server.max_connections_per_client)"}}"#;
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(reply.as_bytes());
    drop(stream);
}
