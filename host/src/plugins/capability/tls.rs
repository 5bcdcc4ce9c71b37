//! The TLS client the host runs on behalf of plugins: `wasi:tls` for
//! socket transports (SMTP) and HTTPS for `wasi:http`. One rustls config,
//! trusting the system's roots plus an optional extra CA file. TLS needs
//! no grant of its own: it runs over a socket `connect` admitted.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use wasmtime::component::Linker;
use wasmtime_wasi_tls::{
    TlsProvider, TlsStream, TlsTransport, WasiTlsCtx, WasiTlsCtxBuilder, WasiTlsCtxView, WasiTlsView,
};

use super::{Capability, Load, States};
use crate::plugins::runtime::{HostState, PluginMeta};

/// `wasi:tls`, for every component.
pub struct Tls;

impl Capability for Tls {
    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let mut options = wasmtime_wasi_tls::p2::LinkOptions::default();
        options.tls(true);
        wasmtime_wasi_tls::p2::add_to_linker(linker, &options)
    }

    fn load(&self, load: &Load<'_>, shared: &mut States) {
        shared.insert(HostTls(load.tls.clone()));
    }

    fn instantiate(&self, meta: &PluginMeta, state: &mut States) {
        let HostTls(config) = meta.capabilities.get::<HostTls>();
        state.insert(
            WasiTlsCtxBuilder::new()
                .provider(Box::new(HostTls(config.clone())))
                .build(),
        );
    }
}

impl WasiTlsView for HostState {
    fn tls(&mut self) -> WasiTlsCtxView<'_> {
        WasiTlsCtxView {
            ctx: self.capabilities.get_mut::<WasiTlsCtx>(),
            table: &mut self.table,
        }
    }
}

/// Builds the client config. Without any system roots (a bare container)
/// the Mozilla roots compiled into the binary stand in.
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("system TLS roots: {e}");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!("no system TLS roots found; using the bundled Mozilla roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("tls.extra_ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.extra_ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("tls.extra_ca_file {}: no certificates in it", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("tls.extra_ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `wasi:tls` provider over the host's config.
struct HostTls(pub Arc<ClientConfig>);

type Handshake = Pin<Box<dyn Future<Output = Result<Box<dyn TlsStream>, wasmtime_wasi_tls::Error>> + Send>>;

impl TlsProvider for HostTls {
    fn connect(&self, server_name: String, transport: Box<dyn TlsTransport>) -> Handshake {
        let config = self.0.clone();
        Box::pin(async move {
            let name = ServerName::try_from(server_name.clone())
                .map_err(|_| wasmtime_wasi_tls::Error::msg(format!("invalid server name {server_name:?}")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, transport)
                .await
                .map_err(wasmtime_wasi_tls::Error::from)?;
            Ok(Box::new(stream) as Box<dyn TlsStream>)
        })
    }
}
