//! Wiring for `posta serve`: storage, plugins, engine, HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::Engine;
use crate::plugins::Plugins;
use crate::store::Store;

pub const DB_FILE: &str = "posta.redb";

/// Creates the data directory and returns its absolute path: plugins are
/// granted directories by absolute path.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))
}

pub fn open_store(data_dir: &Path, cache_mib: usize) -> anyhow::Result<Store> {
    let path = data_dir.join(DB_FILE);
    Store::open_with_cache(&path, cache_mib.max(1) << 20).map_err(|e| {
        anyhow::anyhow!(
            "cannot open {}: {e} (is another posta process using this data directory?)",
            path.display()
        )
    })
}

/// The store `config` names: its `[database] url` (PostgreSQL, shared by
/// every node given it) or redb in the data directory.
pub async fn connect_store(config: &Config, data_dir: &Path) -> anyhow::Result<Store> {
    match &config.database.url {
        None => open_store(data_dir, config.server.db_cache_mib),
        Some(url) => Store::connect(url, config.database.max_connections)
            .await
            .map_err(|e| anyhow::anyhow!("database: {e}")),
    }
}

/// A running instance: everything `serve` and the demo need.
pub struct Instance {
    pub store: Store,
    pub engine: Engine,
    pub data_dir: PathBuf,
    pub config: Config,
    /// Records opens and clicks the tracking endpoints take.
    pub tracker: std::sync::Arc<crate::tracking::Tracker>,
    _engine_runtime: EngineRuntime,
}

/// The delivery engine's own tokio runtime. API requests run on the main
/// runtime, so under a full-speed send they wait for a free core (the OS
/// schedules threads fairly), not behind every runnable message task.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl EngineRuntime {
    fn new() -> anyhow::Result<EngineRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("posta-engine")
            .on_thread_start(|| crate::scheduling::set_thread_role(crate::scheduling::Role::Bulk))
            .enable_all()
            .build()
            .context("starting the engine runtime")?;
        Ok(EngineRuntime(Some(rt)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle().clone()
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        // Dropped from async code at exit: do not block on its tasks.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Instance {
    pub async fn start(config: Config) -> anyhow::Result<Instance> {
        // The recorder first, so that start-up work is counted too.
        crate::metrics::handle();
        let data_dir = prepare_data_dir(&config.server.data_dir)?;
        let store = connect_store(&config, &data_dir).await?;
        let plugins = {
            let (config, data_dir) = (config.clone(), data_dir.clone());
            tokio::task::spawn_blocking(move || Plugins::load(&config, &data_dir)).await??
        };
        plugins.warm().await?;
        crate::memory::release();
        tokio::spawn(housekeeping());
        let engine_runtime = EngineRuntime::new()?;
        let engine = Engine::start_on(
            engine_runtime.handle(),
            store.clone(),
            Arc::new(plugins),
            &config,
            Arc::new(crate::engine::clock::SystemClock),
        )
        .await?;
        Ok(Instance {
            tracker: crate::tracking::Tracker::start(store.clone()),
            store,
            engine,
            data_dir,
            config,
            _engine_runtime: engine_runtime,
        })
    }

    pub async fn router(&self) -> anyhow::Result<axum::Router> {
        let state = AppState {
            app: crate::app::App {
                store: self.store.clone(),
                engine: self.engine.clone(),
                scans: crate::app::segments::scans(),
            },
            secret: Arc::new(self.store.secret("unsubscribe").await?),
            bounces: self.config.bounces,
            max_import_bytes: self.config.server.max_import_bytes,
            metrics_token: self
                .config
                .server
                .metrics_token
                .clone()
                .or_else(|| std::env::var("POSTA_METRICS_TOKEN").ok())
                .filter(|t| !t.is_empty())
                .map(Arc::from),
            allow_private_webhooks: self.config.webhooks.allow_private,
            transfers: Default::default(),
            tracker: self.tracker.clone(),
            tracking_limit: crate::api::per_client::PerClient::new(self.config.server.tracking_rate_per_ip),
        };
        let secure_cookies = self.config.base_url().starts_with("https://");
        let dashboard = crate::web::router(
            crate::web::Web::new(state.clone(), secure_cookies),
            self.config.server.max_body_bytes,
        );
        Ok(api::router(
            state,
            self.config.server.max_body_bytes,
            self.config.server.public_rate_per_ip,
        )
        .merge(dashboard))
    }
}

/// `posta serve`: binds `server.listen` and runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen: SocketAddr = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    run(listener, config, shutdown_signal()).await
}

/// Runs the server on `listener` until `shutdown` resolves, then stops
/// cleanly: HTTP first, then the deliveries under way. What `serve` does
/// without the process's port and signals, so a test can run a server in
/// its own process.
pub async fn run(listener: TcpListener, mut config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    // Links in mail must name the port actually bound (--listen …:0).
    config.server.listen = addr;
    let instance = Instance::start(config).await?;
    if instance.store.user_count().await? == 0 {
        match instance.store.create_user("admin@posta.localhost".into()).await {
            Ok((user, key)) => {
                println!("created user {} (first start); API key:", user.email);
                println!("{key}");
            }
            // Another node sharing the database created it first.
            Err(crate::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Tests and scripts read this line to learn an ephemeral port.
    println!("posta listening on http://{addr}");
    tracing::info!(data_dir = %instance.data_dir.display(), "serving");
    tokio::spawn(watch_plugins(instance.engine.plugins().clone()));
    let tls = crate::plugins::capability::tls::client_config(instance.config.tls.extra_ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("tls.extra_ca_file: {e}"))?;
    let deliverer = crate::webhooks::Deliverer::new(instance.store.clone(), instance.config.webhooks.clone(), &tls);
    tokio::spawn(deliverer.run());
    let srv = &instance.config.server;
    let ms = std::time::Duration::from_millis;
    let limits = crate::listener::Limits {
        max_connections: srv.max_connections,
        per_client: srv.max_connections_per_client,
        header_read_timeout: ms(srv.header_read_timeout_ms),
        idle_timeout: ms(srv.idle_timeout_ms),
        body: crate::listener::BodyLimits {
            idle: ms(srv.body_idle_timeout_ms),
            total: ms(srv.body_timeout_ms),
        },
        proxies: crate::listener::TrustedProxies::new(srv.trusted_proxies.clone(), &srv.client_ip_header),
    };
    crate::listener::serve(listener, instance.router().await?, limits, shutdown).await?;
    // Opens and clicks answered but not yet stored.
    instance.tracker.flush().await;
    // HTTP has stopped accepting; let deliveries under way finish and
    // their outcomes reach the disk before exiting.
    let left = instance.engine.shutdown(std::time::Duration::from_secs(30)).await;
    if left == 0 {
        tracing::info!("stopped cleanly");
    } else {
        tracing::warn!(
            campaigns = left,
            "stopped with messages in flight; they are delivered after the next start"
        );
    }
    Ok(())
}

/// Reloads a component whose file changed. Polling once a second is cheap
/// (a stat per file-based component) and needs no platform watcher.
async fn watch_plugins(plugins: Arc<Plugins>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let p = plugins.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || p.reload_changed()).await {
            tracing::error!("plugin watcher failed: {e}");
        }
    }
}

/// Once a second: folds the histogram samples recorded since into their
/// buckets (the exporter keeps every raw sample until then — 30 MiB over a
/// 1M-message send nobody scraped), then hands freed heap back to the OS.
async fn housekeeping() {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        crate::metrics::handle().run_upkeep();
        crate::memory::release();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
