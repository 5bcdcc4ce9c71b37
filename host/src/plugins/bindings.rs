//! Host-side bindings of the WIT worlds in `wit/`.

pub mod personalizer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "posta:plugin/personalizer",
        exports: { default: async },
    });
}

pub mod transport {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "posta:plugin/transport",
        exports: { default: async },
        with: {
            "posta:plugin/types": super::personalizer::posta::plugin::types,
            "posta:plugin/host": super::personalizer::posta::plugin::host,
        },
    });
}

pub use personalizer::posta::plugin::{host, types};
