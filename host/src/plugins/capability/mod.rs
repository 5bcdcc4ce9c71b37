//! What a plugin may be granted, one module per capability (the shape of
//! Spin's factors, written out by hand for four): each owns its part of a
//! transport's `capabilities` (checked and resolved into `Grants` when the
//! transport loads), its state shared by a component's instances, its
//! linker entries, its share of an instance's WASI context and its
//! per-instance state. Adding a capability is a module here and a line in
//! `ALL`; nothing else names it.

pub mod files;
pub mod http;
mod http_send;
pub mod sockets;
pub mod tls;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::grants::Grants;
use super::runtime::{HostState, PluginMeta};
use crate::config::Capabilities;

/// One capability's part in loading a transport and building its
/// instances. Every step defaults to nothing.
pub trait Capability: Sync {
    /// Checks and resolves this capability's part of `caps` into `grants`.
    fn configure(&self, _caps: &Capabilities, _data_dir: &Path, _grants: &mut Grants) -> Result<(), String> {
        Ok(())
    }

    /// Its state shared by every instance of one component (a connection
    /// pool), made when the component loads.
    fn load(&self, _load: &Load<'_>, _shared: &mut States) {}

    /// Adds its interfaces to the linker (after WASI's own, which it may
    /// shadow).
    fn link(&self, _linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Ok(())
    }

    /// Its share of a new instance's WASI context.
    fn prepare(&self, _meta: &PluginMeta, _wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        Ok(())
    }

    /// Its state in a new instance.
    fn instantiate(&self, _meta: &PluginMeta, _state: &mut States) {}
}

/// Every capability, in the order they configure and link.
const ALL: &[&dyn Capability] = &[&files::Files, &sockets::Sockets, &tls::Tls, &http::Http];

/// A transport's `capabilities`, resolved; the error names the entry.
pub fn configure(caps: &Capabilities, data_dir: &Path) -> Result<Grants, String> {
    let mut grants = Grants::default();
    for c in ALL {
        c.configure(caps, data_dir, &mut grants)?;
    }
    Ok(grants)
}

/// What a component's capabilities load with.
pub struct Load<'a> {
    pub grants: &'a Arc<Grants>,
    /// The host's TLS client config (system roots plus `tls.extra_ca_file`).
    pub tls: &'a Arc<rustls::ClientConfig>,
    /// How many calls of the component may run at once.
    pub connections: usize,
}

/// Each capability's state shared by a component's instances.
pub fn load(load: &Load<'_>) -> States {
    let mut shared = States::default();
    for c in ALL {
        c.load(load, &mut shared);
    }
    shared
}

/// The linker every component is instantiated with: WASI, each
/// capability's interfaces, and the contract's own `host` and `types`.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    for c in ALL {
        c.link(&mut linker)?;
    }
    use super::bindings::personalizer::posta::plugin;
    plugin::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    plugin::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Each capability's share of an instance's WASI context.
pub fn prepare(meta: &PluginMeta, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
    for c in ALL {
        c.prepare(meta, wasi)?;
    }
    Ok(())
}

/// What the host refused an instance during its current call (an origin
/// or address its grants do not list), for the error the call returns:
/// some guest runtimes report every failed request alike (StarlingMonkey's
/// `fetch` throws "NetworkError" whatever the cause). Cleared when a call
/// begins.
#[derive(Clone, Default)]
pub struct Refusal(Arc<std::sync::Mutex<Option<String>>>);

impl Refusal {
    pub fn note(&self, what: String) {
        *self.0.lock().expect("refusal lock") = Some(what);
    }

    pub fn take(&self) -> Option<String> {
        self.0.lock().expect("refusal lock").take()
    }
}

/// Each capability's state in a new instance.
pub fn instantiate(meta: &PluginMeta) -> States {
    let mut state = States::default();
    state.insert(Refusal::default());
    for c in ALL {
        c.instantiate(meta, &mut state);
    }
    state
}

/// The capabilities' state, one value per type: a component's shared
/// state (`PluginMeta::capabilities`) and each instance's
/// (`HostState::capabilities`) hold it without naming any capability. A
/// lookup is a hash of a type id, made once per host call into that
/// capability.
#[derive(Default)]
pub struct States(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl States {
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The `T` its capability put here. Absent only if that capability is
    /// missing from `ALL`, which every component would show at once.
    pub fn get<T: Any + Send + Sync>(&self) -> &T {
        self.0
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
            .unwrap_or_else(|| panic!("{} was not set up", std::any::type_name::<T>()))
    }

    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> &mut T {
        self.0
            .get_mut(&TypeId::of::<T>())
            .and_then(|v| v.downcast_mut())
            .unwrap_or_else(|| panic!("{} was not set up", std::any::type_name::<T>()))
    }
}
