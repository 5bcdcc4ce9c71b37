//! Loading and calling WebAssembly components: the personalizer and the
//! named transports of posta.toml.

pub mod bindings;
mod calls;
pub mod capability;
pub mod check;
pub mod grants;
#[cfg(feature = "native-bench")]
pub mod native;
pub mod pool;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod scaffold;
pub mod stderr;
pub mod worlds;

pub use pool::{PluginError, Pool};
pub use registry::{LoadError, Plugins, TransportInfo};
pub use worlds::{Personalizer, Transport};

/// Components compiled from plugins/ and embedded at build time.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    pub fn get(name: &str) -> Option<&'static [u8]> {
        BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
    }
}
