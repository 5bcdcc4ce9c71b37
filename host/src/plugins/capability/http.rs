//! `wasi:http` for plugins: the `send_request` hook that enforces the
//! transport's `http` capability and sends the request itself, to the
//! address it checked (no second DNS lookup an attacker could change) and
//! with the host's TLS roots, over a keep-alive pool per transport (the
//! connector is `crate::outbound`'s; the transport's grants are its rule).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use rustls::ClientConfig;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::{Capability, Load, Refusal, States};
use crate::config::Capabilities;
use crate::outbound::{CONNECT_TIMEOUT, ConnectFailure, Connector, Origin, OriginRule, redact};
use crate::plugins::grants::{self, Grants};
use crate::plugins::runtime::{HostState, PluginMeta};

/// `http`: origins a transport may send requests to through `wasi:http`.
pub struct Http;

/// Header bytes one `wasi:http` fields resource may hold (wasmtime's
/// default is 128 KiB); with the handle cap this bounds what headers can
/// pile up in host memory per instance.
const HTTP_FIELD_BYTES: usize = 32 * 1024;

/// An instance's `wasi:http` context and the hook that sends its requests.
struct HttpState {
    ctx: WasiHttpCtx,
    hooks: HttpHooks,
}

impl Capability for Http {
    fn configure(&self, caps: &Capabilities, _data_dir: &Path, g: &mut Grants) -> Result<(), String> {
        for entry in &caps.http {
            g.http.push(grants::origin(entry)?);
        }
        Ok(())
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }

    fn load(&self, load: &Load<'_>, shared: &mut States) {
        shared.insert(HttpClient::new(load.grants.clone(), load.tls, load.connections));
    }

    fn instantiate(&self, meta: &PluginMeta, state: &mut States) {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(HTTP_FIELD_BYTES);
        state.insert(HttpState {
            ctx,
            hooks: HttpHooks::new(meta, state.get::<Refusal>().clone()),
        });
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let state = self.capabilities.get_mut::<HttpState>();
        WasiHttpCtxView {
            ctx: &mut state.ctx,
            table: &mut self.table,
            hooks: &mut state.hooks,
        }
    }
}

#[derive(Clone)]
pub(super) struct HttpHooks {
    pub(super) plugin: String,
    pub(super) grants: Arc<Grants>,
    pub(super) client: HttpClient,
    /// No request outlives the plugin call that made it.
    pub(super) deadline: Duration,
    /// Requests of this instance not yet finished (response body still
    /// open): each may hold a connection, so they count against
    /// `limits.max_sockets` like the guest's own sockets.
    open: Arc<AtomicUsize>,
    max_open: usize,
    pub(super) refusal: Refusal,
}

impl HttpHooks {
    /// A slot among the instance's open requests, if one is free.
    pub(super) fn open(&self) -> Option<OpenRequest> {
        OpenRequest::take(&self.open, self.max_open)
    }

    fn new(meta: &PluginMeta, refusal: Refusal) -> HttpHooks {
        HttpHooks {
            plugin: meta.name.clone(),
            grants: meta.grants.clone(),
            client: meta.capabilities.get::<HttpClient>().clone(),
            deadline: meta.deadline(),
            open: Arc::default(),
            max_open: meta.limits.max_sockets as usize,
            refusal,
        }
    }
}

impl HostState {
    /// Sends a request for the contract's `http-send` (`super::http_send`).
    pub async fn http_send(
        &mut self,
        request: crate::plugins::bindings::host::HttpRequest,
    ) -> Result<crate::plugins::bindings::host::HttpResponse, crate::plugins::bindings::host::HttpError> {
        // A clone (handles only), so the request does not hold the
        // instance's state borrowed while it waits.
        let hooks = self.capabilities.get::<HttpState>().hooks.clone();
        super::http_send::send(hooks, request).await
    }
}

/// One open request; dropped with its response body (or with the request
/// when it fails).
pub(super) struct OpenRequest(Arc<AtomicUsize>);

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
        if denied.is_some() {
            self.refusal.note(format!(
                "the host refused a request to {}: its origin is not in this transport's capabilities.http",
                redact(request.uri())
            ));
        }
        let client = self.client.clone();
        let deadline = self.deadline;
        let open = self.open();
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

/// The request's origin, which the transport's `http` capability must list.
pub(super) fn origin(grants: &Grants, uri: &http::Uri) -> Result<Origin, String> {
    let o = Origin::of(uri)?;
    grants.admits(&o)?;
    Ok(o)
}

impl OriginRule for Grants {
    fn admits(&self, o: &Origin) -> Result<(), String> {
        match self.origin(o.https, &o.host, o.port) {
            Some(_) => Ok(()),
            None => Err("origin not in this transport's http capability".into()),
        }
    }

    fn may_use(&self, host: &str, ip: std::net::IpAddr) -> bool {
        Grants::may_use(self, host, ip)
    }
}

fn to_wasi(f: &ConnectFailure) -> Error {
    match f {
        ConnectFailure::Denied(_) => Error::HttpRequestDenied,
        ConnectFailure::Refused => Error::ConnectionRefused,
        ConnectFailure::Timeout => Error::ConnectionTimeout,
        ConnectFailure::Io(kind, text) => Error::Connect(std::io::Error::new(*kind, text.clone())),
        ConnectFailure::Tls(text) => Error::Tls(std::io::Error::other(text.clone())),
    }
}

/// One per transport, shared by all its instances: keep-alive connections
/// per origin (HTTP/1.1, or HTTP/2 when the server offers it over TLS), so
/// a webhook call costs a request, not a TCP and TLS handshake.
#[derive(Clone)]
pub(super) struct HttpClient {
    pub(super) client: Client<Connector, WasiBody>,
}

impl HttpClient {
    fn new(grants: Arc<Grants>, tls: &ClientConfig, max_idle_per_origin: usize) -> HttpClient {
        HttpClient {
            client: crate::outbound::client(grants, tls, max_idle_per_origin),
        }
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

pub(super) fn client_error(e: hyper_util::client::legacy::Error) -> Error {
    if let Some(f) = ConnectFailure::find(&e) {
        return to_wasi(f);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
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
