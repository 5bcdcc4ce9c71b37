//! The loaded components, by role: one personalizer and the named
//! transports, and their lookup. Components are compiled once (one
//! `InstancePre` each) and called through instance pools (`calls`);
//! `reload` replaces them while the server runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::{Component, Linker};

use super::grants::Grants;
use super::pool::{PluginError, Pool, World};
use super::reload::{Loaded, Source};
use super::runtime::{HostState, PluginMeta, engine};
use super::worlds::{Personalizer, Transport};
use crate::config::{self, Capabilities, Config, Limits};
use crate::dkim::DkimKeys;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("component {name:?}: not a bundled component and no file at {path}")]
    NotFound { name: String, path: PathBuf },
    #[error("component {name:?}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("component {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("transport {name:?}: {reason}")]
    Capability { name: String, reason: String },
}

/// Messages per `deliver-batch` call when a transport sets no
/// `max_batch`: enough that a pipelining SMTP client spends one round trip
/// per message, few enough that a failed call (a trap, a timeout) sends
/// only a handful back for a retry.
const DEFAULT_MAX_BATCH: usize = 16;

/// A transport as GET /transports shows it: no config values, no secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransportInfo {
    pub name: String,
    pub component: String,
    pub default: bool,
    pub rate_limit: Option<u32>,
    pub max_in_flight: usize,
    /// Messages per call at most, when the component exports
    /// `deliver-batch`.
    pub max_batch: usize,
    pub config_keys: Vec<String>,
    pub capabilities: Capabilities,
    pub limits: Limits,
}

pub struct TransportEntry {
    pub loaded: Loaded<Transport>,
    pub info: TransportInfo,
    /// `native:log`: the log writer in the host (bench-only baseline).
    #[cfg(feature = "native-bench")]
    pub(super) native: Option<super::native::LogWriter>,
}

pub struct Plugins {
    pub engine: wasmtime::Engine,
    pub(super) linker: Linker<HostState>,
    pub(super) plugins_dir: Option<PathBuf>,
    pub personalizer: Loaded<Personalizer>,
    pub transports: BTreeMap<String, Arc<TransportEntry>>,
    pub default_transport: String,
    /// `native:personalize`: render in the host (bench-only baseline).
    #[cfg(feature = "native-bench")]
    pub(super) native_personalizer: bool,
}

impl Plugins {
    pub fn load(cfg: &Config, data_dir: &Path) -> Result<Plugins, LoadError> {
        let cache = cfg.server.compile_cache(data_dir);
        let engine = engine(cache.as_deref()).map_err(|e| LoadError::Invalid {
            name: "engine".into(),
            reason: format!("{e:#}"),
        })?;
        let linker = super::capability::linker(&engine).map_err(|e| LoadError::Invalid {
            name: "linker".into(),
            reason: format!("{e:#}"),
        })?;
        let tls = super::capability::tls::client_config(cfg.tls.extra_ca_file.as_deref()).map_err(|reason| {
            LoadError::Invalid {
                name: "tls".into(),
                reason,
            }
        })?;
        // Personalize calls run on the engine's threads, one per core at a
        // time (more only when a call yields); idle instances beyond that
        // would only hold memory. A burst beyond it instantiates afresh.
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 2;
        let personalizer = {
            let meta = Arc::new(PluginMeta {
                sockets: false,
                ..PluginMeta::new(
                    cfg.personalizer.clone(),
                    // The content limits, for the personalizer to enforce
                    // while it renders.
                    BTreeMap::from([
                        (
                            "max_message_bytes".to_string(),
                            cfg.limits.max_message_bytes.to_string(),
                        ),
                        ("template_fuel".to_string(), cfg.limits.template_fuel.to_string()),
                    ]),
                    cfg.limits,
                    Grants::default(),
                    tls.clone(),
                    1,
                )
            });
            let (pre, source) =
                prepare::<Personalizer>(&engine, &linker, &cfg.personalizer, cfg.server.plugins_dir.as_deref())?;
            Loaded::new(Pool::new(&engine, pre, meta, workers), source)
        };
        let dkim = Arc::new(
            DkimKeys::load(&cfg.dkim, cfg.config_dir.as_deref()).map_err(|e| LoadError::Invalid {
                name: "dkim".into(),
                reason: e.to_string(),
            })?,
        );
        let mut transports = BTreeMap::new();
        for (name, t) in &cfg.transports {
            let (pre, source) =
                prepare::<Transport>(&engine, &linker, &t.component, cfg.server.plugins_dir.as_deref())?;
            let mut values: BTreeMap<String, String> = t
                .config
                .iter()
                .map(|(k, v)| (k.clone(), config::expand(&config::value_to_string(v), data_dir)))
                .collect();
            for (key, var) in &t.secrets {
                let value = std::env::var(var).map_err(|_| LoadError::Capability {
                    name: name.clone(),
                    reason: format!("secret {key:?} reads environment variable {var}, which is not set"),
                })?;
                values.insert(key.clone(), value);
            }
            let grants =
                super::capability::configure(&t.capabilities, data_dir).map_err(|reason| LoadError::Capability {
                    name: name.clone(),
                    reason,
                })?;
            let limits = t.limits.unwrap_or(cfg.limits);
            let max_in_flight = t.max_in_flight.unwrap_or(cfg.delivery.max_in_flight).max(1);
            let info = TransportInfo {
                name: name.clone(),
                component: t.component.clone(),
                default: name == cfg.default_transport(),
                rate_limit: t.rate_limit,
                max_in_flight,
                max_batch: t.max_batch.unwrap_or(DEFAULT_MAX_BATCH).max(1),
                config_keys: values.keys().cloned().collect(),
                capabilities: t.capabilities.clone(),
                limits,
            };
            let meta = Arc::new(PluginMeta {
                dkim: dkim.clone(),
                ..PluginMeta::new(name.clone(), values, limits, grants, tls.clone(), max_in_flight)
            });
            #[cfg(feature = "native-bench")]
            let native = match t.component.strip_prefix(super::native::PREFIX) {
                Some(_) => {
                    let path = meta.config.get("path").cloned().unwrap_or_default();
                    Some(
                        super::native::LogWriter::open(Path::new(&path)).map_err(|e| LoadError::Invalid {
                            name: t.component.clone(),
                            reason: format!("cannot open {path}: {e}"),
                        })?,
                    )
                }
                None => None,
            };
            let loaded = Loaded::new(Pool::new(&engine, pre, meta, max_in_flight), source);
            transports.insert(
                name.clone(),
                Arc::new(TransportEntry {
                    loaded,
                    info,
                    #[cfg(feature = "native-bench")]
                    native,
                }),
            );
        }
        Ok(Plugins {
            engine,
            linker,
            plugins_dir: cfg.server.plugins_dir.clone(),
            personalizer,
            transports,
            default_transport: cfg.default_transport().to_string(),
            #[cfg(feature = "native-bench")]
            native_personalizer: cfg.personalizer.starts_with(super::native::PREFIX),
        })
    }

    /// Creates every pool's instances ahead of the first message: one per
    /// `max_in_flight` slot for a transport, one per engine worker for the
    /// personalizer.
    pub async fn warm(&self) -> Result<(), LoadError> {
        let invalid = |e: PluginError| LoadError::Invalid {
            name: e.plugin().to_string(),
            reason: e.to_string(),
        };
        let personalizer = self.personalizer.pool();
        personalizer.warm(personalizer.max_idle()).await.map_err(invalid)?;
        for entry in self.transports.values() {
            let pool = entry.loaded.pool();
            pool.warm(entry.info.max_in_flight).await.map_err(invalid)?;
        }
        Ok(())
    }

    pub fn transport(&self, name: &str) -> Option<&Arc<TransportEntry>> {
        self.transports.get(name)
    }
}

/// Compiles a component, checks its contract version and kind, and
/// pre-instantiates it: everything that can fail before it serves a call.
pub(super) fn prepare<W: World>(
    engine: &wasmtime::Engine,
    linker: &Linker<HostState>,
    name: &str,
    plugins_dir: Option<&Path>,
) -> Result<(W::Pre, Source), LoadError> {
    let (component, source) = compile(engine, name, plugins_dir)?;
    let invalid = |reason: String| LoadError::Invalid {
        name: name.to_string(),
        reason,
    };
    let report = super::check::inspect(engine, linker, &component).map_err(invalid)?;
    if report.kind != W::KIND {
        return Err(invalid(format!(
            "is a {}, but is configured as a {}",
            report.kind,
            W::KIND
        )));
    }
    let pre = W::pre(linker, &component).map_err(|e| {
        invalid(format!(
            "does not satisfy the posta:plugin@{} {} contract: {e:#}",
            report.version,
            W::KIND
        ))
    })?;
    Ok((pre, source))
}

/// Compiles a bundled component by name or a `.wasm` file by path.
pub fn compile(
    engine: &wasmtime::Engine,
    name: &str,
    plugins_dir: Option<&Path>,
) -> Result<(Component, Source), LoadError> {
    let mut source = Source {
        name: name.to_string(),
        path: None,
        modified: None,
    };
    // A native stand-in still loads its component, so everything else
    // (checks, pools, reload) stays as in the Wasm pipeline.
    #[cfg(feature = "native-bench")]
    let name = name.strip_prefix(super::native::PREFIX).unwrap_or(name);
    let bytes: std::borrow::Cow<'static, [u8]> = match super::bundled::get(name) {
        Some(bytes) => bytes.into(),
        None => {
            let mut path = PathBuf::from(name);
            if path.extension().is_none() {
                path.set_extension("wasm");
            }
            if path.is_relative()
                && let Some(dir) = plugins_dir
            {
                path = dir.join(path);
            }
            if !path.exists() {
                return Err(LoadError::NotFound {
                    name: name.to_string(),
                    path,
                });
            }
            source.path = Some(path.clone());
            source.modified = source.modified_now();
            std::fs::read(&path)
                .map_err(|source| LoadError::Read {
                    name: name.to_string(),
                    path,
                    source,
                })?
                .into()
        }
    };
    let component = Component::new(engine, &bytes).map_err(|e| LoadError::Invalid {
        name: name.to_string(),
        reason: super::check::component_error(&e),
    })?;
    Ok((component, source))
}
