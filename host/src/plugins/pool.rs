//! Reusable instances of one component.
//!
//! Instantiating a component costs far more than calling it, so instances
//! are kept and reused across messages. Reuse is safe because a plugin's
//! state only ever holds its own caches; an instance is thrown away after
//! any trap, timeout or memory-cap hit (its state may be half-updated), and
//! after `MAX_CALLS` calls to bound fragmentation and leaks in the guest.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use super::runtime::{EPOCH_TICK, HostState, PluginMeta, on_epoch};

const MAX_CALLS: u32 = 100_000;

/// A component world the host can instantiate.
pub trait World: Send + Sync + 'static {
    type Pre: Clone + Send + Sync + 'static;
    type Instance: Send + Sync + 'static;
    const KIND: &'static str;

    fn pre(linker: &Linker<HostState>, component: &Component) -> wasmtime::Result<Self::Pre>;

    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<HostState>,
    ) -> Pin<Box<dyn Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: cannot instantiate: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("plugin {plugin}: exceeded its deadline of {ms} ms")]
    Deadline { plugin: String, ms: u64 },
    #[error("plugin {plugin}: exceeded its memory limit of {mib} MiB")]
    Memory { plugin: String, mib: u64 },
    #[error("plugin {plugin} trapped: {reason}")]
    Trap { plugin: String, reason: String },
}

impl PluginError {
    /// The plugin (transport name or personalizer) the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Instantiate { plugin, .. }
            | PluginError::Deadline { plugin, .. }
            | PluginError::Memory { plugin, .. }
            | PluginError::Trap { plugin, .. } => plugin,
        }
    }
}

struct Slot<W: World> {
    store: Store<HostState>,
    instance: W::Instance,
    calls: u32,
}

pub type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

pub struct Pool<W: World> {
    engine: wasmtime::Engine,
    pre: W::Pre,
    pub meta: Arc<PluginMeta>,
    idle: Mutex<Vec<Slot<W>>>,
    max_idle: usize,
}

impl<W: World> Pool<W> {
    pub fn new(engine: &wasmtime::Engine, pre: W::Pre, meta: Arc<PluginMeta>, max_idle: usize) -> Pool<W> {
        Pool {
            engine: engine.clone(),
            pre,
            meta,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// The component as loaded (what it exports).
    pub fn pre(&self) -> &W::Pre {
        &self.pre
    }

    async fn fresh(&self) -> Result<Slot<W>, PluginError> {
        let err = |e: wasmtime::Error| PluginError::Instantiate {
            plugin: self.meta.name.clone(),
            reason: format!("{e:#}"),
        };
        let state = HostState::new(self.meta.clone()).map_err(err)?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_callback(on_epoch);
        store.data_mut().deadline = Instant::now() + self.meta.deadline();
        store.set_epoch_deadline(1);
        let instance = W::instantiate(&self.pre, &mut store)
            .await
            .map_err(|e| self.classify(&store, e))?;
        Ok(Slot {
            store,
            instance,
            calls: 0,
        })
    }

    /// Creates instances until `n` are idle, so that the first messages do
    /// not pay for instantiation (a Python or JavaScript component's
    /// instance costs milliseconds and megabytes). An instance that cannot
    /// be created is an error here, at load, not on every message.
    pub async fn warm(&self, n: usize) -> Result<(), PluginError> {
        let n = n.min(self.max_idle);
        while self.idle() < n {
            let slot = self.fresh().await?;
            self.put_back(slot);
        }
        Ok(())
    }

    /// Creates an instance and drops it: what a call costs on top when no
    /// idle instance is pooled (measured by the micro benchmarks). Returns
    /// the linear memory the new instance held.
    pub async fn instantiate(&self) -> Result<usize, PluginError> {
        self.fresh().await.map(|slot| slot.store.data().memory.bytes)
    }

    /// The same component with no instance reuse: every call gets a fresh
    /// store and instance (the micro benchmarks' comparison).
    pub fn without_reuse(&self) -> Pool<W> {
        Pool::new(&self.engine, self.pre.clone(), self.meta.clone(), 0)
    }

    /// Runs one call on a pooled instance under the component's limits.
    pub async fn call<R, F>(&self, f: F) -> Result<R, PluginError>
    where
        F: for<'a> FnOnce(&'a W::Instance, &'a mut Store<HostState>) -> CallFuture<'a, R>,
    {
        let ran = self.call_by(None, f).await?;
        Ok(ran.expect("a call with no start-by time always runs"))
    }

    /// Runs one call like `call`, unless it cannot start by `start_by`
    /// (`Ok(None)`: nothing ran, the instance goes back to the pool). The
    /// time is checked once the instance is ready, right before the guest
    /// runs, so what comes between the caller's wait and the call (an
    /// instantiation, a preempted thread) cannot make it start later than
    /// allowed: a rate slot's holder calls on its slot or not at all.
    pub async fn call_by<R, F>(&self, start_by: Option<Instant>, f: F) -> Result<Option<R>, PluginError>
    where
        F: for<'a> FnOnce(&'a W::Instance, &'a mut Store<HostState>) -> CallFuture<'a, R>,
    {
        self.call_for(start_by, 1, f).await
    }

    /// Runs one call like `call_by` that does the work of `units` calls
    /// (a batch of messages): its deadline is `units` times the
    /// component's.
    pub async fn call_for<R, F>(&self, start_by: Option<Instant>, units: u32, f: F) -> Result<Option<R>, PluginError>
    where
        F: for<'a> FnOnce(&'a W::Instance, &'a mut Store<HostState>) -> CallFuture<'a, R>,
    {
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut slot = match idle {
            Some(slot) => slot,
            None => self.fresh().await.map_err(|e| self.counted(e))?,
        };
        if start_by.is_some_and(|by| Instant::now() > by) {
            self.put_back(slot);
            return Ok(None);
        }
        let deadline = self.meta.deadline() * units.max(1);
        slot.store.data_mut().begin_call(deadline);
        slot.store.set_epoch_deadline(1);
        // Epoch interruption stops runaway wasm; the timeout also bounds time
        // spent in host I/O on the guest's behalf (a stalled socket).
        let grace = deadline + EPOCH_TICK * 4 + Duration::from_millis(250);
        let Slot { store, instance, .. } = &mut slot;
        let outcome = tokio::time::timeout(grace, f(instance, store)).await;
        match outcome {
            Ok(Ok(r)) => {
                slot.calls += 1;
                // An instance whose handles pile up across calls (a guest
                // that never drops something, or wasmtime-wasi-http 48,
                // which keeps every `request-options` passed to `handle`)
                // is retired well before it would hit the cap and trap.
                let handles = slot.store.data_mut().open_handles();
                let piling_up = handles > self.meta.limits.max_handles as usize / 2;
                if piling_up {
                    tracing::debug!(plugin = %self.meta.name, handles, "instance retired: handles piling up");
                }
                if slot.calls < MAX_CALLS && !piling_up {
                    self.put_back(slot);
                }
                Ok(Some(r))
            }
            Ok(Err(e)) => Err(self.counted(self.classify(&slot.store, e))),
            Err(_) => Err(self.counted(PluginError::Deadline {
                plugin: self.meta.name.clone(),
                ms: deadline.as_millis() as u64,
            })),
        }
    }

    /// Keeps an instance for the next call, if the pool has room.
    fn put_back(&self, slot: Slot<W>) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.max_idle {
            idle.push(slot);
        }
    }

    /// Counts a sandbox failure in `posta_plugin_failures_total`.
    fn counted(&self, error: PluginError) -> PluginError {
        let kind = match &error {
            PluginError::Instantiate { .. } => "instantiate",
            PluginError::Deadline { .. } => "deadline",
            PluginError::Memory { .. } => "memory",
            PluginError::Trap { .. } => "trap",
        };
        metrics::counter!(crate::metrics::PLUGIN_FAILURES, "plugin" => self.meta.name.clone(), "kind" => kind)
            .increment(1);
        error
    }

    fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> PluginError {
        let plugin = self.meta.name.clone();
        if store.data().memory.hit {
            return PluginError::Memory {
                plugin,
                mib: self.meta.limits.memory_mib,
            };
        }
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            return PluginError::Deadline {
                plugin,
                ms: self.meta.limits.deadline_ms,
            };
        }
        // The trap itself, not the wasm backtrace wrapped around it, and
        // the guest's panic message when it printed one.
        let mut reason = match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => e.root_cause().to_string(),
        };
        // A guest that piles up handles traps inside wasmtime-wasi; say
        // which limit it ran into.
        if reason.contains("resource table has no free keys") {
            reason = format!(
                "{reason} (limits.max_handles = {}: too many open streams, sockets or header sets)",
                self.meta.limits.max_handles
            );
        }
        let stderr = store.data().stderr.contents();
        let text = String::from_utf8_lossy(&stderr);
        if let Some(panic) = text.lines().rev().find(|l| l.contains("panicked")) {
            let at = text.find(panic).unwrap_or(0);
            let message: String = text[at..].lines().take(2).collect::<Vec<_>>().join(" ");
            reason = format!("{reason}; {}", message.chars().take(500).collect::<String>());
        }
        // A runtime that traps on a failed request (StarlingMonkey's fetch,
        // now and then) still says what the host refused.
        if let Some(refused) = store.data().refused() {
            reason = format!("{reason} ({refused})");
        }
        PluginError::Trap { plugin, reason }
    }

    pub fn max_idle(&self) -> usize {
        self.max_idle
    }

    /// Instances currently idle in the pool (for tests and metrics).
    pub fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }
}
