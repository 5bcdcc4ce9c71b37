//! The two kinds of component, as the pools instantiate them.

use std::pin::Pin;

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Linker, TypedFunc};

use super::bindings::personalizer::{Personalizer as PersonalizerWorld, PersonalizerPre};
use super::bindings::transport::{Transport as TransportWorld, TransportIndices};
use super::bindings::types::{DeliveryError, Message, Receipt};
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

/// `deliver-batch` (world `batch-transport`) as the host calls it.
pub type DeliverBatch = TypedFunc<(Vec<Message>,), (Vec<Result<Receipt, DeliveryError>>,)>;

/// A transport: world `transport`, or `batch-transport`, which adds
/// `deliver-batch`. The bindings are `transport`'s; `deliver-batch` is
/// looked up when the component exports it, so components built for
/// either world load.
pub struct Transport;

#[derive(Clone)]
pub struct TransportPre {
    instance_pre: wasmtime::component::InstancePre<HostState>,
    indices: TransportIndices,
    batch: Option<ComponentExportIndex>,
}

impl TransportPre {
    /// Whether the component exports `deliver-batch`.
    pub fn batches(&self) -> bool {
        self.batch.is_some()
    }
}

pub struct TransportInstance {
    pub world: TransportWorld,
    pub batch: Option<DeliverBatch>,
}

impl World for Transport {
    type Pre = TransportPre;
    type Instance = TransportInstance;
    const KIND: &'static str = "transport";

    fn pre(linker: &Linker<HostState>, component: &Component) -> wasmtime::Result<TransportPre> {
        let instance_pre = linker.instantiate_pre(component)?;
        Ok(TransportPre {
            indices: TransportIndices::new(&instance_pre)?,
            batch: component.get_export_index(None, "deliver-batch"),
            instance_pre,
        })
    }

    fn instantiate<'a>(
        pre: &'a TransportPre,
        store: &'a mut Store<HostState>,
    ) -> Pin<Box<dyn Future<Output = wasmtime::Result<TransportInstance>> + Send + 'a>> {
        Box::pin(async move {
            let instance = pre.instance_pre.instantiate_async(&mut *store).await?;
            let world = pre.indices.load(&mut *store, &instance)?;
            let batch = match &pre.batch {
                None => None,
                Some(index) => {
                    let func = instance
                        .get_func(&mut *store, index)
                        .ok_or_else(|| wasmtime::format_err!("its export deliver-batch is not a function"))?;
                    let typed = func.typed(&*store).map_err(|e| {
                        wasmtime::format_err!("its export deliver-batch does not have the contract's type: {e:#}")
                    })?;
                    Some(typed)
                }
            };
            Ok(TransportInstance { world, batch })
        })
    }
}
