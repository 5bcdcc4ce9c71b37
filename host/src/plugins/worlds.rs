//! The two kinds of component, as the pools instantiate them.

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use super::bindings::personalizer::{Personalizer as PersonalizerWorld, PersonalizerPre};
use super::bindings::transport::{Transport as TransportWorld, TransportPre};
use super::pool::World;
use super::runtime::HostState;

/// A world marker over its bindgen'd types: the two differ only in names.
macro_rules! world {
    ($marker:ident, $pre:ident, $instance:ident, $kind:literal) => {
        pub struct $marker;

        impl World for $marker {
            type Pre = $pre<HostState>;
            type Instance = $instance;
            const KIND: &'static str = $kind;

            fn pre(linker: &Linker<HostState>, component: &Component) -> wasmtime::Result<Self::Pre> {
                $pre::new(linker.instantiate_pre(component)?)
            }

            fn instantiate<'a>(
                pre: &'a Self::Pre,
                store: &'a mut Store<HostState>,
            ) -> std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a>> {
                Box::pin(pre.instantiate_async(store))
            }
        }
    };
}

world!(Personalizer, PersonalizerPre, PersonalizerWorld, "personalizer");
world!(Transport, TransportPre, TransportWorld, "transport");
