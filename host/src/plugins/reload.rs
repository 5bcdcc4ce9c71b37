//! Hot reload: a component loaded from a file can be replaced while the
//! server runs. The new file is compiled and checked against the contract
//! first; only then does it replace the old pool, so a bad file never takes
//! a working transport out of service. Calls already running finish on the
//! old instances; new calls get the new component.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use super::pool::{Pool, World};

/// Where a component came from: bundled ones never change.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub path: Option<PathBuf>,
    pub modified: Option<SystemTime>,
}

impl Source {
    pub fn modified_now(&self) -> Option<SystemTime> {
        self.path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }
}

/// A component's current pool, swappable.
pub struct Loaded<W: World> {
    current: RwLock<Arc<Pool<W>>>,
    pub source: Mutex<Source>,
}

impl<W: World> Loaded<W> {
    pub fn new(pool: Pool<W>, source: Source) -> Loaded<W> {
        Loaded {
            current: RwLock::new(Arc::new(pool)),
            source: Mutex::new(source),
        }
    }

    /// The pool new calls should use.
    pub fn pool(&self) -> Arc<Pool<W>> {
        self.current.read().expect("pool lock").clone()
    }

    pub fn swap(&self, pool: Pool<W>, modified: Option<SystemTime>) {
        *self.current.write().expect("pool lock") = Arc::new(pool);
        self.source.lock().expect("source lock").modified = modified;
    }

    /// The file, if it changed since it was loaded.
    pub fn changed(&self) -> Option<Source> {
        let source = self.source.lock().expect("source lock").clone();
        let now = source.modified_now();
        (source.path.is_some() && now != source.modified).then_some(source)
    }
}

/// What a reload did, per component.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReloadReport {
    pub reloaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Refusal {
    pub component: String,
    pub error: String,
}
