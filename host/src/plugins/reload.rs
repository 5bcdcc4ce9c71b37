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
use super::registry::{Plugins, prepare};

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

impl Plugins {
    /// Reloads every file-based component (the admin's reload). A
    /// replacement that does not load or does not satisfy the contract is
    /// refused and the old component stays in service.
    pub fn reload_all(&self) -> ReloadReport {
        self.reload(Which::All)
    }

    /// Reloads the components whose file changed (the watcher), refusing
    /// bad replacements as `reload_all` does.
    pub fn reload_changed(&self) -> ReloadReport {
        self.reload(Which::Changed)
    }

    fn reload(&self, which: Which) -> ReloadReport {
        let mut report = ReloadReport::default();
        self.reload_one(&self.personalizer, which, &mut report);
        for t in self.transports.values() {
            self.reload_one(&t.loaded, which, &mut report);
        }
        report
    }

    fn reload_one<W: World>(&self, loaded: &Loaded<W>, which: Which, report: &mut ReloadReport) {
        let source = match which {
            Which::All => {
                let s = loaded.source.lock().expect("source lock").clone();
                if s.path.is_none() {
                    return;
                }
                s
            }
            Which::Changed => match loaded.changed() {
                Some(s) => s,
                None => return,
            },
        };
        let old = loaded.pool();
        let label = format!("{} {} ({})", W::KIND, old.name(), source.name);
        match prepare::<W>(&self.engine, &self.linker, &source.name, self.plugins_dir.as_deref()) {
            Ok((pre, fresh)) => {
                let pool = Pool::new(&self.engine, pre, old.meta.clone(), old.max_idle());
                loaded.swap(pool, fresh.modified);
                tracing::info!(plugin = old.name(), component = source.name, "reloaded");
                report.reloaded.push(label);
            }
            Err(e) => {
                // Remember the bad file's time so the watcher does not retry
                // it every second; a newer file is tried again.
                loaded.source.lock().expect("source lock").modified = source.modified_now();
                tracing::error!(plugin = old.name(), "reload refused, keeping the loaded component: {e}");
                report.refused.push(Refusal {
                    component: label,
                    error: e.to_string(),
                });
            }
        }
    }
}

/// Which file-based components a reload reads again.
#[derive(Clone, Copy)]
enum Which {
    All,
    Changed,
}
