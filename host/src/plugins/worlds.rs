//! The two kinds of component, as the pools instantiate them.

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use super::bindings::personalizer::{Personalizer as PersonalizerWorld, PersonalizerPre};
use super::bindings::transport::{Transport as TransportWorld, TransportPre};
use super::pool::World;
use super::runtime::HostState;

pub struct Personalizer;
pub struct Transport;

impl World for Personalizer {
    type Pre = PersonalizerPre<HostState>;
    type Instance = PersonalizerWorld;
    const KIND: &'static str = "personalizer";

    fn pre(linker: &Linker<HostState>, component: &Component) -> wasmtime::Result<Self::Pre> {
        PersonalizerPre::new(linker.instantiate_pre(component)?)
    }

    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a>> {
        Box::pin(pre.instantiate_async(store))
    }
}

impl World for Transport {
    type Pre = TransportPre<HostState>;
    type Instance = TransportWorld;
    const KIND: &'static str = "transport";

    fn pre(linker: &Linker<HostState>, component: &Component) -> wasmtime::Result<Self::Pre> {
        TransportPre::new(linker.instantiate_pre(component)?)
    }

    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a>> {
        Box::pin(pre.instantiate_async(store))
    }
}
