//! posta.toml: server settings, plugin limits and named transports.
//!
//! Everything has a default, so `posta serve` runs with no file at all: the
//! bundled personalizer and a `log` transport writing to
//! `DATA_DIR/outbox/outbox.jsonl`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub delivery: Delivery,
    /// Defaults for every component; a transport may override them.
    #[serde(default)]
    pub limits: Limits,
    /// The personalizer component: a bundled name or a path.
    #[serde(default = "default_personalizer")]
    pub personalizer: String,
    /// Transport used by campaigns that name none.
    #[serde(default)]
    pub default_transport: Option<String>,
    #[serde(default)]
    pub transports: BTreeMap<String, Transport>,
    /// Pools of transports (`[pools.NAME]`), named like a transport.
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    /// Mailbox providers by recipient domain (`[providers.NAME]`).
    #[serde(default)]
    pub providers: BTreeMap<String, Provider>,
    #[serde(default)]
    pub tls: Tls,
    /// When bounces and complaints suppress an address.
    #[serde(default)]
    pub bounces: crate::domain::bounce::BouncePolicy,
    /// DKIM keys by From domain (`[[dkim]]`).
    #[serde(default)]
    pub dkim: Vec<crate::dkim::DkimConfig>,
    /// How users' event webhooks are delivered.
    #[serde(default)]
    pub webhooks: Webhooks,
    /// Where data lives: redb in the data directory, or a PostgreSQL
    /// database several nodes share.
    #[serde(default)]
    pub database: Database,
    /// The config file's directory: relative key paths are read from it.
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

/// How the host verifies servers for plugins (wasi:tls, HTTPS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file of extra CA certificates trusted beside the system's roots
    /// (a private relay's CA, or a test CA).
    pub extra_ca_file: Option<PathBuf>,
}

/// `[webhooks]`: delivery of users' event webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// Let webhooks reach loopback, private and link-local addresses. Off:
    /// users' URLs could otherwise probe the operator's own network.
    pub allow_private: bool,
    /// Attempts per event before it is given up (`failed`).
    pub max_attempts: u32,
    /// The first retry's wait; each further one doubles, up to
    /// `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// One attempt's limit: connect, send and the receiver's answer.
    pub timeout_ms: u64,
    /// Requests under way at once, over all webhooks …
    pub concurrency: usize,
    /// … and per webhook, so one slow receiver cannot hold the others up.
    pub per_webhook: usize,
    /// Finished deliveries are kept this many days for
    /// `GET …/deliveries`, then pruned.
    pub keep_days: u32,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            allow_private: false,
            // 10 s, 20 s, … capped at an hour: about 4 h 30 min in all.
            max_attempts: 12,
            retry_base_ms: 10_000,
            retry_max_ms: 3_600_000,
            timeout_ms: 10_000,
            concurrency: 16,
            per_webhook: 2,
            keep_days: 7,
        }
    }
}

impl Webhooks {
    pub fn retry(&self) -> crate::domain::webhook::RetryPolicy {
        crate::domain::webhook::RetryPolicy {
            max_attempts: self.max_attempts,
            base_ms: self.retry_base_ms,
            max_ms: self.retry_max_ms,
        }
    }
}

fn default_personalizer() -> String {
    "personalize".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Public base URL, used to build unsubscribe links.
    pub base_url: Option<String>,
    /// Directory searched for `NAME.wasm` components named in transports.
    pub plugins_dir: Option<PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Database page cache, in MiB.
    pub db_cache_mib: usize,
    /// Open HTTP connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Open connections one client address may hold (less than
    /// `max_connections`); past it a new one is answered 429 and closed.
    /// Trusted proxies are not capped here.
    pub max_connections_per_client: usize,
    /// Time a client has to send a request's header.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request under way is closed after
    /// this.
    pub idle_timeout_ms: u64,
    /// Longest pause while a request body arrives (408 past it).
    pub body_idle_timeout_ms: u64,
    /// Time a whole request body may take; CSV and multipart uploads are
    /// exempt (they stream, bounded by `max_import_bytes` and the pause).
    pub body_timeout_ms: u64,
    /// Reverse proxies (addresses or networks, `10.0.0.0/8`) whose
    /// `client_ip_header` names the client for per-client limits.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header trusted proxies put the client's address in.
    pub client_ip_header: String,
    /// Requests per second per client address on the public endpoints
    /// (unsubscribe, health), with bursts of twice that; 0 turns it off.
    pub public_rate_per_ip: u32,
    /// Opens and clicks recorded per second per client address (bursts of
    /// twice that); more are answered but not counted. 0 turns it off.
    pub tracking_rate_per_ip: u32,
    /// Bearer token `GET /metrics` requires (or `POSTA_METRICS_TOKEN`);
    /// without one the metrics are public, like health.
    pub metrics_token: Option<String>,
    /// Largest CSV subscriber import, in bytes (streamed, so this bounds
    /// disk and time, not memory).
    pub max_import_bytes: u64,
    /// Where compiled components are kept between starts
    /// (`{data_dir}` allowed; `POSTA_COMPILE_CACHE` overrides it; empty
    /// turns the cache off). Native code: keep it as private as the data
    /// directory.
    pub compile_cache: String,
}

impl Server {
    /// The compile cache's directory, if there is one.
    pub fn compile_cache(&self, data_dir: &Path) -> Option<PathBuf> {
        let dir = std::env::var("POSTA_COMPILE_CACHE").unwrap_or_else(|_| self.compile_cache.clone());
        (!dir.is_empty()).then(|| PathBuf::from(expand(&dir, data_dir)))
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            data_dir: PathBuf::from("posta-data"),
            base_url: None,
            plugins_dir: None,
            max_body_bytes: 16 * 1024 * 1024,
            db_cache_mib: 12,
            max_connections: 1024,
            max_connections_per_client: 32,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            body_idle_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            trusted_proxies: Vec::new(),
            client_ip_header: "X-Forwarded-For".into(),
            public_rate_per_ip: 50,
            tracking_rate_per_ip: 100,
            metrics_token: None,
            max_import_bytes: 256 << 20,
            compile_cache: "{data_dir}/compiled".into(),
        }
    }
}

/// `[database]`: without a `url` the server keeps its data in redb under
/// `server.data_dir`, one process at a time. With one (or
/// `POSTA_DATABASE_URL`), every node given the same URL shares the
/// database's campaigns, queue and rates (ARCHITECTURE.md, "PostgreSQL").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `postgres://user:password@host:port/database` or a libpq key/value
    /// string (`host=/run/postgresql dbname=posta`).
    pub url: Option<String>,
    /// Connections this node keeps to the database at most.
    pub max_connections: usize,
    /// This node's name in the `nodes` table and the logs (default: the
    /// host name and process id).
    pub node_name: Option<String>,
    /// How long a node's claim on its queued messages lasts without a
    /// heartbeat (it sends four per lease). A node that crashed or froze
    /// has its messages re-delivered by the others this long after its
    /// last heartbeat, flagged as possible duplicates.
    pub lease_ms: u64,
    /// How long before its lease could lapse a node stops starting
    /// transport calls (the fence): room for a call under way and for
    /// clock drift between a heartbeat's send and the database's commit.
    pub fence_margin_ms: u64,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: None,
            max_connections: 16,
            node_name: None,
            lease_ms: 10_000,
            fence_margin_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Subscribers turned into messages per storage transaction.
    pub batch_size: usize,
    /// Messages queued but without a stored outcome, per campaign. This is
    /// also the most messages that can be delivered twice after a crash.
    pub window: usize,
    /// Transport calls in flight per transport when it sets none.
    pub max_in_flight: usize,
    /// Attempts per message before a transient error becomes a failure.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Bytes of personalized messages held while they wait for their
    /// transport (rate limits, retries), over all campaigns: memory is
    /// bounded by this, not by content size × concurrency.
    pub held_message_mib: u64,
    /// Personalize calls running at once per user (0: one per core), so
    /// one user's slow templates cannot queue ahead of everybody else's.
    pub personalize_per_user: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            batch_size: 256,
            window: 1024,
            max_in_flight: 8,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            held_message_mib: 128,
            personalize_per_user: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per instance, in MiB.
    pub memory_mib: u64,
    /// Wall-clock deadline per call, in milliseconds.
    pub deadline_ms: u64,
    /// Largest personalized message (subject, bodies and headers): a
    /// message over it fails, permanently, naming both sizes.
    pub max_message_bytes: u64,
    /// Template instructions per render (minijinja fuel): a looping
    /// template fails in milliseconds instead of burning the deadline.
    pub template_fuel: u64,
    /// TCP sockets and HTTP requests one instance may have open at once;
    /// each is a host file descriptor outside the memory cap.
    pub max_sockets: u32,
    /// Host-side handles (streams, pollables, sockets, header sets,
    /// requests) one instance may hold at once.
    pub max_handles: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            deadline_ms: 10_000,
            max_message_bytes: 2 << 20,
            template_fuel: 500_000,
            max_sockets: 16,
            max_handles: 256,
        }
    }
}

impl Limits {
    /// The fewest handles a plugin can work with: the SDK's TLS connection
    /// alone holds about ten.
    const MIN_HANDLES: u32 = 32;

    fn check(&self, at: &str) -> Result<(), ConfigError> {
        if self.max_handles < Self::MIN_HANDLES {
            return Err(ConfigError::Invalid(format!(
                "{at}.max_handles must be at least {}",
                Self::MIN_HANDLES
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    /// A bundled component name (`log`) or a path to a `.wasm` file.
    pub component: String,
    /// Values the plugin reads through `host.config(key)`. `{data_dir}` is
    /// replaced by the data directory.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Config keys whose values come from environment variables:
    /// `password = "SMTP_PASSWORD"`. Never stored, logged or listed.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Emails per minute over every campaign using this transport.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Messages per call at most, for a component that exports
    /// `deliver-batch` (default 16; 1 turns batching off).
    #[serde(default)]
    pub max_batch: Option<usize>,
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Daily caps while a new sending IP warms up, day by day from
    /// `warmup_start` (UTC days); none after the last.
    #[serde(default)]
    pub warmup: Vec<u64>,
    /// The warm-up's first day, `"YYYY-MM-DD"`.
    #[serde(default)]
    pub warmup_start: Option<String>,
}

impl Transport {
    /// Its warm-up schedule, if it has one (checked by `Config::check`).
    pub fn warmup(&self) -> Option<crate::domain::warmup::Warmup> {
        if self.warmup.is_empty() {
            return None;
        }
        Some(crate::domain::warmup::Warmup {
            caps: self.warmup.clone(),
            start: self.warmup_start.as_deref()?.parse().ok()?,
        })
    }
}

/// `[pools.NAME]`: transports a campaign's messages spread over, by
/// weight, skipping one whose relay cannot be reached.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub transports: Vec<String>,
    /// One per transport (default: 1 each).
    #[serde(default)]
    pub weights: Option<Vec<u32>>,
}

impl Pool {
    /// Each member with its weight.
    pub fn members(&self) -> impl Iterator<Item = (&str, u32)> {
        self.transports.iter().enumerate().map(|(i, t)| {
            let weight = self.weights.as_ref().and_then(|w| w.get(i).copied()).unwrap_or(1);
            (t.as_str(), weight)
        })
    }

    fn check(&self, name: &str, transports: &BTreeMap<String, Transport>) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("pools.{name}: {m}")));
        if transports.contains_key(name) {
            return invalid("a transport has that name; a pool's name must be its own".into());
        }
        if self.transports.is_empty() {
            return invalid("transports is empty".into());
        }
        for (i, t) in self.transports.iter().enumerate() {
            if !transports.contains_key(t) {
                return invalid(format!("{t:?} is not defined under [transports]"));
            }
            if self.transports[..i].contains(t) {
                return invalid(format!("{t:?} is listed twice"));
            }
        }
        if let Some(w) = &self.weights
            && (w.len() != self.transports.len() || w.contains(&0))
        {
            return invalid("weights must give one positive weight per transport".into());
        }
        Ok(())
    }
}

/// `[providers.NAME]`: the recipient domains one mailbox provider
/// serves, how fast it takes mail from us, and its backoff when it defers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub domains: Vec<String>,
    /// Messages per minute to this provider, over every transport (and on
    /// PostgreSQL every node).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Calls to it under way at once, per node.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Directories the component may read and write (`{data_dir}` allowed).
    #[serde(default)]
    pub dirs: Vec<String>,
    /// Outbound `host:port` pairs for sockets (and TLS over them).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Origins (`https://host[:port]`) the component may send HTTP
    /// requests to (through wasi:http or the contract's `host.http-send`).
    #[serde(default)]
    pub http: Vec<String>,
    /// Whether a host *name* in `connect` or `http` may resolve to a
    /// loopback, private or link-local address. Addresses written as IP
    /// literals (and `localhost`) are always allowed: they are listed.
    #[serde(default)]
    pub allow_private: bool,
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.config_dir = path.map(|p| p.parent().unwrap_or(Path::new(".")).to_path_buf());
        if config.personalizer.is_empty() {
            config.personalizer = default_personalizer();
        }
        if let Ok(url) = std::env::var("POSTA_DATABASE_URL")
            && !url.is_empty()
        {
            config.database.url = Some(url);
        }
        config.add_default_log_transport();
        config.check()?;
        Ok(config)
    }

    /// The `log` transport exists unless the file defines its own.
    fn add_default_log_transport(&mut self) {
        self.transports.entry("log".into()).or_insert_with(|| Transport {
            component: "log".into(),
            config: BTreeMap::from([(
                "path".into(),
                toml::Value::String("{data_dir}/outbox/outbox.jsonl".into()),
            )]),
            capabilities: Capabilities {
                dirs: vec!["{data_dir}/outbox".into()],
                ..Capabilities::default()
            },
            // One writer keeps lines whole whatever their size.
            max_in_flight: Some(1),
            ..Transport::default()
        });
        if self.default_transport.is_none() {
            self.default_transport = Some("log".into());
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        for (name, pool) in &self.pools {
            pool.check(name, &self.transports)?;
        }
        let mut served = std::collections::HashMap::new();
        for (name, p) in &self.providers {
            let invalid = |m: String| Err(ConfigError::Invalid(format!("providers.{name}: {m}")));
            if p.domains.is_empty() {
                return invalid("domains is empty".into());
            }
            if p.rate_limit == Some(0) || p.max_in_flight == Some(0) {
                return invalid("rate_limit and max_in_flight must be positive".into());
            }
            for d in &p.domains {
                if let Some(other) = served.insert(d.to_ascii_lowercase(), name) {
                    return invalid(format!("{d:?} is also under providers.{other}"));
                }
            }
        }
        let default = self.default_transport.as_deref().unwrap_or("log");
        if !self.transports.contains_key(default) && !self.pools.contains_key(default) {
            return Err(ConfigError::Invalid(format!(
                "default_transport {default:?} is not defined under [transports] or [pools]"
            )));
        }
        self.limits.check("limits")?;
        let srv = &self.server;
        if srv.max_connections_per_client == 0 || srv.max_connections_per_client >= srv.max_connections {
            return Err(ConfigError::Invalid(format!(
                "server.max_connections_per_client ({}) must be at least 1 and less than server.max_connections ({}): \
                 one client must not be able to take every connection",
                srv.max_connections_per_client, srv.max_connections
            )));
        }
        if [
            srv.idle_timeout_ms,
            srv.body_idle_timeout_ms,
            srv.body_timeout_ms,
            srv.header_read_timeout_ms,
        ]
        .contains(&0)
        {
            return Err(ConfigError::Invalid(
                "server.header_read_timeout_ms, idle_timeout_ms, body_idle_timeout_ms and body_timeout_ms must be positive"
                    .into(),
            ));
        }
        if axum::http::HeaderName::from_bytes(srv.client_ip_header.as_bytes()).is_err() {
            return Err(ConfigError::Invalid(format!(
                "server.client_ip_header {:?} is not a header name",
                srv.client_ip_header
            )));
        }
        let d = &self.database;
        if d.max_connections < 4 || d.fence_margin_ms == 0 || d.fence_margin_ms >= d.lease_ms {
            return Err(ConfigError::Invalid(
                "database.max_connections must be at least 4 and database.fence_margin_ms between 0 and lease_ms"
                    .into(),
            ));
        }
        let w = &self.webhooks;
        if w.max_attempts == 0 || w.concurrency == 0 || w.per_webhook == 0 || w.timeout_ms == 0 || w.retry_base_ms == 0
        {
            return Err(ConfigError::Invalid(
                "webhooks.max_attempts, concurrency, per_webhook, timeout_ms and retry_base_ms must be positive".into(),
            ));
        }
        for (name, t) in &self.transports {
            if let Some(limits) = &t.limits {
                limits.check(&format!("transports.{name}.limits"))?;
            }
            if t.component.is_empty() {
                return Err(ConfigError::Invalid(format!("transports.{name}.component is empty")));
            }
            if t.rate_limit == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "transports.{name}.rate_limit must be positive"
                )));
            }
            if !t.warmup.is_empty()
                && (t.warmup.contains(&0)
                    || t.warmup_start
                        .as_deref()
                        .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
                        .is_none())
            {
                return Err(ConfigError::Invalid(format!(
                    "transports.{name}: warmup needs positive daily caps and warmup_start = \"YYYY-MM-DD\""
                )));
            }
        }
        Ok(())
    }

    pub fn default_transport(&self) -> &str {
        self.default_transport.as_deref().unwrap_or("log")
    }

    pub fn base_url(&self) -> String {
        self.server
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.server.listen))
            .trim_end_matches('/')
            .to_string()
    }
}

/// Replaces `{data_dir}` in a config string.
pub fn expand(value: &str, data_dir: &Path) -> String {
    value.replace("{data_dir}", &data_dir.display().to_string())
}

/// A TOML config value as the string a plugin receives.
pub fn value_to_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.default_transport(), "log");
        assert_eq!(c.transports["log"].component, "log");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn unknown_default_transport_is_refused() {
        let mut c: Config = toml::from_str("default_transport = \"smtp\"").unwrap();
        c.add_default_log_transport();
        assert!(c.check().unwrap_err().to_string().contains("smtp"));
    }

    #[test]
    fn too_few_handles_are_refused() {
        let mut c: Config = toml::from_str("[limits]\nmax_handles = 4").unwrap();
        c.add_default_log_transport();
        assert!(c.check().unwrap_err().to_string().contains("limits.max_handles"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[server]\nlisten_on = \"x\"").is_err());
    }
}
