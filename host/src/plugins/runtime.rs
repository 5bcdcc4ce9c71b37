//! The one wasmtime `Engine`, the per-store host state and the sandbox
//! around every call: memory cap (a `ResourceLimiter`), wall-clock deadline
//! (epoch interruption plus a timeout on host I/O), and a WASI context that
//! grants only what the component's capabilities list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::host::{self, Level};
use super::capability::{self, States};
use super::grants::Grants;
use super::stderr::StderrTail;
use crate::config::Limits;
use crate::dkim::DkimKeys;

/// How often the epoch advances; the deadline check runs at this grain.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Builds the shared engine and starts the thread that advances its epoch.
/// With `cache`, compiled components are kept in that directory and a
/// component compiled before (same bytes, same engine settings, same
/// wasmtime) is loaded from it instead of compiled again: wasmtime's own
/// cache, keyed by a hash of all three. Its files are native code the
/// process runs, so the directory must be as trusted as the data
/// directory it defaults to; a file that does not load is compiled afresh.
pub fn engine(cache: Option<&std::path::Path>) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // Sized for the instances the engine keeps alive at once: a pool per
    // component, bounded by the delivery concurrency, with headroom for
    // reloads. Each Rust component has a handful of core instances.
    pool.total_component_instances(512)
        .total_core_instances(4096)
        .total_memories(512)
        .total_tables(4096)
        .total_stacks(512)
        .max_memory_size(1 << 30);
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        // Wasm runs on a fiber whose stack must hold the guest's deepest
        // recursion plus the host's own frames; a guest that recurses
        // without end traps at max_wasm_stack, well before the fiber's end.
        .max_wasm_stack(1 << 20)
        .async_stack_size(4 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // For profiling (docs/profile-*.md): names the guests' compiled
    // functions in /tmp/perf-<pid>.map, so `perf` attributes time inside
    // a component to its functions instead of to unknown addresses.
    if std::env::var_os("POSTA_WASM_PERFMAP").is_some() {
        cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir)
            .map_err(|e| wasmtime::Error::msg(format!("compile cache {}: {e}", dir.display())))?;
        let mut cc = wasmtime::CacheConfig::new();
        cc.with_directory(dir);
        cfg.cache(Some(wasmtime::Cache::new(cc)?));
    }
    let engine = Engine::new(&cfg)?;
    let ticker = engine.weak();
    std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        while let Some(engine) = ticker.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    })?;
    Ok(engine)
}

/// Facts about a loaded component shared by all its instances.
pub struct PluginMeta {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
    pub grants: Arc<Grants>,
    /// The capabilities' state shared by every instance (`capability::load`).
    pub capabilities: States,
    /// Whether the component may create sockets at all (transports; never
    /// the personalizer, which renders content and has no peer).
    pub sockets: bool,
    /// Keys `host.dkim-sign` signs with (transports only).
    pub dkim: Arc<DkimKeys>,
}

/// Config values may be secrets: debug output shows only their keys.
impl std::fmt::Debug for PluginMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMeta")
            .field("name", &self.name)
            .field("config_keys", &self.config.keys().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl PluginMeta {
    /// `connections` is how many calls may run at once, so how many
    /// keep-alive connections per origin are worth keeping.
    pub fn new(
        name: String,
        config: BTreeMap<String, String>,
        limits: Limits,
        grants: Grants,
        tls: Arc<rustls::ClientConfig>,
        connections: usize,
    ) -> PluginMeta {
        let grants = Arc::new(grants);
        PluginMeta {
            capabilities: capability::load(&capability::Load {
                grants: &grants,
                tls: &tls,
                connections,
            }),
            name,
            config,
            limits,
            grants,
            sockets: true,
            dkim: Arc::default(),
        }
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.limits.deadline_ms)
    }

    pub fn wasi(&self, stderr: &StderrTail) -> wasmtime::Result<WasiCtx> {
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone());
        // Granted-directory I/O (the log transport's appends) runs on the
        // calling thread: a small write costs microseconds, a hop through
        // tokio's blocking pool costs two thread wake-ups per write.
        b.allow_blocking_current_thread(true);
        capability::prepare(self, &mut b)?;
        Ok(b.build())
    }
}

/// Memory cap that remembers it refused, so the error can say why. The
/// cap holds per linear memory; a component made of several core modules
/// (CPython's, StarlingMonkey's) has one each.
pub struct MemoryCap {
    max_bytes: usize,
    pub hit: bool,
    /// Linear memory the instance holds, over all its memories.
    pub bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.hit |= !ok;
        if ok {
            self.bytes += desired.saturating_sub(current);
        }
        Ok(ok)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Guest stderr kept per call (its tail), so a trap's error can quote the
/// panic message.
const STDERR_TAIL: usize = 16 * 1024;

/// `host.log` lines one call may write; the rest are counted and dropped,
/// so a plugin cannot flood the operator's log.
const LOG_LINES_PER_CALL: u32 = 100;

pub struct HostState {
    wasi: WasiCtx,
    /// The capabilities' own state (`capability::instantiate`).
    pub(super) capabilities: States,
    pub stderr: StderrTail,
    pub(super) table: ResourceTable,
    /// `host.log` lines written by the current call.
    log_lines: u32,
    pub memory: MemoryCap,
    pub meta: Arc<PluginMeta>,
    pub deadline: Instant,
    /// The From addresses of the messages the current `deliver` (or
    /// `deliver-batch`) call was given: the only mail `host.dkim-sign`
    /// signs during it.
    pub senders: Vec<String>,
}

impl HostState {
    pub fn new(meta: Arc<PluginMeta>) -> wasmtime::Result<HostState> {
        let stderr = StderrTail::new(STDERR_TAIL);
        // Every stream, pollable, socket, header set and request a guest
        // holds is an entry here, in host memory: the cap bounds them all.
        let mut table = ResourceTable::new();
        table.set_max_capacity(meta.limits.max_handles as usize);
        Ok(HostState {
            wasi: meta.wasi(&stderr)?,
            capabilities: capability::instantiate(&meta),
            stderr,
            table,
            log_lines: 0,
            memory: MemoryCap {
                max_bytes: (meta.limits.memory_mib as usize) << 20,
                hit: false,
                bytes: 0,
            },
            deadline: Instant::now() + meta.deadline(),
            senders: Vec::new(),
            meta,
        })
    }
}

impl HostState {
    /// Host handles the instance holds now (sockets, streams, pollables,
    /// header sets, requests).
    pub fn open_handles(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    /// Starts a call: a new deadline, and nothing of the previous call's
    /// stderr or log budget carried over.
    pub fn begin_call(&mut self, deadline: Duration) {
        self.deadline = Instant::now() + deadline;
        self.stderr.clear();
        self.log_lines = 0;
        self.senders.clear();
        self.capabilities.get::<capability::Refusal>().take();
    }

    /// What the host refused this call, if anything (see `Refusal`).
    pub fn refused(&self) -> Option<String> {
        self.capabilities.get::<capability::Refusal>().take()
    }
}

/// Called at every epoch tick while wasm runs: yields to tokio so a busy
/// guest cannot starve other tasks, and stops it at its deadline.
pub fn on_epoch(store: wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    if Instant::now() >= store.data().deadline {
        Ok(UpdateDeadline::Interrupt)
    } else {
        Ok(UpdateDeadline::Yield(1))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Longest line a plugin may log; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

impl host::Host for HostState {
    fn log(&mut self, level: Level, text: String) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > LOG_LINES_PER_CALL {
            if self.log_lines == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(
                    target: "posta::plugin",
                    plugin = self.meta.name.as_str(),
                    "more than {LOG_LINES_PER_CALL} log lines in one call; the rest of this call's are dropped"
                );
            }
            return;
        }
        let mut text = text;
        if text.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let plugin = self.meta.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "posta::plugin", plugin, "{text}"),
            Level::Debug => tracing::debug!(target: "posta::plugin", plugin, "{text}"),
            Level::Info => tracing::info!(target: "posta::plugin", plugin, "{text}"),
            Level::Warn => tracing::warn!(target: "posta::plugin", plugin, "{text}"),
            Level::Error => tracing::error!(target: "posta::plugin", plugin, "{text}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.meta.config.get(&key).cloned()
    }

    fn resolve(&mut self, host: String, port: u16) -> Result<Vec<String>, String> {
        self.meta
            .grants
            .resolve(&host, port)
            .map(|addrs| addrs.iter().map(ToString::to_string).collect())
    }

    fn dkim_sign(&mut self, message: Vec<u8>) -> Result<Option<String>, String> {
        if self.senders.is_empty() {
            return Err("only a transport's deliver call may sign".into());
        }
        self.meta.dkim.sign(&message, &self.senders)
    }

    async fn http_send(&mut self, request: host::HttpRequest) -> Result<host::HttpResponse, host::HttpError> {
        HostState::http_send(self, request).await
    }
}

impl super::bindings::types::Host for HostState {}
