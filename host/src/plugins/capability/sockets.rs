//! `wasi:sockets` for plugins: which addresses a transport may reach, and
//! how many sockets one instance may hold open.
//!
//! Every socket is a host file descriptor outside the guest's memory cap.
//! An instance is reused across calls and a guest may keep what it opened
//! (the SMTP transport keeps its connection on purpose), so the cap counts
//! the sockets alive in the instance, not the ones opened by one call:
//! `limits.max_sockets` × the instances alive bounds the fds plugins hold.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket;
use wasmtime_wasi::p2::{SocketError, SocketResult, TcpSocket};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView, WasiSocketsView};

use super::Capability;
use crate::config::Capabilities;
use crate::plugins::grants::{self, Grants};
use crate::plugins::runtime::{HostState, PluginMeta};

/// `connect` (and `allow_private`, which also rules `http`'s names).
pub struct Sockets;

impl Capability for Sockets {
    fn configure(&self, caps: &Capabilities, _data_dir: &Path, g: &mut Grants) -> Result<(), String> {
        g.allow_private = caps.allow_private;
        for entry in &caps.connect {
            g.connect.push(grants::endpoint(entry, caps.allow_private)?);
        }
        Ok(())
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        add_to_linker(linker)
    }

    fn prepare(&self, meta: &PluginMeta, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        // The personalizer gets no sockets at all.
        if meta.sockets {
            grant(wasi, meta.grants.clone());
        } else {
            wasi.allow_tcp(false).allow_udp(false);
        }
        Ok(())
    }
}

/// Admits a TCP connect only to a granted address. TCP is on for every
/// transport, so that a connect outside the grant fails with a clear
/// "access denied" instead of "not supported".
fn grant(b: &mut WasiCtxBuilder, grants: Arc<Grants>) {
    b.allow_tcp(true).socket_addr_check(move |addr, use_| {
        let ok = match use_ {
            SocketAddrUse::TcpConnect => grants.may_connect(addr),
            // Connecting binds the socket implicitly to an ephemeral
            // port; that is all the binding a client needs.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            _ => false,
        };
        Box::pin(async move { ok })
    });
}

/// Replaces wasmtime-wasi's `create-tcp-socket` with one that refuses a
/// socket past the instance's cap (`new-socket-limit`, what the guest
/// would see from an OS out of descriptors). Must run after
/// `wasmtime_wasi::p2::add_to_linker_async`.
fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    tcp_create_socket::add_to_linker::<HostState, CappedSockets>(linker, |s| {
        let max = s.meta.limits.max_sockets as usize;
        CappedSocketsView {
            inner: s.sockets(),
            max,
        }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

struct CappedSockets;

impl HasData for CappedSockets {
    type Data<'a> = CappedSocketsView<'a>;
}

struct CappedSocketsView<'a> {
    inner: WasiSocketsCtxView<'a>,
    max: usize,
}

impl tcp_create_socket::Host for CappedSocketsView<'_> {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        // Counting is linear in the instance's open resources, which the
        // table caps at `limits.max_handles`; sockets are created once per
        // connection, not per message.
        let open = self
            .inner
            .table
            .iter_mut()
            .filter(|entry| entry.is::<TcpSocket>())
            .count();
        if open >= self.max {
            tracing::debug!(open, "plugin socket refused: limits.max_sockets reached");
            return Err(ErrorCode::NewSocketLimit.into());
        }
        self.inner.create_tcp_socket(family)
    }
}

// The bindings want the `network` interface's host traits on the same
// view; they pass straight through.
impl network::Host for CappedSocketsView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.inner, error)
    }

    fn network_error_code(&mut self, err: Resource<network::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.inner, err)
    }
}

impl network::HostNetwork for CappedSocketsView<'_> {
    fn drop(&mut self, this: Resource<network::Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.inner, this)
    }
}
